"""The camera's integrity monitor: may this keyframe's camera measurement move the fix?

A user forgives "I cannot see"; not a confident wrong fix. Per keyframe the monitor asks, in order:

1. can the camera see the ground? (``ground_quality``: the share of the bird's-eye view that is
   lit, unsaturated and textured enough to match; night, fog, glare and occluders lower it);
2. is the metric volume sharp and unambiguous? (``volume_ambiguity``: the best pose farther than
   ``integrity_exclude_m`` from the peak, as a likelihood ratio to the peak: a repeated stretch of
   road, or a wrong stretch while the prior is wide, shows as a runner-up close to 1);
3. is the camera consistent with GNSS+odometry over a window, not one sample? (``InnovationWindow``:
   the sum of the last N normalised innovation squares against the chi-square quantile of 2N
   degrees of freedom);
4. do the camera's peaks follow the odometry? (the jump: this keyframe's peak against the previous
   peak moved by the filter's odometry prediction between them; a camera that sees the road gives a
   rigid track, one that matches lights, traffic or noise hops by metres, whatever the prior says);
5. after a (re)initialisation the camera is on probation: its measurements count only once K of
   them in a row agree with the prior, with each other and with the newest GNSS fix (within the
   receiver's reported covariance, bias included): a camera cannot earn trust on a wrong stretch of
   road that a wide or wrong prior happens to admit.

When a camera that sees (usable ground, one clear peak, peaks that follow the odometry) keeps putting
the vehicle somewhere the filter's covariance does not admit, one of the two is wrong and this monitor
cannot always tell which (a receiver biased 10 m between buildings, or a camera on the wrong stretch of
road): ``disagreement`` gives the median offset of the recent clean peaks when it lies outside the
filter's 95 % ellipse, and the Localizer widens the published covariance to cover both (the
covariance union of the two positions). The estimate does not move; its claimed accuracy does.

It also answers the other way round (``camera_holds``): a camera that has been consistent for a
while (recent, sharp, agreeing keyframes) must not be abandoned for a GNSS that drifts, so the
tracker does not re-anchor the filter onto GNSS while it holds.

numpy + stdlib only; the tracker and the Localizer own when it is asked.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import ClassVar, Deque, Dict, Optional, Tuple

import numpy as np

from .config import param, validate_fields


@dataclass(frozen=True)
class IntegrityParams:
    """The ``integrity_*`` settings of the camera integrity monitor (``LocalizerConfig`` extends this)."""

    _group: ClassVar[str] = "filter"

    camera_integrity: bool = param(True, "judge every camera measurement before it may move the fix (usable ground, "
                                   "ambiguity, consistency with GNSS+odometry over a window, probation after a "
                                   "re-initialisation); false: the filter's own per-sample gates only")
    integrity_window: int = param(6, "keyframes in the camera's innovation window (its chi-square test)", 2, 100)
    integrity_alpha: float = param(0.01, "false-alarm probability of the window test and of one keyframe's "
                                   "agreement test", 1e-6, 0.5)
    integrity_min_usable_ground: float = param(0.15, "the camera cannot see below this share of usable ground in its "
                                               "bird's-eye view (lit, unsaturated, textured)", 0.0, 1.0)
    integrity_exclude_m: float = param(3.0, "a runner-up peak counts when it lies farther than this from the peak (m)",
                                       0.5, 100.0)
    integrity_max_ambiguity: float = param(0.5, "drop a volume whose runner-up peak has at least this likelihood ratio "
                                           "to the peak", 0.0, 1.0)
    integrity_max_jump_m: float = param(2.0, "the camera's peaks must follow the odometry: the median jump over the "
                                        "window (peak vs the previous peak moved by the filter's prediction) above this "
                                        "drops the camera (m)", 0.1, 100.0)
    integrity_probation_keyframes: int = param(3, "after a (re)initialisation the camera is used once this many "
                                               "keyframes in a row agreed with the prior", 0, 100)
    integrity_hold_s: float = param(10.0, "a trusted camera that agreed within this (s) holds the fix: GNSS that "
                                    "disagrees does not re-anchor the filter ...", 0.0, 600.0)
    integrity_hold_max_s: float = param(60.0, "... for at most this long of continuous GNSS disagreement (s)",
                                        0.0, 3600.0)

    def __post_init__(self):
        validate_fields(self, "localizer")


def chi2_quantile(p: float, dof: int) -> float:
    """Chi-square quantile (Wilson-Hilferty; within ~1 % of the exact value for dof >= 2)."""
    k = float(dof)
    z = NormalDist().inv_cdf(p)
    return k * (1.0 - 2.0 / (9.0 * k) + z * math.sqrt(2.0 / (9.0 * k))) ** 3


@dataclass(frozen=True)
class GroundQuality:
    """What the camera's bird's-eye view offers to match: ``usable`` share of the BEV's cells (valid,
    neither too dark nor saturated, with local contrast), mean luminance and contrast of the valid
    cells, and a word for why it is poor (``dark``, ``low contrast``, ``occluded``) or ``ok``."""

    usable: float
    luminance: float
    contrast: float
    why: str


def usable_cells(mosaic: np.ndarray, valid: np.ndarray, *, dark: float = 18.0, bright: float = 250.0,
                 min_contrast: float = 2.0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mask the camera matches with, per cell of a BEV mosaic (``MetricResult.mosaic`` [h, w, 3]
    0-255 and its valid or weight map [h, w]) -> (luminance, lit, textured): lit cells are valid and
    neither too dark nor saturated (night, glare), textured ones also show a local gradient (3x3)
    above ``min_contrast`` grey levels (fog and wet glare flatten it)."""
    rgb = np.asarray(mosaic, np.float32)
    ok = np.asarray(valid) > 0
    lum = rgb.mean(axis=2) if rgb.ndim == 3 else np.zeros(ok.shape, np.float32)
    gy = np.zeros_like(lum)
    gx = np.zeros_like(lum)
    gy[1:-1] = 0.5 * (lum[2:] - lum[:-2])
    gx[:, 1:-1] = 0.5 * (lum[:, 2:] - lum[:, :-2])
    lit = ok & (lum > dark) & (lum < bright)
    return lum, lit, lit & (np.hypot(gx, gy) > min_contrast)


