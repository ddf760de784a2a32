"""Convert real cross-view datasets into the geoloc dataset layout (``geoloc_ros.core.dataset``).

Three source layouts are read, each as its authors distribute it:

* **SeqGeo** (Zhang et al., WACV 2023): ``json/2019_JSON/<n>.json`` with ``center`` [lat, lon],
  ``satellite_views`` {"20": path} and ``street_views`` {key: {lat, lon, name}}; images under
  ``satellite/`` and ``street/2019_street/``. Sequences of limited-FOV frames: each frame is
  resized to the target size (rows cropped first when the frame is taller than W:H, so the
  horizontal FOV is kept). Frame order and the train/test cut follow the authors' loader:
  keys beyond ``seq_len`` are dropped from the end, the rest are taken in ``sorted(keys)``
  order (taken as oldest first); JSON files sorted by number, the first 80 % are train and
  ``files[int(0.8 n + 1):]`` is their validation set, our ``test``. The satellite image is
  kept NORTH-UP: ``tile_heading_deg`` = 0, ``heading_deg`` = the travel direction (bearing
  from the first to the last frame), manifest ``aerial.heading_up`` = false.
* **CVUSA**: ``splits/train-19zl.csv`` / ``splits/val-19zl.csv``, rows
  ``bingmap/19/<id>.jpg,streetview/panos/<id>.jpg,annotations/<id>.png``. No coordinates
  (manifest ``geo`` = false): lat, lon = 0 and x = 1000 m x a running index, y = 0, so no
  two pairs are ever "near" for the trainer's geographic batch sampler.
* **VIGOR** (Zhu et al., CVPR 2021): ``<City>/panorama/<id>,<lat>,<lon>,.jpg``,
  ``<City>/satellite/satellite_<lat>_<lon>.png`` and ``splits/<City>/*.txt`` lines
  ``pano sat0 dlat0 dlon0 sat1 dlat1 dlon1 sat2 ... sat3 ...`` (the positive first, then three
  semi-positives; ``delta`` = reference minus panorama position in pixels of the 640 px image,
  so the panorama lies at column 320 - dlon, row 320 + dlat). Same-area splits
  (``same_area_balanced_{train,test}.txt``) or cross-area (``pano_label_balanced.txt``:
  NewYork + Seattle train, SanFrancisco + Chicago ``test_world``).

Panoramas (CVUSA, VIGOR) are north-aligned equirectangular images: north at the centre
column, azimuth increasing to the right (clockwise), horizon at the centre row. Each becomes a
sequence of ONE pinhole view (``equirect_to_pinhole``) at a heading (fixed, or seeded random
per panorama), and its aerial image is rotated so that heading points up (``heading_up_tile``),
as the sim's tiles are. VIGOR tiles are centred on the panorama's position: the positive
satellite image is completed from the semi-positives where the rotated square leaves it.

Satellite ground resolution is Web Mercator at the source's zoom (VIGOR and SeqGeo: zoom 20
for a 640 px image, 0.149 m x cos(lat) per pixel). ``x, y`` are metres on the UTM grid of a
``LocalFrame`` per world (VIGOR: per city, SeqGeo: one), ``yaw`` is grid-based and
``heading_deg`` true, as for sim datasets. VIGOR's semi-positives are written to
``splits/<split>_semipositive.csv`` (one row per reference image, the positive included).

numpy + Pillow only (and pyproj through ``core.geo``); images are processed in worker processes.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import zlib
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.camera import PinholeCamera
from ..core.dataset import (DATASET_FORMAT, DATASET_FORMAT_VERSION, KEYFRAME_COLUMNS, SPLITS, SequenceRecord,
                            write_rows, write_split)
from ..core.errors import IncompatibleArtifact, InvalidArgument
from ..core.tiles import sample_bilinear

log = logging.getLogger(__name__)

MERCATOR_M_PER_PX_Z0 = 156543.03392804097  # Web Mercator ground resolution at zoom 0 on the equator (256 px tiles)
CVUSA_SPACING_M = 1000.0
VIGOR_CITIES = ("NewYork", "Seattle", "SanFrancisco", "Chicago")
VIGOR_CROSS_TRAIN = ("NewYork", "Seattle")
VIGOR_REF_PX = 640.0
VIGOR_ZOOM = 20
SEQGEO_REF_PX = 640.0
SEQGEO_ZOOM = 20
SEMIPOSITIVE_COLUMNS = ["seq", "rank", "kind", "satellite", "lat", "lon", "delta_lat_px", "delta_lon_px",
                        "pano_east_m", "pano_north_m"]
JPEG = {"quality": 92, "subsampling": 0}


# ---------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class ConvertConfig:
    """Options of a conversion; ``None`` means the format's default (see each field)."""

    width: int = 256
    height: int = 128
    hfov_deg: Optional[float] = None  # crop FOV for panoramas (default 90); recorded as given for SeqGeo frames
    heading_deg: Optional[float] = None  # panorama crop heading; None = seeded random per panorama
    tile_px: int = 256
    tile_m: Optional[float] = None  # VIGOR: fixed tile side in metres; None = the largest fully covered square
    pano_vfov_deg: Optional[float] = None  # vertical extent of the panoramas; None = 360 * H / W
    seq_len: int = 7  # SeqGeo frames per sequence
    splits: Optional[Tuple[str, ...]] = None  # our split names to write; None = all the format has
    val_fraction: float = 0.05  # tail of each train group moved to val
    limit: int = 0  # at most this many sequences per split (0 = all)
    vigor_area: str = "same"  # "same" (same-area splits) or "cross" (cross-area: unseen cities -> test_world)
    cities: Optional[Tuple[str, ...]] = None  # VIGOR cities (None = every city present)
    seed: int = 0

    def __post_init__(self):
        checks = [
            (0.0 <= self.val_fraction < 1.0, f"val_fraction {self.val_fraction} is outside [0, 1)"),
            (self.limit >= 0, f"limit {self.limit} is negative"),
            (16 <= self.tile_px <= 2048, f"tile_px {self.tile_px} is outside 16..2048"),
            (1 <= self.seq_len <= 64, f"seq_len {self.seq_len} is outside 1..64"),
            (self.vigor_area in ("same", "cross"), f"vigor_area {self.vigor_area!r} must be 'same' or 'cross'"),
            (self.tile_m is None or 5.0 <= self.tile_m <= 1000.0, f"tile_m {self.tile_m} is outside 5..1000"),
            (self.pano_vfov_deg is None or 10.0 <= self.pano_vfov_deg <= 180.0,
             f"pano_vfov_deg {self.pano_vfov_deg} is outside 10..180"),
            (self.heading_deg is None or math.isfinite(self.heading_deg), "heading_deg must be finite"),
        ]
        for ok, msg in checks:
            if not ok:
                raise InvalidArgument(msg)
        if self.splits is not None:
            bad = sorted(set(self.splits) - set(SPLITS))
            if bad:
                raise InvalidArgument(f"unknown split(s) {bad}; splits are {list(SPLITS)}")
        self.camera  # validates size and FOV

    @property
    def camera(self) -> PinholeCamera:
        return PinholeCamera(self.width, self.height, 90.0 if self.hfov_deg is None else self.hfov_deg)


