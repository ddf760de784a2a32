"""A replay's estimates as files: ``estimates.csv`` (every published estimate of every method, with
its truth and error), that CSV as a bag of the published topics (``estimates_csv_to_bag``), and a
published topic of a bag read back as a track (``read_track``).
"""
from __future__ import annotations

import csv
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from ..bag import FIX_TYPE, BagWriter, TopicSpec, header, read_positions, typestore
from ..core.msgconv import enu_to_grid_cov
from ..core.outputs import check_output_dir
from . import metrics as M

log = logging.getLogger(__name__)
from .runs import METHODS, ReplayResult

ESTIMATE_COLUMNS = ("method", "t", "stamp_ns", "lat", "lon", "x", "y", "yaw", "heading_deg", "cov_xx", "cov_xy",
                    "cov_yy", "cov_yawyaw", "status", "keyframe", "match_used", "confidence", "compute_ms",
                    "truth_x", "truth_y", "error_m", "nees")

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


CAMERA_COLUMNS = ("t", "used", "verdict", "reason", "usable_pct", "nis", "ambiguity", "trust", "selfcal_pitch_deg",
                  "selfcal_pitch_sigma_deg", "selfcal_height_m", "selfcal_height_sigma_m")


def write_camera_csv(res: ReplayResult, path: Path) -> Path:
    """The camera at every keyframe of the corrected run (``ReplayResult.camera_track``): was its
    measurement used, the integrity verdict and why, usable ground, the NIS, the runner-up's
    likelihood ratio, the trust after it and the self-calibration's pitch and height."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(CAMERA_COLUMNS)
        nan = float("nan")
        for r in res.camera_track:
            pitch, height = r.get("pitch_deg", (nan, nan)), r.get("height_m", (nan, nan))  # (estimate, sigma)
            w.writerow([f"{r['t']:.9f}", int(r["used"]), r["verdict"], r["reason"], _fmt(100.0 * r["usable"], 1),
                        _fmt(r["nis"], 3), _fmt(r["ambiguity"], 3), r["trust"], _fmt(pitch[0], 3),
                        _fmt(pitch[1], 3), _fmt(height[0], 4), _fmt(height[1], 4)])
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
    from ..core.msgconv import estimate_status_ok, fix_fields, pose_fields

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
                    f = fix_fields(lat, lon, None, 0.0, ok=True, altitude=0.0)
                    f["position_covariance_type"] = NavSatFix.COVARIANCE_TYPE_DIAGONAL_KNOWN  # exact: zero variances
                else:
                    x, y = d["x"][i], d["y"][i]
                    c2 = np.array([[d["cov_xx"][i], d["cov_xy"][i]], [d["cov_xy"][i], d["cov_yy"][i]]])
                    f = fix_fields(d["lat"][i], d["lon"][i], c2, frame.grid_convergence_deg(x, y),
                                   ok=estimate_status_ok(d["status"][i]), altitude=0.0)
                fix = NavSatFix(header=header(ts, ns, base_frame),
                                status=NavSatStatus(status=f["status"], service=f["service"]),
                                latitude=f["latitude"], longitude=f["longitude"], altitude=f["altitude"],
                                position_covariance=np.asarray(f["position_covariance"], float),
                                position_covariance_type=f["position_covariance_type"])
                w.write(fix_topic, ns, fix)
                if pose_topic:
                    c3 = np.array([[d["cov_xx"][i], d["cov_xy"][i], 0.0], [d["cov_xy"][i], d["cov_yy"][i], 0.0],
                                   [0.0, 0.0, d["cov_yawyaw"][i]]])
                    p = pose_fields(x, y, d["yaw"][i], c3)
                    q = p["orientation"]
                    pose = PWCS(header=header(ts, ns, map_frame), pose=PWC(
                        pose=Pose(position=Point(x=p["position"][0], y=p["position"][1], z=p["position"][2]),
                                  orientation=Quat(x=q[0], y=q[1], z=q[2], w=q[3])),
                        covariance=np.asarray(p["covariance"], float)))
                    w.write(pose_topic, ns, pose)
        tmp.replace(out_dir)
    finally:
        shutil.rmtree(tmp_parent, ignore_errors=True)
    return out_dir


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
        cov = np.asarray([enu_to_grid_cov(c, frame.grid_convergence_deg(float(a), float(b)))
                          for c, a, b in zip(p.cov, x, y)], float).reshape(-1, 2, 2)
        status = np.asarray(["tracking" if f else "lost" for f in p.fix], dtype=object)
    else:
        x, y, cov = p.x, p.y, p.cov
        status = np.full(len(p.t), "tracking", dtype=object)
    return M.Track(name or topic, p.t, x, y, cov=cov, status=status)
