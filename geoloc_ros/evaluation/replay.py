"""Replay a rosbag2 (MCAP or sqlite3) through the Localizer and evaluate it against ground truth.

    res = replay_bag(bag, encoder, index, cfg)     # one pass over the bag, three methods
    run_dir = write_run(res, out_root, command=..., force=False)

One pass reads every message of the used topics in header-stamp order (a small reorder buffer)
and feeds them through the ROS node's own input router (``runtime.InputRouter``: the same
conversions, stamps, camera model and drop counting as ``ros/node.py``):

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
by ``_pick_topics``), ``_Feeder`` (messages re-ordered by ``bag.stamp_ordered``, converted once
and applied to both localizers by their ``runtime.InputRouter``), then ``_read_outcome`` and the
result with its metrics. The result and the run folder are ``evaluation.runs``'; the estimates as
CSV and as a bag ``evaluation.export`` (both re-exported here).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from ..bag import FIX_TYPE, BagSource, stamp_ordered, typestore
from ..core import msgconv
from ..core.errors import GeolocError, IncompatibleArtifact, InvalidArgument
from ..core.msgconv import MessageDropped, enu_to_grid_cov
from ..core.outputs import check_output_dir
from ..metric.config import DEFAULT_FEATURES
from . import metrics as M
from .export import ESTIMATE_COLUMNS, ESTIMATE_TOPICS, estimates_csv_to_bag, read_estimates_csv, read_track, write_estimates_csv  # noqa: F401
from .runs import (  # noqa: F401
    METHOD_LABELS,
    METHODS,
    MethodLog,
    ReplayResult,
    _truth_in_map_frame,
    bag_display_name,
    compute_metrics,
    config_name_for,
    load_run,
    metrics_document,
    run_name,
    summary_line,
    world_frame,
    write_run,
)

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
    ox = _get(est, "ortho_x", float("nan"))
    if ox is not None and np.isfinite(ox) and len(log_.ortho_x) == len(log_.t) - 1:  # the orthophoto's own frame
        oc = _get(est, "ortho_cov")
        log_.ortho_x.append(float(ox))
        log_.ortho_y.append(float(_get(est, "ortho_y")))
        log_.ortho_cov.append(np.asarray(cov if oc is None else oc, float).reshape(3, 3))
        log_.offset.append(_get(est, "map_offset"))
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
    """LocalizerConfig from a YAML (or JSON) file of overrides -> (config, overrides dict). The file
    is the fields themselves, or a ``localizer:`` block as its only key, or a node parameters file
    (config/geoloc.yaml: its ``<node>: ros__parameters: localizer:`` block)."""
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
    if isinstance(d, dict) and len(d) == 1:
        (only,) = d.values()
        if isinstance(only, dict) and isinstance(only.get("ros__parameters"), dict):  # a ROS parameters file
            d = only["ros__parameters"].get("localizer") or {}
        elif "localizer" in d and isinstance(d["localizer"], dict):
            d = d["localizer"]
    if not isinstance(d, dict):
        raise InvalidArgument(f"--config {path} must be a mapping of LocalizerConfig fields to values")
    return make_config(d, source=str(path)), d


def make_config(overrides: Dict[str, Any], source: str = "config"):
    """LocalizerConfig from a mapping of its fields (unknown keys, types and ranges checked)."""
    from ..pipeline import LocalizerConfig

    try:
        return LocalizerConfig.from_dict(dict(overrides))
    except GeolocError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
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


@dataclass(frozen=True)
class GnssEdit:
    """What the replay does to the bag's GNSS fixes before the localizers see them (the recorded bag
    is never changed): ``remove`` [(start_s, end_s), ...] drops the fixes in those spans (a GNSS-denied
    start, a tunnel); ``shift`` [(start_s, end_s, dx_m, dy_m), ...] moves them by (dx, dy) metres on
    the map frame's axes (a GNSS fix that jumps somewhere wrong: kidnapping). Seconds from the first
    camera, GNSS or odometry message; a span is [start, end). Ground truth is never edited."""

    remove: Tuple[Tuple[float, float], ...] = ()
    shift: Tuple[Tuple[float, float, float, float], ...] = ()

    def __post_init__(self):
        for sp in tuple(self.remove) + tuple((a, b) for a, b, *_ in self.shift):
            if len(sp) != 2 or not all(math.isfinite(float(v)) for v in sp) or sp[1] < sp[0]:
                raise InvalidArgument(f"GNSS edit span {sp} must be (start_s, end_s) with start <= end")

    def apply(self, item, t_rel: float, frame):
        """The edited fix input (``runtime.router.FixInput``), or None when it is removed."""
        if any(a <= t_rel < b for a, b in self.remove):
            return None
        for a, b, dx, dy in self.shift:
            if a <= t_rel < b and item.sample.ok:
                x, y = frame.from_latlon(item.sample.lat, item.sample.lon)
                lat, lon = frame.to_latlon(float(x) + float(dx), float(y) + float(dy))
                item = item._replace(sample=item.sample._replace(lat=float(lat), lon=float(lon)))
        return item


class _Feeder:
    """Feeds a bag's messages (in stamp order) through the node's input router
    (``runtime.InputRouter``) to the corrected Localizer and to the GNSS+odometry baseline, and
    records what each publishes, the raw GNSS, the ground truth, the drops and the time spent."""

    def __init__(self, corrected, baseline, gt_type: Optional[str], *, publish_on_fix: bool, camera_mount,
                 base_frame: str, gnss_edit: Optional[GnssEdit] = None, start_s: float = 0.0):
        from ..runtime import Counter, InputRouter

        self.corrected, self.baseline = corrected, baseline
        self.frame = corrected.frame
        self.gt_type = gt_type
        self.logs = {m: MethodLog(m) for m in METHODS}
        self.drops = Counter("replay: dropped")
        kw = dict(camera_mount=camera_mount, base_frame=base_frame, publish_on_fix=publish_on_fix, drops=self.drops)
        self.routers = {"corrected": InputRouter(corrected, **kw), "baseline": InputRouter(baseline, **kw)}
        self.counts = {"image": 0, "fix": 0, "odom": 0, "gt": 0}
        self.gnss_edit = gnss_edit
        self.start_s = float(start_s)
        self.t_bag0: Optional[float] = None
        self.gnss_edited = {"removed": 0, "shifted": 0}
        self.timing = {"read_decode_s": 0.0, "baseline_s": 0.0, "corrected_s": 0.0}
        self.gt_t: List[float] = []
        self.gt_lat: List[float] = []
        self.gt_lon: List[float] = []
        self.gt_xy: List[Tuple[float, float]] = []
        self.camera_peaks: List[Tuple[float, float, float, float, bool, float]] = []
        self.metric_samples: List[Any] = []
        self.camera_track: List[Dict[str, Any]] = []
        self.t_first: Optional[float] = None
        self.t_last: Optional[float] = None

    def run(self, stream: Iterator[Tuple[str, int, Any]], roles: Dict[str, str], bar=None) -> float:
        """Feed every (topic, stamp ns, message) of ``stream``; -> wall time (s)."""
        wall0 = time.perf_counter()
        tr0 = time.perf_counter()
        for topic, s_ns, msg in stream:
            self.timing["read_decode_s"] += time.perf_counter() - tr0
            role = roles[topic]
            if bar is not None:
                bar.update(1)
            t = s_ns * 1e-9
            if self.start_s > 0.0 and role in ("image", "fix", "odom"):  # the node started late: skipped
                self.t_bag0 = t if self.t_bag0 is None else self.t_bag0
                if t < self.t_bag0 + self.start_s:
                    tr0 = time.perf_counter()
                    continue
            self.counts[role] = self.counts.get(role, 0) + 1
            if role in ("image", "fix", "odom"):  # the span of the evaluation
                self.t_first = t if self.t_first is None else self.t_first
                self.t_last = t
            if role == "gt":
                self._gt(t, msg)
            else:
                self._route(role, msg)
            tr0 = time.perf_counter()
        return time.perf_counter() - wall0

    def _route(self, kind: str, msg) -> None:
        """One message: converted once (the corrected router's ``convert``), applied to both
        localizers; what they publish is recorded."""
        t0 = time.perf_counter()
        item = self.routers["corrected"].convert(kind, msg)
        self.timing["read_decode_s"] += time.perf_counter() - t0
        if item is None:
            return
        if kind == "fix" and self.gnss_edit is not None:
            edited = self.gnss_edit.apply(item, item.sample.t - self.t_first, self.frame)
            if edited is None:
                self.gnss_edited["removed"] += 1
                return
            self.gnss_edited["shifted"] += int(edited is not item)
            item = edited
        if kind == "fix" and item.sample.ok:
            self._raw(item.sample)
        for name in ("corrected", "baseline"):
            est = self._call(name, self.routers[name].apply, kind, item)
            if est is not None:
                _record_estimate(self.logs[name], est, keyframe=bool(est.keyframe))
                if name == "corrected":
                    self._camera_peak(est)

    def _raw(self, sample) -> None:
        """The GNSS fix itself, as the ``raw`` method (covariance on the grid axes)."""
        x, y = (float(v) for v in self.frame.from_latlon(sample.lat, sample.lon))
        c3 = np.full((3, 3), np.nan)
        if sample.cov_en is not None:
            c3[:2, :2] = enu_to_grid_cov(sample.cov_en, self.corrected.grid_convergence_deg(x, y))
        self.logs["raw"].add(sample.t, sample.lat, sample.lon, x, y, float("nan"), c3, "fix")

    def _camera_peak(self, est) -> None:
        if est.keyframe:
            self._camera_state(est)
        pk = est.camera_peak if est.keyframe else None
        if pk is not None:
            self.camera_peaks.append((est.t, pk[0], pk[1], pk[2], bool(est.match_used), float(est.confidence)))
            self.metric_samples.append((est.t, est.metric, (est.ortho_x, est.ortho_y, est.yaw)))

    def _camera_state(self, est) -> None:
        """Per keyframe: the integrity verdict (counter key, reason in words, the window's NIS, the
        runner-up's ratio, the trust after it), usable ground and the self-calibration's estimate
        (the camera picture and camera.csv: the gate and the calibration at work)."""
        loc = self.corrected
        judged = getattr(est.metric, "measurement", None) is not None  # a volume was scored at this keyframe
        mon = getattr(loc, "integrity", None)
        v = getattr(mon, "last", None) if judged else None
        cal = getattr(getattr(loc, "matcher", None), "selfcal", None)
        nan = float("nan")
        row = {"t": float(est.t), "used": bool(est.match_used),
               "verdict": "passed" if est.match_used else "not measured", "reason": est.match_reason,
               "usable": nan, "nis": nan, "ambiguity": nan, "trust": ""}
        if v is not None:
            row.update(verdict=v.key, reason=v.reason, usable=float(v.usable), nis=float(v.nis),
                       ambiguity=float(v.ambiguity), trust=mon.state.trust)
        if cal is not None:
            e = cal.estimate()
            row.update(pitch_deg=e["pitch_deg"], height_m=e["height_m"])
        self.camera_track.append(row)

    def _call(self, name: str, fn, *a):
        """``fn(*a)`` for the ``name`` localizer, timed; as the node: one bad message must not end the
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
               matcher=None, camera_mount=None, base_frame: str = "base_link",
               gnss_edit: Optional[GnssEdit] = None, start_s: float = 0.0) -> ReplayResult:
    """Replay ``bag`` through raw GNSS, the GNSS+odometry baseline and the full Localizer; compute
    the metrics (``result.metrics``). ``cfg``: LocalizerConfig (default: defaults); the baseline is
    ``dataclasses.replace(cfg, use_camera=False)``. ``gt_frame``: LocalFrame of an Odometry ground
    truth's x/y (default: the map frame, i.e. the index datum). ``matcher``: a
    ``metric.MetricMatcher`` (metric matching; its camera model comes from the bag's camera_info
    and /tf_static, or ``camera_mount`` = (R, t) of the optical frame in base_link). ``gnss_edit``:
    fixes removed or moved before the localizers see them (``GnssEdit``; the bag is not changed);
    ``start_s``: the camera, GNSS and odometry of the bag's first seconds are skipped (the node started
    then: a cold start mid-drive), the evaluation and ``gnss_edit``'s times start there."""
    from ..pipeline import LocalizerConfig
    from ..runtime import build_baseline, build_localizer

    bag = Path(bag)
    cfg = cfg if cfg is not None else LocalizerConfig()
    if not getattr(cfg, "use_camera", True):
        raise InvalidArgument("the config sets use_camera=False: the replay runs that baseline itself; give the "
                              "camera configuration")
    plan = _open_bag(bag, image_topic, fix_topic, odom_topic, gt_topic, metric=matcher is not None)
    corrected = build_localizer(cfg, encoder=encoder, index=index, matcher=matcher)
    frame = corrected.frame
    baseline = build_baseline(corrected)
    feeder = _Feeder(corrected, baseline, plan.topics["gt_type"], publish_on_fix=publish_on_fix,
                     camera_mount=camera_mount, base_frame=base_frame, gnss_edit=gnss_edit, start_s=start_s)
    late: Dict[str, int] = {}
    bar = _progress_bar(bag, plan, progress)
    wall = feeder.run(stamp_ordered(plan.src.messages(list(plan.roles)), int(reorder_window_s * 1e9), late),
                      plan.roles, bar)
    if bar is not None:
        bar.close()
    corrected.save_map_offset()  # the learned orthophoto offset, when the config names a sidecar to write
    partial = _read_outcome(bag, plan, feeder, late, reorder_window_s)
    truth, truth_ll = feeder.truth(frame, gt_frame or frame)
    if truth is None and plan.topics["gt"]:
        plan.topics["notes"].append(f"ground-truth topic {plan.topics['gt']} has no usable message")
    if gnss_edit is not None:
        plan.topics["notes"].append(f"GNSS edited by the replay: {feeder.gnss_edited['removed']} fixes removed, "
                                    f"{feeder.gnss_edited['shifted']} moved ({gnss_edit})")
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
        camera_peaks=feeder.camera_peaks, metric_samples=feeder.metric_samples, camera_track=feeder.camera_track,
        aerial=matcher.aerial if matcher is not None else None,
        relocalisations=list(getattr(corrected, "reloc_log", [])))
    if truth is not None and res.world_dir is not None:
        res.truth_map, res.map_offset = _truth_in_map_frame(truth, res.world_dir, frame)
    res.metrics = compute_metrics(res, grid_dt_s=grid_dt_s, max_age_s=max_age_s)
    return res


