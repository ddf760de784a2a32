"""Keyframe selection and the ring buffer of cached per-frame features (numpy only).

The sequence model was trained on keyframes ~5 m apart. ``KeyframeBuffer.is_keyframe`` keeps
one camera frame per ``spacing_m`` travelled according to odometry, or one per ``interval_s``
when there is no (fresh) odometry. Each kept frame is encoded once (``Encoder.frame_features``)
and its feature vector stays in the buffer, so a keyframe costs one backbone pass plus the
temporal fusion of the last T cached features.

A time gap longer than ``max_gap_s`` between keyframes breaks the sequence (the frames no longer
describe a continuous stretch of road): the buffer is cleared before the new frame is added.
"""
from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Deque, Optional, Tuple

import numpy as np

from .errors import InvalidArgument


@dataclass
class Keyframe:
    t: float  # stamp (s)
    feat: Optional[np.ndarray]  # [D] float32 per-frame feature (None when the camera is not used)
    odom_dist: float  # odometry distance travelled at this frame (NaN without odometry)
    seq: int  # running number of keyframes since the last clear


class KeyframeBuffer:
    """Ring buffer of the last ``capacity`` keyframes (oldest first)."""

    def __init__(self, spacing_m: float, interval_s: float, capacity: int, max_gap_s: float):
        if not (spacing_m > 0 and interval_s > 0 and max_gap_s > 0):
            raise InvalidArgument(f"keyframe spacing ({spacing_m} m), interval ({interval_s} s) and max gap "
                                  f"({max_gap_s} s) must be positive")
        if int(capacity) < 1:
            raise InvalidArgument(f"keyframe buffer capacity must be >= 1, got {capacity}")
        self.spacing_m = float(spacing_m)
        self.interval_s = float(interval_s)
        self.max_gap_s = float(max_gap_s)
        self.capacity = int(capacity)
        self._buf: Deque[Keyframe] = collections.deque(maxlen=self.capacity)
        self._seq = 0
        self.breaks = 0  # sequences broken by gaps

    def __len__(self) -> int:
        return len(self._buf)

    def clear(self) -> None:
        self._buf.clear()
        self._seq = 0

    @property
    def last(self) -> Optional[Keyframe]:
        return self._buf[-1] if self._buf else None

    def is_keyframe(self, t: float, odom_dist: Optional[float]) -> bool:
        """Would a frame at ``t`` (odometry distance ``odom_dist``, None without fresh odometry)
        be a keyframe? Distance-based when both it and the last keyframe have odometry, else time-based."""
        last = self.last
        if last is None:
            return True
        if t - last.t > self.max_gap_s:
            return True
        if odom_dist is not None and math.isfinite(odom_dist) and math.isfinite(last.odom_dist):
            return odom_dist - last.odom_dist >= self.spacing_m
        return t - last.t >= self.interval_s

    def add(self, t: float, feat: Optional[np.ndarray], odom_dist: Optional[float]) -> Keyframe:
        """Append a keyframe (clearing the buffer first if the gap since the last one is too long)."""
        last = self.last
        if last is not None and t - last.t > self.max_gap_s:
            self.clear()
            self.breaks += 1
        kf = Keyframe(t=float(t), feat=None if feat is None else np.asarray(feat, np.float32).reshape(-1),
                      odom_dist=float("nan") if odom_dist is None else float(odom_dist), seq=self._seq)
        self._seq += 1
        self._buf.append(kf)
        return kf

    def sequence(self, length: int) -> Tuple[np.ndarray, np.ndarray]:
        """The last ``length`` keyframes' features [T, D] (oldest..newest) and stamps [T].
        Keyframes without features (camera off) are skipped."""
        kfs = [k for k in list(self._buf)[-int(length):] if k.feat is not None]
        if not kfs:
            return np.zeros((0, 0), np.float32), np.zeros(0)
        return np.stack([k.feat for k in kfs]).astype(np.float32), np.array([k.t for k in kfs])
