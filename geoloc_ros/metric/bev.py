"""Ground view -> bird's-eye view (BEV): flat-road inverse perspective mapping.

Conventions
-----------
* Vehicle frame (base_link, REP-103): X forward, Y left, Z up; the road surface is the plane
  Z = 0 through base_link (the car sits on the road, so this is the road plane even on a grade).
* Camera: ROS ``sensor_msgs/CameraInfo`` K and D (plumb_bob), pixel centres at integer
  coordinates (a centred camera has cx = (W - 1) / 2); optical frame z forward, x right, y down.
  The mounting is the transform base_link -> camera optical frame (/tf_static).
* BEV raster (``BevGrid``): row r covers X = x_max - (r + 0.5) res, column c covers
  Y = y_half - (c + 0.5) res: forward is up, left is left, as seen from above the car.

Only numpy and OpenCV (cv2.projectPoints for the lens model, cv2.remap for the sampling).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..core.errors import InvalidArgument

# camera_link (x fwd, y left, z up) -> optical (z fwd, x right, y down): columns are the optical
# axes expressed in camera_link
R_LINK_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def _cv2():
    import cv2  # noqa: WPS433 (heavy import inside the function that needs it)

    return cv2


def quat_to_matrix(q: Sequence[float]) -> np.ndarray:
    """(x, y, z, w) quaternion -> 3x3 rotation matrix."""
    x, y, z, w = (float(v) for v in q)
    n = math.sqrt(x * x + y * y + z * z + w * w)
    if not n > 0 or not math.isfinite(n):
        raise InvalidArgument(f"quaternion {tuple(q)} is not a rotation")
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def rpy_to_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Fixed-axis roll (x), pitch (y), yaw (z), radians: R = Rz(yaw) Ry(pitch) Rx(roll)."""
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch), math.cos(yaw),
                              math.sin(yaw))
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


