"""Bayesian filter over the vehicle pose (x, y, yaw in the map frame), numpy only.

Why a particle filter (and not a grid or an EKF)
------------------------------------------------
* The camera measurement is a *similarity map* over tile positions: often multi-modal (repeated
  street patterns), sometimes flat. A Gaussian filter (EKF/UKF) would have to squash it to one
  mode; a particle filter evaluates it exactly where the belief has mass.
* The belief must cover (x, y, yaw) plus the hidden states that make GNSS and odometry honest
  (GNSS bias, wheel scale). A grid over 3-6 dimensions at metre/degree resolution is far too
  big for a Jetson at camera rate; particles concentrate where the belief is. With the default
  1000 particles one predict + update is about a millisecond of numpy.
* Global relocalisation is a mixture over retrieved candidates: natural with particles.

State per particle
------------------
``x, y`` (map frame, metres), ``yaw`` (rad, REP-103, grid axes), ``scale`` (wheel-odometry scale
factor), ``gb`` (gyro bias, rad/s), and the GNSS bias, Rao-Blackwellised: each particle carries the mean ``bx, by`` of a
Gaussian over the bias given its own trajectory; the covariance ``Pb`` of that Gaussian is the
same for every particle (the measurement is linear in the bias), so it is one 2x2 matrix. The
bias therefore never suffers sample depletion, and the position level stays as uncertain as the
bias prior says unless something else (a camera match) measures it.

Why the GNSS bias is a state: a receiver's error is mostly a slowly varying bias (Gauss-Markov,
tau ~ 60 s) plus a little white noise. Treating 5 fixes per second as independent measurements
with the reported covariance makes any filter over-confident by a factor ~sqrt(rate * tau)
(0.3 m claimed, 3 m real). Here a fix measures ``position + bias`` with only the *white* part of
the reported covariance (``gnss_white_fraction``), and the bias follows a Gauss-Markov process
(``gnss_bias_tau_s``) whose stationary covariance is ``gnss_bias_scale`` times the reported
covariance (a Kalman filter per particle, see above; 1.2 by default: slightly conservative). With GNSS + odometry only
the bias is unobservable and the position covariance stays at the honest ~3 m; camera matches
(which measure the position alone) are what make the bias observable. The filter's tau (20 s) is
shorter than a receiver's (~60 s) on purpose: without the camera a bias estimate is "GNSS minus
odometry", and odometry errors (wheel scale, heading after turns, outages) reach the bias's size
within ~10-20 s of driving; holding the estimate longer made the filter lag the GNSS and be worse
than the raw fixes (docs/localizer.md). Two re-initialisations protect the heading learned from
motion: a rejected fix while the heading is not converged, and a mean bias outside its stationary
law (the whole cloud drifted and the biases absorbed it), restart the filter at the fix.

Models
------
* Motion (``predict_odom``): the odometry increment between two filter times, expressed in the
  vehicle frame at the start (forward, lateral, dyaw), is applied to every particle in its own
  heading, scaled by its own wheel scale, yaw corrected by its own gyro bias; noise variance grows
  with distance travelled and angle turned, plus a yaw random walk in time. Without odometry
  (``predict_no_odom``): the GNSS velocity (extrapolated through gaps with a growing uncertainty)
  plus a random walk; fixes then measure the position with their whole covariance.
* GNSS (``update_gnss``): gated by the Mahalanobis distance of the fix to the predicted
  measurement distribution (particle spread of position + bias, plus the white noise). Multipath
  jumps (15-40 m, not in the reported covariance) fail the gate and are counted, not used.
* Camera (``update_camera``): one interface for both camera measurements (``core.measurement``),
  each carrying its own update. Retrieval gives a similarity map over tile positions (softmax with
  a temperature mixed with a uniform floor, interpolated between tiles) that weights each particle
  at its own (x, y, yaw) (``update_factor``); metric matching a log-likelihood volume over (x, y,
  heading) in a window around the prior (temperature calibrated on validation drives), a Bayes
  update on the volume's grid that redraws the particles (``update_volume``). Particles outside
  what was scored get 1, i.e. no information. A gate (retrieval: peak prominence,
  entropy, ambiguity between distant peaks; metric: probability mass near the peak) rejects
  measurements that would not carry information, and one that would wipe out almost all of a
  credible prior is rejected as inconsistent.

Everything is deterministic for a given seed and the same sequence of calls.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Optional, Tuple

import numpy as np

from .config import param, validate_fields  # noqa: F401 (validate_fields re-exported)
from .errors import InvalidArgument
from .measurement import MatchEval, TileSimilarity, grid_factor, match_likelihood  # noqa: F401 (re-exported)

TWO_PI = 2.0 * math.pi


def _wrap(a):
    return (np.asarray(a) + math.pi) % TWO_PI - math.pi


_f = param  # the schema's field definer (core.config), by its short local name


@dataclass(frozen=True)
class FilterParams:
    """Parameters of ``PoseFilter`` (``pipeline.LocalizerConfig`` extends this class)."""

    _owner: ClassVar[str] = "filter"  # prefix in error messages
    _group: ClassVar[str] = "filter"  # the schema's group of these fields (core.config)

    seed: int = _f(0, "seed of the filter's random generator (same inputs + same seed = same output)", 0, 2 ** 31 - 1)
    num_particles: int = _f(1000, "particles of the pose filter (cost is linear; ~1 ms per update at 1000)",
                            100, 100000)
    # GNSS
    gnss_default_sigma_m: float = _f(5.0, "per-axis GNSS sigma (m) used when a fix has no covariance", 0.1, 1000.0)
    gnss_white_fraction: float = _f(0.25, "fraction of the reported GNSS sigma that is white (independent per fix); "
                                    "the rest is a slowly varying bias tracked as a state", 0.05, 1.0)
    gnss_bias_scale: float = _f(1.0, "stationary variance of the GNSS bias as a multiple of the reported covariance "
                                "(> 1: more conservative about the bias); chosen with gnss_bias_tau_s by "
                                "bench/tune_gnss.py on the validation drives of bench/heldout.yaml", 0.1, 100.0)
    gnss_bias_tau_s: float = _f(20.0, "correlation time of the GNSS bias as the filter models it (s); shorter than "
                                "a receiver's (~60 s) so an old bias estimate is not kept longer than the "
                                "odometry (scale, heading drift) can carry it", 1.0, 3600.0)
    gnss_gate_chi2: float = _f(13.8, "GNSS outlier gate: squared Mahalanobis distance of a fix to the prediction "
                               "(2 dof; 13.8 = 99.9 %)", 1.0, 1000.0)
    gnss_reset_after_s: float = _f(10.0, "GNSS fixes rejected for this long in a row re-initialise the filter at "
                                   "the GNSS (s); longer than a multipath episode", 1.0, 3600.0)
    gnss_young_s: float = _f(30.0, "a cloud (re)initialised on GNSS less than this ago is young (s): ...", 0.0, 3600.0)
    gnss_young_reset_s: float = _f(3.0, "... and fixes rejected this long in a row ...", 0.1, 3600.0)
    gnss_young_drift_mps: float = _f(2.0, "... that move away from the prediction at least this fast (m/s: a wrong "
                                     "heading, not a multipath step) start it again with the heading searched anew "
                                     "(chosen on the validation drives' urban receivers)", 0.0, 1000.0)
    # odometry
    odom_trans_noise: float = _f(0.05, "odometry translation noise (m per sqrt(m) travelled)", 0.0, 10.0)
    odom_scale_sigma: float = _f(0.05, "wheel scale error prior (fraction; each particle carries its own scale)",
                                 0.0, 0.5)
    odom_yaw_noise: float = _f(0.05, "odometry yaw noise (rad per sqrt(rad) turned)", 0.0, 10.0)
    odom_yaw_drift_dps: float = _f(0.05, "yaw random walk on top of the odometry (deg per sqrt(s))", 0.0, 100.0)
    odom_gyro_bias_dps: float = _f(0.1, "gyro bias prior (deg/s; each particle carries its own bias)", 0.0, 10.0)
    no_odom_pos_noise: float = _f(2.0, "position random walk without odometry (m per sqrt(s))", 0.01, 100.0)
    no_odom_accel_mps2: float = _f(2.0, "without odometry, the GNSS velocity is extrapolated through gaps in the "
                                   "fixes with this acceleration uncertainty (m/s^2)", 0.0, 100.0)
    no_odom_yaw_noise: float = _f(0.5, "yaw random walk without odometry (rad per sqrt(s))", 0.001, 10.0)
    # camera match likelihood and gate
    match_temperature: float = _f(0.3, "softmax temperature over cosine similarity scores (wider = softer "
                                  "likelihood)", 1e-4, 10.0, group="retrieval")
    match_uniform_floor: float = _f(0.5, "weight of the uniform floor mixed into the match likelihood (0..1; "
                                    "bounds how much one match can move the estimate)", 0.0, 1.0, group="retrieval")
    match_min_tiles: int = _f(9, "fewest scored positions for a usable similarity map", 2, 100000, group="retrieval")
    match_min_peak_z: float = _f(3.5, "gate: best score must exceed the map median by this many robust sigmas",
                                 0.0, 100.0, group="retrieval")
    match_min_confidence: float = _f(0.0, "gate: 1 - normalised entropy of the match likelihood must reach this",
                                     0.0, 1.0, group="retrieval")
    match_ambiguity_radius_m: float = _f(15.0, "gate: a second peak farther than this from the best ... (m)",
                                         0.0, 10000.0, group="retrieval")
    match_min_score_gap: float = _f(0.01, "... must score at least this much lower than the best (cosine)",
                                    0.0, 2.0, group="retrieval")
    match_min_ess_ratio: float = _f(0.05, "a match that would leave fewer than this fraction of effective "
                                    "particles of a credible prior is rejected as inconsistent", 0.0, 1.0, group="retrieval")
    volume_temperature: float = _f(0.0, "metric matching: softmax temperature over the cosine score volume; 0: the "
                                   "feature extractor's own calibrated value (gradient 0.08: geoloc eval calibrate "
                                   "on town 9 drives with the survey gap, where 0.03/0.04/0.06/0.08 kept the truth "
                                   "inside the 95 % ellipse 81/85/91/95 % of the time; learned: the "
                                   "volume_temperature of its checkpoint manifest)", 0.0, 10.0, group="metric")
    volume_uniform_floor: float = _f(0.05, "metric matching: weight of the uniform floor mixed into the volume's "
                                     "likelihood (bounds how much one keyframe can move the estimate)", 0.0, 1.0, group="metric")
    volume_min_peak_mass: float = _f(0.0, "metric gate: probability within volume_peak_radius_m and "
                                     "volume_peak_yaw_deg of the volume's peak must reach this", 0.0, 1.0, group="metric")
    volume_peak_radius_m: float = _f(2.0, "... radius around the peak for that mass (m)", 0.1, 100.0, group="metric")
    volume_peak_yaw_deg: float = _f(2.0, "... and heading tolerance (deg)", 0.1, 180.0, group="metric")
    volume_min_evidence: float = _f(0.1, "metric consistency: a volume whose evidence E_prior[factor] (1 = no "
                                    "information, > 1 agrees with the prior) is below this is rejected as "
                                    "inconsistent; 2 x volume_uniform_floor: 'camera wrong' is then likelier than "
                                    "'camera right'", 0.0, 100.0, group="metric")
    volume_min_posterior_at_peak: float = _f(-1.0, "metric consistency: the share of the posterior (prior x volume) "
                                             "within volume_peak_radius_m of the volume's own peak must reach this, "
                                             "else the volume is rejected ('the prior favours another place'): the "
                                             "integrity monitor judged the peak, so the update must go there, not to "
                                             "a weak second mode or the uniform floor near a wrong prior. -1: the "
                                             "feature extractor's own (learned 0.25, chosen on the validation drives; "
                                             "gradient 0 = off: its broad peaks spread the posterior), 0: off",
                                             -1.0, 1.0, group="metric")
    resample_jitter: float = _f(0.1, "after resampling, particles are jittered by this fraction of the cloud's "
                                "spread (regularised particle filter)", 0.0, 1.0)
    # output and status
    pos_std_floor_m: float = _f(0.2, "floor added to the reported position sigma (m)", 0.0, 100.0)
    init_yaw_std_deg: float = _f(15.0, "status stays 'initialising' until the heading sigma is below this (deg)",
                                 0.5, 180.0)
    gnss_timeout_s: float = _f(2.0, "no accepted GNSS fix for this long: status 'degraded' (dead reckoning) (s)",
                               0.1, 3600.0)
    degraded_std_m: float = _f(10.0, "position sigma above this: status 'degraded' (m)", 0.1, 100000.0)
    lost_std_m: float = _f(50.0, "position sigma above this: status 'lost' (m)", 0.1, 100000.0)
    odom_timeout_s: float = _f(1.0, "odometry older than this is ignored: motion without odometry and keyframes by "
                               "time (s)", 0.01, 3600.0)
    odom_max_speed_mps: float = _f(70.0, "odometry steps faster than this are dropped as jumps (m/s)", 1.0, 1000.0)
    time_backwards_eps_s: float = _f(1e-3, "a stamp this much older than the newest one resets the localizer (s)",
                                     0.0, 10.0)

    def __post_init__(self):
        validate_fields(self, self._owner)
        if self.degraded_std_m > self.lost_std_m:
            raise InvalidArgument(f"{self._owner}.degraded_std_m ({self.degraded_std_m}) must not exceed lost_std_m "
                                  f"({self.lost_std_m})")


class PoseFilter:
    """Particle filter over (x, y, yaw) with GNSS-bias and wheel-scale states. See the module doc."""

    def __init__(self, params: FilterParams):
        self.p = params
        self.volume_reject_reason = "inconsistent with the prior"  # why the last camera update was not used
        self.reset()

    # ------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        """Forget everything; the random generator restarts from the seed (replays are identical)."""
        self.rng = np.random.default_rng(np.random.SeedSequence(int(self.p.seed)))
        n = int(self.p.num_particles)
        self.n = n
        self.x = np.zeros(n)
        self.y = np.zeros(n)
        self.yaw = np.zeros(n)
        self.bx = np.zeros(n)
        self.by = np.zeros(n)
        self.scale = np.ones(n)
        self.gb = np.zeros(n)
        self.w = np.full(n, 1.0 / n)
        self.initialised = False
        self.Rb = np.zeros((2, 2))  # stationary bias covariance (from the latest reported GNSS covariance)
        self.Pb = np.zeros((2, 2))  # covariance of every particle's bias Gaussian

    def _bias_split(self, R: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        f2 = self.p.gnss_white_fraction ** 2
        return f2 * R, self.p.gnss_bias_scale * R

    def init_gnss(self, z: np.ndarray, R: np.ndarray, yaw: Optional[float] = None,
                  yaw_std: Optional[float] = None) -> None:
        """Initialise around a GNSS fix ``z`` [2] with covariance ``R`` [2, 2]; yaw N(yaw, yaw_std)
        or uniform when unknown. The position is fix - bias - white noise (bias from its prior)."""
        n = self.n
        Rw, Rb = self._bias_split(R)
        e = self.rng.standard_normal((n, 2)) @ np.linalg.cholesky(R + 1e-9 * np.eye(2)).T
        self.x = z[0] - e[:, 0]
        self.y = z[1] - e[:, 1]
        # bias given the fix and each particle's position: Kalman update of the prior N(0, Rb)
        K = Rb @ np.linalg.inv(Rb + Rw)
        self.bx = K[0, 0] * e[:, 0] + K[0, 1] * e[:, 1]
        self.by = K[1, 0] * e[:, 0] + K[1, 1] * e[:, 1]
        self.Rb = Rb
        self.Pb = (np.eye(2) - K) @ Rb
        self._init_common(yaw, yaw_std)

    def reanchor_gnss(self, z: np.ndarray, R: np.ndarray) -> None:
        """Move the cloud onto a GNSS fix (after a long run of rejected fixes), keeping headings and scales."""
        yaw, scale, gb = self.yaw.copy(), self.scale.copy(), self.gb.copy()
        w = self.w.copy()
        self.init_gnss(z, R)
        idx = self._systematic(w / w.sum())
        self.yaw, self.scale, self.gb = yaw[idx], scale[idx], gb[idx]

    def init_mixture(self, xy: np.ndarray, yaw: np.ndarray, weights: np.ndarray, pos_std: float,
                     yaw_std: float, bias_sigma: float = 3.0) -> None:
        """Initialise as a mixture of Gaussians around candidate poses (global relocalisation)."""
        n = self.n
        xy = np.asarray(xy, float).reshape(-1, 2)
        wk = np.asarray(weights, float)
        wk = wk / wk.sum()
        comp = self.rng.choice(len(xy), size=n, p=wk)
        self.x = xy[comp, 0] + pos_std * self.rng.standard_normal(n)
        self.y = xy[comp, 1] + pos_std * self.rng.standard_normal(n)
        self.Rb = np.eye(2) * bias_sigma ** 2
        self.Pb = self.Rb.copy()
        self.bx = np.zeros(n)
        self.by = np.zeros(n)
        self._init_common(None, None)
        self.yaw = _wrap(np.asarray(yaw, float)[comp] + yaw_std * self.rng.standard_normal(n))

    def _init_common(self, yaw, yaw_std) -> None:
        n = self.n
        if yaw is None or yaw_std is None or not math.isfinite(yaw):
            self.yaw = self.rng.uniform(-math.pi, math.pi, n)
        else:
            self.yaw = _wrap(yaw + yaw_std * self.rng.standard_normal(n))
        self.scale = 1.0 + self.p.odom_scale_sigma * self.rng.standard_normal(n)
        self.gb = math.radians(self.p.odom_gyro_bias_dps) * self.rng.standard_normal(n)
        self.w = np.full(n, 1.0 / n)
        self.initialised = True

    # ------------------------------------------------------------------ prediction
    def _bias_step(self, dt: float) -> None:
        """Gauss-Markov prediction of every particle's bias Gaussian (mean decays, covariance
        relaxes towards the stationary ``Rb``)."""
        if dt <= 0:
            return
        phi = math.exp(-dt / self.p.gnss_bias_tau_s)
        self.bx = phi * self.bx
        self.by = phi * self.by
        self.Pb = phi * phi * self.Pb + (1.0 - phi * phi) * self.Rb

    def predict_odom(self, fwd: float, lat: float, dyaw: float, dt: float) -> None:
        """Apply an odometry increment (vehicle frame at the start of the interval) over ``dt`` s."""
        n, p, r = self.n, self.p, self.rng
        d = math.hypot(fwd, lat)
        st = p.odom_trans_noise * math.sqrt(d) + 1e-4
        f = fwd * self.scale + st * r.standard_normal(n)
        l_ = lat * self.scale + st * r.standard_normal(n)
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        self.x = self.x + c * f - s * l_
        self.y = self.y + s * f + c * l_
        sy = math.sqrt(p.odom_yaw_noise ** 2 * abs(dyaw) + math.radians(p.odom_yaw_drift_dps) ** 2 * max(dt, 0.0))
        self.yaw = _wrap(self.yaw + dyaw - self.gb * max(dt, 0.0) + sy * r.standard_normal(n))
        if d > 0:  # slow wander of the scale so the population does not collapse onto one value
            self.scale = self.scale + 0.002 * math.sqrt(d / 100.0) * r.standard_normal(n)
        if dt > 0:  # and of the gyro bias (it drifts with temperature)
            self.gb = self.gb + math.radians(0.005) * math.sqrt(dt) * r.standard_normal(n)
        self._bias_step(dt)

    def predict_no_odom(self, dt: float, vel: Optional[np.ndarray], vel_age_s: float = 0.0) -> None:
        """Motion without odometry: move by ``vel`` [2] (m/s, from GNSS) if known, plus a random walk;
        a velocity ``vel_age_s`` old is uncertain by ``no_odom_accel_mps2 * vel_age_s``."""
        if dt <= 0:
            return
        n, p, r = self.n, self.p, self.rng
        sp = p.no_odom_pos_noise * math.sqrt(dt) + p.no_odom_accel_mps2 * max(vel_age_s, 0.0) * dt
        vx, vy = (0.0, 0.0) if vel is None else (float(vel[0]), float(vel[1]))
        self.x = self.x + vx * dt + sp * r.standard_normal(n)
        self.y = self.y + vy * dt + sp * r.standard_normal(n)
        self.yaw = _wrap(self.yaw + p.no_odom_yaw_noise * math.sqrt(dt) * r.standard_normal(n))
        self._bias_step(dt)

    # ------------------------------------------------------------------ updates
    def gnss_innovation(self, z: np.ndarray, R: np.ndarray, meas_cov: Optional[np.ndarray] = None) -> float:
        """Squared Mahalanobis distance of fix ``z`` to the predicted measurement: spread of
        position + bias mean over the particles, plus the bias covariance and the white noise
        (or plus ``meas_cov`` when given)."""
        Rw, _ = self._bias_split(R)
        extra = self.Pb + Rw if meas_cov is None else meas_cov
        hx, hy = self.x + self.bx, self.y + self.by
        w = self.w
        mx, my = float(w @ hx), float(w @ hy)
        dx, dy = hx - mx, hy - my
        S = np.array([[w @ (dx * dx), w @ (dx * dy)], [w @ (dx * dy), w @ (dy * dy)]]) + extra
        v = np.array([z[0] - mx, z[1] - my])
        return float(v @ np.linalg.solve(S, v))

    def update_gnss(self, z: np.ndarray, R: np.ndarray, with_bias: bool = True) -> Tuple[bool, float]:
        """Gate, then weight each particle by N(z; position + bias mean, Pb + white) and update
        its bias Gaussian (Kalman). Returns (used, d2).

        ``with_bias=False`` (no odometry: nothing separates the position from the bias): the fix
        measures the position with its whole covariance and the bias states stay at their prior;
        the tracker then adds the bias covariance to the reported one."""
        Rw, Rb = self._bias_split(R)
        self.Rb = Rb
        if not with_bias:
            self.bx[:] = 0.0
            self.by[:] = 0.0
            self.Pb = Rb.copy()
        d2 = self.gnss_innovation(z, R, None if with_bias else R)
        if not d2 <= self.p.gnss_gate_chi2:
            return False, d2
        if not with_bias:
            Si = np.linalg.inv(R)
            ex, ey = z[0] - self.x, z[1] - self.y
            self._reweight(-0.5 * (Si[0, 0] * ex * ex + 2 * Si[0, 1] * ex * ey + Si[1, 1] * ey * ey))
            return True, d2
        S = self.Pb + Rw
        Si = np.linalg.inv(S)
        ex, ey = z[0] - self.x - self.bx, z[1] - self.y - self.by
        ll = -0.5 * (Si[0, 0] * ex * ex + 2 * Si[0, 1] * ex * ey + Si[1, 1] * ey * ey)
        K = self.Pb @ Si
        self.bx = self.bx + K[0, 0] * ex + K[0, 1] * ey
        self.by = self.by + K[1, 0] * ex + K[1, 1] * ey
        self.Pb = (np.eye(2) - K) @ self.Pb
        self.Pb = 0.5 * (self.Pb + self.Pb.T)
        self._reweight(ll)
        return True, d2

    def update_yaw(self, yaw: float, std: float) -> None:
        """Heading measurement (e.g. GNSS course without odometry)."""
        d = _wrap(self.yaw - yaw)
        self._reweight(-0.5 * (d / std) ** 2)

    def update_camera(self, meas, check_consistency: bool = True) -> Tuple[bool, float]:
        """A camera measurement (``core.measurement``; evaluate it first): each kind carries its own
        update (``meas.update(self, check_consistency)``): retrieval's similarity map weights the
        particles (``update_factor``), metric matching's volume is a Bayes update on its own grid
        (``update_volume``). Returns (used, ess ratio or evidence); ``volume_reject_reason`` says why not."""
        self.volume_reject_reason = "inconsistent with the prior"
        return meas.update(self, check_consistency)

    def update_factor(self, fac: np.ndarray, check_consistency: bool = True) -> Tuple[bool, float]:
        """Weight each particle by ``fac`` (a measurement's factor at the particles). Returns (used,
        ess_ratio after). With ``check_consistency`` a measurement that leaves fewer than
        ``match_min_ess_ratio`` of the effective particles is rejected (weights unchanged)."""
        w = self.w * fac
        tot = float(w.sum())
        if not tot > 0:
            return False, 0.0
        w = w / tot
        ess = 1.0 / float(np.sum(w * w)) / self.n
        if check_consistency and ess < self.p.match_min_ess_ratio * self.ess_ratio():
            return False, ess
        self.w = w
        self._maybe_resample()
        return True, ess

    def update_volume(self, vol, check_consistency: bool = True) -> Tuple[bool, float]:
        """Bayes update on the volume's own grid, then particles drawn from the posterior.

        A metric volume is much sharper (decimetres) than the particle cloud is dense: weighting
        particles by it leaves a handful, or none near the peak, and the tail of a sharp
        likelihood does not pull the cloud towards the peak. So the prior (the cloud's Gaussian
        moments, inflated by half a cell) is multiplied with the volume's factor on every cell,
        and the cloud is redrawn from that posterior (uniform jitter inside the cell). Each new
        particle inherits the wheel scale, gyro bias and GNSS bias of a particle drawn from the
        old cloud; its GNSS bias is shifted by the position change, so p + b (what GNSS saw) is
        kept and the camera makes the bias observable. Consistency: the evidence E_prior[factor]
        (1 = no information) below ``volume_min_evidence`` rejects the volume, and so does a posterior with
        less than the volume's ``min_posterior_at_peak`` of its mass near its own peak (what the
        integrity monitor judged); ``volume_reject_reason`` says which."""
        mean, cov = self.mean_cov(floor=False)
        res, step = vol.res, vol.yaw_step
        S = cov + np.diag([res * res / 4.0, res * res / 4.0, step * step / 4.0])
        try:
            Si = np.linalg.inv(S)
        except np.linalg.LinAlgError:
            return False, 0.0
        dx = vol.xs[None, None, :] - mean[0]
        dy = vol.ys[None, :, None] - mean[1]
        da = _wrap(vol.yaws - mean[2])[:, None, None]
        q = (Si[0, 0] * dx * dx + Si[1, 1] * dy * dy + Si[2, 2] * da * da
             + 2 * (Si[0, 1] * dx * dy + Si[0, 2] * dx * da + Si[1, 2] * dy * da))
        prior = np.exp(-0.5 * (q - q.min()))
        prior /= prior.sum()
        fac = vol.cell_factor()
        if float(fac.max()) - float(fac.min()) < 1e-9:  # a flat volume carries no information
            return True, 1.0
        post = prior * fac
        evidence = float(post.sum())
        if not evidence > 0:
            return False, 0.0
        if check_consistency and evidence < self.p.volume_min_evidence:
            return False, evidence
        post = post / evidence
        if check_consistency and vol.min_posterior_at_peak > 0:
            share = float(post[:, vol.near_peak(self.p.volume_peak_radius_m)[1]].sum())
            if share < vol.min_posterior_at_peak:
                self.volume_reject_reason = "the prior favours another place than the camera's peak"
                return False, evidence
        post = post.ravel()
        cells = self._systematic(post)
        k, i, j = np.unravel_index(cells, fac.shape)
        r = self.rng
        n = self.n
        nx = vol.xs[j] + res * (r.random(n) - 0.5)
        ny = vol.ys[i] + res * (r.random(n) - 0.5)
        nyaw = _wrap(vol.yaws[k] + step * (r.random(n) - 0.5))
        par = self._systematic(self.w)
        r.shuffle(par)
        self.bx = self.bx[par] - (nx - self.x[par])
        self.by = self.by[par] - (ny - self.y[par])
        self.scale, self.gb = self.scale[par], self.gb[par]
        self.x, self.y, self.yaw = nx, ny, nyaw
        self.w = np.full(n, 1.0 / n)
        return True, evidence

    def _reweight(self, loglik: np.ndarray) -> None:
        lw = np.log(np.maximum(self.w, 1e-300)) + loglik
        lw -= lw.max()
        w = np.exp(lw)
        self.w = w / w.sum()
        self._maybe_resample()

    def ess_ratio(self) -> float:
        return 1.0 / float(np.sum(self.w * self.w)) / self.n

    def _systematic(self, w: np.ndarray) -> np.ndarray:
        """``n`` (particle count) indices into ``w`` (normalised weights of any length)."""
        n = self.n
        pos = (self.rng.random() + np.arange(n)) / n
        c = np.cumsum(w)
        c[-1] = 1.0
        return np.minimum(np.searchsorted(c, pos), len(w) - 1)

    def _maybe_resample(self) -> None:
        if self.ess_ratio() >= 0.5:
            return
        mean, cov = self.mean_cov(floor=False)
        i = self._systematic(self.w)
        self.x, self.y, self.yaw = self.x[i], self.y[i], self.yaw[i]
        self.bx, self.by, self.scale, self.gb = self.bx[i], self.by[i], self.scale[i], self.gb[i]
        self.w = np.full(self.n, 1.0 / self.n)
        # regularisation: a little jitter (10 % of the spread) so duplicated particles separate
        # again; inflates the variance by ~1 % per resampling, which the next updates absorb
        n, r, h = self.n, self.rng, self.p.resample_jitter
        if h > 0:
            self.x = self.x + h * math.sqrt(cov[0, 0]) * r.standard_normal(n)
            self.y = self.y + h * math.sqrt(cov[1, 1]) * r.standard_normal(n)
            self.yaw = _wrap(self.yaw + (h * math.sqrt(cov[2, 2]) + math.radians(0.02)) * r.standard_normal(n))

    # ------------------------------------------------------------------ output
    def mean_cov(self, floor: bool = True) -> Tuple[np.ndarray, np.ndarray]:
        """Weighted mean (x, y, yaw) and full 3x3 covariance (yaw residuals wrapped around the
        circular mean), plus the floors ``pos_std_floor_m`` and 0.5 deg."""
        w = self.w
        mx, my = float(w @ self.x), float(w @ self.y)
        myaw = math.atan2(float(w @ np.sin(self.yaw)), float(w @ np.cos(self.yaw)))
        d = np.stack([self.x - mx, self.y - my, _wrap(self.yaw - myaw)])
        cov = (d * w) @ d.T
        cov = 0.5 * (cov + cov.T)
        if not floor:
            return np.array([mx, my, myaw]), cov
        cov[0, 0] += self.p.pos_std_floor_m ** 2
        cov[1, 1] += self.p.pos_std_floor_m ** 2
        cov[2, 2] += math.radians(0.5) ** 2
        return np.array([mx, my, myaw]), cov

    def bias_implausible(self, chi2: float) -> bool:
        """True when the weighted mean GNSS bias lies outside the bias's stationary law N(0, Rb)
        (squared Mahalanobis distance above ``chi2``)."""
        if not self.initialised or not np.all(np.isfinite(self.Rb)) or np.linalg.det(self.Rb) <= 0:
            return False
        b = self.bias_mean()
        return float(b @ np.linalg.solve(self.Rb, b)) > chi2

    def bias_mean(self) -> np.ndarray:
        return np.array([float(self.w @ self.bx), float(self.w @ self.by)])
