"""``geoloc calibrate camera``: estimate the camera mounting's error offline from a drive.

Replays a bag through the Localizer with metric matching and the mounting self-calibration on
(``metric.selfcal.MountCalibrator``: pitch, height and roll of the camera relative to the road
plane, learned from the matches themselves, gated and bounded), then writes the calibration file
the node loads (JSON, format ``geoloc_camera_selfcal``). ``--from FILE`` continues from an existing
calibration of the same vehicle. The published mounting comes from the bag's /tf_static (or
``--camera-mount``); the file applies to that published model only. A drive in a held-out town of
the evaluation protocol (bench/heldout.yaml) is refused: nothing is calibrated on held-out towns.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import List, Optional

from ..core.bagpath import BAG_HELP
from ..metric.config import DEFAULT_FEATURES, FEATURES
from .common import parse_with


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "camera", help="estimate the camera mounting error (pitch, height, roll) from a drive: a calibration file",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bag", type=Path, help=BAG_HELP)
    p.add_argument("--ortho", type=Path, default=None,
                   help="orthophoto (GeoTIFF or XYZ folder; default: the synthetic drive's world orthophoto)")
    p.add_argument("--out", type=Path, default=Path("runs/camera_calibration.json"),
                   help="calibration file written (JSON)")
    p.add_argument("--force", action="store_true", help="replace --out")
    p.add_argument("--from", dest="start", type=Path, default=None, metavar="FILE",
                   help="continue from this calibration file (same vehicle and published mounting)")
    p.add_argument("--params", type=Path, default=None,
                   help="YAML of SelfCalParams overrides (metric.selfcal; unknown keys are an error)")
    p.add_argument("--config", type=Path, default=None, help="YAML of LocalizerConfig overrides")
    p.add_argument("--features", default=DEFAULT_FEATURES, choices=FEATURES,
                   help="metric matching feature extractor")
    p.add_argument("--camera-mount", default=None, metavar="X,Y,Z,ROLL,PITCH,YAW",
                   help="published camera_link pose in base_link (m, deg; pitch > 0 looks down) when the bag has "
                        "no /tf_static chain base_link -> camera_info frame")
    p.set_defaults(func=run_calibrate_camera)
    return p


def _selfcal_params(path: Optional[Path]):
    from ..core.errors import InvalidArgument
    from ..metric.selfcal import SelfCalParams

    if path is None:
        return SelfCalParams()
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidArgument(f"--params {path}: not a readable YAML file ({exc})") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"--params {path}: expected a mapping of SelfCalParams fields")
    return SelfCalParams.from_dict(doc)


def run_calibrate_camera(args: argparse.Namespace) -> Path:
    from ..core.bagpath import resolve_bag
    from ..core.errors import InvalidArgument
    from ..core.outputs import check_output_file
    from ..evaluation.protocol import refuse_heldout, towns_of_drives, world_seed
    from ..evaluation.replay import find_world_dir, load_localizer_config, replay_bag, world_frame
    from ..metric import open_matcher
    from ..metric.selfcal import MountCalibrator
    from .eval_replay import _parse_mount

    t0 = time.perf_counter()
    bag = resolve_bag(args.bag)
    wd = find_world_dir(bag)
    towns = towns_of_drives([Path(args.bag)])
    if wd is not None:
        towns.append((str(wd), world_seed(wd)))
    refuse_heldout(towns, "geoloc calibrate camera")
    check_output_file(args.out, args.force)
    ortho = args.ortho
    if ortho is None:
        if wd is None:
            raise InvalidArgument(f"{args.bag}: no --ortho and no synthetic world beside the drive")
        ortho = Path(wd) / "orthophoto.tif"
    params = _selfcal_params(args.params)
    cal = MountCalibrator.load(args.start, params) if args.start is not None else MountCalibrator(params)
    cfg, _ = load_localizer_config(args.config)
    if cfg.metric_pitch_search_deg > 0:
        import dataclasses

        cfg = dataclasses.replace(cfg, metric_pitch_search_deg=0.0)  # self-calibration corrects the pitch
    matcher = open_matcher(ortho, cfg, frame=world_frame(wd), features=args.features, selfcal=cal)
    res = replay_bag(bag, None, None, cfg, matcher=matcher, camera_mount=_parse_mount(args.camera_mount),
                     progress=True)
    if cal.published is None:
        raise InvalidArgument(f"{args.bag}: no camera model (camera_info + mounting) in the bag: nothing calibrated")
    if cal.counts["accepted"] == 0:
        raise InvalidArgument(f"{args.bag}: no match passed the self-calibration gate "
                              f"({cal.counts['matches']} matches; rejected: {cal.counts['rejected']}); nothing written")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cal.save(args.out)
    print(f"calibrate camera: {cal.summary()} over {res.duration_s:.0f} s of driving -> {args.out} "
          f"({time.perf_counter() - t0:.0f} s)")
    return args.out


def main(argv: Optional[List[str]] = None) -> Path:
    return run_calibrate_camera(parse_with(register, ["camera"] + list(argv or [])))
