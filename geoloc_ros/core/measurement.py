"""The camera measurement the filter consumes: one interface, two implementations (numpy only).

A camera measurement says how likely each particle's pose (x, y, yaw) is given the keyframe::

    ev = meas.evaluate(params)          # MatchEval: gate decision, reason, confidence, peak
    fac = meas.factor(x, y, yaw)        # [N] likelihood factor per particle (1 = no information)
    used, score = meas.update(f, check) # its own update of the particle filter f

* ``TileSimilarity``: retrieval's similarity map over aerial tile positions (``match_likelihood``:
  softmax with a temperature mixed with a uniform floor, read at a particle by bilinear
  interpolation between tiles of the regular grid; heading bins are folded by their max).
* ``PoseVolume``: metric matching's log-likelihood volume over (x, y, heading) in a window
  around the prior (``geoloc_ros.metric``); read at a particle by trilinear interpolation.

Particles outside what a measurement scored get the factor 1: no information.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np

TWO_PI = 2.0 * math.pi


def _wrap(a):
    return (np.asarray(a) + math.pi) % TWO_PI - math.pi


@dataclass
class MatchEval:
    """What a camera measurement's gate made of it."""

    ok: bool
    reason: str
    confidence: float
    lik: np.ndarray  # [M] likelihood factor per scored tile (TileSimilarity; empty for a volume)
    peak_z: float = float("nan")
    best: int = -1
    peak: Optional[Tuple[float, float, float]] = None  # (x, y, yaw) of the measurement's own best pose


def match_likelihood(xy: np.ndarray, scores: np.ndarray, p) -> MatchEval:
    """Turn a similarity map (positions ``xy`` [M, 2], cosine ``scores`` [M]) into a per-position
    likelihood factor and decide whether it may be used (the confidence gate).

    factor = (1 - floor) * M * softmax(score / T) + floor: 1 everywhere for a flat map, at most
    (1 - floor) * M + floor at a single sharp peak. Gate (all must hold): at least
    ``match_min_tiles`` finite scores; the best exceeds the median by ``match_min_peak_z`` robust
    sigmas (1.4826 MAD, at least 0.005); 1 - normalised entropy >= ``match_min_confidence``; no
    position farther than ``match_ambiguity_radius_m`` from the best scores within
    ``match_min_score_gap`` of it (ambiguous: two places look alike).
    """
    xy = np.asarray(xy, float).reshape(-1, 2)
    s = np.asarray(scores, float).reshape(-1)
    m = len(s)
    ones = np.ones(m)
    ok = np.isfinite(s) & np.all(np.isfinite(xy), axis=1)
    if ok.sum() < p.match_min_tiles:
        return MatchEval(False, "too few tiles", 0.0, ones)
    sv = s[ok]
    best_local = int(np.argmax(sv))
    best = int(np.flatnonzero(ok)[best_local])
    med = float(np.median(sv))
    mad = 1.4826 * float(np.median(np.abs(sv - med)))
    z = (float(sv[best_local]) - med) / max(mad, 0.005)
    e = np.exp((sv - sv[best_local]) / p.match_temperature)
    soft = e / e.sum()
    n = len(sv)
    lik_ok = (1.0 - p.match_uniform_floor) * n * soft + p.match_uniform_floor
    q = lik_ok / lik_ok.sum()
    ent = -float(np.sum(q * np.log(np.maximum(q, 1e-300))))
    conf = float(max(0.0, 1.0 - ent / math.log(n))) if n > 1 else 0.0
    lik = ones.copy()
    lik[ok] = lik_ok
    far = np.hypot(*(xy[ok] - xy[best]).T) > p.match_ambiguity_radius_m
    peak = (float(xy[best, 0]), float(xy[best, 1]), float("nan"))
    if z < p.match_min_peak_z:
        return MatchEval(False, "flat similarity map", conf, lik, z, best, peak)
    if conf < p.match_min_confidence:
        return MatchEval(False, "low confidence", conf, lik, z, best, peak)
    if far.any() and float(np.max(sv[far])) > float(sv[best_local]) - p.match_min_score_gap:
        return MatchEval(False, "ambiguous similarity map", conf, lik, z, best, peak)
    return MatchEval(True, "used", conf, lik, z, best, peak)


