"""Dense matching of a BEV against an aerial window over (x, y, heading) by FFT correlation.

Raster conventions (all at one resolution ``res`` metres per pixel):

* aerial window: north-up; pixel (row r, col c) has its centre at
  ``x = x_left + (c + 0.5) res``, ``y = y_top - (r + 0.5) res`` in the map frame;
* template canvas for heading ``yaw``: north-up too, the vehicle origin at the integer pixel
  ``o = (o_r, o_c)``; canvas pixel p shifted by ``s`` lands on aerial pixel ``p + s``, so the
  vehicle is at aerial pixel ``o + s``.

The score at a shift is the cosine similarity between the weighted BEV features and the aerial
features under the BEV's weights (normalised cross-correlation without mean removal: the
features are zero-mean gradients or learned features)::

    score(s) = sum_p w(p) f(p).a(p+s) / (sqrt(sum_p w(p) |f(p)|^2 v(p+s)) sqrt(sum_p w(p) |a(p+s)|^2))

with v the aerial validity (both norms over the part of the BEV that falls on imagery).

numpy + OpenCV (cv2.dft / mulSpectrums / warpAffine), no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..core.errors import InvalidArgument
from .bev import BevGrid, _cv2


def rigid(x: float, y: float, yaw: float) -> np.ndarray:
    """3x3 homogeneous transform of a frame at (x, y, yaw) (points in that frame -> parent)."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, x], [s, c, y], [0.0, 0.0, 1.0]])


