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

Modules: ``data.common`` (ConvertConfig, the plan, geodesy), ``data.images`` (the image work in the
workers), one per layout (``data.cvusa``, ``data.vigor``, ``data.seqgeo``: reading the source, planning the
sequences); here the entry points (``CONVERTERS``, ``plan_conversion``, ``convert_dataset``), the positions
and the output files. The layout modules' public names are re-exported here.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ..core.dataset import (
    DATASET_FORMAT,
    DATASET_FORMAT_VERSION,
    KEYFRAME_COLUMNS,
    SPLITS,
    SequenceRecord,
    write_rows,
    write_split,
)
from ..core.errors import IncompatibleArtifact, InvalidArgument
from .common import MERCATOR_M_PER_PX_Z0, ConvertConfig, _Plan, _Sample, bearing_deg, haversine_m, web_mercator_gsd
from .cvusa import CVUSA_SPACING_M, _plan_cvusa, read_cvusa_split
from .images import JPEG, _Render, _run_job, equirect_to_pinhole, fit_frame, heading_up_tile
from .seqgeo import SEQGEO_REF_PX, SEQGEO_ZOOM, _plan_seqgeo, seqgeo_frames, seqgeo_relpath
from .vigor import (
    VIGOR_CITIES,
    VIGOR_CROSS_TRAIN,
    VIGOR_REF_PX,
    VIGOR_ZOOM,
    VigorEntry,
    VigorReference,
    _plan_vigor,
    parse_vigor_panorama_name,
    parse_vigor_satellite_name,
    read_vigor_split,
)

__all__ = [
    # this module
    "CONVERTERS", "SEMIPOSITIVE_COLUMNS", "plan_conversion", "convert_dataset",
    # re-exported: data.common, data.images, data.cvusa, data.vigor, data.seqgeo
    "MERCATOR_M_PER_PX_Z0", "ConvertConfig", "bearing_deg", "haversine_m", "web_mercator_gsd",
    "JPEG", "equirect_to_pinhole", "fit_frame", "heading_up_tile",
    "CVUSA_SPACING_M", "read_cvusa_split",
    "VIGOR_CITIES", "VIGOR_CROSS_TRAIN", "VIGOR_REF_PX", "VIGOR_ZOOM", "VigorEntry", "VigorReference",
    "parse_vigor_panorama_name", "parse_vigor_satellite_name", "read_vigor_split",
    "SEQGEO_REF_PX", "SEQGEO_ZOOM", "seqgeo_frames", "seqgeo_relpath",
]

log = logging.getLogger(__name__)

SEMIPOSITIVE_COLUMNS = ["seq", "rank", "kind", "satellite", "lat", "lon", "delta_lat_px", "delta_lon_px",
                        "pano_east_m", "pano_north_m"]


CONVERTERS: Dict[str, Callable[[Path, ConvertConfig], _Plan]] = {
    "cvusa": _plan_cvusa,
    "seqgeo": _plan_seqgeo,
    "vigor": _plan_vigor,
}


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
