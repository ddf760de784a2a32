"""Simulated drives through a synthetic world: route, ground truth, GNSS and wheel odometry.

numpy only (no ROS, no pyproj): everything here is in the world's local frame (metres,
x = grid east, y = grid north; yaw in radians, counter-clockwise from +x, see
``core.geo``). ``sim.bag`` turns the result into a rosbag2.

Pipeline (``simulate_drive`` runs it from a ``DriveConfig``)::

    plan_route(world, rng, length_m)      random walk on world.roads, right-hand lane,
        -> Route                          smoothed corners, dense polyline + arc length
    simulate_truth(route, rng, T)         speed profile (cruise per road kind, lateral
        -> Trajectory                     acceleration limit in turns, bounded acc/decel)
    simulate_gnss(truth, rng)             Gauss-Markov bias + white noise, multipath jumps,
        -> GnssFixes                      outages, honest reported sigma (see GnssModel)
    simulate_odometry(truth, rng)         dead reckoning from wheel speed (scale error) and
        -> OdometrySim                    a drifting gyro; odom frame starts at (0, 0, 0)

Randomness: one seed per drive; each stage draws from its own stream
(``stream_rng(seed, "route" | "truth" | "gnss" | "odom" | "appearance")``), so changing
one model does not reshuffle the others and a stage can be re-run on its own.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..core.errors import InvalidArgument
from ..core.geo import wrap_angle

log = logging.getLogger(__name__)

STORAGES = ("mcap", "sqlite3")
# new streams go at the end: an existing stream keeps its index, so its draws (and old drives) stay the same
STREAMS = ("route", "truth", "gnss", "odom", "appearance", "imu", "traffic", "lighting", "weather", "road",
           "load", "slip")

# GNSS per-fix error state (ground truth for evaluation; the receiver does not know it)
GNSS_NOMINAL, GNSS_MULTIPATH, GNSS_OUTAGE = 0, 1, 2
# NavSatStatus.status values
STATUS_FIX, STATUS_NO_FIX = 0, -1


def stream_rng(seed: int, stream: str) -> np.random.Generator:
    """Independent generator for one stage of a drive (``STREAMS``), derived from ``seed``."""
    if stream not in STREAMS:
        raise InvalidArgument(f"unknown random stream {stream!r}; valid: {', '.join(STREAMS)}")
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(STREAMS.index(stream),)))


# ---------------------------------------------------------------------------------------
# configuration


def _check_range(owner: str, name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False,
                 integer: bool = False) -> None:
    """Raise InvalidArgument unless ``value`` is a finite number in [lo, hi] ((lo, hi] if lo_open)."""
    ok_type = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.integer,
                                                                                      np.floating))
    if isinstance(value, bool) or not ok_type:
        kind = "an integer" if integer else "a number"
        raise InvalidArgument(f"{owner}.{name} must be {kind}, got {value!r}")
    v = float(value)
    low_ok = v > lo if lo_open else v >= lo
    if not (math.isfinite(v) and low_ok and v <= hi):
        bracket = "(" if lo_open else "["
        raise InvalidArgument(f"{owner}.{name} must be in {bracket}{lo:g}, {hi:g}], got {value!r}")


def _check_interval(owner: str, name: str, value: Any, lo: float, hi: float) -> None:
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise InvalidArgument(f"{owner}.{name} must be a (low, high) pair, got {value!r}")
    for v in value:
        _check_range(owner, name, v, lo, hi)
    if value[0] > value[1]:
        raise InvalidArgument(f"{owner}.{name} low {value[0]} is above high {value[1]}")


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
class GnssModel:
    """GNSS receiver error model (per horizontal axis unless noted).

    Nominal error = hdop(t) * (Gauss-Markov bias + white noise), where ``hdop`` is a slowly
    varying geometry factor (mean ~1) that the receiver knows. The reported per-axis sigma is
    ``hdop * sqrt(bias_sigma^2 + white_sigma^2)``: honest in nominal operation.

    Multipath: occasional jumps of ``multipath_jump_m`` in a random direction, lasting
    ``multipath_duration_s``. The receiver does NOT detect them, so the reported sigma stays
    nominal (as with real single-frequency receivers); consumers must gate outliers.

    Outages: for ``outage_duration_s`` the receiver keeps publishing at its rate with status
    NO_FIX and NaN position (covariance type UNKNOWN), like common ROS GNSS drivers; there is
    no fix to use, and the gap is visible in the bag.
    """

    bias_sigma_m: float = 3.0
    bias_tau_s: float = 60.0
    white_sigma_m: float = 0.8
    hdop_mean: float = 1.0
    hdop_sigma: float = 0.25
    hdop_tau_s: float = 120.0
    vertical_factor: float = 1.6  # vertical error / horizontal error (VDOP/HDOP)
    ground_alt_m: float = 30.0  # ellipsoidal height of the (flat) ground
    multipath_rate_per_min: float = 0.8
    multipath_jump_m: Tuple[float, float] = (15.0, 40.0)
    multipath_duration_s: Tuple[float, float] = (2.0, 6.0)
    outage_rate_per_min: float = 0.4
    outage_duration_s: Tuple[float, float] = (2.0, 6.0)

    def __post_init__(self):
        o = "gnss"
        _check_range(o, "bias_sigma_m", self.bias_sigma_m, 0.0, 100.0)
        _check_range(o, "bias_tau_s", self.bias_tau_s, 0.0, 1e5, lo_open=True)
        _check_range(o, "white_sigma_m", self.white_sigma_m, 0.0, 100.0)
        _check_range(o, "hdop_mean", self.hdop_mean, 0.1, 20.0)
        _check_range(o, "hdop_sigma", self.hdop_sigma, 0.0, 10.0)
        _check_range(o, "hdop_tau_s", self.hdop_tau_s, 0.0, 1e5, lo_open=True)
        _check_range(o, "vertical_factor", self.vertical_factor, 0.1, 10.0)
        _check_range(o, "ground_alt_m", self.ground_alt_m, -500.0, 9000.0)
        _check_range(o, "multipath_rate_per_min", self.multipath_rate_per_min, 0.0, 60.0)
        _check_interval(o, "multipath_jump_m", self.multipath_jump_m, 0.0, 1000.0)
        _check_interval(o, "multipath_duration_s", self.multipath_duration_s, 0.0, 600.0)
        _check_range(o, "outage_rate_per_min", self.outage_rate_per_min, 0.0, 60.0)
        _check_interval(o, "outage_duration_s", self.outage_duration_s, 0.0, 600.0)

    @property
    def nominal_sigma_m(self) -> float:
        """Reported per-axis sigma at hdop = 1."""
        return math.hypot(self.bias_sigma_m, self.white_sigma_m)


@dataclass(frozen=True)
class OdometryModel:
    """Wheel-speed + yaw-gyro odometry error model.

    Speed: ``v_meas = v * (1 + scale_error) + noise``, scale error drawn once per drive
    (N(0, speed_scale_sigma)). Gyro: ``w_meas = w + bias(t) + noise``, bias starts at
    N(0, gyro_bias_sigma_dps) and random-walks. The pose is dead reckoned from these, so it
    drifts; the reported covariance grows with distance (``pos_sigma_per_m``) and time.
    """

    speed_scale_sigma: float = 0.01
    speed_noise_mps: float = 0.05
    gyro_bias_sigma_dps: float = 0.02
    gyro_bias_walk_dps_per_sqrt_s: float = 0.002
    gyro_noise_dps: float = 0.1
    pos_sigma_per_m: float = 0.02  # reported position sigma growth per metre travelled

    def __post_init__(self):
        o = "odom"
        _check_range(o, "speed_scale_sigma", self.speed_scale_sigma, 0.0, 0.5)
        _check_range(o, "speed_noise_mps", self.speed_noise_mps, 0.0, 10.0)
        _check_range(o, "gyro_bias_sigma_dps", self.gyro_bias_sigma_dps, 0.0, 10.0)
        _check_range(o, "gyro_bias_walk_dps_per_sqrt_s", self.gyro_bias_walk_dps_per_sqrt_s, 0.0, 1.0)
        _check_range(o, "gyro_noise_dps", self.gyro_noise_dps, 0.0, 10.0)
        _check_range(o, "pos_sigma_per_m", self.pos_sigma_per_m, 0.0, 1.0)


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
class AttitudeModel:
    """How the car body tilts: it follows the terrain under it (world elevation) and leans on its
    suspension, ``pitch_per_accel`` rad of nose dip per m/s^2 of braking and ``roll_per_accel`` rad of
    outward lean per m/s^2 of lateral acceleration. ``suspension=False``: the body follows the
    ground only (on flat ground: level, as in earlier versions)."""

    suspension: bool = True
    pitch_per_accel: float = 0.006
    roll_per_accel: float = 0.008

    def __post_init__(self):
        if not isinstance(self.suspension, bool):
            raise InvalidArgument(f"attitude.suspension must be true or false, got {self.suspension!r}")
        _check_range("attitude", "pitch_per_accel", self.pitch_per_accel, 0.0, 0.1)
        _check_range("attitude", "roll_per_accel", self.roll_per_accel, 0.0, 0.1)


@dataclass(frozen=True)
class ImuModel:
    """The IMU at base_link (imu_link): white noise and a constant bias per drive on the gyro and the
    accelerometer (1 sigma), and the error of its roll/pitch estimate (published in the orientation)."""

    gyro_noise_dps: float = 0.05
    gyro_bias_dps: float = 0.02
    accel_noise_mps2: float = 0.02
    accel_bias_mps2: float = 0.01
    tilt_sigma_deg: float = 0.1

    def __post_init__(self):
        for name, hi in (("gyro_noise_dps", 10.0), ("gyro_bias_dps", 10.0), ("accel_noise_mps2", 10.0),
                         ("accel_bias_mps2", 10.0), ("tilt_sigma_deg", 10.0)):
            _check_range("imu", name, getattr(self, name), 0.0, hi)


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
# polyline helpers


def _cumlen(pts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.hypot(v[..., 0], v[..., 1])
    return v / np.maximum(n, 1e-12)[..., None]


def _right(d: np.ndarray) -> np.ndarray:
    """Right-hand normal of direction(s) d (x east, y north)."""
    return np.stack([d[..., 1], -d[..., 0]], axis=-1)


def _point_at(pts: np.ndarray, cum: np.ndarray, s: float) -> Tuple[np.ndarray, np.ndarray]:
    """Point and unit direction at arc length ``s``; extrapolates straight beyond the ends."""
    k = int(np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(pts) - 2))
    d = _unit(pts[k + 1] - pts[k])
    return pts[k] + (s - cum[k]) * d, d


def _slice(pts: np.ndarray, cum: np.ndarray, s0: float, s1: float) -> np.ndarray:
    """Sub-polyline between arc lengths s0 < s1 (endpoints interpolated or extrapolated)."""
    inner = pts[(cum > s0) & (cum < s1)]
    return np.vstack([_point_at(pts, cum, s0)[0][None], inner, _point_at(pts, cum, s1)[0][None]])


def _chaikin(pts: np.ndarray, iterations: int = 3) -> np.ndarray:
    """Corner cutting that keeps both endpoints (smooths the kinks of curved road polylines)."""
    for _ in range(iterations):
        if len(pts) < 3:
            return pts
        a, b = pts[:-1], pts[1:]
        q, r = 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b
        mid = np.stack([q, r], axis=1).reshape(-1, 2)[1:-1]
        pts = np.vstack([pts[:1], mid, pts[-1:]])
    return pts


def _offset(pts: np.ndarray, d: float) -> np.ndarray:
    """Polyline shifted ``d`` metres to its right (mitred vertex normals)."""
    seg = _unit(np.diff(pts, axis=0))
    nrm = _right(seg)
    vn = np.vstack([nrm[:1], nrm[:-1] + nrm[1:], nrm[-1:]])
    vn = _unit(vn)
    cos_half = np.einsum("ij,ij->i", vn, np.vstack([nrm[:1], nrm]))
    return pts + d * vn / np.clip(cos_half, 0.5, None)[:, None]


def _bezier(p0, p1, p2, p3, spacing: float = 0.25) -> np.ndarray:
    n = max(int(np.ceil((np.linalg.norm(p1 - p0) + np.linalg.norm(p2 - p1) + np.linalg.norm(p3 - p2)) / spacing)),
            4)
    t = np.linspace(0.0, 1.0, n + 1)[:, None]
    return ((1 - t) ** 3) * p0 + 3 * ((1 - t) ** 2) * t * p1 + 3 * (1 - t) * t * t * p2 + (t ** 3) * p3


def _gauss_kernel(sigma_samples: float) -> np.ndarray:
    r = max(int(np.ceil(4 * sigma_samples)), 1)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_samples) ** 2)
    return k / k.sum()


def _smooth(a: np.ndarray, sigma_samples: float) -> np.ndarray:
    """Gaussian smoothing along axis 0 with point-reflected ends (keeps end values and slopes)."""
    if sigma_samples <= 0 or len(a) < 3:
        return a.copy()
    k = _gauss_kernel(sigma_samples)
    r = len(k) // 2
    r_eff = min(r, len(a) - 1)
    head = 2 * a[:1] - a[1:r_eff + 1][::-1]
    tail = 2 * a[-1:] - a[-r_eff - 1:-1][::-1]
    if r_eff < r:  # very short input: pad with the end values
        head = np.concatenate([np.repeat(head[:1], r - r_eff, axis=0), head])
        tail = np.concatenate([tail, np.repeat(tail[-1:], r - r_eff, axis=0)])
    ext = np.concatenate([head, a, tail])
    if a.ndim == 1:
        return np.convolve(ext, k, mode="valid")
    return np.stack([np.convolve(ext[:, j], k, mode="valid") for j in range(a.shape[1])], axis=1)


def _max_filter(a: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0:
        return a.copy()
    pad = np.pad(a, radius, mode="edge")
    return np.lib.stride_tricks.sliding_window_view(pad, 2 * radius + 1).max(axis=1)


def _resample(pts: np.ndarray, spacing: float) -> Tuple[np.ndarray, np.ndarray]:
    """Uniform-arc-length resampling. Returns (points, source arc length of each output point)."""
    keep = np.concatenate([[True], np.hypot(*np.diff(pts, axis=0).T) > 1e-9])
    pts = pts[keep]
    cum = _cumlen(pts)
    s = np.arange(0.0, cum[-1] + 1e-9, spacing)
    return np.stack([np.interp(s, cum, pts[:, 0]), np.interp(s, cum, pts[:, 1])], axis=1), s


# ---------------------------------------------------------------------------------------
# route


@dataclass
class Route:
    """A path to drive: a dense polyline in the right-hand lane with smoothed corners.

    ``xy[i]`` is at arc length ``s[i]`` (uniform ``spacing_m``); ``heading`` is the unwrapped
    tangent direction (rad, CCW from east), ``curvature`` its derivative (1/m, left positive).
    ``steps`` lists the road edges in driving order as (edge, from_node); ``step_of[i]`` is the
    step that sample i belongs to (a junction belongs to the step that enters it).
    """

    xy: np.ndarray
    s: np.ndarray
    heading: np.ndarray
    curvature: np.ndarray
    steps: List[Tuple[int, int]]
    step_of: np.ndarray
    lane_offset_m: np.ndarray  # [len(steps)] distance of the lane centre right of the road centreline
    spacing_m: float

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def at(self, s) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, heading) at arc length(s) ``s`` (heading unwrapped)."""
        s = np.asarray(s, float)
        return (np.interp(s, self.s, self.xy[:, 0]), np.interp(s, self.s, self.xy[:, 1]),
                np.interp(s, self.s, self.heading))


