"""The synthetic world: raster layers + vector features, on disk and in memory.

A world is a square area ``size_m`` wide centred on a datum (lat, lon), rasterised at
``gsd_m`` metres per pixel on the UTM grid (see ``core.geo.LocalFrame``). Layers:

========================  ===========  ==================================================
file                      dtype        meaning
========================  ===========  ==================================================
``orthophoto.tif``        uint8 x3     what a survey aircraft saw (lit, shadows), RGB
``albedo.tif``            uint8 x3     unlit surface colour (roads, roofs, grass, ...)
``height.tif``            float32      object height above the ground beneath it, metres
``semantic.tif``          uint8        class id, see ``Sem``
``object_id.tif``         int32        building id (1..N) for building pixels, else 0
``elevation.tif``         float32      terrain above the datum (m); only with terrain
``roads.geojson``         WGS84        road centrelines with width, lanes, kind
``buildings.geojson``     WGS84        building footprints with heights and colours
``world.npz``             arrays       road graph and building table in local metres
``world.json``            manifest     format, seed, size, gsd, CRS, datum, checksums,
                                       ``survey`` (the aerial survey's record, ``sim.survey``)
========================  ===========  ==================================================

The orthophoto is what a survey recorded; the other layers are the truth at drive time. With
a survey gap (``sim.survey``, default of `geoloc sim world`) the orthophoto has its own sun,
season and parked cars, photometry and blur, is JPEG-compressed and misregistered by
``sim.survey.misregistration_displacement``.

All GeoTIFFs are tiled (256x256), deflate-compressed and carry the UTM CRS and the
geotransform, so any GIS opens them. Pixel (row, col) covers local x in
[x_min + col*gsd, x_min + (col+1)*gsd) and y in (y_max - (row+1)*gsd, y_max - row*gsd].
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from ..core.errors import IncompatibleArtifact
from ..core.geo import LocalFrame
from ..core.manifest import read_manifest, sha256_file
from ..core.outputs import prepare_output_dir

WORLD_FORMAT = "geoloc-world"
WORLD_FORMAT_VERSION = 2  # v2: "survey" record (orthophoto flown at another time); v1 still loads (no gap)
READABLE_WORLD_VERSIONS = (1, 2)


class Sem(IntEnum):
    """Semantic classes of the world rasters."""

    GRASS = 0
    ROAD = 1
    MARKING = 2  # white paint: lane lines, edge lines, crosswalks, parking stalls
    MARKING_YELLOW = 3  # yellow centre line
    SIDEWALK = 4
    BUILDING = 5
    TREE = 6
    PARKING = 7
    FIELD = 8
    DIRT = 9
    CAR = 10
    WATER = 11


# Classes a ray hits as a vertical obstacle (others are flat ground).
OBSTACLE_CLASSES = (Sem.BUILDING, Sem.TREE, Sem.CAR)


@dataclass(frozen=True)
class WorldMeta:
    seed: int
    size_m: float
    gsd_m: float
    origin_lat: float
    origin_lon: float
    frame: LocalFrame
    params: Dict = field(default_factory=dict)

    @property
    def shape(self) -> Tuple[int, int]:
        n = int(round(self.size_m / self.gsd_m))
        return n, n

    @property
    def x_min(self) -> float:
        return -self.size_m / 2.0

    @property
    def y_max(self) -> float:
        return self.size_m / 2.0

    def transform(self):
        """rasterio Affine geotransform (UTM metres)."""
        from rasterio.transform import Affine

        return Affine(self.gsd_m, 0.0, self.frame.origin_e + self.x_min, 0.0, -self.gsd_m,
                      self.frame.origin_n + self.y_max)


@dataclass
class RoadGraph:
    """Road network in local metres. Edges are polylines from node ``u`` to node ``v``."""

    nodes: np.ndarray  # [N, 2] float64 (x, y)
    edge_uv: np.ndarray  # [E, 2] int
    edge_points: List[np.ndarray]  # E polylines [M_i, 2], first point at nodes[u], last at nodes[v]
    edge_width: np.ndarray  # [E] carriageway width (m), kerb to kerb
    edge_lanes: np.ndarray  # [E] total lanes (both directions)
    edge_kind: List[str]  # "arterial" | "street" | "curve"

    def __post_init__(self):
        self._adj: Dict[int, List[int]] = {}
        for e, (u, v) in enumerate(self.edge_uv):
            self._adj.setdefault(int(u), []).append(e)
            self._adj.setdefault(int(v), []).append(e)

    @property
    def num_edges(self) -> int:
        return len(self.edge_uv)

    def edges_at(self, node: int) -> List[int]:
        return list(self._adj.get(int(node), []))

    def degree(self, node: int) -> int:
        return len(self._adj.get(int(node), []))

    def other_end(self, edge: int, node: int) -> int:
        u, v = self.edge_uv[edge]
        return int(v) if int(u) == int(node) else int(u)

    def polyline_from(self, edge: int, node: int) -> np.ndarray:
        """The edge's polyline oriented to start at ``node``."""
        pts = self.edge_points[edge]
        return pts if int(self.edge_uv[edge][0]) == int(node) else pts[::-1]

    def length(self, edge: int) -> float:
        p = self.edge_points[edge]
        return float(np.sum(np.hypot(*np.diff(p, axis=0).T)))