def grid_factor(px: np.ndarray, py: np.ndarray, tile_xy: np.ndarray, lik: np.ndarray, spacing: float) -> np.ndarray:
    """Likelihood factor at points (px, py), bilinearly interpolated between the four surrounding
    tiles of the regular grid of ``spacing`` (piecewise-constant nearest-tile values would let
    the cloud collapse into one cell). Missing grid nodes count as 1 (no information); so do
    points outside the scored area. Several tiles at one position (heading bins) keep the max."""
    px, py = np.asarray(px, float), np.asarray(py, float)
    n = len(px)
    tile_xy = np.asarray(tile_xy, float).reshape(-1, 2)
    lik = np.asarray(lik, float).reshape(-1)
    out = np.ones(n)
    if len(tile_xy) == 0:
        return out
    x0, y0 = tile_xy[:, 0].min(), tile_xy[:, 1].min()
    ti = np.rint((tile_xy[:, 0] - x0) / spacing).astype(np.int64)
    tj = np.rint((tile_xy[:, 1] - y0) / spacing).astype(np.int64)
    nx, ny = int(ti.max()) + 2, int(tj.max()) + 2
    if nx * ny > 4_000_000:  # not a local grid: nearest tile within the spacing (brute force)
        d2 = (px[:, None] - tile_xy[None, :, 0]) ** 2 + (py[:, None] - tile_xy[None, :, 1]) ** 2
        k = np.argmin(d2, axis=1)
        near = d2[np.arange(n), k] <= spacing * spacing
        out[near] = lik[k[near]]
        return out
    grid = np.ones((nx, ny))
    order = np.argsort(lik)  # ascending: the max of duplicates is written last
    grid[ti[order], tj[order]] = lik[order]
    u = (px - x0) / spacing
    v = (py - y0) / spacing
    inside = (u >= -0.5) & (u <= nx - 1.5) & (v >= -0.5) & (v <= ny - 1.5)
    u = np.clip(u[inside], 0.0, nx - 1.000001)
    v = np.clip(v[inside], 0.0, ny - 1.000001)
    i0, j0 = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    fu, fv = u - i0, v - j0
    i1, j1 = np.minimum(i0 + 1, nx - 1), np.minimum(j0 + 1, ny - 1)
    out[inside] = ((1 - fu) * (1 - fv) * grid[i0, j0] + fu * (1 - fv) * grid[i1, j0]
                   + (1 - fu) * fv * grid[i0, j1] + fu * fv * grid[i1, j1])
    return out


@dataclass
class TileSimilarity:
    """Retrieval's measurement: cosine scores of aerial tiles at positions ``xy`` on a grid of
    ``spacing`` metres (heading bins share positions)."""

    xy: np.ndarray
    scores: np.ndarray
    spacing: float
    kind: str = "retrieval"
    _ev: Optional[MatchEval] = field(default=None, repr=False)

    def evaluate(self, p) -> MatchEval:
        self._ev = match_likelihood(self.xy, self.scores, p)
        return self._ev

    def factor(self, x: np.ndarray, y: np.ndarray, yaw: np.ndarray) -> np.ndarray:
        if self._ev is None:
            raise RuntimeError("evaluate() the measurement before reading its factor")
        return grid_factor(x, y, self.xy, self._ev.lik, self.spacing)

    def update(self, f, check_consistency: bool = True):
        """Its update of the particle filter ``f`` (``core.filter.PoseFilter``): weights by the factor."""
        return f.update_factor(self.factor(f.x, f.y, f.yaw), check_consistency)


