"""``geoloc eval replay``: replay a rosbag2 through the Localizer; metrics, pictures and a report."""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import List, Optional

from ..core.bagpath import BAG_HELP, resolve_bag
from ..metric.config import DEFAULT_FEATURES, FEATURES
from .common import command_line, parse_with, positive

log = logging.getLogger(__name__)


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "replay", help="replay a rosbag2 through the localizer: errors vs ground truth, report with pictures",
        description="Read a rosbag2 (MCAP or sqlite3), feed every camera, GNSS and odometry message in stamp order "
                    "through the same Localizer the ROS node runs, as fast as possible, and evaluate three methods "
                    "on the same bag: the raw GNSS, the same filter with GNSS + odometry but no camera (what a "
                    "robot_localization EKF would give) and the full localizer. Ground truth: a NavSatFix topic "
                    "or an Odometry in the map frame. Writes OUT/<bag>__<model>__<config>/ with metrics.json, "
                    "estimates.csv, estimates/ (MCAP of the published topics), trajectory/error PNGs and "
                    "report.md. A bag without the ground-truth topic still runs and says what it cannot compute.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("bag", type=Path, help=BAG_HELP)
    p.add_argument("--ortho", type=Path, default=None,
                   help="orthophoto (GeoTIFF or XYZ folder) for metric matching (default: the synthetic drive's "
                        "world orthophoto, if any)")
    p.add_argument("--features", default=DEFAULT_FEATURES, choices=FEATURES,
                   help="metric matching feature extractor")
    p.add_argument("--camera-mount", default=None, metavar="X,Y,Z,ROLL,PITCH,YAW",
                   help="camera_link pose in base_link (m, deg; pitch > 0 looks down) when the bag has no "
                        "/tf_static chain base_link -> camera_info frame")
    p.add_argument("--index", type=Path, default=None,
                   help="tile index folder (geoloc index build): retrieval (global relocalisation; the camera "
                        "measurement with localizer.camera_measurement: retrieval)")
    p.add_argument("--model", default=None,
                   help="model of the index: preset name (seqgeo_lite), checkpoint .pt, or export/engine folder")
    p.add_argument("--backend", default="auto", choices=("auto", "tensorrt", "onnxruntime", "torch"),
                   help="inference backend")
    p.add_argument("--gt-topic", default="/gnss/fix_truth",
                   help="ground truth: a sensor_msgs/NavSatFix topic, or a nav_msgs/Odometry whose pose is in the "
                        "map frame (see --gt-frame); '' for none")
    p.add_argument("--gt-frame", default=None, metavar="EPSG:CODE,E0,N0",
                   help="frame of an Odometry ground truth: UTM EPSG code and the origin easting,northing of its "
                        "x/y (default: the map frame = the index datum)")
    p.add_argument("--config", type=Path, default=None,
                   help="YAML of LocalizerConfig overrides (field: value; `localizer:` as the only key also works)")
    p.add_argument("--image-topic", default=None, help="camera topic (default: /camera/image_raw or the only one)")
    p.add_argument("--fix-topic", default=None, help="GNSS topic (default: /gnss/fix or the only NavSatFix)")
    p.add_argument("--odom-topic", default=None, help="odometry topic (default: /odom if present; '' for none)")
    p.add_argument("--world", type=Path, default=None,
                   help="folder with orthophoto.tif for the trajectory picture (default: the drive's world, or the "
                        "index imagery)")
    p.add_argument("--map-offset", type=Path, default=None, metavar="FILE",
                   help="the orthophoto's learned offset (sidecar JSON of `geoloc map calibrate`): the estimator "
                        "on, starting from it; the file is read, not written")
    p.add_argument("--no-publish-on-fix", action="store_true",
                   help="record estimates at keyframes only (the node's publish_on_fix: false)")
    p.add_argument("--reorder-window", type=positive(float, 0, 60, "--reorder-window"), default=0.5,
                   help="seconds of messages re-ordered by header stamp")
    p.add_argument("--max-age", type=positive(float, 0, 3600, "--max-age"), default=2.0,
                   help="an estimate older than this (s) does not count as available")
    p.add_argument("--out", type=Path, default=Path("runs/eval"), help="parent folder of the run directory")
    p.add_argument("--force", action="store_true", help="replace an existing run directory")
    p.set_defaults(func=run_eval_replay)
    return p


def _parse_frame(text: Optional[str]):
    from ..core.errors import InvalidArgument
    from ..core.geo import LocalFrame

    if not text:
        return None
    try:
        code, e0, n0 = text.split(",")
        return LocalFrame(epsg=int(code.upper().replace("EPSG:", "")), origin_e=float(e0), origin_n=float(n0))
    except ValueError:
        raise InvalidArgument(f"--gt-frame must be EPSG:CODE,EASTING,NORTHING (e.g. EPSG:32618,642000,4925000), "
                              f"got {text!r}")


def _parse_mount(text: Optional[str]):
    """"x,y,z,roll,pitch,yaw" (m, deg) -> (R, t) of the optical frame in base_link, or None (the node's
    ``camera_mount``, through the same ``runtime.mount_from_param``)."""
    from ..core.errors import InvalidArgument
    from ..runtime import mount_from_param

    if not text:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise InvalidArgument(f"--camera-mount must be X,Y,Z,ROLL,PITCH,YAW (m, deg), got {text!r}") from None
    if len(values) != 6:
        raise InvalidArgument(f"--camera-mount must be X,Y,Z,ROLL,PITCH,YAW (m, deg), got {text!r}")
    return mount_from_param(values)


def run_eval_replay(args: argparse.Namespace) -> Path:
    from ..evaluation.replay import evaluate_bag, summary_line
    from ..evaluation.report import accuracy_rows, text_table

    t0 = time.perf_counter()
    bag = resolve_bag(args.bag)  # a bag folder, a drive folder holding one, or one .mcap/.db3 file
    out, res = evaluate_bag(bag, args.index, args.model, backend=args.backend, config_path=args.config,
                            ortho=args.ortho, features=args.features, camera_mount=_parse_mount(args.camera_mount),
                            out=args.out, force=args.force, command=command_line(), progress=True,
                            gt_topic=args.gt_topic or None, gt_frame=_parse_frame(args.gt_frame),
                            image_topic=args.image_topic, fix_topic=args.fix_topic, odom_topic=args.odom_topic,
                            publish_on_fix=not args.no_publish_on_fix, reorder_window_s=args.reorder_window,
                            world_dir=args.world, max_age_s=args.max_age, map_offset=args.map_offset)
    print(text_table(["", "raw GNSS", "GNSS+odom", "geoloc"], accuracy_rows(_doc(out))))
    print(f"eval replay: {summary_line(res)}; report {out / 'report.md'} ({time.perf_counter() - t0:.0f} s)")
    return out


def _doc(run_dir: Path):
    from ..evaluation.replay import load_run

    return load_run(run_dir)


def main(argv: Optional[List[str]] = None) -> Path:
    return run_eval_replay(parse_with(register, ["replay"] + list(argv or [])))
