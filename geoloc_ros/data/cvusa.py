"""CVUSA: ``splits/train-19zl.csv`` / ``val-19zl.csv`` rows of (aerial, panorama) paths, no coordinates
(a running index spaced ``CVUSA_SPACING_M`` apart stands for the position)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Tuple

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
)

CVUSA_SPACING_M = 1000.0


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