def warp(src: np.ndarray, dst_to_src: np.ndarray, dst_shape: Tuple[int, int], *, linear: bool = True) -> np.ndarray:
    """Resample ``src`` [h, w(, C)] onto a [H, W] raster; ``dst_to_src`` maps (col, row, 1) of the
    destination to (col, row, 1) of the source. Outside is 0. Any channel count."""
    cv2 = _cv2()
    M = np.asarray(dst_to_src, float)[:2].astype(np.float64)
    H, W = dst_shape
    flags = (cv2.INTER_LINEAR if linear else cv2.INTER_NEAREST) | cv2.WARP_INVERSE_MAP
    src = np.asarray(src, np.float32)
    if src.ndim == 2 or src.shape[2] <= 4:
        out = cv2.warpAffine(src, M, (W, H), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return out if src.ndim == 2 or out.ndim == 3 else out[..., None]
    return np.concatenate([warp(src[..., i:i + 4], dst_to_src, dst_shape, linear=linear)
                           for i in range(0, src.shape[2], 4)], axis=2)


@dataclass
class PoseVolumeScores:
    """Raw scores over (yaw, y, x): ``scores[k, i, j]`` for heading ``yaws[k]`` with the vehicle at
    ``x = xs[j]``, ``y = ys[i]`` (ys descending: row order of the aerial raster)."""

    scores: np.ndarray  # [R, Ny, Nx] float32 cosine similarity (NaN where nothing overlapped)
    xs: np.ndarray
    ys: np.ndarray
    yaws: np.ndarray
    overlap: np.ndarray  # [R, Ny, Nx] fraction of the template weight that fell on valid aerial pixels


def canvas_for(grid: BevGrid) -> Tuple[int, np.ndarray]:
    """Side (px) of a square canvas holding ``grid`` at any rotation, and the grid centre in
    the vehicle frame (X, Y)."""
    h, w = grid.shape
    half_diag = 0.5 * math.hypot(h, w)
    side = int(2 * math.ceil(half_diag) + 3)
    c0 = np.array([0.5 * (grid.x_min_m + grid.x_max_m), 0.0])
    return side, c0


def rotated_templates(feats: np.ndarray, weight: np.ndarray, grid: BevGrid, yaws: Sequence[float],
                      rotate_channels=None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Put the BEV features [h, w, C] and weights [h, w] onto north-up canvases, one per heading.

    Returns (templates [R, S, S, C], weights [R, S, S], origins [R, 2] int (row, col)).
    ``rotate_channels(feats_on_canvas, yaw) -> feats`` lets an extractor whose channels are
    vectors (gradients) turn them with the view."""
    side, c0 = canvas_for(grid)
    res = grid.res_m
    P = grid.pixel_to_vehicle()
    P_inv = np.linalg.inv(P)
    centre = (side - 1) / 2.0
    R = len(yaws)
    C = feats.shape[2]
    T = np.zeros((R, side, side, C), np.float32)
    Wt = np.zeros((R, side, side), np.float32)
    origins = np.zeros((R, 2), np.int64)
    for k, yaw in enumerate(yaws):
        cs, sn = math.cos(yaw), math.sin(yaw)
        gx, gy = cs * c0[0] - sn * c0[1], sn * c0[0] + cs * c0[1]  # grid centre offset in the map frame
        o_c = int(round(centre - gx / res))
        o_r = int(round(centre + gy / res))
        canvas_to_map = np.array([[res, 0.0, -o_c * res], [0.0, -res, o_r * res], [0.0, 0.0, 1.0]])
        M = P_inv @ rigid(0.0, 0.0, -yaw) @ canvas_to_map
        f = warp(feats, M, (side, side))
        if rotate_channels is not None:
            f = rotate_channels(f, yaw)
        T[k] = f
        Wt[k] = warp(weight, M, (side, side))
        origins[k] = (o_r, o_c)
    return T, Wt, origins


class AerialSpectrum:
    """The aerial window's features and their DFTs, computed once per keyframe."""

    def __init__(self, feats: np.ndarray, valid: Optional[np.ndarray], template_side: int):
        cv2 = _cv2()
        a = np.asarray(feats, np.float32)
        if a.ndim != 3:
            raise InvalidArgument(f"aerial features must be [H, W, C], got {a.shape}")
        H, W, C = a.shape
        if H < template_side or W < template_side:
            raise InvalidArgument(f"aerial window {H}x{W} is smaller than the template canvas {template_side}")
        if valid is not None:
            a = a * np.asarray(valid, np.float32)[..., None]
        self.shape = (H, W)
        self.C = C
        self.side = template_side
        self.N = (cv2.getOptimalDFTSize(H), cv2.getOptimalDFTSize(W))
        self.FA = [self._dft(a[..., c]) for c in range(C)]
        self.FE = self._dft(np.sum(a * a, axis=2))
        # coverage only matters where imagery is missing: a fully valid window skips its correlations
        full = valid is None or bool(np.all(valid))
        self.FV = None if full else self._dft(np.asarray(valid, np.float32))

    def _dft(self, x: np.ndarray) -> np.ndarray:
        cv2 = _cv2()
        buf = np.zeros(self.N, np.float32)
        buf[:x.shape[0], :x.shape[1]] = x
        return cv2.dft(buf)  # CCS packed

    def correlate(self, F_a: np.ndarray, t: np.ndarray) -> np.ndarray:
        """sum_p t(p) a(p + s) for the valid shifts s (F_a: this window's packed DFT)."""
        cv2 = _cv2()
        Ft = self._dft(t)
        out = cv2.idft(cv2.mulSpectrums(F_a, Ft, 0, conjB=True), flags=cv2.DFT_SCALE | cv2.DFT_REAL_OUTPUT)
        H, W = self.shape
        return out[:H - self.side + 1, :W - self.side + 1]

    def correlate_sum(self, ts: np.ndarray) -> np.ndarray:
        """sum_c sum_p t_c(p) a_c(p + s) with one inverse DFT (spectra are summed first)."""
        cv2 = _cv2()
        acc = None
        for c in range(self.C):
            prod = cv2.mulSpectrums(self.FA[c], self._dft(ts[..., c]), 0, conjB=True)
            acc = prod if acc is None else acc + prod
        out = cv2.idft(acc, flags=cv2.DFT_SCALE | cv2.DFT_REAL_OUTPUT)
        H, W = self.shape
        return out[:H - self.side + 1, :W - self.side + 1]


def score_volume(templates: np.ndarray, weights: np.ndarray, aerial: AerialSpectrum,
                 min_overlap: float = 0.5) -> Tuple[np.ndarray, np.ndarray]:
    """Cosine scores [R, nS_r, nS_c] for every heading's template at every valid shift, and the
    overlap fraction (template weight on valid aerial pixels). Shifts with less than
    ``min_overlap`` get NaN."""
    R = templates.shape[0]
    out, ov = [], []
    for k in range(R):
        w = weights[k]
        t = templates[k] * w[..., None]
        num = aerial.correlate_sum(t)
        en = aerial.correlate(aerial.FE, w)
        if aerial.FV is None:  # fully valid window: every shift sees the whole template
            cover = np.ones_like(num)
            tn2 = np.full_like(num, float(np.sum(w[..., None] * templates[k] ** 2)))
        else:
            # the template's energy on the valid aerial pixels only: a shift that puts part of the BEV
            # over missing imagery is compared on the part that has imagery (else partial overlap caps
            # the score at sqrt(overlap) and pulls the peak away from coverage edges)
            tn2 = aerial.correlate(aerial.FV, w * np.sum(templates[k] ** 2, axis=2))
            cover = aerial.correlate(aerial.FV, w) / max(float(w.sum()), 1e-6)
        den = np.sqrt(np.maximum(tn2, 0.0)) * np.sqrt(np.maximum(en, 0.0)) + 1e-6
        s = num / den
        s[cover < min_overlap] = np.nan
        out.append(s)
        ov.append(cover)
    return np.stack(out).astype(np.float32), np.stack(ov).astype(np.float32)


def volume_axes(origins: np.ndarray, n_shift: Tuple[int, int], x_left: float, y_top: float,
                res: float) -> Tuple[np.ndarray, np.ndarray, List[int]]:
    """Map-frame axes of the vehicle position for each heading's valid shifts, cropped to the
    shifts common to all headings. Returns (xs, ys, per-heading (row, col) crop offsets)."""
    o = np.asarray(origins)
    r_lo, c_lo = o[:, 0].max(), o[:, 1].max()  # vehicle aerial pixel = o + s, s >= 0
    r_hi, c_hi = o[:, 0].min() + n_shift[0] - 1, o[:, 1].min() + n_shift[1] - 1
    if r_hi < r_lo or c_hi < c_lo:
        raise InvalidArgument("the aerial window is too small for the template canvas at these headings")
    rows = np.arange(r_lo, r_hi + 1)
    cols = np.arange(c_lo, c_hi + 1)
    xs = x_left + (cols + 0.5) * res
    ys = y_top - (rows + 0.5) * res
    offs = [(int(r_lo - o[k, 0]), int(c_lo - o[k, 1])) for k in range(len(o))]
    return xs, ys, offs


def match_bev(feats: np.ndarray, weight: np.ndarray, grid: BevGrid, yaws: Sequence[float], aerial_feats: np.ndarray,
              aerial_valid: Optional[np.ndarray], x_left: float, y_top: float, *, rotate_channels=None,
              min_overlap: float = 0.5) -> PoseVolumeScores:
    """All of the above: the score volume of BEV features against an aerial window."""
    T, Wt, origins = rotated_templates(feats, weight, grid, yaws, rotate_channels)
    spec = AerialSpectrum(aerial_feats, aerial_valid, T.shape[1])
    S, OV = score_volume(T, Wt, spec, min_overlap)
    xs, ys, offs = volume_axes(origins, S.shape[1:], x_left, y_top, grid.res_m)
    ny, nx = len(ys), len(xs)
    scores = np.stack([S[k, r:r + ny, c:c + nx] for k, (r, c) in enumerate(offs)])
    overlap = np.stack([OV[k, r:r + ny, c:c + nx] for k, (r, c) in enumerate(offs)])
    return PoseVolumeScores(scores, xs, ys, np.asarray(yaws, float), overlap)
