"""Simulated drives through a synthetic world: the drive's configuration and ``simulate_drive``.

numpy only (no ROS, no pyproj): everything here is in the world's local frame (metres,
x = grid east, y = grid north; yaw in radians, counter-clockwise from +x, see
``core.geo``). ``sim.bag`` turns the result into a rosbag2.

Pipeline (``simulate_drive`` runs it from a ``DriveConfig``), one module per stage::

    plan_route(world, rng, length_m)      random walk on world.roads, right-hand lane,      sim.route
        -> Route                          smoothed corners, dense polyline + arc length
    simulate_truth(route, rng, T)         speed profile (cruise per road kind, lateral       sim.trajectory
        -> Trajectory                     acceleration limit in turns, bounded acc/decel)
    simulate_gnss(truth, rng)             Gauss-Markov bias + white noise, multipath jumps,  sim.gnss
        -> GnssFixes                      outages, honest reported sigma (see GnssModel)
    simulate_odometry(truth, rng)         dead reckoning from wheel speed (scale error) and  sim.odometry
        -> OdometrySim                    a drifting gyro; odom frame starts at (0, 0, 0)
    simulate_attitude / simulate_imu      terrain + suspension tilt, the IMU                 sim.imu

The names of those modules are re-exported here (``from .drive import plan_route`` keeps working).

Randomness: one seed per drive; each stage draws from its own stream
(``stream_rng(seed, "route" | "truth" | "gnss" | "odom" | "appearance")``), so changing
one model does not reshuffle the others and a stage can be re-run on its own.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

import numpy as np

from ..core.errors import InvalidArgument
from .gnss import (
    GNSS_MULTIPATH,
    GNSS_NOMINAL,
    GNSS_OUTAGE,
    STATUS_FIX,
    STATUS_NO_FIX,
    GnssFixes,
    GnssModel,
    simulate_gnss,
)
from .imu import (
    GRAVITY,
    Attitude,
    AttitudeModel,
    ImuModel,
    ImuSim,
    body_motion,
    rotation_rpy,
    simulate_attitude,
    simulate_imu,
    terrain_attitude,
)
from .odometry import OdometryModel, OdometrySim, odometry_drift, simulate_odometry, truth_in_odom_frame
from .rangecheck import _check_interval, _check_range
from .route import Route, _resample, lane_offset, plan_route
from .trajectory import CRUISE_MPS, State, Trajectory, simulate_truth, speed_profile

__all__ = [
    # this module
    "STORAGES", "STREAMS", "stream_rng", "SensorRig", "DriveConfig", "DriveSim", "simulate_drive",
    # re-exported: sim.gnss, sim.imu, sim.odometry, sim.rangecheck, sim.route, sim.trajectory
    "GNSS_MULTIPATH", "GNSS_NOMINAL", "GNSS_OUTAGE", "STATUS_FIX", "STATUS_NO_FIX", "GnssFixes", "GnssModel",
    "simulate_gnss", "GRAVITY", "Attitude", "AttitudeModel", "ImuModel", "ImuSim", "body_motion", "rotation_rpy",
    "simulate_attitude", "simulate_imu", "terrain_attitude", "OdometryModel", "OdometrySim", "odometry_drift",
    "simulate_odometry", "truth_in_odom_frame", "_check_interval", "_check_range", "Route", "_resample",
    "lane_offset", "plan_route", "CRUISE_MPS", "State", "Trajectory", "simulate_truth", "speed_profile",
]

log = logging.getLogger(__name__)

STORAGES = ("mcap", "sqlite3")
# new streams go at the end: an existing stream keeps its index, so its draws (and old drives) stay the same
STREAMS = ("route", "truth", "gnss", "odom", "appearance", "imu", "traffic", "lighting", "weather", "road",
           "load", "slip")


def stream_rng(seed: int, stream: str) -> np.random.Generator:
    """Independent generator for one stage of a drive (``STREAMS``), derived from ``seed``."""
    if stream not in STREAMS:
        raise InvalidArgument(f"unknown random stream {stream!r}; valid: {', '.join(STREAMS)}")
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(STREAMS.index(stream),)))


# ---------------------------------------------------------------------------------------
# configuration


def _from_dict(cls, d: Mapping[str, Any], where: str):
    """Build frozen dataclass ``cls`` from a dict; unknown keys are an error naming the key."""
    if not isinstance(d, Mapping):
        raise InvalidArgument(f"{where} must be a mapping, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise InvalidArgument(f"unknown key {where}.{unknown[0]!s}; valid keys: {', '.join(sorted(fields))}")
    kw = {}
    for k, v in d.items():
        sub = _NESTED.get((cls.__name__, k))
        if sub is not None and isinstance(v, Mapping):
            v = _from_dict(sub, v, f"{where}.{k}")
        elif isinstance(v, list):
            v = tuple(v)
        kw[k] = v
    return cls(**kw)


@dataclass(frozen=True)
class SensorRig:
    """Sensor mounting on the vehicle, in base_link (x forward, y left, z up; metres).

    base_link is on the ground under the vehicle reference point; its (x, y, yaw) is the
    ground truth. The camera height is ``PinholeCamera.mount_height_m``; the camera looks
    along +x. With the defaults the camera and the antenna are straight above base_link.
    """

    camera_x_m: float = 0.0
    gnss_x_m: float = 0.0
    gnss_z_m: float = 1.9

    def __post_init__(self):
        _check_range("rig", "camera_x_m", self.camera_x_m, -10.0, 10.0)
        _check_range("rig", "gnss_x_m", self.gnss_x_m, -10.0, 10.0)
        _check_range("rig", "gnss_z_m", self.gnss_z_m, 0.0, 10.0)


@dataclass(frozen=True)
class DriveConfig:
    """Everything that defines a drive besides the world and the camera. Same config +
    same world -> same drive (bit for bit)."""

    duration_s: float = 120.0
    camera_hz: float = 10.0
    gnss_hz: float = 5.0
    odom_hz: float = 50.0
    truth_hz: float = 100.0
    speed_min_mps: float = 5.0
    speed_max_mps: float = 15.0
    lateral_accel_mps2: float = 2.0
    seed: int = 0
    compressed: bool = False
    jpeg_quality: int = 90
    storage: str = "mcap"
    gnss: GnssModel = field(default_factory=GnssModel)
    odom: OdometryModel = field(default_factory=OdometryModel)
    rig: SensorRig = field(default_factory=SensorRig)
    attitude: AttitudeModel = field(default_factory=AttitudeModel)
    imu: ImuModel = field(default_factory=ImuModel)
    imu_hz: float = 100.0
    gnss_seed: Optional[int] = None  # the GNSS receiver's own noise seed (None: ``seed``)

    def __post_init__(self):
        o = "drive"
        _check_range(o, "imu_hz", self.imu_hz, 0.0, 1000.0, lo_open=True)
        _check_range(o, "duration_s", self.duration_s, 0.0, 3600.0, lo_open=True)
        _check_range(o, "camera_hz", self.camera_hz, 0.0, 60.0, lo_open=True)
        _check_range(o, "gnss_hz", self.gnss_hz, 0.0, 20.0, lo_open=True)
        _check_range(o, "odom_hz", self.odom_hz, 0.0, 500.0, lo_open=True)
        _check_range(o, "truth_hz", self.truth_hz, 10.0, 1000.0)
        _check_range(o, "speed_min_mps", self.speed_min_mps, 0.0, 40.0, lo_open=True)
        _check_range(o, "speed_max_mps", self.speed_max_mps, 0.0, 40.0, lo_open=True)
        if self.speed_min_mps >= self.speed_max_mps:
            raise InvalidArgument(f"drive.speed_min_mps ({self.speed_min_mps}) must be below "
                                  f"drive.speed_max_mps ({self.speed_max_mps})")
        _check_range(o, "lateral_accel_mps2", self.lateral_accel_mps2, 0.0, 10.0, lo_open=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or not (
                0 <= self.seed < 2 ** 63):
            raise InvalidArgument(f"drive.seed must be an integer in 0..2^63-1, got {self.seed!r}")
        if self.gnss_seed is not None and (isinstance(self.gnss_seed, bool) or not isinstance(
                self.gnss_seed, (int, np.integer)) or not (0 <= self.gnss_seed < 2 ** 63)):
            raise InvalidArgument(f"drive.gnss_seed must be an integer in 0..2^63-1, got {self.gnss_seed!r}")
        if not isinstance(self.compressed, bool):
            raise InvalidArgument(f"drive.compressed must be true or false, got {self.compressed!r}")
        _check_range(o, "jpeg_quality", self.jpeg_quality, 1, 100, integer=True)
        if self.storage not in STORAGES:
            raise InvalidArgument(f"drive.storage must be one of {', '.join(STORAGES)}, got {self.storage!r}")
        for name, cls in (("gnss", GnssModel), ("odom", OdometryModel), ("rig", SensorRig),
                          ("attitude", AttitudeModel), ("imu", ImuModel)):
            if not isinstance(getattr(self, name), cls):
                raise InvalidArgument(f"drive.{name} must be a {cls.__name__}, got {getattr(self, name)!r}")

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("gnss",):
            d[k] = {kk: (list(v) if isinstance(v, tuple) else v) for kk, v in d[k].items()}
        if d["gnss_seed"] is None:  # a drive without its own GNSS seed keeps the drive.json of earlier versions
            del d["gnss_seed"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DriveConfig":
        """Inverse of ``to_dict``; unknown keys (also nested ones) raise InvalidArgument naming them."""
        return _from_dict(cls, d, "drive")

    def times(self, rate_hz: float) -> np.ndarray:
        """Sample times [s] of a sensor at ``rate_hz``: k / rate for k = 0 .. while t < duration."""
        n = max(int(math.ceil(self.duration_s * rate_hz - 1e-9)), 1)
        return np.arange(n) / float(rate_hz)


_NESTED = {("DriveConfig", "gnss"): GnssModel, ("DriveConfig", "odom"): OdometryModel,
           ("DriveConfig", "rig"): SensorRig, ("DriveConfig", "attitude"): AttitudeModel,
           ("DriveConfig", "imu"): ImuModel}


# ---------------------------------------------------------------------------------------
# the whole drive


@dataclass
class DriveSim:
    """All simulated signals of one drive (local frame), before anything is rendered."""

    config: DriveConfig
    route: Route
    truth: Trajectory
    gnss: GnssFixes
    odom: OdometrySim
    camera_t: np.ndarray
    attitude: Optional[Attitude] = None
    imu: Optional[ImuSim] = None
    conditions: Any = None  # sim.conditions.Conditions (None: the defaults)
    realisation: Optional[Dict[str, Any]] = None  # what the conditions drew (sim.sensors.SensorRealisation)

    def stats(self) -> Dict[str, Any]:
        drift = odometry_drift(self.odom, self.truth)
        dist_odom = float(np.interp(self.odom.t[-1], self.truth.t, self.truth.distance))
        return {"distance_m": float(self.truth.distance[-1]), "duration_s": float(self.config.duration_s),
                "mean_speed_mps": float(np.mean(self.truth.speed)), "frames": int(len(self.camera_t)),
                "gnss": self.gnss.stats(), "odom_final_drift_m": float(drift[-1]),
                "odom_final_drift_pct": float(100.0 * drift[-1] / max(dist_odom, 1e-9)),
                "odom_scale_error": self.odom.scale_error,
                "attitude": self.attitude.stats() if self.attitude is not None else None}


def simulate_drive(world, config: DriveConfig, conditions=None) -> DriveSim:
    """Plan a route and simulate truth, GNSS and odometry for ``config`` (no images).

    ``conditions`` (``sim.conditions.Conditions``; None: the defaults, today's drives bit for bit)
    changes the sensors (``sim.sensors``): GNSS environment and over-confidence, a fixed wheel scale
    error with slip, the static load pitch of the body. The camera side is ``sim.render``'s."""
    from .conditions import Conditions
    from .sensors import (
        SensorRealisation,
        apply_gnss_environment,
        apply_overconfidence,
        draw_load_pitch,
        gnss_quality,
        raw_error_median,
        wheel_slip,
    )

    cfg = config
    cond = Conditions() if conditions is None else conditions
    if not isinstance(cond, Conditions):
        raise InvalidArgument(f"conditions must be a sim.conditions.Conditions, got {cond!r}")
    real = SensorRealisation()
    route = plan_route(world, stream_rng(cfg.seed, "route"), cfg.duration_s * cfg.speed_max_mps * 1.05 + 100.0)
    kinds = [world.roads.edge_kind[e] for e, _ in route.steps]
    truth = simulate_truth(route, stream_rng(cfg.seed, "truth"), cfg.duration_s, cfg.truth_hz,
                           v_min=cfg.speed_min_mps, v_max=cfg.speed_max_mps, lateral_accel=cfg.lateral_accel_mps2,
                           kinds=kinds)
    quality = gnss_quality(cond.gnss_quality)
    g_rng = stream_rng(cfg.seed if cfg.gnss_seed is None else cfg.gnss_seed, "gnss")
    gnss = simulate_gnss(truth, g_rng, cfg.gnss_hz, quality.model if quality else cfg.gnss,
                         antenna_z_m=cfg.rig.gnss_z_m, t=cfg.times(cfg.gnss_hz))
    real.gnss = {"quality": cond.gnss_quality, "overconfidence": float(cond.gnss_overconfident)}
    if quality is not None:  # the environment continues the receiver's stream: its own draws stay the same
        real.gnss.update(model=quality.to_dict(), reported_sigma_m=quality.sigma_m,
                         **apply_gnss_environment(gnss, quality, g_rng))
    else:
        real.gnss.update(reported_sigma_m=cfg.gnss.nominal_sigma_m)
    apply_overconfidence(gnss, cond.gnss_overconfident)
    if cfg.rig.gnss_x_m:  # antenna ahead of base_link: its truth and fixes move with the heading
        yaw = truth.yaw_unwrapped_at(gnss.t)
        off = cfg.rig.gnss_x_m
        dx, dy = off * np.cos(yaw), off * np.sin(yaw)
        gnss.x, gnss.y = gnss.x + dx, gnss.y + dy
        gnss.true_x, gnss.true_y = gnss.true_x + dx, gnss.true_y + dy
    odom_t = cfg.times(cfg.odom_hz)
    if cond.odom_scale_err_pct is None:
        odom = simulate_odometry(truth, stream_rng(cfg.seed, "odom"), cfg.odom_hz, cfg.odom, t=odom_t)
        real.odometry = {"scale_error": odom.scale_error, "source": "drawn", "slip": None}
    else:
        slip, slip_real = wheel_slip(truth, odom_t, stream_rng(cfg.seed, "slip"))
        odom = simulate_odometry(truth, stream_rng(cfg.seed, "odom"), cfg.odom_hz, cfg.odom, t=odom_t,
                                 scale_error=cond.odom_scale_err_pct / 100.0, extra_scale=slip)
        real.odometry = {"scale_error": odom.scale_error, "source": "fixed", "slip": slip_real}
    from .terrain import Terrain

    att = simulate_attitude(truth, Terrain.from_dict(getattr(world, "terrain", None)), cfg.attitude)
    if cond.load_pitch_max_deg > 0:  # a loaded car sits nose up: REP-103 pitch (nose down) decreases
        real.load_pitch_deg = draw_load_pitch(stream_rng(cfg.seed, "load"), cond.load_pitch_max_deg)
        att.pitch = att.pitch - math.radians(real.load_pitch_deg)
    gnss.true_alt = gnss.true_alt + att.at(gnss.t)[0]  # the antenna rides over the terrain
    gnss.alt = gnss.alt + att.at(gnss.t)[0]
    imu = simulate_imu(truth, att, odom, stream_rng(cfg.seed, "imu"), cfg.times(cfg.imu_hz), cfg.imu)
    real.gnss["raw_median_m"] = raw_error_median(gnss)
    sim = DriveSim(config=cfg, route=route, truth=truth, gnss=gnss, odom=odom, camera_t=cfg.times(cfg.camera_hz),
                   attitude=att, imu=imu, conditions=cond, realisation=real.to_dict())
    log.debug("drive seed=%d: %.0f m route, %.0f m driven", cfg.seed, route.length, truth.distance[-1])
    return sim