@dataclass(frozen=True)
class CameraModel:
    """Intrinsics (ROS convention) and mounting of one camera.

    ``R_base_opt`` columns are the optical axes in base_link; ``t_base_opt`` the optical centre
    in base_link (m). Build from messages with ``from_camera_info`` / ``with_mount``."""

    width: int
    height: int
    K: Tuple[float, ...]  # 9 values, row-major
    D: Tuple[float, ...] = ()
    R_base_opt: Tuple[float, ...] = tuple(R_LINK_OPTICAL.ravel())
    t_base_opt: Tuple[float, ...] = (0.0, 0.0, 1.8)

    def __post_init__(self):
        K = np.asarray(self.K, float)
        if K.shape != (9,) or not np.all(np.isfinite(K)) or K[0] <= 0 or K[4] <= 0:
            raise InvalidArgument(f"camera K {self.K} is not a valid intrinsic matrix (fx, fy > 0)")
        if K[3] != 0 or K[6] != 0 or K[7] != 0 or K[8] != 1:  # cv2 would ignore the last row
            raise InvalidArgument(f"camera K {self.K} is not a row-major intrinsic matrix [fx 0 cx; 0 fy cy; 0 0 1] "
                                  f"(transposed?)")
        if not (8 <= int(self.width) <= 16384 and 8 <= int(self.height) <= 16384):
            raise InvalidArgument(f"camera size {self.width}x{self.height} is not plausible")
        if len(self.D) not in (0, 4, 5, 8, 12, 14) or not np.all(np.isfinite(np.asarray(self.D, float))):
            raise InvalidArgument(f"camera distortion D {self.D} is not a plumb_bob / rational_polynomial vector")
        R = np.asarray(self.R_base_opt, float).reshape(3, 3)
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-6):
            raise InvalidArgument("camera mounting rotation is not orthonormal")
        if np.linalg.det(R) < 0:
            raise InvalidArgument("camera mounting is a reflection, not a rotation (a left-handed optical frame "
                                  "would mirror the ground view)")
        if not np.all(np.isfinite(np.asarray(self.t_base_opt, float))):
            raise InvalidArgument(f"camera mounting translation {self.t_base_opt} is not finite")

    @classmethod
    def from_camera_info(cls, width: int, height: int, K: Sequence[float], D: Sequence[float] = (),
                         **mount) -> "CameraModel":
        return cls(int(width), int(height), tuple(float(v) for v in np.asarray(K, float).ravel()),
                   tuple(float(v) for v in np.asarray(D, float).ravel()), **mount)

    def with_mount(self, R_base_opt: np.ndarray, t_base_opt: Sequence[float]) -> "CameraModel":
        return CameraModel(self.width, self.height, self.K, self.D,
                           tuple(float(v) for v in np.asarray(R_base_opt, float).ravel()),
                           tuple(float(v) for v in t_base_opt))

    @staticmethod
    def mount_from_rpy(x: float, y: float, z: float, roll: float = 0.0, pitch: float = 0.0,
                       yaw: float = 0.0) -> Tuple[np.ndarray, Tuple[float, float, float]]:
        """(R_base_opt, t) for a camera_link at (x, y, z) with roll/pitch/yaw (rad; pitch > 0 looks
        down) in base_link, optical frame by REP-103."""
        return rpy_to_matrix(roll, pitch, yaw) @ R_LINK_OPTICAL, (float(x), float(y), float(z))

    @property
    def Kmat(self) -> np.ndarray:
        return np.asarray(self.K, float).reshape(3, 3)

    def pitched(self, delta_rad: float) -> "CameraModel":
        """The same camera with the road plane tilted by ``delta_rad`` about the vehicle's Y axis
        (positive: the road ahead rises, i.e. the camera sees it as if pitched down)."""
        if delta_rad == 0.0:
            return self
        R = rpy_to_matrix(0.0, float(delta_rad), 0.0)
        return self.with_mount(R @ np.asarray(self.R_base_opt, float).reshape(3, 3),
                               R @ np.asarray(self.t_base_opt, float))

    def project(self, P_base: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Points [N, 3] in base_link -> pixel coordinates [N, 2] (ROS convention) and a
        validity mask (in front of the camera)."""
        cv2 = _cv2()
        P = np.asarray(P_base, float).reshape(-1, 3)
        R = np.asarray(self.R_base_opt, float).reshape(3, 3)
        t = np.asarray(self.t_base_opt, float)
        Pc = (P - t) @ R  # = R^T (P - t) per row
        front = Pc[:, 2] > 0.05
        uv = np.full((len(P), 2), np.nan)
        if front.any():
            D = np.asarray(self.D, float) if len(self.D) else np.zeros(5)
            pts, _ = cv2.projectPoints(Pc[front].reshape(-1, 1, 3), np.zeros(3), np.zeros(3), self.Kmat, D)
            uv[front] = pts.reshape(-1, 2)
        return uv, front

    def to_dict(self) -> Dict:
        return {"width": self.width, "height": self.height, "K": list(self.K), "D": list(self.D),
                "R_base_opt": list(self.R_base_opt), "t_base_opt": list(self.t_base_opt)}


@dataclass(frozen=True)
class BevGrid:
    """The BEV raster in the vehicle frame (see the module doc for its axes)."""

    res_m: float = 0.5
    x_min_m: float = 3.0
    x_max_m: float = 33.0
    y_half_m: float = 15.0

    def __post_init__(self):
        if not (0.05 <= self.res_m <= 2.0):
            raise InvalidArgument(f"BEV resolution {self.res_m} m is outside 0.05..2")
        if not (self.x_max_m > self.x_min_m and self.y_half_m > 0):
            raise InvalidArgument(f"BEV extent x {self.x_min_m}..{self.x_max_m} m, y +-{self.y_half_m} m is empty")

    @property
    def shape(self) -> Tuple[int, int]:
        return (int(round((self.x_max_m - self.x_min_m) / self.res_m)), int(round(2 * self.y_half_m / self.res_m)))

    def centres(self) -> Tuple[np.ndarray, np.ndarray]:
        """Vehicle-frame (X, Y) of every cell centre, each [rows, cols]."""
        h, w = self.shape
        X = self.x_max_m - (np.arange(h) + 0.5) * self.res_m
        Y = self.y_half_m - (np.arange(w) + 0.5) * self.res_m
        return np.meshgrid(X, Y, indexing="ij")

    def pixel_to_vehicle(self) -> np.ndarray:
        """3x3 homogeneous matrix: (col, row, 1) -> (X, Y, 1)."""
        r = self.res_m
        return np.array([[0.0, -r, self.x_max_m - 0.5 * r], [-r, 0.0, self.y_half_m - 0.5 * r], [0.0, 0.0, 1.0]])

    def extended(self, back_m: float) -> "BevGrid":
        """The same grid reaching ``back_m`` further behind (the sequence mosaic)."""
        return BevGrid(self.res_m, self.x_min_m - float(back_m), self.x_max_m, self.y_half_m)


class GroundProjector:
    """Samples a camera image onto a ``BevGrid`` through the road plane. The lookup maps are
    built once per (camera, grid, pitch correction) and cached (a few ms each)."""

    def __init__(self, camera: CameraModel, grid: BevGrid, *, supersample: int = 2, max_range_m: float = 40.0,
                 min_view_deg: float = 1.0):
        if supersample < 1 or supersample > 4:
            raise InvalidArgument(f"supersample {supersample} is outside 1..4")
        self.camera = camera
        self.grid = grid
        self.supersample = int(supersample)
        self.max_range_m = float(max_range_m)
        self.min_view_deg = float(min_view_deg)
        self._maps: Dict[float, Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    def _build(self, pitch: float):
        cam = self.camera.pitched(pitch)
        s = self.supersample
        g = self.grid
        fine = BevGrid(g.res_m / s, g.x_min_m, g.x_max_m, g.y_half_m)
        X, Y = fine.centres()
        P = np.stack([X.ravel(), Y.ravel(), np.zeros(X.size)], axis=1)
        uv, front = cam.project(P)
        u, v = uv[:, 0], uv[:, 1]
        W, H = cam.width, cam.height
        ok = front & np.isfinite(u) & np.isfinite(v) & (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1)
        # rays grazing the road (far cells) carry no detail: keep cells seen at least min_view_deg
        # below the horizon and within max_range_m
        t = np.asarray(cam.t_base_opt, float)
        rng = np.hypot(P[:, 0] - t[0], P[:, 1] - t[1])
        depression = np.degrees(np.arctan2(t[2], np.maximum(rng, 1e-6)))
        ok &= (rng <= self.max_range_m) & (depression >= self.min_view_deg)
        mu = np.where(ok, u, -1.0).astype(np.float32).reshape(X.shape)
        mv = np.where(ok, v, -1.0).astype(np.float32).reshape(X.shape)
        valid = ok.reshape(X.shape).astype(np.float32)
        rngc = rng.reshape(X.shape).astype(np.float32)
        if s > 1:
            h, w = g.shape
            valid = valid.reshape(h, s, w, s).min(axis=(1, 3))
            rngc = rngc.reshape(h, s, w, s).mean(axis=(1, 3))
        self._maps[pitch] = (mu, mv, valid > 0.5, rngc)
        return self._maps[pitch]

    def maps(self, pitch: float = 0.0):
        key = round(float(pitch), 6)
        m = self._maps.get(key)
        if m is None:
            if len(self._maps) > 16:
                self._maps.clear()
            m = self._build(key)
        return m

    def range_map(self, pitch: float = 0.0) -> np.ndarray:
        """Horizontal distance (m) from the camera to each BEV cell (the view's resolution proxy)."""
        return self.maps(pitch)[3]

    def project(self, image: np.ndarray, pitch: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
        """Image [H, W] or [H, W, C] (uint8 or float) -> (BEV float32 [h, w(, C)], valid mask [h, w]).
        The image size must match the camera model."""
        cv2 = _cv2()
        img = np.asarray(image)
        if img.shape[:2] != (self.camera.height, self.camera.width):
            raise InvalidArgument(f"image is {img.shape[1]}x{img.shape[0]} but the camera model is "
                                  f"{self.camera.width}x{self.camera.height} (camera_info of another camera?)")
        mu, mv, valid, _ = self.maps(pitch)
        out = cv2.remap(img.astype(np.float32), mu, mv, interpolation=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        s = self.supersample
        if s > 1:
            h, w = self.grid.shape
            out = cv2.resize(out, (w, h), interpolation=cv2.INTER_AREA)
        if out.ndim == 3:
            out = out * valid[..., None]
        else:
            out = out * valid
        return out.astype(np.float32), valid


def mount_from_transforms(tfs, base_frame: str, camera_frame: str) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Chain static transforms [(parent, child, xyz, quat)] from ``base_frame`` to ``camera_frame``
    (the camera_info frame, normally the optical frame). Returns (R, t) of the camera frame in
    base_frame, or None when the tree does not connect them."""
    parent = {c: (p, np.asarray(xyz, float), quat_to_matrix(q)) for p, c, xyz, q in tfs}
    R, t = np.eye(3), np.zeros(3)
    f = camera_frame.lstrip("/")
    seen = set()
    while f != base_frame:
        if f not in parent or f in seen:
            return None
        seen.add(f)
        p, tp, Rp = parent[f]
        # x_p = Rp x_f + tp; so x_base = R_acc_p (Rp x_f + tp) + ... accumulate from the camera up
        R, t = Rp @ R, Rp @ t + tp
        f = p
    return R, t