def lane_offset(width_m: float, lanes: int) -> float:
    """Distance right of the centreline of the outermost lane in the driving direction."""
    per_dir = max(int(lanes) // 2, 1)
    lane_w = float(width_m) / (2 * per_dir)
    return (per_dir - 0.5) * lane_w


def _walk(roads, rng: np.random.Generator, length_m: float) -> Tuple[List[Tuple[int, int]], float]:
    """Random walk on the road graph: list of (edge, from_node), and the start arc length."""
    lengths = np.array([roads.length(e) for e in range(roads.num_edges)])
    e0 = int(rng.choice(roads.num_edges, p=lengths / lengths.sum()))
    u, v = (int(n) for n in roads.edge_uv[e0])
    # head away from a dead end when the other way is not one
    if roads.degree(v) == 1 and roads.degree(u) > 1:
        start = v
    elif roads.degree(u) == 1 and roads.degree(v) > 1:
        start = u
    else:
        start = u if rng.random() < 0.5 else v
    s0 = float(rng.uniform(0.1, 0.5)) * lengths[e0]
    steps = [(e0, start)]
    total = lengths[e0] - s0
    edge, node = e0, roads.other_end(e0, start)
    while total - 0.5 * lengths[edge] < length_m:  # the route ends half-way along its last edge
        cands = [e for e in roads.edges_at(node) if e != edge]
        if cands:
            # avoid edges that lead into a dead end when there is a choice
            open_ = [e for e in cands if roads.degree(roads.other_end(e, node)) > 1]
            pool = open_ or cands
            nxt = int(pool[int(rng.integers(len(pool)))])
        else:
            nxt = edge  # dead end: U-turn
        steps.append((nxt, node))
        total += lengths[nxt]
        edge, node = nxt, roads.other_end(nxt, node)
    return steps, s0


def _line_intersection(p, d, q, e) -> Optional[Tuple[float, float]]:
    """Parameters (a, b) with p + a d = q + b e, or None when (nearly) parallel."""
    den = d[0] * (-e[1]) - d[1] * (-e[0])
    if abs(den) < 1e-9:
        return None
    rhs = q - p
    a = (rhs[0] * (-e[1]) - rhs[1] * (-e[0])) / den
    b = (d[0] * rhs[1] - d[1] * rhs[0]) / den
    return a, b


def _junction(node_xy, O_in, c_in, w_in, off_in, O_out, c_out, w_out, off_out, world, *, r_max: float,
              r_min: float, margin: float) -> Tuple[float, np.ndarray, float]:
    """Smooth connector between two lane polylines meeting at a node.

    Returns (arc length where the incoming lane is left, connector points, arc length where the
    outgoing lane is joined). The corner radius is the largest (<= r_max) that keeps the
    connector ``margin`` metres from the inner kerb corner, assuming straight kerbs.
    """
    L_in, L_out = c_in[-1], c_out[-1]
    E_in, E_out = O_in[-1], O_out[0]
    d_in = _unit(O_in[-1] - O_in[-2])
    d_out = _unit(O_out[1] - O_out[0])
    cross = d_in[0] * d_out[1] - d_in[1] * d_out[0]
    theta = math.atan2(cross, float(d_in @ d_out))  # signed turn, left positive
    node_xy = np.asarray(node_xy, float)
    if abs(theta) > math.radians(165.0):  # U-turn (dead end): half circle around the node
        r = 0.5 * float(np.linalg.norm(E_out - E_in))
        back = 0.0
        while back < 0.45 * min(L_in, L_out):
            apex = node_xy - d_in * back + d_in * r
            if bool(world.contains(apex[0], apex[1], margin_m=1.0)):
                break
            back += 0.5
        s_end, s_start = L_in - back, back
        p0, t0 = _point_at(O_in, c_in, s_end)
        p3, t3 = _point_at(O_out, c_out, s_start)
        h = 4.0 / 3.0 * r
        return s_end, _bezier(p0, p0 + t0 * h, p3 - t3 * h, p3), s_start
    ab = _line_intersection(E_in, d_in, E_out, d_out) if abs(theta) > math.radians(3.0) else None
    if ab is None:  # (nearly) straight on: blend over a few metres
        t = min(3.0, 0.3 * L_in, 0.3 * L_out)
        s_end, s_start = L_in - t, t
        p0, t0 = _point_at(O_in, c_in, s_end)
        p3, t3 = _point_at(O_out, c_out, s_start)
        h = float(np.linalg.norm(p3 - p0)) / 3.0
        return s_end, _bezier(p0, p0 + t0 * h, p3 - t3 * h, p3), s_start
    a, b = ab
    corner = E_in + a * d_in
    side = 1.0 if theta < 0 else -1.0  # inner kerb: right for right turns, left for left turns
    kab = _line_intersection(node_xy + side * _right(d_in) * w_in / 2, d_in,
                             node_xy + side * _right(d_out) * w_out / 2, d_out)
    half = abs(theta) / 2.0
    sec_m1 = 1.0 / math.cos(half) - 1.0
    if kab is not None:
        kerb = node_xy + side * _right(d_in) * w_in / 2 + kab[0] * d_in
        cut = float(np.linalg.norm(kerb - corner)) - margin
        r = r_max if sec_m1 < 1e-9 else float(np.clip(cut / sec_m1, r_min, r_max))
    else:
        r = r_max
    t = r * math.tan(half)
    t = max(min(t, a + 0.45 * L_in, 0.45 * L_out - b), 0.5)
    r = t / math.tan(half)
    s_end, s_start = L_in + a - t, b + t
    p0, t0 = _point_at(O_in, c_in, s_end)
    p3, t3 = _point_at(O_out, c_out, s_start)
    h = 4.0 / 3.0 * math.tan(abs(theta) / 4.0) * r
    return s_end, _bezier(p0, p0 + t0 * h, p3 - t3 * h, p3), s_start


def plan_route(world, rng: np.random.Generator, length_m: float, *, spacing_m: float = 0.1,
               turn_radius_max_m: float = 15.0, turn_radius_min_m: float = 2.5, kerb_margin_m: float = 1.2,
               smooth_sigma_m: float = 1.0) -> Route:
    """Random drive of at least ``length_m`` metres along ``world.roads`` in the right-hand lane.

    Start on a random edge (length-weighted) 10-50 % along it and end half-way along the last
    edge (so neither end sits on a node at the world's rim); at each
    junction pick a random next edge, never the one just driven unless it is a dead end (then
    U-turn), and avoid edges into dead ends when there is a choice. The lane is the outermost
    one in the driving direction (``lane_offset``). Corners are cubic Bezier arcs whose radius
    keeps the path clear of the inner kerb, then the whole path is Gaussian-smoothed
    (``smooth_sigma_m``) so heading is continuous. Stays inside the world square.
    """
    roads = world.roads
    if roads.num_edges == 0:
        raise InvalidArgument("the world has no roads to drive on; generate it with `geoloc sim world`")
    if not (math.isfinite(length_m) and length_m > 0):
        raise InvalidArgument(f"route length must be positive, got {length_m}")
    target = 1.1 * length_m + 50.0  # corners and lane offsets make the lane path shorter than the centrelines
    while True:
        steps, s0 = _walk(roads, rng, target)
        route = _build_route(world, steps, s0, spacing_m=spacing_m, turn_radius_max_m=turn_radius_max_m,
                             turn_radius_min_m=turn_radius_min_m, kerb_margin_m=kerb_margin_m,
                             smooth_sigma_m=smooth_sigma_m)
        if route.length >= length_m:
            return route
        target *= 1.25


def _build_route(world, steps: List[Tuple[int, int]], s0: float, *, spacing_m: float, turn_radius_max_m: float,
                 turn_radius_min_m: float, kerb_margin_m: float, smooth_sigma_m: float) -> Route:
    """Lane polyline of a walk (see ``plan_route``)."""
    roads = world.roads
    lanes_xy, lanes_cum, offs, widths = [], [], [], []
    for e, frm in steps:
        centre = _chaikin(roads.polyline_from(e, frm).astype(float))
        off = lane_offset(roads.edge_width[e], roads.edge_lanes[e])
        lane = _offset(centre, off)
        lanes_xy.append(lane)
        lanes_cum.append(_cumlen(lane))
        offs.append(off)
        widths.append(float(roads.edge_width[e]))

    starts = [s0 * lanes_cum[0][-1] / max(roads.length(steps[0][0]), 1e-9)]
    ends: List[float] = []
    connectors: List[np.ndarray] = []
    for k in range(len(steps) - 1):
        node = roads.other_end(*steps[k])
        s_end, conn, s_start = _junction(roads.nodes[node], lanes_xy[k], lanes_cum[k], widths[k], offs[k],
                                         lanes_xy[k + 1], lanes_cum[k + 1], widths[k + 1], offs[k + 1], world,
                                         r_max=turn_radius_max_m, r_min=turn_radius_min_m, margin=kerb_margin_m)
        ends.append(s_end)
        connectors.append(conn)
        starts.append(s_start)
    ends.append(max(0.5 * lanes_cum[-1][-1], starts[-1] + 1.0))  # end mid-edge, away from the world's rim

    pieces, labels = [], []
    for k in range(len(steps)):
        a, b = starts[k], ends[k]
        if b - a > 1e-6:
            seg = _slice(lanes_xy[k], lanes_cum[k], a, b)
            pieces.append(seg)
            labels.append(np.full(len(seg), k))
        if k < len(connectors):
            pieces.append(connectors[k][1:-1])
            labels.append(np.full(len(connectors[k]) - 2, k))
    raw = np.vstack(pieces)
    raw_lab = np.concatenate(labels)
    raw_cum = _cumlen(raw)

    fine = min(0.25, spacing_m)
    pts, s_src = _resample(raw, fine)
    pts = _smooth(pts, smooth_sigma_m / fine)
    xy, s_fine = _resample(pts, spacing_m)
    # step label of each output sample: through the fine samples back to the raw polyline
    fine_idx = np.clip(np.searchsorted(_cumlen(pts), s_fine), 0, len(pts) - 1)
    raw_idx = np.clip(np.searchsorted(raw_cum, s_src[fine_idx]), 0, len(raw) - 1)
    step_of = raw_lab[raw_idx]

    d = np.gradient(xy, axis=0)
    heading = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))
    s = np.arange(len(xy)) * spacing_m
    curvature = _smooth(np.gradient(heading, spacing_m), smooth_sigma_m / spacing_m)
    inside = world.contains(xy[:, 0], xy[:, 1])
    if not np.all(inside):
        log.warning("route leaves the world square at %d of %d samples", int((~inside).sum()), len(xy))
    return Route(xy=xy, s=s, heading=heading, curvature=curvature, steps=steps, step_of=step_of,
                 lane_offset_m=np.array(offs), spacing_m=float(spacing_m))


