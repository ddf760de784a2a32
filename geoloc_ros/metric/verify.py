"""Retrieval proposes, metric matching verifies: global relocalisation without a prior.

The hloc pattern (global retrieval, then local matching) for a car with no GNSS (a cold start in a
car park), a lost filter, or a GNSS fix that jumped somewhere the odometry cannot explain (kidnap):

1. **propose**: the global top tiles (``TileIndex.search`` without a prior) of the sequence
   descriptors of the last ``reloc_vote_keyframes`` keyframes, moved to the current pose with the
   odometry, vote for places (``vote_places``, run by the Localizer); the best ``reloc_k`` become
   candidate poses (place, heading bin). Candidates closer than ``reloc_window_m`` to a
   better-ranked one share its window (one place, scored once).
2. **score**: the current BEV mosaic (``MetricMatcher.mosaic``) is matched against the orthophoto in
   a window of +- ``reloc_window_m`` around each candidate, over the candidate's heading bin widened
   by ``reloc_heading_margin_deg`` (``MetricMatcher.score``: the same FFT correlation as tracking). A
   candidate's score is its window's best cosine; the places' best scores are ranked.
3. **verify** (one keyframe does not decide: the best cosine of a window over thousands of poses is
   high almost anywhere, measured on the validation towns): the places whose score reaches
   ``reloc_min_score`` (*sharp*), best ``reloc_hypotheses`` of them, are followed with the odometry
   over the next keyframes (a short multi-hypothesis track): each is moved by the odometry between
   keyframes and scored again in a small window around its prediction; one whose peak lands farther
   than ``reloc_track_tol_m`` from the prediction no longer *follows the odometry* and cannot win
   (it stays a rival). While the mosaic still holds ground that was seen at the proposal, a false
   place follows the odometry as well as the true one (its peak was fitted to that very ground):
   measured on validation cold starts with the truth added, 15-25 of 25-30 false places still
   followed after 8 keyframes (40 m), 0-20 after 12, the true place throughout. So the winner (the
   consistent hypothesis with the highest score summed over the track) is accepted only once the
   track has covered ``reloc_fresh_m`` of driving (the proposal's ground has left the mosaic), it
   is the *only* hypothesis that still follows the odometry (survivors within ``reloc_cluster_m``
   aside: they join the filter's initial mixture) and has been for ``reloc_outlive_m``, its score
   margin over every rival, summed over the track, reaches ``reloc_evidence`` (the ratio test made
   sequential) and its mean score over the track reaches ``reloc_accept_score`` (below it the camera
   sees too little to tell places apart: at night and in dusk rain false places won with 0.44-0.49).
   Undecided after
   ``reloc_max_keyframes``: refused as ambiguous; no hypothesis follows the odometry: refused.
   What this cannot catch: when retrieval did not propose the truth, a look-alike road can outlive
   every other place (measured on validation town 17).
4. **the road network** (``_road_test``, with an index whose tiles cover the roads): the camera only
   sees the last ~50 m, but the odometry remembers the drive. Each place still following places the
   odometry path of the last ``reloc_road_history_m`` on the map with its pose; one whose path passes
   farther than ``reloc_road_tol_m`` beyond the index's reach from every tile centre (inside the
   index's extent: beyond it, e.g. the orthophoto's rim where no whole tile fits, nothing is known)
   has the car driving through buildings: it no longer follows and is no rival. Measured on
   validation town 17 (a cold start that relocalised 183 m off without it): the truth's path stayed
   within 8 m of a tile centre over 630 m of driving; the false winner's passed 13 m from every
   centre, most long-lived false places 20-120 m. It needs the car to have driven on indexed roads
   (a car park is not one: the fix waits until it is ``reloc_road_history_m`` behind). A look-alike
   whose path fits the streets for 150-340 m still wins sometimes (docs/evaluation.md), so
   ``reloc_verify`` stays off by default.

Only then the filter initialises at the verified pose (``PoseTracker.init_verified``) with an honest
covariance. No verification, no fix: each refusal is counted with its reason.

numpy + the matcher (OpenCV); no torch, no faiss (the Localizer does the global search), no rclpy.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.config import param as _f
from ..core.config import validate_fields
from ..core.errors import InvalidArgument
from .correlate import rigid
from .features import GradientFeatures

log = logging.getLogger(__name__)

__all__ = ["RelocParams", "Hypothesis", "RelocVerdict", "RelocVerifier", "check_reloc", "odom_moved", "road_lookup",
           "vote_places"]

REJECT_REASONS = ("no candidates", "outside the orthophoto", "not sharp", "ambiguous", "track disagrees with odometry",
                  "no odometry")


@dataclass(frozen=True)
class RelocParams:
    """The ``reloc_*`` settings of verified relocalisation (``LocalizerConfig`` extends this)."""

    _owner: ClassVar[str] = "reloc"
    _group: ClassVar[str] = "retrieval"

    reloc_verify: bool = _f(False, "with both an orthophoto and a tile index: global retrieval proposes candidates and "
                            "metric matching verifies them (the only place that follows the odometry over fresh "
                            "ground, on the index's roads) before the filter initialises; false (default: a look-alike "
                            "road can still outlive every other place, 1 false relocalisation in 8 unseen held-out cold "
                            "starts and 1 in 12 validation ones, docs/evaluation.md): the unverified seeding, published "
                            "lost")
    reloc_k: int = _f(30, "places proposed per verified relocalisation attempt: the best of the pooled retrieval vote "
                      "(reloc_vote_keyframes 1: the newest descriptor's top tiles)", 1, 1000)
    reloc_vote_keyframes: int = _f(10, "keyframes whose global retrieval results, moved to the current pose with the "
                                   "odometry, are pooled into one vote over places (1: the newest descriptor alone)",
                                   1, 50)
    reloc_vote_k: int = _f(100, "tiles retrieved per keyframe for the vote", 1, 5000)
    reloc_vote_temperature: float = _f(0.03, "a retrieved tile's vote weight: exp((cosine - that keyframe's best "
                                       "cosine) / this)", 0.001, 10.0)
    reloc_window_m: float = _f(10.0, "metric window half-size around each candidate (m); closer candidates share one",
                               1.0, 100.0)
    reloc_heading_margin_deg: float = _f(10.0, "headings scored per candidate: its tile's heading bin +- half a bin + "
                                         "this (deg; 180: every heading)", 0.0, 180.0)
    reloc_yaw_step_deg: float = _f(2.0, "heading step of the candidates' volumes (deg)", 0.5, 20.0)
    reloc_min_score: float = _f(0.30, "sharp: a proposed place's cosine score must reach this to be followed", 0.0, 1.0)
    reloc_accept_score: float = _f(0.52, "the winner's mean cosine over its track must reach this: below, the camera sees "
                                   "too little to tell places apart, no fix ('I cannot see'). Validation: the truth's "
                                   "mean over its track 0.52-0.66 (truth-added tracks on towns 8, 11, 17), verified "
                                   "true winners 0.53-0.61, false ones 0.44-0.49 (night, dusk rain)", 0.0, 1.0)
    reloc_max_ratio: float = _f(0.80, "with reloc_confirm_keyframes 0 only (one keyframe decides, no track): the best "
                                "other place's score at most this share of the winner's",
                                0.0, 1.0)
    reloc_distinct_m: float = _f(6.0, "peaks farther apart than this are different places (m)", 0.5, 100.0)
    reloc_hypotheses: int = _f(30, "places (best first) followed with the odometry before one is accepted", 1, 50)
    reloc_confirm_keyframes: int = _f(3, "keyframes the winner must follow the odometry before the filter "
                                      "initialises there", 0, 20)
    reloc_fresh_m: float = _f(60.0, "driving (odometry) the track must cover before a place is accepted: the ground "
                              "the places were proposed on must have left the mosaic first (the BEV's reach plus "
                              "the mosaic's length: 48 m by default), since a false place keeps matching that ground "
                              "as well as the true one (m)", 0.0, 1000.0)
    reloc_outlive_m: float = _f(50.0, "the winner must have been the only place following the odometry (apart from "
                                "its reloc_cluster_m neighbours) over this much driving: a false place can outlive the "
                                "others by a turn or two (validation town 17: one alone for 35 m before it died); the "
                                "true one, where proposed, outlived every other place (m)", 0.0, 1000.0)
    reloc_cluster_m: float = _f(15.0, "hypotheses that still follow the odometry within this of the winner are the same "
                                "place known to a lane or a dash (a lateral or longitudinal alias): they do not block "
                                "the fix, the filter starts as a mixture over them (weight exp(-margin / "
                                "reloc_evidence)) and tracking decides; farther ones block it (m)", 0.0, 100.0)
    reloc_evidence: float = _f(0.6, "the winner's cosine margin over its closest rival, summed over the track, must "
                               "reach this (the ratio test, sequential: a clear margin decides in few keyframes, a "
                               "thin one needs more)", 0.0, 100.0)
    reloc_max_keyframes: int = _f(40, "undecided after this many keyframes of tracking: refused as ambiguous", 1, 100)
    reloc_track_tol_m: float = _f(2.0, "a tracked hypothesis whose re-matched peak lands farther than this from its "
                                  "odometry prediction no longer follows it: it cannot win, it stays a rival (m)", 0.1, 50.0)
    reloc_road_tol_m: float = _f(4.0, "with a tile index whose tiles cover the roads: a hypothesis whose odometry path "
                                 "(the last reloc_road_history_m, placed by the hypothesis' pose) passes farther than "
                                 "this beyond the index's own reach (0.71 x its spacing_m) from every tile centre "
                                 "leaves the road network: it no longer follows the odometry. A look-alike road that "
                                 "matches the camera for 100 m rarely lies where the whole drive fits the roads "
                                 "(validation town 17: the truth's path within 8 m of a tile centre over 630 m, a false "
                                 "winner's 13 m). Negative: off (m)", -1.0, 100.0)
    reloc_road_yaw_deg: float = _f(3.0, "the road test tries the hypothesis' heading +- this (0.5 deg steps) and keeps "
                                   "the best fit: 300 m of path swings 5 m at its far end per degree (deg)", 0.0, 20.0)
    reloc_road_history_m: float = _f(300.0, "odometry path the road test places on the map (m). The car must have "
                                     "driven on indexed roads over that much: a start in a car park or on a road the "
                                     "index lacks delays the fix until it is this far behind", 0.0, 5000.0)
    reloc_retry_s: float = _f(2.0, "after a refused attempt, wait this long before the next global search (s)",
                              0.0, 600.0)
    reloc_init_pos_std_m: float = _f(1.5, "position sigma the filter initialises with at a verified pose, at least (the "
                                     "winner's ground spread when wider) (m)",
                                     0.05, 100.0)
    reloc_init_yaw_std_deg: float = _f(3.0, "heading sigma the filter initialises with at a verified pose (deg)",
                                       0.1, 180.0)
    reloc_suspect_s: float = _f(120.0, "after GNSS re-anchored the filter (a jump the odometry did not make), verify "
                                "the estimate by global relocalisation until the camera matches near it, for at most "
                                "this long (s)", 0.0, 3600.0)
    reloc_kidnap_m: float = _f(15.0, "a verified pose farther than this (plus 3 position sigmas) from a credible "
                               "estimate after a GNSS jump moves the filter there (kidnap) (m)", 1.0, 10000.0)

    def __post_init__(self):
        validate_fields(self, "localizer")
        check_reloc(self)


def check_reloc(p) -> None:
    """Cross-field checks (shared with LocalizerConfig)."""
    if p.reloc_track_tol_m >= p.reloc_window_m:
        raise InvalidArgument(f"localizer.reloc_track_tol_m ({p.reloc_track_tol_m}) must be below reloc_window_m "
                              f"({p.reloc_window_m})")


@dataclass
class Hypothesis:
    """A candidate place: its best pose (map frame), its cosine score now and over the track, and
    the odometry pose (x, y, yaw) it was last scored at."""

    x: float
    y: float
    yaw: float
    score: float
    scores: List[float] = field(default_factory=list)
    odom: Optional[Tuple[float, float, float]] = None
    other: float = -math.inf  # the best score of its own window farther than reloc_distinct_m from its peak
    offsets: List[float] = field(default_factory=list)  # per track step: its peak vs its odometry prediction (m)
    consistent: bool = True  # every peak of the track landed within reloc_track_tol_m of its prediction
    road_m: float = math.nan  # its odometry path's farthest distance beyond the index's reach (road test)
    off_road: bool = False  # the road test failed: the path leaves the indexed roads
    road_path: Optional[np.ndarray] = None  # the odometry path as the road test placed it, best heading [n, 2]
    track: List[Tuple[float, float, float, float, float]] = field(default_factory=list)  # (x, y, odom x, y, yaw)

    def track_yaw(self, min_length_m: float = 10.0) -> Optional[float]:
        """The heading the track implies: the rotation that best maps the odometry's path onto the
        peaks' path (least squares), applied to the newest odometry yaw; None for a short track."""
        if len(self.track) < 3:
            return None
        P = np.asarray(self.track, float)
        a, b = P[:, 2:4] - P[0, 2:4], P[:, 0:2] - P[0, 0:2]  # odometry path, map path
        if float(np.hypot(*a[-1])) < min_length_m:
            return None
        th = math.atan2(float(np.sum(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0])), float(np.sum(a * b)))
        return _wrap(float(P[-1, 4]) + th)

    @property
    def mean_score(self) -> float:
        return float(np.mean(self.scores)) if self.scores else self.score


