"""Procedural town generator: roads, blocks, buildings, trees, parking, fields -> ``World``.

Everything derives from one ``numpy.random.Generator`` seeded with ``seed``, processed in
a fixed order, so the same arguments give the same arrays (and the same file bytes).

Layout, in order:
1. Road network: a jittered, rotated grid of streets with varied block sizes; some edges
   bent into curves, some removed (T-junctions, large blocks), one or two arterials per
   axis (4 lanes, double yellow centre line); clipped to the world square.
2. Land use per block from the distance to the centre: downtown (tall, dense, flat roofs),
   mixed (mid-rise), residential (gabled houses, yards, street trees), outskirts (fields);
   some blocks become parks or parking lots.
3. Rasterisation at ``gsd_m``: carriageways, sidewalks, lane markings and crosswalks,
   buildings (height, id, roof colour), trees (ellipsoid canopies), parked cars in lots.
4. Orthophoto = albedo lit by a survey-time sun: roof/canopy shading from the height
   gradient and cast shadows from heights (log-step max-propagation along the sun).

Here: ``TownParams``, ``generate_world`` (the order above) and the canvas; steps 1-2 are in
``sim.townlayout``, step 3 in ``sim.townraster``, step 4 in ``sim.shading`` (``shade``,
``cast_shadows`` and ``smooth_noise`` are re-exported here).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from ..core.errors import InvalidArgument
from ..core.geo import LocalFrame
from .shading import _paint_albedo, cast_shadows, shade, smooth_noise
from .survey import SurveyGap, survey_orthophoto
from .terrain import Terrain, TerrainParams, terrain_rng
from .townlayout import _assign_land_use, _make_grid
from .townraster import _place_buildings, _place_trees_and_lots, _rasterize_roads
from .world import ParkedCars, Sem, World, WorldMeta, rasterize_box

__all__ = ["MAX_RASTER_PX", "TownParams", "validate_world_args", "generate_world", "survey_rng",
           # re-exported from sim.shading
           "shade", "cast_shadows", "smooth_noise"]

log = logging.getLogger(__name__)

MAX_RASTER_PX = 12000  # per side; 12000^2 px x ~12 bytes of layers ~ 1.7 GB in memory


@dataclass(frozen=True)
class TownParams:
    """Knobs of the generator (defaults make a small North-American town)."""

    block_min_m: float = 70.0
    block_max_m: float = 150.0
    node_jitter_m: float = 7.0
    max_rotation_deg: float = 25.0
    curve_fraction: float = 0.2
    removed_edge_fraction: float = 0.12
    street_width_m: Tuple[float, float] = (7.0, 9.0)
    arterial_width_m: float = 14.0
    rural_width_m: float = 6.5
    sidewalk_m: float = 2.5
    downtown_radius: float = 0.16  # fraction of size
    urban_radius: float = 0.38
    park_fraction: float = 0.06
    parking_fraction: float = 0.07
    survey_sun_azimuth_deg: Tuple[float, float] = (140.0, 220.0)
    survey_sun_elevation_deg: Tuple[float, float] = (38.0, 62.0)


def validate_world_args(seed: int, size_m: float, gsd_m: float, origin_lat: float, origin_lon: float) -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0 or seed >= 2 ** 63:
        raise InvalidArgument(f"seed must be an integer in 0..2^63-1, got {seed!r}")
    if not (math.isfinite(size_m) and 200.0 <= size_m <= 20000.0):
        raise InvalidArgument(f"--size-m must be between 200 and 20000 metres, got {size_m}")
    if not (math.isfinite(gsd_m) and 0.1 <= gsd_m <= 5.0):
        raise InvalidArgument(f"--gsd-m must be between 0.1 and 5 metres per pixel, got {gsd_m}")
    px = size_m / gsd_m
    if abs(px - round(px)) > 1e-6:
        raise InvalidArgument(f"--size-m ({size_m}) must be a whole multiple of --gsd-m ({gsd_m})")
    if px > MAX_RASTER_PX:
        raise InvalidArgument(f"{size_m} m at {gsd_m} m/px is {px:.0f} px per side (> {MAX_RASTER_PX}); "
                              f"use a coarser --gsd-m or a smaller --size-m")
    if not (math.isfinite(origin_lat) and -80.0 <= origin_lat <= 84.0):
        raise InvalidArgument(f"--origin-lat must be within UTM coverage (-80..84), got {origin_lat}")
    if not (math.isfinite(origin_lon) and -180.0 <= origin_lon <= 180.0):
        raise InvalidArgument(f"--origin-lon must be within -180..180, got {origin_lon}")


def generate_world(seed: int = 7, size_m: float = 2000.0, gsd_m: float = 0.5, origin_lat: float = 44.4759,
                   origin_lon: float = -73.2121, params: TownParams = TownParams(), progress: bool = False,
                   survey: Optional[SurveyGap] = None, terrain: Optional[TerrainParams] = None) -> World:
    """Generate a town. Deterministic in all arguments.

    ``survey`` (``sim.survey.SurveyGap``) makes the orthophoto a survey flown at another time
    (own sun and season, other parked cars, photometry, blur, JPEG, misregistration); None or
    ``SurveyGap.off()`` keeps the orthophoto of earlier versions (same bytes for the same seed).
    ``terrain`` (``sim.terrain.TerrainParams``) adds a gentle ground elevation (``World.elevation``);
    None keeps the flat ground. The command line (`geoloc sim world`) switches both on by default.
    """
    validate_world_args(seed, size_m, gsd_m, origin_lat, origin_lon)
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    frame = LocalFrame.at(origin_lat, origin_lon)
    meta = WorldMeta(seed=int(seed), size_m=float(size_m), gsd_m=float(gsd_m), origin_lat=float(origin_lat),
                     origin_lon=float(origin_lon), frame=frame,
                     params={k: (list(v) if isinstance(v, tuple) else v) for k, v in params.__dict__.items()})
    stages = iter(["roads", "land use", "rasterise roads", "buildings", "trees and lots", "albedo", "orthophoto"])
    bar = tqdm(total=7, desc="world", unit="stage", disable=not progress, leave=False)

    def stage():
        bar.set_postfix_str(next(stages))

    def done():
        bar.update(1)

    g = _Canvas(meta)
    stage()
    grid = _make_grid(rng, size_m, params)
    roads = grid.road_graph
    done(), stage()
    landuse = _assign_land_use(rng, grid, size_m, params)
    done(), stage()
    _rasterize_roads(g, roads, grid.edge_urban, params)
    done(), stage()
    buildings = _place_buildings(rng, g, grid, landuse, params)
    done(), stage()
    trees = _place_trees_and_lots(rng, g, grid, landuse, roads, grid.edge_urban, params)
    done(), stage()
    _paint_albedo(rng, g, buildings, trees)
    done(), stage()
    sun_az = rng.uniform(*params.survey_sun_azimuth_deg)
    sun_el = rng.uniform(*params.survey_sun_elevation_deg)
    record = None
    relief = Terrain.sample(terrain_rng(seed), terrain) if terrain is not None else None
    elevation = relief.raster(meta) if relief is not None else None
    parked = ParkedCars(np.array(g.cars, float).reshape(-1, 3), np.array(g.free_stalls, float).reshape(-1, 3))
    if survey is None or not survey.enabled:
        ortho = shade(g.albedo, g.height if elevation is None else g.height + elevation, gsd_m, sun_az, sun_el,
                      rng=rng)
    else:
        res = survey_orthophoto(g.albedo, g.height, g.sem, g.oid, gsd_m, g.xy_to_rc, g.rc_to_xy, roads,
                                parked, survey, survey_rng(seed), legacy_sun=(float(sun_az), float(sun_el)),
                                elevation=elevation)
        ortho, record = res.ortho, res.record
        sun_az, sun_el = record["sun_azimuth_deg"], record["sun_elevation_deg"]
    done()
    bar.close()
    meta.params.update({"survey_sun_azimuth_deg": round(float(sun_az), 3),
                        "survey_sun_elevation_deg": round(float(sun_el), 3)})
    return World(meta=meta, albedo=g.albedo, ortho=ortho, height=g.height, semantic=g.sem, object_id=g.oid,
                 roads=roads, buildings=buildings, survey=record, parked=parked, elevation=elevation,
                 terrain=relief.to_dict() if relief is not None else None)


def survey_rng(seed: int) -> np.random.Generator:
    """The survey's own random stream (independent of the town's, so the town is the same with or without it)."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(1,)))


