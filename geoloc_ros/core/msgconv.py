"""Duck-typed converters from ROS messages to plain Python/numpy values (no rclpy import).

Used by the node (rclpy messages) and by the bag replay (rosbags messages): both message
families expose the same field names, so every function here reads attributes only.

* ``stamp_to_sec(stamp)`` / ``header_time(msg)``: builtin_interfaces/Time -> float seconds.
* ``navsatfix_check(msg)`` -> (``FixSample``, reason): sensor_msgs/NavSatFix -> time, lat, lon,
  2x2 east/north covariance (m^2) or None, and whether the fix is usable (``ok``); ``reason``
  says why not ("no_fix", "nan_position", ...) or is "ok". ``navsatfix(msg)`` returns the sample;
  ``navsatfix_cov_invalid(msg)`` says when a claimed covariance was not one (the default is used).
* ``odometry(msg)`` -> ``OdomSample`` (t, x, y, yaw, vx, wz, cov 3x3 of x, y, yaw or None);
  raises ``MessageDropped`` when the pose or twist is not finite.

Problems with a message that the caller should count and log raise ``MessageDropped`` with a
short machine-readable ``reason`` (used as a diagnostics key) and a human message.
"""
from __future__ import annotations

import math
from typing import List, NamedTuple, Optional, Tuple

import numpy as np

from .errors import GeolocError

# sensor_msgs/NavSatStatus and NavSatFix constants (same numbers in every ROS 2 distribution)
STATUS_NO_FIX = -1
STATUS_FIX = 0
STATUS_SBAS_FIX = 1
STATUS_GBAS_FIX = 2
COVARIANCE_TYPE_UNKNOWN = 0
COVARIANCE_TYPE_APPROXIMATED = 1
COVARIANCE_TYPE_DIAGONAL_KNOWN = 2
COVARIANCE_TYPE_KNOWN = 3


class MessageDropped(GeolocError):
    """A message that cannot be used. ``reason`` is a short key for counters ("truncated", ...)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class FixSample(NamedTuple):
    t: float
    lat: float
    lon: float
    cov_en: Optional[np.ndarray]  # 2x2 east/north covariance in m^2, or None when unknown/invalid
    ok: bool


class OdomSample(NamedTuple):
    t: float
    x: float
    y: float
    yaw: float
    vx: float
    wz: float
    cov: Optional[np.ndarray]  # 3x3 covariance of (x, y, yaw), or None when unknown (all zero)


def stamp_to_sec(stamp) -> float:
    """builtin_interfaces/Time (``sec``, ``nanosec``) -> float seconds."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def sec_to_stamp_parts(t: float) -> Tuple[int, int]:
    """float seconds -> (sec, nanosec) with 0 <= nanosec < 1e9."""
    t = float(t)
    sec = math.floor(t)
    ns = int(round((t - sec) * 1e9))  # split first: t * 1e9 loses ~100 ns at Unix-epoch magnitudes
    if ns >= 1_000_000_000:
        sec, ns = sec + 1, ns - 1_000_000_000
    return int(sec), ns


def header_time(msg) -> float:
    return stamp_to_sec(msg.header.stamp)


def cdr_header_time(data) -> float:
    """The header stamp (s) of a serialized message whose first field is a std_msgs/Header (an Image taken
    off DDS without deserialising it): CDR encapsulation (4 bytes: 0x00 0x01 little endian, 0x00 0x00 big)
    then int32 sec, uint32 nanosec. NaN when the bytes are too short or the encapsulation is unknown."""
    b = memoryview(data)
    if len(b) < 12 or b[0] != 0 or b[1] not in (0, 1):
        return float("nan")
    sec = int.from_bytes(b[4:8], "little" if b[1] == 1 else "big", signed=True)
    nsec = int.from_bytes(b[8:12], "little" if b[1] == 1 else "big", signed=False)
    return float(sec) + float(nsec) * 1e-9


def _cov_en(cov, ctype: int) -> Optional[np.ndarray]:
    """The east/north block of a NavSatFix ENU covariance, or None if unknown or not a covariance."""
    if ctype == COVARIANCE_TYPE_UNKNOWN:
        return None
    try:
        c = np.asarray(cov, dtype=float).reshape(3, 3)
    except (TypeError, ValueError):
        return None
    if ctype == COVARIANCE_TYPE_DIAGONAL_KNOWN:
        m = np.diag([c[0, 0], c[1, 1]])
    elif ctype in (COVARIANCE_TYPE_APPROXIMATED, COVARIANCE_TYPE_KNOWN):
        m = c[:2, :2].copy()
        m = 0.5 * (m + m.T)
    else:
        return None
    if not np.all(np.isfinite(m)) or m[0, 0] <= 0 or m[1, 1] <= 0 or np.linalg.det(m) <= 0:
        return None
    return m


