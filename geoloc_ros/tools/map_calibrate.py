"""``geoloc map calibrate``: learn the orthophoto's registration offset offline from recorded drives.

Replays each bag in turn through the Localizer with metric matching and the map-offset estimator on
(``core.mapoffset``: GNSS minus the trusted camera, the receiver's bias separated by its behaviour
in time), the sidecar carried from one drive to the next exactly as the node carries it from one
run to the next, and writes the sidecar the node loads (``map_offset_file``; JSON, format
``geoloc_map_offset``), by default ``<orthophoto>.offset.json``. ``--from FILE`` continues from an
existing sidecar of the same orthophoto. Every drive must have been recorded over this orthophoto.

Calibrating a map is not tuning a default: the sidecar belongs to one orthophoto, as the node learns
it while driving there, so drives of any town may be used. The offset's sigma says how much the
drives could tell: with a consumer receiver (bias ~3 m, ~60 s correlation) about
``3 m / sqrt(minutes driven / 2)`` per axis.
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from pathlib import Path
from typing import List, Optional

from ..core.bagpath import BAG_HELP
from ..metric.config import DEFAULT_FEATURES, FEATURES
from .common import parse_with


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "calibrate", help="learn the orthophoto's registration offset from recorded drives: a sidecar JSON",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bags", type=Path, nargs="+", metavar="BAG", help=BAG_HELP + " (several: driven in turn)")
    p.add_argument("--ortho", type=Path, required=True, help="the orthophoto (GeoTIFF or XYZ folder)")
    p.add_argument("--out", type=Path, default=None,
                   help="sidecar written (default: <orthophoto>.offset.json beside the orthophoto)")
    p.add_argument("--force", action="store_true", help="replace --out")
    p.add_argument("--from", dest="start", type=Path, default=None, metavar="FILE",
                   help="continue from this sidecar (same orthophoto)")
    p.add_argument("--config", type=Path, default=None, help="YAML of LocalizerConfig overrides")
    p.add_argument("--features", default=DEFAULT_FEATURES, choices=FEATURES,
                   help="metric matching feature extractor")
    p.add_argument("--camera-mount", default=None, metavar="X,Y,Z,ROLL,PITCH,YAW",
                   help="published camera_link pose in base_link (m, deg; pitch > 0 looks down) when a bag has "
                        "no /tf_static chain base_link -> camera_info frame")
    p.set_defaults(func=run_map_calibrate)
    return p


def run_map_calibrate(args: argparse.Namespace) -> Path:
    from ..core.bagpath import resolve_bag
    from ..core.errors import InvalidArgument
    from ..core.mapoffset import sidecar_path
    from ..core.outputs import check_output_file
    from ..evaluation.replay import find_world_dir, load_localizer_config, replay_bag, world_frame
    from ..metric import open_matcher
    from .eval_replay import _parse_mount

    t0 = time.perf_counter()
    if not Path(args.ortho).exists():
        raise InvalidArgument(f"--ortho {args.ortho} does not exist")
    bags = [resolve_bag(b) for b in args.bags]
    out = Path(args.out) if args.out is not None else sidecar_path("auto", args.ortho)
    check_output_file(out, args.force)
    if args.start is not None and not Path(args.start).is_file():
        raise InvalidArgument(f"--from {args.start} does not exist")
    cfg, _ = load_localizer_config(args.config)
    cfg = dataclasses.replace(cfg, map_offset_estimate=True, map_offset_file=str(out), map_offset_save=True)
    mount = _parse_mount(args.camera_mount)
    wd = find_world_dir(bags[0])
    matcher = open_matcher(args.ortho, cfg, frame=world_frame(wd) if wd is not None else None,
                           features=args.features)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():  # --force: start from nothing (or --from), not from the file being replaced
        out.unlink()
    if args.start is not None and Path(args.start).resolve() != out.resolve():
        shutil.copyfile(args.start, out)
    driven, diag = 0.0, {}
    for i, bag in enumerate(bags):
        matcher.clear()
        res = replay_bag(bag, None, None, cfg, matcher=matcher, camera_mount=mount, progress=True)
        driven += res.duration_s
        diag = res.localizer_stats.get("corrected", res.localizer_stats).get("map_offset", {}) \
            if isinstance(res.localizer_stats, dict) else {}
        print(f"  drive {i + 1}/{len(bags)} {bag}: {res.duration_s:.0f} s; offset here "
              f"({diag.get('east_m', float('nan')):+.2f}, {diag.get('north_m', float('nan')):+.2f}) m, sigma "
              f"{diag.get('sigma_m', float('nan')):.2f} m, {diag.get('counts', {}).get('samples', 0)} samples")
    if not out.is_file():
        raise InvalidArgument(f"no sample of the offset in {len(bags)} drive(s) (no trusted camera match next to an "
                              f"accepted GNSS fix): nothing written")
    print(f"map calibrate: {len(bags)} drive(s), {driven / 60.0:.1f} min; offset ({diag.get('east_m', 0.0):+.2f}, "
          f"{diag.get('north_m', 0.0):+.2f}) m, sigma {diag.get('sigma_m', float('nan')):.2f} m on "
          f"{diag.get('independent_samples_total', 0.0):.1f} independent samples -> {out} "
          f"({time.perf_counter() - t0:.0f} s)")
    return out


def main(argv: Optional[List[str]] = None) -> Path:
    return run_map_calibrate(parse_with(register, ["calibrate"] + list(argv or [])))
