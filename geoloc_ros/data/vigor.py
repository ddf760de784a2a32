"""VIGOR: ``<City>/panorama/<id>,<lat>,<lon>,.jpg``, ``<City>/satellite/satellite_<lat>_<lon>.png`` and the
same-area or cross-area split files (the positive satellite image, then three semi-positives)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from ..core.errors import IncompatibleArtifact
from .common import (
    ConvertConfig,
    _carve_val,
    _Job,
    _panorama_ground,
    _pick_splits,
    _Plan,
    _random_heading,
    _require,
    _Sample,
    web_mercator_gsd,
)

VIGOR_CITIES = ("NewYork", "Seattle", "SanFrancisco", "Chicago")
VIGOR_CROSS_TRAIN = ("NewYork", "Seattle")
VIGOR_REF_PX = 640.0
VIGOR_ZOOM = 20


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
