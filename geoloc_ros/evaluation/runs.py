"""A replay's results: what each method published (``MethodLog``), the ``ReplayResult`` with its
metrics, run names, and the run folder (``write_run`` / ``load_run``: metrics.json, estimates,
pictures, report.md).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..core.errors import InvalidArgument
from ..core.outputs import check_output_dir
from . import RUN_FORMAT, RUN_FORMAT_VERSION
from . import metrics as M

log = logging.getLogger(__name__)

METHODS = ("raw", "baseline", "corrected")
METHOD_LABELS = {"raw": "raw GNSS", "baseline": "GNSS+odometry (no camera)", "corrected": "geoloc (camera)"}

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
    # the orthophoto's own frame (Estimate.ortho_*; the map-frame figures), per row; empty when not given
    ortho_x: List[float] = field(default_factory=list)
    ortho_y: List[float] = field(default_factory=list)
    ortho_cov: List[np.ndarray] = field(default_factory=list)
    offset: List[Any] = field(default_factory=list)  # the learned map offset's diagnostics, or None, per row

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

    def track(self, ortho: bool = False) -> M.Track:
        """The published track; ``ortho``: the same in the orthophoto's own frame (when recorded)."""
        n = len(self.t)
        order = np.argsort(np.asarray(self.t, float), kind="stable")  # already in order; be safe
        use_o = ortho and len(self.ortho_x) == n
        cov = np.asarray(self.ortho_cov if use_o else self.cov, float).reshape(n, 3, 3)[:, :2, :2] if n else \
            np.zeros((0, 2, 2))
        x, y = (self.ortho_x, self.ortho_y) if use_o else (self.x, self.y)
        return M.Track(self.name, np.asarray(self.t, float)[order], np.asarray(x, float)[order],
                       np.asarray(y, float)[order], cov=cov[order],
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
    camera_track: List[Dict[str, Any]] = field(default_factory=list)  # per keyframe: verdict, usable, self-cal
    aerial: Any = None  # the metric matcher's AerialMap (for the pictures)
    map_offset: Optional[Dict[str, float]] = None  # mean / max misregistration along the truth (m)
    relocalisations: List[Dict[str, Any]] = field(default_factory=list)  # Localizer.reloc_log: attempts, verdicts

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
                tk = res.methods[k].track(ortho=True) if k == "corrected" else tracks[k]
                err, dx, dy = M.horizontal_errors(tk, res.truth_map)
                use = tk.usable()
                mf = {"error_m": M.error_stats(np.where(use, err, np.nan))}
                if tk.cov is not None:
                    mf["covariance"] = M.covariance_honesty(np.where(use, dx, np.nan), dy, tk.cov)
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
    estimates.csv, camera.csv (per keyframe: the camera's verdict), estimates/ (MCAP bag of the
    published topics), PNGs and report.md. Written into a temporary sibling and renamed; an
    existing non-empty run directory is only replaced with ``force``."""
    from ..core.manifest import write_json_atomic
    from .export import estimates_csv_to_bag, write_camera_csv, write_estimates_csv

    run_dir = check_output_dir(Path(out_root) / (name or res.run_name), force)
    tmp = run_dir.with_name(f".{run_dir.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        doc = metrics_document(res, command)
        write_estimates_csv(res, tmp / "estimates.csv")
        estimates_csv_to_bag(tmp / "estimates.csv", tmp / "estimates", res.frame)
        if res.camera_track:
            write_camera_csv(res, tmp / "camera.csv")
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


def world_frame(world_dir: Optional[Path]):
    """The map frame of a synthetic world (its datum), or None (the matcher picks one)."""
    if world_dir is None:
        return None
    from ..core.geo import LocalFrame
    from ..sim.world import read_world_manifest

    return LocalFrame.from_dict(read_world_manifest(world_dir)["frame"])