@dataclass
class PoseVolume:
    """Metric matching's measurement: ``logl[k, i, j]`` is the log-likelihood (up to a constant,
    temperature applied) of the vehicle at ``x = xs[j]``, ``y = ys[i]``, ``yaw = yaws[k]``.
    ``xs`` ascending and ``ys`` descending on one spacing; ``yaws`` ascending on one step."""

    xs: np.ndarray
    ys: np.ndarray
    yaws: np.ndarray
    logl: np.ndarray
    kind: str = "metric"
    uniform_floor: float = 0.05
    # the update is refused when less of the posterior than this lies near the volume's own peak (0: never;
    # ``core.filter.PoseFilter.update_volume``; the Localizer sets it from volume_min_posterior_at_peak)
    min_posterior_at_peak: float = 0.0
    _lik: Optional[np.ndarray] = field(default=None, repr=False)

    def __post_init__(self):
        self.xs = np.asarray(self.xs, float)
        self.ys = np.asarray(self.ys, float)
        self.yaws = np.asarray(self.yaws, float)
        L = np.asarray(self.logl, np.float64)
        if L.shape != (len(self.yaws), len(self.ys), len(self.xs)):
            raise ValueError(f"volume {L.shape} does not match its axes "
                             f"({len(self.yaws)}, {len(self.ys)}, {len(self.xs)})")
        fin = np.isfinite(L)
        lo = float(L[fin].min()) if fin.any() else 0.0
        self.logl = np.where(fin, L, lo)

    @property
    def res(self) -> float:
        return float(self.xs[1] - self.xs[0]) if len(self.xs) > 1 else 1.0

    @property
    def yaw_step(self) -> float:
        return float(self.yaws[1] - self.yaws[0]) if len(self.yaws) > 1 else 1.0

    def prob(self) -> np.ndarray:
        """The volume normalised to a probability over its cells (softmax of ``logl``)."""
        e = np.exp(self.logl - self.logl.max())
        return e / e.sum()

    def peak(self) -> Tuple[float, float, float]:
        k, i, j = np.unravel_index(int(np.argmax(self.logl)), self.logl.shape)
        return float(self.xs[j]), float(self.ys[i]), float(self.yaws[k])

    def near_peak(self, radius_m: float) -> Tuple[int, np.ndarray]:
        """(heading index of the peak, [Ny, Nx] mask of the cells within ``radius_m`` of it in x, y)."""
        k, i, j = np.unravel_index(int(np.argmax(self.logl)), self.logl.shape)
        dx = self.xs[None, :] - self.xs[j]
        dy = self.ys[:, None] - self.ys[i]
        return int(k), (dx * dx + dy * dy) <= radius_m * radius_m

    def mass_near_peak(self, radius_m: float, yaw_tol: float) -> float:
        """Probability within ``radius_m`` and ``yaw_tol`` (rad) of the peak: a sharpness measure."""
        k, near_xy = self.near_peak(radius_m)
        near_k = np.abs(_wrap(self.yaws - self.yaws[k])) <= yaw_tol + 1e-9
        return float(self.prob()[near_k][:, near_xy].sum())

    def evaluate(self, p) -> MatchEval:
        self.uniform_floor = float(p.volume_uniform_floor)
        x, y, yaw = self.peak()
        conf = self.mass_near_peak(p.volume_peak_radius_m, math.radians(p.volume_peak_yaw_deg))
        ok = conf >= p.volume_min_peak_mass
        return MatchEval(ok, "used" if ok else "flat likelihood volume", conf, np.ones(0), float("nan"), -1,
                         (x, y, yaw))

    def update(self, f, check_consistency: bool = True):
        """Its update of the particle filter ``f`` (``core.filter.PoseFilter``): a Bayes update on the
        volume's grid, the particles redrawn from the posterior (``update_volume``)."""
        return f.update_volume(self, check_consistency)

    def cell_factor(self) -> np.ndarray:
        """(1 - floor) * L / mean(L) + floor on every cell [R, Ny, Nx] (mean 1: no information)."""
        if self._lik is None:
            L = np.exp(self.logl - self.logl.max())
            self._lik = L / L.mean()
        return (1.0 - self.uniform_floor) * self._lik + self.uniform_floor

    def factor(self, x: np.ndarray, y: np.ndarray, yaw: np.ndarray) -> np.ndarray:
        """``cell_factor`` at each particle (trilinear), 1 outside the volume."""
        self.cell_factor()
        L = self._lik
        x, y, yaw = (np.asarray(v, float) for v in (x, y, yaw))
        out = np.ones(len(x))
        R, Ny, Nx = L.shape
        u = (x - self.xs[0]) / self.res
        v = (self.ys[0] - y) / self.res
        w = _wrap(yaw - self.yaws[0]) / self.yaw_step if R > 1 else np.zeros(len(x))
        inside = (u >= -0.5) & (u <= Nx - 0.5) & (v >= -0.5) & (v <= Ny - 0.5) & (w >= -0.5) & (w <= R - 0.5)
        if not inside.any():
            return out
        u = np.clip(u[inside], 0.0, Nx - 1.000001)
        v = np.clip(v[inside], 0.0, Ny - 1.000001)
        w = np.clip(w[inside], 0.0, max(R - 1.000001, 0.0))
        j0, i0, k0 = (np.floor(a).astype(np.int64) for a in (u, v, w))
        fu, fv, fw = u - j0, v - i0, w - k0
        j1, i1, k1 = np.minimum(j0 + 1, Nx - 1), np.minimum(i0 + 1, Ny - 1), np.minimum(k0 + 1, R - 1)

        def bil(k):
            return ((1 - fu) * (1 - fv) * L[k, i0, j0] + fu * (1 - fv) * L[k, i0, j1]
                    + (1 - fu) * fv * L[k, i1, j0] + fu * fv * L[k, i1, j1])

        val = (1 - fw) * bil(k0) + fw * bil(k1)
        out[inside] = (1.0 - self.uniform_floor) * val + self.uniform_floor
        return out