@dataclass
class Buildings:
    """Building table. Footprints are oriented rectangles; id i+1 in ``object_id`` is row i."""

    cx: np.ndarray  # [N] centre x (m)
    cy: np.ndarray  # [N] centre y (m)
    half_len: np.ndarray  # [N] half size along the building axis (m)
    half_wid: np.ndarray  # [N] half size across (m)
    yaw: np.ndarray  # [N] axis direction, rad CCW from +x
    eave_h: np.ndarray  # [N] wall height (m)
    ridge_h: np.ndarray  # [N] extra height at the ridge for gabled roofs (0 = flat roof)
    facade_rgb: np.ndarray  # [N, 3] uint8
    roof_rgb: np.ndarray  # [N, 3] uint8
    floor_h: np.ndarray  # [N] storey height (m), windows one per floor
    window_spacing: np.ndarray  # [N] horizontal window pitch (m)

    def __len__(self) -> int:
        return len(self.cx)

    def corners(self, i: int) -> np.ndarray:
        """[4, 2] footprint corners (CCW) of building row i."""
        c, s = np.cos(self.yaw[i]), np.sin(self.yaw[i])
        ax, ay = np.array([c, s]), np.array([-s, c])
        hl, hw = self.half_len[i], self.half_wid[i]
        ctr = np.array([self.cx[i], self.cy[i]])
        return np.stack([ctr + hl * ax + hw * ay, ctr - hl * ax + hw * ay,
                         ctr - hl * ax - hw * ay, ctr + hl * ax - hw * ay])

    _FIELDS = ("cx", "cy", "half_len", "half_wid", "yaw", "eave_h", "ridge_h", "facade_rgb", "roof_rgb",
               "floor_h", "window_spacing")

    def to_arrays(self, prefix: str = "b_") -> Dict[str, np.ndarray]:
        return {prefix + k: np.asarray(getattr(self, k)) for k in self._FIELDS}

    @classmethod
    def from_arrays(cls, d, prefix: str = "b_") -> "Buildings":
        return cls(**{k: np.asarray(d[prefix + k]) for k in cls._FIELDS})

    @classmethod
    def empty(cls) -> "Buildings":
        z = np.zeros(0)
        return cls(z, z, z, z, z, z, z, np.zeros((0, 3), np.uint8), np.zeros((0, 3), np.uint8), z, z)


class ParkedCars(NamedTuple):
    """Lot cars of a world (drive time) and the empty stalls a survey may park in: [N, 3] (x, y, yaw)."""

    cars: np.ndarray
    free_stalls: np.ndarray

    @classmethod
    def none(cls) -> "ParkedCars":
        return cls(np.zeros((0, 3)), np.zeros((0, 3)))


def read_world_manifest(world_dir: Path) -> Dict[str, Any]:
    """``world_dir/world.json``, checked for format and version (``core.manifest``)."""
    world_dir = Path(world_dir)
    mpath = world_dir / "world.json"
    if not mpath.is_file():
        raise IncompatibleArtifact(f"{world_dir} is not a geoloc world (no world.json); "
                                   f"create one with `geoloc sim world --out {world_dir}`")
    return read_manifest(mpath, WORLD_FORMAT, READABLE_WORLD_VERSIONS, what="geoloc world",
                         rebuild=f"regenerate it with `geoloc sim world --out {world_dir} --force`")