# ---------------------------------------------------------------------------------------------- geometry


def equirect_to_pinhole(pano: np.ndarray, heading_deg: float, camera: PinholeCamera,
                        pano_vfov_deg: Optional[float] = None) -> np.ndarray:
    """Pinhole view (zero pitch and roll, horizon at the centre row) of a north-aligned panorama.

    ``pano`` [H, W, C] is equirectangular: column W/2 (the centre line) looks north, azimuth
    grows clockwise to the right, the centre row is the horizon and the rows span
    ``pano_vfov_deg`` (default 360 * H / W: square angular pixels). The view's optical axis
    points to compass heading ``heading_deg``. Bilinear, wrapping around horizontally; rows
    beyond the panorama repeat its edge. Returns uint8 [camera.height, camera.width, C].
    """
    H, W = pano.shape[:2]
    vfov = 360.0 * H / W if pano_vfov_deg is None else float(pano_vfov_deg)
    u = np.arange(camera.width) - camera.cx  # pixel centres at integer coordinates (ROS / OpenCV)
    v = np.arange(camera.height) - camera.cy
    uu, vv = np.meshgrid(u, v)
    az = np.degrees(np.arctan2(uu, camera.fx))  # right of the axis is positive (clockwise)
    el = np.degrees(np.arctan2(-vv, np.hypot(uu, camera.fx)))
    cols = W / 2.0 + (heading_deg + az) / 360.0 * W
    rows = H / 2.0 - el / vfov * H
    return _sample_wrap(pano, rows, cols)


def _sample_wrap(img: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear sample at continuous pixel-edge coordinates, columns wrapping, rows clamped."""
    H, W = img.shape[:2]
    r = np.clip(np.asarray(rows, np.float64) - 0.5, 0.0, H - 1.0)
    c = np.asarray(cols, np.float64) - 0.5
    r0 = np.floor(r).astype(np.int64)
    r1 = np.minimum(r0 + 1, H - 1)
    c0f = np.floor(c)
    c0 = c0f.astype(np.int64) % W
    c1 = (c0 + 1) % W
    fr = (r - r0).astype(np.float32)
    fc = (c - c0f).astype(np.float32)
    im = img.astype(np.float32, copy=False)
    if img.ndim == 3:
        fr, fc = fr[..., None], fc[..., None]
    top = im[r0, c0] * (1 - fc) + im[r0, c1] * fc
    bot = im[r1, c0] * (1 - fc) + im[r1, c1] * fc
    return np.clip(top * (1 - fr) + bot * fr + 0.5, 0, 255).astype(np.uint8)


def heading_up_tile(sources: Sequence[Tuple[np.ndarray, float, float]], heading_deg: float, side_px: float,
                    out_px: int, fill: float = 0.0) -> Tuple[np.ndarray, float]:
    """Square crop of north-up images, ``side_px`` source pixels wide, rotated so ``heading_deg`` points up.

    ``sources``: (image [H, W, C], col, row) in priority order, where (col, row) is the crop
    centre in that image's continuous pixel coordinates; all share one ground resolution.
    Each output pixel comes from the first source that contains it, else ``fill``.
    Returns (uint8 [out_px, out_px, C], fraction of the tile covered by the sources).
    """
    n = int(out_px)
    s = side_px / n
    k = (np.arange(n) + 0.5 - n / 2.0) * s
    right, up = np.meshgrid(k, -k)  # row 0 is ahead
    h = math.radians(heading_deg)
    sh, ch = math.sin(h), math.cos(h)
    shape = sources[0][0].shape[2:]  # () for grey, (C,) for colour
    out = np.full((n, n) + shape, fill, np.float32)
    done = np.zeros((n, n), bool)
    for img, pc, pr in sources:
        H, W = img.shape[:2]
        cols = pc + up * sh + right * ch  # image columns grow east, rows grow south
        rows = pr - up * ch + right * sh
        take = ~done & (rows >= 0) & (rows <= H) & (cols >= 0) & (cols <= W)
        if take.any():
            out[take] = sample_bilinear(img, rows[take], cols[take])
            done |= take
        if done.all():
            break
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), float(done.mean())


def web_mercator_gsd(lat_deg, zoom: int):
    """Ground metres per pixel of Web Mercator imagery (256 px tiles) at ``zoom`` and latitude."""
    return MERCATOR_M_PER_PX_Z0 * np.cos(np.radians(lat_deg)) / 2.0 ** zoom


def bearing_deg(lat1, lon1, lat2, lon2):
    """Initial great-circle bearing (deg clockwise from true north, [0, 360)) from point 1 to point 2."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dl = np.radians(np.asarray(lon2, float) - np.asarray(lon1, float))
    b = np.degrees(np.arctan2(np.sin(dl) * np.cos(p2), np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl)))
    return np.mod(b, 360.0)


