"""The aerial survey: an orthophoto flown at another time than the drive, as real imagery is.

The world's layers (albedo, height, semantic, object_id, elevation) are the truth at drive time;
the camera renderer samples them. ``survey_orthophoto`` makes what a survey aircraft recorded
months apart, each part switchable through ``SurveyGap``:

``sun``              its own sun (azimuth/elevation of the flight), so other cast shadows;
``season``           its own season: canopy colour and size (leaf-off crowns shrink, summer crowns
                     overhang sidewalks and roads), lawn and field colour;
``cars``             at least ``car_change_fraction`` of the lot cars removed, as many parked in
                     other stalls, and its own cars along the kerbs;
``photometric``      gamma, white balance and haze (airlight) of the survey camera;
``blur``             effective ground resolution ``resolution_m`` (0.3-0.5 m): Gaussian PSF with
                     sigma = 0.5 x resolution;
``jpeg``             the orthophoto GeoTIFF is JPEG-compressed (YCbCr) at ``jpeg_quality``;
``misregistration``  a global shift (0.3-1.5 m) plus a gentle smooth warp (``Misregistration``).

Sign convention of the misregistration (used by evaluation): a feature truly at local p
(metres, world frame) appears in the orthophoto at ``p + d(p)``; ``misregistration_displacement``
returns d. An estimate made by matching against the orthophoto is therefore correct "in the
map's own frame" when it equals ``truth + d(truth)``.

Everything drawn is recorded (``SurveyResult.record`` -> ``world.json["survey"]``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..core.config import check_keys
from ..core.errors import InvalidArgument
from .world import ParkedCars, Sem, default_palette, rasterize_box

SURVEY_PARTS = ("sun", "season", "cars", "photometric", "blur", "jpeg", "misregistration")
SURVEY_SEASONS = ("leaf_off", "spring", "summer", "autumn")
# (tree gain RGB, lawn gain RGB, field gain RGB, canopy growth in pixels: <0 erodes, >0 overhangs)
_SEASON = {
    "leaf_off": ((1.55, 1.05, 1.15), (1.25, 1.02, 0.85), (1.25, 0.95, 0.8), -2),
    "spring": ((1.05, 1.18, 0.85), (0.95, 1.12, 0.85), (0.9, 1.1, 0.9), -1),
    "summer": ((0.95, 1.0, 0.95), (1.12, 1.04, 0.78), (1.1, 1.0, 0.8), 1),
    "autumn": ((1.45, 1.0, 0.6), (1.1, 1.0, 0.82), (1.2, 0.95, 0.75), 0),
}
_LEAF_OFF_BRANCHES = np.array([112.0, 100.0, 86.0], np.float32)
_HAZE_RGB = np.array([200.0, 206.0, 216.0], np.float32)
_CAR_RGB = np.array([(200, 200, 205), (30, 30, 35), (150, 20, 25), (40, 60, 130), (170, 170, 175), (235, 235, 235),
                     (90, 95, 100), (20, 80, 60)], np.float32)
CAR_HALF_LEN_M, CAR_HALF_WID_M, CAR_HEIGHT_M = 2.2, 0.9, 1.5


def _pair(owner: str, name: str, v, lo: float, hi: float) -> None:
    if not (isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(a, (int, float)) for a in v)
            and lo <= v[0] <= v[1] <= hi):
        raise InvalidArgument(f"{owner}.{name} must be a (low, high) pair within {lo:g}..{hi:g}, got {v!r}")


@dataclass(frozen=True)
class SurveyGap:
    """Which parts of the survey gap are simulated, and the ranges they are drawn from."""

    sun: bool = True
    season: bool = True
    cars: bool = True
    photometric: bool = True
    blur: bool = True
    jpeg: bool = True
    misregistration: bool = True
    sun_azimuth_deg: Tuple[float, float] = (100.0, 260.0)
    sun_elevation_deg: Tuple[float, float] = (28.0, 62.0)
    car_change_fraction: Tuple[float, float] = (0.5, 0.75)
    kerb_car_density: Tuple[float, float] = (0.1, 0.45)
    gamma: Tuple[float, float] = (0.8, 1.25)
    white_balance: Tuple[float, float] = (0.9, 1.1)
    haze: Tuple[float, float] = (0.03, 0.12)
    resolution_m: Tuple[float, float] = (0.3, 0.5)
    jpeg_quality: int = 80
    shift_m: Tuple[float, float] = (0.3, 1.5)
    warp_amplitude_m: Tuple[float, float] = (0.2, 0.6)
    warp_wavelength_m: Tuple[float, float] = (300.0, 900.0)

    def __post_init__(self):
        o = "survey"
        for name in SURVEY_PARTS:
            if not isinstance(getattr(self, name), bool):
                raise InvalidArgument(f"{o}.{name} must be true or false, got {getattr(self, name)!r}")
        _pair(o, "sun_azimuth_deg", self.sun_azimuth_deg, 0.0, 360.0)
        _pair(o, "sun_elevation_deg", self.sun_elevation_deg, 5.0, 90.0)
        _pair(o, "car_change_fraction", self.car_change_fraction, 0.0, 1.0)
        _pair(o, "kerb_car_density", self.kerb_car_density, 0.0, 1.0)
        _pair(o, "gamma", self.gamma, 0.3, 3.0)
        _pair(o, "white_balance", self.white_balance, 0.5, 1.5)
        _pair(o, "haze", self.haze, 0.0, 0.8)
        _pair(o, "resolution_m", self.resolution_m, 0.0, 5.0)
        _pair(o, "shift_m", self.shift_m, 0.0, 100.0)
        _pair(o, "warp_amplitude_m", self.warp_amplitude_m, 0.0, 100.0)
        _pair(o, "warp_wavelength_m", self.warp_wavelength_m, 10.0, 1e6)
        if isinstance(self.jpeg_quality, bool) or not isinstance(self.jpeg_quality, int) or \
                not 1 <= self.jpeg_quality <= 100:
            raise InvalidArgument(f"{o}.jpeg_quality must be an integer in 1..100, got {self.jpeg_quality!r}")

    @classmethod
    def off(cls) -> "SurveyGap":
        """No gap: the orthophoto is the world at drive time under the legacy survey sun (as before)."""
        return cls(**{p: False for p in SURVEY_PARTS})

    def without(self, parts: Sequence[str]) -> "SurveyGap":
        """This gap with ``parts`` (names in ``SURVEY_PARTS``) switched off."""
        bad = sorted(set(parts) - set(SURVEY_PARTS))
        if bad:
            raise InvalidArgument(f"unknown survey part(s) {bad}; valid: {', '.join(SURVEY_PARTS)}")
        d = asdict(self)
        d.update({p: False for p in parts})
        return SurveyGap.from_dict(d)

    @property
    def enabled(self) -> List[str]:
        return [p for p in SURVEY_PARTS if getattr(self, p)]

    def to_dict(self) -> Dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Dict) -> "SurveyGap":
        check_keys(cls, d, "survey")
        kinds = {f.name: f.type for f in fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) and "Tuple" in str(kinds[k]) else v) for k, v in d.items()})


# ---------------------------------------------------------------------------------------
# misregistration


@dataclass(frozen=True)
class Misregistration:
    """Where the orthophoto puts things: a feature truly at p appears at p + d(p), with

    d(p) = shift + sum_i a_i * (cos t_i, sin t_i) * sin(k_i . p + phi_i)

    (local metres, x east, y north). The warp terms are long plane waves (wavelength hundreds of
    metres): a gentle, smooth rubber sheet like a real orthophoto's residual registration error.
    """

    shift_m: Tuple[float, float] = (0.0, 0.0)
    # per term: (amplitude_m, displacement direction rad CCW from +x, k_x 1/m, k_y 1/m, phase rad)
    warp: Tuple[Tuple[float, float, float, float, float], ...] = ()

    def displacement(self, x, y) -> Tuple[np.ndarray, np.ndarray]:
        """(dx, dy) metres at local (x, y) (arrays broadcast)."""
        x, y = np.asarray(x, float), np.asarray(y, float)
        dx = np.full(np.broadcast(x, y).shape, float(self.shift_m[0]))
        dy = np.full(dx.shape, float(self.shift_m[1]))
        for a, t, kx, ky, ph in self.warp:
            s = a * np.sin(kx * x + ky * y + ph)
            dx = dx + math.cos(t) * s
            dy = dy + math.sin(t) * s
        return dx, dy

    @classmethod
    def sample(cls, rng: np.random.Generator, gap: SurveyGap) -> "Misregistration":
        mag = rng.uniform(*gap.shift_m)
        ang = rng.uniform(0.0, 2 * math.pi)
        amp = rng.uniform(*gap.warp_amplitude_m)
        terms = []
        for _ in range(3):  # three terms of amp/3: |warp| <= amp everywhere
            lam = rng.uniform(*gap.warp_wavelength_m)
            wdir = rng.uniform(0.0, 2 * math.pi)
            k = 2 * math.pi / lam
            terms.append((amp / 3.0, float(rng.uniform(0.0, 2 * math.pi)), k * math.cos(wdir), k * math.sin(wdir),
                          float(rng.uniform(0.0, 2 * math.pi))))
        return cls(shift_m=(mag * math.cos(ang), mag * math.sin(ang)), warp=tuple(terms))

    def to_dict(self) -> Dict:
        amp = sum(t[0] for t in self.warp)
        return {"shift_m": [float(v) for v in self.shift_m],
                "warp_amplitude_m": float(amp),
                "warp_terms": [{"amplitude_m": a, "direction_rad": t, "wavevector_per_m": [kx, ky], "phase_rad": ph}
                               for a, t, kx, ky, ph in self.warp],
                "convention": "a feature truly at local p appears in the orthophoto at p + d(p); "
                              "d = shift_m + sum amplitude_m (cos direction, sin direction) sin(k . p + phase)"}

    @classmethod
    def from_dict(cls, d: Optional[Dict]) -> "Misregistration":
        if not d:
            return cls()
        terms = tuple((float(t["amplitude_m"]), float(t["direction_rad"]), float(t["wavevector_per_m"][0]),
                       float(t["wavevector_per_m"][1]), float(t["phase_rad"])) for t in d.get("warp_terms", []))
        return cls(shift_m=(float(d["shift_m"][0]), float(d["shift_m"][1])), warp=terms)


def misregistration_displacement(world: Union["object", Path, str, Dict], x, y) -> Tuple[np.ndarray, np.ndarray]:
    """Misregistration d(x, y) of a world's orthophoto, metres in the world's local frame.

    A feature truly at (x, y) appears in the orthophoto at (x + dx, y + dy). ``world`` is a
    ``World``, a world directory, or its ``world.json`` dict. Worlds without a survey gap (or
    format v1) give zeros. Evaluation "in the map's own frame": error = estimate - (truth + d(truth)).
    """
    if isinstance(world, (str, Path)):
        from .world import read_world_manifest

        world = read_world_manifest(Path(world))
    survey = world.get("survey") if isinstance(world, dict) else getattr(world, "survey", None)
    return Misregistration.from_dict((survey or {}).get("misregistration")).displacement(x, y)


# ---------------------------------------------------------------------------------------
# image helpers


def gaussian_blur(img: np.ndarray, sigma_px: float) -> np.ndarray:
    """Separable Gaussian blur of a float [H, W(, C)] image, edges repeated."""
    if sigma_px <= 0:
        return img
    r = max(int(math.ceil(3.0 * sigma_px)), 1)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_px) ** 2)
    k = (k / k.sum()).astype(np.float32)
    out = img
    for axis in (0, 1):
        pad = [(0, 0)] * img.ndim
        pad[axis] = (r, r)
        p = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for i, w in enumerate(k):
            acc += w * np.take(p, np.arange(i, i + n), axis=axis)
        out = acc
    return out


def _any_neighbour(mask: np.ndarray) -> np.ndarray:
    out = np.zeros_like(mask)
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def _shifted(a: np.ndarray, dr: int, dc: int) -> np.ndarray:
    """a moved by (dr, dc) pixels (out[r, c] = a[r - dr, c - dc]); edges repeat."""
    H, W = a.shape[:2]
    r = np.clip(np.arange(H) - dr, 0, H - 1)
    c = np.clip(np.arange(W) - dc, 0, W - 1)
    return a[r][:, c]


# ---------------------------------------------------------------------------------------
# the survey


@dataclass
class SurveyResult:
    ortho: np.ndarray  # uint8 [H, W, 3]: what the survey recorded, in the orthophoto's (misregistered) frame
    height: np.ndarray  # survey-time object heights, true frame
    semantic: np.ndarray  # survey-time classes, true frame
    shadow: np.ndarray  # survey-time cast shadows, true frame
    record: Dict  # -> world.json["survey"]


def survey_orthophoto(albedo: np.ndarray, height: np.ndarray, semantic: np.ndarray, object_id: np.ndarray,
                      gsd_m: float, xy_to_rc, rc_to_xy, roads, cars: ParkedCars, gap: SurveyGap,
                      rng: np.random.Generator, *, legacy_sun: Tuple[float, float],
                      elevation: Optional[np.ndarray] = None) -> SurveyResult:
    """Render the orthophoto of a survey flown at another time (see the module docstring).

    ``legacy_sun`` (azimuth, elevation) is used when ``gap.sun`` is off. ``elevation`` (terrain,
    metres) adds to the heights for shading and cast shadows. Parts are drawn in a fixed order from
    ``rng`` whether or not they are enabled, so switching one part off leaves the others unchanged.
    """
    from .generate import shade
    from .render import park_kerb_cars

    rec: Dict = {"parts": gap.enabled, "gap": gap.to_dict()}
    alb = albedo.astype(np.float32)
    hgt = height.astype(np.float32).copy()
    sem = semantic.copy()
    pal = default_palette().astype(np.float32)

    # -- draws (fixed order) -------------------------------------------------------------
    sun = (float(rng.uniform(*gap.sun_azimuth_deg)), float(rng.uniform(*gap.sun_elevation_deg)))
    season = str(SURVEY_SEASONS[int(rng.integers(len(SURVEY_SEASONS)))])
    car_rng = np.random.default_rng(rng.integers(0, 2 ** 63 - 1))
    gamma = float(rng.uniform(*gap.gamma))
    wb = rng.uniform(*gap.white_balance, 3)
    wb = wb / wb.mean()
    haze = float(rng.uniform(*gap.haze))
    resolution = float(rng.uniform(*gap.resolution_m))
    mis = Misregistration.sample(rng, gap)
    noise_rng = np.random.default_rng(rng.integers(0, 2 ** 63 - 1))

    # -- season: canopy size and colour, lawns, fields -------------------------------------
    if gap.season:
        tree_gain, lawn_gain, field_gain, grow = _SEASON[season]
        tree = sem == Sem.TREE
        for _ in range(-grow):  # erode: the crown edge shows the lawn beneath
            edge = tree & _any_neighbour(~tree)
            tree &= ~edge
            sem[edge] = Sem.GRASS
            hgt[edge] = 0.0
            alb[edge] = pal[Sem.GRASS]
        for _ in range(max(grow, 0)):  # grow: crowns overhang lawns, sidewalks and roads
            grown = np.zeros_like(tree)
            for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                src = _shifted(tree, dr, dc) & ~tree & ~grown & (sem != Sem.BUILDING) & (sem != Sem.CAR)
                alb[src] = _shifted(alb, dr, dc)[src]
                hgt[src] = 0.9 * _shifted(hgt, dr, dc)[src]
                grown |= src
            sem[grown] = Sem.TREE
            tree |= grown
        alb[tree] *= np.asarray(tree_gain, np.float32)
        if season == "leaf_off":  # bare crowns: branches over the ground beneath
            alb[tree] = 0.55 * _LEAF_OFF_BRANCHES + 0.45 * pal[Sem.GRASS] * np.asarray(lawn_gain, np.float32)
            hgt[tree] *= 0.6
        alb[sem == Sem.GRASS] *= np.asarray(lawn_gain, np.float32)
        alb[sem == Sem.FIELD] *= np.asarray(field_gain, np.float32)
        rec["season"] = season
        rec["canopy_growth_px"] = grow

    # -- parked cars ---------------------------------------------------------------------------
    car_rec: Dict = {"world_lot_cars": int(len(cars.cars))}
    if gap.cars:
        n = len(cars.cars)
        frac = float(car_rng.uniform(*gap.car_change_fraction))
        k = min(int(math.ceil(frac * n)), n)
        removed = car_rng.choice(n, size=k, replace=False) if k else np.zeros(0, int)
        n_add = min(k, len(cars.free_stalls))
        added = car_rng.choice(len(cars.free_stalls), size=n_add, replace=False) if n_add else np.zeros(0, int)
        layers = (sem, hgt, alb, xy_to_rc, gsd_m)
        for i in removed:  # the stall is empty asphalt in the survey
            _repaint_car(layers, cars.cars[i], Sem.CAR, Sem.PARKING, 0.0, pal[Sem.PARKING])
        for i in added:
            _repaint_car(layers, cars.free_stalls[i], Sem.PARKING, Sem.CAR, CAR_HEIGHT_M,
                         _CAR_RGB[int(car_rng.integers(len(_CAR_RGB)))])
        density = float(car_rng.uniform(*gap.kerb_car_density))
        kerb = park_kerb_cars(roads, xy_to_rc, gsd_m, hgt, sem, alb, car_rng, density)
        car_rec.update({"removed": int(k), "added_in_lots": int(n_add), "kerb_cars": int(len(kerb)),
                        "kerb_car_density": density,
                        "removed_xy": [[round(float(cars.cars[i][0]), 2), round(float(cars.cars[i][1]), 2)]
                                       for i in removed],
                        "added_xy": [[round(float(cars.free_stalls[i][0]), 2), round(float(cars.free_stalls[i][1]), 2)]
                                     for i in added],
                        "lot_cars_differ_fraction": float(k / n) if n else 0.0,
                        "survey_cars_not_in_world_fraction":
                            float((n_add + len(kerb)) / max(n - k + n_add + len(kerb), 1))})
    rec["cars"] = car_rec

    # -- light: the survey's own sun -----------------------------------------------------------
    az, el = sun if gap.sun else legacy_sun
    rec["sun_azimuth_deg"], rec["sun_elevation_deg"] = round(az, 3), round(el, 3)
    surface = hgt if elevation is None else hgt + elevation.astype(np.float32)
    from .generate import cast_shadows

    shadow = cast_shadows(surface, gsd_m, az, el)
    img = shade(np.clip(alb, 0, 255).astype(np.uint8), surface, gsd_m, az, el, rng=noise_rng).astype(np.float32)

    # -- survey camera: PSF, then tone (gamma, white balance, haze) ------------------------------
    if gap.blur:
        sigma_m = 0.5 * resolution
        img = gaussian_blur(img, sigma_m / gsd_m)
        rec["resolution_m"], rec["blur_sigma_m"] = round(resolution, 4), round(sigma_m, 4)
    if gap.photometric:
        img = 255.0 * np.power(np.clip(img, 0, 255) / 255.0, gamma) * wb.astype(np.float32)
        img = img * (1.0 - haze) + haze * _HAZE_RGB
        rec["photometric"] = {"gamma": round(gamma, 4), "white_balance": [round(float(v), 4) for v in wb],
                              "haze": round(haze, 4), "haze_rgb": _HAZE_RGB.tolist()}

    # -- misregistration: resample so that true p shows at p + d(p) --------------------------------
    if gap.misregistration:
        H, W = img.shape[:2]
        rr, cc = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
        qx, qy = rc_to_xy(rr, cc)
        px, py = qx, qy
        for _ in range(3):  # p = q - d(p): converges at once for a warp this gentle
            dx, dy = mis.displacement(px, py)
            px, py = qx - dx, qy - dy
        from ..core.tiles import sample_bilinear

        sr, sc = xy_to_rc(px, py)
        img = sample_bilinear(img, np.clip(sr, 0.5, H - 0.5), np.clip(sc, 0.5, W - 0.5))
        rec["misregistration"] = mis.to_dict()
    if gap.jpeg:
        rec["jpeg_quality"] = gap.jpeg_quality
    ortho = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return SurveyResult(ortho=ortho, height=hgt, semantic=sem, shadow=shadow, record=rec)


def _repaint_car(layers, pose, was: int, becomes: int, height: float, rgb) -> None:
    """Turn the ``was`` pixels of the stall at pose (x, y, stall yaw) into ``becomes`` (in place)."""
    sem, hgt, alb, xy_to_rc, gsd = layers
    cx, cy, yaw = pose
    res = rasterize_box(sem.shape, xy_to_rc, cx, cy, CAR_HALF_WID_M, CAR_HALF_LEN_M, yaw, gsd)
    if res is None:
        return
    r0, c0, m, _, _ = res
    win = (slice(r0, r0 + m.shape[0]), slice(c0, c0 + m.shape[1]))
    sel = m & (sem[win] == was)
    sem[win][sel] = becomes
    hgt[win][sel] = height
    alb[win][sel] = rgb
