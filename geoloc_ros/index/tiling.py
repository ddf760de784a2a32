"""Where tiles go: a grid of tile centres, area limits, heading bins and geographic shards.

Tile centres sit at whole multiples of ``spacing_m`` in the index's local frame
(``core.geo.LocalFrame``: UTM grid axes around the datum), so neighbouring builds and shards
line up. The area is the imagery's footprint, optionally limited by a lat/lon bounding box,
GeoJSON polygons, or a corridor of ``half_width_m`` around GeoJSON LineStrings (roads).

Heading bins: bin ``b`` of ``K`` has its centre at ``b * 360 / K`` compass degrees (true north).
In corridor mode ``headings="road"`` keeps only bins whose centre is within ``0.75 * 360 / K`` of
the nearest road segment's direction, either way of travel (2-4 of K bins instead of K, because
encoding dominates the build time); a vehicle on the road then always finds the bin nearest to
its heading (the search's default tolerance is 180 / K).

Shards: cell ``(floor(x / shard_m), floor(y / shard_m))`` of the local frame.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..core.errors import InvalidArgument
from ..core.geo import LocalFrame

HEADING_MODES = ("all", "road")
ROAD_TOL_FRACTION = 0.75


def bin_centres_deg(K: int) -> np.ndarray:
    """Compass heading (deg) of the centre of each of K bins: b * 360 / K."""
    if int(K) < 1:
        raise InvalidArgument(f"heading bins must be >= 1, got {K}")
    return np.arange(int(K)) * 360.0 / int(K)


def heading_to_bin(heading_deg, K: int) -> np.ndarray:
    """The bin whose centre is nearest to each compass heading."""
    return np.mod(np.round(np.mod(np.asarray(heading_deg, float), 360.0) * K / 360.0), K).astype(np.int64)


def angle_diff_deg(a, b) -> np.ndarray:
    """Absolute smallest difference between two compass angles (deg, 0..180)."""
    d = np.mod(np.asarray(a, float) - np.asarray(b, float) + 180.0, 360.0) - 180.0
    return np.abs(d)


def bins_within(heading_deg: float, tol_deg: float, K: int) -> np.ndarray:
    """Bins whose centre lies within ``tol_deg`` (inclusive, +1e-9) of ``heading_deg``."""
    return np.nonzero(angle_diff_deg(bin_centres_deg(K), heading_deg) <= tol_deg + 1e-9)[0]


# ---- areas -------------------------------------------------------------------------------------

@dataclass
class Area:
    """Limits of the indexed area (all in WGS84); ``kind`` is imagery | bbox | polygon | corridor."""

    kind: str = "imagery"
    bbox: Optional[Tuple[float, float, float, float]] = None  # lat_min, lon_min, lat_max, lon_max
    polygons: List[List[np.ndarray]] = field(default_factory=list)  # each: rings [M, 2] (lon, lat); ring 0 outer
    lines: List[np.ndarray] = field(default_factory=list)  # polylines [M, 2] (lon, lat)
    half_width_m: float = 0.0
    source: str = ""

    def describe(self) -> Dict:
        d: Dict = {"kind": self.kind}
        if self.bbox is not None:
            d["bbox"] = list(self.bbox)
        if self.kind == "polygon":
            d["polygons"] = len(self.polygons)
        if self.kind == "corridor":
            d["lines"] = len(self.lines)
            d["half_width_m"] = self.half_width_m
        if self.source:
            d["source"] = self.source
        return d


def parse_bbox(text) -> Tuple[float, float, float, float]:
    vals = text if isinstance(text, (list, tuple)) else [v for v in str(text).replace(" ", "").split(",") if v]
    try:
        lat0, lon0, lat1, lon1 = (float(v) for v in vals)
    except (ValueError, TypeError):
        raise InvalidArgument(f"bbox must be LAT_MIN,LON_MIN,LAT_MAX,LON_MAX, got {text!r}")
    if not (-90 <= lat0 < lat1 <= 90 and -180 <= lon0 < lon1 <= 180):
        raise InvalidArgument(f"bbox {text!r}: need -90 <= lat_min < lat_max <= 90 and -180 <= lon_min < lon_max "
                              f"<= 180 (order LAT_MIN,LON_MIN,LAT_MAX,LON_MAX)")
    return lat0, lon0, lat1, lon1


def _geometries(obj) -> List[Dict]:
    t = obj.get("type") if isinstance(obj, dict) else None
    if t == "FeatureCollection":
        return [g for f in obj.get("features", []) for g in _geometries(f)]
    if t == "Feature":
        return _geometries(obj.get("geometry") or {})
    if t == "GeometryCollection":
        return [g for sub in obj.get("geometries", []) for g in _geometries(sub)]
    if t in ("Polygon", "MultiPolygon", "LineString", "MultiLineString", "Point", "MultiPoint"):
        return [obj]
    raise InvalidArgument(f"not a GeoJSON object (type {t!r})")


def read_geojson(path: Path) -> List[Dict]:
    p = Path(path)
    try:
        obj = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"cannot read GeoJSON {p}: {exc}") from exc
    try:
        return _geometries(obj)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{p}: {exc}") from exc


def _coords(a, what: str) -> np.ndarray:
    arr = np.asarray(a, float)
    if arr.ndim != 2 or arr.shape[1] < 2 or len(arr) < 2:
        raise InvalidArgument(f"{what}: coordinates must be [[lon, lat], ...] with at least 2 points")
    arr = arr[:, :2]
    if np.any(np.abs(arr[:, 0]) > 180) or np.any(np.abs(arr[:, 1]) > 90):
        raise InvalidArgument(f"{what}: coordinates are not WGS84 lon/lat degrees (GeoJSON is WGS84, lon first)")
    return arr


def polygon_area(path: Path) -> Area:
    polys = []
    for g in read_geojson(path):
        if g["type"] == "Polygon":
            polys.append([_coords(r, str(path)) for r in g["coordinates"]])
        elif g["type"] == "MultiPolygon":
            polys.extend([[_coords(r, str(path)) for r in p] for p in g["coordinates"]])
    if not polys:
        raise InvalidArgument(f"{path} holds no Polygon or MultiPolygon")
    return Area(kind="polygon", polygons=polys, source=str(path))


def corridor_area(path: Path, half_width_m: float) -> Area:
    if not (half_width_m > 0):
        raise InvalidArgument(f"corridor half-width must be > 0 m, got {half_width_m}")
    lines = []
    for g in read_geojson(path):
        if g["type"] == "LineString":
            lines.append(_coords(g["coordinates"], str(path)))
        elif g["type"] == "MultiLineString":
            lines.extend(_coords(c, str(path)) for c in g["coordinates"])
    if not lines:
        raise InvalidArgument(f"{path} holds no LineString or MultiLineString (roads)")
    return Area(kind="corridor", lines=lines, half_width_m=float(half_width_m), source=str(path))


def _points_in_ring(px: np.ndarray, py: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over points."""
    inside = np.zeros(px.shape, bool)
    xs, ys = ring[:, 0], ring[:, 1]
    x0, y0 = xs, ys
    x1, y1 = np.roll(xs, -1), np.roll(ys, -1)
    for a, b, c, d in zip(x0, y0, x1, y1):
        if b == d:
            continue
        cross = ((b > py) != (d > py)) & (px < (c - a) * (py - b) / (d - b) + a)
        inside ^= cross
    return inside