# ---------------------------------------------------------------------------------------
# ground truth


class State(NamedTuple):
    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray  # wrapped to (-pi, pi]
    speed: np.ndarray
    yaw_rate: np.ndarray


@dataclass
class Trajectory:
    """Ground-truth motion of base_link, sampled at a fixed rate from t = 0.

    ``yaw`` is continuous (unwrapped; may leave (-pi, pi]); ``at`` wraps it. ``s`` is the
    arc length along the route; ``distance`` the distance travelled since t = 0.
    """

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray
    speed: np.ndarray
    yaw_rate: np.ndarray
    s: np.ndarray

    def __post_init__(self):
        n = len(self.t)
        for k in ("x", "y", "yaw", "speed", "yaw_rate", "s"):
            if len(getattr(self, k)) != n:
                raise InvalidArgument(f"trajectory field {k} has {len(getattr(self, k))} samples, t has {n}")

    @property
    def distance(self) -> np.ndarray:
        return self.s - self.s[0]

    @property
    def duration(self) -> float:
        return float(self.t[-1] - self.t[0])

    def at(self, t) -> State:
        """Linearly interpolated state at time(s) ``t`` (clamped to the sampled span)."""
        t = np.asarray(t, float)
        yaw = np.interp(t, self.t, self.yaw)  # interpolating the unwrapped yaw: no jump at +-pi
        return State(np.interp(t, self.t, self.x), np.interp(t, self.t, self.y), wrap_angle(yaw),
                     np.interp(t, self.t, self.speed), np.interp(t, self.t, self.yaw_rate))

    def yaw_unwrapped_at(self, t) -> np.ndarray:
        return np.interp(np.asarray(t, float), self.t, self.yaw)