def haversine_m(lat1, lon1, lat2, lon2):
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(np.asarray(lon2, float) -
                                                                                np.asarray(lon1, float)) / 2) ** 2
    return 2 * 6371008.8 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


# ---------------------------------------------------------------------------------------------- source parsing


def parse_vigor_panorama_name(name: str) -> Tuple[str, float, float]:
    """``<id>,<lat>,<lon>,.jpg`` -> (id, lat, lon)."""
    parts = Path(name).name.split(",")
    try:
        if len(parts) < 4:
            raise ValueError
        return parts[0], float(parts[1]), float(parts[2])
    except ValueError:
        raise IncompatibleArtifact(f"VIGOR panorama name {name!r} is not '<id>,<lat>,<lon>,.jpg'") from None


def parse_vigor_satellite_name(name: str) -> Tuple[float, float]:
    """``satellite_<lat>_<lon>.png`` -> (lat, lon) of the image centre."""
    parts = Path(name).stem.split("_")
    try:
        if len(parts) != 3 or parts[0] != "satellite":
            raise ValueError
        return float(parts[1]), float(parts[2])
    except ValueError:
        raise IncompatibleArtifact(f"VIGOR satellite name {name!r} is not 'satellite_<lat>_<lon>.png'") from None


@dataclass(frozen=True)
class VigorReference:
    name: str  # satellite file name
    delta_lat_px: float  # reference minus panorama position, pixels of the 640 px image (row = 320 + this)
    delta_lon_px: float  # (column = 320 - this)


@dataclass(frozen=True)
class VigorEntry:
    city: str
    panorama: str
    references: Tuple[VigorReference, ...]  # the positive, then the semi-positives


def read_vigor_split(path: Path, city: str) -> List[VigorEntry]:
    out = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            t = line.split()
            if not t:
                continue
            if len(t) < 4 or (len(t) - 1) % 3:
                raise IncompatibleArtifact(f"{path}:{i}: expected 'panorama sat dlat dlon [sat dlat dlon ...]', "
                                           f"got {len(t)} fields")
            try:
                refs = tuple(VigorReference(t[j], float(t[j + 1]), float(t[j + 2])) for j in range(1, len(t), 3))
            except ValueError:
                raise IncompatibleArtifact(f"{path}:{i}: offsets must be numbers") from None
            out.append(VigorEntry(city, t[0], refs))
    return out


def read_cvusa_split(path: Path) -> List[Tuple[str, str]]:
    """(aerial, panorama) paths relative to the CVUSA root, in file order."""
    out = []
    with open(path, newline="") as f:
        for i, row in enumerate(csv.reader(f), 1):
            row = [c.strip() for c in row]
            if not any(row):
                continue
            if len(row) < 2 or not row[0] or not row[1]:
                raise IncompatibleArtifact(f"{path}:{i}: expected 'bingmap/...,streetview/panos/...[,annotations/...]'")
            out.append((row[0], row[1]))
    return out


def seqgeo_relpath(p: str) -> str:
    """A SeqGeo JSON path (Windows separators) without its first folder, as the authors' loader reads it."""
    parts = [x for x in p.replace("\\", "/").split("/") if x]
    if len(parts) < 2 or any(x in (".", "..") for x in parts):
        raise IncompatibleArtifact(f"SeqGeo image path {p!r} is not '<folder>\\...\\<file>'")
    return "/".join(parts[1:])


def seqgeo_frames(meta: Dict, seq_len: int) -> List[Dict]:
    """The sequence's street views as the authors' loader orders them: extra keys dropped from the end, then sorted."""
    views = meta["street_views"]
    keys = list(views)
    del keys[seq_len:]
    return [views[k] for k in sorted(keys)]


# ---------------------------------------------------------------------------------------------- plan


@dataclass
class _Job:
    """Image work for one sequence (runs in a worker process)."""

    ground: List[Tuple[str, str]]  # (source image, destination relative to OUT)
    aerial_dst: str
    aerial_sources: List[Tuple[str, float, float]]  # (image, d_col, d_row): crop centre from the image centre, ref px
    heading_deg: float = 0.0  # crop heading of a panorama and the heading put up in a rotated tile
    rotate: bool = True  # False: north-up tile (the image centre-cropped to a square)
    aerial_ref_px: float = 0.0  # unit of d_col/d_row (0: the image's own pixels)
    aerial_side: float = 1.0 / math.sqrt(2.0)  # tile side as a fraction of the reference width


@dataclass
class _Sample:
    seq: str
    split: str
    world: str
    drive: str
    frames: List[Dict]  # per frame: image (dst), lat, lon, heading_deg, distance_m
    lat: float
    lon: float
    heading_deg: float
    tile_heading_deg: float
    job: _Job
    extra: List[Dict] = field(default_factory=list)  # sidecar rows (VIGOR references)


@dataclass
class _Plan:
    samples: Dict[str, List[_Sample]]
    geo: bool
    ground: Dict
    aerial: Dict
    seq_len: int
    split_by: Dict
    info: Dict = field(default_factory=dict)
    sidecar: str = ""  # file suffix of the sidecar CSV per split ("" = none)


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise IncompatibleArtifact(f"{what}: {path} is missing")
    return path


