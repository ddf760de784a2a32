"""Drive-time sensor conditions: GNSS receiver environments, over-confident covariance, a fixed wheel
scale error with slip, the static load pitch of the body, and the published (mis)calibration of the
camera. ``sim.drive.simulate_drive`` applies these from a ``sim.conditions.Conditions``; every one is
off by default and then leaves a drive exactly as it was (same random draws, same bytes).

Randomness: the GNSS environment continues the "gnss" stream after ``simulate_gnss`` (so the receiver's
own draws are unchanged), the slip draws from "slip" and the load pitch from "load".

GNSS qualities (``GNSS_QUALITIES``; horizontal error medians measured in test_drive_conditions):

* ``open-sky``: a good receiver with a clear view, ~1-1.5 m raw median, rare small multipath;
* ``suburban``: trees and low buildings, ~3-5 m, occasional multipath jumps of 8-25 m;
* ``urban``: a consumer receiver between buildings: 5-10 m raw median, multipath bursts of 20-30 m for
  seconds, frequent short outages after which the fix re-acquires with a jump (an offset that decays
  over ~20 s), and episodes of a ~10 m bias lasting 30-60 s. The receiver does not know any of this:
  its reported sigma stays its nominal one (``reported_sigma_m``), as on a real consumer receiver.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .conditions import CalibError, Conditions
from .drive import GNSS_NOMINAL, GNSS_OUTAGE, GnssFixes, GnssModel, Trajectory, _check_interval, _check_range

GNSS_BIAS_EPISODE = 3  # GnssFixes.state of a fix inside an urban bias episode (after NOMINAL, MULTIPATH, OUTAGE)


# ---------------------------------------------------------------------------------------
# GNSS environment


@dataclass(frozen=True)
class GnssQuality:
    """A receiver environment: the error process (``model``, a ``GnssModel``) plus what the plain
    model lacks (bias episodes, jumps at re-acquisition) and what the receiver reports.

    ``reported_sigma_m``: the per-axis sigma the receiver reports at hdop 1 (None: the model's
    own ``nominal_sigma_m``, i.e. honest in nominal operation)."""

    name: str
    model: GnssModel
    bias_episode_rate_per_min: float = 0.0
    bias_episode_m: Tuple[float, float] = (8.0, 12.0)
    bias_episode_duration_s: Tuple[float, float] = (30.0, 60.0)
    bias_episode_ramp_s: float = 3.0
    reacquire_jump_m: Tuple[float, float] = (0.0, 0.0)
    reacquire_tau_s: float = 20.0
    reported_sigma_m: Optional[float] = None

    def __post_init__(self):
        o = f"gnss quality {self.name}"
        _check_range(o, "bias_episode_rate_per_min", self.bias_episode_rate_per_min, 0.0, 60.0)
        _check_interval(o, "bias_episode_m", self.bias_episode_m, 0.0, 1000.0)
        _check_interval(o, "bias_episode_duration_s", self.bias_episode_duration_s, 0.0, 3600.0)
        _check_range(o, "bias_episode_ramp_s", self.bias_episode_ramp_s, 0.0, 600.0)
        _check_interval(o, "reacquire_jump_m", self.reacquire_jump_m, 0.0, 1000.0)
        _check_range(o, "reacquire_tau_s", self.reacquire_tau_s, 0.0, 3600.0, lo_open=True)
        if self.reported_sigma_m is not None:
            _check_range(o, "reported_sigma_m", self.reported_sigma_m, 0.0, 100.0, lo_open=True)

    @property
    def sigma_m(self) -> float:
        """What the receiver reports per axis at hdop 1."""
        return self.model.nominal_sigma_m if self.reported_sigma_m is None else float(self.reported_sigma_m)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["model"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in d["model"].items()}
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


GNSS_QUALITIES: Dict[str, GnssQuality] = {
    "open-sky": GnssQuality("open-sky", GnssModel(
        bias_sigma_m=0.95, bias_tau_s=90.0, white_sigma_m=0.35, hdop_mean=1.0, hdop_sigma=0.12,
        multipath_rate_per_min=0.1, multipath_jump_m=(3.0, 8.0), multipath_duration_s=(1.0, 3.0),
        outage_rate_per_min=0.02, outage_duration_s=(1.0, 3.0))),
    "suburban": GnssQuality("suburban", GnssModel(
        bias_sigma_m=2.6, bias_tau_s=60.0, white_sigma_m=1.0, hdop_mean=1.1, hdop_sigma=0.3,
        multipath_rate_per_min=1.0, multipath_jump_m=(8.0, 25.0), multipath_duration_s=(2.0, 6.0),
        outage_rate_per_min=0.3, outage_duration_s=(1.0, 5.0)),
        reacquire_jump_m=(1.0, 4.0)),
    "urban": GnssQuality("urban", GnssModel(
        bias_sigma_m=3.0, bias_tau_s=45.0, white_sigma_m=1.5, hdop_mean=1.25, hdop_sigma=0.35,
        multipath_rate_per_min=1.5, multipath_jump_m=(20.0, 30.0), multipath_duration_s=(2.0, 8.0),
        outage_rate_per_min=1.0, outage_duration_s=(1.0, 6.0)),
        bias_episode_rate_per_min=0.4, reacquire_jump_m=(3.0, 10.0), reported_sigma_m=GnssModel().nominal_sigma_m),
}


def gnss_quality(name: str) -> Optional[GnssQuality]:
    """The environment named by ``Conditions.gnss_quality`` (None for "default": the drive's own
    ``DriveConfig.gnss``)."""
    return None if name == "default" else GNSS_QUALITIES[name]


def _ramp(t: np.ndarray, a: float, b: float, ramp: float) -> np.ndarray:
    """Trapezoid weight: 0 outside [a, b], 1 inside, linear over ``ramp`` seconds at both ends."""
    if ramp <= 0:
        return ((t >= a) & (t < b)).astype(float)
    return np.clip(np.minimum((t - a) / ramp, (b - t) / ramp), 0.0, 1.0)


def apply_gnss_environment(fixes: GnssFixes, quality: GnssQuality, rng: np.random.Generator) -> Dict[str, Any]:
    """Add ``quality``'s bias episodes and re-acquisition jumps to ``fixes`` (in place) and set the
    reported sigma to the receiver's. Returns what was drawn (for drive.json)."""
    t = fixes.t
    dt = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
    t_end = float(t[-1]) + dt
    off = np.zeros((len(t), 3))
    episodes: List[Dict[str, float]] = []
    rate = quality.bias_episode_rate_per_min / 60.0
    if rate > 0:
        s = float(rng.exponential(1.0 / rate)) - float(np.mean(quality.bias_episode_duration_s))  # may be underway
        while s < t_end:
            dur = float(rng.uniform(*quality.bias_episode_duration_s))
            mag = float(rng.uniform(*quality.bias_episode_m))
            ang = float(rng.uniform(0.0, 2.0 * math.pi))
            if s + dur > 0:
                w = _ramp(t, s, s + dur, quality.bias_episode_ramp_s)
                off[:, 0] += w * mag * math.cos(ang)
                off[:, 1] += w * mag * math.sin(ang)
                off[:, 2] += w * 0.5 * mag
                episodes.append({"start_s": s, "end_s": s + dur, "bias_m": mag, "direction_deg": math.degrees(ang)})
            s += dur + float(rng.exponential(1.0 / rate))
    jumps: List[Dict[str, float]] = []
    lo, hi = quality.reacquire_jump_m
    if hi > 0:
        out = fixes.state == GNSS_OUTAGE
        ends = np.flatnonzero(out[:-1] & ~out[1:]) + 1  # first fix after each outage
        for k in ends:
            mag = float(rng.uniform(lo, hi))
            ang = float(rng.uniform(0.0, 2.0 * math.pi))
            w = np.where(t >= t[k], np.exp(-(t - t[k]) / quality.reacquire_tau_s), 0.0)
            off[:, 0] += w * mag * math.cos(ang)
            off[:, 1] += w * mag * math.sin(ang)
            jumps.append({"t_s": float(t[k]), "jump_m": mag, "direction_deg": math.degrees(ang)})
    ok = fixes.state != GNSS_OUTAGE
    fixes.x = np.where(ok, fixes.x + off[:, 0], fixes.x)
    fixes.y = np.where(ok, fixes.y + off[:, 1], fixes.y)
    fixes.alt = np.where(ok, fixes.alt + off[:, 2], fixes.alt)
    in_episode = np.zeros(len(t), bool)
    for e in episodes:
        in_episode |= _ramp(t, e["start_s"], e["end_s"], quality.bias_episode_ramp_s) > 0.5
    fixes.state = np.where(in_episode & (fixes.state == GNSS_NOMINAL), GNSS_BIAS_EPISODE, fixes.state).astype(np.uint8)
    if quality.reported_sigma_m is not None:
        fixes.sigma_h = fixes.hdop * quality.sigma_m
        fixes.sigma_v = fixes.sigma_h * quality.model.vertical_factor
    return {"bias_episodes": episodes, "reacquisitions": jumps}