CRUISE_MPS = {"arterial": (13.0, 15.0), "street": (9.0, 12.5), "curve": (8.0, 11.0), "rural": (11.0, 14.0)}


def speed_profile(route: Route, rng: np.random.Generator, *, v_min: float = 5.0, v_max: float = 15.0,
                  lateral_accel: float = 2.0, accel: float = 1.2, decel: float = 2.0,
                  kinds: Optional[Sequence[str]] = None) -> np.ndarray:
    """Speed [m/s] at each route sample.

    A cruise speed is drawn per traversed edge from ``CRUISE_MPS`` by road kind (scaled into
    [v_min, v_max]); turns cap it at sqrt(lateral_accel / |curvature|) (curvature widened by
    +-10 m so the car slows before the turn); forward/backward passes bound acceleration and
    braking; a final smoothing over ~3 m removes acceleration steps. Never below ``v_min``:
    very tight turns (dead-end U-turns) are taken at ``v_min`` even if that exceeds the
    lateral limit.
    """
    ds = route.spacing_m
    n_steps = len(route.steps)
    cruise = np.empty(n_steps)
    for k in range(n_steps):
        lo, hi = CRUISE_MPS.get(kinds[k] if kinds is not None else "street", CRUISE_MPS["street"])
        frac_lo, frac_hi = (lo - 5.0) / 10.0, (hi - 5.0) / 10.0  # CRUISE_MPS assumes 5..15
        cruise[k] = v_min + (v_max - v_min) * rng.uniform(frac_lo, frac_hi)
    v = cruise[route.step_of]
    kappa = _max_filter(np.abs(route.curvature), int(round(10.0 / ds)))
    v = np.minimum(v, np.sqrt(lateral_accel / np.maximum(kappa, 1e-9)))
    v = np.clip(v, v_min, v_max)
    for i in range(1, len(v)):
        v[i] = min(v[i], math.sqrt(v[i - 1] ** 2 + 2 * accel * ds))
    for i in range(len(v) - 2, -1, -1):
        v[i] = min(v[i], math.sqrt(v[i + 1] ** 2 + 2 * decel * ds))
    return np.clip(_smooth(v, 3.0 / ds), v_min, v_max)


