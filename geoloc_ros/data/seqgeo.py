"""SeqGeo: ``json/2019_JSON/<n>.json`` sequences of limited-FOV street frames with a north-up satellite
image each; frame order and the train/test cut as in the authors' loader."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import numpy as np

from ..core.errors import IncompatibleArtifact, InvalidArgument
from .common import (
    ConvertConfig,
    _carve_val,
    _Job,
    _pick_splits,
    _Plan,
    _Sample,
    bearing_deg,
    haversine_m,
    web_mercator_gsd,
)

SEQGEO_REF_PX = 640.0
SEQGEO_ZOOM = 20


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
