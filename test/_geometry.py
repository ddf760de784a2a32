"""Helpers shared by the camera-geometry tests (not a test module)."""
from __future__ import annotations

import numpy as np


def quat_matrix(q) -> np.ndarray:
    """Rotation matrix of a (x, y, z, w) quaternion."""
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def crossing(profile: np.ndarray) -> float:
    """Sub-pixel index where a monotone DARK -> BRIGHT step profile crosses its mid level."""
    lo, hi = np.median(profile[:3]), np.median(profile[-3:])
    mid = 0.5 * (lo + hi)
    if lo > hi:
        profile, lo, hi = -profile, -lo, -hi
        mid = -mid
    i = int(np.nonzero((profile[:-1] < mid) & (profile[1:] >= mid))[0][0])
    return i + (mid - profile[i]) / (profile[i + 1] - profile[i])
