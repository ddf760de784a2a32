"""The ground-truth motion of a drive: the speed profile along a ``Route`` (cruise per road kind,
lateral acceleration limit in turns, bounded acceleration and braking) and the sampled ``Trajectory``."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence

import numpy as np

from ..core.errors import InvalidArgument
from ..core.geo import wrap_angle
from .route import Route, _max_filter, _smooth


class State(NamedTuple):
    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray  # wrapped to (-pi, pi]
    speed: np.ndarray
    yaw_rate: np.ndarray


@dataclass
class Trajectory:
    """Ground-truth motion of base_link, sampled at a fixed rate from t = 0.

    ``yaw`` is continuous (unwrapped; may leave (-pi, pi]); ``at`` wraps it. ``s`` is the
    arc length along the route; ``distance`` the distance travelled since t = 0.
    """

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray
    speed: np.ndarray
    yaw_rate: np.ndarray
    s: np.ndarray

    def __post_init__(self):
        n = len(self.t)
        for k in ("x", "y", "yaw", "speed", "yaw_rate", "s"):
            if len(getattr(self, k)) != n:
                raise InvalidArgument(f"trajectory field {k} has {len(getattr(self, k))} samples, t has {n}")

    @property
    def distance(self) -> np.ndarray:
        return self.s - self.s[0]

    @property
    def duration(self) -> float:
        return float(self.t[-1] - self.t[0])

    def at(self, t) -> State:
        """Linearly interpolated state at time(s) ``t`` (clamped to the sampled span)."""
        t = np.asarray(t, float)
        yaw = np.interp(t, self.t, self.yaw)  # interpolating the unwrapped yaw: no jump at +-pi
        return State(np.interp(t, self.t, self.x), np.interp(t, self.t, self.y), wrap_angle(yaw),
                     np.interp(t, self.t, self.speed), np.interp(t, self.t, self.yaw_rate))

    def yaw_unwrapped_at(self, t) -> np.ndarray:
        return np.interp(np.asarray(t, float), self.t, self.yaw)


CRUISE_MPS = {"arterial": (13.0, 15.0), "street": (9.0, 12.5), "curve": (8.0, 11.0), "rural": (11.0, 14.0)}


def speed_profile(route: Route, rng: np.random.Generator, *, v_min: float = 5.0, v_max: float = 15.0,
                  lateral_accel: float = 2.0, accel: float = 1.2, decel: float = 2.0,
                  kinds: Optional[Sequence[str]] = None) -> np.ndarray:
    """Speed [m/s] at each route sample.

    A cruise speed is drawn per traversed edge from ``CRUISE_MPS`` by road kind (scaled into
    [v_min, v_max]); turns cap it at sqrt(lateral_accel / |curvature|) (curvature widened by
    +-10 m so the car slows before the turn); forward/backward passes bound acceleration and
    braking; a final smoothing over ~3 m removes acceleration steps. Never below ``v_min``:
    very tight turns (dead-end U-turns) are taken at ``v_min`` even if that exceeds the
    lateral limit.
    """
    ds = route.spacing_m
    n_steps = len(route.steps)
    cruise = np.empty(n_steps)
    for k in range(n_steps):
        lo, hi = CRUISE_MPS.get(kinds[k] if kinds is not None else "street", CRUISE_MPS["street"])
        frac_lo, frac_hi = (lo - 5.0) / 10.0, (hi - 5.0) / 10.0  # CRUISE_MPS assumes 5..15
        cruise[k] = v_min + (v_max - v_min) * rng.uniform(frac_lo, frac_hi)
    v = cruise[route.step_of]
    kappa = _max_filter(np.abs(route.curvature), int(round(10.0 / ds)))
    v = np.minimum(v, np.sqrt(lateral_accel / np.maximum(kappa, 1e-9)))
    v = np.clip(v, v_min, v_max)
    for i in range(1, len(v)):
        v[i] = min(v[i], math.sqrt(v[i - 1] ** 2 + 2 * accel * ds))
    for i in range(len(v) - 2, -1, -1):
        v[i] = min(v[i], math.sqrt(v[i + 1] ** 2 + 2 * decel * ds))
    return np.clip(_smooth(v, 3.0 / ds), v_min, v_max)


def simulate_truth(route: Route, rng: np.random.Generator, duration_s: float, rate_hz: float = 100.0, *,
                   v_min: float = 5.0, v_max: float = 15.0, lateral_accel: float = 2.0,
                   kinds: Optional[Sequence[str]] = None) -> Trajectory:
    """Drive ``route`` for ``duration_s`` seconds with ``speed_profile``; sample at ``rate_hz``.

    ``kinds`` (road kind per route step, e.g. from ``world.roads.edge_kind``) sets cruise speeds.
    Raises InvalidArgument if the route is too short for the duration.
    """
    v_s = speed_profile(route, rng, v_min=v_min, v_max=v_max, lateral_accel=lateral_accel, kinds=kinds)
    ds = np.diff(route.s)
    t_of_s = np.concatenate([[0.0], np.cumsum(ds / (0.5 * (v_s[1:] + v_s[:-1])))])
    if t_of_s[-1] < duration_s:
        raise InvalidArgument(f"route of {route.length:.0f} m lasts only {t_of_s[-1]:.1f} s at the simulated "
                              f"speeds; plan a longer route for a {duration_s} s drive")
    n = int(math.ceil(duration_s * rate_hz - 1e-9))
    t = np.arange(n + 1) / float(rate_hz)
    s = np.interp(t, t_of_s, route.s)
    x, y, yaw = route.at(s)
    speed = np.interp(s, route.s, v_s)
    yaw_rate = np.gradient(yaw, t) if len(t) > 1 else np.zeros_like(t)
    return Trajectory(t=t, x=x, y=y, yaw=yaw, speed=speed, yaw_rate=yaw_rate, s=s)
