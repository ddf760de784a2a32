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
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from ..core.errors import InvalidArgument
from ..core.geo import LocalFrame
from .survey import SurveyGap, survey_orthophoto
from .terrain import Terrain, TerrainParams, terrain_rng
from .world import Buildings, ParkedCars, RoadGraph, Sem, World, WorldMeta, default_palette, rasterize_box

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


# ---------------------------------------------------------------------------------------
# road network


@dataclass
class _Grid:
    road_graph: RoadGraph
    node_xy: np.ndarray  # [R, C, 2] jittered grid nodes (also those outside the world)
    inside: np.ndarray  # [R, C] node is inside the world
    node_index: np.ndarray  # [R, C] index into road_graph.nodes or -1
    edge_urban: np.ndarray  # [E] bool


def _make_grid(rng, size_m: float, p: TownParams) -> _Grid:
    half = size_m / 2.0
    ext = half * math.sqrt(2.0) + p.block_max_m  # covers the square after rotation

    def lines():
        out = [-ext]
        while out[-1] < ext:
            out.append(out[-1] + rng.uniform(p.block_min_m, p.block_max_m))
        return np.array(out)

    xs, ys = lines(), lines()
    rot = math.radians(rng.uniform(-p.max_rotation_deg, p.max_rotation_deg))
    R, C = len(ys), len(xs)
    gx, gy = np.meshgrid(xs, ys)
    gx = gx + rng.uniform(-p.node_jitter_m, p.node_jitter_m, gx.shape)
    gy = gy + rng.uniform(-p.node_jitter_m, p.node_jitter_m, gy.shape)
    c, s = math.cos(rot), math.sin(rot)
    node_xy = np.stack([gx * c - gy * s, gx * s + gy * c], axis=-1)
    margin = 5.0
    inside = (np.abs(node_xy[..., 0]) <= half - margin) & (np.abs(node_xy[..., 1]) <= half - margin)

    # arterials: one or two grid lines per axis near the centre
    def pick_arterials(n):
        mid = n // 2
        k = int(rng.integers(1, 3))
        cand = np.arange(max(mid - 3, 1), min(mid + 4, n - 1))
        return set(int(i) for i in rng.choice(cand, size=min(k, len(cand)), replace=False))

    art_rows, art_cols = pick_arterials(R), pick_arterials(C)

    # candidate edges between grid neighbours, both ends inside
    cand = []  # (ra, ca, rb, cb, arterial)
    for r in range(R):
        for cc in range(C):
            if not inside[r, cc]:
                continue
            if cc + 1 < C and inside[r, cc + 1]:
                cand.append((r, cc, r, cc + 1, r in art_rows))
            if r + 1 < R and inside[r + 1, cc]:
                cand.append((r, cc, r + 1, cc, cc in art_cols))
    keep = np.ones(len(cand), bool)
    removable = [i for i, e in enumerate(cand) if not e[4]]
    n_remove = int(p.removed_edge_fraction * len(removable))
    order = rng.permutation(removable)
    removed = 0
    for i in order:
        if removed >= n_remove:
            break
        keep[i] = False
        if not _connected([cand[j] for j in range(len(cand)) if keep[j]]):
            keep[i] = True
            continue
        removed += 1
    cand = [e for e, k in zip(cand, keep) if k]

    node_index = -np.ones((R, C), np.int64)
    nodes: List[np.ndarray] = []

    def nid(r, cc):
        if node_index[r, cc] < 0:
            node_index[r, cc] = len(nodes)
            nodes.append(node_xy[r, cc])
        return int(node_index[r, cc])

    uv, pts, width, lanes, kind, urban = [], [], [], [], [], []
    urban_r = p.urban_radius * size_m
    for (ra, ca, rb, cb, art) in cand:
        a, b = node_xy[ra, ca], node_xy[rb, cb]
        is_urban = bool(np.hypot(*((a + b) / 2)) < urban_r * 1.15)
        curved = (not art) and rng.random() < p.curve_fraction
        if curved:
            L = float(np.hypot(*(b - a)))
            amp = rng.uniform(0.08, 0.18) * L * rng.choice([-1.0, 1.0])
            t = np.linspace(0.0, 1.0, 17)
            nrm = np.array([-(b - a)[1], (b - a)[0]]) / L
            poly = a[None] + t[:, None] * (b - a)[None] + (amp * np.sin(np.pi * t))[:, None] * nrm[None]
        else:
            poly = np.stack([a, b])
        uv.append((nid(ra, ca), nid(rb, cb)))
        pts.append(poly)
        if art:
            width.append(p.arterial_width_m)
            lanes.append(4)
            kind.append("arterial")
        elif is_urban:
            width.append(round(float(rng.uniform(*p.street_width_m)), 2))
            lanes.append(2)
            kind.append("curve" if curved else "street")
        else:
            width.append(p.rural_width_m)
            lanes.append(2)
            kind.append("rural")
        urban.append(is_urban or art)
    graph = RoadGraph(nodes=np.array(nodes, float).reshape(-1, 2), edge_uv=np.array(uv, np.int64).reshape(-1, 2),
                      edge_points=pts, edge_width=np.array(width, float), edge_lanes=np.array(lanes, np.int64),
                      edge_kind=kind)
    return _Grid(road_graph=graph, node_xy=node_xy, inside=inside, node_index=node_index,
                 edge_urban=np.array(urban, bool))


