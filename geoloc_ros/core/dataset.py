"""On-disk layout of cross-view training data, shared by every source (sim today; SeqGeo-style
sequences and CVUSA / CVACT / VIGOR pairs can be converted into it: a pair is a sequence of 1).

::

    DATASET/
      dataset.json               manifest (format, version, seq_len, ground camera, aerial tiles, splits)
      ground/<drive>/<k>.png     ground keyframes, one folder per drive (or per real sequence)
      aerial/<split>/<seq>.jpg   heading-up aerial tile of each sequence's newest keyframe
      keyframes.csv              every ground keyframe: drive, k, x, y, yaw, lat, lon, heading, distance
      splits/<split>.csv         one row per sequence, columns ``SEQUENCE_COLUMNS``

Conventions: paths in CSVs are relative to DATASET; ``frames`` lists the sequence's ground images
oldest first, separated by ``;``; ``x, y`` are metres in the source world's local UTM-aligned frame
(``world`` names it); ``yaw`` is rad CCW from grid east; ``heading_deg`` is the true compass heading
(clockwise from true north, UTM grid convergence applied); ``tile_heading_deg`` is the heading the
aerial tile was rotated to (``heading_deg`` + ``jitter_deg``: the index stores K heading bins, so
training sees headings anywhere within +-180/K deg of the truth).

Only stdlib: the model's data loader and the evaluation read this without numpy/torch imports here.
"""
from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Dict, Iterable, List

from .errors import IncompatibleArtifact
from .manifest import read_manifest as read_json_manifest

DATASET_FORMAT = "geoloc-dataset"
DATASET_FORMAT_VERSION = 1
SPLITS = ("train", "val", "test", "test_world")

KEYFRAME_COLUMNS = ["drive", "k", "x", "y", "yaw", "lat", "lon", "heading_deg", "distance_m", "image"]


@dataclass(frozen=True)
class SequenceRecord:
    """One training/evaluation sample: T ground keyframes + the aerial tile at the newest one."""

    seq: str
    split: str
    world: str
    drive: str
    frames: str  # ';'-joined relative paths, oldest first
    aerial: str  # relative path
    x: float
    y: float
    yaw: float
    lat: float
    lon: float
    heading_deg: float
    tile_heading_deg: float
    jitter_deg: float

    @property
    def frame_paths(self) -> List[str]:
        return self.frames.split(";")


SEQUENCE_COLUMNS = [f.name for f in fields(SequenceRecord)]
_FLOATS = {f.name for f in fields(SequenceRecord) if f.type in ("float", float)}


def write_rows(path: Path, columns: List[str], rows: Iterable[Dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="raise")
        w.writeheader()
        for row in rows:
            w.writerow(row)
            n += 1
    return n


def write_split(root: Path, split: str, records: Iterable[SequenceRecord]) -> int:
    return write_rows(Path(root) / "splits" / f"{split}.csv", SEQUENCE_COLUMNS, (asdict(r) for r in records))


def read_manifest(root: Path) -> Dict:
    """The dataset manifest, checked for format and version."""
    path = Path(root) / "dataset.json"
    if not path.is_file():
        raise IncompatibleArtifact(f"{root} is not a geoloc dataset: {path.name} is missing "
                                   f"(make one with `geoloc sim dataset`)")
    return read_json_manifest(path, DATASET_FORMAT, DATASET_FORMAT_VERSION, what="geoloc dataset",
                              rebuild="re-export it (`geoloc sim dataset` or `geoloc data convert`, --force)")


def read_split(root: Path, split: str) -> List[SequenceRecord]:
    """All sequences of ``split`` (after checking the manifest)."""
    m = read_manifest(root)
    if split not in m.get("splits", {}):
        raise IncompatibleArtifact(f"{root} has no split {split!r}; it has {sorted(m.get('splits', {}))}")
    out = []
    with open(Path(root) / "splits" / f"{split}.csv", newline="") as f:
        for row in csv.DictReader(f):
            out.append(SequenceRecord(**{k: float(v) if k in _FLOATS else v for k, v in row.items()}))
    return out
