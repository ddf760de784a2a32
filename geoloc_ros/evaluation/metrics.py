"""Localization metrics against ground truth (numpy only).

Every position is in one metric frame (metres east/north on the map frame's grid axes). A
``Track`` is what one method published: a time series of positions with, optionally, a 2x2
covariance, a status per sample, keyframe flags and per-keyframe compute time. ``Truth`` is the
reference trajectory; it is interpolated linearly in time at each estimate's stamp (never
extrapolated, and not across gaps longer than ``max_gap_s``).

Definitions (docs/evaluation.md repeats them for users):

* horizontal error ``e_i = |p_i - truth(t_i)|`` of each published estimate; ``error_stats``:
  count, mean, median, p95, max, RMS.
* improvement of method B over reference A: ``ratio = stat_A / stat_B`` (> 1: B is better) for
  the mean, median and p95, and ``reduction_pct = 100 (1 - median_B / median_A)``.
* covariance honesty (2-D): ``d2_i = e_i^T C_i^-1 e_i`` (squared Mahalanobis distance of the truth
  from the estimate). NEES = mean of ``d2``; a consistent filter has NEES ~= 2 (chi-square with 2
  degrees of freedom), over-confident >> 2. ``inside_68`` / ``inside_95``: share of samples with
  ``d2 <= chi2_2(p) = -2 ln(1 - p)``, i.e. truth inside the published p-ellipse; should be ~68% /
  95%.
* availability on a regular time grid over the evaluation span (``grid_dt_s``): at each grid time
  the method is available if its latest estimate is at most ``max_age_s`` old and has a usable
  status; ``within_X_m_pct`` additionally needs that estimate's own error <= X m. Percent of grid
  times.
* status shares: at each grid time the status of the latest estimate (``none`` if there is none
  or it is older than ``max_age_s``); percent of grid times.
* time to first fix: stamp of the first estimate with a usable status minus the span start.
* recall@K of the true tile: share of keyframes where one of the top-K candidates lies within
  ``radius_m`` of the true position (keyframes with candidates and truth only).
* compute latency: statistics of the per-keyframe compute time (ms).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

USABLE_STATUSES = ("fix", "tracking", "degraded")
ALL_STATUSES = ("initialising", "tracking", "degraded", "lost")
THRESHOLDS_M = (5.0, 10.0, 25.0)
RECALL_KS = (1, 5, 10)


def chi2_2_quantile(p: float) -> float:
    """Quantile of the chi-square distribution with 2 degrees of freedom: ``-2 ln(1 - p)``."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p must be in [0, 1), got {p}")
    return -2.0 * math.log1p(-p)