def _pick_splits(available: Sequence[str], cfg: ConvertConfig, fmt: str) -> List[str]:
    if cfg.splits is None:
        return [s for s in available if s != "val" or cfg.val_fraction > 0]
    bad = [s for s in cfg.splits if s not in available]
    if bad:
        raise InvalidArgument(f"{fmt} has no split {bad[0]!r}; it has {list(available)}")
    if "val" in cfg.splits and cfg.val_fraction <= 0:
        raise InvalidArgument("split 'val' needs --val-fraction > 0 (val is the tail of train)")
    return list(cfg.splits)


def _carve_val(groups: Dict[str, List], fraction: float) -> Tuple[List, List]:
    """Move the last ``fraction`` of every group (a city, a file) from train to val, order kept."""
    train, val = [], []
    for items in groups.values():
        n_val = int(round(len(items) * fraction)) if fraction > 0 else 0
        if fraction > 0 and n_val == 0 and len(items) >= 2:
            n_val = 1
        train += items[:len(items) - n_val]
        val += items[len(items) - n_val:]
    return train, val


def _random_heading(cfg: ConvertConfig, key: str) -> float:
    if cfg.heading_deg is not None:
        return float(cfg.heading_deg) % 360.0
    rng = np.random.default_rng([cfg.seed, zlib.crc32(key.encode())])
    return float(rng.uniform(0.0, 360.0))


def _panorama_ground(cfg: ConvertConfig) -> Dict:
    cam = cfg.camera
    return {"width": cam.width, "height": cam.height, "hfov_deg": cam.hfov_deg, "mount_height_m": None,
            "format": "jpg", "projection": "pinhole view of a north-aligned equirectangular panorama",
            "heading": "fixed" if cfg.heading_deg is not None else "seeded random per panorama",
            "pano_vfov_deg": cfg.pano_vfov_deg}


def _plan_cvusa(src: Path, cfg: ConvertConfig) -> _Plan:
    files = {"train": "train-19zl.csv", "test": "val-19zl.csv"}
    splits = _pick_splits(("train", "val", "test"), cfg, "cvusa")
    rows: Dict[str, List] = {}
    if {"train", "val"} & set(splits):
        pairs = read_cvusa_split(_require(src / "splits" / files["train"], "not a CVUSA dataset"))
        rows["train"], rows["val"] = _carve_val({"train": pairs}, cfg.val_fraction)
    if "test" in splits:
        rows["test"] = read_cvusa_split(_require(src / "splits" / files["test"], "not a CVUSA dataset"))
    samples: Dict[str, List[_Sample]] = {}
    for split in splits:
        out = []
        for aerial, pano in rows[split][:cfg.limit or None]:
            pid = Path(pano).stem
            seq = f"cvusa_{pid}"
            h = _random_heading(cfg, seq)
            img = f"ground/cvusa/{pid}.jpg"
            job = _Job(ground=[(str(src / pano), img)], aerial_dst=f"aerial/{split}/{seq}.jpg",
                       aerial_sources=[(str(src / aerial), 0.0, 0.0)], heading_deg=h)
            out.append(_Sample(seq, split, "cvusa", seq, [{"image": img, "lat": 0.0, "lon": 0.0, "heading_deg": h,
                                                             "distance_m": 0.0}], 0.0, 0.0, h, h, job))
        samples[split] = out
    return _Plan(samples, geo=False, ground=_panorama_ground(cfg),
                 aerial={"tile_m": None, "tile_px": cfg.tile_px, "heading_bins": None, "jitter_max_deg": 0.0,
                         "heading_up": True, "format": "jpg",
                         "source": "Bing zoom 19, north-up, rotated about its centre (side = width / sqrt 2)"},
                 seq_len=1, split_by={"source": {k: f"splits/{v}" for k, v in files.items()},
                                      "val": {"from": "train", "fraction": cfg.val_fraction, "part": "tail"}},
                 info={"spacing_m_of_running_index": CVUSA_SPACING_M})