def simulate_truth(route: Route, rng: np.random.Generator, duration_s: float, rate_hz: float = 100.0, *,
                   v_min: float = 5.0, v_max: float = 15.0, lateral_accel: float = 2.0,
                   kinds: Optional[Sequence[str]] = None) -> Trajectory:
    """Drive ``route`` for ``duration_s`` seconds with ``speed_profile``; sample at ``rate_hz``.

    ``kinds`` (road kind per route step, e.g. from ``world.roads.edge_kind``) sets cruise speeds.
    Raises InvalidArgument if the route is too short for the duration.
    """
    v_s = speed_profile(route, rng, v_min=v_min, v_max=v_max, lateral_accel=lateral_accel, kinds=kinds)
    ds = np.diff(route.s)
    t_of_s = np.concatenate([[0.0], np.cumsum(ds / (0.5 * (v_s[1:] + v_s[:-1])))])
    if t_of_s[-1] < duration_s:
        raise InvalidArgument(f"route of {route.length:.0f} m lasts only {t_of_s[-1]:.1f} s at the simulated "
                              f"speeds; plan a longer route for a {duration_s} s drive")
    n = int(math.ceil(duration_s * rate_hz - 1e-9))
    t = np.arange(n + 1) / float(rate_hz)
    s = np.interp(t, t_of_s, route.s)
    x, y, yaw = route.at(s)
    speed = np.interp(s, route.s, v_s)
    yaw_rate = np.gradient(yaw, t) if len(t) > 1 else np.zeros_like(t)
    return Trajectory(t=t, x=x, y=y, yaw=yaw, speed=speed, yaw_rate=yaw_rate, s=s)


