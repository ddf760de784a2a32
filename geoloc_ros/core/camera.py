"""Pinhole camera model shared by the renderer, the bag writer (CameraInfo) and the node."""
from __future__ import annotations

import math
from dataclasses import dataclass

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

    def __post_init__(self):
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

    def to_dict(self) -> dict:
        return {"width": self.width, "height": self.height, "hfov_deg": self.hfov_deg,
                "mount_height_m": self.mount_height_m}
