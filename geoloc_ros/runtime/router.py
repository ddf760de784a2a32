"""``InputRouter``: one sensor message at a time, from ROS (rclpy or rosbags) to the Localizer.

Two stages, so the node can take messages off DDS in its callbacks and leave the work to its
worker thread; the replay runs both at once (``feed``)::

    item = router.convert(kind, msg)      # any thread: message -> plain values, or None (counted)
    est = router.apply(kind, item)        # the Localizer's thread: -> Estimate to publish, or None

``kind`` is one of ``KINDS``. Stamps are the messages' header stamps; a stream whose stamp goes
back more than ``localizer.config.time_backwards_eps_s`` is an event (``time_backwards``; the
Localizer resets itself, ``on_reset`` hooks run). Unusable messages are counted in ``drops`` by
``<kind>.<reason>``; messages used with a caveat in ``events``.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import numpy as np

from ..core import msgconv
from ..core.errors import InvalidArgument
from ..core.images import msg_to_rgb
from ..core.msgconv import FixSample, MessageDropped
from .camera import camera_model

log = logging.getLogger(__name__)

KINDS = ("image", "fix", "odom", "camera_info", "tf_static")


class ImageInput(NamedTuple):
    t: float
    rgb: np.ndarray
    recv: float  # time.monotonic() when the message reached convert


class FixInput(NamedTuple):
    sample: FixSample
    altitude: float
    var_up: Optional[float]  # the receiver's vertical variance (m^2), when it gave one
    service: int


class Counter:
    """Counts by key, with the first message of each key kept and logged (further ones counted).
    The node passes its own (thread-safe, throttled ROS log); this one is for a single thread."""

    def __init__(self, what: str = "dropped"):
        self.what = what
        self.counts: Dict[str, int] = {}
        self.examples: Dict[str, str] = {}

    def add(self, key: str, message: str = "", level: str = "warning") -> None:
        n = self.counts.get(key, 0)
        self.counts[key] = n + 1
        if n == 0:
            self.examples[key] = message
            getattr(log, level if level in ("info", "warning", "error") else "warning")(
                "%s %s: %s (further ones are counted)", self.what, key, message.splitlines()[0] if message else "")

    def snapshot(self) -> Dict[str, int]:
        return dict(self.counts)


class InputRouter:
    """See the module docstring. ``camera_mount``: (R, t) of the optical frame in ``base_frame``,
    used when /tf_static does not connect ``base_frame`` to the camera_info frame (None: the
    camera model waits for /tf_static). ``publish_on_fix``: ``apply`` of a fix returns the
    estimate at the fix (as the node publishes it)."""

    def __init__(self, localizer, *, camera_mount=None, base_frame: str = "base_link", publish_on_fix: bool = True,
                 drops=None, events=None):
        self.loc = localizer
        self.camera_mount, self.base_frame, self.publish_on_fix = camera_mount, base_frame, publish_on_fix
        self.drops = drops if drops is not None else Counter("dropped")
        self.events = events if events is not None else Counter("event")
        self.on_reset: List[Callable[[str], None]] = []
        self.static_tfs: List[Any] = []
        self.camera = None  # the CameraModel in use
        self.mount_source: Optional[str] = None  # where its mounting came from
        self.last_fix: Optional[FixInput] = None
        self._info_seen = None  # convert stage: the last camera_info (it repeats with every frame)
        self._info = None  # apply stage: the camera_info in use
        self._last_t: Dict[str, float] = {}
        self._index = getattr(localizer, "index", None)

    # ------------------------------------------------------------------ stage 1: convert (any thread)
    def convert(self, kind: str, msg) -> Any:
        """Message -> the plain values ``apply`` takes, or None (counted in ``drops``; a camera_info
        equal to the last one is None without a count)."""
        try:
            return getattr(self, f"_convert_{kind}")(msg)
        except MessageDropped as exc:
            self.drops.add(f"{kind}.{exc.reason}", str(exc))
        except (AttributeError, TypeError, ValueError, KeyError, IndexError) as exc:  # a broken message
            self.drops.add(f"{kind}.conversion_error", f"{type(exc).__name__}: {exc}")
        return None

    def _convert_image(self, msg) -> Optional[ImageInput]:
        recv = time.monotonic()
        # whole nanoseconds, then seconds: the rounding the evaluated figures were made with (the
        # fix and odometry stamps are ``header_time``: seconds + nanoseconds; the two differ by ~1e-7 s)
        t = msgconv.stamp_to_ns(msg.header.stamp) * 1e-9
        img = msg_to_rgb(msg)
        if not math.isfinite(t) or t <= 0.0:
            raise MessageDropped("bad_stamp", f"header stamp {t!r} is not a time")
        return ImageInput(t, img, recv)

    def _convert_fix(self, msg) -> Optional[FixInput]:
        sample, reason = msgconv.navsatfix_check(msg)
        cov = list(msg.position_covariance)
        var_up = float(cov[8]) if int(msg.position_covariance_type) > 0 and math.isfinite(float(cov[8])) \
            and float(cov[8]) > 0 else None
        item = FixInput(sample, float(msg.altitude), var_up, int(msg.status.service))
        if not math.isfinite(sample.t) or sample.t <= 0.0:
            raise MessageDropped("bad_stamp", f"header stamp {sample.t!r} is not a time")
        if reason == "no_fix":  # the receiver says so: an event, not bad input
            self.events.add("fix.no_fix", "GNSS reports no fix; continuing on camera/odometry", level="info")
        elif reason != "ok":  # bad input: the Localizer is told there is no usable fix (ok=False)
            self.drops.add(f"fix.{reason}", f"GNSS fix not usable ({reason}); continuing on camera/odometry")
        elif msgconv.navsatfix_cov_invalid(msg):  # used, with the default sigma instead of its covariance
            self.events.add("fix.covariance_invalid", f"GNSS covariance (type {int(msg.position_covariance_type)}) "
                            f"has NaN, negative or zero variances: the default sigma "
                            f"{self.loc.config.gnss_default_sigma_m:g} m is used instead")
        return item

    def _convert_odom(self, msg) -> msgconv.OdomSample:
        return msgconv.odometry(msg)

    def _convert_camera_info(self, msg) -> Optional[msgconv.CameraInfoSample]:
        info = msgconv.camera_info(msg)._replace(t=0.0)
        if info == self._info_seen:
            return None
        self._info_seen = info
        return info

    def _convert_tf_static(self, msg) -> List[Any]:
        return msgconv.transforms(msg)

    # ------------------------------------------------------------------ stage 2: apply (the Localizer's thread)
    def apply(self, kind: str, item) -> Optional[Any]:
        """Give a converted input to the Localizer; -> the Estimate to publish (a keyframe's, or the
        estimate at a fix with ``publish_on_fix``), else None. A message older than what the
        Localizer already took from another stream (a large image still in transport while newer
        fixes arrived) is dropped as ``<kind>.late``: only a stream going back by itself (a bag loop,
        a clock reset) resets the Localizer."""
        t = _stamp_of(kind, item)
        if t is not None and self._late(kind, t):
            return None
        return getattr(self, f"_apply_{kind}")(item)

    def _late(self, kind: str, t: float) -> bool:
        eps = self.loc.config.time_backwards_eps_s
        own = self._last_t.get(kind)
        if own is not None and t < own - eps:  # the stream itself went back: the reset path
            return False
        newest = getattr(getattr(self.loc, "tracker", None), "t_last", None)
        if newest is None or t >= newest - eps:
            return False
        self.drops.add(f"{kind}.late", f"{kind} stamped {newest - t:.3f} s before what the localizer already "
                                       f"took from another input; dropped (no reset)")
        return True

    def feed(self, kind: str, msg) -> Optional[Any]:
        """``convert`` then ``apply`` (one thread: the replay)."""
        item = self.convert(kind, msg)
        return None if item is None else self.apply(kind, item)

    def _check_time(self, stream: str, t: float) -> None:
        last = self._last_t.get(stream)
        self._last_t[stream] = t
        if last is not None and t < last - self.loc.config.time_backwards_eps_s:
            why = f"{stream} stamp went back {last - t:.3f} s (bag loop or clock reset)"
            self.events.add("time_backwards", f"{why}: the localizer resets", level="info")
            self._last_t = {stream: t}
            for hook in self.on_reset:
                hook(why)

    def _apply_image(self, item: ImageInput):
        self._check_time("image", item.t)
        return self.loc.on_image(item.t, item.rgb)

    def _apply_fix(self, item: FixInput):
        s = item.sample
        self._check_time("fix", s.t)
        self.last_fix = item
        # with metric matching the index only relocalises: a fix outside it costs the camera nothing
        if (s.ok and self._index is not None and hasattr(self._index, "covers") and not self.loc.metric_matching
                and not self._index.covers(s.lat, s.lon)):
            self.events.add("fix.outside_index", f"GNSS fix ({s.lat:.6f}, {s.lon:.6f}) is outside the tile index "
                            f"coverage: camera matching cannot help there")
        self.loc.on_fix(s.t, s.lat, s.lon, s.cov_en, s.ok)
        return self.loc.estimate(s.t) if self.publish_on_fix else None

    def _apply_odom(self, item: msgconv.OdomSample):
        self._check_time("odom", item.t)
        self.loc.on_odom(*item)
        return None

    def _apply_camera_info(self, info):
        self._info = info
        self._set_camera()
        return None

    def _apply_tf_static(self, tfs):
        self.static_tfs.extend(tfs)
        if self._info is not None:
            self._set_camera()
        return None

    def _set_camera(self) -> None:
        if getattr(self.loc, "matcher", None) is None:  # only metric matching projects the camera
            return
        try:
            model, source = camera_model(self._info, self.static_tfs, self.camera_mount, self.base_frame)
        except InvalidArgument as exc:  # no mounting, or a camera_info the model refuses
            self.drops.add("camera_info.invalid", str(exc))
            return
        if model != self.camera:
            if source != self.mount_source:
                log.info("camera mounting from %s: %s", source, _mount_text(model))
            self.camera, self.mount_source = model, source
        self.loc.set_camera(model)


def _stamp_of(kind: str, item) -> Optional[float]:
    if kind == "image":
        return item.t
    if kind == "fix":
        return item.sample.t
    if kind == "odom":
        return item.t
    return None  # camera_info, /tf_static: not stamped events of the filter


def _mount_text(model) -> str:
    t = getattr(model, "t_base_opt", None)
    return f"optical frame at ({', '.join(f'{float(v):.2f}' for v in t)}) m" if t is not None else str(model)

