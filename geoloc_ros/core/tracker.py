"""``PoseTracker``: the particle filter (``core.filter.PoseFilter``) driven by stamped events (GNSS
fixes, odometry poses, camera measurements) in arrival order: prediction between events, the GNSS
gate and re-initialisation, relocalisation, and the status (initialising, tracking, degraded,
lost) with its reasons (``TrackState``). Numpy only."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from .errors import InvalidArgument
from .filter import FilterParams, MatchEval, PoseFilter, TileSimilarity, _wrap

STATUSES = ("initialising", "tracking", "degraded", "lost")


@dataclass
class TrackState:
    """The tracker's answer at time ``t`` (map frame)."""

    t: float
    mean: np.ndarray  # [3] x, y, yaw
    cov: np.ndarray  # [3, 3]
    status: str
    reasons: list

    @property
    def pos_std_m(self) -> float:
        """Square root of the largest eigenvalue of the position covariance."""
        return float(math.sqrt(max(np.linalg.eigvalsh(self.cov[:2, :2])[-1], 0.0)))

    @property
    def yaw_std_deg(self) -> float:
        return float(math.degrees(math.sqrt(max(self.cov[2, 2], 0.0))))


class PoseTracker:
    """Event-driven wrapper of ``PoseFilter`` in the map frame: time from stamps, odometry
    accumulation, GNSS gating bookkeeping, status with reasons, counters.

    Call ``on_odom`` / ``on_fix`` / ``on_match`` in stamp order. Each first calls ``check_time``:
    a stamp older than the newest by more than ``time_backwards_eps_s`` resets the tracker (and
    the event is then processed as the first one of a new run).
    """

    def __init__(self, params: FilterParams):
        self.p = params
        self.f = PoseFilter(params)
        self.counters: Dict[str, Any] = {}
        self._clear_counters()
        self.reset_reasons: Dict[str, int] = {}
        self.epoch = 0  # +1 whenever the cloud is (re)initialised, re-anchored or reset: the camera's history ends
        # a camera that holds the fix (core.integrity.CameraIntegrity.camera_holds): GNSS that disagrees
        # with it does not re-anchor or re-initialise the filter (the Localizer sets it)
        self.camera_holds: Callable[..., bool] = lambda t, disagree_since=None: False
        self._clear_state()

    def _clear_counters(self) -> None:
        self.counters = {"gnss_accepted": 0, "gnss_rejected": 0, "gnss_no_fix": 0, "gnss_reanchored": 0, "gnss_reinit_lost": 0,
                         "gnss_reinit_heading": 0, "gnss_reinit_bias": 0, "gnss_reinit_young": 0,
                         "gnss_held_by_camera": 0, "relocalisations": 0,
                         "odom": 0, "odom_jumps": 0, "matches_used": 0, "matches_rejected": {}, "resets": 0}

    def _clear_state(self) -> None:
        self.t_last: Optional[float] = None  # newest stamp seen
        self.t_filter: Optional[float] = None  # time the particles are at
        self.odom_last = None  # (t, x, y, yaw)
        self.odom_anchor = None  # odom pose the particles were last predicted to
        self.odom_dist = 0.0  # distance travelled according to odometry (for keyframes)
        # (map pose [x, y, yaw], odometry pose) of the estimate a GNSS re-anchoring moved away from
        self.before_reanchor: Optional[Tuple[Tuple[float, float, float], Tuple[float, float, float]]] = None
        self.t_fix_ok: Optional[float] = None  # last accepted fix
        self.t_reject_since: Optional[float] = None  # first of the current run of rejected fixes
        self.t_init: Optional[float] = None  # last (re)initialisation of the cloud on a GNSS fix
        self.reject_innov: list = []  # (t, dx, dy): innovations of the current run of rejected fixes
        self.t_first_event: Optional[float] = None
        self.fixes: list = []  # recent accepted fixes (t, x, y) for velocity/course without odometry
        self.last_match_t: Optional[float] = None
        self.relocalised = False  # the cloud comes from a global relocalisation, not from GNSS
        self.last_fix: Optional[Tuple[float, np.ndarray, np.ndarray]] = None  # (t, z, R) of the newest fix

    def relocalise(self, t: float, xy: np.ndarray, yaw: np.ndarray, scores: np.ndarray, pos_std: float,
                   yaw_std: float) -> None:
        """Re-initialise as a mixture over global retrieval candidates (weights: softmax of the
        scores with the match temperature). The status stays 'lost' until the cloud converges."""
        sc = np.asarray(scores, float)
        w = np.exp((sc - sc.max()) / self.p.match_temperature)
        self.f.init_mixture(xy, yaw, w, pos_std, yaw_std)
        self._seeded_by_camera(t, relocalised=True)

    def init_verified(self, t: float, poses: np.ndarray, weights: np.ndarray, pos_std: float, yaw_std: float) -> None:
        """Initialise at the pose the camera verified (``metric.verify``: retrieval proposed it, metric
        matching confirmed it over several keyframes), N((x, y), pos_std^2 I) x N(yaw, yaw_std^2) around
        each of ``poses`` [n, 3] (the winner and the aliases a lane or a dash away that it could not rule
        out) with ``weights`` [n]: an honest cloud, not a global guess (``relocalised`` stays False, so
        GNSS that comes back is gated against it as against any estimate)."""
        P = np.asarray(poses, float).reshape(-1, 3)
        self.f.init_mixture(P[:, :2], P[:, 2], np.asarray(weights, float), pos_std, yaw_std)
        self._seeded_by_camera(t, relocalised=False)

    def _seeded_by_camera(self, t: float, relocalised: bool) -> None:
        """Bookkeeping after the cloud was seeded by the camera at ``t`` (a new epoch, the odometry
        chain anchored here, counted)."""
        self.epoch += 1
        self.t_filter = t
        if self.odom_last is not None:
            self.odom_anchor = self.odom_last
        self.relocalised = relocalised
        self.counters["relocalisations"] += 1

    # ------------------------------------------------------------------ time
    def reset(self, reason: str) -> None:
        self.f.reset()
        self.epoch += 1
        self._clear_state()
        self.counters["resets"] += 1
        self.reset_reasons[reason] = self.reset_reasons.get(reason, 0) + 1

    def check_time(self, t: float) -> bool:
        """Register stamp ``t``; True if it went backwards (the tracker was reset)."""
        if not math.isfinite(t):
            raise InvalidArgument(f"stamp {t!r} is not finite")
        went_back = self.t_last is not None and t < self.t_last - self.p.time_backwards_eps_s
        if went_back:
            self.reset("time went backwards")
        if self.t_last is None or t > self.t_last:
            self.t_last = t
        if self.t_first_event is None:
            self.t_first_event = t
        return went_back

    def odom_fresh(self, t: float) -> bool:
        return self.odom_last is not None and t - self.odom_last[0] <= self.p.odom_timeout_s

    # ------------------------------------------------------------------ events
    def on_odom(self, t: float, x: float, y: float, yaw: float) -> bool:
        """Odometry pose (odom frame). Returns False if dropped as a jump (counted)."""
        self.check_time(t)
        if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(yaw)):
            raise InvalidArgument("odometry pose is not finite")
        if self.odom_last is not None:
            t0, x0, y0, _ = self.odom_last
            step = math.hypot(x - x0, y - y0)
            if step > self.p.odom_max_speed_mps * max(t - t0, 0.0) + 1.0:
                self.counters["odom_jumps"] += 1
                # the odom frame jumped (driver restart, reset): re-anchor, lose this interval's motion
                self.odom_last = (t, x, y, yaw)
                self.predict(t)
                self.odom_anchor = (t, x, y, yaw)
                return False
            self.odom_dist += step
        if self.odom_anchor is None or not self.f.initialised or (
                self.odom_last is not None and t - self.odom_last[0] > self.p.odom_timeout_s):
            if self.f.initialised and self.t_filter is not None:
                self.predict(t)  # motion up to now without odometry, then restart the odometry chain
            self.odom_anchor = (t, x, y, yaw)
        self.odom_last = (t, x, y, yaw)
        self.counters["odom"] += 1
        return True

    def _velocity(self, t: float) -> Optional[np.ndarray]:
        """GNSS velocity from accepted fixes ~1 s apart (None if unknown). Through a gap in the
        accepted fixes (outage, rejected multipath) the last velocity is kept for up to 10 s
        (constant-velocity dead reckoning), so the cloud does not stay behind the vehicle."""
        if len(self.fixes) < 2:
            return None
        t1, x1, y1 = self.fixes[-1]
        if t - t1 > 10.0:
            return None
        for t0, x0, y0 in reversed(self.fixes[:-1]):
            if t1 - t0 >= 0.9:
                return np.array([(x1 - x0) / (t1 - t0), (y1 - y0) / (t1 - t0)])
        return None

    def predict(self, t: float) -> None:
        """Move the particles to time ``t`` (odometry increment if fresh, else the no-odometry model)."""
        if not self.f.initialised or self.t_filter is None:
            self.t_filter = t
            return
        dt = t - self.t_filter
        if dt < 0:
            return
        if self.odom_anchor is not None and self.odom_last is not None and self.odom_fresh(t):
            _, ax, ay, ayaw = self.odom_anchor
            _, lx, ly, lyaw = self.odom_last
            c, s = math.cos(ayaw), math.sin(ayaw)
            dx, dy = lx - ax, ly - ay
            self.f.predict_odom(c * dx + s * dy, -s * dx + c * dy, float(_wrap(lyaw - ayaw)), dt)
            self.odom_anchor = self.odom_last
        else:
            age = t - self.fixes[-1][0] if self.fixes else 0.0
            self.f.predict_no_odom(dt, self._velocity(t), age)
        self.t_filter = t

    def on_fix(self, t: float, z: Optional[np.ndarray], R: Optional[np.ndarray], ok: bool) -> str:
        """GNSS fix in the map frame. Returns 'init', 'accepted', 'rejected', 'reanchored' or 'no_fix'."""
        self.check_time(t)
        if not ok or z is None or not np.all(np.isfinite(z)):
            self.counters["gnss_no_fix"] += 1
            self.predict(t)  # dead reckoning: the covariance grows through the outage
            return "no_fix"
        z = np.asarray(z, float)
        if R is None or not np.all(np.isfinite(R)):
            R = np.eye(2) * self.p.gnss_default_sigma_m ** 2
        R = 0.5 * (np.asarray(R, float) + np.asarray(R, float).T)
        ev = np.linalg.eigvalsh(R)
        if ev[0] <= 1e-6:  # degenerate covariance: floor it rather than divide by zero
            R = R + np.eye(2) * (1e-2 - min(ev[0], 0.0))
        self.last_fix = (t, z.copy(), R.copy())  # every usable fix, accepted or not
        if not self.f.initialised:
            self._init_gnss(t, z, R)
            self.t_filter = t
            if self.odom_last is not None:
                self.odom_anchor = self.odom_last
            self.t_fix_ok = t
            self.fixes = [(t, z[0], z[1])]
            self.counters["gnss_accepted"] += 1
            return "init"
        self.predict(t)
        cur = self.state(t)
        if cur is not None and (cur.status == "lost" or (self.relocalised and cur.pos_std_m > self.p.degraded_std_m)):
            # a fix is a better prior than a lost cloud or a wide camera-only global guess
            self.relocalised = False
            return self._restart(t, z, R, "gnss_reinit_lost")
        used, _ = self.f.update_gnss(z, R, with_bias=self.odom_fresh(t))
        if used:
            self.counters["gnss_accepted"] += 1
            self.t_fix_ok = t
            self.t_reject_since = None
            if self.odom_fresh(t) and self.f.bias_implausible(self.p.gnss_gate_chi2) and not self.camera_holds(t):
                # the per-particle bias states have absorbed a drift of the whole cloud (a heading
                # or wheel scale learned wrong, all particles alike) beyond what the receiver's bias
                # can be (its stationary law): every fix still passes the gate, but the estimate
                # walks away from the GNSS. Start again from this fix (heading searched anew).
                # Not while a consistent camera holds the fix: then the receiver is the one adrift.
                return self._restart(t, z, R, "gnss_reinit_bias", accepted=False)
            self._after_fix(t, z, R)
            return "accepted"
        if cur is not None and cur.yaw_std_deg > self.p.init_yaw_std_deg and not self.relocalised:
            # still learning the heading from motion: a heading picked from one or two noisy fixes
            # (white noise of a few sigma) would make every later fix look like an outlier until
            # gnss_reset_after_s; a fix that fails the gate now says the young cloud is wrong, so
            # start the heading search again from this fix
            return self._restart(t, z, R, "gnss_reinit_heading")
        self.counters["gnss_rejected"] += 1
        if self.t_reject_since is None:
            self.t_reject_since = t
            self.reject_innov = []
        if cur is not None:
            self.reject_innov.append((t, float(z[0] - cur.mean[0]), float(z[1] - cur.mean[1])))
        if (self.t_init is not None and t - self.t_init < self.p.gnss_young_s and not self.relocalised
                and t - self.t_reject_since >= self.p.gnss_young_reset_s
                and self._innovation_drift() >= self.p.gnss_young_drift_mps
                and not self.camera_holds(t, self.t_reject_since)):
            # a young cloud learned its heading from a few fixes; on a poor receiver (multipath bursts)
            # that heading can be confidently wrong, and dead reckoning along it makes every later fix
            # an outlier, by more and more (a multipath burst or a bias is a step, not a drift): after
            # a short run of rejections drifting apart, start again from this fix with the heading
            # searched anew, rather than wait gnss_reset_after_s and re-anchor keeping the wrong heading
            return self._restart(t, z, R, "gnss_reinit_young")
        if t - self.t_reject_since >= self.p.gnss_reset_after_s:
            if t - self.t_reject_since < getattr(self.p, "integrity_hold_max_s", 0.0) and self.camera_holds(
                    t, self.t_reject_since):
                self.counters["gnss_held_by_camera"] += 1  # a consistent camera says the receiver is adrift
                return "rejected"
            if cur is not None and self.odom_last is not None:  # what the filter held before the jump
                self.before_reanchor = (tuple(float(v) for v in cur.mean), tuple(float(v) for v in self.odom_last[1:]))
            self.f.reanchor_gnss(z, R)
            self.epoch += 1
            self.counters["gnss_reanchored"] += 1
            self.t_reject_since = None
            self.t_fix_ok = t
            self.fixes = []
            self._after_fix(t, z, R)
            return "reanchored"
        return "rejected"

    def _restart(self, t: float, z: np.ndarray, R: np.ndarray, counter: str, accepted: bool = True) -> str:
        """Start the cloud again from fix ``z`` (heading searched anew), counted under ``counter``;
        ``accepted``: the fix counts as accepted here (not yet counted by the caller)."""
        self._init_gnss(t, z, R)
        self.counters[counter] += 1
        self.t_fix_ok = t
        self.t_reject_since = None
        self.fixes = [(t, z[0], z[1])]
        if accepted:
            self.counters["gnss_accepted"] += 1
        return "init"

    def _innovation_drift(self) -> float:
        """Speed (m/s) at which the rejected fixes of the current run move away from the prediction:
        the least-squares slope of their innovation vectors over time (0 with fewer than 3)."""
        if len(self.reject_innov) < 3:
            return 0.0
        a = np.asarray(self.reject_innov, float)
        tc = a[:, 0] - a[:, 0].mean()
        den = float(tc @ tc)
        if den <= 0.0:
            return 0.0
        return float(np.hypot(tc @ a[:, 1], tc @ a[:, 2]) / den)

    def _init_gnss(self, t: float, z: np.ndarray, R: np.ndarray) -> None:
        self.f.init_gnss(z, R)
        self.t_init = t
        self.epoch += 1

    def _after_fix(self, t: float, z: np.ndarray, R: np.ndarray) -> None:
        self.fixes.append((t, float(z[0]), float(z[1])))
        if len(self.fixes) > 30:
            del self.fixes[:-30]
        if not self.odom_fresh(t):  # no odometry: the GNSS course is the heading measurement
            v = self._velocity(t)
            if v is not None:
                sp = float(np.hypot(*v))
                if sp > 2.0:
                    sw = self.p.gnss_white_fraction * math.sqrt(float(np.trace(R)) / 2.0)
                    self.f.update_yaw(math.atan2(v[1], v[0]), math.atan2(2.0 * sw, sp) + 0.05)

    def on_match(self, t: float, tile_xy: np.ndarray, scores: np.ndarray, spacing: float) -> MatchEval:
        """Retrieval similarity map at time ``t``: ``on_camera`` with a ``TileSimilarity``."""
        return self.on_camera(t, TileSimilarity(tile_xy, scores, spacing))

    def on_camera(self, t: float, meas) -> MatchEval:
        """A camera measurement (``core.measurement``) at time ``t``: gate, then update.
        ``MatchEval.ok`` says if it was used; ``MatchEval.reason`` why not."""
        self.check_time(t)
        ev = meas.evaluate(self.p)
        if not self.f.initialised:
            ev.ok, ev.reason = False, "filter not initialised"
        if ev.ok:
            self.predict(t)
            cur = self.state(t)
            credible = cur.status in ("tracking", "degraded", "initialising") and cur.pos_std_m < self.p.lost_std_m
            used, _ = self.f.update_camera(meas, check_consistency=credible)
            if not used:
                ev.ok, ev.reason = False, self.f.volume_reject_reason
        if ev.ok:
            self.counters["matches_used"] += 1
            self.last_match_t = t
        else:
            mr = self.counters["matches_rejected"]
            mr[ev.reason] = mr.get(ev.reason, 0) + 1
        return ev

    def reject_camera(self, t: float, meas, key: str, reason: str) -> MatchEval:
        """A camera measurement the integrity monitor turned down (``core.integrity``): counted under
        ``key``, the filter untouched; the MatchEval carries its peak and ``reason``."""
        self.check_time(t)
        ev = meas.evaluate(self.p)
        ev.ok, ev.reason = False, reason
        mr = self.counters["matches_rejected"]
        mr[key] = mr.get(key, 0) + 1
        return ev

    # ------------------------------------------------------------------ output
    def state(self, t: Optional[float] = None) -> Optional[TrackState]:
        """Mean, covariance and status at ``t`` (default: the filter time). Does not change the
        particles: a pending odometry increment is applied to the mean only."""
        if not self.f.initialised:
            return None
        mean, cov = self.f.mean_cov()
        tt = self.t_filter if t is None else float(t)
        if self.odom_anchor is not None and self.odom_last is not None and self.odom_fresh(tt) and \
                self.odom_last is not self.odom_anchor:
            _, ax, ay, ayaw = self.odom_anchor
            _, lx, ly, lyaw = self.odom_last
            c, s = math.cos(ayaw), math.sin(ayaw)
            fwd, lat = c * (lx - ax) + s * (ly - ay), -s * (lx - ax) + c * (ly - ay)
            cy, sy = math.cos(mean[2]), math.sin(mean[2])
            mean = mean + np.array([cy * fwd - sy * lat, sy * fwd + cy * lat, 0.0])
            mean[2] = float(_wrap(mean[2] + _wrap(lyaw - ayaw)))
        if not self.odom_fresh(tt):  # the GNSS bias is not estimated without odometry: add its covariance
            cov = cov.copy()
            cov[:2, :2] += self.f.Rb
        st = TrackState(t=tt, mean=mean, cov=cov, status="tracking", reasons=[])
        st.status, st.reasons = self._status(st)
        return st

    def _status(self, st: TrackState) -> Tuple[str, list]:
        p, t = self.p, st.t
        reasons = []
        sd = st.pos_std_m
        if sd > p.lost_std_m:
            why = [f"position sigma {sd:.0f} m > {p.lost_std_m:g} m"]
            if self.relocalised:
                why.append("relocalising globally from camera matches (no GNSS)")
            return "lost", why
        degraded = []
        if self.t_fix_ok is None or t - self.t_fix_ok > p.gnss_timeout_s:
            if self.t_reject_since is not None:
                degraded.append(f"GNSS rejected as outlier for {t - self.t_reject_since:.1f} s")
            elif self.t_fix_ok is None:
                degraded.append("no GNSS fix yet (dead reckoning)")
            else:
                degraded.append(f"no GNSS fix for {t - self.t_fix_ok:.1f} s (dead reckoning)")
        if sd > p.degraded_std_m:
            degraded.append(f"position sigma {sd:.1f} m > {p.degraded_std_m:g} m")
        if st.yaw_std_deg > p.init_yaw_std_deg:
            return "initialising", [f"heading not converged (sigma {st.yaw_std_deg:.0f} deg)"] + degraded
        if degraded:
            return "degraded", degraded + reasons
        return "tracking", reasons