# ---------------------------------------------------------------------------------------
# GNSS


@dataclass
class GnssFixes:
    """Simulated receiver output at ``t`` plus the truth needed to evaluate it.

    Local metres; ``alt`` is ellipsoidal height. During outages (``status == STATUS_NO_FIX``)
    x, y, alt are NaN. ``sigma_h`` / ``sigma_v`` are the reported per-axis standard deviations
    (what goes into NavSatFix.position_covariance). ``state`` is the hidden error state
    (GNSS_NOMINAL / GNSS_MULTIPATH / GNSS_OUTAGE), for evaluation only.
    """

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    alt: np.ndarray
    true_x: np.ndarray
    true_y: np.ndarray
    true_alt: np.ndarray
    sigma_h: np.ndarray
    sigma_v: np.ndarray
    hdop: np.ndarray
    status: np.ndarray
    state: np.ndarray

    def __len__(self) -> int:
        return len(self.t)

    @property
    def error_xy(self) -> np.ndarray:
        """[N, 2] measured minus true horizontal position (NaN during outages)."""
        return np.stack([self.x - self.true_x, self.y - self.true_y], axis=1)

    @property
    def error_h(self) -> np.ndarray:
        return np.hypot(self.x - self.true_x, self.y - self.true_y)

    def events(self, state: int) -> int:
        """Number of separate episodes of ``state``."""
        m = (self.state == state).astype(np.int8)
        return int(np.sum(np.diff(np.concatenate([[0], m])) == 1))

    def stats(self) -> Dict[str, float]:
        ok = self.status == STATUS_FIX
        nom = self.state == GNSS_NOMINAL
        e = self.error_h

        def rms(m):
            return float(np.sqrt(np.mean(e[m] ** 2))) if m.any() else float("nan")

        return {"fixes": int(len(self.t)), "rms_m": rms(ok), "rms_nominal_m": rms(nom),
                "p95_m": float(np.percentile(e[ok], 95)) if ok.any() else float("nan"),
                "max_m": float(np.max(e[ok])) if ok.any() else float("nan"),
                "multipath_events": self.events(GNSS_MULTIPATH), "outage_events": self.events(GNSS_OUTAGE),
                "no_fix": int((~ok).sum()), "mean_reported_sigma_m": float(np.mean(self.sigma_h[ok]))
                if ok.any() else float("nan")}


def _gauss_markov(rng: np.random.Generator, n: int, dt: float, tau: float, sigma: float, dims: int = 1) -> np.ndarray:
    """Stationary first-order Gauss-Markov process [n, dims] (starts in its stationary law)."""
    phi = math.exp(-dt / tau)
    q = sigma * math.sqrt(1.0 - phi * phi)
    w = rng.standard_normal((n, dims))
    out = np.empty((n, dims))
    out[0] = sigma * w[0]
    for k in range(1, n):
        out[k] = phi * out[k - 1] + q * w[k]
    return out


def _events(rng: np.random.Generator, t_end: float, rates: Sequence[float], durations: Sequence[Tuple[float, float]]):
    """Non-overlapping events as (kind index, start, end); Poisson arrivals of the summed rate."""
    total = sum(rates) / 60.0
    out = []
    if total <= 0:
        return out
    t = float(rng.exponential(1.0 / total))
    while t < t_end:
        kind = int(rng.choice(len(rates), p=np.asarray(rates) / sum(rates)))
        dur = float(rng.uniform(*durations[kind]))
        out.append((kind, t, t + dur))
        t += dur + float(rng.exponential(1.0 / total))
    return out


def simulate_gnss(traj: Trajectory, rng: np.random.Generator, rate_hz: float = 5.0,
                  model: GnssModel = GnssModel(), *, antenna_z_m: float = 1.9,
                  t: Optional[np.ndarray] = None) -> GnssFixes:
    """Receiver fixes at ``rate_hz`` (or at times ``t``) along ``traj``. See ``GnssModel``."""
    if t is None:
        n = max(int(math.ceil(traj.duration * rate_hz - 1e-9)), 1)
        t = np.arange(n) / float(rate_hz)
    t = np.asarray(t, float)
    n = len(t)
    dt = float(np.median(np.diff(t))) if n > 1 else 1.0 / rate_hz
    st = traj.at(t)
    true_alt = np.full(n, model.ground_alt_m + antenna_z_m)

    hdop = np.clip(model.hdop_mean + _gauss_markov(rng, n, dt, model.hdop_tau_s, model.hdop_sigma)[:, 0],
                   0.5 * model.hdop_mean, 3.0 * model.hdop_mean)
    bias = _gauss_markov(rng, n, dt, model.bias_tau_s, model.bias_sigma_m, dims=3)
    white = model.white_sigma_m * rng.standard_normal((n, 3))
    err = (bias + white) * hdop[:, None]
    err[:, 2] *= model.vertical_factor

    state = np.full(n, GNSS_NOMINAL, np.uint8)
    for kind, a, b in _events(rng, float(t[-1]) + dt, [model.multipath_rate_per_min, model.outage_rate_per_min],
                              [model.multipath_duration_s, model.outage_duration_s]):
        m = (t >= a) & (t < b)
        if kind == 0:
            ang = rng.uniform(0.0, 2 * math.pi)
            mag = rng.uniform(*model.multipath_jump_m)
            jump = np.array([mag * math.cos(ang), mag * math.sin(ang), 0.5 * mag * rng.choice([-1.0, 1.0])])
            err[m] += jump
            state[m] = GNSS_MULTIPATH
        else:
            state[m] = GNSS_OUTAGE

    status = np.where(state == GNSS_OUTAGE, STATUS_NO_FIX, STATUS_FIX).astype(np.int8)
    meas = np.stack([st.x, st.y, true_alt], axis=1) + err
    meas[status == STATUS_NO_FIX] = np.nan
    sigma_h = hdop * model.nominal_sigma_m
    return GnssFixes(t=t, x=meas[:, 0], y=meas[:, 1], alt=meas[:, 2], true_x=st.x, true_y=st.y, true_alt=true_alt,
                     sigma_h=sigma_h, sigma_v=sigma_h * model.vertical_factor, hdop=hdop, status=status, state=state)


