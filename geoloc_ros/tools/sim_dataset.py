"""``geoloc sim dataset``: export ground sequences + aerial tiles, split by area and by world."""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import List, Optional

from ..core.outputs import check_output_dir
from .common import add_condition_args, command_line, condition_cycle, parse_with, positive, seed_type

log = logging.getLogger(__name__)


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "dataset", help="export training sequences (ground keyframes + heading-up aerial tiles)",
        description="Drive random routes through synthetic worlds and export sequences of T ground keyframes "
                    "(one every --spacing-m of travel) with the heading-up aerial tile at the newest keyframe. "
                    "Worlds given with --world are split by AREA into train/val/test cells that share no pixel; "
                    "worlds given with --heldout-world (other seeds) become the test_world split. "
                    "Layout: docs/data.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--world", type=Path, action="append", default=[], metavar="DIR",
                   help="a world from `geoloc sim world` to split by area (repeatable)")
    p.add_argument("--heldout-world", type=Path, action="append", default=[], metavar="DIR",
                   help="a world kept entirely for the test_world split (repeatable)")
    p.add_argument("--out", type=Path, required=True, help="output directory (must not exist or be empty)")
    p.add_argument("--drives-per-world", type=positive(int, 0, 10000, "--drives-per-world"), default=8)
    p.add_argument("--drive-length-m", type=positive(float, 0, 1e6, "--drive-length-m"), default=1500.0)
    p.add_argument("--seq-len", type=positive(int, 0, 64, "--seq-len"), default=7, help="keyframes per sequence (T)")
    p.add_argument("--spacing-m", type=positive(float, 0, 100, "--spacing-m"), default=5.0,
                   help="distance travelled between keyframes")
    p.add_argument("--tile-m", type=positive(float, 0, 1000, "--tile-m"), default=96.0, help="aerial tile side (m)")
    p.add_argument("--tile-px", type=positive(int, 0, 2048, "--tile-px"), default=192, help="aerial tile side (px)")
    p.add_argument("--heading-bins", type=positive(int, 0, 360, "--heading-bins"), default=8,
                   help="K heading bins of the tile index; tiles are jittered within +-180/K deg")
    p.add_argument("--cell-m", type=positive(float, 0, 1e5, "--cell-m"), default=500.0,
                   help="side of the square cells assigned to train/val/test")
    p.add_argument("--fractions", type=float, nargs=3, default=[0.7, 0.15, 0.15], metavar=("TRAIN", "VAL", "TEST"),
                   help="fraction of cells per split")
    p.add_argument("--width", type=positive(int, 0, 4096, "--width"), default=256, help="ground image width (px)")
    p.add_argument("--height", type=positive(int, 0, 4096, "--height"), default=128, help="ground image height (px)")
    p.add_argument("--hfov-deg", type=positive(float, 0, 170, "--hfov-deg"), default=90.0,
                   help="horizontal field of view of the ground camera")
    p.add_argument("--seed", type=seed_type, default=0, help="seed of routes, appearance, splits and jitter")
    p.add_argument("--no-camera-effects", action="store_true",
                   help="legacy ground camera noise (no auto exposure, vignetting, shot/read noise); the survey "
                        "gap and terrain come with the worlds (`geoloc sim world --no-survey-gap --no-terrain`)")
    p.add_argument("--force", action="store_true", help="replace an existing, non-empty output directory")
    add_condition_args(p, many=True)
    p.set_defaults(func=run_sim_dataset)
    return p


def run_sim_dataset(args: argparse.Namespace) -> Path:
    from ..core.errors import InvalidArgument
    from ..sim.dataset import DatasetConfig, export_dataset
    from ..sim.world import World

    cfg = DatasetConfig(seq_len=args.seq_len, spacing_m=args.spacing_m, drives_per_world=args.drives_per_world,
                        drive_length_m=args.drive_length_m, tile_m=args.tile_m, tile_px=args.tile_px,
                        heading_bins=args.heading_bins, cell_m=args.cell_m, fractions=tuple(args.fractions),
                        width=args.width, height=args.height, hfov_deg=args.hfov_deg, seed=args.seed,
                        camera_effects=not args.no_camera_effects)
    if not args.world and not args.heldout_world:
        raise InvalidArgument("give at least one --world (or --heldout-world) made by `geoloc sim world`")
    cycle = condition_cycle(args)
    n_drives = (len(args.world) + len(args.heldout_world)) * cfg.drives_per_world
    if cycle and n_drives < len(cycle):
        log.warning("%d drives cannot cover the %d conditions %s; raise --drives-per-world", n_drives, len(cycle),
                    ", ".join(n for n, _ in cycle))
    check_output_dir(args.out, args.force)
    t0 = time.perf_counter()

    def load(dirs):
        return [(f"w{w.meta.seed}", w) for w in (World.load(d) for d in dirs)]

    worlds, heldout = load(args.world), load(args.heldout_world)
    m = export_dataset(args.out, worlds, heldout, cfg, force=args.force,
                       extra_manifest={"command": command_line(),
                                       "world_dirs": [str(d) for d in args.world + args.heldout_world]},
                       conditions=cycle)
    splits = ", ".join(f"{k} {v}" for k, v in m["splits"].items())
    print(f"dataset: {m['keyframes']} keyframes from {len(worlds) + len(heldout)} world(s), sequences of "
          f"{cfg.seq_len}: {splits}; dropped {m['dropped']['border']} at split borders and "
          f"{m['dropped']['outside']} near the world edge"
          + (f"; conditions cycled: {', '.join(n for n, _ in cycle)}" if cycle else "")
          + f"; {args.out} in {time.perf_counter() - t0:.1f} s")
    return Path(args.out)


def main(argv: Optional[List[str]] = None) -> Path:
    return run_sim_dataset(parse_with(register, ["dataset"] + list(argv or [])))
