"""North-up aerial windows around a position, paged from the orthophoto under a memory budget.

The orthophoto (GeoTIFF in any CRS, or an XYZ tile folder: ``index.imagery``) is resampled onto
the map frame's grid at the matching resolution, in square blocks of ``block_px`` pixels that are
read on demand and kept in an LRU cache bounded by ``memory_budget_mb`` (as the tile index pages
its shards). A window is assembled from the blocks it overlaps.

Global raster of the map frame at resolution ``res``: pixel (R, C) has its centre at
``x = (C + 0.5) res``, ``y = -(R + 0.5) res`` (rows go south), so every window is aligned to one
grid and windows of different keyframes agree to the bit.

Why the RGB and not a precomputed feature raster: the non-learned features cost ~1 ms per window
and a learned aerial CNN a few ms on the window, while a feature raster of C float16 channels
costs 8 C bytes per pixel (C = 8 at 0.5 m: 256 MB/km^2) against 3 bytes (12 MB/km^2) for the
RGB; see docs/metric.md for the measured numbers.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple, Union

import numpy as np

from ..core.errors import InvalidArgument
from ..core.geo import LocalFrame
from ..core.tiles import sample_bilinear


@dataclass
class AerialWindow:
    rgb: np.ndarray  # [H, W, 3] uint8
    valid: np.ndarray  # [H, W] bool
    x_left: float  # map-frame x of the window's left edge
    y_top: float  # map-frame y of the window's top edge
    res_m: float


class AerialMap:
    """Windows of an orthophoto in the map frame ``frame`` at ``res_m`` (see the module doc)."""

    def __init__(self, imagery, frame: LocalFrame, res_m: float = 0.5, *, block_px: int = 256,
                 memory_budget_mb: float = 64.0):
        if isinstance(imagery, (str, Path)):
            from ..index.imagery import open_imagery

            imagery = open_imagery(imagery)
        self.imagery = imagery
        self.frame = frame
        self.res_m = float(res_m)
        if not (0.05 <= self.res_m <= 5.0):
            raise InvalidArgument(f"aerial resolution {res_m} m is outside 0.05..5")
        self.block_px = int(block_px)
        self.budget_bytes = float(memory_budget_mb) * 1e6
        self._blocks: "OrderedDict[Tuple[int, int], Tuple[np.ndarray, np.ndarray]]" = OrderedDict()
        self._bytes = 0
        self.block_reads = 0
        src = float(getattr(imagery, "gsd_m", self.res_m))
        self._ss = int(min(4, max(1, round(self.res_m / max(src, 1e-9)))))

    @classmethod
    def open(cls, path: Union[str, Path], frame: LocalFrame, res_m: float = 0.5, **kw) -> "AerialMap":
        return cls(path, frame, res_m, **kw)

    @property
    def cached_mb(self) -> float:
        return self._bytes / 1e6

    def _block(self, bi: int, bj: int) -> Tuple[np.ndarray, np.ndarray]:
        key = (bi, bj)
        b = self._blocks.get(key)
        if b is not None:
            self._blocks.move_to_end(key)
            return b
        B, s, res = self.block_px, self._ss, self.res_m
        n = B * s
        k = (np.arange(n) + 0.5) / s
        xs = (bj * B + k) * res
        ys = -(bi * B + k) * res
        X, Y = np.meshgrid(xs, ys)
        rr, cc = self.imagery.local_to_pixels(self.frame, X, Y)
        H, W = self.imagery.shape
        inside = (rr >= 0) & (rr <= H) & (cc >= 0) & (cc <= W)
        rgb = np.zeros((B, B, 3), np.uint8)
        valid = np.zeros((B, B), bool)
        if inside.any():
            r0 = max(0, int(math.floor(rr[inside].min())) - 1)
            c0 = max(0, int(math.floor(cc[inside].min())) - 1)
            r1 = min(H, int(math.ceil(rr[inside].max())) + 1)
            c1 = min(W, int(math.ceil(cc[inside].max())) + 1)
            pix, mask = self.imagery._read(r0, c0, r1 - r0, c1 - c0)
            self.block_reads += 1
            v = sample_bilinear(pix, rr - r0, cc - c0)
            ok = inside.astype(np.float32)
            if mask is not None:
                ok = ok * (sample_bilinear(mask.astype(np.float32), rr - r0, cc - c0) > 0.999)
            if s > 1:
                v = v.reshape(B, s, B, s, 3).mean(axis=(1, 3))
                ok = ok.reshape(B, s, B, s).min(axis=(1, 3))
            rgb = np.clip(v + 0.5, 0, 255).astype(np.uint8)
            valid = ok > 0.5
            rgb[~valid] = 0
        self._blocks[key] = (rgb, valid)
        self._bytes += rgb.nbytes + valid.nbytes
        while self._bytes > self.budget_bytes and len(self._blocks) > 1:
            _, (a, m) = self._blocks.popitem(last=False)
            self._bytes -= a.nbytes + m.nbytes
        return rgb, valid

    def window(self, x: float, y: float, half_px: int) -> AerialWindow:
        """The (2 half_px + 1)^2 window whose centre pixel contains map point (x, y)."""
        if not (math.isfinite(x) and math.isfinite(y)):
            raise InvalidArgument(f"window centre ({x}, {y}) is not finite")
        res, B = self.res_m, self.block_px
        C = int(math.floor(x / res))
        R = int(math.floor(-y / res))
        R0, C0 = R - half_px, C - half_px
        n = 2 * half_px + 1
        rgb = np.zeros((n, n, 3), np.uint8)
        valid = np.zeros((n, n), bool)
        for bi in range(R0 // B, (R0 + n - 1) // B + 1):
            for bj in range(C0 // B, (C0 + n - 1) // B + 1):
                brgb, bval = self._block(bi, bj)
                r_lo, r_hi = max(R0, bi * B), min(R0 + n, (bi + 1) * B)
                c_lo, c_hi = max(C0, bj * B), min(C0 + n, (bj + 1) * B)
                rgb[r_lo - R0:r_hi - R0, c_lo - C0:c_hi - C0] = brgb[r_lo - bi * B:r_hi - bi * B,
                                                                     c_lo - bj * B:c_hi - bj * B]
                valid[r_lo - R0:r_hi - R0, c_lo - C0:c_hi - C0] = bval[r_lo - bi * B:r_hi - bi * B,
                                                                       c_lo - bj * B:c_hi - bj * B]
        return AerialWindow(rgb, valid, C0 * res, -R0 * res, res)

    def covers(self, x: float, y: float, margin_px: int = 0) -> bool:
        """True when the pixel at (x, y) has valid imagery."""
        w = self.window(x, y, margin_px)
        return bool(w.valid[margin_px, margin_px])
