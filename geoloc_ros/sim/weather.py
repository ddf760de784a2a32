"""Weather for the camera renderer (``Conditions.weather``): rain and fog.

* ``rain``: overcast light (``lighting.lit_appearance``), wet surfaces in the renderer's albedo copy
  (asphalt and paint 0.55 x: darker, and the paint's contrast drowns in the reflection), a specular
  wet road: each road / paint / parking / sidewalk pixel adds the scene mirrored about the horizon
  (the sky, facades, lamps and head lights, smeared downwards by the film of water) weighted by the
  Fresnel reflectance at its grazing angle (Schlick) x the wetness; drops on the lens, renewed each
  wiper period (``LensDrops``: each drop shows the scene through it, blurred and upside down).
* ``fog``: visibility V drawn in 60-200 m; the scene is attenuated with distance towards the
  airlight, ``exp(-3 d / V)`` (Koschmieder: 5 % contrast at V), the sky is airlight.
"""
from __future__ import annotations

import math
from typing import Dict

import numpy as np

from .world import Sem

_WET = {Sem.ROAD: 0.55, Sem.MARKING: 0.55, Sem.MARKING_YELLOW: 0.55, Sem.PARKING: 0.55, Sem.SIDEWALK: 0.72,
        Sem.GRASS: 0.85, Sem.FIELD: 0.85, Sem.DIRT: 0.7}
_SPECULAR = {Sem.ROAD: 0.75, Sem.MARKING: 0.5, Sem.MARKING_YELLOW: 0.5, Sem.PARKING: 0.75, Sem.SIDEWALK: 0.3}


def wet_albedo(sem: np.ndarray, albedo: np.ndarray) -> None:
    """Darken wet surfaces in ``albedo`` (the renderer's copy), in place."""
    lut = np.ones(256, np.float32)
    for k, f in _WET.items():
        lut[int(k)] = f
    fac = lut[sem]
    albedo[:] = np.clip(albedo.astype(np.float32) * fac[..., None] + 0.5, 0, 255).astype(np.uint8)


_SPEC_LUT = np.zeros(256, np.float32)
for _k, _f in _SPECULAR.items():
    _SPEC_LUT[int(_k)] = _f


def wet_reflection(img: np.ndarray, sem: np.ndarray, vcs: np.ndarray, fy: float, wetness: float) -> None:
    """Add the mirrored scene to wet ground pixels of the level image, in place (see the module)."""
    H = img.shape[0]
    w = _SPEC_LUT[sem] * np.float32(wetness)  # [H, W]; 0 for sky (255) and obstacles
    rows = np.nonzero(w.max(axis=1) > 0)[0]
    if len(rows) == 0:
        return
    vc = vcs[rows]
    below = vc > 0
    rows, vc = rows[below], vc[below]
    cos_i = (vc / np.sqrt(vc ** 2 + fy ** 2)).astype(np.float32)  # sine of the depression angle
    R = 0.02 + 0.98 * (1.0 - cos_i) ** 5
    refl = np.zeros((len(rows), img.shape[1], 3), np.float32)
    for off in (0, 2, 5):  # the water film smears reflections downwards (long streaks under lights)
        mr = np.clip(np.rint(-vc - vcs[0]).astype(np.int64) - off, 0, H - 1)
        refl += img[mr]
    refl /= 3.0
    k = (w[rows] * R[:, None])[..., None]
    img[rows] = img[rows] * (1.0 - 0.5 * k) + k * refl


def fog(img: np.ndarray, depth: np.ndarray, visibility_m: float, airlight: np.ndarray) -> None:
    """Attenuate towards ``airlight`` with distance (sky: airlight), in place."""
    beta = 3.0 / visibility_m
    f = np.exp(np.float32(-beta) * np.minimum(depth, np.float32(1e6)))[..., None]  # sky (inf): 0
    img *= f
    img += (1.0 - f) * airlight[None, None, :]


class LensDrops:
    """Rain drops on the lens: a fresh set each wiper period, drawn from the drive's weather stream."""

    def __init__(self, seed: int, rng: np.random.Generator):
        self.seed = int(seed)
        self.period_s = float(rng.uniform(3.0, 6.0))
        self.mean_count = float(rng.uniform(6.0, 14.0))

    def apply(self, img: np.ndarray, t: float | None) -> int:
        H, W = img.shape[:2]
        period = int(math.floor((t or 0.0) / self.period_s))
        phase = ((t or 0.0) % self.period_s) / self.period_s  # drops accumulate through the period
        rng = np.random.default_rng([self.seed, period & 0x7FFFFFFF])
        n_all = int(rng.poisson(self.mean_count))
        cu, cv = rng.uniform(0, W, n_all), rng.uniform(0, H, n_all)
        rad = rng.uniform(0.012, 0.045, n_all) * W
        born = rng.uniform(0.0, 1.0, n_all)
        src = img.copy()
        n = 0
        for u, v, r, b in zip(cu, cv, rad, born):
            if b > max(phase, 0.15):
                continue
            r0, r1 = max(int(v - r) - 1, 0), min(int(v + r) + 2, H)
            c0, c1 = max(int(u - r) - 1, 0), min(int(u + r) + 2, W)
            if r0 >= r1 or c0 >= c1:
                continue
            yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
            d = np.sqrt(((yy - v) ** 2 + (xx - u) ** 2)) / r
            m = d < 1.0
            if not m.any():
                continue
            # a drop is a small fisheye lens: the scene around it, upside down, blurred
            acc = np.zeros((int(m.sum()), 3), np.float32)
            for dy, dx in ((0, 0), (2, 0), (0, 2), (-2, 0), (0, -2)):
                sr = np.clip(np.rint(v - (yy[m] - v) * 1.8 + dy), 0, H - 1).astype(np.int64)
                sc = np.clip(np.rint(u - (xx[m] - u) * 1.8 + dx), 0, W - 1).astype(np.int64)
                acc += src[sr, sc]
            acc /= 5.0
            rim = np.clip((d[m] - 0.75) / 0.25, 0.0, 1.0)[:, None]
            img[r0:r1, c0:c1][m] = (acc * 1.08) * (1 - 0.45 * rim) + src[r0:r1, c0:c1][m] * 0.45 * rim
            n += 1
        return n

    def realisation(self) -> Dict:
        return {"wiper_period_s": round(self.period_s, 3), "drops_per_period": round(self.mean_count, 2)}