@dataclass
class World:
    meta: WorldMeta
    albedo: np.ndarray  # [H, W, 3] uint8
    ortho: np.ndarray  # [H, W, 3] uint8
    height: np.ndarray  # [H, W] float32
    semantic: np.ndarray  # [H, W] uint8
    object_id: np.ndarray  # [H, W] int32
    roads: RoadGraph
    buildings: Buildings
    survey: Optional[Dict] = None  # the aerial survey's record (sim.survey), None: no survey gap
    parked: Optional[ParkedCars] = None  # lot cars and empty stalls (generated worlds, format v2)
    elevation: Optional[np.ndarray] = None  # [H, W] float32 terrain (m above the datum), None: flat
    terrain: Optional[Dict] = None  # the terrain's record (sim.terrain), None: flat

    # ---- geometry -------------------------------------------------------------------
    @property
    def frame(self) -> LocalFrame:
        return self.meta.frame

    def xy_to_rc(self, x, y) -> Tuple[np.ndarray, np.ndarray]:
        """Local metres -> continuous (row, col); pixel (r, c) spans [r, r+1) x [c, c+1)."""
        g = self.meta.gsd_m
        return (self.meta.y_max - np.asarray(y, float)) / g, (np.asarray(x, float) - self.meta.x_min) / g

    def rc_to_xy(self, row, col) -> Tuple[np.ndarray, np.ndarray]:
        """Continuous (row, col) -> local metres (use r+0.5, c+0.5 for a pixel centre)."""
        g = self.meta.gsd_m
        return self.meta.x_min + np.asarray(col, float) * g, self.meta.y_max - np.asarray(row, float) * g

    def contains(self, x, y, margin_m: float = 0.0):
        h = self.meta.size_m / 2.0 - margin_m
        return (np.abs(np.asarray(x)) <= h) & (np.abs(np.asarray(y)) <= h)

    # ---- persistence ----------------------------------------------------------------
    RASTERS = {
        "orthophoto.tif": ("ortho", "RGB orthophoto"),
        "albedo.tif": ("albedo", "unlit surface colour"),
        "height.tif": ("height", "object height above ground (m)"),
        "semantic.tif": ("semantic", "semantic class (geoloc_ros.sim.world.Sem)"),
        "object_id.tif": ("object_id", "building id, 0 = none"),
    }

    def save(self, out_dir: Path, *, force: bool = False, extra_manifest: Dict | None = None) -> Path:
        """Write all layers and the manifest. Refuses a non-empty ``out_dir`` unless ``force``."""
        import rasterio

        out_dir = Path(out_dir)
        prepare_output_dir(out_dir, force=force)
        profile = dict(driver="GTiff", width=self.meta.shape[1], height=self.meta.shape[0], crs=self.frame.crs,
                       transform=self.meta.transform(), tiled=True, blockxsize=256, blockysize=256,
                       compress="deflate", predictor=1, interleave="pixel")
        jpeg_quality = (self.survey or {}).get("jpeg_quality")
        for name, (attr, desc) in self.RASTERS.items():
            arr = getattr(self, attr)
            bands = arr.transpose(2, 0, 1) if arr.ndim == 3 else arr[None]
            p = dict(profile, count=bands.shape[0], dtype=str(arr.dtype))
            if bands.shape[0] == 3:
                p["photometric"] = "RGB"
            if attr == "ortho" and jpeg_quality:  # the survey delivered a JPEG-compressed GeoTIFF
                p.update(compress="jpeg", photometric="YCBCR", jpeg_quality=int(jpeg_quality))
                p.pop("predictor", None)
            with rasterio.open(out_dir / name, "w", **p) as dst:
                dst.write(bands)
                dst.update_tags(DESCRIPTION=desc, GEOLOC_WORLD_SEED=str(self.meta.seed))
        if self.elevation is not None:
            with rasterio.open(out_dir / "elevation.tif", "w", **dict(profile, count=1, dtype="float32")) as dst:
                dst.write(self.elevation.astype(np.float32)[None])
                dst.update_tags(DESCRIPTION="terrain elevation above the datum (m)",
                                GEOLOC_WORLD_SEED=str(self.meta.seed))
        np.savez_compressed(out_dir / "world.npz", **self._vector_arrays())
        self._write_geojson(out_dir)
        manifest = {
            "format": WORLD_FORMAT,
            "format_version": WORLD_FORMAT_VERSION,
            "seed": self.meta.seed,
            "size_m": self.meta.size_m,
            "gsd_m": self.meta.gsd_m,
            "origin_lat": self.meta.origin_lat,
            "origin_lon": self.meta.origin_lon,
            "crs": self.frame.crs,
            "frame": self.frame.to_dict(),
            "shape": list(self.meta.shape),
            "local_frame": "UTM grid axes; local (0,0) = frame origin_e/origin_n; x east, y north (m)",
            "params": self.meta.params,
            "survey": self.survey,
            "terrain": self.terrain,
            "counts": {"buildings": len(self.buildings), "road_edges": self.roads.num_edges,
                       "road_nodes": int(len(self.roads.nodes))},
            "files": {f.name: sha256_file(f) for f in sorted(out_dir.iterdir()) if f.name != "world.json"},
        }
        if extra_manifest:
            manifest.update(extra_manifest)
        (out_dir / "world.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return out_dir

    def _vector_arrays(self) -> Dict[str, np.ndarray]:
        r = self.roads
        lens = np.array([len(p) for p in r.edge_points], np.int64)
        pts = np.concatenate(r.edge_points) if len(r.edge_points) else np.zeros((0, 2))
        d = {"r_nodes": r.nodes, "r_edge_uv": r.edge_uv, "r_edge_npts": lens, "r_edge_points": pts,
             "r_edge_width": r.edge_width, "r_edge_lanes": r.edge_lanes,
             "r_edge_kind": np.array(r.edge_kind, dtype="U16")}
        d.update(self.buildings.to_arrays())
        if self.parked is not None:
            d.update({"p_cars": np.asarray(self.parked.cars, float).reshape(-1, 3),
                      "p_free_stalls": np.asarray(self.parked.free_stalls, float).reshape(-1, 3)})
        return d

    def _write_geojson(self, out_dir: Path) -> None:
        fr = self.frame

        def ll(pts):
            lat, lon = fr.to_latlon(pts[:, 0], pts[:, 1])
            return [[round(float(a), 8), round(float(b), 8)] for a, b in zip(np.atleast_1d(lon), np.atleast_1d(lat))]

        roads = [{"type": "Feature", "id": e,
                  "properties": {"edge": e, "u": int(u), "v": int(v), "width_m": float(self.roads.edge_width[e]),
                                 "lanes": int(self.roads.edge_lanes[e]), "kind": self.roads.edge_kind[e]},
                  "geometry": {"type": "LineString", "coordinates": ll(self.roads.edge_points[e])}}
                 for e, (u, v) in enumerate(self.roads.edge_uv)]
        b = self.buildings
        blds = []
        for i in range(len(b)):
            ring = ll(b.corners(i))
            blds.append({"type": "Feature", "id": i + 1,
                         "properties": {"id": i + 1, "height_m": float(b.eave_h[i] + b.ridge_h[i]),
                                        "eave_m": float(b.eave_h[i]),
                                        "roof": "gable" if b.ridge_h[i] > 0 else "flat",
                                        "facade_rgb": [int(c) for c in b.facade_rgb[i]],
                                        "roof_rgb": [int(c) for c in b.roof_rgb[i]]},
                         "geometry": {"type": "Polygon", "coordinates": [ring + ring[:1]]}})
        for name, feats in (("roads.geojson", roads), ("buildings.geojson", blds)):
            (out_dir / name).write_text(json.dumps({"type": "FeatureCollection", "features": feats}) + "\n")

    @classmethod
    def load(cls, world_dir: Path, *, layers: Tuple[str, ...] | None = None) -> "World":
        """Load a world written by ``save``. ``layers`` limits which rasters are read (others are None)."""
        import rasterio

        world_dir = Path(world_dir)
        m = read_world_manifest(world_dir)
        meta = WorldMeta(seed=int(m["seed"]), size_m=float(m["size_m"]), gsd_m=float(m["gsd_m"]),
                         origin_lat=float(m["origin_lat"]), origin_lon=float(m["origin_lon"]),
                         frame=LocalFrame.from_dict(m["frame"]), params=m.get("params", {}))
        arrays = {}
        for name, (attr, _) in cls.RASTERS.items():
            if layers is not None and attr not in layers:
                arrays[attr] = None
                continue
            with rasterio.open(world_dir / name) as src:
                a = src.read()
            arrays[attr] = a.transpose(1, 2, 0).copy() if a.shape[0] == 3 else a[0]
        epath = world_dir / "elevation.tif"
        if epath.is_file() and (layers is None or "elevation" in layers):
            with rasterio.open(epath) as src:
                arrays["elevation"] = src.read(1)
        with np.load(world_dir / "world.npz") as z:
            npts = z["r_edge_npts"]
            splits = np.split(z["r_edge_points"], np.cumsum(npts)[:-1]) if len(npts) else []
            roads = RoadGraph(nodes=z["r_nodes"], edge_uv=z["r_edge_uv"], edge_points=list(splits),
                              edge_width=z["r_edge_width"], edge_lanes=z["r_edge_lanes"],
                              edge_kind=[str(k) for k in z["r_edge_kind"]])
            buildings = Buildings.from_arrays(z)
            parked = ParkedCars(z["p_cars"], z["p_free_stalls"]) if "p_cars" in z.files else None
        return cls(meta=meta, roads=roads, buildings=buildings, survey=m.get("survey"), parked=parked,
                   terrain=m.get("terrain"), **arrays)


def rasterize_box(shape: Tuple[int, int], world_xy_to_rc, cx: float, cy: float, half_len: float, half_wid: float,
                  yaw: float, gsd: float):
    """Pixel window and mask of an oriented box. Returns (r0, c0, mask) or None if off-raster.

    Also returns local box coordinates (u along the axis, v across) of each window pixel centre,
    used for gabled roofs and facades.
    """
    rad = np.hypot(half_len, half_wid)
    r_c, c_c = world_xy_to_rc(cx, cy)
    r0 = max(int(np.floor(r_c - rad / gsd)) - 1, 0)
    r1 = min(int(np.ceil(r_c + rad / gsd)) + 1, shape[0])
    c0 = max(int(np.floor(c_c - rad / gsd)) - 1, 0)
    c1 = min(int(np.ceil(c_c + rad / gsd)) + 1, shape[1])
    if r0 >= r1 or c0 >= c1:
        return None
    rr, cc = np.mgrid[r0:r1, c0:c1]
    px = (cc + 0.5 - c_c) * gsd
    py = -(rr + 0.5 - r_c) * gsd
    c, s = np.cos(yaw), np.sin(yaw)
    u = px * c + py * s
    v = -px * s + py * c
    mask = (np.abs(u) <= half_len) & (np.abs(v) <= half_wid)
    return r0, c0, mask, u, v


def make_toy_world(size_m: float = 200.0, gsd_m: float = 0.5, lat: float = 44.4759, lon: float = -73.2121) -> World:
    """A tiny hand-built world for unit tests: one east-west and one north-south road
    crossing at (0, 0), four buildings of known size, colour and height, and a few trees.

    Building 1: centre (30, 30), 20 x 14 m, 12 m high, red facade, grey roof.
    Building 2: centre (-35, 28), 16 x 16 m, 20 m high, blue facade.
    Building 3: centre (-30, -30), 24 x 10 m, 6 m eave + 3 m ridge (gabled), yellow facade.
    Building 4: centre (32, -35), 12 x 12 m, 30 m high, white facade.
    """
    frame = LocalFrame.at(lat, lon)
    meta = WorldMeta(seed=0, size_m=size_m, gsd_m=gsd_m, origin_lat=lat, origin_lon=lon, frame=frame,
                     params={"toy": True})
    n = meta.shape[0]
    sem = np.full((n, n), Sem.GRASS, np.uint8)
    height = np.zeros((n, n), np.float32)
    oid = np.zeros((n, n), np.int32)
    albedo = np.zeros((n, n, 3), np.uint8)
    half = size_m / 2.0
    rows = np.arange(n) + 0.5
    ys = half - rows * gsd_m
    xs = -half + rows * gsd_m
    X, Y = np.meshgrid(xs, ys)
    road = (np.abs(Y) <= 5.0) | (np.abs(X) <= 5.0)
    walk = ~road & ((np.abs(Y) <= 8.0) | (np.abs(X) <= 8.0))
    sem[walk] = Sem.SIDEWALK
    sem[road] = Sem.ROAD
    dash = ((np.abs(Y) <= 0.15) & (np.mod(X, 6.0) < 3.0) & (np.abs(X) > 8)) | \
           ((np.abs(X) <= 0.15) & (np.mod(Y, 6.0) < 3.0) & (np.abs(Y) > 8))
    sem[dash] = Sem.MARKING
    b = Buildings(cx=np.array([30.0, -35.0, -30.0, 32.0]), cy=np.array([30.0, 28.0, -30.0, -35.0]),
                  half_len=np.array([10.0, 8.0, 12.0, 6.0]), half_wid=np.array([7.0, 8.0, 5.0, 6.0]),
                  yaw=np.zeros(4), eave_h=np.array([12.0, 20.0, 6.0, 30.0]), ridge_h=np.array([0.0, 0.0, 3.0, 0.0]),
                  facade_rgb=np.array([[170, 60, 50], [60, 80, 170], [200, 180, 70], [225, 225, 220]], np.uint8),
                  roof_rgb=np.array([[110, 110, 110], [90, 90, 100], [140, 70, 50], [150, 150, 150]], np.uint8),
                  floor_h=np.array([3.0, 3.2, 3.0, 3.5]), window_spacing=np.array([3.0, 2.5, 3.5, 3.0]))
    world = World(meta=meta, albedo=albedo, ortho=albedo, height=height, semantic=sem, object_id=oid,
                  roads=RoadGraph(nodes=np.array([[-half, 0.0], [half, 0.0], [0.0, -half], [0.0, half], [0.0, 0.0]]),
                                  edge_uv=np.array([[0, 4], [4, 1], [2, 4], [4, 3]]),
                                  edge_points=[np.array([[-half, 0.0], [0.0, 0.0]]), np.array([[0.0, 0.0], [half, 0.0]]),
                                               np.array([[0.0, -half], [0.0, 0.0]]), np.array([[0.0, 0.0], [0.0, half]])],
                                  edge_width=np.full(4, 10.0), edge_lanes=np.full(4, 2), edge_kind=["street"] * 4),
                  buildings=b)
    for i in range(len(b)):
        r0, c0, m, u, v = rasterize_box((n, n), world.xy_to_rc, b.cx[i], b.cy[i], b.half_len[i], b.half_wid[i],
                                        b.yaw[i], gsd_m)
        win = (slice(r0, r0 + m.shape[0]), slice(c0, c0 + m.shape[1]))
        roof = b.eave_h[i] + b.ridge_h[i] * (1.0 - np.abs(v) / b.half_wid[i])
        height[win][m] = roof[m]
        sem[win][m] = Sem.BUILDING
        oid[win][m] = i + 1
    for tx, ty in [(15.0, 15.0), (-15.0, 15.0), (15.0, -15.0), (-60.0, 15.0)]:
        d = np.hypot(X - tx, Y - ty)
        m = d <= 3.0
        height[m] = np.maximum(height[m], (8.0 * np.sqrt(1 - (d[m] / 3.0) ** 2)).astype(np.float32))
        sem[m] = Sem.TREE
    palette = default_palette()
    albedo[:] = palette[sem]
    for i in range(len(b)):
        albedo[oid == i + 1] = b.roof_rgb[i]
    world.ortho = albedo.copy()
    return world


def default_palette() -> np.ndarray:
    """[len(Sem), 3] uint8 unlit colour per class (the generator varies it per object)."""
    p = np.zeros((len(Sem), 3), np.uint8)
    p[Sem.GRASS] = (96, 132, 62)
    p[Sem.ROAD] = (78, 78, 82)
    p[Sem.MARKING] = (232, 232, 226)
    p[Sem.MARKING_YELLOW] = (226, 188, 60)
    p[Sem.SIDEWALK] = (176, 172, 164)
    p[Sem.BUILDING] = (140, 140, 140)
    p[Sem.TREE] = (52, 96, 44)
    p[Sem.PARKING] = (96, 96, 98)
    p[Sem.FIELD] = (150, 146, 84)
    p[Sem.DIRT] = (140, 116, 84)
    p[Sem.CAR] = (160, 30, 30)
    p[Sem.WATER] = (50, 80, 110)
    return p