def apply_overconfidence(fixes: GnssFixes, factor: float) -> None:
    """The receiver reports ``factor`` x its covariance (sigma x sqrt(factor); < 1: over-confident)."""
    if factor != 1.0:
        s = math.sqrt(float(factor))
        fixes.sigma_h = fixes.sigma_h * s
        fixes.sigma_v = fixes.sigma_v * s


def raw_error_median(fixes: GnssFixes) -> float:
    """Median horizontal error of the published fixes (outages excluded), metres."""
    e = fixes.error_h
    e = e[np.isfinite(e)]
    return float(np.median(e)) if len(e) else float("nan")


# ---------------------------------------------------------------------------------------
# wheel odometry: fixed scale error and slip


@dataclass(frozen=True)
class SlipModel:
    """Wheel slip on hard braking/acceleration: while |dv/dt| exceeds ``accel_mps2`` the wheel speed
    carries an extra scale error of ``pct`` percent (drawn per episode; wheels lag the car when
    braking, spin ahead when accelerating). 1.8 m/s^2: the simulated drives brake at up to 2 m/s^2
    (``drive.speed_profile``), so this is their hardest braking."""

    accel_mps2: float = 1.8
    pct: Tuple[float, float] = (2.0, 4.0)

    def __post_init__(self):
        _check_range("slip", "accel_mps2", self.accel_mps2, 0.0, 20.0, lo_open=True)
        _check_interval("slip", "pct", self.pct, 0.0, 50.0)


