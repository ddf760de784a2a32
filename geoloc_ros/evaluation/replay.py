"""Replay a rosbag2 (MCAP or sqlite3) through the Localizer and evaluate it against ground truth.

    res = replay_bag(bag, encoder, index, cfg)     # one pass over the bag, three methods
    run_dir = write_run(res, out_root, command=..., force=False)

One pass reads every message of the used topics in header-stamp order (a small reorder buffer)
and feeds, exactly like the ROS node does (``ros/node.py``):

* ``raw``: the GNSS fixes themselves (status >= FIX, finite position), with their covariance;
* ``baseline``: the same Localizer with ``use_camera=False`` (GNSS + odometry only: what a
  robot_localization EKF would give);
* ``corrected``: the full Localizer (camera matching on).

Both localizers publish an estimate at each GNSS fix (``loc.estimate(t)``) and at each keyframe
(``loc.on_image`` returns one), as the node does with ``publish_on_fix`` (default true).

Ground truth comes from a NavSatFix topic (default ``/gnss/fix_truth``) or an Odometry topic whose
pose is in the map frame (the index datum; see ``gt_frame``). A bag without it still replays;
``metrics["not_computed"]`` says what needs truth.

Bad input: a bag without a camera or GNSS topic, or with a needed topic of an unexpected type,
is refused with ``InvalidArgument``; topics with other (even unknown) message types are skipped
and listed; messages that cannot be converted are counted per reason (``drops``); a truncated
MCAP file is read up to its last complete chunk and the run is marked partial, saying where the
bag ended (a truncated sqlite3 file cannot be opened: clear error).

``replay_bag`` in steps: ``_open_bag`` (the bag through ``geoloc_ros.bag.BagSource``, topics picked
by ``_pick_topics``), ``_Feeder`` (messages re-ordered by ``bag.stamp_ordered``, converted with
``core.images`` / ``core.msgconv``, fed to the localizers; the camera model from camera_info and
/tf_static by ``_camera_model``), then ``_read_outcome`` and the result with its metrics.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from ..bag import FIX_TYPE, BagSource, BagWriter, TopicSpec, header, read_positions, stamp_ordered, typestore
from ..core import msgconv
from ..core.errors import GeolocError, IncompatibleArtifact, InvalidArgument
from ..core.outputs import check_output_dir
from ..core.images import msg_to_rgb
from ..core.msgconv import MessageDropped
from . import RUN_FORMAT, RUN_FORMAT_VERSION
from . import metrics as M

log = logging.getLogger(__name__)

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
ODOM_TYPE = "nav_msgs/msg/Odometry"
DEFAULT_IMAGE_TOPIC = "/camera/image_raw"
DEFAULT_FIX_TOPIC = "/gnss/fix"
DEFAULT_ODOM_TOPIC = "/odom"
DEFAULT_GT_TOPIC = "/gnss/fix_truth"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
TF_TYPE = "tf2_msgs/msg/TFMessage"
TF_STATIC_TOPIC = "/tf_static"
METHODS = ("raw", "baseline", "corrected")
METHOD_LABELS = {"raw": "raw GNSS", "baseline": "GNSS+odometry (no camera)", "corrected": "geoloc (camera)"}
ESTIMATE_COLUMNS = ("method", "t", "stamp_ns", "lat", "lon", "x", "y", "yaw", "heading_deg", "cov_xx", "cov_xy",
                    "cov_yy", "cov_yawyaw", "status", "keyframe", "match_used", "confidence", "compute_ms",
                    "truth_x", "truth_y", "error_m", "nees")


# ---------------------------------------------------------------------------------------
# results


@dataclass
class MethodLog:
    """Everything one method published, as parallel lists (converted to a metrics.Track)."""

    name: str
    t: List[float] = field(default_factory=list)
    lat: List[float] = field(default_factory=list)
    lon: List[float] = field(default_factory=list)
    x: List[float] = field(default_factory=list)
    y: List[float] = field(default_factory=list)
    yaw: List[float] = field(default_factory=list)
    cov: List[np.ndarray] = field(default_factory=list)  # 3x3 (x, y, yaw); yaw NaN for raw GNSS
    status: List[str] = field(default_factory=list)
    keyframe: List[bool] = field(default_factory=list)
    match_used: List[bool] = field(default_factory=list)
    confidence: List[float] = field(default_factory=list)
    compute_ms: List[float] = field(default_factory=list)
    reasons: List[List[str]] = field(default_factory=list)
    cand_x: List[np.ndarray] = field(default_factory=list)  # per keyframe (keyframe rows only)
    cand_y: List[np.ndarray] = field(default_factory=list)
    cand_t: List[float] = field(default_factory=list)

    def add(self, t, lat, lon, x, y, yaw, cov3, status, keyframe=False, match_used=False, confidence=float("nan"),
            compute_ms=float("nan"), reasons=()):
        self.t.append(float(t))
        self.lat.append(float(lat))
        self.lon.append(float(lon))
        self.x.append(float(x))
        self.y.append(float(y))
        self.yaw.append(float(yaw))
        self.cov.append(np.asarray(cov3, float).reshape(3, 3))
        self.status.append(str(status))
        self.keyframe.append(bool(keyframe))
        self.match_used.append(bool(match_used))
        self.confidence.append(float(confidence) if confidence is not None else float("nan"))
        self.compute_ms.append(float(compute_ms) if compute_ms is not None else float("nan"))
        self.reasons.append([str(r) for r in (reasons or [])])

    def __len__(self) -> int:
        return len(self.t)

    def track(self) -> M.Track:
        n = len(self.t)
        order = np.argsort(np.asarray(self.t, float), kind="stable")  # already in order; be safe
        cov = np.asarray(self.cov, float).reshape(n, 3, 3)[:, :2, :2] if n else np.zeros((0, 2, 2))
        return M.Track(self.name, np.asarray(self.t, float)[order], np.asarray(self.x, float)[order],
                       np.asarray(self.y, float)[order], cov=cov[order],
                       status=np.asarray(self.status, dtype=object)[order] if n else np.zeros(0, object),
                       keyframe=np.asarray(self.keyframe, bool)[order],
                       compute_ms=np.asarray(self.compute_ms, float)[order])


@dataclass
class ReplayResult:
    """What ``replay_bag`` produced: the three methods' outputs, truth, counters and timings."""

    bag: Path
    storage: str
    frame: Any  # LocalFrame of the map frame (x, y of every method and the truth)
    methods: Dict[str, MethodLog]
    truth: Optional[M.Truth]
    truth_latlon: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]  # t, lat, lon (for the bag/CSV)
    topics: Dict[str, Any]  # used topics: role -> name / type
    bag_topics: Dict[str, Tuple[str, int]]  # every topic in the bag: (type, count)
    skipped_topics: Dict[str, str]  # topic -> why it was not read
    counts: Dict[str, int]  # messages read per role
    drops: Dict[str, int]  # "image.truncated": n, ...
    drop_examples: Dict[str, str]
    partial: Optional[str]  # None, or what happened (truncated bag ...)
    t_start: float
    t_end: float
    timing: Dict[str, float]
    localizer_stats: Dict[str, Any]
    config: Dict[str, Any]  # LocalizerConfig as a dict
    config_name: str
    model: Dict[str, Any]  # encoder identity
    backend: str
    index_info: Dict[str, Any]
    recall_radius_m: Optional[float]
    world_dir: Optional[Path] = None
    gt_topic: Optional[str] = None
    metrics: Dict[str, Any] = field(default_factory=dict)
    # metric matching: per keyframe (t, x, y, yaw, used, confidence) of the camera's own peak
    camera_peaks: List[Tuple[float, float, float, float, bool, float]] = field(default_factory=list)
    truth_map: Optional[M.Truth] = None  # the truth displaced by the survey's misregistration (map's own frame)
    metric_samples: List[Any] = field(default_factory=list)  # (t, MetricResult, estimate (x, y, yaw)) per keyframe
    aerial: Any = None  # the metric matcher's AerialMap (for the pictures)
    map_offset: Optional[Dict[str, float]] = None  # mean / max misregistration along the truth (m)

    @property
    def duration_s(self) -> float:
        return max(0.0, self.t_end - self.t_start)

    @property
    def run_name(self) -> str:
        return run_name(self.bag, self.model, self.config_name)

    def tracks(self) -> Dict[str, M.Track]:
        return {k: m.track() for k, m in self.methods.items()}


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.")
    return s or "x"