def ground_quality(mosaic: np.ndarray, valid: np.ndarray, *, dark: float = 18.0, bright: float = 250.0,
                   min_contrast: float = 2.0) -> GroundQuality:
    """Usable share of a BEV mosaic (``usable_cells``): a textured lit cell counts fully, an
    untextured lit one (uniform asphalt next to usable texture) half."""
    ok = np.asarray(valid) > 0
    n = ok.size
    if np.asarray(mosaic).ndim != 3 or not ok.any():
        return GroundQuality(0.0, 0.0, 0.0, "no ground in view")
    lum, lit, textured = usable_cells(mosaic, valid, dark=dark, bright=bright, min_contrast=min_contrast)
    usable = (textured.sum() + 0.5 * (lit & ~textured).sum()) / float(n)
    lv = lum[ok]
    mean, contrast = float(lv.mean()), float(lv.std())
    if mean <= dark * 1.5:
        why = "dark"
    elif contrast < 2.0 * min_contrast:
        why = "low contrast"
    elif ok.mean() < 0.3:
        why = "occluded"
    else:
        why = "ok"
    return GroundQuality(float(usable), mean, contrast, why)


def volume_ambiguity(vol, exclude_m: float) -> float:
    """Likelihood ratio of the best other local maximum farther than ``exclude_m`` from the volume's
    peak to the peak (0: a single peak; 1: a runner-up as likely as the winner; the shoulder of a broad
    peak is no runner-up). ``vol``: ``core.measurement.PoseVolume`` (log-likelihood over yaw, y, x)."""
    L = np.asarray(vol.logl, float)
    best_xy = L.max(axis=0)  # best heading per cell
    i, j = np.unravel_index(int(np.argmax(best_xy)), best_xy.shape)
    pad = np.pad(best_xy, 1, mode="edge")
    h, w = best_xy.shape
    local = np.ones_like(best_xy, bool)
    above_one = np.zeros_like(best_xy, bool)  # a plateau is no maximum
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di or dj:
                nb = pad[1 + di:1 + di + h, 1 + dj:1 + dj + w]
                local &= best_xy >= nb
                above_one |= best_xy > nb
    local &= above_one
    dx = vol.xs[None, :] - vol.xs[j]
    dy = vol.ys[:, None] - vol.ys[i]
    cand = local & (dx * dx + dy * dy > exclude_m * exclude_m) & (best_xy < best_xy[i, j] + 1.0)
    if not cand.any():
        return 0.0
    return float(math.exp(float(best_xy[cand].max()) - float(best_xy[i, j])))


def volume_covariance(vol) -> np.ndarray:
    """2x2 covariance of the volume's probability (over its cells, heading marginalised), floored at
    a cell's variance: the camera measurement's own spread for the innovation test."""
    P = vol.prob().sum(axis=0)
    X, Y = np.meshgrid(vol.xs, vol.ys)
    mx, my = float((P * X).sum()), float((P * Y).sum())
    dx, dy = X - mx, Y - my
    c = np.array([[(P * dx * dx).sum(), (P * dx * dy).sum()], [(P * dx * dy).sum(), (P * dy * dy).sum()]])
    return c + np.eye(2) * (vol.res ** 2 / 12.0)