def _plan_vigor(src: Path, cfg: ConvertConfig) -> _Plan:
    present = [c for c in VIGOR_CITIES if (src / c / "panorama").is_dir()]
    present += sorted(p.name for p in src.iterdir() if p.is_dir() and (p / "panorama").is_dir()
                      and p.name not in VIGOR_CITIES)
    cities = list(cfg.cities) if cfg.cities else present
    missing = [c for c in cities if c not in present]
    if missing or not cities:
        raise IncompatibleArtifact(f"{src} is not a VIGOR dataset with {missing or 'any city'}: no "
                                   f"<City>/panorama folder (found {present})")
    if cfg.vigor_area == "same":
        splits = _pick_splits(("train", "val", "test"), cfg, "vigor (same-area)")
        files = {"train": "same_area_balanced_train.txt", "test": "same_area_balanced_test.txt"}
        city_split = {c: {"train": files["train"], "test": files["test"]} for c in cities}
    else:
        splits = _pick_splits(("train", "val", "test_world"), cfg, "vigor (cross-area)")
        city_split = {c: {"train" if c in VIGOR_CROSS_TRAIN else "test_world": "pano_label_balanced.txt"}
                      for c in cities}
    entries: Dict[str, Dict[str, List[VigorEntry]]] = {"train": {}, "test": {}, "test_world": {}}
    for c in cities:
        for s, fname in city_split[c].items():
            if s in splits or (s == "train" and "val" in splits):
                entries[s][c] = read_vigor_split(_require(src / "splits" / c / fname, "not a VIGOR split"), c)
    rows: Dict[str, List[VigorEntry]] = {}
    rows["train"], rows["val"] = _carve_val(entries["train"], cfg.val_fraction)
    rows["test"] = [e for c in entries["test"] for e in entries["test"][c]]
    rows["test_world"] = [e for c in entries["test_world"] for e in entries["test_world"][c]]
    samples: Dict[str, List[_Sample]] = {}
    for split in splits:
        out = []
        for e in rows[split][:cfg.limit or None]:
            pid, lat, lon = parse_vigor_panorama_name(e.panorama)
            seq = f"{e.city}_{pid}"
            h = _random_heading(cfg, seq)
            img = f"ground/{e.city}/{pid}.jpg"
            refs, extra = [], []
            for rank, r in enumerate(e.references):
                slat, slon = parse_vigor_satellite_name(r.name)
                gsd = float(web_mercator_gsd(slat, VIGOR_ZOOM))
                refs.append((str(src / e.city / "satellite" / r.name), -r.delta_lon_px, r.delta_lat_px))
                extra.append({"seq": seq, "rank": rank, "kind": "positive" if rank == 0 else "semi-positive",
                              "satellite": f"{e.city}/satellite/{r.name}", "lat": f"{slat:.8f}", "lon": f"{slon:.8f}",
                              "delta_lat_px": r.delta_lat_px, "delta_lon_px": r.delta_lon_px,
                              "pano_east_m": round(-r.delta_lon_px * gsd, 3),
                              "pano_north_m": round(-r.delta_lat_px * gsd, 3)})
            plat = parse_vigor_satellite_name(e.references[0].name)[0]
            side = (1.0 / math.sqrt(2.0) if cfg.tile_m is None
                    else cfg.tile_m / (VIGOR_REF_PX * float(web_mercator_gsd(plat, VIGOR_ZOOM))))
            job = _Job(ground=[(str(src / e.city / "panorama" / e.panorama), img)],
                       aerial_dst=f"aerial/{split}/{seq}.jpg", aerial_sources=refs, heading_deg=h,
                       aerial_ref_px=VIGOR_REF_PX, aerial_side=side)
            out.append(_Sample(seq, split, e.city, seq, [{"image": img, "lat": lat, "lon": lon, "heading_deg": h,
                                                            "distance_m": 0.0}], lat, lon, h, h, job, extra))
        samples[split] = out
    tile_m = {}
    for c in cities:
        lats = [s.lat for ss in samples.values() for s in ss if s.world == c]
        if lats:
            gsd = float(web_mercator_gsd(float(np.mean(lats)), VIGOR_ZOOM))
            tile_m[c] = round(cfg.tile_m or VIGOR_REF_PX / math.sqrt(2.0) * gsd, 2)
    return _Plan(samples, geo=True, ground=_panorama_ground(cfg),
                 aerial={"tile_m": cfg.tile_m or (round(float(np.mean(list(tile_m.values()))), 2) if tile_m else None),
                         "tile_m_by_world": tile_m, "tile_px": cfg.tile_px, "heading_bins": None,
                         "jitter_max_deg": 0.0, "heading_up": True, "format": "jpg",
                         "source": "zoom 20, 640 px, north-up; centred on the panorama (delta), completed from the "
                                   "semi-positives, rotated heading-up"},
                 seq_len=1, split_by={"area": cfg.vigor_area, "cities": cities,
                                      "source": {c: city_split[c] for c in cities},
                                      "val": {"from": "train", "fraction": cfg.val_fraction, "part": "tail per city"}},
                 sidecar="_semipositive")