# ---------------------------------------------------------------------------------------
# odometry


@dataclass
class OdometrySim:
    """Dead-reckoned pose of base_link in the odom frame (origin = pose at t = 0, x along the
    initial heading) and the measurements it was integrated from."""

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray  # unwrapped
    speed: np.ndarray  # measured wheel speed (m/s)
    yaw_rate: np.ndarray  # measured gyro rate (rad/s)
    pos_sigma: np.ndarray  # reported per-axis position sigma (m)
    yaw_sigma: np.ndarray  # reported yaw sigma (rad)
    speed_sigma: float
    yaw_rate_sigma: float
    scale_error: float
    gyro_bias: np.ndarray  # rad/s, per sample (hidden, for evaluation)

    def __len__(self) -> int:
        return len(self.t)


def simulate_odometry(traj: Trajectory, rng: np.random.Generator, rate_hz: float = 50.0,
                      model: OdometryModel = OdometryModel(), *, t: Optional[np.ndarray] = None,
                      scale_error: Optional[float] = None, extra_scale: Optional[np.ndarray] = None) -> OdometrySim:
    """Wheel odometry at ``rate_hz`` (or at times ``t``) along ``traj``. See ``OdometryModel``.

    ``scale_error``: a fixed wheel scale error (fraction) instead of the model's draw (the draw is
    still made, so the other draws stay the same); ``extra_scale``: a further scale error per sample
    (wheel slip, ``sim.sensors.wheel_slip``)."""
    if t is None:
        n = max(int(math.ceil(traj.duration * rate_hz - 1e-9)), 1)
        t = np.arange(n) / float(rate_hz)
    t = np.asarray(t, float)
    n = len(t)
    dt = np.diff(t, append=t[-1] + (t[-1] - t[-2] if n > 1 else 1.0 / rate_hz))
    st = traj.at(t)
    scale = float(rng.normal(0.0, model.speed_scale_sigma))
    if scale_error is not None:
        scale = float(scale_error)
    d2r = math.pi / 180.0
    bias0 = rng.normal(0.0, model.gyro_bias_sigma_dps * d2r)
    walk = np.concatenate([[0.0], np.cumsum(rng.standard_normal(n - 1) * model.gyro_bias_walk_dps_per_sqrt_s * d2r
                                            * np.sqrt(dt[:-1]))])
    bias = bias0 + walk
    wheel = 1.0 + scale if extra_scale is None else 1.0 + scale + np.asarray(extra_scale, float)
    v_meas = st.speed * wheel + rng.normal(0.0, model.speed_noise_mps, n)
    w_meas = st.yaw_rate + bias + rng.normal(0.0, model.gyro_noise_dps * d2r, n)
    yaw = np.concatenate([[0.0], np.cumsum(w_meas[:-1] * dt[:-1])])
    yaw_mid = yaw[:-1] + 0.5 * w_meas[:-1] * dt[:-1]
    step = v_meas[:-1] * dt[:-1]
    x = np.concatenate([[0.0], np.cumsum(step * np.cos(yaw_mid))])
    y = np.concatenate([[0.0], np.cumsum(step * np.sin(yaw_mid))])
    dist = np.concatenate([[0.0], np.cumsum(np.abs(step))])
    pos_sigma = 0.01 + model.pos_sigma_per_m * dist
    yaw_sigma = 0.001 + (model.gyro_bias_sigma_dps * d2r) * (t - t[0]) \
        + model.gyro_bias_walk_dps_per_sqrt_s * d2r * (t - t[0]) ** 1.5
    return OdometrySim(t=t, x=x, y=y, yaw=yaw, speed=v_meas, yaw_rate=w_meas, pos_sigma=pos_sigma,
                       yaw_sigma=yaw_sigma, speed_sigma=math.hypot(model.speed_noise_mps,
                                                                   model.speed_scale_sigma * 10.0),
                       yaw_rate_sigma=math.hypot(model.gyro_noise_dps, model.gyro_bias_sigma_dps) * d2r,
                       scale_error=scale, gyro_bias=bias)


def truth_in_odom_frame(odom: OdometrySim, traj: Trajectory) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground truth at the odometry times, expressed in the odom frame (for drift evaluation)."""
    st = traj.at(odom.t)
    x0, y0, yaw0 = st.x[0], st.y[0], traj.yaw_unwrapped_at(odom.t[0])
    c, s = math.cos(-yaw0), math.sin(-yaw0)
    dx, dy = st.x - x0, st.y - y0
    return c * dx - s * dy, s * dx + c * dy, traj.yaw_unwrapped_at(odom.t) - yaw0


def odometry_drift(odom: OdometrySim, traj: Trajectory) -> np.ndarray:
    """Position error [m] of the dead-reckoned pose at each odometry sample."""
    tx, ty, _ = truth_in_odom_frame(odom, traj)
    return np.hypot(odom.x - tx, odom.y - ty)


# ---------------------------------------------------------------------------------------
# attitude and IMU

GRAVITY = 9.80665  # m/s^2, standard gravity (the local frame's -z)


@dataclass
class Attitude:
    """base_link height and tilt along the truth trajectory (at ``Trajectory.t``).

    ``z``: the ground under base_link above the datum (m). ``pitch``, ``roll``: REP-103
    (R = Rz(yaw) Ry(pitch) Rx(roll); pitch > 0 nose down, roll > 0 right side down), radians.
    """

    t: np.ndarray
    z: np.ndarray
    pitch: np.ndarray
    roll: np.ndarray

    def at(self, t) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = np.asarray(t, float)
        return np.interp(t, self.t, self.z), np.interp(t, self.t, self.pitch), np.interp(t, self.t, self.roll)

    def stats(self) -> Dict[str, float]:
        d = math.degrees
        return {"pitch_deg_rms": d(float(np.sqrt(np.mean(self.pitch ** 2)))),
                "pitch_deg_max": d(float(np.max(np.abs(self.pitch)))),
                "roll_deg_rms": d(float(np.sqrt(np.mean(self.roll ** 2)))),
                "roll_deg_max": d(float(np.max(np.abs(self.roll)))),
                "z_range_m": float(np.ptp(self.z))}


def rotation_rpy(roll, pitch, yaw) -> np.ndarray:
    """[..., 3, 3] R = Rz(yaw) Ry(pitch) Rx(roll) (body -> world)."""
    r, p, y = (np.asarray(v, float) for v in (roll, pitch, yaw))
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    return np.stack([np.stack([cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr], -1),
                     np.stack([sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr], -1),
                     np.stack([-sp, cp * sr, cp * cr], -1)], -2)


def terrain_attitude(terrain, x, y, yaw) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z, pitch, roll) of a body standing on ``terrain`` (``sim.terrain.Terrain`` or None: flat) at
    (x, y) heading ``yaw``: its z axis is the ground normal."""
    x, y, yaw = np.broadcast_arrays(*(np.asarray(v, float) for v in (x, y, yaw)))
    if terrain is None or not terrain.waves:
        return np.zeros(x.shape), np.zeros(x.shape), np.zeros(x.shape)
    gx, gy = terrain.gradient(x, y)
    c, s = np.cos(yaw), np.sin(yaw)
    g_f, g_l = gx * c + gy * s, -gx * s + gy * c
    return terrain.elevation(x, y), np.arctan(-g_f), np.arcsin(g_l / np.sqrt(1.0 + gx * gx + gy * gy))