@dataclass
class RelocVerdict:
    """What one keyframe of verification gave: ``state`` 'verified' (``pose`` is the filter's new
    pose), 'tracking' (hypotheses kept, undecided) or 'rejected' (``reason``); the places scored."""

    state: str
    reason: str = ""
    pose: Optional[Tuple[float, float, float]] = None
    best: float = float("nan")
    runner_up: float = float("nan")
    candidates: int = 0
    hypotheses: List[Hypothesis] = field(default_factory=list)
    evidence: float = float("nan")  # the winner's score margin over its closest rival, summed over the track
    following: int = 0  # hypotheses whose every peak followed the odometry
    off_road: int = 0  # hypotheses whose odometry path left the indexed roads (the road test)
    modes: List[Tuple[float, float, float, float]] = field(default_factory=list)  # verified: (x, y, yaw, weight)
    travel_m: float = float("nan")  # odometry driven since the proposal
    alone_m: float = 0.0  # driving since the winner became the only place following the odometry
    spread_m: float = float("nan")  # verified: the largest sigma of the winner's ground (the filter's start)

    def describe(self) -> str:
        """``relocalising: 12 candidates, best 0.81 vs 0.34`` (diagnostics, the estimate's reason)."""
        head = {"verified": "relocalised (verified)", "tracking": "relocalising",
                "rejected": "relocalisation refused"}[self.state]
        s = f"{head}: {self.candidates} candidates, best {self.best:.2f} vs {self.runner_up:.2f}"
        if self.state == "tracking":
            s += f", {len(self.hypotheses)} hypotheses followed"
            if math.isfinite(self.travel_m):
                s += f", {self.following} follow the odometry after {self.travel_m:.0f} m"
                if self.alone_m > 0:
                    s += f" (the best alone for {self.alone_m:.0f} m)"
                if self.off_road:
                    s += f", {self.off_road} left the indexed roads"
        if math.isfinite(self.evidence):
            s += f", margin {self.evidence:.2f}"
        if math.isfinite(self.spread_m):
            s += f", its ground spread {self.spread_m:.1f} m"
        if self.reason:
            s += f" ({self.reason})"
        return s