class InnovationWindow:
    """The last ``n`` normalised innovation squares (2 dof each) and their chi-square test."""

    def __init__(self, n: int, alpha: float):
        self.n = int(n)
        self.alpha = float(alpha)
        self.nis: Deque[float] = deque(maxlen=self.n)

    def add(self, nis: float) -> None:
        self.nis.append(float(nis))

    def clear(self) -> None:
        self.nis.clear()

    @property
    def full(self) -> bool:
        return len(self.nis) == self.n

    def statistic(self) -> Tuple[float, float]:
        """(sum of the NIS in the window, the chi-square threshold for that many samples)."""
        k = len(self.nis)
        return float(sum(self.nis)), chi2_quantile(1.0 - self.alpha, 2 * max(k, 1))

    def failing(self) -> bool:
        s, th = self.statistic()
        return self.full and s > th


@dataclass(frozen=True)
class Verdict:
    use: bool
    reason: str  # "used" or why not, in words for /diagnostics
    key: str = "passed"  # the counter: passed, cannot see, ambiguous, peaks hop, inconsistent over a window,
    # on probation
    nis: float = float("nan")
    ambiguity: float = float("nan")
    usable: float = float("nan")


@dataclass
class IntegrityState:
    trust: str = "probation"  # probation | trusted | suspect
    agree_run: int = 0  # keyframes in a row that agreed with the prior
    last_agree_t: Optional[float] = None
    trusted_since: Optional[float] = None
    counts: Dict[str, int] = field(default_factory=dict)


