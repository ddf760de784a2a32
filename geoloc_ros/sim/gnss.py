"""The simulated GNSS receiver: its error model (``GnssModel``: Gauss-Markov bias, white noise, multipath
jumps, outages), the fixes it reports (``GnssFixes``) and ``simulate_gnss``."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .rangecheck import _check_interval, _check_range
from .trajectory import Trajectory

# GNSS per-fix error state (ground truth for evaluation; the receiver does not know it)
GNSS_NOMINAL, GNSS_MULTIPATH, GNSS_OUTAGE = 0, 1, 2
# NavSatStatus.status values
STATUS_FIX, STATUS_NO_FIX = 0, -1


@dataclass(frozen=True)
class GnssModel:
    """GNSS receiver error model (per horizontal axis unless noted).

    Nominal error = hdop(t) * (Gauss-Markov bias + white noise), where ``hdop`` is a slowly
    varying geometry factor (mean ~1) that the receiver knows. The reported per-axis sigma is
    ``hdop * sqrt(bias_sigma^2 + white_sigma^2)``: honest in nominal operation.

    Multipath: occasional jumps of ``multipath_jump_m`` in a random direction, lasting
    ``multipath_duration_s``. The receiver does NOT detect them, so the reported sigma stays
    nominal (as with real single-frequency receivers); consumers must gate outliers.

    Outages: for ``outage_duration_s`` the receiver keeps publishing at its rate with status
    NO_FIX and NaN position (covariance type UNKNOWN), like common ROS GNSS drivers; there is
    no fix to use, and the gap is visible in the bag.
    """

    bias_sigma_m: float = 3.0
    bias_tau_s: float = 60.0
    white_sigma_m: float = 0.8
    hdop_mean: float = 1.0
    hdop_sigma: float = 0.25
    hdop_tau_s: float = 120.0
    vertical_factor: float = 1.6  # vertical error / horizontal error (VDOP/HDOP)
    ground_alt_m: float = 30.0  # ellipsoidal height of the (flat) ground
    multipath_rate_per_min: float = 0.8
    multipath_jump_m: Tuple[float, float] = (15.0, 40.0)
    multipath_duration_s: Tuple[float, float] = (2.0, 6.0)
    outage_rate_per_min: float = 0.4
    outage_duration_s: Tuple[float, float] = (2.0, 6.0)

    def __post_init__(self):
        o = "gnss"
        _check_range(o, "bias_sigma_m", self.bias_sigma_m, 0.0, 100.0)
        _check_range(o, "bias_tau_s", self.bias_tau_s, 0.0, 1e5, lo_open=True)
        _check_range(o, "white_sigma_m", self.white_sigma_m, 0.0, 100.0)
        _check_range(o, "hdop_mean", self.hdop_mean, 0.1, 20.0)
        _check_range(o, "hdop_sigma", self.hdop_sigma, 0.0, 10.0)
        _check_range(o, "hdop_tau_s", self.hdop_tau_s, 0.0, 1e5, lo_open=True)
        _check_range(o, "vertical_factor", self.vertical_factor, 0.1, 10.0)
        _check_range(o, "ground_alt_m", self.ground_alt_m, -500.0, 9000.0)
        _check_range(o, "multipath_rate_per_min", self.multipath_rate_per_min, 0.0, 60.0)
        _check_interval(o, "multipath_jump_m", self.multipath_jump_m, 0.0, 1000.0)
        _check_interval(o, "multipath_duration_s", self.multipath_duration_s, 0.0, 600.0)
        _check_range(o, "outage_rate_per_min", self.outage_rate_per_min, 0.0, 60.0)
        _check_interval(o, "outage_duration_s", self.outage_duration_s, 0.0, 600.0)

    @property
    def nominal_sigma_m(self) -> float:
        """Reported per-axis sigma at hdop = 1."""
        return math.hypot(self.bias_sigma_m, self.white_sigma_m)


# ---------------------------------------------------------------------------------------
# GNSS


@dataclass
class GnssFixes:
    """Simulated receiver output at ``t`` plus the truth needed to evaluate it.

    Local metres; ``alt`` is ellipsoidal height. During outages (``status == STATUS_NO_FIX``)
    x, y, alt are NaN. ``sigma_h`` / ``sigma_v`` are the reported per-axis standard deviations
    (what goes into NavSatFix.position_covariance). ``state`` is the hidden error state
    (GNSS_NOMINAL / GNSS_MULTIPATH / GNSS_OUTAGE), for evaluation only.
    """

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    alt: np.ndarray
    true_x: np.ndarray
    true_y: np.ndarray
    true_alt: np.ndarray
    sigma_h: np.ndarray
    sigma_v: np.ndarray
    hdop: np.ndarray
    status: np.ndarray
    state: np.ndarray

    def __len__(self) -> int:
        return len(self.t)

    @property
    def error_xy(self) -> np.ndarray:
        """[N, 2] measured minus true horizontal position (NaN during outages)."""
        return np.stack([self.x - self.true_x, self.y - self.true_y], axis=1)

    @property
    def error_h(self) -> np.ndarray:
        return np.hypot(self.x - self.true_x, self.y - self.true_y)

    def events(self, state: int) -> int:
        """Number of separate episodes of ``state``."""
        m = (self.state == state).astype(np.int8)
        return int(np.sum(np.diff(np.concatenate([[0], m])) == 1))

    def stats(self) -> Dict[str, float]:
        ok = self.status == STATUS_FIX
        nom = self.state == GNSS_NOMINAL
        e = self.error_h

        def rms(m):
            return float(np.sqrt(np.mean(e[m] ** 2))) if m.any() else float("nan")

        return {"fixes": int(len(self.t)), "rms_m": rms(ok), "rms_nominal_m": rms(nom),
                "p95_m": float(np.percentile(e[ok], 95)) if ok.any() else float("nan"),
                "max_m": float(np.max(e[ok])) if ok.any() else float("nan"),
                "multipath_events": self.events(GNSS_MULTIPATH), "outage_events": self.events(GNSS_OUTAGE),
                "no_fix": int((~ok).sum()), "mean_reported_sigma_m": float(np.mean(self.sigma_h[ok]))
                if ok.any() else float("nan")}


def _gauss_markov(rng: np.random.Generator, n: int, dt: float, tau: float, sigma: float, dims: int = 1) -> np.ndarray:
    """Stationary first-order Gauss-Markov process [n, dims] (starts in its stationary law)."""
    phi = math.exp(-dt / tau)
    q = sigma * math.sqrt(1.0 - phi * phi)
    w = rng.standard_normal((n, dims))
    out = np.empty((n, dims))
    out[0] = sigma * w[0]
    for k in range(1, n):
        out[k] = phi * out[k - 1] + q * w[k]
    return out


def _events(rng: np.random.Generator, t_end: float, rates: Sequence[float], durations: Sequence[Tuple[float, float]]):
    """Non-overlapping events as (kind index, start, end); Poisson arrivals of the summed rate."""
    total = sum(rates) / 60.0
    out = []
    if total <= 0:
        return out
    t = float(rng.exponential(1.0 / total))
    while t < t_end:
        kind = int(rng.choice(len(rates), p=np.asarray(rates) / sum(rates)))
        dur = float(rng.uniform(*durations[kind]))
        out.append((kind, t, t + dur))
        t += dur + float(rng.exponential(1.0 / total))
    return out


def simulate_gnss(traj: Trajectory, rng: np.random.Generator, rate_hz: float = 5.0,
                  model: GnssModel = GnssModel(), *, antenna_z_m: float = 1.9,
                  t: Optional[np.ndarray] = None) -> GnssFixes:
    """Receiver fixes at ``rate_hz`` (or at times ``t``) along ``traj``. See ``GnssModel``."""
    if t is None:
        n = max(int(math.ceil(traj.duration * rate_hz - 1e-9)), 1)
        t = np.arange(n) / float(rate_hz)
    t = np.asarray(t, float)
    n = len(t)
    dt = float(np.median(np.diff(t))) if n > 1 else 1.0 / rate_hz
    st = traj.at(t)
    true_alt = np.full(n, model.ground_alt_m + antenna_z_m)

    hdop = np.clip(model.hdop_mean + _gauss_markov(rng, n, dt, model.hdop_tau_s, model.hdop_sigma)[:, 0],
                   0.5 * model.hdop_mean, 3.0 * model.hdop_mean)
    bias = _gauss_markov(rng, n, dt, model.bias_tau_s, model.bias_sigma_m, dims=3)
    white = model.white_sigma_m * rng.standard_normal((n, 3))
    err = (bias + white) * hdop[:, None]
    err[:, 2] *= model.vertical_factor

    state = np.full(n, GNSS_NOMINAL, np.uint8)
    for kind, a, b in _events(rng, float(t[-1]) + dt, [model.multipath_rate_per_min, model.outage_rate_per_min],
                              [model.multipath_duration_s, model.outage_duration_s]):
        m = (t >= a) & (t < b)
        if kind == 0:
            ang = rng.uniform(0.0, 2 * math.pi)
            mag = rng.uniform(*model.multipath_jump_m)
            jump = np.array([mag * math.cos(ang), mag * math.sin(ang), 0.5 * mag * rng.choice([-1.0, 1.0])])
            err[m] += jump
            state[m] = GNSS_MULTIPATH
        else:
            state[m] = GNSS_OUTAGE

    status = np.where(state == GNSS_OUTAGE, STATUS_NO_FIX, STATUS_FIX).astype(np.int8)
    meas = np.stack([st.x, st.y, true_alt], axis=1) + err
    meas[status == STATUS_NO_FIX] = np.nan
    sigma_h = hdop * model.nominal_sigma_m
    return GnssFixes(t=t, x=meas[:, 0], y=meas[:, 1], alt=meas[:, 2], true_x=st.x, true_y=st.y, true_alt=true_alt,
                     sigma_h=sigma_h, sigma_v=sigma_h * model.vertical_factor, hdop=hdop, status=status, state=state)
