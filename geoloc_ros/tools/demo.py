"""``geoloc demo``: the main job on the embedded defaults, cached under ``data/demo``.

Today: synthesize the default town, record a 2-minute drive as a rosbag2 and draw what the car
saw next to the orthophoto. Outputs are named after their configuration, so a rerun reuses what
is already there and never overwrites anything else.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import List, Optional

from .common import parse_with, positive, seed_type


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo", help="run the main job end to end on the embedded defaults",
        description="Generate the default synthetic town, drive a car through it (rosbag2 with camera, GNSS, "
                    "odometry) and draw a preview of the drive. Results are cached under --data in folders named "
                    "after their settings; rerunning reuses them.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("data/demo"), help="cache and output folder")
    p.add_argument("--world-seed", type=seed_type, default=7, help="seed of the town")
    p.add_argument("--size-m", type=positive(float, 0, 20000, "--size-m"), default=2000.0, help="side of the town (m)")
    p.add_argument("--drive-seed", type=seed_type, default=1, help="seed of the drive")
    p.add_argument("--duration-s", type=positive(float, 0, 3600, "--duration-s"), default=120.0,
                   help="length of the drive (s)")
    p.add_argument("--docs-images", type=Path, default=None, metavar="DIR",
                   help="also write the pictures used by docs/ into DIR (replacing them)")
    p.set_defaults(func=run_demo)
    return p


def _is_complete(directory: Path, manifest: str) -> bool:
    return (directory / manifest).is_file()


def run_demo(args: argparse.Namespace) -> Path:
    from . import sim_drive, sim_preview, sim_world

    t0 = time.perf_counter()
    data = Path(args.data)
    world_dir = data / f"world_s{args.world_seed}_{args.size_m:g}m"
    drive_dir = data / f"drive_s{args.drive_seed}_{args.duration_s:g}s_{world_dir.name}"
    steps = []
    if _is_complete(world_dir, "world.json"):
        steps.append(f"world {world_dir} (cached)")
    else:
        # a folder without a manifest is an interrupted run of ours: replace it
        sim_world.main(["--out", str(world_dir), "--seed", str(args.world_seed), "--size-m", str(args.size_m),
                        "--force"])
        steps.append(f"world {world_dir}")
    if _is_complete(drive_dir, "drive.json"):
        steps.append(f"drive {drive_dir} (cached)")
    else:
        sim_drive.main(["--world", str(world_dir), "--out", str(drive_dir), "--seed", str(args.drive_seed),
                        "--duration-s", str(args.duration_s), "--compressed", "--force"])
        steps.append(f"drive {drive_dir}")
    preview = sim_preview.main(["--drive", str(drive_dir), "--out", str(data / f"preview_{drive_dir.name}.png"),
                                "--force"])
    if args.docs_images is not None:
        docs = Path(args.docs_images)
        docs.mkdir(parents=True, exist_ok=True)
        sim_preview.main(["--drive", str(drive_dir), "--out", str(docs / "drive_preview.png"), "--force"])
        sim_preview.main(["--drive", str(drive_dir), "--out", str(docs / "drive_preview_straight.png"),
                          "--start-m", "150", "--span-m", "60", "--frames", "3", "--force"])
        _overview(world_dir, drive_dir, docs / "world_overview.png")
    stats = json.loads((drive_dir / "drive.json").read_text())["stats"]
    print(f"demo: {'; '.join(steps)}; GNSS RMS error {stats['gnss']['rms_m']:.1f} m over "
          f"{stats['distance_m']:.0f} m; preview {preview}; {time.perf_counter() - t0:.0f} s. "
          f"(Localization with the sequence model is not part of this release yet.)")
    return data


def _overview(world_dir: Path, drive_dir: Path, out: Path) -> None:
    """Whole orthophoto, downsampled, with the drive's path."""
    import numpy as np
    from PIL import Image, ImageDraw

    from ..sim.bag import read_truth_csv
    from ..sim.world import World

    world = World.load(world_dir, layers=("ortho",))
    size = 512
    img = Image.fromarray(world.ortho).resize((size, size), Image.BOX)
    truth = read_truth_csv(drive_dir / "truth.csv")
    rr, cc = world.xy_to_rc(truth["x"], truth["y"])
    s = size / world.ortho.shape[0]
    d = ImageDraw.Draw(img)
    d.line(list(zip((cc * s).tolist(), (rr * s).tolist())), fill=(255, 40, 40), width=3)
    d.ellipse([cc[0] * s - 5, rr[0] * s - 5, cc[0] * s + 5, rr[0] * s + 5], fill=(255, 255, 255))
    bar = 200.0 / world.meta.gsd_m * s
    d.line([(12, size - 14), (12 + bar, size - 14)], fill=(255, 255, 255), width=4)
    d.text((14, size - 30), "200 m", fill=(255, 255, 255))
    img.save(out, optimize=True)


def main(argv: Optional[List[str]] = None) -> Path:
    return run_demo(parse_with(register, ["demo"] + list(argv or [])))