@dataclass
class Truth:
    """Reference positions (metres) at increasing times (s)."""

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray

    def __post_init__(self):
        self.t = np.asarray(self.t, float).reshape(-1)
        self.x = np.asarray(self.x, float).reshape(-1)
        self.y = np.asarray(self.y, float).reshape(-1)
        if not (len(self.t) == len(self.x) == len(self.y)):
            raise ValueError("truth t, x, y must have the same length")
        keep = np.isfinite(self.t) & np.isfinite(self.x) & np.isfinite(self.y)
        order = np.argsort(self.t[keep], kind="stable")
        self.t, self.x, self.y = self.t[keep][order], self.x[keep][order], self.y[keep][order]

    def __len__(self) -> int:
        return len(self.t)

    def at(self, t, max_gap_s: float = 1.0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Linear interpolation at times ``t`` -> (x, y, valid). Invalid (NaN) outside the truth
        span and inside gaps between truth samples longer than ``max_gap_s``."""
        t = np.asarray(t, float).reshape(-1)
        n = len(self.t)
        if n == 0:
            nan = np.full(t.shape, np.nan)
            return nan, nan.copy(), np.zeros(t.shape, bool)
        x = np.interp(t, self.t, self.x)
        y = np.interp(t, self.t, self.y)
        j = np.clip(np.searchsorted(self.t, t, side="right"), 1, max(n - 1, 1))
        i = j - 1
        exact = np.isclose(t, self.t[np.clip(np.searchsorted(self.t, t), 0, n - 1)], rtol=0.0, atol=1e-9)
        inside = (t >= self.t[0] - 1e-9) & (t <= self.t[-1] + 1e-9) & np.isfinite(t)
        gap_ok = (self.t[np.minimum(j, n - 1)] - self.t[i]) <= max_gap_s if n > 1 else np.ones(t.shape, bool)
        valid = inside & (gap_ok | exact)
        x[~valid] = np.nan
        y[~valid] = np.nan
        return x, y, valid


@dataclass
class Track:
    """What one method published: positions (metres) at times, optionally with covariance etc."""

    name: str
    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    cov: Optional[np.ndarray] = None  # [N, 2, 2] m^2 (NaN where not published)
    status: Optional[np.ndarray] = None  # [N] str
    keyframe: Optional[np.ndarray] = None  # [N] bool
    compute_ms: Optional[np.ndarray] = None  # [N] float, NaN where not a keyframe

    def __post_init__(self):
        self.t = np.asarray(self.t, float).reshape(-1)
        n = len(self.t)
        self.x = np.asarray(self.x, float).reshape(n)
        self.y = np.asarray(self.y, float).reshape(n)
        if self.cov is not None:
            self.cov = np.asarray(self.cov, float).reshape(n, 2, 2)
        if self.status is not None:
            self.status = np.asarray(self.status, dtype=object).reshape(n)
        if self.keyframe is not None:
            self.keyframe = np.asarray(self.keyframe, bool).reshape(n)
        if self.compute_ms is not None:
            self.compute_ms = np.asarray(self.compute_ms, float).reshape(n)
        if n > 1 and np.any(np.diff(self.t) < 0):
            raise ValueError(f"track {self.name}: times must be non-decreasing")

    def __len__(self) -> int:
        return len(self.t)

    def usable(self, statuses: Sequence[str] = USABLE_STATUSES) -> np.ndarray:
        """[N] bool: samples whose status counts as a published fix (all when there is no status)."""
        if self.status is None:
            return np.ones(len(self), bool)
        return np.isin(self.status.astype(str), list(statuses))


# ---------------------------------------------------------------------------------------
# elementary statistics


def _f(v) -> Optional[float]:
    v = float(v)
    return v if math.isfinite(v) else None


def error_stats(err) -> Dict[str, Optional[float]]:
    """count, mean, median, p95, max and RMS of the finite values of ``err`` (None when empty)."""
    e = np.asarray(err, float).reshape(-1)
    e = e[np.isfinite(e)]
    if e.size == 0:
        return {"n": 0, "mean": None, "median": None, "p95": None, "max": None, "rms": None}
    return {"n": int(e.size), "mean": _f(e.mean()), "median": _f(np.median(e)), "p95": _f(np.percentile(e, 95)),
            "max": _f(e.max()), "rms": _f(np.sqrt(np.mean(e * e)))}


def improvement(ref: Dict[str, Optional[float]], new: Dict[str, Optional[float]]) -> Dict[str, Optional[float]]:
    """How much better ``new`` is than ``ref`` (both from ``error_stats``): ratios ref/new (> 1 =
    better) for mean, median and p95, and the median error reduction in percent."""
    out: Dict[str, Optional[float]] = {}
    for k in ("mean", "median", "p95"):
        a, b = ref.get(k), new.get(k)
        out[f"{k}_ratio"] = _f(a / b) if a is not None and b is not None and b > 0 else None
    a, b = ref.get("median"), new.get("median")
    out["median_reduction_pct"] = _f(100.0 * (1.0 - b / a)) if a is not None and b is not None and a > 0 else None
    return out


def horizontal_errors(track: Track, truth: Truth, max_gap_s: float = 1.0):
    """-> (err [N], dx [N], dy [N]) of each estimate against truth at its stamp (NaN without truth)."""
    tx, ty, valid = truth.at(track.t, max_gap_s)
    dx, dy = track.x - tx, track.y - ty
    err = np.hypot(dx, dy)
    err[~valid] = np.nan
    return err, dx, dy


def nees_2d(dx, dy, cov) -> np.ndarray:
    """Squared Mahalanobis distances ``e^T C^-1 e`` per sample; NaN where the covariance is
    missing, not finite or not positive definite, or the error is not finite."""
    dx = np.asarray(dx, float).reshape(-1)
    dy = np.asarray(dy, float).reshape(-1)
    c = np.asarray(cov, float).reshape(-1, 2, 2)
    a, b, d = c[:, 0, 0], 0.5 * (c[:, 0, 1] + c[:, 1, 0]), c[:, 1, 1]
    det = a * d - b * b
    ok = np.isfinite(a) & np.isfinite(b) & np.isfinite(d) & (a > 0) & (d > 0) & (det > 0) & np.isfinite(dx) & \
        np.isfinite(dy)
    out = np.full(dx.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = (d * dx * dx - 2.0 * b * dx * dy + a * dy * dy) / det
    out[ok] = q[ok]
    return out


def covariance_honesty(dx, dy, cov) -> Dict[str, Optional[float]]:
    """NEES (2-D) and the shares of truth inside the 68% / 95% ellipses (percent)."""
    d2 = nees_2d(dx, dy, cov)
    d2 = d2[np.isfinite(d2)]
    if d2.size == 0:
        return {"n": 0, "nees_mean": None, "nees_median": None, "inside_68_pct": None, "inside_95_pct": None,
                "expected": {"nees_mean": 2.0, "inside_68_pct": 68.0, "inside_95_pct": 95.0}}
    return {"n": int(d2.size), "nees_mean": _f(d2.mean()), "nees_median": _f(np.median(d2)),
            "inside_68_pct": _f(100.0 * np.mean(d2 <= chi2_2_quantile(0.68))),
            "inside_95_pct": _f(100.0 * np.mean(d2 <= chi2_2_quantile(0.95))),
            "expected": {"nees_mean": 2.0, "inside_68_pct": 68.0, "inside_95_pct": 95.0}}


# ---------------------------------------------------------------------------------------
# time-based metrics


def time_grid(t_start: float, t_end: float, dt: float = 0.1) -> np.ndarray:
    """Regular evaluation times in [t_start, t_end) (at least one)."""
    if not (math.isfinite(t_start) and math.isfinite(t_end)) or dt <= 0:
        raise ValueError("time grid needs a finite span and dt > 0")
    n = max(1, int(math.floor((t_end - t_start) / dt + 1e-9)))
    return t_start + dt * np.arange(n)


def latest_index(t_samples, grid, max_age_s: float) -> np.ndarray:
    """Index of the latest sample at or before each grid time, -1 if none or older than ``max_age_s``."""
    ts = np.asarray(t_samples, float)
    g = np.asarray(grid, float)
    if ts.size == 0:
        return np.full(g.shape, -1, np.int64)
    i = np.searchsorted(ts, g + 1e-9, side="right") - 1
    ok = (i >= 0)
    ok[ok] &= (g[ok] - ts[i[ok]]) <= max_age_s + 1e-9
    return np.where(ok, i, -1).astype(np.int64)


def availability(track: Track, err, grid, *, max_age_s: float = 2.0,
                 thresholds_m: Iterable[float] = THRESHOLDS_M,
                 statuses: Sequence[str] = USABLE_STATUSES) -> Dict[str, Optional[float]]:
    """Percent of grid times with a usable estimate at most ``max_age_s`` old, and with that
    estimate's error within each threshold (an estimate without truth counts as not within)."""
    g = np.asarray(grid, float)
    if g.size == 0:
        return {"available_pct": None, **{f"within_{_m(th)}m_pct": None for th in thresholds_m}}
    use = track.usable(statuses)
    idx = latest_index(track.t[use], g, max_age_s)
    e = np.asarray(err, float)[use]
    have = idx >= 0
    out: Dict[str, Optional[float]] = {"available_pct": _f(100.0 * have.mean())}
    held = np.full(g.shape, np.nan)
    held[have] = e[idx[have]]
    for th in thresholds_m:
        with np.errstate(invalid="ignore"):
            out[f"within_{_m(th)}m_pct"] = _f(100.0 * np.mean(have & (held <= th)))
    return out


def _m(th: float) -> str:
    return f"{th:g}"


def status_shares(track: Track, grid, *, max_age_s: float = 2.0) -> Dict[str, float]:
    """Percent of grid times in each status of the latest estimate ("none": no estimate or too old)."""
    g = np.asarray(grid, float)
    idx = latest_index(track.t, g, max_age_s)
    status = track.status if track.status is not None else np.full(len(track), "fix", dtype=object)
    labels = np.array(["none"] * g.size, dtype=object)
    labels[idx >= 0] = status[idx[idx >= 0]]
    present = [str(s) for s in dict.fromkeys(status.tolist())]
    if set(present) <= {"fix"}:  # raw GNSS: a fix or nothing
        names = ["fix", "none"]
    else:
        names = list(dict.fromkeys([*ALL_STATUSES, *present, "none"]))
    if g.size == 0:
        return {n: 0.0 for n in names}
    return {n: float(100.0 * np.mean(labels == n)) for n in names}


def time_to_first_fix(track: Track, t0: float, statuses: Sequence[str] = USABLE_STATUSES) -> Optional[float]:
    """Seconds from ``t0`` to the first estimate with a usable status (None if there is none)."""
    use = track.usable(statuses)
    if not np.any(use):
        return None
    return float(track.t[use][0] - t0)


def recall_at_k(cand_x: Sequence[np.ndarray], cand_y: Sequence[np.ndarray], truth_x, truth_y, radius_m: float,
                ks: Iterable[int] = RECALL_KS) -> Dict[str, Optional[float]]:
    """Share (percent) of queries whose top-K candidates include one within ``radius_m`` of the
    truth. Candidates are ordered best first; queries without truth or candidates are skipped."""
    tx = np.asarray(truth_x, float).reshape(-1)
    ty = np.asarray(truth_y, float).reshape(-1)
    ranks: List[float] = []
    for cx, cy, x, y in zip(cand_x, cand_y, tx, ty):
        cx = np.asarray(cx, float).reshape(-1)
        cy = np.asarray(cy, float).reshape(-1)
        ok = np.isfinite(cx) & np.isfinite(cy)
        if not (math.isfinite(x) and math.isfinite(y)) or not np.any(ok):
            continue
        d = np.hypot(cx - x, cy - y)
        hit = np.nonzero(ok & (d <= radius_m))[0]
        ranks.append(float(hit[0] + 1) if hit.size else math.inf)
    r = np.asarray(ranks, float)
    out: Dict[str, Optional[float]] = {"n": int(r.size), "radius_m": float(radius_m)}
    for k in ks:
        out[f"r@{k}"] = _f(100.0 * np.mean(r <= k)) if r.size else None
    return out


def latency_stats(ms) -> Dict[str, Optional[float]]:
    """count, mean, median, p95, max of per-keyframe compute times (ms)."""
    s = error_stats(ms)
    return {k: s[k] for k in ("n", "mean", "median", "p95", "max")}


# ---------------------------------------------------------------------------------------
# one track, everything


def evaluate_track(track: Track, truth: Optional[Truth], *, t_start: float, t_end: float, grid_dt_s: float = 0.1,
                   max_age_s: float = 2.0, max_gap_s: float = 1.0,
                   thresholds_m: Iterable[float] = THRESHOLDS_M) -> Dict[str, object]:
    """All per-track metrics over the span [t_start, t_end]. Without truth, only what does not
    need it (availability of any estimate, status shares, time to first fix, latency)."""
    grid = time_grid(t_start, t_end, grid_dt_s) if t_end > t_start else np.array([t_start])
    use = track.usable()
    out: Dict[str, object] = {"samples": int(len(track)), "usable_samples": int(use.sum())}
    if truth is not None and len(truth):
        err, dx, dy = horizontal_errors(track, truth, max_gap_s)
        err_u = np.where(use, err, np.nan)
        out["error_m"] = error_stats(err_u)
        out["availability"] = availability(track, err, grid, max_age_s=max_age_s, thresholds_m=thresholds_m)
        if track.cov is not None:
            out["covariance"] = covariance_honesty(np.where(use, dx, np.nan), dy, track.cov)
    else:
        out["availability"] = {"available_pct": availability(track, np.full(len(track), np.nan), grid,
                                                             max_age_s=max_age_s, thresholds_m=())["available_pct"]}
    out["status_pct"] = status_shares(track, grid, max_age_s=max_age_s)
    out["ttff_s"] = time_to_first_fix(track, t_start)
    if track.compute_ms is not None and track.keyframe is not None and np.any(track.keyframe):
        out["compute_ms"] = latency_stats(track.compute_ms[track.keyframe])
    return out


def truth_yaw(truth: Truth, t, max_gap_s: float = 1.0) -> np.ndarray:
    """Direction of travel of the truth (rad, grid axes) at times ``t`` (NaN where unknown or
    standing still)."""
    t = np.asarray(t, float).reshape(-1)
    if len(truth) < 2:
        return np.full(t.shape, np.nan)
    dt = 0.5
    xa, ya, va = truth.at(t - dt, max_gap_s)
    xb, yb, vb = truth.at(t + dt, max_gap_s)
    d = np.hypot(xb - xa, yb - ya)
    out = np.arctan2(yb - ya, xb - xa)
    out[~(va & vb) | ~(d > 0.2)] = np.nan
    return out


def along_across(t, x, y, truth: Truth, max_gap_s: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
    """(longitudinal, lateral) error (m) of positions against the truth, in the truth's direction
    of travel (longitudinal positive ahead, lateral positive to the left)."""
    tx, ty, _ = truth.at(t, max_gap_s)
    yaw = truth_yaw(truth, t, max_gap_s)
    dx, dy = np.asarray(x, float) - tx, np.asarray(y, float) - ty
    c, s = np.cos(yaw), np.sin(yaw)
    return c * dx + s * dy, -s * dx + c * dy


def along_across_stats(t, x, y, truth: Truth) -> Dict[str, Dict[str, Optional[float]]]:
    lon, lat = along_across(t, x, y, truth)
    return {"longitudinal": error_stats(np.abs(lon)), "lateral": error_stats(np.abs(lat))}


def camera_recall(peaks: np.ndarray, truth: Truth, radii_m=(1.0, 3.0, 5.0), degs=(1.0, 3.0, 5.0)) -> Dict[str, object]:
    """The camera's own measurement before the filter: ``peaks`` [N, >=4] rows (t, x, y, yaw, ...).
    Lateral / longitudinal recall at ``radii_m`` and heading recall at ``degs`` (percent of keyframes
    with a truth), plus the share of keyframes whose measurement the filter used (column 4)."""
    P = np.asarray(peaks, float).reshape(-1, peaks.shape[1] if np.ndim(peaks) == 2 else 4)
    lon, lat = along_across(P[:, 0], P[:, 1], P[:, 2], truth)
    yaw_t = truth_yaw(truth, P[:, 0])
    dyaw = np.degrees(np.abs((P[:, 3] - yaw_t + np.pi) % (2 * np.pi) - np.pi))
    ok = np.isfinite(lon) & np.isfinite(lat) & np.isfinite(dyaw)
    n = int(ok.sum())
    out: Dict[str, object] = {"keyframes": int(len(P)), "with_truth": n}
    if n:
        for r in radii_m:
            out[f"lateral_within_{_m(r)}_pct"] = float(100.0 * np.mean(np.abs(lat[ok]) <= r))
            out[f"longitudinal_within_{_m(r)}_pct"] = float(100.0 * np.mean(np.abs(lon[ok]) <= r))
        for d in degs:
            out[f"heading_within_{d:g}deg_pct"] = float(100.0 * np.mean(dyaw[ok] <= d))
        out["lateral_m"] = error_stats(np.abs(lat[ok]))
        out["longitudinal_m"] = error_stats(np.abs(lon[ok]))
    if P.shape[1] > 4:
        out["used_pct"] = float(100.0 * np.mean(P[:, 4] > 0.5))
    return out
