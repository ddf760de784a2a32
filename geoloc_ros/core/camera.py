"""Pinhole camera model shared by the renderer, the bag writer (CameraInfo) and the node."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import numpy as np

from .errors import InvalidArgument


@dataclass(frozen=True)
class PinholeCamera:
    """A forward-looking pinhole camera mounted on the vehicle.

    Image axes: u to the right, v down; principal point at the image centre.
    Square pixels: fy = fx = (width / 2) / tan(hfov / 2) (the FOV spans the outer pixel edges).
    Pixel coordinates follow ROS / OpenCV: the centre of pixel (row v, column u) is at the
    integer coordinates (u, v), so the image spans [-0.5, W - 0.5] and a centred principal
    point is cx = (W - 1) / 2, cy = (H - 1) / 2 (what CameraInfo.K carries). Zero pitch and
    roll: the horizon is the row ``cy``.
    """

    width: int = 256
    height: int = 128
    hfov_deg: float = 90.0
    mount_height_m: float = 1.8
    # plumb_bob (OpenCV / ROS) distortion k1, k2, p1, p2, k3 of normalised coordinates; zeros: a pinhole
    distortion: Tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)

    def __post_init__(self):
        d = self.distortion
        if not (isinstance(d, (tuple, list)) and len(d) == 5 and all(isinstance(v, (int, float)) and math.isfinite(v)
                                                                    and abs(v) <= 2.0 for v in d)):
            raise InvalidArgument(f"distortion must be 5 plumb_bob coefficients (k1, k2, p1, p2, k3) within "
                                  f"+-2, got {d!r}")
        object.__setattr__(self, "distortion", tuple(float(v) for v in d))
        if not (16 <= self.width <= 4096 and 16 <= self.height <= 4096):
            raise InvalidArgument(f"camera size {self.width}x{self.height} px is outside 16..4096")
        if not (10.0 <= self.hfov_deg <= 170.0):
            raise InvalidArgument(f"horizontal FOV {self.hfov_deg} deg is outside 10..170 (a pinhole cannot see 180)")
        if not (0.3 <= self.mount_height_m <= 10.0):
            raise InvalidArgument(f"camera height {self.mount_height_m} m is outside 0.3..10")

    @property
    def fx(self) -> float:
        return (self.width / 2.0) / math.tan(math.radians(self.hfov_deg) / 2.0)

    @property
    def fy(self) -> float:
        return self.fx

    @property
    def cx(self) -> float:
        return (self.width - 1) / 2.0

    @property
    def cy(self) -> float:
        return (self.height - 1) / 2.0

    @property
    def vfov_deg(self) -> float:
        return math.degrees(2.0 * math.atan((self.height / 2.0) / self.fy))

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def column_bearing(self, u) -> np.ndarray:
        """Bearing (rad, CCW positive, i.e. left of the optical axis is positive) of pixel column(s) u
        (the centre of column u is at the coordinate u)."""
        return np.arctan2(self.cx - np.asarray(u, float), self.fx)

    def project_bearing(self, bearing_rad) -> np.ndarray:
        """Column coordinate (continuous, pixel centres at integers) where a bearing relative to the axis lands."""
        return self.cx - self.fx * np.tan(np.asarray(bearing_rad, float))

    @property
    def D(self) -> np.ndarray:
        """plumb_bob coefficients as CameraInfo.d carries them."""
        return np.array(self.distortion, float)

    @property
    def distorted(self) -> bool:
        return any(self.distortion)

    def distort(self, x, y) -> Tuple[np.ndarray, np.ndarray]:
        """Normalised pinhole coordinates (x right, y down, z = 1) -> distorted normalised coordinates."""
        k1, k2, p1, p2, k3 = self.distortion
        x, y = np.asarray(x, float), np.asarray(y, float)
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        return (x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
                y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)

    def undistort(self, xd, yd, iterations: int = 30) -> Tuple[np.ndarray, np.ndarray]:
        """Inverse of ``distort`` (fixed-point iteration, like OpenCV's undistortPoints)."""
        xd, yd = np.asarray(xd, float), np.asarray(yd, float)
        x, y = xd.copy(), yd.copy()
        if not self.distorted:
            return x, y
        for _ in range(iterations):
            ex, ey = self.distort(x, y)
            x, y = x + (xd - ex), y + (yd - ey)
        return x, y

    def project(self, points) -> np.ndarray:
        """[N, 3] points in camera_optical_frame (z forward) -> [N, 2] pixel (u, v), with distortion."""
        p = np.asarray(points, float).reshape(-1, 3)
        xd, yd = self.distort(p[:, 0] / p[:, 2], p[:, 1] / p[:, 2])
        return np.stack([self.cx + self.fx * xd, self.cy + self.fy * yd], axis=1)

    def to_dict(self) -> dict:
        return {"width": self.width, "height": self.height, "hfov_deg": self.hfov_deg,
                "mount_height_m": self.mount_height_m, "distortion_model": "plumb_bob",
                "distortion": list(self.distortion)}

    @classmethod
    def from_dict(cls, d: dict) -> "PinholeCamera":
        """Inverse of ``to_dict`` (older manifests without distortion give a pinhole)."""
        keys = ("width", "height", "hfov_deg", "mount_height_m")
        kw = {k: d[k] for k in keys if d.get(k) is not None}
        if d.get("distortion") is not None:
            kw["distortion"] = tuple(d["distortion"])
        return cls(**kw)