def _connected(edges) -> bool:
    adj = {}
    for (ra, ca, rb, cb, _) in edges:
        adj.setdefault((ra, ca), []).append((rb, cb))
        adj.setdefault((rb, cb), []).append((ra, ca))
    if not adj:
        return True
    start = next(iter(adj))
    seen, stack = {start}, [start]
    while stack:
        for n in adj[stack.pop()]:
            if n not in seen:
                seen.add(n)
                stack.append(n)
    return len(seen) == len(adj)


# ---------------------------------------------------------------------------------------
# land use

DOWNTOWN, MIXED, RESIDENTIAL, PARK, PARKING_LOT, FIELD = range(6)


def _assign_land_use(rng, grid: _Grid, size_m: float, p: TownParams) -> np.ndarray:
    """Land use per grid cell [R-1, C-1]; -1 for cells not fully inside the world."""
    R, C = grid.inside.shape
    lu = -np.ones((R - 1, C - 1), np.int64)
    for r in range(R - 1):
        for c in range(C - 1):
            corners_in = int(grid.inside[r:r + 2, c:c + 2].sum())
            if corners_in < 4:
                if corners_in > 0:
                    lu[r, c] = FIELD  # cut by the world's edge: farmland, no buildings
                continue
            ctr = grid.node_xy[r:r + 2, c:c + 2].reshape(-1, 2).mean(0)
            d = float(np.hypot(*ctr)) / size_m
            u = rng.random()
            if d < p.downtown_radius:
                use = DOWNTOWN
            elif d < p.downtown_radius + 0.08:
                use = MIXED
            elif d < p.urban_radius:
                use = RESIDENTIAL
            else:
                use = FIELD if rng.random() < 0.75 else RESIDENTIAL
            if use in (DOWNTOWN, MIXED, RESIDENTIAL):
                if u < p.park_fraction:
                    use = PARK
                elif u < p.park_fraction + p.parking_fraction * (2.0 if use != RESIDENTIAL else 0.5):
                    use = PARKING_LOT
            lu[r, c] = use
    return lu


def _cell_quad(grid: _Grid, r: int, c: int) -> np.ndarray:
    """Cell corners CCW in local metres (grid rows grow with y before rotation)."""
    n = grid.node_xy
    return np.stack([n[r, c], n[r, c + 1], n[r + 1, c + 1], n[r + 1, c]])