def odom_delta(a: Tuple[float, float, float], b: Tuple[float, float, float]) -> np.ndarray:
    """The motion from odometry pose ``a`` to ``b`` in ``a``'s vehicle frame (3x3)."""
    return np.linalg.inv(rigid(*a)) @ rigid(*b)


def odom_moved(pose: Tuple[float, float, float], a: Tuple[float, float, float],
               b: Tuple[float, float, float]) -> Tuple[float, float, float]:
    """Map pose ``pose`` (x, y, yaw), held at odometry pose ``a``, moved by the odometry to ``b``."""
    P = rigid(*pose) @ odom_delta(a, b)
    return float(P[0, 2]), float(P[1, 2]), math.atan2(P[1, 0], P[0, 0])


def _wrap(a: float) -> float:
    return float((a + math.pi) % (2 * math.pi) - math.pi)


def vote_places(searches: Sequence[Tuple[np.ndarray, np.ndarray, np.ndarray, Tuple[float, float, float]]],
                odom_now: Tuple[float, float, float], bin_half_rad: float, k: int, temperature: float = 0.03,
                radius_m: float = 8.0, distinct_m: float = 10.0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pool the global retrieval results of the last keyframes into places where the car is NOW.

    ``searches``: per keyframe (oldest..newest) the retrieved tiles' map-frame centres [K, 2], their
    heading-bin centres [K] (map yaw, rad), cosine scores [K], and the odometry pose (x, y, yaw) of
    that keyframe. Each tile of an older keyframe is moved by the odometry since that keyframe, at its
    bin centre and +- 2/3 of the half bin (the tile's heading is known to a bin only); it votes with
    exp((score - that keyframe's best) / ``temperature``) (split among its heading samples). A point's
    support is the vote within ``radius_m`` of it; the ``k`` best-supported points, no two closer than
    ``distinct_m``, are the places. The true place collects votes from every keyframe, a look-alike
    rarely from several at positions the odometry joins (measured on validation towns 8 and 11: places
    within 15 m of the truth among the first 30, 5 keyframes vs the newest alone: 66 vs 58 %, 88 vs
    78 %; within 10 m among 30, 10 keyframes vs 5 on validation towns 8, 11, 17: 68 vs 62 %, 91 vs
    80 %, 27 vs 27 %). Returns (xy [n, 2], yaw [n], support [n]), best first."""
    pts, yaws, w = [], [], []
    for n, (xy, yaw, score, odom) in enumerate(searches):
        xy, yaw, score = (np.asarray(a, float) for a in (xy, yaw, score))
        ok = np.isfinite(score) & np.all(np.isfinite(xy), axis=1)
        if not ok.any():
            continue
        xy, yaw, score = xy[ok], yaw[ok], score[ok]
        D = odom_delta(odom, odom_now)
        dx, dy, dyaw = float(D[0, 2]), float(D[1, 2]), math.atan2(D[1, 0], D[0, 0])
        newest = n == len(searches) - 1
        offsets = (0.0,) if newest else (-2.0 * bin_half_rad / 3.0, 0.0, 2.0 * bin_half_rad / 3.0)
        wt = np.exp((score - score.max()) / temperature) / len(offsets)
        for o in offsets:
            c, s_ = np.cos(yaw + o), np.sin(yaw + o)
            pts.append(np.stack([xy[:, 0] + c * dx - s_ * dy, xy[:, 1] + s_ * dx + c * dy], axis=1))
            yaws.append(yaw + o + dyaw)
            w.append(wt)
    if not pts:
        return np.zeros((0, 2)), np.zeros(0), np.zeros(0)
    P, Y, W = np.concatenate(pts), np.concatenate(yaws), np.concatenate(w)
    support = np.concatenate([(np.sum((P[a:a + 1024, None, :] - P[None, :, :]) ** 2, axis=-1) <= radius_m ** 2) @ W
                              for a in range(0, len(P), 1024)])  # rows in blocks: memory ~ 1024 x len(P)
    chosen: List[int] = []
    for i in np.argsort(-support, kind="stable"):
        if not chosen or np.min(np.sum((P[chosen] - P[i]) ** 2, axis=1)) > distinct_m ** 2:
            chosen.append(int(i))
            if len(chosen) >= k:
                break
    Y = (Y[chosen] + math.pi) % (2 * math.pi) - math.pi
    return P[chosen], Y, support[chosen]


@dataclass(frozen=True)
class RoadNetwork:
    """What the road test knows of the roads (``road_lookup``): ``distance(x, y, max_m)`` from map
    points to the nearest tile centre (inf beyond ``max_m``, NaN where unknown) and the index's own
    ``reach`` (m: a point on an indexed road is at most this far from a centre)."""

    distance: Callable[[np.ndarray, np.ndarray, float], np.ndarray]
    reach: float


def road_lookup(index, frame, imagery_bounds_latlon: Tuple[float, float, float, float]) -> Optional[RoadNetwork]:
    """The road network of ``index`` for ``RelocVerifier(road=...)``. Distances are NaN where the
    index cannot know: closer to the imagery's edge than a tile's half-diagonal, where a whole tile
    does not fit at every heading (no tile there says nothing about a road). None when the index has
    no tile positions."""
    if index.distance_to_tiles(np.zeros(1), np.zeros(1), 0.0) is None:
        return None
    la0, lo0, la1, lo1 = imagery_bounds_latlon
    x, y = frame.from_latlon(np.array([la0, la0, la1, la1]), np.array([lo0, lo1, lo0, lo1]))
    r = float(index.tile_m) / math.sqrt(2.0)
    x0, y0 = max(x[0], x[2]) + r, max(y[0], y[1]) + r
    x1, y1 = min(x[1], x[3]) - r, min(y[2], y[3]) - r

    def distance(px: np.ndarray, py: np.ndarray, max_m: float) -> np.ndarray:
        known = (px >= x0) & (px <= x1) & (py >= y0) & (py <= y1)
        return np.where(known, index.distance_to_tiles(px, py, max_m), np.nan)

    return RoadNetwork(distance, 0.71 * float(index.spacing_m))


class RelocVerifier:
    """See the module docstring. ``matcher``: ``metric.MetricMatcher`` (its kept keyframes are the
    mosaic scored; the caller adds each keyframe before calling). Not thread-safe."""

    def __init__(self, matcher, params: RelocParams, road: Optional[RoadNetwork] = None,
                 temperature: float = GradientFeatures.volume_temperature):
        self.m = matcher
        self.p = params
        self.road = road if params.reloc_road_tol_m >= 0 else None  # the road test
        self.temperature = float(temperature)  # metric matching's cosine -> log-likelihood (the ground's spread)
        self.hyps: List[Hypothesis] = []
        self.steps = 0
        self.travel_m = 0.0  # odometry driven since the proposal
        self._alone: Optional[Hypothesis] = None  # the winner while no far rival follows the odometry ...
        self._alone_m = 0.0  # ... since this much driving
        self.n_candidates = 0
        self.last: Optional[RelocVerdict] = None
        self.counts: Dict[str, object] = {"attempted": 0, "verified": 0, "rejected": {}}

    @property
    def active(self) -> bool:
        """True while hypotheses are followed (the next keyframe continues the track)."""
        return bool(self.hyps)

    def cancel(self) -> None:
        self.hyps, self.steps, self.travel_m, self._alone = [], 0, 0.0, None

    # ------------------------------------------------------------------ scoring
    def _mosaic(self):
        return self.m.mosaic()

    def _score_window(self, mosaic, x: float, y: float, yaws: np.ndarray, half_m: float, cache: dict):
        """The cropped cosine volume around (x, y) at ``yaws`` (None: no imagery there)."""
        rgb, valid, rng, gm, _ = mosaic
        try:
            vol, _ = self.m.score(rgb, valid, rng, gm, x, y, float(yaws[len(yaws) // 2]), half_m, yaws, cache)
        except InvalidArgument as exc:  # the window leaves the orthophoto, or the BEV is empty
            log.debug("reloc: no score at (%.0f, %.0f): %s", x, y, exc)
            return None
        if not np.isfinite(vol.scores).any():
            return None
        return vol

    @staticmethod
    def _peaks(vol, distinct_m: float) -> Tuple[Tuple[float, float, float, float], float]:
        """((x, y, yaw, score) of the volume's best cell, the best score farther than ``distinct_m``)."""
        S = np.where(np.isfinite(vol.scores), vol.scores, -np.inf)
        k, i, j = np.unravel_index(int(np.argmax(S)), S.shape)
        best = (float(vol.xs[j]), float(vol.ys[i]), float(vol.yaws[k]), float(S[k, i, j]))
        bxy = S.max(axis=0)
        far = (vol.xs[None, :] - vol.xs[j]) ** 2 + (vol.ys[:, None] - vol.ys[i]) ** 2 > distinct_m ** 2
        other = float(bxy[far].max()) if far.any() else -np.inf
        return best, other

    def _yaws(self, yaw: float, half_deg: float, step_deg: Optional[float] = None) -> np.ndarray:
        step = math.radians(step_deg or self.p.reloc_yaw_step_deg)
        if half_deg >= 180.0:
            return np.arange(-math.pi, math.pi, step)
        n = int(math.ceil(math.radians(half_deg) / step))
        return yaw + step * np.arange(-n, n + 1)

    # ------------------------------------------------------------------ the three steps
    def propose(self, odom: Optional[Tuple[float, float, float]], xy: np.ndarray, yaw: np.ndarray,
                bin_half_deg: float) -> RelocVerdict:
        """Score the candidates (map-frame tile centres ``xy`` [N, 2], heading ``yaw`` [N] rad, best
        retrieval rank first) on the current mosaic; start the track of the best places, or refuse.
        ``bin_half_deg``: half the width of a tile's heading bin."""
        p = self.p
        self.cancel()
        self.counts["attempted"] = int(self.counts["attempted"]) + 1
        xy = np.asarray(xy, float).reshape(-1, 2)
        yaw = np.asarray(yaw, float).reshape(-1)
        if not len(xy):
            return self._reject("no candidates", 0)
        if p.reloc_confirm_keyframes > 0 and odom is None:
            return self._reject("no odometry", len(xy))
        # one window per place: a candidate inside a better-ranked one's window joins it
        keep: List[int] = []
        for n in range(len(xy)):
            if all(math.hypot(*(xy[n] - xy[m])) > p.reloc_window_m for m in keep):
                keep.append(n)
        self.n_candidates = len(keep)
        mosaic = self._mosaic()
        half = 180.0 if p.reloc_heading_margin_deg >= 180.0 else bin_half_deg + p.reloc_heading_margin_deg
        places: List[Hypothesis] = []
        cache: dict = {}
        for n in keep:
            vol = self._score_window(mosaic, float(xy[n, 0]), float(xy[n, 1]), self._yaws(float(yaw[n]), half),
                                     p.reloc_window_m, cache)
            if vol is None:
                continue
            (bx, by, byaw, s), other = self._peaks(vol, p.reloc_distinct_m)
            places.append(Hypothesis(bx, by, _wrap(byaw), s, [s], odom, other))
            if odom is not None:
                places[-1].track.append((bx, by, *odom))
        if not places:
            return self._reject("outside the orthophoto", len(keep))
        places.sort(key=lambda h: -h.score)
        # two windows may find the same peak: keep the better one
        distinct: List[Hypothesis] = []
        for h in places:
            if all(math.hypot(h.x - g.x, h.y - g.y) > p.reloc_distinct_m for g in distinct):
                distinct.append(h)
        if p.reloc_confirm_keyframes == 0:  # no track: the single keyframe must pass both tests
            v = self._judge(distinct, distinct[0].other)
            return self._count(v) if v.state == "rejected" else self._accept(v)
        # one keyframe does not decide (a window's best cosine over thousands of poses is high anywhere):
        # the places that could be it are followed with odometry and judged on their track
        sharp = [h for h in distinct if h.score >= p.reloc_min_score]
        if not sharp:
            return self._reject(f"not sharp (best {distinct[0].score:.2f} < {p.reloc_min_score:.2f})", len(keep),
                                distinct)
        self.hyps = sharp[:max(1, p.reloc_hypotheses)]
        for h in self.hyps:
            h.scores = []
        self.steps = 0
        return self._done(RelocVerdict("tracking", best=sharp[0].score,
                                       runner_up=sharp[1].score if len(sharp) > 1 else 0.0,
                                       candidates=len(keep), hypotheses=list(self.hyps)))

    def step(self, odom: Optional[Tuple[float, float, float]], path: Optional[np.ndarray] = None) -> RelocVerdict:
        """The next keyframe of the track: every hypothesis moved by the odometry since its last
        keyframe and scored again near its prediction (``reloc_track_tol_m`` + 1 m); one whose peak
        lands farther than ``reloc_track_tol_m`` no longer follows the odometry (it cannot win, it
        still counts as a rival). The winner (the consistent hypothesis with the highest score summed
        over the track) is verified once, after at least ``reloc_confirm_keyframes`` and
        ``reloc_fresh_m`` of driving, it is the only hypothesis that follows the odometry, its summed
        margin over every rival reaches ``reloc_evidence`` and its mean score ``reloc_accept_score``;
        refused when no hypothesis follows the odometry, or undecided after ``reloc_max_keyframes``.
        ``path``: the odometry positions [n, 2] (odometry frame, oldest first) of the last
        ``reloc_road_history_m``, for the road test (``_road_test``); None: no road test."""
        p = self.p
        if not self.hyps:
            raise InvalidArgument("no relocalisation hypotheses to follow (call propose first)")
        if odom is None:
            return self._reject("no odometry", self.n_candidates)
        prev = self.hyps[0].odom  # every hypothesis was last scored at the same keyframe
        if prev is not None:
            self.travel_m += math.hypot(odom[0] - prev[0], odom[1] - prev[1])
        mosaic = self._mosaic()
        half = p.reloc_track_tol_m + 2.0 * self.m.p.metric_res_m
        yaw_step = float(self.m.p.metric_yaw_step_deg)  # the track refines the heading at tracking's step
        yaw_half = max(p.reloc_yaw_step_deg, 4.0 * yaw_step)
        cache: dict = {}
        for h in self.hyps:
            px, py, pyaw = odom_moved((h.x, h.y, h.yaw), h.odom, odom)
            vol = self._score_window(mosaic, px, py, self._yaws(pyaw, yaw_half, yaw_step), half, cache)
            if vol is None:  # off the orthophoto: it cannot be verified, nor rival
                h.consistent = False
                h.scores.append(-1.0)
                h.offsets.append(math.inf)
                continue
            (bx, by, byaw, sc), _ = self._peaks(vol, p.reloc_distinct_m)
            off = math.hypot(bx - px, by - py)
            h.scores.append(sc)
            h.offsets.append(off)
            h.consistent = h.consistent and off <= p.reloc_track_tol_m
            h.x, h.y, h.yaw, h.score, h.odom = bx, by, _wrap(byaw), sc, odom
            h.track.append((bx, by, *odom))
        self.steps += 1
        self._road_test(odom, path)
        ok = [h for h in self.hyps if h.consistent]
        if not ok:
            off = sum(h.off_road for h in self.hyps)
            return self._reject("track disagrees with odometry" + (f" ({off} left the indexed roads)" if off else ""),
                                self.n_candidates, self.ranked())
        ranked = self.ranked()
        win = ranked[0]
        # survivors next to the winner (a lane or a dash away) are the same place, not rivals
        near = [h for h in ok if h is not win and math.hypot(h.x - win.x, h.y - win.y) <= p.reloc_cluster_m]
        # rivals: every other place but the winner's neighbours and those whose path leaves the roads
        # (impossible places; one that stopped following the odometry may still score high elsewhere)
        evidence = min((self._margin(win, h) for h in self.hyps if h is not win and h not in near and not h.off_road),
                       default=math.inf)
        alone = len(ok) == 1 + len(near)
        if not alone or self._alone is not win:
            self._alone, self._alone_m = (win if alone else None), self.travel_m
        alone_m = self.travel_m - self._alone_m if alone else 0.0
        v = RelocVerdict("tracking", best=win.mean_score, runner_up=ranked[1].mean_score if len(ranked) > 1 else 0.0,
                         candidates=self.n_candidates, hypotheses=ranked, evidence=evidence, following=len(ok),
                         travel_m=self.travel_m, alone_m=alone_m, off_road=sum(h.off_road for h in self.hyps))
        if self.steps >= p.reloc_confirm_keyframes and self.travel_m >= p.reloc_fresh_m and alone and \
                alone_m >= p.reloc_outlive_m and evidence >= p.reloc_evidence and win.mean_score >= p.reloc_accept_score:
            v.modes = [(h.x, h.y, h.yaw, math.exp(-self._margin(win, h) / max(p.reloc_evidence, 1e-6))) for h in near]
            return self._accept(v, mosaic, cache)
        if self.steps >= max(p.reloc_max_keyframes, p.reloc_confirm_keyframes):
            v.state = "rejected"
            v.reason = (f"not sharp (best {win.mean_score:.2f} < {p.reloc_accept_score:.2f})"
                        if win.mean_score < p.reloc_accept_score else
                        f"ambiguous ({len(ok)} places follow the odometry after {self.travel_m:.0f} m)"
                        if not alone else
                        f"ambiguous (alone for only {alone_m:.0f} of {p.reloc_outlive_m:.0f} m)"
                        if alone_m < p.reloc_outlive_m else
                        f"ambiguous (margin {evidence:.2f} < {p.reloc_evidence:.2f} over {self.steps} keyframes)"
                        if evidence < p.reloc_evidence else
                        f"ambiguous (only {self.travel_m:.0f} of {p.reloc_fresh_m:.0f} m driven in {self.steps} "
                        "keyframes)")
            return self._count(v)
        return self._done(v)

    def _road_test(self, odom: Tuple[float, float, float], path: Optional[np.ndarray]) -> None:
        """Each hypothesis still following the odometry places the odometry ``path`` on the map with
        its pose (the heading its track implies once it has one, +- ``reloc_road_yaw_deg``, the best
        fit kept); one whose path passes farther than ``reloc_road_tol_m`` beyond the index's reach
        from every tile centre leaves the road network and no longer follows. The truth's path lies
        on the roads wherever the car drove on indexed roads; a look-alike's rarely does for long
        (module docstring)."""
        if self.road is None or path is None or len(path) < 2:
            return
        fn, reach = self.road.distance, self.road.reach
        P = np.asarray(path, float)[:, :2]
        tol = reach + self.p.reloc_road_tol_m
        step = math.radians(0.5)
        n = int(math.ceil(math.radians(self.p.reloc_road_yaw_deg) / step))
        dyaw = step * np.arange(-n, n + 1)
        # the path in the vehicle frame now; on the map at each heading tried (the far end of 300 m of
        # path swings 5 m per degree, more than a mosaic's heading is known to)
        V = np.linalg.inv(rigid(*odom))
        vx, vy = V[0, 0] * P[:, 0] + V[0, 1] * P[:, 1] + V[0, 2], V[1, 0] * P[:, 0] + V[1, 1] * P[:, 1] + V[1, 2]
        for h in self.hyps:
            if not h.consistent:
                continue
            yaw = h.track_yaw()
            a = (h.yaw if yaw is None else yaw) + dyaw[:, None]
            mx = h.x + np.cos(a) * vx - np.sin(a) * vy
            my = h.y + np.sin(a) * vx + np.cos(a) * vy
            d = fn(mx.ravel(), my.ravel(), tol + 1.0)
            if d is None:  # the index has no tile positions: no road test
                return
            d = d.reshape(mx.shape)
            if np.isnan(d).all():  # the whole path beyond the index's knowledge
                continue
            # the path's farthest known point from the roads, at the heading that fits best
            worst = np.nanmax(np.where(np.isnan(d), -np.inf, d), axis=1)
            best = int(np.argmin(worst))
            h.road_m, h.road_path = float(worst[best]) - reach, np.stack([mx[best], my[best]], axis=1)
            if h.road_m > self.p.reloc_road_tol_m:
                h.consistent, h.off_road = False, True

    @staticmethod
    def _margin(win: Hypothesis, h: Hypothesis) -> float:
        """The winner's score minus a rival's, summed over the track."""
        return float(np.sum(np.asarray(win.scores) - np.asarray(h.scores)))

    def ranked(self) -> List[Hypothesis]:
        """The hypotheses, the consistent ones first, each group by score summed over the track."""
        return sorted(self.hyps, key=lambda h: (not h.consistent, -float(np.sum(h.scores))))

    # ------------------------------------------------------------------ verdicts
    def _judge(self, ranked: Sequence[Hypothesis], inner: float, mean: bool = False) -> RelocVerdict:
        p = self.p
        sc = [h.mean_score if mean else h.score for h in ranked]
        best = sc[0]
        runner = max([sc[1] if len(sc) > 1 else -np.inf, inner])
        runner_v = float(runner) if np.isfinite(runner) else 0.0
        v = RelocVerdict("tracking", best=float(best), runner_up=runner_v, candidates=self.n_candidates,
                         hypotheses=list(ranked))
        if best < p.reloc_min_score:
            v.state, v.reason = "rejected", f"not sharp (best {best:.2f} < {p.reloc_min_score:.2f})"
        elif runner_v > p.reloc_max_ratio * best:
            v.state, v.reason = "rejected", f"ambiguous (runner-up {runner_v / best:.2f} of the best)"
        return v

    def _reject(self, key: str, n: int, ranked: Optional[Sequence[Hypothesis]] = None) -> RelocVerdict:
        v = RelocVerdict("rejected", key, candidates=n)
        if ranked:
            v.best = ranked[0].mean_score
            v.runner_up = ranked[1].mean_score if len(ranked) > 1 else 0.0
        return self._count(v)

    def _count(self, v: RelocVerdict) -> RelocVerdict:
        key = v.reason.split(" (")[0]
        rej = self.counts["rejected"]
        rej[key] = rej.get(key, 0) + 1  # type: ignore[union-attr]
        self.cancel()
        return self._done(v)

    def _accept(self, v: RelocVerdict, mosaic=None, cache: Optional[dict] = None) -> RelocVerdict:
        h = v.hypotheses[0]
        # the heading: from the path the peaks followed vs the odometry's (metres of baseline beat
        # one mosaic's heading, which a BEV scale or pitch error biases by degrees)
        yaw = h.track_yaw()
        v.state, v.pose = "verified", (h.x, h.y, h.yaw if yaw is None else yaw)
        v.modes = [(*v.pose, 1.0)] + list(v.modes)
        if mosaic is not None:
            v.spread_m = self._ground_spread(mosaic, v.pose, cache)
        self.counts["verified"] = int(self.counts["verified"]) + 1
        self.cancel()
        return self._done(v)

    def _ground_spread(self, mosaic, pose: Tuple[float, float, float], cache: Optional[dict]) -> float:
        """How far the winner's own ground lets the car be from the verified pose: the mosaic scored
        over +- ``reloc_window_m`` around it (its heading +- 2 tracking steps) as a likelihood (the
        tracking volume's temperature), the largest sigma (m) of its position spread about the pose.
        A track can settle a dash or more along a road that repeats itself (validation: 9-10 m
        behind the truth on straight roads through a miscalibrated camera); the filter then starts
        with that sigma (``reloc_init_pos_std_m`` at least) instead of confident at one point. NaN:
        nothing scored."""
        yaw_step = float(self.m.p.metric_yaw_step_deg)
        vol = self._score_window(mosaic, pose[0], pose[1], self._yaws(pose[2], 2.0 * yaw_step, yaw_step),
                                 self.p.reloc_window_m, {} if cache is None else cache)
        if vol is None:
            return math.nan
        S = np.where(np.isfinite(vol.scores), vol.scores, -np.inf)
        P = np.exp((S - S.max()) / self.temperature).sum(axis=0)
        P /= P.sum()
        dx, dy = vol.xs[None, :] - pose[0], vol.ys[:, None] - pose[1]
        C = np.array([[np.sum(P * dx * dx), np.sum(P * dx * dy)], [np.sum(P * dx * dy), np.sum(P * dy * dy)]])
        return float(math.sqrt(max(np.linalg.eigvalsh(C))))

    def _done(self, v: RelocVerdict) -> RelocVerdict:
        self.last = v
        log.info("%s", v.describe())
        return v

    def diagnostics(self) -> Dict[str, object]:
        """Counters (attempted, verified, rejected by reason) and the last verdict in words."""
        out: Dict[str, object] = {"attempted": self.counts["attempted"], "verified": self.counts["verified"],
                                  "rejected": dict(self.counts["rejected"])}  # type: ignore[arg-type]
        if self.last is not None:
            out["last"] = self.last.describe()
        return out