def wheel_slip(truth: Trajectory, t: np.ndarray, rng: np.random.Generator,
               model: SlipModel = SlipModel()) -> Tuple[np.ndarray, Dict[str, Any]]:
    """Extra wheel scale error (fraction) at times ``t`` and what was drawn."""
    acc = np.interp(t, truth.t, np.gradient(truth.speed, truth.t)) if len(truth.t) > 1 else np.zeros(len(t))
    hard = np.abs(acc) > model.accel_mps2
    extra = np.zeros(len(t))
    starts = np.flatnonzero(hard & ~np.concatenate([[False], hard[:-1]]))
    ends = np.flatnonzero(hard & ~np.concatenate([hard[1:], [False]])) + 1
    pcts = []
    for a, b in zip(starts, ends):
        p = float(rng.uniform(*model.pct))
        extra[a:b] = np.sign(acc[a:b]) * p / 100.0
        pcts.append(p)
    return extra, {"accel_mps2": model.accel_mps2, "episodes": len(pcts), "samples": int(hard.sum()),
                   "pct": pcts}


# ---------------------------------------------------------------------------------------
# body load pitch


def draw_load_pitch(rng: np.random.Generator, max_deg: float) -> float:
    """Static nose-up pitch of a loaded car (rear passengers, luggage), degrees in [0, max_deg]."""
    return float(rng.uniform(0.0, max_deg)) if max_deg > 0 else 0.0


# ---------------------------------------------------------------------------------------
# camera mounting: true and published


@dataclass(frozen=True)
class CameraMount:
    """camera_link in base_link (m; REP-103 roll/pitch/yaw in degrees, pitch > 0 looks down) and the
    focal lengths (px) of camera_info."""

    x: float
    y: float
    z: float
    roll_deg: float
    pitch_deg: float
    yaw_deg: float
    fx: float
    fy: float

    def to_dict(self) -> Dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @property
    def rpy_rad(self) -> Tuple[float, float, float]:
        return math.radians(self.roll_deg), math.radians(self.pitch_deg), math.radians(self.yaw_deg)

    @property
    def level(self) -> bool:
        return self.roll_deg == 0.0 and self.pitch_deg == 0.0 and self.yaw_deg == 0.0


def true_mount(camera, camera_x_m: float) -> CameraMount:
    """The camera that renders the frames: level, ``camera_x_m`` ahead of and ``mount_height_m`` above
    base_link (``sim.bag.camera_poses``)."""
    return CameraMount(float(camera_x_m), 0.0, float(camera.mount_height_m), 0.0, 0.0, 0.0, float(camera.fx),
                       float(camera.fy))


def published_mount(true: CameraMount, calib: CalibError) -> CameraMount:
    """What /tf_static and camera_info say: true + error (angles added, height added to z, both focal
    lengths scaled by 1 + fx_pct / 100: a focal-length error keeps square pixels)."""
    s = 1.0 + calib.fx_pct / 100.0
    return CameraMount(true.x, true.y, true.z + calib.height_m, true.roll_deg + calib.roll_deg,
                       true.pitch_deg + calib.pitch_deg, true.yaw_deg + calib.yaw_deg, true.fx * s, true.fy * s)


@dataclass
class SensorRealisation:
    """What the conditions drew for one drive (drive.json -> ``realisation``)."""

    load_pitch_deg: float = 0.0
    odometry: Dict[str, Any] = field(default_factory=dict)
    gnss: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {"load_pitch_deg": self.load_pitch_deg, "load_pitch": "nose up (REP-103 pitch -= it)",
                "odometry": self.odometry, "gnss": self.gnss}


def conditions_of(manifest: Dict[str, Any]) -> Conditions:
    """The conditions a drive was made under (drive.json; absent: the defaults, as on older drives)."""
    d = manifest.get("conditions")
    return Conditions() if d is None else Conditions.from_dict(d)