def _plan_seqgeo(src: Path, cfg: ConvertConfig) -> _Plan:
    jdir = next((d for d in (src / "json" / "2019_JSON", src / "2019_JSON") if d.is_dir()), None)
    if jdir is None:
        raise IncompatibleArtifact(f"not a SeqGeo dataset: {src / 'json' / '2019_JSON'} is missing")
    files = [p for p in jdir.glob("*.json")]
    bad = [p.name for p in files if not p.stem.isdigit()]
    if bad:
        raise IncompatibleArtifact(f"{jdir}: SeqGeo JSON files are named <number>.json, found {bad[0]!r}")
    if not files:
        raise IncompatibleArtifact(f"not a SeqGeo dataset: {jdir} has no <n>.json files")
    if cfg.heading_deg is not None:
        raise InvalidArgument("--heading-deg applies to panorama sources (cvusa, vigor); SeqGeo frames keep "
                              "the camera's own heading")
    files.sort(key=lambda p: int(p.stem))
    n = len(files)
    official = {"train": files[:int(n * 0.8)], "test": files[int(n * 0.8 + 1):]}
    splits = _pick_splits(("train", "val", "test"), cfg, "seqgeo")
    rows: Dict[str, List[Path]] = {}
    rows["train"], rows["val"] = _carve_val({"train": official["train"]}, cfg.val_fraction)
    rows["test"] = official["test"]
    samples: Dict[str, List[_Sample]] = {}
    short = stationary = 0
    tile_lat = []
    for split in splits:
        out = []
        for p in rows[split]:
            if cfg.limit and len(out) >= cfg.limit:
                break
            try:
                meta = json.loads(p.read_text())
                clat, clon = (float(v) for v in meta["center"])
                sat = meta["satellite_views"][str(SEQGEO_ZOOM)]
                views = seqgeo_frames(meta, cfg.seq_len)
                lat = np.array([float(v["lat"]) for v in views])
                lon = np.array([float(v["lon"]) for v in views])
                names = [seqgeo_relpath(v["name"]) for v in views]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise IncompatibleArtifact(f"{p}: not a SeqGeo sequence ({type(exc).__name__}: {exc})") from exc
            if len(views) < cfg.seq_len:
                short += 1
                continue
            seq = f"seqgeo_{p.stem}"
            if haversine_m(lat[0], lon[0], lat[-1], lon[-1]) >= 0.5:
                heading = float(bearing_deg(lat[0], lon[0], lat[-1], lon[-1]))
            else:
                heading, stationary = 0.0, stationary + 1
            step = haversine_m(lat[:-1], lon[:-1], lat[1:], lon[1:]) if len(lat) > 1 else np.zeros(0)
            dist = np.concatenate([[0.0], np.cumsum(step)])
            frames, ground = [], []
            for k, name in enumerate(names):
                a, b = max(k - 1, 0), min(k + 1, len(lat) - 1)
                hk = (float(bearing_deg(lat[a], lon[a], lat[b], lon[b]))
                      if b > a and haversine_m(lat[a], lon[a], lat[b], lon[b]) >= 0.5 else heading)
                dst = "ground/seqgeo/" + str(Path(name).with_suffix(".jpg"))
                frames.append({"image": dst, "lat": float(lat[k]), "lon": float(lon[k]), "heading_deg": hk,
                               "distance_m": float(dist[k])})
                ground.append((str(src / "street" / "2019_street" / name), dst))
            job = _Job(ground=ground, aerial_dst=f"aerial/{split}/{seq}.jpg",
                       aerial_sources=[(str(src / "satellite" / seqgeo_relpath(sat)), 0.0, 0.0)], rotate=False)
            out.append(_Sample(seq, split, "seqgeo", seq, frames, clat, clon, heading, 0.0, job))
            tile_lat.append(clat)
        samples[split] = out
    cam = cfg.camera
    tile_m = round(float(np.mean(SEQGEO_REF_PX * web_mercator_gsd(np.asarray(tile_lat), SEQGEO_ZOOM))), 2) \
        if tile_lat else None
    return _Plan(samples, geo=True,
                 ground={"width": cam.width, "height": cam.height, "hfov_deg": cfg.hfov_deg, "mount_height_m": None,
                         "format": "jpg", "projection": "source frames resized (rows cropped to W:H when taller)",
                         "hfov_note": "as given by --fov-deg; SeqGeo does not publish its cameras' FOV"},
                 aerial={"tile_m": tile_m, "tile_px": cfg.tile_px, "heading_bins": None, "jitter_max_deg": 0.0,
                         "heading_up": False, "north_up": True, "format": "jpg",
                         "source": "zoom 20, 640 px, north-up, centred on the JSON's center; tile_heading_deg = 0"},
                 seq_len=cfg.seq_len,
                 split_by={"source": {"train": "first 80% of json/2019_JSON by number",
                                      "test": "json files [int(0.8 n + 1):] (the authors' validation set)"},
                           "val": {"from": "train", "fraction": cfg.val_fraction, "part": "tail"}},
                 info={"dropped": {"short": short}, "notes": {"stationary_heading_0": stationary}})


CONVERTERS: Dict[str, Callable[[Path, ConvertConfig], _Plan]] = {
    "cvusa": _plan_cvusa,
    "seqgeo": _plan_seqgeo,
    "vigor": _plan_vigor,
}


# ---------------------------------------------------------------------------------------------- image work


@dataclass(frozen=True)
class _Render:
    out: str
    width: int
    height: int
    hfov_deg: float
    pano_vfov_deg: Optional[float]
    tile_px: int
    panorama: bool  # ground sources are panoramas (else limited-FOV frames)


def _save(arr_or_img, path: Path) -> None:
    """Write atomically (a frame shared by several sequences may be written by two workers at once)."""
    from PIL import Image

    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    img.save(tmp, format="JPEG", **JPEG)
    os.replace(tmp, path)


def _open_rgb(path: str, min_size: Optional[Tuple[int, int]] = None):
    """RGB image; a JPEG larger than ``min_size`` is decoded at a reduced DCT scale (never below it).

    Returns (image, original (width, height)).
    """
    from PIL import Image

    with Image.open(path) as im:
        size = im.size
        if min_size is not None:
            im.draft("RGB", min_size)
        return im.convert("RGB"), size


def fit_frame(img, width: int, height: int):
    """A limited-FOV frame at width x height: rows centre-cropped to W:H first if it is taller (FOV kept)."""
    from PIL import Image

    w, h = img.size
    want_h = int(round(w * height / width))
    if h > want_h:
        top = (h - want_h) // 2
        img = img.crop((0, top, w, top + want_h))
    return img.resize((width, height), Image.LANCZOS) if img.size != (width, height) else img


def _panorama_target_width(camera: PinholeCamera) -> int:
    return int(math.ceil(2.0 * math.pi * camera.fx))  # panorama width matching the view's centre resolution


def _panorama_view(img, heading_deg: float, camera: PinholeCamera, pano_vfov_deg: float) -> np.ndarray:
    from PIL import Image

    w, h = img.size
    target = _panorama_target_width(camera)
    if w > 1.25 * target:  # low-pass before bilinear sampling
        img = img.resize((target, max(1, int(round(h * target / w)))), Image.LANCZOS)
    return equirect_to_pinhole(np.asarray(img), heading_deg, camera, pano_vfov_deg)


def _covers(w: float, h: float, cx: float, cy: float, side: float, heading_deg: float) -> bool:
    """Whether a w x h image holds the whole square of ``side`` centred at (cx, cy), rotated by the heading."""
    t = math.radians(heading_deg)
    half = side / 2.0
    ex = half * (abs(math.cos(t)) + abs(math.sin(t)))  # half extents of the rotated square
    return cx - ex >= 0 and cx + ex <= w and cy - ex >= 0 and cy + ex <= h