def bag_display_name(bag: Path) -> str:
    """A bag's name for run directories: the folder name, or its parent's for the usual ``DRIVE/bag``."""
    bag = Path(bag).resolve()
    name = bag.stem if bag.is_file() else bag.name
    if name in ("bag", "rosbag", "rosbag2") and bag.parent.name:
        name = bag.parent.name
    return _slug(name)


def run_name(bag: Path, model: Dict[str, Any], config_name: str) -> str:
    """``<bag>__<preset>-<fingerprint[:8]>__<config>``: one folder per bag + model + config."""
    fp = str(model.get("fingerprint", ""))[:8] or "nofp"
    return f"{bag_display_name(bag)}__{_slug(model.get('preset', 'model'))}-{fp}__{_slug(config_name)}"


def config_name_for(overrides: Dict[str, Any], label: Optional[str] = None) -> str:
    """"default" without overrides, else ``<label or cfg>-<hash of the overrides>``."""
    if not overrides:
        return "default" if label is None else _slug(label)
    h = hashlib.sha256(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{_slug(label or 'cfg')}-{h}"


# ---------------------------------------------------------------------------------------
# topic selection


def _pick_topics(topics: Dict[str, Tuple[str, int]], image_topic: Optional[str], fix_topic: Optional[str],
                 odom_topic: Optional[str], gt_topic: Optional[str], bag: Path):
    """-> (image, image type, fix, odom or None, gt or None, gt type, notes[])"""
    notes: List[str] = []
    listing = ", ".join(f"{k} ({v[0]})" for k, v in sorted(topics.items())) or "none"

    def typ(name):
        return topics[name][0]

    # camera
    if image_topic:
        if image_topic not in topics:
            raise InvalidArgument(f"bag {bag} has no topic {image_topic}; its topics: {listing}")
        if typ(image_topic) not in IMAGE_TYPES:
            raise InvalidArgument(f"--image-topic {image_topic} is a {typ(image_topic)}, not a sensor_msgs/Image or "
                                  f"CompressedImage")
    else:
        cams = [k for k, v in sorted(topics.items()) if v[0] in IMAGE_TYPES and not k.startswith("/geoloc")]
        if not cams:
            raise InvalidArgument(f"bag {bag} has no camera topic (sensor_msgs/Image or CompressedImage), so there is "
                                  f"nothing for the camera localizer to match; its topics: {listing}")
        raw = [k for k in cams if typ(k) == IMAGE_TYPES[0]]
        if DEFAULT_IMAGE_TOPIC in cams:
            image_topic = DEFAULT_IMAGE_TOPIC
        elif len(raw) == 1:
            image_topic = raw[0]
        elif len(cams) == 1:
            image_topic = cams[0]
        else:
            raise InvalidArgument(f"bag {bag} has several camera topics ({', '.join(cams)}); choose one with "
                                  f"--image-topic")
        notes.append(f"camera topic {image_topic} ({typ(image_topic)})")
    # GNSS
    if fix_topic is None:
        fix_topic = DEFAULT_FIX_TOPIC
        if fix_topic not in topics:
            fixes = [k for k, v in topics.items() if v[0] == FIX_TYPE and k != gt_topic]
            if len(fixes) != 1:
                raise InvalidArgument(f"bag {bag} has no GNSS topic {DEFAULT_FIX_TOPIC}"
                                      + (f" and several NavSatFix topics ({', '.join(sorted(fixes))}); choose one with "
                                         f"--fix-topic" if fixes else f"; its topics: {listing}"))
            fix_topic = fixes[0]
            notes.append(f"GNSS topic {fix_topic}")
    if fix_topic not in topics:
        raise InvalidArgument(f"bag {bag} has no topic {fix_topic}; its topics: {listing}")
    if typ(fix_topic) != FIX_TYPE:
        raise InvalidArgument(f"GNSS topic {fix_topic} is a {typ(fix_topic)}, not a {FIX_TYPE}")
    # odometry (optional)
    if odom_topic == "":
        odom_topic = None
    elif odom_topic is None:
        odom_topic = DEFAULT_ODOM_TOPIC if topics.get(DEFAULT_ODOM_TOPIC, ("",))[0] == ODOM_TYPE else None
        if odom_topic is None:
            notes.append(f"no odometry ({DEFAULT_ODOM_TOPIC} missing): the localizers run on GNSS (+camera) only")
    elif odom_topic not in topics:
        raise InvalidArgument(f"bag {bag} has no topic {odom_topic}; its topics: {listing}")
    elif typ(odom_topic) != ODOM_TYPE:
        raise InvalidArgument(f"odometry topic {odom_topic} is a {typ(odom_topic)}, not a {ODOM_TYPE}")
    # ground truth (optional)
    gt_type = None
    if gt_topic:
        if gt_topic not in topics:
            notes.append(f"no ground truth: topic {gt_topic} is not in the bag")
            gt_topic = None
        else:
            gt_type = typ(gt_topic)
            if gt_type not in (FIX_TYPE, ODOM_TYPE):
                raise InvalidArgument(f"ground-truth topic {gt_topic} is a {gt_type}; use a {FIX_TYPE} or an "
                                      f"{ODOM_TYPE} in the map frame")
    return image_topic, typ(image_topic), fix_topic, odom_topic, gt_topic, gt_type, notes


# ---------------------------------------------------------------------------------------
# helpers


def _camera_info_topic(topics: Dict[str, Tuple[str, int]], image_topic: str) -> Optional[str]:
    """The CameraInfo beside an image topic (``.../image_raw[/compressed]`` -> ``.../camera_info``)."""
    base = image_topic[:-len("/compressed")] if image_topic.endswith("/compressed") else image_topic
    cand = base.rsplit("/", 1)[0] + "/camera_info"
    if topics.get(cand, ("",))[0] == CAMERA_INFO_TYPE:
        return cand
    infos = [k for k, v in topics.items() if v[0] == CAMERA_INFO_TYPE]
    return infos[0] if len(infos) == 1 else None


def _camera_model(info, static_tfs, camera_mount, base_frame: str):
    """CameraModel from a camera_info sample and the mounting (/tf_static, else ``camera_mount``)."""
    from ..metric.bev import CameraModel, mount_from_transforms

    mount = mount_from_transforms(static_tfs, base_frame, info.frame_id) if static_tfs else None
    if mount is None:
        mount = camera_mount
    if mount is None:
        raise InvalidArgument(f"no transform {base_frame} -> {info.frame_id} in /tf_static and no camera mounting "
                              f"given (--camera-mount x,y,z,roll,pitch,yaw)")
    return CameraModel.from_camera_info(info.width, info.height, info.K, info.D).with_mount(*mount)


def _rot_cov(c2: np.ndarray, deg: float, to_grid: bool) -> np.ndarray:
    """Rotate a 2x2 covariance between true east/north and UTM grid axes (grid convergence ``deg``)."""
    g = math.radians(deg)
    R = np.array([[math.cos(g), math.sin(g)], [-math.sin(g), math.cos(g)]])  # grid -> ENU
    return R.T @ c2 @ R if to_grid else R @ c2 @ R.T


def _get(est, name, default=None):
    if isinstance(est, dict):
        return est.get(name, default)
    return getattr(est, name, default)


def _record_estimate(log_: MethodLog, est, keyframe: bool) -> None:
    cov = np.asarray(_get(est, "cov"), float).reshape(3, 3)
    cand = _get(est, "candidates")
    log_.add(_get(est, "t"), _get(est, "lat"), _get(est, "lon"), _get(est, "x"), _get(est, "y"),
             _get(est, "yaw", float("nan")), cov, _get(est, "status", "tracking"), keyframe=keyframe,
             match_used=bool(_get(est, "match_used", False)), confidence=_get(est, "confidence"),
             compute_ms=_get(est, "compute_ms") if keyframe else None, reasons=_get(est, "reasons", []))
    if keyframe:
        cx = np.asarray(_get(cand, "x", []) if cand is not None else [], float).reshape(-1)
        cy = np.asarray(_get(cand, "y", []) if cand is not None else [], float).reshape(-1)
        log_.cand_x.append(cx)
        log_.cand_y.append(cy)
        log_.cand_t.append(float(_get(est, "t")))


def _config_dict(cfg) -> Dict[str, Any]:
    try:
        d = dataclasses.asdict(cfg)
    except TypeError:
        d = dict(getattr(cfg, "__dict__", {}))
    return json.loads(json.dumps(d, default=str))


def load_localizer_config(path: Optional[Path]):
    """LocalizerConfig from a YAML (or JSON) file of overrides -> (config, overrides dict)."""
    from ..pipeline import LocalizerConfig

    if path is None:
        return LocalizerConfig(), {}
    path = Path(path)
    if not path.is_file():
        raise InvalidArgument(f"--config {path} does not exist")
    import yaml

    try:
        d = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InvalidArgument(f"--config {path} is not valid YAML: {exc}") from exc
    if isinstance(d, dict) and "localizer" in d and isinstance(d["localizer"], dict) and len(d) == 1:
        d = d["localizer"]
    if not isinstance(d, dict):
        raise InvalidArgument(f"--config {path} must be a mapping of LocalizerConfig fields to values")
    return make_config(d, source=str(path)), d


def make_config(overrides: Dict[str, Any], source: str = "config"):
    from ..pipeline import LocalizerConfig

    if hasattr(LocalizerConfig, "from_dict"):
        try:
            return LocalizerConfig.from_dict(dict(overrides))
        except GeolocError:
            raise
        except (TypeError, ValueError, KeyError) as exc:
            raise InvalidArgument(f"{source}: {exc}") from exc
    names = {f.name for f in dataclasses.fields(LocalizerConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise InvalidArgument(f"{source}: unknown LocalizerConfig key(s) {', '.join(unknown)}; valid: "
                              f"{', '.join(sorted(names))}")
    try:
        return LocalizerConfig(**overrides)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{source}: {exc}") from exc


def find_world_dir(bag: Path) -> Optional[Path]:
    """The world a synthetic drive was made in (``drive.json`` beside the bag), if it still exists."""
    from ..sim.bag import read_drive_manifest

    bag = Path(bag).resolve()
    for d in (bag.parent, bag.parent.parent):
        if (d / "drive.json").is_file():
            try:
                p = read_drive_manifest(d).get("world", {}).get("path")
            except IncompatibleArtifact as exc:  # a drive of another version: evaluate without its world
                log.warning("%s; evaluating without the drive's world", exc)
                return None
            if p and (Path(p) / "orthophoto.tif").is_file():
                return Path(p)
            return None
    return None


class _Counter:
    def __init__(self):
        self.counts: Dict[str, int] = {}
        self.examples: Dict[str, str] = {}

    def add(self, key: str, message: str) -> None:
        n = self.counts.get(key, 0)
        self.counts[key] = n + 1
        if n == 0:
            self.examples[key] = message
            log.warning("replay: %s: %s (further ones are counted)", key, message.splitlines()[0])


# ---------------------------------------------------------------------------------------
# the replay, step by step: open the bag and pick its topics, feed the localizers, collect


@dataclass
class _Plan:
    """What one replay reads: the bag, the role of each topic it uses, the topics chosen and why
    the others are skipped."""

    src: BagSource
    roles: Dict[str, str]  # topic -> "image" | "fix" | "odom" | "gt" | "camera_info" | "tf_static"
    topics: Dict[str, Any]  # ReplayResult.topics: image, image_type, fix, odom, gt, gt_type, notes
    skipped: Dict[str, str]


def _open_bag(bag: Path, image_topic: Optional[str], fix_topic: Optional[str], odom_topic: Optional[str],
              gt_topic: Optional[str], metric: bool) -> _Plan:
    """Open ``bag`` and pick the topics to read (``_pick_topics``); for metric matching (``metric``)
    also the camera_info beside the camera and /tf_static, which the camera model is built from."""
    src = BagSource(bag)
    image_topic, image_type, fix_topic, odom_topic, gt_topic, gt_type, notes = _pick_topics(
        src.topics, image_topic, fix_topic, odom_topic, gt_topic, bag)
    roles = {image_topic: "image", fix_topic: "fix"}
    if odom_topic:
        roles[odom_topic] = "odom"
    if metric:
        info_topic = _camera_info_topic(src.topics, image_topic)
        if info_topic:
            roles[info_topic] = "camera_info"
        else:
            notes.append(f"no camera_info beside {image_topic}: metric matching cannot project the camera")
        if src.topics.get(TF_STATIC_TOPIC, ("",))[0] == TF_TYPE:
            roles[TF_STATIC_TOPIC] = "tf_static"
    if gt_topic:
        roles.setdefault(gt_topic, "gt")
    known = typestore().types
    skipped = {name: (f"{typ}, {n} messages: not used by the localizer" if typ in known else
                      f"{typ}, {n} messages: message type unknown to this reader, skipped")
               for name, (typ, n) in sorted(src.topics.items()) if name not in roles}
    for n in notes:
        log.info("replay: %s", n)
    topics = {"image": image_topic, "image_type": image_type, "fix": fix_topic, "odom": odom_topic, "gt": gt_topic,
              "gt_type": gt_type, "notes": notes}
    return _Plan(src, roles, topics, skipped)


class _Feeder:
    """Feeds a bag's messages (in stamp order) to raw GNSS, the GNSS+odometry baseline and the
    corrected Localizer, as the node does, and records what each publishes, the ground truth, the
    camera model's inputs, the drops and the time spent."""

    def __init__(self, corrected, baseline, gt_type: Optional[str], *, publish_on_fix: bool, camera_mount,
                 base_frame: str):
        self.corrected, self.baseline = corrected, baseline
        self.frame = corrected.frame
        self.conv_deg = self.frame.grid_convergence_deg(0.0, 0.0)  # over a city the convergence varies by < 0.1 deg
        self.gt_type = gt_type
        self.publish_on_fix, self.camera_mount, self.base_frame = publish_on_fix, camera_mount, base_frame
        self.logs = {m: MethodLog(m) for m in METHODS}
        self.drops = _Counter()
        self.counts = {"image": 0, "fix": 0, "odom": 0, "gt": 0}
        self.timing = {"read_decode_s": 0.0, "baseline_s": 0.0, "corrected_s": 0.0}
        self.gt_t: List[float] = []
        self.gt_lat: List[float] = []
        self.gt_lon: List[float] = []
        self.gt_xy: List[Tuple[float, float]] = []
        self.static_tfs: List[Any] = []
        self.camera_peaks: List[Tuple[float, float, float, float, bool, float]] = []
        self.metric_samples: List[Any] = []
        self.t_first: Optional[float] = None
        self.t_last: Optional[float] = None

    def run(self, stream: Iterator[Tuple[str, int, Any]], roles: Dict[str, str], bar=None) -> float:
        """Feed every (topic, stamp ns, message) of ``stream``; -> wall time (s)."""
        handlers = {"gt": self._gt, "tf_static": self._tf_static, "camera_info": self._camera_info,
                    "image": self._image, "fix": self._fix, "odom": self._odom}
        wall0 = time.perf_counter()
        tr0 = time.perf_counter()
        for topic, s_ns, msg in stream:
            self.timing["read_decode_s"] += time.perf_counter() - tr0
            role = roles[topic]
            if bar is not None:
                bar.update(1)
            t = s_ns * 1e-9
            self.counts[role] = self.counts.get(role, 0) + 1
            if role in ("image", "fix", "odom"):  # the span of the evaluation
                self.t_first = t if self.t_first is None else self.t_first
                self.t_last = t
            handlers[role](t, msg)
            tr0 = time.perf_counter()
        return time.perf_counter() - wall0

    def _call(self, name: str, fn, *a):
        """``fn(*a)`` of the ``name`` localizer, timed; as the node: one bad message must not end the
        run (counted and logged), only a GeolocError (a configuration problem) does."""
        t0 = time.perf_counter()
        try:
            return fn(*a)
        except GeolocError:
            raise
        except Exception as exc:
            self.drops.add(f"{name}.processing_error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}")
            return None
        finally:
            self.timing[f"{name}_s"] += time.perf_counter() - t0

    def _convert(self, role: str, fn, msg):
        """``fn(msg)``, or None (counted per reason) when the message cannot be converted."""
        try:
            return fn(msg)
        except MessageDropped as exc:
            self.drops.add(f"{role}.{exc.reason}", str(exc))
        except Exception as exc:
            self.drops.add(f"{role}.conversion_error", f"{type(exc).__name__}: {exc}")
        return None

    def _gt(self, t: float, msg) -> None:
        if self.gt_type == FIX_TYPE:
            sample, reason = msgconv.navsatfix_check(msg)
            if sample.ok:
                self.gt_t.append(sample.t)
                self.gt_lat.append(sample.lat)
                self.gt_lon.append(sample.lon)
            else:
                self.drops.add(f"gt.{reason}", f"ground-truth fix at t={t:.3f} not usable ({reason})")
        else:
            try:
                o = msgconv.odometry(msg)
                self.gt_t.append(o.t)
                self.gt_xy.append((o.x, o.y))
            except MessageDropped as exc:
                self.drops.add(f"gt.{exc.reason}", str(exc))

    def _tf_static(self, t: float, msg) -> None:
        self.static_tfs.extend(msgconv.transforms(msg))

    def _camera_info(self, t: float, msg) -> None:
        try:
            self.corrected.set_camera(_camera_model(msgconv.camera_info(msg), self.static_tfs, self.camera_mount,
                                                    self.base_frame))
        except (MessageDropped, InvalidArgument) as exc:
            self.drops.add(f"camera_info.{getattr(exc, 'reason', 'invalid')}", str(exc))

    def _image(self, t: float, msg) -> None:
        t1 = time.perf_counter()
        img = self._convert("image", msg_to_rgb, msg)
        self.timing["read_decode_s"] += time.perf_counter() - t1
        if img is None:
            return
        est = self._call("corrected", self.corrected.on_image, t, img)
        if est is not None:
            _record_estimate(self.logs["corrected"], est, keyframe=True)
            pk = est.camera_peak
            if pk is not None:
                self.camera_peaks.append((t, pk[0], pk[1], pk[2], bool(est.match_used), float(est.confidence)))
                self.metric_samples.append((t, est.metric, (est.x, est.y, est.yaw)))
        est = self._call("baseline", self.baseline.on_image, t, img)
        if est is not None:
            _record_estimate(self.logs["baseline"], est, keyframe=True)

    def _fix(self, t: float, msg) -> None:
        checked = self._convert("fix", msgconv.navsatfix_check, msg)
        if checked is None:
            return
        sample, reason = checked
        if reason not in ("ok", "no_fix"):
            self.drops.add(f"fix.{reason}", f"GNSS fix at t={t:.3f} not usable ({reason})")
        if sample.ok:
            x, y = self.frame.from_latlon(sample.lat, sample.lon)
            c3 = np.full((3, 3), np.nan)
            if sample.cov_en is not None:
                c3[:2, :2] = _rot_cov(sample.cov_en, self.conv_deg, to_grid=True)
            self.logs["raw"].add(sample.t, sample.lat, sample.lon, x, y, float("nan"), c3, "fix")
        for name, loc in (("corrected", self.corrected), ("baseline", self.baseline)):
            self._call(name, loc.on_fix, sample.t, sample.lat, sample.lon, sample.cov_en, sample.ok)
            if self.publish_on_fix:
                est = self._call(name, loc.estimate, sample.t)
                if est is not None:
                    _record_estimate(self.logs[name], est, keyframe=False)

    def _odom(self, t: float, msg) -> None:
        o = self._convert("odom", msgconv.odometry, msg)
        if o is not None:
            for name, loc in (("corrected", self.corrected), ("baseline", self.baseline)):
                self._call(name, loc.on_odom, *o)

    def truth(self, frame, gt_frame) -> Tuple[Optional[M.Truth], Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]]:
        """(Truth in ``frame``, (t, lat, lon)) of the ground-truth messages read, or (None, None).
        An Odometry truth's x/y are in ``gt_frame``."""
        if not self.gt_t:
            return None, None
        gt_t_a = np.asarray(self.gt_t, float)
        if self.gt_type == FIX_TYPE:
            lat_a, lon_a = np.asarray(self.gt_lat), np.asarray(self.gt_lon)
            x, y = frame.from_latlon(lat_a, lon_a)
        else:
            xy = np.asarray(self.gt_xy, float)
            lat_a, lon_a = gt_frame.to_latlon(xy[:, 0], xy[:, 1])
            x, y = frame.from_latlon(lat_a, lon_a)
        return M.Truth(gt_t_a, x, y), (gt_t_a, np.asarray(lat_a, float), np.asarray(lon_a, float))


def _progress_bar(bag: Path, plan: _Plan, progress: bool):
    if not progress:
        return None
    from tqdm import tqdm

    total = sum(plan.src.topics[t][1] for t in plan.roles)
    return tqdm(total=total, desc=f"replay {bag_display_name(bag)}", unit="msg", dynamic_ncols=True)


def _read_outcome(bag: Path, plan: _Plan, feeder: _Feeder, late: Dict[str, int],
                  reorder_window_s: float) -> Optional[str]:
    """Count the late messages as drops; refuse a bag that gave no message to feed; -> why the
    evaluation is partial (a truncated bag), or None."""
    src, roles, gt_topic = plan.src, plan.roles, plan.topics["gt"]
    drops = feeder.drops
    for topic, n in late.items():
        drops.counts[f"{roles[topic]}.late"] = n
        drops.examples[f"{roles[topic]}.late"] = (f"{n} {topic} messages arrived more than {reorder_window_s} s after "
                                                  f"newer ones and were dropped")
    if feeder.t_first is None:
        raise InvalidArgument(f"bag {bag} has no messages on {', '.join(sorted(set(roles) - {gt_topic}))}"
                              + (f" ({src.truncated})" if src.truncated else ""))
    if not src.truncated:
        return None
    expected = {r: src.topics[t][1] for t, r in roles.items()}
    partial = (f"bag is truncated: {src.truncated}; evaluated the first {feeder.t_last - feeder.t_first:.1f} s "
               f"({', '.join(f'{feeder.counts[r]}/{expected[r]} {r}' for r in expected)} messages read)")
    if src.open_error is not None:
        partial = f"could not open the bag normally ({src.open_error}); " + partial
    log.warning("replay: %s", partial)
    return partial


def _localizer_stats(feeder: _Feeder) -> Dict[str, Any]:
    stats = {}
    for name, loc in (("corrected", feeder.corrected), ("baseline", feeder.baseline)):
        try:
            stats[name] = json.loads(json.dumps(loc.stats(), default=str))
        except Exception as exc:
            stats[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return stats


def _measurement_info(encoder, index, matcher, frame, recall_radius_m: Optional[float]):
    """(encoder identity, index description, recall radius) of what the camera was matched against."""
    spacing = getattr(index, "spacing_m", None)
    radius = recall_radius_m if recall_radius_m is not None else (
        float(spacing) * math.sqrt(0.5) if spacing else None)
    ident = dict(getattr(encoder, "identity", {}) or {})
    index_info = {"path": str(getattr(index, "path", "")), "num_tiles": getattr(index, "num_tiles", None),
                  "spacing_m": spacing, "tile_m": getattr(index, "tile_m", None),
                  "heading_bins": getattr(index, "heading_bins", None), "frame": frame.to_dict()}
    if encoder is None and matcher is not None:
        ident = {"preset": "metric"}
        index_info = {"frame": frame.to_dict(), "orthophoto": str(getattr(matcher.aerial.imagery, "path", ""))}
    return ident, index_info, radius


def replay_bag(bag, encoder, index, cfg=None, *, gt_topic: Optional[str] = DEFAULT_GT_TOPIC,
               gt_frame: Optional[Any] = None, image_topic: Optional[str] = None, fix_topic: Optional[str] = None,
               odom_topic: Optional[str] = None, publish_on_fix: bool = True, reorder_window_s: float = 0.5,
               config_name: str = "default", progress: bool = True, recall_radius_m: Optional[float] = None,
               world_dir: Optional[Path] = None, grid_dt_s: float = 0.1, max_age_s: float = 2.0,
               matcher=None, camera_mount=None, base_frame: str = "base_link") -> ReplayResult:
    """Replay ``bag`` through raw GNSS, the GNSS+odometry baseline and the full Localizer; compute
    the metrics (``result.metrics``). ``cfg``: LocalizerConfig (default: defaults); the baseline is
    ``dataclasses.replace(cfg, use_camera=False)``. ``gt_frame``: LocalFrame of an Odometry ground
    truth's x/y (default: the map frame, i.e. the index datum). ``matcher``: a
    ``metric.MetricMatcher`` (metric matching; its camera model comes from the bag's camera_info
    and /tf_static, or ``camera_mount`` = (R, t) of the optical frame in base_link)."""
    from ..pipeline import Localizer, LocalizerConfig

    bag = Path(bag)
    cfg = cfg if cfg is not None else LocalizerConfig()
    if not getattr(cfg, "use_camera", True):
        raise InvalidArgument("the config sets use_camera=False: the replay runs that baseline itself; give the "
                              "camera configuration")
    plan = _open_bag(bag, image_topic, fix_topic, odom_topic, gt_topic, metric=matcher is not None)
    corrected = Localizer(encoder, index, cfg, matcher=matcher)
    frame = corrected.frame
    baseline = Localizer(encoder, index, dataclasses.replace(cfg, use_camera=False), frame=frame)
    feeder = _Feeder(corrected, baseline, plan.topics["gt_type"], publish_on_fix=publish_on_fix,
                     camera_mount=camera_mount, base_frame=base_frame)
    late: Dict[str, int] = {}
    bar = _progress_bar(bag, plan, progress)
    wall = feeder.run(stamp_ordered(plan.src.messages(list(plan.roles)), int(reorder_window_s * 1e9), late),
                      plan.roles, bar)
    if bar is not None:
        bar.close()
    partial = _read_outcome(bag, plan, feeder, late, reorder_window_s)
    truth, truth_ll = feeder.truth(frame, gt_frame or frame)
    if truth is None and plan.topics["gt"]:
        plan.topics["notes"].append(f"ground-truth topic {plan.topics['gt']} has no usable message")
    timing = feeder.timing
    duration = max(0.0, feeder.t_last - feeder.t_first)
    timing.update({"wall_s": wall, "bag_duration_s": duration,
                   "speedup_total": duration / wall if wall > 0 else None,
                   "speedup_corrected": duration / (timing["read_decode_s"] + timing["corrected_s"])
                   if timing["read_decode_s"] + timing["corrected_s"] > 0 else None})
    ident, index_info, radius = _measurement_info(encoder, index, matcher, frame, recall_radius_m)
    res = ReplayResult(
        bag=bag, storage=plan.src.storage, frame=frame, methods=feeder.logs, truth=truth, truth_latlon=truth_ll,
        topics=plan.topics, bag_topics=dict(plan.src.topics), skipped_topics=plan.skipped, counts=feeder.counts,
        drops=dict(feeder.drops.counts), drop_examples=dict(feeder.drops.examples), partial=partial,
        t_start=feeder.t_first, t_end=feeder.t_last, timing=timing, localizer_stats=_localizer_stats(feeder),
        config=_config_dict(cfg), config_name=config_name, model=ident,
        backend=str(getattr(encoder, "backend", "?")), index_info=index_info, recall_radius_m=radius,
        world_dir=Path(world_dir) if world_dir else find_world_dir(bag), gt_topic=plan.topics["gt"],
        camera_peaks=feeder.camera_peaks, metric_samples=feeder.metric_samples,
        aerial=matcher.aerial if matcher is not None else None)
    if truth is not None and res.world_dir is not None:
        res.truth_map, res.map_offset = _truth_in_map_frame(truth, res.world_dir, frame)
    res.metrics = compute_metrics(res, grid_dt_s=grid_dt_s, max_age_s=max_age_s)
    return res


def _truth_in_map_frame(truth: M.Truth, world_dir: Path, frame):
    """(truth + the world's survey misregistration at the truth, its size), or (None, None) when
    the world records none. ``frame``: the replay's map frame (the world's frame may differ)."""
    try:
        from ..sim.survey import misregistration_displacement

        wf = world_frame(world_dir)
        ox = oy = 0.0
        if wf is not None and wf.epsg == frame.epsg:  # same UTM zone: the frames differ by their origins
            ox, oy = frame.origin_e - wf.origin_e, frame.origin_n - wf.origin_n
        dx, dy = misregistration_displacement(Path(world_dir), truth.x + ox, truth.y + oy)
    except Exception as exc:  # noqa: BLE001 - an older or foreign world: no map-frame figures
        log.debug("no misregistration for %s: %s", world_dir, exc)
        return None, None
    d = np.hypot(dx, dy)
    if not np.any(d > 0):
        return None, None
    return (M.Truth(truth.t, truth.x + dx, truth.y + dy),
            {"mean": float(np.mean(d)), "max": float(np.max(d))})


def compute_metrics(res: ReplayResult, *, grid_dt_s: float = 0.1, max_age_s: float = 2.0) -> Dict[str, Any]:
    """The metrics of a replay (see ``evaluation.metrics`` and docs/evaluation.md)."""
    tracks = res.tracks()
    out: Dict[str, Any] = {"span_s": res.duration_s, "grid_dt_s": grid_dt_s, "max_age_s": max_age_s,
                           "methods": {}, "not_computed": []}
    for name, tr in tracks.items():
        out["methods"][name] = M.evaluate_track(tr, res.truth, t_start=res.t_start, t_end=res.t_end,
                                                grid_dt_s=grid_dt_s, max_age_s=max_age_s)
    c = res.methods["corrected"]
    out["methods"]["corrected"]["keyframes"] = int(sum(c.keyframe))
    out["methods"]["corrected"]["matches_used"] = int(sum(1 for k, u in zip(c.keyframe, c.match_used) if k and u))
    if res.truth is not None and len(res.truth):
        m = out["methods"]
        out["improvement"] = {
            "corrected_vs_raw": M.improvement(m["raw"]["error_m"], m["corrected"]["error_m"]),
            "corrected_vs_baseline": M.improvement(m["baseline"]["error_m"], m["corrected"]["error_m"]),
            "baseline_vs_raw": M.improvement(m["raw"]["error_m"], m["baseline"]["error_m"]),
        }
        for name in METHODS:
            tr = tracks[name]
            m[name]["along_across_m"] = M.along_across_stats(tr.t, tr.x, tr.y, res.truth)
        if res.camera_peaks:
            out["camera"] = M.camera_recall(np.asarray(res.camera_peaks, float), res.truth_map or res.truth)
        if res.truth_map is not None:
            # the camera cannot see a misregistered map's error: score against the truth as the map shows it
            out["map_frame"] = {"misregistration_m": res.map_offset, "methods": {}}
            for k in METHODS:
                err, dx, dy = M.horizontal_errors(tracks[k], res.truth_map)
                use = tracks[k].usable()
                mf = {"error_m": M.error_stats(np.where(use, err, np.nan))}
                if tracks[k].cov is not None:
                    mf["covariance"] = M.covariance_honesty(np.where(use, dx, np.nan), dy, tracks[k].cov)
                out["map_frame"]["methods"][k] = mf
        if res.recall_radius_m and c.cand_t:
            tx, ty, _ = res.truth.at(np.asarray(c.cand_t, float))
            out["recall"] = M.recall_at_k(c.cand_x, c.cand_y, tx, ty, res.recall_radius_m,
                                          ks=(1, 5, 10))
        else:
            out["not_computed"].append("recall@K: no keyframe with retrieval candidates" if res.recall_radius_m
                                       else "recall@K: no tile index")
    else:
        why = (f"no ground truth (topic {res.gt_topic} has no usable message)" if res.gt_topic else
               "no ground truth (no ground-truth topic given)")
        out["not_computed"] += [f"{k}: {why}" for k in (
            "horizontal error (mean/median/p95/max)", "improvement ratios", "covariance honesty (NEES, ellipses)",
            "availability within 5/10/25 m", "recall@K")]
    return out


# ---------------------------------------------------------------------------------------
# outputs


def write_estimates_csv(res: ReplayResult, path: Path) -> Path:
    """Every published estimate of every method (plus its truth and error) as one CSV."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(ESTIMATE_COLUMNS)
        for name in METHODS:
            lg = res.methods[name]
            tr = lg.track()
            if res.truth is not None and len(res.truth):
                err, dx, dy = M.horizontal_errors(tr, res.truth)
                tx, ty = tr.x - dx, tr.y - dy
                nees = M.nees_2d(dx, dy, tr.cov)
            else:
                err = tx = ty = nees = np.full(len(tr), np.nan)
            for i in range(len(lg)):
                c = lg.cov[i]
                ns = int(round(lg.t[i] * 1e9))
                w.writerow([name, f"{lg.t[i]:.9f}", ns, f"{lg.lat[i]:.9f}", f"{lg.lon[i]:.9f}", _fmt(lg.x[i], 4),
                            _fmt(lg.y[i], 4), _fmt(lg.yaw[i], 6),
                            _fmt(_heading(lg.yaw[i], res.frame, lg.x[i], lg.y[i]), 3), _fmt(c[0, 0], 6),
                            _fmt(c[0, 1], 6), _fmt(c[1, 1], 6), _fmt(c[2, 2], 8), lg.status[i], int(lg.keyframe[i]),
                            int(lg.match_used[i]), _fmt(lg.confidence[i], 4), _fmt(lg.compute_ms[i], 3),
                            _fmt(tx[i], 4), _fmt(ty[i], 4), _fmt(err[i], 4), _fmt(nees[i], 4)])
    tmp.replace(path)
    return path


def _fmt(v: float, nd: int) -> str:
    v = float(v)
    return f"{v:.{nd}f}" if math.isfinite(v) else ""


def _heading(yaw: float, frame, x, y) -> float:
    if not math.isfinite(yaw):
        return float("nan")
    from ..core.geo import yaw_to_heading_deg

    return float(yaw_to_heading_deg(yaw) + frame.grid_convergence_deg(x, y)) % 360.0


def read_estimates_csv(path: Path) -> Dict[str, Dict[str, np.ndarray]]:
    """``estimates.csv`` -> {method: {column: array}} (numbers as float, status as str)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out: Dict[str, Dict[str, list]] = {}
    for r in rows:
        d = out.setdefault(r["method"], {k: [] for k in ESTIMATE_COLUMNS if k != "method"})
        for k in d:
            d[k].append(r[k])
    res: Dict[str, Dict[str, np.ndarray]] = {}
    for m, d in out.items():
        res[m] = {}
        for k, v in d.items():
            if k == "status":
                res[m][k] = np.asarray(v, dtype=object)
            elif k == "stamp_ns":
                res[m][k] = np.asarray([int(s) for s in v], np.int64)
            else:
                res[m][k] = np.asarray([float(s) if s != "" else np.nan for s in v], float)
    return res


ESTIMATE_TOPICS = {
    "corrected": ("/geoloc/fix", "/geoloc/pose"),
    "baseline": ("/geoloc_baseline/fix", "/geoloc_baseline/pose"),
    "raw": ("/gnss/fix", None),
    "truth": ("/gnss/fix_truth", None),
}


def estimates_csv_to_bag(csv_path: Path, out_dir: Path, frame, *, map_frame: str = "map",
                         base_frame: str = "base_link", force: bool = False) -> Path:
    """Write ``estimates.csv`` as a rosbag2 (MCAP) of the published topics: for the corrected
    output and the baseline a NavSatFix (``/geoloc/fix``, ``/geoloc_baseline/fix``; covariance
    KNOWN, true east/north) and a PoseWithCovarianceStamped in ``map_frame``; the raw GNSS as
    ``/gnss/fix``; the truth (when known) as ``/gnss/fix_truth``. Readable in Foxglove / rviz."""
    from ..core.msgconv import pose_cov6, yaw_to_quat

    data = read_estimates_csv(csv_path)
    out_dir = check_output_dir(out_dir, force)
    if out_dir.exists():  # the bag writer makes the folder itself
        shutil.rmtree(out_dir)
    specs, events = [], []
    for method, (fix_topic, pose_topic) in ESTIMATE_TOPICS.items():
        src = "raw" if method == "truth" else method
        if src not in data:
            continue
        d = data[src]
        if method == "truth":
            ok = np.isfinite(d["truth_x"])
            if not ok.any():
                continue
        specs.append(TopicSpec(fix_topic, "sensor_msgs/msg/NavSatFix", base_frame, f"{method} position"))
        if pose_topic:
            specs.append(TopicSpec(pose_topic, "geometry_msgs/msg/PoseWithCovarianceStamped", map_frame,
                                   f"{method} pose in the map frame"))
        for i in range(len(d["t"])):
            events.append((int(d["stamp_ns"][i]), len(events), method, i))
    events.sort()
    ts = typestore()
    T = ts.types
    NavSatFix, NavSatStatus = T["sensor_msgs/msg/NavSatFix"], T["sensor_msgs/msg/NavSatStatus"]
    PWCS, PWC = T["geometry_msgs/msg/PoseWithCovarianceStamped"], T["geometry_msgs/msg/PoseWithCovariance"]
    Pose, Point, Quat = T["geometry_msgs/msg/Pose"], T["geometry_msgs/msg/Point"], T["geometry_msgs/msg/Quaternion"]

    tmp_parent = out_dir.with_name(f".{out_dir.name}.tmp{os.getpid()}")
    if tmp_parent.exists():
        shutil.rmtree(tmp_parent)
    tmp_parent.mkdir(parents=True)
    tmp = tmp_parent / out_dir.name  # rosbags names the .mcap after its folder
    try:
        with BagWriter(tmp, specs, storage="mcap") as w:
            for ns, _, method, i in events:
                src = "raw" if method == "truth" else method
                d = data[src]
                fix_topic, pose_topic = ESTIMATE_TOPICS[method]
                if method == "truth":
                    x, y = d["truth_x"][i], d["truth_y"][i]
                    if not (math.isfinite(x) and math.isfinite(y)):
                        continue
                    lat, lon = frame.to_latlon(x, y)
                    cov9, ctype, st = np.zeros(9), NavSatFix.COVARIANCE_TYPE_DIAGONAL_KNOWN, NavSatStatus.STATUS_FIX
                else:
                    x, y, lat, lon = d["x"][i], d["y"][i], d["lat"][i], d["lon"][i]
                    c2 = np.array([[d["cov_xx"][i], d["cov_xy"][i]], [d["cov_xy"][i], d["cov_yy"][i]]])
                    cov9 = np.zeros(9)
                    if np.all(np.isfinite(c2)):
                        cov9.reshape(3, 3)[:2, :2] = _rot_cov(c2, frame.grid_convergence_deg(x, y), to_grid=False)
                        cov9[8] = 100.0
                        ctype = NavSatFix.COVARIANCE_TYPE_KNOWN
                    else:
                        ctype = NavSatFix.COVARIANCE_TYPE_UNKNOWN
                    ok = str(d["status"][i]) in ("fix", "tracking", "degraded")
                    st = NavSatStatus.STATUS_FIX if ok else NavSatStatus.STATUS_NO_FIX
                fix = NavSatFix(header=header(ts, ns, base_frame), status=NavSatStatus(status=st,
                                service=NavSatStatus.SERVICE_GPS),
                                latitude=float(lat), longitude=float(lon), altitude=0.0,
                                position_covariance=cov9, position_covariance_type=ctype)
                w.write(fix_topic, ns, fix)
                if pose_topic:
                    yaw = d["yaw"][i]
                    q = yaw_to_quat(yaw if math.isfinite(yaw) else 0.0)
                    c3 = np.zeros((3, 3))
                    c3[0, 0], c3[0, 1], c3[1, 0], c3[1, 1] = d["cov_xx"][i], d["cov_xy"][i], d["cov_xy"][i], \
                        d["cov_yy"][i]
                    c3[2, 2] = d["cov_yawyaw"][i] if math.isfinite(d["cov_yawyaw"][i]) else 1e6
                    c3 = np.nan_to_num(c3, nan=1e6)
                    pose = PWCS(header=header(ts, ns, map_frame), pose=PWC(
                        pose=Pose(position=Point(x=float(x), y=float(y), z=0.0),
                                  orientation=Quat(x=q[0], y=q[1], z=q[2], w=q[3])),
                        covariance=np.asarray(pose_cov6(c3), float)))
                    w.write(pose_topic, ns, pose)
        tmp.replace(out_dir)
    finally:
        shutil.rmtree(tmp_parent, ignore_errors=True)
    return out_dir


def metrics_document(res: ReplayResult, command: Optional[str]) -> Dict[str, Any]:
    """metrics.json: manifest (format, version, tool, command, bag, model, config) + metrics."""
    from .. import __version__

    return _clean({
        "format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION, "tool_version": __version__,
        "command": command, "run": res.run_name,
        "bag": {"path": str(Path(res.bag).resolve()), "storage": res.storage, "name": bag_display_name(res.bag),
                "duration_s": res.duration_s, "t_start": res.t_start, "t_end": res.t_end,
                "topics": {k: {"type": v[0], "count": v[1]} for k, v in sorted(res.bag_topics.items())}},
        "topics_used": res.topics, "skipped_topics": res.skipped_topics, "messages_read": res.counts,
        "drops": res.drops, "drop_examples": res.drop_examples, "partial": res.partial,
        "model": res.model, "backend": res.backend, "index": res.index_info, "config_name": res.config_name,
        "config": res.config, "timing": res.timing, "localizer_stats": res.localizer_stats,
        "metrics": res.metrics})


def _clean(o):
    """JSON-safe copy: numpy -> Python, non-finite floats -> None, paths -> str."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, np.ndarray):
        return _clean(o.tolist())
    if isinstance(o, (bool, np.bool_)):
        return bool(o)
    if isinstance(o, (int, np.integer)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        v = float(o)
        return v if math.isfinite(v) else None
    if o is None or isinstance(o, str):
        return o
    return str(o)


def write_run(res: ReplayResult, out_root: Path, *, command: Optional[str] = None, force: bool = False,
              name: Optional[str] = None, plots: bool = True) -> Path:
    """Write the run directory ``out_root/<bag>__<model>__<config>/``: metrics.json,
    estimates.csv, estimates/ (MCAP bag of the published topics), PNGs and report.md. Written
    into a temporary sibling and renamed; an existing non-empty run directory is only replaced
    with ``force``."""
    from ..core.manifest import write_json_atomic

    run_dir = check_output_dir(Path(out_root) / (name or res.run_name), force)
    tmp = run_dir.with_name(f".{run_dir.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        doc = metrics_document(res, command)
        write_estimates_csv(res, tmp / "estimates.csv")
        estimates_csv_to_bag(tmp / "estimates.csv", tmp / "estimates", res.frame)
        pictures: Dict[str, str] = {}
        if plots:
            from .plots import plot_all

            pictures = plot_all(res, tmp)
        doc["pictures"] = pictures
        write_json_atomic(tmp / "metrics.json", doc)
        from .report import write_report

        write_report(doc, tmp / "report.md")
        if run_dir.exists():
            shutil.rmtree(run_dir) if run_dir.is_dir() else run_dir.unlink()
        tmp.replace(run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_dir


def load_run(run_dir: Path) -> Dict[str, Any]:
    """metrics.json of a run directory, format-checked."""
    from ..core.manifest import read_manifest

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InvalidArgument(f"{run_dir} is not a run directory (made by `geoloc eval replay`)")
    return read_manifest(run_dir / "metrics.json", RUN_FORMAT, RUN_FORMAT_VERSION, what=f"eval run {run_dir}",
                         rebuild="evaluate the bag again with `geoloc eval replay ... --force`")


def summary_line(res: ReplayResult) -> str:
    """One line: errors of the three methods, availability, speed-up."""
    m = res.metrics["methods"]

    def med(k):
        e = m[k].get("error_m", {}).get("median")
        return f"{e:.2f} m" if e is not None else "n/a"

    sp = res.timing.get("speedup_total")
    parts = [f"median error raw {med('raw')}, baseline {med('baseline')}, corrected {med('corrected')}"]
    av = m["corrected"]["availability"].get("available_pct")
    if av is not None:
        parts.append(f"corrected available {av:.0f}% of the time")
    parts.append(f"{res.duration_s:.0f} s of bag in {res.timing['wall_s']:.1f} s"
                 + (f" ({sp:.1f}x real time)" if sp else ""))
    if res.partial:
        parts.append("PARTIAL: " + res.partial)
    if res.truth is None:
        parts.append("no ground truth: errors not computed")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------
# path-level entry point and reading published topics back


def evaluate_bag(bag, index_dir=None, model=None, *, backend: str = "auto", config_path: Optional[Path] = None,
                 out: Path = Path("runs/eval"), force: bool = False, command: Optional[str] = None,
                 progress: bool = True, ortho: Optional[Path] = None, features: str = "gradient",
                 **replay_kw) -> Tuple[Path, ReplayResult]:
    """Load the camera measurement(s), replay ``bag`` and write the run directory.
    -> (run directory, ReplayResult).

    Metric matching runs on ``ortho`` (an orthophoto; default: the synthetic drive's world) with the
    ``features`` extractor; retrieval on ``index_dir`` + ``model`` (both optional when there is an
    orthophoto: retrieval then only serves relocalisation). Refuses an existing run directory
    (unless ``force``) before the replay starts. ``replay_kw`` go to ``replay_bag``."""
    bag = Path(bag)
    if not bag.exists():
        raise InvalidArgument(f"bag {bag} does not exist")
    cfg, overrides = load_localizer_config(config_path)
    cfg_name = config_name_for(overrides, Path(config_path).stem if config_path else None)
    encoder = index = matcher = None
    if index_dir is not None:
        from ..index import TileIndex
        from ..inference import load_encoder

        if not Path(index_dir).is_dir():
            raise InvalidArgument(f"index {index_dir} does not exist; build one with `geoloc index build`")
        if model is None:
            raise InvalidArgument("--index needs --model (the encoder the index was built with)")
        encoder = load_encoder(model, backend=backend)
        index = TileIndex.open(index_dir, expect_model=encoder.identity)
    world_dir = replay_kw.get("world_dir") or find_world_dir(bag)
    if ortho is None and world_dir is not None and cfg.camera_measurement != "retrieval":
        ortho = Path(world_dir) / "orthophoto.tif"
    if ortho is not None:
        from ..metric import open_matcher

        frame = index.frame if index is not None else world_frame(world_dir)
        matcher = open_matcher(ortho, cfg, frame=frame, features=features)
    if encoder is None and matcher is None:
        raise InvalidArgument("nothing to match the camera against: give --ortho (metric matching) and/or "
                              "--index with --model (retrieval)")
    ident = dict(encoder.identity) if encoder is not None else {"preset": f"metric-{features}"}
    check_output_dir(Path(out) / run_name(bag, ident, cfg_name), force)  # before the replay, not after it
    res = replay_bag(bag, encoder, index, cfg, config_name=cfg_name, progress=progress, matcher=matcher, **replay_kw)
    if encoder is None:
        res.model, res.backend = ident, "metric"
    return write_run(res, out, command=command, force=force), res


def world_frame(world_dir: Optional[Path]):
    """The map frame of a synthetic world (its datum), or None (the matcher picks one)."""
    if world_dir is None:
        return None
    from ..core.geo import LocalFrame
    from ..sim.world import read_world_manifest

    return LocalFrame.from_dict(read_world_manifest(world_dir)["frame"])


def read_track(bag, topic: str, frame, name: Optional[str] = None) -> M.Track:
    """A published topic of a bag (the node's output recorded, or a run's ``estimates/``) as a
    ``metrics.Track`` in ``frame``: NavSatFix (lat/lon, covariance rotated from east/north to the
    grid; status FIX -> "tracking", else "lost") or PoseWithCovarianceStamped (x, y already in
    the map frame ``frame``; status "tracking"). The bag module reads the messages into arrays
    (``bag.read_positions``); the map frame and the Track are evaluation's."""
    p = read_positions(Path(bag), topic)
    if p.msgtype == FIX_TYPE:
        xy = [frame.from_latlon(lat, lon) for lat, lon in zip(p.lat, p.lon)]
        x = np.asarray([float(a) for a, _ in xy], float)
        y = np.asarray([float(b) for _, b in xy], float)
        cov = np.asarray([_rot_cov(c, frame.grid_convergence_deg(float(a), float(b)), to_grid=True)
                          for c, a, b in zip(p.cov, x, y)], float).reshape(-1, 2, 2)
        status = np.asarray(["tracking" if f else "lost" for f in p.fix], dtype=object)
    else:
        x, y, cov = p.x, p.y, p.cov
        status = np.full(len(p.t), "tracking", dtype=object)
    return M.Track(name or topic, p.t, x, y, cov=cov, status=status)