class CameraIntegrity:
    """See the module docstring. ``p`` carries the ``integrity_*`` settings (``LocalizerConfig``)."""

    def __init__(self, p):
        self.p = p
        self.window = InnovationWindow(p.integrity_window, p.integrity_alpha)
        self.jumps: Deque[float] = deque(maxlen=int(p.integrity_window))
        self.state = IntegrityState()
        self.last: Optional[Verdict] = None
        self.quality: Optional[GroundQuality] = None
        self._prev: Optional[Tuple[np.ndarray, np.ndarray]] = None  # (last peak, the filter's mean after it)
        self._peak: Optional[np.ndarray] = None  # this keyframe's peak (None: no volume judged)
        # (t, peak - prior mean) of the recent keyframes that could see, had one clear peak and followed
        # the odometry; with the prior's covariance of the newest (disagreement)
        self.offsets: Deque[Tuple[float, np.ndarray]] = deque(maxlen=int(p.integrity_window))
        self._prior_cov: Optional[np.ndarray] = None

    def reset(self) -> None:
        """The filter was (re)initialised: the camera starts on probation again."""
        self.window.clear()
        self.jumps.clear()
        self.offsets.clear()
        self._prev = None
        self.state.trust = "probation"
        self.state.agree_run = 0
        self.state.trusted_since = None

    def after_update(self, mean) -> None:
        """The filter's mean after this keyframe's update (used or not): the start of the next jump."""
        if self._peak is not None:
            self._prev = (self._peak, np.asarray(mean, float)[:2].copy())

    def _jump(self, peak: np.ndarray, prior_mean) -> float:
        """How far this peak lies from the previous one moved by the filter's prediction since then."""
        if self._prev is None:
            return float("nan")
        p0, m0 = self._prev
        return float(np.hypot(*(peak - (p0 + (np.asarray(prior_mean, float)[:2] - m0)))))

    def _count(self, key: str) -> None:
        self.state.counts[key] = self.state.counts.get(key, 0) + 1

    def assess(self, t: float, quality: GroundQuality, vol, prior_mean, prior_cov, gnss=None) -> Verdict:
        """The verdict on one keyframe's camera measurement given the filter's prior (mean x, y and
        its 2x2 covariance) before the update, and the newest GNSS fix ``gnss`` = (z [2], R [2x2], the
        receiver's reported covariance) when one is recent."""
        p = self.p
        self.quality = quality
        self._peak = None
        if quality.usable < p.integrity_min_usable_ground:
            return self._done(Verdict(False, f"cannot see ({quality.why}, {100 * quality.usable:.0f} % usable ground)",
                                      "cannot see", usable=quality.usable))
        amb = volume_ambiguity(vol, p.integrity_exclude_m)
        x, y, _ = vol.peak()
        self._peak = np.array([x, y])
        jump = self._jump(self._peak, prior_mean)
        if math.isfinite(jump):
            self.jumps.append(jump)
        d = np.array([x - float(prior_mean[0]), y - float(prior_mean[1])])
        vcov = volume_covariance(vol)
        S = np.asarray(prior_cov, float)[:2, :2] + vcov
        try:
            nis = float(d @ np.linalg.solve(S, d))
        except np.linalg.LinAlgError:
            nis = float("inf")
        self.window.add(min(nis, 1e3))
        if amb > p.integrity_max_ambiguity:
            return self._done(Verdict(False, f"ambiguous (runner-up {amb:.2f} of the peak)", "ambiguous", nis, amb,
                                      quality.usable))
        follows = not (math.isfinite(jump) and jump > p.integrity_max_jump_m)
        if follows:
            self.offsets.append((t, d))
            self._prior_cov = np.asarray(prior_cov, float)[:2, :2].copy()
        gate = chi2_quantile(1.0 - p.integrity_alpha, 2)
        agrees = nis <= gate and follows
        if gnss is not None and self.state.trust != "trusted":  # earning trust: GNSS must not disagree
            z, R = np.asarray(gnss[0], float)[:2], np.asarray(gnss[1], float)[:2, :2]
            dz = self._peak - z
            Sg = R * (1.0 + float(getattr(p, "gnss_bias_scale", 1.0))) + vcov
            try:
                agrees = agrees and float(dz @ np.linalg.solve(Sg, dz)) <= gate
            except np.linalg.LinAlgError:
                pass
        st = self.state
        st.agree_run = st.agree_run + 1 if agrees else 0
        if agrees:
            st.last_agree_t = t
        if len(self.jumps) >= 3 and float(np.median(self.jumps)) > p.integrity_max_jump_m:
            st.trust, st.trusted_since = "suspect", None
            return self._done(Verdict(False, f"peaks do not follow the odometry (median jump "
                                             f"{float(np.median(self.jumps)):.1f} m)", "peaks hop", nis, amb,
                                      quality.usable))
        if self.window.failing():
            st.trust, st.trusted_since = "suspect", None
            s, th = self.window.statistic()
            return self._done(Verdict(False, f"inconsistent with GNSS+odometry over {self.window.n} keyframes "
                                             f"(NIS {s:.0f} > {th:.0f})", "inconsistent over a window", nis, amb, quality.usable))
        if st.trust != "trusted":
            if st.agree_run < p.integrity_probation_keyframes:
                return self._done(Verdict(False, f"on probation ({st.agree_run} of "
                                                 f"{p.integrity_probation_keyframes} agreeing keyframes)",
                                          "on probation", nis, amb, quality.usable))
            st.trust, st.trusted_since = "trusted", t
        return self._done(Verdict(True, "used", "passed", nis, amb, quality.usable))

    def _done(self, v: Verdict) -> Verdict:
        self._count(v.key)
        self.last = v
        return v

    def camera_holds(self, t: float, disagree_since: Optional[float] = None) -> bool:
        """A trusted camera that agreed with the fix within ``integrity_hold_s`` and was trusted BEFORE GNSS
        began to disagree (``disagree_since``; None: now): the receiver is the one that changed, so it is
        the one to doubt (do not re-anchor the filter onto it). A camera that became trusted while GNSS
        already disagreed (a start on a wrong stretch of road, behind a bad receiver) holds nothing."""
        st = self.state
        since = t if disagree_since is None else disagree_since
        return (st.trust == "trusted" and st.last_agree_t is not None and st.trusted_since is not None
                and st.trusted_since < since and t - st.last_agree_t <= self.p.integrity_hold_s)

    def disagreement(self, t: float) -> Optional[np.ndarray]:
        """The median offset (m, [2]) from the filter to the recent clean camera peaks, when at least
        half of ``integrity_window`` of them lie within ``integrity_hold_s`` and their median lies
        farther than ``integrity_exclude_m`` and outside the filter's 95 % ellipse; else None."""
        recent = [d for (ti, d) in self.offsets if t - ti <= self.p.integrity_hold_s]
        if len(recent) < max(2, (self.p.integrity_window + 1) // 2) or self._prior_cov is None:
            return None
        o = np.median(np.asarray(recent), axis=0)
        if float(np.hypot(*o)) <= self.p.integrity_exclude_m:
            return None
        try:
            m2 = float(o @ np.linalg.solve(self._prior_cov, o))
        except np.linalg.LinAlgError:
            return None
        return o if m2 > chi2_quantile(0.95, 2) else None

    def describe(self) -> str:
        """One line for /diagnostics: ``camera: trusted``, ``camera: degraded (cannot see (dark, 12 % usable
        ground))``, ``camera: degraded (ambiguous (runner-up 0.64 of the peak))``."""
        v = self.last
        if v is None:
            return "camera: no keyframe yet"
        if v.use:
            return f"camera: {self.state.trust}"
        return f"camera: degraded ({v.reason})"