def _aerial_tile(job: _Job, r: _Render) -> Tuple[np.ndarray, float]:
    from PIL import Image

    first = _open_rgb(job.aerial_sources[0][0])[0]
    if not job.rotate:
        w, h = first.size
        s = min(w, h)
        sq = first.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        return np.asarray(sq.resize((r.tile_px, r.tile_px), Image.LANCZOS)), 1.0
    imgs = [(first,) + tuple(job.aerial_sources[0][1:])]
    w, h = first.size
    k = w / (job.aerial_ref_px or w)
    if not _covers(w, h, w / 2 + imgs[0][1] * k, h / 2 + imgs[0][2] * k, job.aerial_side * w, job.heading_deg):
        for path, dc, dr in job.aerial_sources[1:]:
            if os.path.isfile(path):  # a missing semi-positive only narrows the coverage
                imgs.append((_open_rgb(path)[0], dc, dr))
    W0 = first.size[0]
    ref = job.aerial_ref_px or W0
    side = job.aerial_side * W0  # pixels of the first image
    f = r.tile_px / side
    sources = []
    for im, dc, dr in imgs:
        w, h = im.size
        k = w / ref  # this image's pixels per reference pixel
        cx, cy = w / 2.0 + dc * k, h / 2.0 + dr * k
        if f < 0.75:  # low-pass before bilinear sampling
            nw, nh = max(1, int(round(w * f))), max(1, int(round(h * f)))
            im = im.resize((nw, nh), Image.LANCZOS)
            cx, cy = cx * nw / w, cy * nh / h
        sources.append((np.asarray(im), cx, cy))
    side_now = side * (sources[0][0].shape[1] / W0)
    return heading_up_tile(sources, job.heading_deg, side_now, r.tile_px)