# ---------------------------------------------------------------------------------------
# canvas


class _Canvas:
    """The rasters being painted plus coordinate helpers."""

    def __init__(self, meta: WorldMeta):
        self.meta = meta
        self.gsd = meta.gsd_m
        n = meta.shape[0]
        self.shape = (n, n)
        self.sem = np.full(self.shape, Sem.GRASS, np.uint8)
        self.height = np.zeros(self.shape, np.float32)
        self.oid = np.zeros(self.shape, np.int32)
        self.albedo = np.zeros(self.shape + (3,), np.uint8)
        self.tone = np.zeros(self.shape, np.int16)  # per-pixel colour offset (objects' own variation)
        self.road_kind = np.zeros(self.shape, np.uint8)  # 1 urban road, 2 rural road
        self.cars: List[Tuple[float, float, float]] = []  # lot cars (x, y, stall axis yaw)
        self.free_stalls: List[Tuple[float, float, float]] = []  # empty, valid stalls

    def xy_to_rc(self, x, y):
        return (self.meta.y_max - np.asarray(y, float)) / self.gsd, (np.asarray(x, float) - self.meta.x_min) / self.gsd

    def rc_to_xy(self, row, col):
        return self.meta.x_min + np.asarray(col, float) * self.gsd, self.meta.y_max - np.asarray(row, float) * self.gsd

    def window(self, x0, y0, x1, y1):
        """Pixel window covering the local bbox, clipped; returns (slice_r, slice_c, X, Y) or None."""
        r0, c0 = self.xy_to_rc(x0, y1)
        r1, c1 = self.xy_to_rc(x1, y0)
        r0, c0 = max(int(np.floor(r0)), 0), max(int(np.floor(c0)), 0)
        r1, c1 = min(int(np.ceil(r1)) + 1, self.shape[0]), min(int(np.ceil(c1)) + 1, self.shape[1])
        if r0 >= r1 or c0 >= c1:
            return None
        xs = self.meta.x_min + (np.arange(c0, c1) + 0.5) * self.gsd
        ys = self.meta.y_max - (np.arange(r0, r1) + 0.5) * self.gsd
        X, Y = np.meshgrid(xs, ys)
        return slice(r0, r1), slice(c0, c1), X, Y

    def box(self, cx, cy, half_len, half_wid, yaw):
        res = rasterize_box(self.shape, self.xy_to_rc, cx, cy, half_len, half_wid, yaw, self.gsd)
        if res is None:
            return None
        r0, c0, m, u, v = res
        return (slice(r0, r0 + m.shape[0]), slice(c0, c0 + m.shape[1])), m, u, v
