"""Online self-calibration of the camera mounting from metric matching itself (numpy + OpenCV).

The published mounting (/tf_static or ``camera_mount``) is never exact: a pitch error of 2 deg
stretches the flat-road BEV along the track and slides the match by metres. ``MountCalibrator``
estimates the static error of the camera relative to the road plane (pitch, height, roll, yaw;
see ``SelfCalParams``) slowly, over many keyframes, from the matches:

1. **Gate.** Only a match whose volume has a sharp, unambiguous peak (cosine score, margin over
   the best score farther than ``selfcal_ambiguity_radius_m``, not on the window's edge, near the prior)
   is used, and only while the car is neither braking / accelerating hard nor turning.
2. **Probe.** Per accepted match (round robin): pitch and height together, or roll. The newest
   keyframe is projected again through the corrected model with the parameter(s) at -d, 0, +d (and
   +d, +d for the pitch-height cross term; d from the sigma, clamped) and scored in a small window
   around the matched pose (``MetricMatcher.score``; the best score refined below the 0.5 m grid).
3. **Fit.** A quadratic through the scores gives the local optimum and, from its Hessian, the shape
   of the observation's covariance (pitch and height trade off along a ridge: both stretch the BEV
   along the track); a flat profile is rejected, an optimum beyond ``selfcal_max_step_k`` probes is clipped
   to it with an inflated variance, a monotonic one steps towards its better side.
4. **Fuse.** One Kalman filter over (pitch, d pitch / d accel, height, roll, yaw) with a random-walk
   process noise per observation. Pitch is the static error plus the dynamic pitch of acceleration
   and braking, predicted from the odometry's longitudinal acceleration (``dyn = -coef * a``,
   pitch > 0 looks down: braking dips the nose; ``coef`` is a state with prior ``selfcal_accel_pitch_coef``),
   so the dynamic part is not taken for the static one.
5. **Yaw** needs no probe: a yaw error turns the BEV, so the matches' heading (refined below the
   volume's step) differs from the direction their positions move in. Over ``selfcal_yaw_baseline_m`` of
   straight driving the difference is one observation. Roll and yaw are observed only once the
   pitch has settled (``selfcal_settle_sigma_pitch_deg``).
6. **Bound.** An observation beyond ``bound_*`` or an update that would leave it is rejected.

Every update is logged at debug level; ``counts`` holds accepted / rejected (by reason).
``camera_model()`` is the published model corrected by the estimate (rotation about the camera
centre in base_link axes, height added to the mounting's z). ``save`` / ``load``: a JSON file
with format/version and the published model it applies to (a vehicle keeps its calibration).

No torch, no rclpy; the matcher hook is ``MetricMatcher(..., selfcal=MountCalibrator(...))``.
"""
from __future__ import annotations

import json
import logging
import math
from collections import deque
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Deque, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..core.config import check_keys
from ..core.errors import IncompatibleArtifact, InvalidArgument
from ..core.filter import _f, validate_fields
from ..core.manifest import check_manifest, write_json_atomic
from .bev import CameraModel, rpy_to_matrix

log = logging.getLogger(__name__)

SELFCAL_FORMAT = "geoloc_camera_selfcal"
SELFCAL_VERSION = 1
CHANNELS = ("pitch", "height", "roll")
_DEG = math.pi / 180.0


