"""``geoloc sim drive``: drive a simulated car through a world and record a rosbag2."""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import List, Optional

from ..core.outputs import check_output_dir
from .common import add_condition_args, command_line, conditions_from_args, parse_with, seed_type

log = logging.getLogger(__name__)


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "drive", help="simulate a drive (camera, GNSS, odometry) and write a rosbag2",
        description="Drive a car along the roads of a world made by `geoloc sim world`: a random route in the "
                    "right-hand lane, 5-15 m/s, slowing for turns. Renders the forward camera and simulates a "
                    "GNSS receiver (bias, noise, multipath jumps, outages; honest covariance) and wheel "
                    "odometry (scale error, gyro drift). Writes OUT/bag (rosbag2: /camera/image_raw, "
                    "/camera/camera_info, /gnss/fix, /gnss/fix_truth, /odom, /imu/data, /tf, /tf_static), OUT/truth.csv "
                    "and OUT/drive.json. The same arguments give the same messages. The drive-time conditions "
                    "(traffic, light, weather, changed roads, a miscalibrated camera, worse sensors) are off "
                    "unless asked for.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--world", type=Path, required=True, help="world directory (from `geoloc sim world`)")
    p.add_argument("--out", type=Path, required=True, help="output directory (must not exist or be empty)")
    p.add_argument("--seed", type=seed_type, default=0, help="random seed of the drive (route, noise, appearance)")
    p.add_argument("--gnss-seed", type=seed_type, default=None,
                   help="random seed of the GNSS receiver's errors alone (default: --seed): the same route and "
                        "camera with another receiver's noise")
    p.add_argument("--duration-s", type=float, default=120.0, help="length of the drive in seconds (0..3600]")
    p.add_argument("--hfov-deg", type=float, default=90.0, help="camera horizontal field of view (10..170 deg)")
    p.add_argument("--width", type=int, default=512, help="image width in pixels (default: 16:9, 0.4 x 720p)")
    p.add_argument("--height", type=int, default=288, help="image height in pixels")
    p.add_argument("--distortion", type=float, nargs=5, default=None, metavar=("K1", "K2", "P1", "P2", "K3"),
                   help="plumb_bob lens distortion rendered into the images and published in camera_info D "
                        "(default: none, a rectified pinhole), e.g. -0.28 0.07 0 0 0 for a typical wide lens")
    p.add_argument("--no-camera-effects", action="store_true",
                   help="legacy sensor: fixed exposure and grey Gaussian noise (no auto exposure, vignetting, "
                        "shot/read noise)")
    p.add_argument("--no-suspension", action="store_true",
                   help="the body follows the ground only (on a flat world: level, as in earlier versions)")
    p.add_argument("--camera-hz", type=float, default=10.0, help="camera frame rate (0..60]")
    p.add_argument("--gnss-hz", type=float, default=5.0, help="GNSS fix rate (0..20]")
    p.add_argument("--odom-hz", type=float, default=50.0, help="odometry rate (0..500]")
    p.add_argument("--compressed", action="store_true",
                   help="also write /camera/image_raw/compressed (JPEG)")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage plugin")
    p.add_argument("--force", action="store_true", help="replace an existing, non-empty output directory")
    add_condition_args(p)
    p.set_defaults(func=run_sim_drive)
    return p


def run_sim_drive(args: argparse.Namespace) -> Path:
    from ..core.camera import PinholeCamera
    from ..core.errors import InvalidArgument
    from ..sim.bag import TOPIC_IMAGE, write_drive
    from ..sim.drive import AttitudeModel, DriveConfig, simulate_drive, stream_rng
    from ..sim.world import World

    cfg = DriveConfig(duration_s=args.duration_s, camera_hz=args.camera_hz, gnss_hz=args.gnss_hz,
                      odom_hz=args.odom_hz, seed=args.seed, gnss_seed=args.gnss_seed, compressed=args.compressed,
                      storage=args.storage,
                      attitude=AttitudeModel(suspension=not args.no_suspension))
    camera = PinholeCamera(width=args.width, height=args.height, hfov_deg=args.hfov_deg,
                           distortion=tuple(args.distortion) if args.distortion else (0.0,) * 5)
    world_dir = Path(args.world)
    if not world_dir.is_dir():
        raise InvalidArgument(f"--world {world_dir} does not exist; create a world with "
                              f"`geoloc sim world --out {world_dir}`")
    cond = conditions_from_args(args)
    check_output_dir(args.out, args.force)

    from ..sim.render import Appearance, GroundRenderer, SensorModel

    t0 = time.perf_counter()
    world = World.load(world_dir)
    sim = simulate_drive(world, cfg, cond)
    appearance = Appearance.sample(stream_rng(cfg.seed, "appearance"))
    sensor = None if args.no_camera_effects else SensorModel()
    if cond.is_default:
        renderer = GroundRenderer(world, camera, appearance, sensor=sensor)
        realisation = None
    else:
        renderer = GroundRenderer(world, camera, appearance, sensor=sensor, conditions=cond, ego=sim.truth)
        realisation = renderer.realisation
    res = write_drive(args.out, world, sim, camera, renderer.render, appearance=appearance.to_dict(),
                      world_dir=world_dir, force=args.force, progress=True, command=command_line(),
                      sensor=sensor.to_dict() if sensor else None, render_realisation=realisation)
    dt = time.perf_counter() - t0
    g = res.stats["gnss"]
    n = res.bag.counts[TOPIC_IMAGE]
    print(f"drive seed={cfg.seed}: {n} frames ({camera.width}x{camera.height}) over {cfg.duration_s:g} s, "
          f"{res.stats['distance_m']:.0f} m at {res.stats['mean_speed_mps']:.1f} m/s mean; "
          f"GNSS RMS {g['rms_m']:.1f} m (p95 {g['p95_m']:.1f} m, {g['multipath_events']} multipath, "
          f"{g['outage_events']} outages); odometry drift {res.stats['odom_final_drift_pct']:.1f}%; "
          f"bag {res.bag.size_bytes / 1e6:.1f} MB ({cfg.storage}) written to {res.bag_dir} in {dt:.1f} s "
          f"({n / max(res.bag.seconds, 1e-9):.0f} frames/s)"
          + ("" if cond.is_default else f"; conditions {_describe(cond, getattr(args, 'conditions', None))}"))
    return Path(args.out)


def _describe(cond, name) -> str:
    from ..sim.conditions import Conditions

    diff = [k for k, v in cond.to_dict().items() if v != Conditions().to_dict()[k]]
    return f"{name or 'custom'} ({', '.join(diff)})"


def main(argv: Optional[List[str]] = None) -> Path:
    return run_sim_drive(parse_with(register, ["drive"] + list(argv or [])))