def _segments_distance(px: np.ndarray, py: np.ndarray, line: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Distance from each point to a polyline [M, 2] and the index of the nearest segment."""
    best = np.full(px.shape, np.inf)
    seg = np.zeros(px.shape, np.int64)
    for i in range(len(line) - 1):
        ax, ay = line[i]
        bx, by = line[i + 1]
        dx, dy = bx - ax, by - ay
        L2 = dx * dx + dy * dy
        t = np.zeros(px.shape) if L2 == 0 else np.clip(((px - ax) * dx + (py - ay) * dy) / L2, 0.0, 1.0)
        d = np.hypot(px - (ax + t * dx), py - (ay + t * dy))
        better = d < best
        best = np.where(better, d, best)
        seg = np.where(better, i, seg)
    return best, seg


# ---- the plan ----------------------------------------------------------------------------------

@dataclass
class TilePlan:
    """Every tile to cut, in build order (shard, then position, then bin)."""

    frame: LocalFrame
    spacing_m: float
    heading_bins: int
    shard_m: float
    pos_x: np.ndarray  # [P] local x of each grid position
    pos_y: np.ndarray  # [P]
    tile_pos: np.ndarray  # [N] position index of each tile
    tile_bin: np.ndarray  # [N] heading bin of each tile
    tile_shard: np.ndarray  # [N] shard index (into shards)
    shards: List[Tuple[int, int]]  # shard cells (ix, iy), sorted
    positions_outside_imagery: int = 0

    @property
    def num_tiles(self) -> int:
        return int(len(self.tile_pos))

    @staticmethod
    def shard_name(cell: Tuple[int, int]) -> str:
        return f"x{cell[0]:+05d}_y{cell[1]:+05d}"


def plan_tiles(frame: LocalFrame, area: Area, imagery_bounds: Tuple[float, float, float, float], *,
               spacing_m: float, heading_bins: int, shard_m: float = 1000.0, headings: str = "all",
               max_tiles: int = 50_000_000) -> TilePlan:
    """Grid positions inside ``area`` and the imagery bounds, the bins to cut at each, and shards."""
    if not (spacing_m > 0):
        raise InvalidArgument(f"spacing must be > 0 m, got {spacing_m}")
    if not (shard_m >= spacing_m):
        raise InvalidArgument(f"shard size {shard_m} m must be >= the tile spacing {spacing_m} m")
    if headings not in HEADING_MODES:
        raise InvalidArgument(f"headings {headings!r} is not one of {', '.join(HEADING_MODES)}")
    if headings == "road" and area.kind != "corridor":
        raise InvalidArgument("--headings road needs a corridor area (--corridor ROADS.geojson)")
    K = int(heading_bins)
    centres = bin_centres_deg(K)

    def box_xy(lat0, lon0, lat1, lon1):
        t = np.linspace(0, 1, 21)
        la, lo = lat0 + (lat1 - lat0) * t, lon0 + (lon1 - lon0) * t  # the box outline, densified
        lats = np.concatenate([la, np.full(21, lat1), la, np.full(21, lat0)])
        lons = np.concatenate([np.full(21, lon0), lo, np.full(21, lon1), lo])
        x, y = frame.from_latlon(lats, lons)
        return float(np.min(x)), float(np.min(y)), float(np.max(x)), float(np.max(y))

    ix0, iy0, ix1, iy1 = box_xy(*imagery_bounds)
    if area.kind == "bbox":
        ax0, ay0, ax1, ay1 = box_xy(*area.bbox)
    elif area.kind == "polygon":
        pts = np.concatenate([p[0] for p in area.polygons])
        ax0, ay0, ax1, ay1 = box_xy(pts[:, 1].min(), pts[:, 0].min(), pts[:, 1].max(), pts[:, 0].max())
    elif area.kind == "corridor":
        pts = np.concatenate(area.lines)
        x, y = frame.from_latlon(pts[:, 1], pts[:, 0])
        w = area.half_width_m
        ax0, ay0, ax1, ay1 = float(x.min()) - w, float(y.min()) - w, float(x.max()) + w, float(y.max()) + w
    else:
        ax0, ay0, ax1, ay1 = ix0, iy0, ix1, iy1
    x0, y0, x1, y1 = max(ax0, ix0), max(ay0, iy0), min(ax1, ix1), min(ay1, iy1)
    s = float(spacing_m)
    gx = np.arange(math.ceil(x0 / s), math.floor(x1 / s) + 1) * s
    gy = np.arange(math.ceil(y0 / s), math.floor(y1 / s) + 1) * s
    if len(gx) * len(gy) * (1 if headings == "road" else K) > max_tiles:
        raise InvalidArgument(f"the area holds {len(gx) * len(gy)} grid positions x {K} bins, more than "
                              f"{max_tiles} tiles; limit the area (--bbox/--polygon/--corridor) or raise --spacing")
    X, Y = np.meshgrid(gx, gy[::-1])  # north to south rows, west to east
    X, Y = X.ravel(), Y.ravel()
    if area.kind == "bbox":
        lat, lon = frame.to_latlon(X, Y)
        la0, lo0, la1, lo1 = area.bbox
        keep = (lat >= la0) & (lat <= la1) & (lon >= lo0) & (lon <= lo1)
    elif area.kind == "polygon":
        keep = np.zeros(X.shape, bool)
        for poly in area.polygons:
            rings = []
            for r in poly:
                rx, ry = frame.from_latlon(r[:, 1], r[:, 0])
                rings.append(np.stack([rx, ry], axis=1))
            inside = _points_in_ring(X, Y, rings[0])
            for hole in rings[1:]:
                inside &= ~_points_in_ring(X, Y, hole)
            keep |= inside
    elif area.kind == "corridor":
        best = np.full(X.shape, np.inf)
        road_dir = np.zeros(X.shape)  # true bearing of the nearest road segment
        for line in area.lines:
            lx, ly = frame.from_latlon(line[:, 1], line[:, 0])
            pl = np.stack([lx, ly], axis=1)
            d, seg = _segments_distance(X, Y, pl)
            sx, sy = np.diff(lx)[seg], np.diff(ly)[seg]
            grid_bearing = np.degrees(np.arctan2(sx, sy))  # CW from grid north
            better = d < best
            best = np.where(better, d, best)
            road_dir = np.where(better, grid_bearing, road_dir)
        keep = best <= area.half_width_m
    else:
        keep = np.ones(X.shape, bool)
    # tile centres outside the imagery footprint are dropped here (counted)
    lat, lon = frame.to_latlon(X, Y)
    b = imagery_bounds
    in_img = (lat >= b[0]) & (lat <= b[2]) & (lon >= b[1]) & (lon <= b[3])
    outside = int(np.sum(keep & ~in_img))
    keep &= in_img
    if not keep.any():
        raise InvalidArgument(f"the area ({area.describe()}) contains no tile centre on a {s:g} m grid inside the "
                              f"imagery (bounds lat/lon {tuple(round(v, 6) for v in imagery_bounds)}); check the "
                              f"area's order (LAT_MIN,LON_MIN,LAT_MAX,LON_MAX) and that it overlaps the imagery")
    px, py = X[keep], Y[keep]
    if headings == "road":
        conv = frame.grid_convergence_deg(float(np.mean(px)), float(np.mean(py)))
        true_dir = road_dir[keep] + conv
        tol = ROAD_TOL_FRACTION * 360.0 / K
        bins_of = [np.nonzero((angle_diff_deg(centres, d) <= tol + 1e-9) |
                              (angle_diff_deg(centres, d + 180.0) <= tol + 1e-9))[0] for d in true_dir]
    else:
        all_bins = np.arange(K)
        bins_of = [all_bins] * len(px)
    cell_x = np.floor(px / shard_m).astype(np.int64)
    cell_y = np.floor(py / shard_m).astype(np.int64)
    cells = sorted(set(zip(cell_x.tolist(), cell_y.tolist())))
    cell_index = {c: i for i, c in enumerate(cells)}
    pos_shard = np.array([cell_index[c] for c in zip(cell_x.tolist(), cell_y.tolist())], np.int64)
    order = np.argsort(pos_shard, kind="stable")  # shard, then the grid order (N->S, W->E)
    tile_pos, tile_bin = [], []
    for p in order:
        tile_pos.append(np.full(len(bins_of[p]), p, np.int64))
        tile_bin.append(np.asarray(bins_of[p], np.int64))
    tile_pos = np.concatenate(tile_pos)
    return TilePlan(frame=frame, spacing_m=s, heading_bins=K, shard_m=float(shard_m), pos_x=px, pos_y=py,
                    tile_pos=tile_pos, tile_bin=np.concatenate(tile_bin), tile_shard=pos_shard[tile_pos],
                    shards=cells, positions_outside_imagery=outside)


def describe_bins(K: int) -> List[float]:
    return [float(v) for v in bin_centres_deg(K)]
