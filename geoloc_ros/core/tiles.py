"""Aerial tiles: heading-up crops of an orthophoto, shared by dataset export and the index."""
from __future__ import annotations

from typing import Tuple

import numpy as np


def tile_grid(cx: float, cy: float, yaw: float, tile_m: float, tile_px: int) -> Tuple[np.ndarray, np.ndarray]:
    """Local (x, y) of every output pixel centre of a tile centred on (cx, cy).

    The tile is rotated so that direction ``yaw`` (rad, CCW from east) points up:
    output row 0 is ``tile_m / 2`` ahead, column 0 is ``tile_m / 2`` to the left.
    """
    s = tile_m / tile_px
    k = (np.arange(tile_px) + 0.5 - tile_px / 2.0) * s
    right, up = np.meshgrid(k, -k)  # rows go from ahead (up) to behind
    fx, fy = np.cos(yaw), np.sin(yaw)
    rx, ry = np.sin(yaw), -np.cos(yaw)
    return cx + up * fx + right * rx, cy + up * fy + right * ry


def sample_bilinear(img: np.ndarray, rows: np.ndarray, cols: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Bilinear sample ``img`` [H, W(, C)] at continuous pixel coordinates (pixel (r, c) spans [r, r+1)).

    Points outside the image get ``fill``. Returns float32 with shape rows.shape (+ (C,)).
    """
    H, W = img.shape[:2]
    r = np.asarray(rows, np.float64) - 0.5
    c = np.asarray(cols, np.float64) - 0.5
    r0 = np.floor(r).astype(np.int64)
    c0 = np.floor(c).astype(np.int64)
    fr = (r - r0).astype(np.float32)
    fc = (c - c0).astype(np.float32)
    outside = (r < -0.5) | (r > H - 0.5) | (c < -0.5) | (c > W - 0.5)
    r0c, r1c = np.clip(r0, 0, H - 1), np.clip(r0 + 1, 0, H - 1)
    c0c, c1c = np.clip(c0, 0, W - 1), np.clip(c0 + 1, 0, W - 1)
    if img.ndim == 3:
        fr, fc, outside = fr[..., None], fc[..., None], outside[..., None]

    def at(rr, cc):  # gather first, convert only the gathered pixels (img may be a whole orthophoto)
        return img[rr, cc].astype(np.float32)

    top = at(r0c, c0c) * (1 - fc) + at(r0c, c1c) * fc
    bot = at(r1c, c0c) * (1 - fc) + at(r1c, c1c) * fc
    out = top * (1 - fr) + bot * fr
    return np.where(outside, np.float32(fill), out)
