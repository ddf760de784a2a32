"""The body's attitude (terrain under the wheels plus the suspension: ``AttitudeModel``, ``Attitude``,
``simulate_attitude``) and the IMU it carries (``ImuModel``, ``ImuSim``, ``simulate_imu``)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

from ..core.errors import InvalidArgument
from .odometry import OdometrySim
from .rangecheck import _check_range
from .trajectory import Trajectory


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
