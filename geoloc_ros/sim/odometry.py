"""Wheel odometry: the wheel-speed + yaw-gyro error model (``OdometryModel``), the dead-reckoned pose
(``OdometrySim``, ``simulate_odometry``) and its drift against the truth."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .rangecheck import _check_range
from .trajectory import Trajectory


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