@dataclass(frozen=True)
class SelfCalParams:
    """Settings of the mounting self-calibration (angles in degrees, lengths in metres)."""

    _group: ClassVar[str] = "metric"

    camera_selfcal: bool = _f(True, "self-calibrate the camera mounting (pitch, height, roll, yaw) from the matches "
                              "while driving (metric matching; not with metric_pitch_search_deg); on by default: "
                              "the map-frame median was lower on 5 of the 6 validation drives of bench/heldout.yaml")
    camera_selfcal_file: str = _f("", "the vehicle's calibration file: loaded at start when it exists, written as the "
                                  "estimate settles (empty: start from the published mounting, save nothing)")

    selfcal_pitch: bool = _f(True, "estimate the static pitch error of the camera")
    selfcal_height: bool = _f(True, "estimate the height error of the camera above the road")
    selfcal_roll: bool = _f(True, "estimate the static roll error of the camera")
    selfcal_yaw: bool = _f(True, "estimate the static yaw error of the camera (heading of the matches vs their track)")
    selfcal_settle_sigma_pitch_deg: float = _f(0.4, "roll and yaw are observed only once the pitch sigma is below this "
                                       "(a large pitch error distorts the BEV more than they do)", 0.01, 10.0)
    selfcal_every_n: int = _f(1, "probe at every n-th gated match (1: each)", 1, 100)
    selfcal_prior_sigma_pitch_deg: float = _f(2.0, "prior sigma of the pitch error (deg)", 0.01, 10.0)
    selfcal_prior_sigma_height_m: float = _f(0.1, "prior sigma of the height error (m)", 0.001, 1.0)
    selfcal_prior_sigma_roll_deg: float = _f(1.5, "prior sigma of the roll error (deg)", 0.01, 10.0)
    selfcal_obs_sigma_pitch_deg: float = _f(0.5, "sigma of one pitch observation (deg)", 0.001, 10.0)
    selfcal_obs_sigma_height_m: float = _f(0.04, "sigma of one height observation (m)", 0.0001, 1.0)
    selfcal_obs_sigma_roll_deg: float = _f(0.6, "sigma of one roll observation (deg)", 0.001, 10.0)
    selfcal_process_pitch_deg: float = _f(0.01, "random walk of the pitch error per observation (deg)", 0.0, 1.0)
    selfcal_process_height_m: float = _f(0.001, "random walk of the height error per observation (m)", 0.0, 0.1)
    selfcal_process_roll_deg: float = _f(0.01, "random walk of the roll error per observation (deg)", 0.0, 1.0)
    selfcal_prior_sigma_yaw_deg: float = _f(1.5, "prior sigma of the yaw error (deg)", 0.01, 10.0)
    selfcal_obs_sigma_yaw_deg: float = _f(1.0, "sigma of one yaw observation (deg)", 0.01, 10.0)
    selfcal_process_yaw_deg: float = _f(0.01, "random walk of the yaw error per observation (deg)", 0.0, 1.0)
    selfcal_yaw_baseline_m: float = _f(20.0, "a yaw observation compares the matches' heading with the direction of "
                                       "their track over at least this much straight driving (m)", 5.0, 500.0)
    selfcal_yaw_straight_deg: float = _f(1.5, "... during which the odometry heading changed less than this (deg)",
                                         0.1, 10.0)
    selfcal_max_yaw_obs_deg: float = _f(5.0, "a yaw observation larger than this is rejected (deg)", 0.5, 15.0)
    selfcal_probe_k: float = _f(1.0, "probe step: this many sigmas of the parameter ...", 0.1, 5.0)
    selfcal_probe_min_pitch_deg: float = _f(0.4, "... at least this (deg)", 0.01, 5.0)
    selfcal_probe_max_pitch_deg: float = _f(1.5, "... at most this (deg)", 0.01, 5.0)
    selfcal_probe_min_height_m: float = _f(0.03, "probe step of the height, at least (m)", 0.001, 0.5)
    selfcal_probe_max_height_m: float = _f(0.08, "... at most (m)", 0.001, 0.5)
    selfcal_probe_min_roll_deg: float = _f(0.5, "probe step of the roll, at least (deg)", 0.01, 5.0)
    selfcal_probe_max_roll_deg: float = _f(1.5, "... at most (deg)", 0.01, 5.0)
    selfcal_max_step_k: float = _f(1.5, "a parabola optimum beyond this many probe steps is clipped to it", 0.5, 5.0)
    selfcal_bound_pitch_deg: float = _f(4.0, "the pitch estimate never leaves +- this (deg)", 0.1, 15.0)
    selfcal_bound_height_m: float = _f(0.3, "the height estimate never leaves +- this (m)", 0.01, 2.0)
    selfcal_bound_roll_deg: float = _f(4.0, "the roll estimate never leaves +- this (deg)", 0.1, 15.0)
    selfcal_bound_yaw_deg: float = _f(4.0, "the yaw estimate never leaves +- this (deg)", 0.1, 15.0)
    selfcal_accel_pitch_coef: float = _f(0.006, "dynamic pitch per m/s^2 of braking (rad; nose down)", 0.0, 0.05)
    selfcal_accel_pitch_coef_sigma: float = _f(0.003, "prior sigma of that coefficient (0: fixed)", 0.0, 0.05)
    selfcal_accel_pitch_coef_max: float = _f(0.03, "the coefficient never leaves 0..this", 0.001, 0.1)
    selfcal_max_accel_mps2: float = _f(2.5, "no probing while |longitudinal acceleration| exceeds this", 0.1, 20.0)
    selfcal_max_lat_accel_mps2: float = _f(0.5, "no probing while |lateral acceleration| exceeds this (the body rolls "
                                           "in "
                                   "turns)", 0.05, 20.0)
    selfcal_accel_window_s: float = _f(0.6, "odometry speed fitted over this long to get the acceleration (s)",
                                       0.1, 5.0)
    selfcal_min_peak: float = _f(0.12, "gate: peak cosine score at least", 0.0, 1.0)
    selfcal_min_margin: float = _f(0.04, "gate: peak minus the best score farther than ambiguity_radius_m", 0.0, 1.0)
    selfcal_ambiguity_radius_m: float = _f(2.5, "gate: distance beyond which a second peak is a rival (m)", 0.5, 50.0)
    selfcal_max_offset_sigma_k: float = _f(4.0, "gate: the peak within this many prior sigmas ...", 0.5, 50.0)
    selfcal_max_offset_min_m: float = _f(5.0, "... or within this (m)", 0.5, 100.0)
    selfcal_min_curvature: float = _f(1e-4, "gate: the profile's drop over one probe step at least (cosine)", 0.0, 1.0)
    selfcal_local_half_m: float = _f(4.0, "probe scores are the best within this of the matched position (m)",
                                     0.5, 20.0)
    selfcal_local_yaw_steps: int = _f(0, "... and within this many heading steps of its heading", 0, 10)
    selfcal_probe_views: int = _f(1, "probes score the newest this many keyframes of the mosaic (0: all of them)",
                                  0, 16)
    selfcal_probe_supersample: int = _f(1, "probes project the keyframes at this supersampling (the matcher: 2)", 1, 4)
    selfcal_quantum_deg: float = _f(0.01, "the corrected model's angles are rounded to this (lookup map reuse; deg)",
                            0.0001, 0.5)
    selfcal_quantum_m: float = _f(0.001, "its height to this (m)", 0.00001, 0.05)

    def __post_init__(self):
        validate_fields(self, "localizer")
        check_selfcal(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "SelfCalParams":
        check_keys(cls, d, "localizer.selfcal")
        return cls(**d)

    @classmethod
    def from_config(cls, cfg) -> "SelfCalParams":
        """The ``selfcal_*`` fields of a larger config (a LocalizerConfig that extends this class)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})


def check_selfcal(p) -> None:
    """Cross-field checks (for a config that extends SelfCalParams too)."""
    if getattr(p, "camera_selfcal", False) and getattr(p, "metric_pitch_search_deg", 0.0) > 0:
        raise InvalidArgument("localizer.camera_selfcal and metric_pitch_search_deg > 0 both correct the pitch: "
                              "choose one (set metric_pitch_search_deg to 0)")
    for lo, hi in (("selfcal_probe_min_pitch_deg", "selfcal_probe_max_pitch_deg"),
                   ("selfcal_probe_min_height_m", "selfcal_probe_max_height_m"),
                   ("selfcal_probe_min_roll_deg", "selfcal_probe_max_roll_deg")):
        if getattr(p, lo) > getattr(p, hi):
            raise InvalidArgument(f"localizer.{lo} ({getattr(p, lo)}) must not exceed {hi} ({getattr(p, hi)})")


# the joint state: static pitch (rad), dynamic pitch per m/s^2 of braking (rad), height (m), roll (rad),
# yaw (rad)
STATE = ("pitch", "accel_pitch_coef", "height", "roll", "yaw")
_I = {n: i for i, n in enumerate(STATE)}
PARAMS = ("pitch", "height", "roll", "yaw")  # the static mounting errors (yaw is not probed: see _observe_yaw)


def _camera_key(cam: CameraModel) -> Tuple:
    r = lambda vs: tuple(round(float(v), 6) for v in vs)  # noqa: E731
    return (int(cam.width), int(cam.height), r(cam.K), r(cam.D), r(cam.R_base_opt), r(cam.t_base_opt))


def _wrap(a: float) -> float:
    return (a + math.pi) % (2.0 * math.pi) - math.pi


def lateral_accel(history: Sequence[Tuple[float, Optional[Tuple[float, float, float]]]]) -> float:
    """Lateral acceleration (m/s^2, > 0 turning left) = speed x yaw rate from the last two keyframe
    (t, odometry pose); 0 without them."""
    h = [(t, pose) for t, pose in history if pose is not None][-2:]
    if len(h) < 2 or not h[1][0] - h[0][0] > 1e-3:
        return 0.0
    (t0, p0), (t1, p1) = h
    dt = t1 - t0
    return math.hypot(p1[0] - p0[0], p1[1] - p0[1]) / dt * _wrap(p1[2] - p0[2]) / dt


def refined_peak(scores: np.ndarray) -> Optional[float]:
    """The best score of a volume [R, Ny, Nx], refined below the grid: a parabola through the
    maximum and its neighbours along each axis adds its vertex's rise (the profile of a mounting
    parameter is otherwise a staircase of 0.5 m cells). None when nothing is finite."""
    s = np.asarray(scores, float)
    fin = np.isfinite(s)
    if not fin.any():
        return None
    s = np.where(fin, s, -np.inf)
    idx = np.unravel_index(int(np.argmax(s)), s.shape)
    s0 = float(s[idx])
    rise = 0.0
    for ax in range(s.ndim):
        if not (0 < idx[ax] < s.shape[ax] - 1):
            continue
        lo, hi = list(idx), list(idx)
        lo[ax] -= 1
        hi[ax] += 1
        a, b = float(s[tuple(lo)]), float(s[tuple(hi)])
        den = 2.0 * s0 - a - b
        if np.isfinite(a) and np.isfinite(b) and den > 1e-9:
            rise += (b - a) ** 2 / (8.0 * den)
    return s0 + rise


class MountCalibrator:
    """See the module doc. One caller (the matcher), stamp order; not thread-safe."""

    def __init__(self, params: Optional[SelfCalParams] = None):
        self.p = params or SelfCalParams()
        p = self.p
        self.x = np.array([0.0, p.selfcal_accel_pitch_coef, 0.0, 0.0, 0.0])
        self.P = np.diag([(p.selfcal_prior_sigma_pitch_deg * _DEG) ** 2, p.selfcal_accel_pitch_coef_sigma ** 2,
                          p.selfcal_prior_sigma_height_m ** 2, (p.selfcal_prior_sigma_roll_deg * _DEG) ** 2,
                          (p.selfcal_prior_sigma_yaw_deg * _DEG) ** 2])
        self.Q = np.diag([(p.selfcal_process_pitch_deg * _DEG) ** 2, 0.0, p.selfcal_process_height_m ** 2,
                          (p.selfcal_process_roll_deg * _DEG) ** 2, (p.selfcal_process_yaw_deg * _DEG) ** 2])
        self.obs_sigma = {"pitch": p.selfcal_obs_sigma_pitch_deg * _DEG, "height": p.selfcal_obs_sigma_height_m,
                          "roll": p.selfcal_obs_sigma_roll_deg * _DEG, "yaw": p.selfcal_obs_sigma_yaw_deg * _DEG}
        self.bound = {"pitch": p.selfcal_bound_pitch_deg * _DEG, "height": p.selfcal_bound_height_m,
                      "roll": p.selfcal_bound_roll_deg * _DEG,
                      "yaw": p.selfcal_bound_yaw_deg * _DEG}
        self.probe_range = {"pitch": (p.selfcal_probe_min_pitch_deg * _DEG, p.selfcal_probe_max_pitch_deg * _DEG),
                            "height": (p.selfcal_probe_min_height_m, p.selfcal_probe_max_height_m),
                            "roll": (p.selfcal_probe_min_roll_deg * _DEG, p.selfcal_probe_max_roll_deg * _DEG)}
        # pitch and height are probed together (both stretch the BEV along the track: one at once
        # would trade one for the other), roll on its own
        ph = tuple(n for n, on in (("pitch", p.selfcal_pitch), ("height", p.selfcal_height)) if on)
        self.groups: List[Tuple[str, ...]] = [g for g in (ph, ("roll",) if p.selfcal_roll else ()) if g]
        self.published: Optional[CameraModel] = None
        self._published_key: Optional[Tuple] = None
        self._loaded_from: Optional[Path] = None  # a loaded calibration applies to one published model only
        self._turn = 0
        self._gated = 0
        self._speeds: Deque[Tuple[float, float]] = deque(maxlen=400)
        self._track: List[Tuple[float, float, float, float, Tuple[float, float, float]]] = []  # for the yaw
        self.counts: Dict[str, Any] = {"matches": 0, "probed": 0, "accepted": 0, "clipped": 0, "rejected": {}}
        self.last: Optional[Dict[str, Any]] = None  # the last probe (for debugging and pictures)

    # ------------------------------------------------------------------ the camera model
    def set_published(self, camera: CameraModel) -> None:
        """The published model (camera_info + /tf_static) the estimate corrects. A calibration loaded
        from a file applies to the model it was made for: another one is refused; without a file a
        changed mounting restarts the estimate from the prior."""
        key = _camera_key(camera)
        if self._published_key is not None and key != self._published_key:
            if self._loaded_from is not None:
                raise IncompatibleArtifact(
                    f"camera calibration {self._loaded_from} was made for another published camera model "
                    f"(size, K, D or mounting differ): remove the file or recalibrate (geoloc calibrate camera)")
            log.warning("selfcal: the published camera model changed: the mounting estimate restarts from the prior")
            self.__init__(self.p)
        self.published = camera
        self._published_key = key

    def _model(self, pitch: float, height: float, roll: float, yaw: float = 0.0) -> CameraModel:
        if self.published is None:
            raise InvalidArgument("no published camera model yet (camera_info / mounting not received)")
        cam = self.published
        if pitch == 0.0 and height == 0.0 and roll == 0.0 and yaw == 0.0:
            return cam
        R = rpy_to_matrix(roll, pitch, yaw) @ np.asarray(cam.R_base_opt, float).reshape(3, 3)
        t = np.asarray(cam.t_base_opt, float) + np.array([0.0, 0.0, height])
        return cam.with_mount(R, t)

    def _static(self) -> Dict[str, float]:
        return {n: float(self.x[_I[n]]) for n in PARAMS}

    def camera_model(self) -> CameraModel:
        """The published model corrected by the current static estimate (rounded to the quanta, so
        that the matcher's lookup maps are rebuilt only when the estimate has moved)."""
        qa, qm = self.p.selfcal_quantum_deg * _DEG, self.p.selfcal_quantum_m
        s = self._static()
        return self._model(round(s["pitch"] / qa) * qa, round(s["height"] / qm) * qm, round(s["roll"] / qa) * qa,
                           round(s["yaw"] / qa) * qa)

    # ------------------------------------------------------------------ dynamic pitch
    def on_odom(self, t: float, speed_mps: float) -> None:
        """Forward speed from the odometry (nav_msgs/Odometry twist.linear.x): the acceleration the
        dynamic pitch is predicted from. Without it, the keyframe poses give a coarser one."""
        if math.isfinite(t) and math.isfinite(speed_mps):
            self._speeds.append((float(t), float(speed_mps)))

    def accel_at(self, t: float, history: Sequence[Tuple[float, Optional[Tuple[float, float, float]]]] = ()
                 ) -> float:
        """Longitudinal acceleration (m/s^2) at ``t``: least squares over the odometry speeds of the
        last ``selfcal_accel_window_s``, else from the last three keyframe (t, odometry pose), else 0."""
        w = self.p.selfcal_accel_window_s
        pts = [(ts, v) for ts, v in self._speeds if t - w - 1e-9 <= ts <= t + 1e-9]
        if len(pts) >= 3 and pts[-1][0] - pts[0][0] >= 0.25 * w:
            ts, vs = np.array(pts).T
            ts = ts - ts.mean()
            return float(np.sum(ts * (vs - vs.mean())) / np.sum(ts * ts))
        h = [(ts, pose) for ts, pose in history if pose is not None][-3:]
        if len(h) < 3:
            return 0.0
        (t0, p0), (t1, p1), (t2, p2) = h
        if not (t1 - t0 > 1e-3 and t2 - t1 > 1e-3):
            return 0.0

        def fwd(pa, pb, dt):  # displacement along the heading between two poses
            yaw = 0.5 * (pa[2] + pb[2])
            return ((pb[0] - pa[0]) * math.cos(yaw) + (pb[1] - pa[1]) * math.sin(yaw)) / dt

        a = (fwd(p1, p2, t2 - t1) - fwd(p0, p1, t1 - t0)) / (0.5 * (t2 - t0))
        return float(np.clip(a, -20.0, 20.0))

    def dynamic_pitch(self, accel: float) -> float:
        """Pitch (rad, > 0 looks down) that a longitudinal acceleration adds (braking: nose down)."""
        qa = self.p.selfcal_quantum_deg * _DEG
        return round(-float(self.x[_I["accel_pitch_coef"]]) * float(accel) / qa) * qa

    # ------------------------------------------------------------------ observation
    def _reject(self, reason: str, detail: str = "") -> None:
        r = self.counts["rejected"]
        r[reason] = r.get(reason, 0) + 1
        log.debug("selfcal: rejected (%s)%s", reason, f": {detail}" if detail else "")

    def _gate(self, result, x: float, y: float, pos_std_m: float):
        """The matched peak (x, y, yaw, score, margin) if the volume passes the gate, else (None, reason)."""
        p = self.p
        v = result.volume
        s = np.asarray(v.scores, float)
        if not np.isfinite(s).any():
            return None, "no score"
        s = np.where(np.isfinite(s), s, -np.inf)
        k, i, j = np.unravel_index(int(np.argmax(s)), s.shape)
        peak = float(s[k, i, j])
        if peak < p.selfcal_min_peak:
            return None, "weak peak"
        ny, nx = s.shape[1:]
        if (nx > 2 and j in (0, nx - 1)) or (ny > 2 and i in (0, ny - 1)):
            return None, "peak on the window edge"
        xp, yp, yawp = float(v.xs[j]), float(v.ys[i]), float(v.yaws[k])
        if 0 < k < s.shape[0] - 1:  # the heading below the volume's step: vertex of a parabola
            a, b = s[k - 1, i, j], s[k + 1, i, j]
            den = a + b - 2.0 * peak
            if np.isfinite(a) and np.isfinite(b) and den < -1e-9:
                yawp += 0.5 * (a - b) / den * float(v.yaws[k + 1] - v.yaws[k])
        d = np.hypot(v.xs[None, :] - xp, v.ys[:, None] - yp)
        far = np.where((d > p.selfcal_ambiguity_radius_m)[None], s, -np.inf)
        rival = float(far.max()) if np.isfinite(far).any() else -1.0
        if peak - rival < p.selfcal_min_margin:
            return None, "ambiguous peak"
        if math.hypot(xp - x, yp - y) > max(p.selfcal_max_offset_sigma_k * pos_std_m, p.selfcal_max_offset_min_m):
            return None, "far from the prior"
        return (xp, yp, yawp, peak, peak - rival), None

    def observe(self, matcher, result, x: float, y: float, yaw: float, pos_std_m: float) -> Optional[str]:
        """Feed one match (``MetricMatcher.match``'s result around the prior (x, y, yaw)). Returns
        the names updated ("pitch+height", "roll"), or None (gated, rejected or not its turn)."""
        self.counts["matches"] += 1
        if self.published is None or not (self.groups or self.p.selfcal_yaw):
            return None
        views = list(matcher.views)
        accel = float(np.mean([v.accel for v in views])) if views else 0.0
        if abs(accel) > self.p.selfcal_max_accel_mps2:
            self._reject("accelerating", f"{accel:+.2f} m/s^2")
            return None
        lat = lateral_accel([(v.t, v.pose) for v in views])
        if abs(lat) > self.p.selfcal_max_lat_accel_mps2:
            self._reject("turning", f"lateral acceleration {lat:+.2f} m/s^2")
            self._track.clear()
            return None
        pk, why = self._gate(result, x, y, pos_std_m)
        if pk is None:
            self._reject(why)
            return None
        self._gated += 1
        settled = not self.p.selfcal_pitch or self.sigma("pitch") < self.p.selfcal_settle_sigma_pitch_deg * _DEG
        yaw_done = None
        if settled:
            yaw_done = self._observe_yaw(views[-1].t if views else 0.0, pk, views[-1].pose if views else None)
        else:
            self._track.clear()
        if (self._gated - 1) % self.p.selfcal_every_n or not self.groups:
            return yaw_done
        groups = self.groups if settled else self.groups[:1]
        group = groups[self._turn % len(groups)]
        self._turn += 1
        done = self._probe(matcher, group, pk, accel)
        return "+".join(n for n in (done, yaw_done) if n) or None

    def clear_track(self) -> None:
        """Forget the matches kept for the yaw observation (the odometry frame jumped)."""
        self._track.clear()

    def _observe_yaw(self, t: float, pk, pose) -> Optional[str]:
        """A yaw error of the camera turns the BEV: the matches' heading is off the direction the car
        moves by it. Over ``selfcal_yaw_baseline_m`` of straight driving (odometry), the heading of the
        matches (refined below the volume's step, averaged) minus the direction of their track
        (first to last matched position, corrected by the odometry's own sideslip) observes it."""
        p = self.p
        if not p.selfcal_yaw:
            return None
        if pose is None:
            self._track.clear()
            return None
        self._track.append((t, pk[0], pk[1], pk[2], tuple(pose)))
        first, last = self._track[0], self._track[-1]
        o0, o1 = first[4], last[4]
        turns = [abs(_wrap(e[4][2] - o0[2])) for e in self._track]
        if max(turns) > p.selfcal_yaw_straight_deg * _DEG:
            self._track = self._track[-1:]  # not straight: start again from here
            return None
        base = math.hypot(o1[0] - o0[0], o1[1] - o0[1])
        if base < p.selfcal_yaw_baseline_m:
            return None
        win, self._track = self._track, self._track[-1:]  # windows do not overlap: independent observations
        c, s = math.cos(o0[2]), math.sin(o0[2])
        dx, dy = o1[0] - o0[0], o1[1] - o0[1]
        slip = math.atan2(-s * dx + c * dy, c * dx + s * dy)  # odometry's direction of travel in its own frame
        track_dir = math.atan2(last[2] - first[2], last[1] - first[1]) - slip
        heads = [e[3] - _wrap(e[4][2] - o0[2]) for e in win]  # the matches' heading at the first pose
        cam = math.atan2(sum(math.sin(h) for h in heads), sum(math.cos(h) for h in heads))
        obs = _wrap(cam - track_dir)
        if abs(obs) > p.selfcal_max_yaw_obs_deg * _DEG:
            self._reject("yaw observation too large", f"{math.degrees(obs):+.2f} deg over {base:.0f} m")
            return None
        sig = self.obs_sigma["yaw"]
        return self._update(("yaw",), np.array([obs]), np.array([[sig * sig]]), 0.0, False, [])

    def _score(self, matcher, offsets: Dict[str, float], pk, cache) -> Optional[float]:
        xp, yp, yawp = pk[:3]
        st = self._static()
        for n, d in offsets.items():
            st[n] += d
        cam = self._model(st["pitch"], st["height"], st["roll"], st["yaw"])
        step = math.radians(matcher.p.metric_yaw_step_deg)
        yaws = yawp + step * np.arange(-self.p.selfcal_local_yaw_steps, self.p.selfcal_local_yaw_steps + 1)
        rgb, valid, rng, gm, _ = matcher.reprojected_mosaic(cam, self.p.selfcal_probe_supersample,
                                                            self.p.selfcal_probe_views)
        try:
            vol, _ = matcher.score(rgb, valid, rng, gm, xp, yp, yawp, self.p.selfcal_local_half_m, yaws, cache)
        except InvalidArgument:  # a probe that sees no ground
            return None
        return refined_peak(vol.scores)

    def _probe(self, matcher, group: Tuple[str, ...], pk, accel: float) -> Optional[str]:
        """Score the mosaic at the probes of ``group``, fit the quadratic, update the state."""
        p = self.p
        self.counts["probed"] += 1
        d = {n: float(np.clip(p.selfcal_probe_k * math.sqrt(self.P[_I[n], _I[n]]), *self.probe_range[n]))
             for n in group}
        pts = [{}] + [{n: s * d[n]} for n in group for s in (-1.0, 1.0)]
        if len(group) == 2:
            pts.append({group[0]: d[group[0]], group[1]: d[group[1]]})
        cache: dict = {}
        S = []
        for off in pts:
            s = self._score(matcher, off, pk, cache)
            if s is None:
                self._reject("probe failed", f"{off}")
                return None
            S.append(s)
        s0 = S[0]
        n = len(group)
        g = np.array([(S[2 + 2 * k] - S[1 + 2 * k]) / 2.0 for k in range(n)])  # per probe step (normalised)
        Hd = np.array([S[2 + 2 * k] + S[1 + 2 * k] - 2.0 * s0 for k in range(n)])
        H = np.diag(Hd)
        if n == 2:
            H[0, 1] = H[1, 0] = S[5] - s0 - g.sum() - 0.5 * Hd.sum()
        self.last = {"group": group, "probe": d, "scores": S, "peak": pk[3], "margin": pk[4], "accel": accel}
        lim = p.selfcal_max_step_k
        D = np.array([d[nm] for nm in group])
        names = "+".join(group)
        if np.all(np.linalg.eigvalsh(H) < -2.0 * p.selfcal_min_curvature):  # a peak: its vertex (normalised units)
            u = -np.linalg.solve(H, g)
            C0 = np.linalg.inv(-H)
            clipped = bool(np.max(np.abs(u)) > lim)
            if clipped:
                u = u * lim / np.max(np.abs(u))
            C = C0 * D[:, None] * D[None, :]
            floor = np.array([self.obs_sigma[nm] ** 2 for nm in group])
            C = C * max(1e-30, float(np.max(floor / np.maximum(np.diag(C), 1e-30))))
            if clipped:
                C = C + np.diag((lim * D) ** 2)
            return self._update(group, u * D, C, accel, clipped, S)
        # no peak in all directions: each axis alone (a monotonic profile steps towards its better side)
        done = []
        for k, nm in enumerate(group):
            sm, sp = S[1 + 2 * k], S[2 + 2 * k]
            if Hd[k] < -2.0 * p.selfcal_min_curvature:
                u = float(np.clip(-g[k] / Hd[k], -lim, lim))
            elif (sp - s0) * (s0 - sm) > 0 and abs(sp - sm) > 2.0 * p.selfcal_min_curvature:
                u = math.copysign(lim, g[k])
            else:
                continue
            clipped = abs(u) >= lim
            var = self.obs_sigma[nm] ** 2 + ((lim * d[nm]) ** 2 if clipped else 0.0)
            if self._update((nm,), np.array([u * d[nm]]), np.array([[var]]), accel, clipped, S):
                done.append(nm)
        if not done:
            self._reject("flat profile", f"{names} scores " + " ".join(f"{v:.4f}" for v in S))
            return None
        return "+".join(done)

    def _update(self, group: Tuple[str, ...], delta: np.ndarray, C: np.ndarray, accel: float, clipped: bool,
                S) -> Optional[str]:
        """Kalman update with the observed optimum ``delta`` (SI units) of ``group`` around the
        current estimate, covariance ``C``. Pitch observes static - coef * accel."""
        Hm = np.zeros((len(group), len(STATE)))
        for r, nm in enumerate(group):
            Hm[r, _I[nm]] = 1.0
            if nm == "pitch":
                Hm[r, _I["accel_pitch_coef"]] = -accel
        z = Hm @ self.x + delta
        names = "+".join(group)
        for r, nm in enumerate(group):
            if abs(z[r] - (Hm[r, _I["accel_pitch_coef"]] * self.x[_I["accel_pitch_coef"]])) > self.bound[nm]:
                self._reject("beyond the bound", f"{nm} observation {self._fmt(nm, z[r])}")
                return None
        P = self.P + self.Q
        Sm = Hm @ P @ Hm.T + C
        K = P @ Hm.T @ np.linalg.inv(Sm)
        x = self.x + K @ (z - Hm @ self.x)
        I_KH = np.eye(len(STATE)) - K @ Hm
        P = I_KH @ P @ I_KH.T + K @ C @ K.T  # Joseph form: stays a covariance
        x[_I["accel_pitch_coef"]] = float(np.clip(x[_I["accel_pitch_coef"]], 0.0, self.p.selfcal_accel_pitch_coef_max))
        for nm in PARAMS:
            if abs(x[_I[nm]]) > self.bound[nm]:
                self._reject("beyond the bound", f"{nm} estimate would be {self._fmt(nm, x[_I[nm]])}")
                return None
        self.x, self.P = x, 0.5 * (P + P.T)
        self.counts["accepted"] += 1
        self.counts["clipped"] += int(clipped)
        for nm in group:
            self.counts[f"accepted_{nm}"] = self.counts.get(f"accepted_{nm}", 0) + 1
        if self.last is not None:
            self.last.update(delta=[float(v) for v in delta], clipped=clipped)
        log.debug("selfcal %s: scores %s -> optimum %s%s; estimate %s (accel %+.2f m/s^2)", names,
                  " ".join(f"{v:.4f}" for v in S), ", ".join(self._fmt(nm, v) for nm, v in zip(group, delta)),
                  " (clipped)" if clipped else "", self.summary(short=True), accel)
        return names

    @staticmethod
    def _fmt(name: str, v: float) -> str:
        return f"{v:+.3f} m" if name == "height" else f"{math.degrees(v):+.3f} deg"

    # ------------------------------------------------------------------ reporting
    def sigma(self, name: str) -> float:
        return float(math.sqrt(max(self.P[_I[name], _I[name]], 0.0)))

    def estimate(self) -> Dict[str, Tuple[float, float]]:
        """Static error (value, sigma) in deg / m, and the dynamic pitch coefficient (rad per m/s^2)."""
        x = self.x
        return {"pitch_deg": (math.degrees(x[0]), math.degrees(self.sigma("pitch"))),
                "height_m": (float(x[2]), self.sigma("height")),
                "roll_deg": (math.degrees(x[3]), math.degrees(self.sigma("roll"))),
                "yaw_deg": (math.degrees(x[4]), math.degrees(self.sigma("yaw"))),
                "accel_pitch_coef": (float(x[1]), self.sigma("accel_pitch_coef"))}

    def summary(self, short: bool = False) -> str:
        e = self.estimate()
        s = (f"pitch {e['pitch_deg'][0]:+.2f} +- {e['pitch_deg'][1]:.2f} deg, height {e['height_m'][0]:+.3f} +- "
             f"{e['height_m'][1]:.3f} m, roll {e['roll_deg'][0]:+.2f} +- {e['roll_deg'][1]:.2f} deg, yaw "
             f"{e['yaw_deg'][0]:+.2f} +- {e['yaw_deg'][1]:.2f} deg")
        if short:
            return s
        rej = sum(self.counts["rejected"].values())
        return (f"{s}; {self.counts['accepted']} observations accepted of {self.counts['matches']} matches "
                f"({rej} rejected)")

    def diagnostics(self) -> Dict[str, str]:
        """Key/values for /diagnostics."""
        e = self.estimate()
        out = {"selfcal pitch (deg)": f"{e['pitch_deg'][0]:+.2f} +- {e['pitch_deg'][1]:.2f}",
               "selfcal height (m)": f"{e['height_m'][0]:+.3f} +- {e['height_m'][1]:.3f}",
               "selfcal roll (deg)": f"{e['roll_deg'][0]:+.2f} +- {e['roll_deg'][1]:.2f}",
               "selfcal yaw (deg)": f"{e['yaw_deg'][0]:+.2f} +- {e['yaw_deg'][1]:.2f}",
               "selfcal accel pitch coef (rad per m/s^2)": f"{e['accel_pitch_coef'][0]:.4f}",
               "selfcal accepted": str(self.counts["accepted"])}
        for k, v in sorted(self.counts["rejected"].items()):
            out[f"selfcal rejected: {k}"] = str(v)
        return out

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> Dict[str, Any]:
        from .. import __version__

        e = self.estimate()
        return {"format": SELFCAL_FORMAT, "format_version": SELFCAL_VERSION, "geoloc_ros": __version__,
                "published_camera": None if self.published is None else self.published.to_dict(),
                "estimate": {k: {"value": v, "sigma": s} for k, (v, s) in e.items()},
                "state": {"names": list(STATE), "x": [float(v) for v in self.x],
                          "P": [[float(v) for v in row] for row in self.P]},
                "counts": json.loads(json.dumps(self.counts)), "params": asdict(self.p)}

    def save(self, path: Union[str, Path]) -> Path:
        """Write the calibration (atomic: a reader never sees half a file)."""
        return write_json_atomic(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: Union[str, Path], params: Optional[SelfCalParams] = None) -> "MountCalibrator":
        """A calibrator that continues from a saved file. A file that is not JSON, of another format
        or version, or whose state is not a finite covariance and an in-bound estimate is refused
        (IncompatibleArtifact): never used in part."""
        path = Path(path)
        rebuild = "remove it or make a new one with geoloc calibrate camera"
        if not path.is_file():
            raise IncompatibleArtifact(f"camera calibration {path} does not exist (geoloc calibrate camera makes one)")
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise IncompatibleArtifact(f"camera calibration {path} is not readable JSON ({exc}); {rebuild}") from exc
        check_manifest(doc, SELFCAL_FORMAT, SELFCAL_VERSION, source=path, what="camera calibration", rebuild=rebuild)
        cal = cls(params)

        def bad(why: str):
            return IncompatibleArtifact(f"camera calibration {path} is corrupt ({why}); {rebuild}")

        st = doc.get("state")
        if not isinstance(st, dict) or st.get("names") != list(STATE):
            raise bad(f"state.names must be {list(STATE)}")
        try:
            x = np.asarray(st["x"], float)
            P = np.asarray(st["P"], float)
        except (KeyError, TypeError, ValueError) as exc:
            raise bad(f"state: {exc!r}") from None
        n = len(STATE)
        if x.shape != (n,) or P.shape != (n, n) or not (np.all(np.isfinite(x)) and np.all(np.isfinite(P))):
            raise bad(f"state.x must be {n} finite numbers and state.P {n}x{n} finite numbers")
        if not (np.allclose(P, P.T, atol=1e-12) and np.all(np.linalg.eigvalsh(P) >= -1e-15)
                and all(P[_I[nm], _I[nm]] > 0 for nm in PARAMS)):
            raise bad("state.P is not a covariance")
        for nm in PARAMS:
            if abs(x[_I[nm]]) > cal.bound[nm]:
                raise bad(f"{nm} estimate {cls._fmt(nm, x[_I[nm]])} is beyond the bound")
        if not (0.0 <= x[1] <= cal.p.selfcal_accel_pitch_coef_max):
            raise bad(f"dynamic pitch coefficient {x[1]} is outside 0..{cal.p.selfcal_accel_pitch_coef_max}")
        cal.x, cal.P = x, P
        pub = doc.get("published_camera")
        if pub is not None:
            try:
                cam = CameraModel.from_camera_info(pub["width"], pub["height"], pub["K"], pub["D"],
                                                   R_base_opt=tuple(float(v) for v in pub["R_base_opt"]),
                                                   t_base_opt=tuple(float(v) for v in pub["t_base_opt"]))
            except (KeyError, TypeError, ValueError, InvalidArgument) as exc:
                raise bad(f"published_camera: {exc}") from None
            cal.published, cal._published_key = cam, _camera_key(cam)
        cal._loaded_from = path
        log.info("camera calibration %s: %s", path, cal.summary(short=True))
        return cal


def load_or_new(path: Optional[Union[str, Path]], params: Optional[SelfCalParams] = None) -> MountCalibrator:
    """The calibration in ``path`` when it exists (refused if corrupt), else a new calibrator."""
    if path is not None and Path(path).exists():
        return MountCalibrator.load(path, params)
    return MountCalibrator(params)


__all__: List[str] = ["MountCalibrator", "SelfCalParams", "check_selfcal", "load_or_new", "refined_peak", "SELFCAL_FORMAT",
                      "SELFCAL_VERSION"]