def _run_job(job: _Job, r: _Render) -> Tuple[str, float]:
    """Write one sequence's images; returns ("", tile coverage) or (the missing input, 0)."""
    for path in [p for p, _ in job.ground] + [job.aerial_sources[0][0]]:
        if not os.path.isfile(path):
            return path, 0.0
    out = Path(r.out)
    cam = PinholeCamera(r.width, r.height, r.hfov_deg)
    for src, dst in job.ground:
        if (out / dst).exists():
            continue  # shared with a sequence written before
        if r.panorama:
            t = _panorama_target_width(cam)
            img, (w0, h0) = _open_rgb(src, (t, max(1, t // 4)))
            vfov = 360.0 * h0 / w0 if r.pano_vfov_deg is None else r.pano_vfov_deg
            view = _panorama_view(img, job.heading_deg, cam, vfov)
        else:
            img, _ = _open_rgb(src, (r.width, r.height))
            view = fit_frame(img, r.width, r.height)
        _save(view, out / dst)
    tile, coverage = _aerial_tile(job, r)
    _save(tile, out / job.aerial_dst)
    return "", coverage


# ---------------------------------------------------------------------------------------------- positions


def _local_xy_yaw(lat: np.ndarray, lon: np.ndarray, heading: np.ndarray, frame) -> Tuple[np.ndarray, ...]:
    """UTM-grid local (x, y) and grid yaw (rad CCW from grid east) of true headings."""
    from ..core.geo import heading_deg_to_yaw

    x, y = frame.from_latlon(lat, lon)
    lat2, lon2 = frame.to_latlon(x, np.asarray(y) + 100.0)  # 100 m grid north
    conv = (bearing_deg(lat, lon, lat2, lon2) + 180.0) % 360.0 - 180.0
    return np.asarray(x, float), np.asarray(y, float), heading_deg_to_yaw(np.asarray(heading) - conv)


def _positions(samples: List[_Sample], geo: bool) -> Tuple[Dict, Dict, List[Dict]]:
    """Per sample (x, y, yaw) and per frame image (x, y, yaw); worlds' LocalFrames (geo) for the manifest."""
    from ..core.geo import LocalFrame, heading_deg_to_yaw

    seq_pos, frame_pos, worlds = {}, {}, []
    if not geo:
        for i, s in enumerate(samples):
            yaw = float(heading_deg_to_yaw(s.heading_deg))
            seq_pos[s.seq] = (i * CVUSA_SPACING_M, 0.0, yaw)
            for fr in s.frames:
                fyaw = float(heading_deg_to_yaw(fr["heading_deg"]))
                frame_pos.setdefault(fr["image"], (i * CVUSA_SPACING_M, 0.0, fyaw))
        return seq_pos, frame_pos, [{"name": "cvusa", "geo": False, "frame": None}]
    by_world: Dict[str, List[_Sample]] = {}
    for s in samples:
        by_world.setdefault(s.world, []).append(s)
    for wname, ss in by_world.items():
        frame = LocalFrame.at(ss[0].lat, ss[0].lon)
        worlds.append({"name": wname, "geo": True, "frame": frame.to_dict(), "sequences": len(ss)})
        lat = np.array([s.lat for s in ss])
        lon = np.array([s.lon for s in ss])
        x, y, yaw = _local_xy_yaw(lat, lon, np.array([s.heading_deg for s in ss]), frame)
        for s, a, b, c in zip(ss, x, y, yaw):
            seq_pos[s.seq] = (float(a), float(b), float(c))
        frs = [fr for s in ss for fr in s.frames]
        fx, fy, fyaw = _local_xy_yaw(np.array([f["lat"] for f in frs]), np.array([f["lon"] for f in frs]),
                                     np.array([f["heading_deg"] for f in frs]), frame)
        for fr, a, b, c in zip(frs, fx, fy, fyaw):
            frame_pos.setdefault(fr["image"], (float(a), float(b), float(c)))
    return seq_pos, frame_pos, worlds


# ---------------------------------------------------------------------------------------------- driver


def plan_conversion(fmt: str, src: Path, cfg: ConvertConfig) -> _Plan:
    """Read and check the source layout (no image is opened, nothing is written)."""
    if fmt not in CONVERTERS:
        raise InvalidArgument(f"unknown format {fmt!r}; choose one of {', '.join(sorted(CONVERTERS))}")
    src = Path(src)
    if not src.is_dir():
        raise InvalidArgument(f"--src {src} is not a directory")
    plan = CONVERTERS[fmt](src, cfg)
    for split, ss in plan.samples.items():
        if ss:
            first = ss[0].job
            for p in [g for g, _ in first.ground] + [first.aerial_sources[0][0]]:
                if not os.path.isfile(p):
                    raise IncompatibleArtifact(f"{fmt} split {split}: image {p} is missing "
                                               f"(is --src the dataset root?)")
    if not any(plan.samples.values()):
        raise IncompatibleArtifact(f"{src}: nothing to convert for splits {sorted(plan.samples)}")
    return plan


def convert_dataset(fmt: str, src: Path, out: Path, cfg: ConvertConfig, *, force: bool = False, workers: int = 1,
                    progress: bool = True, extra_manifest: Optional[Dict] = None) -> Dict:
    """Convert ``src`` (a ``fmt`` dataset) into a geoloc dataset at ``out``; returns the manifest.

    The source is read and checked before ``out`` is touched; an existing non-empty ``out`` is
    only replaced with ``force``.
    """
    from tqdm import tqdm

    from ..core.outputs import prepare_output_dir

    plan = plan_conversion(fmt, src, cfg)
    out = Path(out)
    prepare_output_dir(out, force=force)
    cam = cfg.camera
    render = _Render(str(out), cam.width, cam.height, cam.hfov_deg, cfg.pano_vfov_deg, cfg.tile_px,
                     panorama=fmt != "seqgeo")
    if render.panorama and cfg.pano_vfov_deg is not None and cam.vfov_deg > cfg.pano_vfov_deg:
        log.warning("the view's vertical FOV (%.1f deg) exceeds the panoramas' (%.1f deg): edge rows repeat",
                    cam.vfov_deg, cfg.pano_vfov_deg)
    order = [s for split in SPLITS if split in plan.samples for s in plan.samples[split]]
    run = partial(_run_job, r=render)
    results: List[Tuple[str, float]] = []
    with tqdm(total=len(order), desc=f"convert {fmt}", unit="seq", disable=not progress) as bar:
        if workers <= 1:
            for s in order:
                results.append(run(s.job))
                bar.update(1)
        else:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=workers) as pool:
                for res in pool.map(run, [s.job for s in order], chunksize=8):
                    results.append(res)
                    bar.update(1)
    kept, missing, coverage = [], [], []
    for s, (miss, cov) in zip(order, results):
        if miss:
            missing.append(miss)
        else:
            kept.append(s)
            coverage.append(cov)
    if missing:
        log.warning("%d sequence(s) skipped for missing images, e.g. %s", len(missing), missing[0])
    seq_pos, frame_pos, worlds = _positions(kept, plan.geo)
    records: Dict[str, List[SequenceRecord]] = {}
    sidecars: Dict[str, List[Dict]] = {}
    keyframes: List[Dict] = []
    seen = set()
    for s in kept:
        x, y, yaw = seq_pos[s.seq]
        records.setdefault(s.split, []).append(SequenceRecord(
            seq=s.seq, split=s.split, world=s.world, drive=s.drive, frames=";".join(f["image"] for f in s.frames),
            aerial=s.job.aerial_dst, x=round(x, 3), y=round(y, 3), yaw=round(yaw, 6), lat=round(s.lat, 8),
            lon=round(s.lon, 8), heading_deg=round(s.heading_deg, 4), tile_heading_deg=round(s.tile_heading_deg, 4),
            jitter_deg=0.0))
        sidecars.setdefault(s.split, []).extend(s.extra)
        for k, fr in enumerate(s.frames):
            if fr["image"] in seen:
                continue
            seen.add(fr["image"])
            fx, fy, fyaw = frame_pos[fr["image"]]
            keyframes.append({"drive": s.drive, "k": k, "x": round(fx, 3), "y": round(fy, 3), "yaw": round(fyaw, 6),
                              "lat": f"{fr['lat']:.8f}", "lon": f"{fr['lon']:.8f}",
                              "heading_deg": round(fr["heading_deg"], 4), "distance_m": round(fr["distance_m"], 3),
                              "image": fr["image"]})
    for split, ss in plan.samples.items():
        if ss and not records.get(split):
            raise IncompatibleArtifact(f"{fmt} split {split}: every sequence lacks an image, e.g. {missing[0]}")
    counts = {}
    for split in SPLITS:
        if records.get(split):
            counts[split] = write_split(out, split, records[split])
            if plan.sidecar:
                write_rows(out / "splits" / f"{split}{plan.sidecar}.csv", SEMIPOSITIVE_COLUMNS, sidecars[split])
    write_rows(out / "keyframes.csv", KEYFRAME_COLUMNS, keyframes)
    cfg_d = asdict(cfg)
    cfg_d["splits"] = list(cfg.splits) if cfg.splits else None
    cfg_d["cities"] = list(cfg.cities) if cfg.cities else None
    manifest = {
        "format": DATASET_FORMAT, "format_version": DATASET_FORMAT_VERSION, "source": fmt,
        "source_dir": str(Path(src).resolve()), "seq_len": plan.seq_len, "spacing_m": None, "geo": plan.geo,
        "ground": plan.ground, "aerial": {**plan.aerial, "coverage_mean": round(float(np.mean(coverage)), 4)},
        "split_by": plan.split_by, "splits": counts, "keyframes": len(keyframes),
        "skipped": {"missing_image": len(missing), **plan.info.get("dropped", {})},
        "semipositive": {s: f"splits/{s}{plan.sidecar}.csv" for s in counts} if plan.sidecar else None,
        "config": cfg_d, "worlds": worlds,
        **{k: v for k, v in plan.info.items() if k != "dropped"}, **(extra_manifest or {}),
    }
    (out / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
