"""The ``geoloc`` command line: one entry point, one subcommand per offline tool.

Each tool module under ``geoloc_ros.tools`` exposes::

    register(subparsers)        # adds its sub-parser(s), each with set_defaults(func=run_fn)
    run_xxx(args) -> Path       # also callable from Python with an argparse.Namespace
    main(argv) -> Path          # parse + run, for scripts and tests

Importing this module is cheap (stdlib only): tool modules import numpy, rasterio,
torch, ... inside their run functions.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

# command group -> module names under geoloc_ros.tools, in --help order
COMMANDS = {
    "sim": ["sim_world", "sim_drive", "sim_dataset", "sim_preview"],
    "index": ["index_build", "index_info"],
    "export": ["export_onnx", "export_engine", "export_parity_inputs"],
    "eval": ["eval_retrieval", "eval_replay", "eval_compare", "eval_calibrate"],
    "data": ["data_convert"],
    "calibrate": ["calibrate_camera"],
    "map": ["map_calibrate"],
}
# top-level commands without a group (module names under geoloc_ros.tools)
TOP_LEVEL: List[str] = ["train", "train_metric", "play", "demo"]

DESCRIPTIONS = {
    "sim": "synthetic world, drives (rosbag2) and training datasets",
    "index": "build and inspect aerial tile indexes (FAISS + geographic metadata)",
    "export": "export models to ONNX and TensorRT engines",
    "eval": "evaluate models (retrieval R@K) and replay bags through the localizer",
    "data": "convert real datasets into the geoloc layout",
    "calibrate": "calibrate the camera mounting from a drive (metric matching self-calibration)",
    "map": "the orthophoto itself: learn its registration offset from recorded drives (sidecar JSON)",
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="geoloc",
        description="geoloc_ros offline tools: synthesize data, train, export, index, evaluate.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `geoloc COMMAND --help` for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"geoloc_ros {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    groups = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups.required = True
    for group, modules in COMMANDS.items():
        gp = groups.add_parser(group, help=DESCRIPTIONS[group], description=DESCRIPTIONS[group])
        sub = gp.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
        sub.required = True
        for mod in modules:
            importlib.import_module(f"geoloc_ros.tools.{mod}").register(sub)
    for mod in TOP_LEVEL:
        importlib.import_module(f"geoloc_ros.tools.{mod}").register(groups)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from .core.errors import GeolocError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # faiss logs each CPU-specific build it tries (and cannot load) at INFO
        logging.getLogger("faiss").setLevel(logging.WARNING)
    try:
        args.func(args)
    except GeolocError as exc:
        print(f"geoloc: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("geoloc: interrupted; finished outputs are kept, rerun to resume where supported", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
