"""The orthophoto's colour: the albedo painted over the semantic layers (value noise, roofs, cars) and its
lighting by a sun (``shade``: Lambert shading from height gradients, ``cast_shadows``)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Tuple

import numpy as np

from .world import Buildings, Sem, default_palette

if TYPE_CHECKING:
    from .generate import _Canvas


# ---------------------------------------------------------------------------------------
# colour

_CARS = np.array([(200, 200, 205), (30, 30, 35), (150, 20, 25), (40, 60, 130), (170, 170, 175), (235, 235, 235),
                  (90, 95, 100), (20, 80, 60)], np.int16)


def smooth_noise(rng, shape: Tuple[int, int], cell_px: int) -> np.ndarray:
    """Value noise in [-1, 1]: random values on a coarse grid, bilinearly upsampled."""
    H, W = shape
    gh, gw = H // cell_px + 2, W // cell_px + 2
    coarse = rng.uniform(-1.0, 1.0, (gh, gw)).astype(np.float32)
    r = (np.arange(H, dtype=np.float32) + 0.5) / cell_px
    c = (np.arange(W, dtype=np.float32) + 0.5) / cell_px
    r0, c0 = r.astype(np.int64), c.astype(np.int64)
    fr, fc = (r - r0)[:, None], (c - c0)[None, :]
    top = coarse[r0][:, c0] * (1 - fc) + coarse[r0][:, c0 + 1] * fc
    bot = coarse[r0 + 1][:, c0] * (1 - fc) + coarse[r0 + 1][:, c0 + 1] * fc
    return top * (1 - fr) + bot * fr


def _paint_albedo(rng, g: _Canvas, buildings: Buildings, trees) -> None:
    pal = default_palette().astype(np.int16)
    base = pal[g.sem]  # [H, W, 3]
    n_lo = smooth_noise(rng, g.shape, max(int(40 / g.gsd), 4))
    n_mid = smooth_noise(rng, g.shape, max(int(6 / g.gsd), 2))
    n_hi = rng.integers(-6, 7, g.shape).astype(np.int16)
    veg = np.isin(g.sem, (Sem.GRASS, Sem.FIELD, Sem.TREE))
    # vegetation: patchy brightness and hue; trees also get their own tone and a leafy texture
    var = (n_lo * 16 + n_mid * 8).astype(np.int16)
    base += np.where(veg, var, (n_lo * 6).astype(np.int16))[..., None]
    base[..., 0] += np.where(veg, (n_lo * 10).astype(np.int16), 0)
    tree = g.sem == Sem.TREE
    base += np.where(tree, g.tone + n_hi * 2, 0)[..., None]
    field = g.sem == Sem.FIELD
    base += np.where(field, g.tone, 0)[..., None]
    # asphalt wear
    asph = np.isin(g.sem, (Sem.ROAD, Sem.PARKING))
    base += np.where(asph, (n_mid * 5).astype(np.int16), 0)[..., None]
    # cars in lots
    car = g.sem == Sem.CAR
    if car.any():
        base[car] = _CARS[np.clip(g.tone[car], 0, len(_CARS) - 1)]
    # roofs: the building's own colour; a darker parapet ring on flat roofs
    bmask = g.oid > 0
    if bmask.any():
        ids = g.oid[bmask] - 1
        roof = buildings.roof_rgb.astype(np.int16)[ids]
        base[bmask] = roof
        edge = bmask & ~(_shift_eq(g.oid, 1, 0) & _shift_eq(g.oid, -1, 0) & _shift_eq(g.oid, 0, 1) &
                         _shift_eq(g.oid, 0, -1))
        flat = np.zeros_like(bmask)
        flat[bmask] = buildings.ridge_h[ids] <= 0
        base[edge & flat] -= 25
    base += n_hi[..., None]
    g.albedo[:] = np.clip(base, 0, 255).astype(np.uint8)


def _shift_eq(a: np.ndarray, dr: int, dc: int) -> np.ndarray:
    """a == a shifted by (dr, dc) (edges compare unequal)."""
    out = np.zeros(a.shape, bool)
    H, W = a.shape
    rs = slice(max(dr, 0), H + min(dr, 0))
    rd = slice(max(-dr, 0), H + min(-dr, 0))
    cs = slice(max(dc, 0), W + min(dc, 0))
    cd = slice(max(-dc, 0), W + min(-dc, 0))
    out[rd, cd] = a[rd, cd] == a[rs, cs]
    return out


def shade(albedo: np.ndarray, height: np.ndarray, gsd: float, sun_azimuth_deg: float, sun_elevation_deg: float,
          ambient: float = 0.38, rng=None) -> np.ndarray:
    """Light an albedo map from above: Lambert shading from height gradients + cast shadows.

    Flat sunlit ground keeps its albedo; shadowed ground keeps ``ambient / (ambient + direct)``.
    """
    az, el = math.radians(sun_azimuth_deg), math.radians(sun_elevation_deg)
    sun = np.array([math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el)])
    gy, gx = np.gradient(height.astype(np.float32), gsd)
    dhdx, dhdy = gx, -gy  # rows grow southwards
    steep = np.hypot(dhdx, dhdy) > 2.5  # walls between pixels: treat as flat (a true orthophoto)
    dhdx = np.where(steep, 0.0, dhdx)
    dhdy = np.where(steep, 0.0, dhdy)
    norm = np.sqrt(dhdx ** 2 + dhdy ** 2 + 1.0)
    ndots = (-dhdx * sun[0] - dhdy * sun[1] + sun[2]) / norm
    shadow = cast_shadows(height, gsd, sun_azimuth_deg, sun_elevation_deg)
    direct = 1.0 - ambient
    light = (ambient + direct * np.clip(ndots, 0.0, None) * (~shadow)) / (ambient + direct * sun[2])
    out = albedo.astype(np.float32) * light[..., None].astype(np.float32)
    if rng is not None:
        out += rng.normal(0.0, 1.5, out.shape[:2])[..., None].astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def cast_shadows(height: np.ndarray, gsd: float, sun_azimuth_deg: float, sun_elevation_deg: float) -> np.ndarray:
    """Boolean mask of pixels in the shadow of taller neighbours towards the sun.

    Propagates the shadow-casting height away from the sun with doubling shifts
    (1, 2, 4, ... px), each pass taking max(H, shifted(H) - drop): log2(max length) passes.
    """
    az, el = math.radians(sun_azimuth_deg), math.radians(sun_elevation_deg)
    # direction towards which shadows fall, in (row, col) pixels: away from the sun
    dcol, drow = -math.sin(az), math.cos(az)
    tan_el = math.tan(el)
    hmax = float(height.max()) if height.size else 0.0
    if hmax <= 0:
        return np.zeros(height.shape, bool)
    max_len_px = hmax / max(tan_el, 1e-3) / gsd
    H = height.astype(np.float32).copy()
    step = 1
    while step <= 2 * max_len_px:
        sr, sc = int(round(drow * step)), int(round(dcol * step))
        dist_m = math.hypot(sr, sc) * gsd
        rows, cols = H.shape
        if abs(sr) >= rows or abs(sc) >= cols:  # a shift past the raster casts nothing (low sun, tall terrain)
            break
        shifted = np.full_like(H, -np.inf)
        dst = (slice(max(sr, 0), rows + min(sr, 0)), slice(max(sc, 0), cols + min(sc, 0)))
        src = (slice(max(-sr, 0), rows + min(-sr, 0)), slice(max(-sc, 0), cols + min(-sc, 0)))
        shifted[dst] = H[src] - dist_m * tan_el
        np.maximum(H, shifted, out=H)
        step *= 2
    return H > height + 0.25
