"""``geoloc data convert``: turn SeqGeo, CVUSA or VIGOR into the geoloc dataset layout."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import List, Optional

from ..core.outputs import check_output_dir
from .common import command_line, parse_with, positive, seed_type

FORMATS = ("seqgeo", "cvusa", "vigor")


def _heading(text: str):
    if text.lower() == "random":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--heading-deg must be a number of degrees or 'random', got {text!r}")


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "convert", help="convert SeqGeo, CVUSA or VIGOR into the geoloc dataset layout",
        description="Read a real cross-view dataset in its authors' layout and write it in the layout of "
                    "`geoloc sim dataset`, so `geoloc train` and `geoloc eval retrieval` use it. SeqGeo: sequences "
                    "of limited-FOV frames (resized) with the north-up satellite image. CVUSA and VIGOR: each "
                    "north-aligned panorama becomes a sequence of one pinhole view at a heading (--heading-deg), "
                    "with its satellite image rotated so that heading points up (VIGOR: centred on the panorama). "
                    "Official train/test splits are kept; val is the tail of train (--val-fraction). "
                    "Conventions: docs/data.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--format", required=True, metavar="{" + ",".join(FORMATS) + "}", help="source dataset layout")
    p.add_argument("--src", type=Path, required=True, help="root of the source dataset")
    p.add_argument("--out", type=Path, required=True, help="output directory (must not exist or be empty)")
    p.add_argument("--split", nargs="+", default=None, metavar="SPLIT",
                   help="splits to write (train, val, test; VIGOR cross-area: train, val, test_world); default all")
    p.add_argument("--fov-deg", type=positive(float, 0, 170, "--fov-deg"), default=None,
                   help="horizontal FOV of the views cut from panoramas (default 90); for SeqGeo only recorded")
    p.add_argument("--width", type=positive(int, 0, 4096, "--width"), default=256, help="ground image width (px)")
    p.add_argument("--height", type=positive(int, 0, 4096, "--height"), default=128, help="ground image height (px)")
    p.add_argument("--heading-deg", type=_heading, default=None, metavar="DEG|random",
                   help="compass heading of the views cut from panoramas; default: seeded random per panorama")
    p.add_argument("--tile-px", type=positive(int, 0, 2048, "--tile-px"), default=256, help="aerial tile side (px)")
    p.add_argument("--tile-m", type=positive(float, 0, 1000, "--tile-m"), default=None,
                   help="VIGOR: aerial tile side in metres (default: the largest square the satellite images "
                        "cover at any heading, 640 px / sqrt 2, about 46-54 m)")
    p.add_argument("--pano-vfov-deg", type=positive(float, 0, 180, "--pano-vfov-deg"), default=None,
                   help="vertical extent of the panoramas, centred on the horizon (default 360 x height / width)")
    p.add_argument("--seq-len", type=positive(int, 0, 64, "--seq-len"), default=7, help="SeqGeo frames per sequence")
    p.add_argument("--val-fraction", type=float, default=0.05,
                   help="fraction at the end of train (per VIGOR city) that becomes the val split; 0 = no val")
    p.add_argument("--vigor-area", choices=["same", "cross"], default="same",
                   help="VIGOR same-area splits (train/test) or cross-area (NewYork+Seattle train, "
                        "SanFrancisco+Chicago test_world)")
    p.add_argument("--cities", nargs="+", default=None, help="VIGOR cities to convert (default: all present)")
    p.add_argument("--limit", type=int, default=0, help="at most N sequences per split (0 = all)")
    p.add_argument("--seed", type=seed_type, default=0, help="seed of the random headings")
    p.add_argument("--workers", type=positive(int, 0, 256, "--workers"), default=min(8, os.cpu_count() or 1),
                   help="image worker processes")
    p.add_argument("--force", action="store_true", help="replace an existing, non-empty output directory")
    p.set_defaults(func=run_data_convert)
    return p


def run_data_convert(args: argparse.Namespace) -> Path:
    from ..core.errors import InvalidArgument
    from ..data.convert import CONVERTERS, ConvertConfig, convert_dataset

    if args.format not in CONVERTERS:
        raise InvalidArgument(f"unknown --format {args.format!r}; choose one of {', '.join(FORMATS)}")
    if args.limit < 0:
        raise InvalidArgument(f"--limit must be >= 0, got {args.limit}")
    cfg = ConvertConfig(width=args.width, height=args.height, hfov_deg=args.fov_deg, heading_deg=args.heading_deg,
                        tile_px=args.tile_px, tile_m=args.tile_m, pano_vfov_deg=args.pano_vfov_deg,
                        seq_len=args.seq_len, splits=tuple(args.split) if args.split else None,
                        val_fraction=args.val_fraction, limit=args.limit, vigor_area=args.vigor_area,
                        cities=tuple(args.cities) if args.cities else None, seed=args.seed)
    check_output_dir(args.out, args.force)
    t0 = time.perf_counter()
    m = convert_dataset(args.format, args.src, args.out, cfg, force=args.force, workers=args.workers,
                        extra_manifest={"command": command_line()})
    splits = ", ".join(f"{k} {v}" for k, v in m["splits"].items())
    skipped = sum(v for v in m["skipped"].values())
    print(f"convert: {args.format} {args.src} -> {args.out}: sequences of {m['seq_len']}: {splits}; "
          f"{m['keyframes']} ground images; {skipped} skipped; {time.perf_counter() - t0:.1f} s")
    return Path(args.out)


def main(argv: Optional[List[str]] = None) -> Path:
    return run_data_convert(parse_with(register, ["convert"] + list(argv or [])))
