"""``geoloc sim preview``: a PNG of an orthophoto crop with a drive's path and its camera frames."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional

from .common import parse_with, positive


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "preview", help="picture of a drive: orthophoto crop, path and the camera frames along it",
        description="Draw the orthophoto around a stretch of a recorded drive (from `geoloc sim drive`) with the "
                    "true path in white and numbered camera poses with their field of view, next to the camera "
                    "frames read back from the drive's rosbag2 at those poses. Use it to check that the ground "
                    "view and the aerial view show the same street.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--drive", type=Path, required=True, help="drive directory (from `geoloc sim drive`)")
    p.add_argument("--out", type=Path, required=True, help="output PNG file")
    p.add_argument("--world", type=Path, default=None,
                   help="world directory (default: the one recorded in drive.json)")
    p.add_argument("--frames", type=positive(int, 0, 8, "--frames"), default=4, help="camera frames to show")
    p.add_argument("--span-m", type=positive(float, 0, 2000, "--span-m"), default=90.0,
                   help="distance travelled between the first and last frame shown")
    p.add_argument("--start-m", type=float, default=None,
                   help="distance travelled at the first frame (default: the stretch with the most turning)")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run_sim_preview)
    return p


def run_sim_preview(args: argparse.Namespace) -> Path:
    import numpy as np

    from ..bag import read_bag
    from ..core.camera import PinholeCamera
    from ..core.errors import IncompatibleArtifact, InvalidArgument
    from ..core.images import msg_to_rgb
    from ..core.outputs import check_output_file
    from ..sim.bag import TOPIC_IMAGE, read_drive_manifest, read_truth_csv
    from ..sim.preview import compose_preview, pick_preview_indices
    from ..sim.world import World

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise InvalidArgument(f"--out {out} must be a .png file")
    check_output_file(out, args.force)
    m = read_drive_manifest(args.drive)
    world_dir = args.world or Path(m["world"].get("path", ""))
    world = World.load(world_dir, layers=("ortho",))
    if world.meta.seed != m["world"]["seed"] or world.meta.size_m != m["world"]["size_m"]:
        raise IncompatibleArtifact(f"{world_dir} (seed {world.meta.seed}) is not the world of this drive "
                                   f"(seed {m['world']['seed']})")
    cam = m["camera"]
    camera = PinholeCamera(width=cam["width"], height=cam["height"], hfov_deg=cam["hfov_deg"],
                           mount_height_m=cam["mount_height_m"])
    truth = read_truth_csv(Path(args.drive) / "truth.csv")
    xy = np.stack([truth["x"], truth["y"]], axis=1)
    dist = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy, axis=0).T))])
    span = min(args.span_m, float(dist[-1]))
    if args.start_m is None:
        # the stretch of `span` metres with the largest heading change: turns make the best pictures
        yaw = np.unwrap(truth["yaw"])
        ends = np.searchsorted(dist, dist + span).clip(0, len(dist) - 1)
        turn = np.abs(yaw[ends] - yaw)
        start = float(dist[int(np.argmax(np.where(dist + span <= dist[-1], turn, -1)))])
    else:
        start = min(max(float(args.start_m), 0.0), float(dist[-1]) - span)
    idx = pick_preview_indices(dist, args.frames, span, start)
    want = {int(truth["stamp_ns"][i]): [] for i in idx}
    for n, i in enumerate(idx):
        want[int(truth["stamp_ns"][i])].append(n)
    frames: List = [None] * len(idx)
    for _, t_ns, msg in read_bag(Path(args.drive) / "bag", [TOPIC_IMAGE]):
        stamp = msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec
        for n in want.get(stamp, ()):
            frames[n] = msg_to_rgb(msg)
    if any(f is None for f in frames):
        raise IncompatibleArtifact(f"{args.drive}/bag lacks camera frames at the truth.csv stamps")
    poses = [(truth["x"][i], truth["y"][i], truth["yaw"][i]) for i in idx]
    title = (f"world seed {world.meta.seed}, drive seed {m['config']['seed']}: {dist[idx[0]]:.0f}-{dist[idx[-1]]:.0f} m "
             f"of {dist[-1]:.0f} m; {m['appearance']['season']}, sun az {m['appearance']['sun_azimuth_deg']:.0f} "
             f"el {m['appearance']['sun_elevation_deg']:.0f}")
    img = compose_preview(world, xy, poses, frames, camera, title=title)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, optimize=True)
    print(f"preview: {len(frames)} frames over {span:.0f} m of {args.drive} -> {out} ({img.size[0]}x{img.size[1]})")
    return out


def main(argv: Optional[List[str]] = None) -> Path:
    return run_sim_preview(parse_with(register, ["preview"] + list(argv or [])))