def navsatfix_check(msg) -> Tuple[FixSample, str]:
    """NavSatFix -> (FixSample, reason). reason is "ok" when ``ok`` is True, else why not:
    "no_fix" (status NO_FIX), "nan_position" (lat/lon not finite), "out_of_range" (|lat| > 90 or
    |lon| > 180). A fix whose covariance is unknown or invalid is still ok, with cov_en None."""
    t = header_time(msg)
    lat, lon = float(msg.latitude), float(msg.longitude)
    status = int(msg.status.status)
    cov = _cov_en(msg.position_covariance, int(msg.position_covariance_type))
    if status < STATUS_FIX:
        reason = "no_fix"
    elif not (math.isfinite(lat) and math.isfinite(lon)):
        reason = "nan_position"
    elif abs(lat) > 90.0 or abs(lon) > 180.0:
        reason = "out_of_range"
    else:
        reason = "ok"
    return FixSample(t, lat, lon, cov if reason == "ok" else None, reason == "ok"), reason


def navsatfix_cov_invalid(msg) -> bool:
    """True when a NavSatFix claims a covariance (type other than UNKNOWN) that is not one (NaN,
    negative or zero variances, not positive definite): the consumer substitutes its default."""
    ctype = int(msg.position_covariance_type)
    return ctype != COVARIANCE_TYPE_UNKNOWN and _cov_en(msg.position_covariance, ctype) is None


def navsatfix(msg) -> FixSample:
    """NavSatFix -> (t, lat, lon, cov_en or None, ok); see ``navsatfix_check`` for the reason."""
    return navsatfix_check(msg)[0]