# ---------------------------------------------------------------------------------------
# path-level entry point and reading published topics back


def evaluate_bag(bag, index_dir=None, model=None, *, backend: str = "auto", config_path: Optional[Path] = None,
                 out: Path = Path("runs/eval"), force: bool = False, command: Optional[str] = None,
                 progress: bool = True, ortho: Optional[Path] = None, features: str = DEFAULT_FEATURES,
                 map_offset: Optional[Path] = None, **replay_kw) -> Tuple[Path, ReplayResult]:
    """Load the camera measurement(s), replay ``bag`` and write the run directory.
    -> (run directory, ReplayResult).

    Metric matching runs on ``ortho`` (an orthophoto; default: the synthetic drive's world) with the
    ``features`` extractor; retrieval on ``index_dir`` + ``model`` (both optional when there is an
    orthophoto: retrieval then only serves relocalisation). ``map_offset``: a learned orthophoto
    offset (sidecar of ``geoloc map calibrate``) to start from, read only (the estimator on).
    Refuses an existing run directory (unless ``force``) before the replay starts. ``replay_kw`` go
    to ``replay_bag``."""
    bag = Path(bag)
    if not bag.exists():
        raise InvalidArgument(f"bag {bag} does not exist")
    cfg, overrides = load_localizer_config(config_path)
    if map_offset is not None:
        if not Path(map_offset).is_file():
            raise InvalidArgument(f"--map-offset {map_offset} does not exist; learn one with `geoloc map calibrate`")
        extra = {"map_offset_estimate": True, "map_offset_file": str(Path(map_offset).resolve()),
                 "map_offset_save": False}
        cfg, overrides = make_config({**overrides, **extra}, source="--map-offset"), {**overrides, **extra}
    cfg_name = config_name_for(overrides, Path(config_path).stem if config_path else None)
    from ..runtime import load_measurements

    if index_dir is not None:
        if not Path(index_dir).is_dir():
            raise InvalidArgument(f"index {index_dir} does not exist; build one with `geoloc index build`")
        if model is None:
            raise InvalidArgument("--index needs --model (the encoder the index was built with)")
    world_dir = replay_kw.get("world_dir") or find_world_dir(bag)
    if ortho is None and world_dir is not None and cfg.camera_measurement != "retrieval":
        ortho = Path(world_dir) / "orthophoto.tif"
    if ortho is None and index_dir is None:
        raise InvalidArgument("nothing to match the camera against: give --ortho (metric matching) and/or "
                              "--index with --model (retrieval)")
    m = load_measurements(cfg, orthophoto=ortho, index_path=index_dir, model=model, backend=backend,
                          features=features, frame=world_frame(world_dir) if index_dir is None else None)
    encoder, index, matcher = m.encoder, m.index, m.matcher
    ident = dict(encoder.identity) if encoder is not None else {"preset": f"metric-{features}"}
    check_output_dir(Path(out) / run_name(bag, ident, cfg_name), force)  # before the replay, not after it
    res = replay_bag(bag, encoder, index, cfg, config_name=cfg_name, progress=progress, matcher=matcher, **replay_kw)
    if encoder is None:
        res.model, res.backend = ident, "metric"
    return write_run(res, out, command=command, force=force), res