def simulate_attitude(traj: "Trajectory", terrain, model: AttitudeModel = AttitudeModel()) -> Attitude:
    """Tilt of the body on ``terrain`` (``sim.terrain.Terrain`` or None: flat) plus the suspension.

    On the ground plane with gradient g: pitch = atan(-g_forward), roll = asin(g_left / |n|) (the body
    z axis is the ground normal); the suspension adds -pitch_per_accel * a_long and
    +roll_per_accel * a_lat.
    """
    n = len(traj.t)
    z, pitch, roll = terrain_attitude(terrain, traj.x, traj.y, traj.yaw)
    if model.suspension and n > 1:
        a_long = np.gradient(traj.speed, traj.t)
        a_lat = traj.speed * traj.yaw_rate
        pitch = pitch - model.pitch_per_accel * a_long
        roll = roll + model.roll_per_accel * a_lat
    return Attitude(t=traj.t.copy(), z=z, pitch=pitch, roll=roll)


@dataclass
class ImuSim:
    """sensor_msgs/Imu content at ``t`` (imu_link = base_link axes).

    ``orientation_rpy``: [N, 3] roll, pitch (truth + the tilt estimate's error) and yaw (the
    odometry's dead-reckoned yaw: the IMU has no absolute heading) in the odom frame.
    ``gyro``: [N, 3] body angular velocity (rad/s); ``accel``: [N, 3] specific force in the body
    frame, R^T (a + g e_z), m/s^2 (at rest and level: (0, 0, +9.81)). ``true_*``: without errors.
    """

    t: np.ndarray
    orientation_rpy: np.ndarray
    gyro: np.ndarray
    accel: np.ndarray
    true_gyro: np.ndarray
    true_accel: np.ndarray
    tilt_sigma: float
    gyro_sigma: float
    accel_sigma: float

    def __len__(self) -> int:
        return len(self.t)


def body_motion(traj: "Trajectory", att: Attitude, t: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """True body angular velocity [N, 3] and specific force [N, 3] at times ``t``.

    Acceleration is the second derivative of the base_link position (x, y, z) on the truth grid;
    body rates come from the Euler-angle rates: w = (dr - sin p dy, cos r dp + sin r cos p dy,
    -sin r dp + cos r cos p dy)."""
    tt = traj.t
    pos = np.stack([traj.x, traj.y, att.z], axis=1)
    acc = np.gradient(np.gradient(pos, tt, axis=0), tt, axis=0)
    R = rotation_rpy(att.roll, att.pitch, traj.yaw)
    f_world = acc + np.array([0.0, 0.0, GRAVITY])
    f_body = np.einsum("nji,nj->ni", R, f_world)
    dr, dp, dy = (np.gradient(a, tt) for a in (att.roll, att.pitch, traj.yaw))
    r, p = att.roll, att.pitch
    w = np.stack([dr - np.sin(p) * dy, np.cos(r) * dp + np.sin(r) * np.cos(p) * dy,
                  -np.sin(r) * dp + np.cos(r) * np.cos(p) * dy], axis=1)
    interp = lambda a: np.stack([np.interp(t, tt, a[:, j]) for j in range(3)], axis=1)  # noqa: E731
    return interp(w), interp(f_body)


def simulate_imu(traj: "Trajectory", att: Attitude, odom: "OdometrySim", rng: np.random.Generator,
                 t: np.ndarray, model: ImuModel = ImuModel()) -> ImuSim:
    """The IMU along the drive at times ``t`` (see ``ImuSim``)."""
    t = np.asarray(t, float)
    n = len(t)
    d2r = math.pi / 180.0
    w, f = body_motion(traj, att, t)
    gyro = w + rng.normal(0.0, model.gyro_bias_dps * d2r, 3) + rng.normal(0.0, model.gyro_noise_dps * d2r, (n, 3))
    accel = f + rng.normal(0.0, model.accel_bias_mps2, 3) + rng.normal(0.0, model.accel_noise_mps2, (n, 3))
    _, pitch, roll = att.at(t)
    tilt = rng.normal(0.0, model.tilt_sigma_deg * d2r, (n, 2))
    yaw = np.interp(t, odom.t, odom.yaw)
    rpy = np.stack([roll + tilt[:, 0], pitch + tilt[:, 1], yaw], axis=1)
    return ImuSim(t=t, orientation_rpy=rpy, gyro=gyro, accel=accel, true_gyro=w, true_accel=f,
                  tilt_sigma=model.tilt_sigma_deg * d2r,
                  gyro_sigma=math.hypot(model.gyro_noise_dps, model.gyro_bias_dps) * d2r,
                  accel_sigma=math.hypot(model.accel_noise_mps2, model.accel_bias_mps2))


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
