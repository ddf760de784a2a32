"""What the dataset converters share: the options (``ConvertConfig``), the plan of a conversion (jobs,
samples, splits), the train/val carving and the geodesy (Web Mercator resolution, bearings, distances)."""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.camera import PinholeCamera
from ..core.dataset import (
    SPLITS,
)
from ..core.errors import IncompatibleArtifact, InvalidArgument

MERCATOR_M_PER_PX_Z0 = 156543.03392804097  # Web Mercator ground resolution at zoom 0 on the equator (256 px tiles)


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
