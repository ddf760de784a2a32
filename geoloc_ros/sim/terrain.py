"""Gentle terrain: a smooth ground elevation under the town, so the car pitches and rolls.

The elevation is a sum of a few long plane waves (analytic, so the drive's attitude has exact,
smooth slopes), each with a grade drawn from ``grade_per_term``: with the defaults the road grades
are typically 1-4 % and at most ~7 %, like a rolling town. Heights of buildings, trees and cars
stay relative to the ground beneath them; the world stores the elevation as ``elevation.tif``
(metres above the datum, i.e. above ``GnssModel.ground_alt_m``) and its terms in
``world.json["terrain"]``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from ..core.config import check_keys
from ..core.errors import InvalidArgument


@dataclass(frozen=True)
class TerrainParams:
    terms: int = 4
    wavelength_m: Tuple[float, float] = (250.0, 900.0)
    grade_per_term: Tuple[float, float] = (0.006, 0.016)

    def __post_init__(self):
        if isinstance(self.terms, bool) or not isinstance(self.terms, int) or not 1 <= self.terms <= 16:
            raise InvalidArgument(f"terrain.terms must be an integer in 1..16, got {self.terms!r}")
        for name, lo, hi in (("wavelength_m", 20.0, 1e6), ("grade_per_term", 0.0, 0.2)):
            v = getattr(self, name)
            if not (isinstance(v, (tuple, list)) and len(v) == 2 and lo <= v[0] <= v[1] <= hi):
                raise InvalidArgument(f"terrain.{name} must be a (low, high) pair within {lo:g}..{hi:g}, got {v!r}")

    def to_dict(self) -> Dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Dict) -> "TerrainParams":
        check_keys(cls, d, "terrain")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


@dataclass(frozen=True)
class Terrain:
    """E(x, y) = sum_i a_i sin(k_i . p + phi_i) (local metres)."""

    waves: Tuple[Tuple[float, float, float, float], ...] = ()  # (amplitude_m, k_x, k_y, phase)

    @classmethod
    def sample(cls, rng: np.random.Generator, p: TerrainParams) -> "Terrain":
        waves = []
        for _ in range(p.terms):
            lam = float(rng.uniform(*p.wavelength_m))
            grade = float(rng.uniform(*p.grade_per_term))
            ang = float(rng.uniform(0.0, 2 * math.pi))
            k = 2 * math.pi / lam
            waves.append((grade / k, k * math.cos(ang), k * math.sin(ang), float(rng.uniform(0.0, 2 * math.pi))))
        return cls(tuple(waves))

    def elevation(self, x, y) -> np.ndarray:
        x, y = np.asarray(x, float), np.asarray(y, float)
        e = np.zeros(np.broadcast(x, y).shape)
        for a, kx, ky, ph in self.waves:
            e = e + a * np.sin(kx * x + ky * y + ph)
        return e

    def gradient(self, x, y) -> Tuple[np.ndarray, np.ndarray]:
        """(dE/dx, dE/dy)."""
        x, y = np.asarray(x, float), np.asarray(y, float)
        gx = np.zeros(np.broadcast(x, y).shape)
        gy = np.zeros_like(gx)
        for a, kx, ky, ph in self.waves:
            c = a * np.cos(kx * x + ky * y + ph)
            gx, gy = gx + kx * c, gy + ky * c
        return gx, gy

    def raster(self, world_meta) -> np.ndarray:
        """float32 [H, W] elevation at the pixel centres of a world grid."""
        n = world_meta.shape[0]
        g = world_meta.gsd_m
        xs = world_meta.x_min + (np.arange(n) + 0.5) * g
        ys = world_meta.y_max - (np.arange(n) + 0.5) * g
        return self.elevation(xs[None, :], ys[:, None]).astype(np.float32)

    def to_dict(self) -> Dict:
        return {"waves": [{"amplitude_m": a, "wavevector_per_m": [kx, ky], "phase_rad": ph}
                          for a, kx, ky, ph in self.waves],
                "max_grade": float(sum(math.hypot(kx, ky) * a for a, kx, ky, _ in self.waves)),
                "formula": "E(p) = sum amplitude_m sin(wavevector . p + phase), metres above the datum"}

    @classmethod
    def from_dict(cls, d: Optional[Dict]) -> "Terrain":
        if not d:
            return cls()
        return cls(tuple((float(w["amplitude_m"]), float(w["wavevector_per_m"][0]), float(w["wavevector_per_m"][1]),
                          float(w["phase_rad"])) for w in d["waves"]))


def terrain_rng(seed: int) -> np.random.Generator:
    """The terrain's own random stream (the town is the same with or without terrain)."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(2,)))