def quat_to_yaw(q) -> float:
    """Yaw (rad, about +z) of a quaternion with fields x, y, z, w."""
    x, y, z, w = float(q.x), float(q.y), float(q.z), float(q.w)
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def yaw_to_quat(yaw: float) -> Tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation by ``yaw`` about +z."""
    return 0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0)


_XYYAW = (0, 1, 5)  # x, y, yaw in a 6x6 (x, y, z, roll, pitch, yaw) covariance


def odometry(msg) -> OdomSample:
    """nav_msgs/Odometry -> (t, x, y, yaw, vx, wz, cov 3x3 of x, y, yaw or None).

    Raises MessageDropped("nonfinite_odom") if the pose or twist has NaN/inf values, and
    ("bad_quaternion") if the orientation is not a rotation (norm far from 1)."""
    t = header_time(msg)
    p = msg.pose.pose.position
    q = msg.pose.pose.orientation
    tw = msg.twist.twist
    vals = [float(p.x), float(p.y), float(q.x), float(q.y), float(q.z), float(q.w), float(tw.linear.x),
            float(tw.angular.z)]
    if not all(math.isfinite(v) for v in vals):
        raise MessageDropped("nonfinite_odom", "odometry has NaN/inf in its pose or twist")
    n = math.sqrt(sum(v * v for v in vals[2:6]))
    if not (0.9 < n < 1.1):
        raise MessageDropped("bad_quaternion", f"odometry orientation is not a unit quaternion (norm {n:.3g})")
    c6 = np.asarray(msg.pose.covariance, dtype=float).reshape(6, 6)
    c = c6[np.ix_(_XYYAW, _XYYAW)]
    cov = None if not np.any(c) or not np.all(np.isfinite(c)) or np.any(np.diag(c) < 0) else 0.5 * (c + c.T)
    return OdomSample(t, vals[0], vals[1], quat_to_yaw(q), vals[6], vals[7], cov)


def pose_cov6(cov3: np.ndarray, unknown_var: float = 1e6) -> np.ndarray:
    """3x3 (x, y, yaw) covariance -> row-major 36 for PoseWithCovariance (z, roll, pitch unknown)."""
    c = np.zeros((6, 6))
    c[2, 2] = c[3, 3] = c[4, 4] = unknown_var
    c[np.ix_(_XYYAW, _XYYAW)] = np.asarray(cov3, float)
    return c.reshape(-1)


class CameraInfoSample(NamedTuple):
    t: float
    frame_id: str
    width: int
    height: int
    K: Tuple[float, ...]  # 9, row-major
    D: Tuple[float, ...]
    distortion_model: str


def camera_info(msg) -> CameraInfoSample:
    """sensor_msgs/CameraInfo -> plain values. Raises MessageDropped("bad_camera_info") when K is
    not a usable intrinsic matrix (zeros: uncalibrated camera) or the size is zero."""
    K = tuple(float(v) for v in np.asarray(msg.k, float).reshape(-1))
    D = tuple(float(v) for v in np.asarray(msg.d, float).reshape(-1))
    w, h = int(msg.width), int(msg.height)
    if len(K) != 9 or not all(math.isfinite(v) for v in K) or K[0] <= 0 or K[4] <= 0 or w <= 0 or h <= 0:
        raise MessageDropped("bad_camera_info", f"camera_info is not calibrated (K={K}, size {w}x{h})")
    model = str(getattr(msg, "distortion_model", "") or "")
    if D and model not in ("plumb_bob", "rational_polynomial", ""):
        raise MessageDropped("bad_camera_info", f"distortion model {model!r} is not supported (plumb_bob, "
                             f"rational_polynomial)")
    if not all(math.isfinite(v) for v in D):
        raise MessageDropped("bad_camera_info", "camera_info distortion has NaN/inf")
    return CameraInfoSample(header_time(msg), str(msg.header.frame_id), w, h, K, D, model)


def transforms(msg) -> List[Tuple[str, str, Tuple[float, float, float], Tuple[float, float, float, float]]]:
    """tf2_msgs/TFMessage -> [(parent, child, (x, y, z), (qx, qy, qz, qw))]."""
    out = []
    for ts in msg.transforms:
        tr, q = ts.transform.translation, ts.transform.rotation
        out.append((str(ts.header.frame_id).lstrip("/"), str(ts.child_frame_id).lstrip("/"),
                    (float(tr.x), float(tr.y), float(tr.z)), (float(q.x), float(q.y), float(q.z), float(q.w))))
    return out


# ---------------------------------------------------------------------------------------
# the other way: an estimate -> the fields of the published messages (the node publishes them,
# the replay's estimate export writes them to a bag: one definition for both)

def grid_to_enu_cov(cov_xy: np.ndarray, convergence_deg: float) -> np.ndarray:
    """2x2 covariance on the UTM grid axes -> true east/north axes (rotated by the grid convergence)."""
    g = math.radians(convergence_deg)
    R = np.array([[math.cos(g), math.sin(g)], [-math.sin(g), math.cos(g)]])
    return R @ np.asarray(cov_xy, float) @ R.T


def enu_to_grid_cov(cov_en: np.ndarray, convergence_deg: float) -> np.ndarray:
    """2x2 covariance on true east/north axes -> UTM grid axes (the inverse of ``grid_to_enu_cov``)."""
    g = math.radians(convergence_deg)
    R = np.array([[math.cos(g), -math.sin(g)], [math.sin(g), math.cos(g)]])
    return R @ np.asarray(cov_en, float) @ R.T


SERVICE_GPS = 1
UP_VARIANCE_DEFAULT = 100.0  # m^2: the published fix's vertical variance when the GNSS gave none


def fix_fields(lat: float, lon: float, cov_xy: Optional[np.ndarray], convergence_deg: float, *, ok: bool,
               altitude: float = float("nan"), var_up: Optional[float] = None,
               service: Optional[int] = None) -> dict:
    """Fields of the NavSatFix published for an estimate: latitude, longitude, altitude, status,
    service, position_covariance (9, true east/north/up; KNOWN) or zeros with UNKNOWN when the
    grid covariance ``cov_xy`` (2x2) is not finite."""
    cov9 = np.zeros(9)
    ctype = COVARIANCE_TYPE_UNKNOWN
    if cov_xy is not None and np.all(np.isfinite(np.asarray(cov_xy, float))):
        cov9.reshape(3, 3)[:2, :2] = grid_to_enu_cov(cov_xy, convergence_deg)
        cov9[8] = float(var_up) if var_up is not None else UP_VARIANCE_DEFAULT
        ctype = COVARIANCE_TYPE_KNOWN
    return {"latitude": float(lat), "longitude": float(lon), "altitude": float(altitude),
            "status": STATUS_FIX if ok else STATUS_NO_FIX, "service": int(service or SERVICE_GPS),
            "position_covariance": [float(v) for v in cov9], "position_covariance_type": ctype}


def pose_fields(x: float, y: float, yaw: float, cov3: np.ndarray) -> dict:
    """Fields of the PoseWithCovariance published for an estimate: position (x, y, 0), orientation
    (x, y, z, w; yaw 0 when unknown), covariance (36; an unknown yaw variance is 1e6 and uncorrelated)."""
    c = np.array(cov3, float).reshape(3, 3)
    if not math.isfinite(c[2, 2]):
        c[2, :] = c[:, 2] = 0.0
        c[2, 2] = 1e6
    bad = ~np.isfinite(c)
    c[bad] = 0.0
    c[np.diag(np.diag(bad))] = 1e6
    q = yaw_to_quat(float(yaw) if math.isfinite(float(yaw)) else 0.0)
    return {"position": (float(x), float(y), 0.0), "orientation": q,
            "covariance": [float(v) for v in pose_cov6(c)]}


def estimate_status_ok(status: str) -> bool:
    """Whether a published estimate of this status is a fix (NavSatStatus FIX) or not (NO_FIX)."""
    return str(status) in ("fix", "tracking", "degraded")