def _in_quad(quad: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points strictly inside a convex CCW quad."""
    inside = np.ones(len(pts), bool)
    for k in range(4):
        a, b = quad[k], quad[(k + 1) % 4]
        cross = (b[0] - a[0]) * (pts[:, 1] - a[1]) - (b[1] - a[1]) * (pts[:, 0] - a[0])
        inside &= cross > 0
    return inside


# ---------------------------------------------------------------------------------------
# roads


def _rasterize_roads(g: _Canvas, roads: RoadGraph, edge_urban: np.ndarray, p: TownParams) -> None:
    shape = g.shape
    dist = np.full(shape, np.inf, np.float32)
    lat = np.zeros(shape, np.float32)
    along = np.zeros(shape, np.float32)
    edge_of = -np.ones(shape, np.int32)
    road = np.zeros(shape, bool)
    walk = np.zeros(shape, bool)
    for e in range(roads.num_edges):
        w = float(roads.edge_width[e])
        sw = p.sidewalk_m if edge_urban[e] else 0.0
        pts = roads.edge_points[e]
        seg = np.diff(pts, axis=0)
        seg_len = np.hypot(seg[:, 0], seg[:, 1])
        cum = np.concatenate([[0.0], np.cumsum(seg_len)])
        reach = w / 2 + sw + 1.0
        for k in range(len(seg)):
            a, d, L = pts[k], seg[k], seg_len[k]
            lo, hi = np.minimum(a, a + d) - reach, np.maximum(a, a + d) + reach
            win = g.window(lo[0], lo[1], hi[0], hi[1])
            if win is None:
                continue
            sr, sc, X, Y = win
            dx, dy = X - a[0], Y - a[1]
            t = np.clip((dx * d[0] + dy * d[1]) / (L * L), 0.0, 1.0)
            ex, ey = dx - t * d[0], dy - t * d[1]
            dd = np.hypot(ex, ey).astype(np.float32)
            upd = dd < dist[sr, sc]
            dist[sr, sc][upd] = dd[upd]
            lat[sr, sc][upd] = ((d[0] * dy - d[1] * dx) / L)[upd]
            along[sr, sc][upd] = (cum[k] + t * L)[upd]
            edge_of[sr, sc][upd] = e
            road[sr, sc] |= dd <= w / 2
            if sw > 0:
                walk[sr, sc] |= dd <= w / 2 + sw

    g.sem[walk] = Sem.SIDEWALK
    g.sem[road] = Sem.ROAD
    urban_edge = np.append(edge_urban, False)[edge_of]
    g.road_kind[road] = np.where(urban_edge[road], 1, 2)

    # intersections: no lane markings inside, crosswalks just outside (urban, degree >= 3)
    node_r = np.zeros(len(roads.nodes))
    for n in range(len(roads.nodes)):
        es = roads.edges_at(n)
        node_r[n] = max(roads.edge_width[e] for e in es) / 2 + 0.5 if es else 0.0
    junction = np.zeros(shape, bool)
    for n in range(len(roads.nodes)):
        if roads.degree(n) < 3:
            continue
        x, y = roads.nodes[n]
        rr = node_r[n]
        win = g.window(x - rr, y - rr, x + rr, y + rr)
        if win is not None:
            sr, sc, X, Y = win
            junction[sr, sc] |= np.hypot(X - x, Y - y) <= rr

    e_idx = np.where(road, edge_of, -1)
    m = road & ~junction & (e_idx >= 0)
    ei = e_idx[m]
    w_e = roads.edge_width[ei]
    lanes = roads.edge_lanes[ei]
    la, al = lat[m], along[m]
    alat = np.abs(la)
    sem = np.full(ei.shape, Sem.ROAD, np.uint8)
    arterial = lanes >= 4
    # centre line: double yellow on arterials, dashed yellow on streets (rural: dashed too)
    dbl = arterial & (np.abs(alat - 0.3) <= 0.26)
    dash = ~arterial & (alat <= 0.25) & (np.mod(al, 9.0) < 3.0)
    sem[dbl | dash] = Sem.MARKING_YELLOW
    # lane separators on 4-lane roads, edge lines on arterials
    sep = arterial & (np.abs(alat - w_e / 4) <= 0.25) & (np.mod(al, 9.0) < 3.0)
    edge = arterial & (np.abs(alat - (w_e / 2 - 0.45)) <= 0.25)
    sem[sep | edge] = Sem.MARKING
    # crosswalks: zebra band 1..4 m beyond the junction radius at urban junction ends
    L_e = np.array([roads.length(e) for e in range(roads.num_edges)] + [0.0])
    u_n, v_n = roads.edge_uv[ei, 0], roads.edge_uv[ei, 1]
    deg_u = np.array([roads.degree(n) for n in range(len(roads.nodes))] + [0])
    ru, rv = node_r[u_n], node_r[v_n]
    urb = edge_urban[ei]
    near_u = (al >= ru + 1.0) & (al <= ru + 4.0) & (deg_u[u_n] >= 3)
    near_v = (L_e[ei] - al >= rv + 1.0) & (L_e[ei] - al <= rv + 4.0) & (deg_u[v_n] >= 3)
    zebra = urb & (near_u | near_v) & (np.mod(la + 50.0, 1.2) < 0.6) & (alat <= w_e / 2 - 0.3)
    sem[zebra] = Sem.MARKING
    g.sem[m] = sem


# ---------------------------------------------------------------------------------------
# buildings

_FACADES = {
    DOWNTOWN: [(120, 135, 150), (150, 160, 170), (185, 180, 170), (95, 105, 120), (200, 195, 185), (140, 95, 80)],
    MIXED: [(160, 85, 65), (190, 170, 140), (210, 205, 195), (130, 120, 110), (175, 110, 80), (120, 140, 150)],
    RESIDENTIAL: [(225, 220, 205), (200, 180, 150), (170, 190, 205), (215, 200, 160), (180, 90, 70),
                  (150, 170, 140), (235, 235, 230), (120, 110, 100)],
}
_ROOFS_FLAT = [(150, 150, 148), (120, 122, 125), (175, 172, 165), (95, 95, 100), (200, 200, 195)]
_ROOFS_GABLE = [(90, 60, 50), (70, 70, 75), (150, 80, 55), (110, 95, 80), (60, 65, 80), (130, 120, 105)]


def _place_buildings(rng, g: _Canvas, grid: _Grid, landuse: np.ndarray, p: TownParams) -> Buildings:
    rows: List[Tuple] = []
    R, C = landuse.shape
    for r in range(R):
        for c in range(C):
            use = int(landuse[r, c])
            if use not in (DOWNTOWN, MIXED, RESIDENTIAL):
                continue
            quad = _cell_quad(grid, r, c)
            for k in range(4):
                a, b = quad[k], quad[(k + 1) % 4]
                _frontage(rng, g, quad, a, b, use, p, rows)
    if not rows:
        return Buildings.empty()
    cols = list(zip(*rows))
    b = Buildings(cx=np.array(cols[0]), cy=np.array(cols[1]), half_len=np.array(cols[2]), half_wid=np.array(cols[3]),
                  yaw=np.array(cols[4]), eave_h=np.array(cols[5]), ridge_h=np.array(cols[6]),
                  facade_rgb=np.array(cols[7], np.uint8), roof_rgb=np.array(cols[8], np.uint8),
                  floor_h=np.array(cols[9]), window_spacing=np.array(cols[10]))
    return b


def _frontage(rng, g: _Canvas, quad, a, b, use, p: TownParams, rows: List[Tuple]) -> None:
    """Place buildings along one side a->b of a block (inward = left of a->b for a CCW quad)."""
    side = b - a
    L = float(np.hypot(*side))
    if L < 20:
        return
    d = side / L
    n = np.array([-d[1], d[0]])
    yaw = math.atan2(d[1], d[0])
    road_clear = p.street_width_m[1] / 2 + p.sidewalk_m
    if use == DOWNTOWN:
        wid_rng, dep_rng, setback, gap = (16, 40), (16, 30), (0.5, 2.0), (0.0, 3.0)
    elif use == MIXED:
        wid_rng, dep_rng, setback, gap = (12, 26), (12, 20), (1.0, 4.0), (1.0, 6.0)
    else:
        wid_rng, dep_rng, setback, gap = (8, 14), (8, 12), (4.0, 8.0), (4.0, 10.0)
    t = rng.uniform(2.0, 10.0) + road_clear
    while True:
        w = rng.uniform(*wid_rng)
        if t + w > L - road_clear - 2.0:
            break
        depth = rng.uniform(*dep_rng)
        off = road_clear + rng.uniform(*setback) + depth / 2
        ctr = a + d * (t + w / 2) + n * off
        t += w + rng.uniform(*gap)
        hl, hw = w / 2, depth / 2
        # residential houses often sit with their ridge along the street; keep the axis along the street
        corners = np.array([ctr + sx * hl * d + sy * hw * n for sx, sy in ((1, 1), (-1, 1), (-1, -1), (1, -1))])
        if not _in_quad(quad, corners).all():
            continue
        res = g.box(ctr[0], ctr[1], hl + 1.0, hw + 1.0, yaw)
        if res is None:
            continue
        win, m, _, _ = res
        if np.any(g.sem[win][m] != Sem.GRASS):
            continue  # would overlap a road, sidewalk, another building
        if use == DOWNTOWN:
            eave = float(min(12.0 + rng.gamma(2.0, 9.0), 80.0))
            ridge = 0.0
        elif use == MIXED:
            eave = float(rng.uniform(6.0, 16.0))
            ridge = 0.0
        else:
            eave = float(rng.uniform(3.0, 7.0))
            ridge = float(rng.uniform(1.5, 3.5)) if rng.random() < 0.8 else 0.0
        facade = _FACADES[use][int(rng.integers(len(_FACADES[use])))]
        roof_pal = _ROOFS_GABLE if ridge > 0 else _ROOFS_FLAT
        roof = roof_pal[int(rng.integers(len(roof_pal)))]
        jit = rng.integers(-12, 13, 3)
        facade = tuple(int(np.clip(v + j, 0, 255)) for v, j in zip(facade, jit))
        roof = tuple(int(np.clip(v + j, 0, 255)) for v, j in zip(roof, jit))
        floor_h = float(rng.uniform(2.9, 3.6))
        win_sp = float(rng.uniform(2.4, 4.0))
        idx = len(rows) + 1
        rows.append((float(ctr[0]), float(ctr[1]), hl, hw, yaw, eave, ridge, facade, roof, floor_h, win_sp))
        res = g.box(ctr[0], ctr[1], hl, hw, yaw)
        win, m, u, v = res
        hgt = (eave + ridge * (1.0 - np.abs(v) / hw)).astype(np.float32)
        g.height[win][m] = hgt[m]
        g.sem[win][m] = Sem.BUILDING
        g.oid[win][m] = idx


# ---------------------------------------------------------------------------------------
# trees, parking lots, fields, parks

def _place_trees_and_lots(rng, g: _Canvas, grid: _Grid, landuse, roads: RoadGraph, edge_urban, p: TownParams):
    trees: List[Tuple[float, float, float, float, int]] = []  # x, y, radius, height, tone
    R, C = landuse.shape
    for r in range(R):
        for c in range(C):
            use = int(landuse[r, c])
            quad = _cell_quad(grid, r, c)
            if use == PARKING_LOT:
                _parking_lot(rng, g, quad, p)
            elif use == FIELD:
                _field(rng, g, quad)
                n_hedge = int(rng.integers(0, 12))
                for _ in range(n_hedge):
                    trees.append(_tree_in_quad(rng, quad, (2.5, 5.0), (6.0, 14.0)))
            elif use == PARK:
                for _ in range(int(rng.integers(25, 70))):
                    trees.append(_tree_in_quad(rng, quad, (2.5, 5.5), (7.0, 16.0)))
                _park_paths(rng, g, quad)
            elif use == RESIDENTIAL:
                for _ in range(int(rng.integers(6, 20))):
                    trees.append(_tree_in_quad(rng, quad, (2.0, 4.5), (5.0, 13.0)))
            elif use == DOWNTOWN:
                _pave(g, quad, p)
            elif use == MIXED:
                if rng.random() < 0.5:
                    _pave(g, quad, p)
                for _ in range(int(rng.integers(0, 6))):
                    trees.append(_tree_in_quad(rng, quad, (2.0, 3.5), (5.0, 10.0)))
    # street trees on urban, non-arterial streets, in the grass strip beyond the sidewalk
    for e in range(roads.num_edges):
        if not edge_urban[e] or roads.edge_lanes[e] >= 4 or rng.random() < 0.35:
            continue
        pts = roads.edge_points[e]
        L = roads.length(e)
        spacing = rng.uniform(9.0, 16.0)
        off = roads.edge_width[e] / 2 + p.sidewalk_m + 1.8
        for s_ in np.arange(rng.uniform(12.0, 18.0), L - 12.0, spacing):
            pt, dirv = _point_along(pts, s_)
            nrm = np.array([-dirv[1], dirv[0]])
            for side in (-1.0, 1.0):
                if rng.random() < 0.75:
                    q = pt + side * off * nrm
                    trees.append((float(q[0]), float(q[1]), float(rng.uniform(1.8, 3.2)),
                                  float(rng.uniform(5.0, 10.0)), int(rng.integers(-20, 21))))
    for (x, y, rad, h, tone) in trees:
        win = g.window(x - rad, y - rad, x + rad, y + rad)
        if win is None:
            continue
        sr, sc, X, Y = win
        d2 = ((X - x) ** 2 + (Y - y) ** 2) / (rad * rad)
        canopy = d2 <= 1.0
        # trees grow on grass/field/park ground, never on roads, sidewalks, lots or buildings
        ok = canopy & np.isin(g.sem[sr, sc], (Sem.GRASS, Sem.FIELD, Sem.DIRT, Sem.TREE))
        hz = (h * np.sqrt(np.clip(1.0 - d2, 0.0, 1.0)) * 0.45 + h * 0.55).astype(np.float32)
        upd = ok & (hz > g.height[sr, sc])
        g.height[sr, sc][upd] = hz[upd]
        g.sem[sr, sc][upd] = Sem.TREE
        g.tone[sr, sc][upd] = tone
    return trees


def _tree_in_quad(rng, quad, rad_rng, h_rng):
    lo, hi = quad.min(0), quad.max(0)
    for _ in range(20):
        pt = rng.uniform(lo, hi)
        if _in_quad(quad, pt[None])[0]:
            break
    return (float(pt[0]), float(pt[1]), float(rng.uniform(*rad_rng)), float(rng.uniform(*h_rng)),
            int(rng.integers(-20, 21)))


def _point_along(pts: np.ndarray, s: float):
    seg = np.diff(pts, axis=0)
    L = np.hypot(seg[:, 0], seg[:, 1])
    cum = np.concatenate([[0.0], np.cumsum(L)])
    k = int(np.clip(np.searchsorted(cum, s) - 1, 0, len(seg) - 1))
    t = (s - cum[k]) / max(L[k], 1e-9)
    return pts[k] + t * seg[k], seg[k] / max(L[k], 1e-9)


def _quad_window(g: _Canvas, quad, inset: float):
    lo, hi = quad.min(0), quad.max(0)
    win = g.window(lo[0], lo[1], hi[0], hi[1])
    if win is None:
        return None
    sr, sc, X, Y = win
    inside = _in_quad(_inset_quad(quad, inset), np.stack([X.ravel(), Y.ravel()], 1)).reshape(X.shape)
    return sr, sc, X, Y, inside


def _inset_quad(quad, inset):
    ctr = quad.mean(0)
    out = []
    for q in quad:
        v = q - ctr
        n = np.hypot(*v)
        out.append(ctr + v * max(n - inset * 1.4, 1.0) / n)
    return np.array(out)


def _parking_lot(rng, g: _Canvas, quad, p: TownParams):
    res = _quad_window(g, quad, p.street_width_m[1] / 2 + p.sidewalk_m + 1.0)
    if res is None:
        return
    sr, sc, X, Y, inside = res
    free = inside & (g.sem[sr, sc] == Sem.GRASS)
    sem = g.sem[sr, sc]
    sem[free] = Sem.PARKING
    # stalls: 2.6 m wide, 5.5 m deep, rows separated by 7 m aisles, aligned to the first side
    d = quad[1] - quad[0]
    d = d / np.hypot(*d)
    u = (X - quad[0][0]) * d[0] + (Y - quad[0][1]) * d[1]
    v = -(X - quad[0][0]) * d[1] + (Y - quad[0][1]) * d[0]
    period = 2 * 5.5 + 7.0
    vm = np.mod(v, period)
    in_stall = vm < 11.0
    line = in_stall & (np.mod(u, 2.6) < 0.3)
    sem[free & line] = Sem.MARKING
    # parked cars in some stalls (static: they are in the survey image too)
    stall_u = np.arange(np.floor(u[free].min() / 2.6) if free.any() else 0, np.ceil(u[free].max() / 2.6) if free.any() else 0)
    if not free.any():
        return
    v_rows = np.arange(np.floor(v[free].min() / period), np.ceil(v[free].max() / period) + 1)
    for vr in v_rows:
        for half in (0, 1):
            vc = vr * period + 2.75 + half * 5.5
            for su in stall_u:
                occupied = rng.random() <= 0.45
                uc = su * 2.6 + 1.45
                cx = quad[0][0] + uc * d[0] - vc * d[1]
                cy = quad[0][1] + uc * d[1] + vc * d[0]
                box = g.box(cx, cy, 0.9, 2.2, math.atan2(d[1], d[0]))
                if box is None:
                    continue
                win, m, _, _ = box
                if not np.all(g.sem[win][m] == Sem.PARKING):
                    continue
                (g.cars if occupied else g.free_stalls).append((float(cx), float(cy), math.atan2(d[1], d[0])))
                if not occupied:
                    continue
                g.sem[win][m] = Sem.CAR
                g.height[win][m] = 1.5
                g.tone[win][m] = int(rng.integers(0, 8))  # colour index into the car palette


def _pave(g: _Canvas, quad, p: TownParams):
    """Downtown block interiors: concrete plazas and courtyards instead of lawns."""
    res = _quad_window(g, quad, p.street_width_m[1] / 2 + p.sidewalk_m)
    if res is None:
        return
    sr, sc, X, Y, inside = res
    g.sem[sr, sc][inside & (g.sem[sr, sc] == Sem.GRASS)] = Sem.SIDEWALK


def _field(rng, g: _Canvas, quad):
    res = _quad_window(g, quad, 6.0)
    if res is None:
        return
    sr, sc, X, Y, inside = res
    free = inside & (g.sem[sr, sc] == Sem.GRASS)
    ang = rng.uniform(0, np.pi)
    stripes = np.mod(X * math.cos(ang) + Y * math.sin(ang), rng.uniform(3.0, 6.0))
    g.sem[sr, sc][free] = Sem.FIELD
    tone = g.tone[sr, sc]
    tone[free] = (np.where(stripes[free] < 1.2, -14, 6) + int(rng.integers(-25, 25))).astype(np.int16)


def _park_paths(rng, g: _Canvas, quad):
    res = _quad_window(g, quad, 8.0)
    if res is None:
        return
    sr, sc, X, Y, inside = res
    a, b = quad[0], quad[2]
    for (s, e) in ((quad[0], quad[2]), (quad[1], quad[3])):
        d = e - s
        L = np.hypot(*d)
        t = np.clip(((X - s[0]) * d[0] + (Y - s[1]) * d[1]) / (L * L), 0, 1)
        dist = np.hypot(X - s[0] - t * d[0], Y - s[1] - t * d[1])
        m = inside & (dist <= 1.5) & (g.sem[sr, sc] == Sem.GRASS)
        g.sem[sr, sc][m] = Sem.DIRT
    del a, b


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
