"""``geoloc export engine``: TensorRT engines for an ONNX export folder, on the target GPU: the
retrieval encoder's (``geoloc export onnx``) or the learned metric pair's (``engines/bevmatch``),
told apart by the folder's manifest."""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Dict, List, Optional

from .common import parse_with, positive

log = logging.getLogger(__name__)


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "engine", help="build TensorRT engines from an ONNX export (run on the target, e.g. the Jetson)",
        description="Build (or reuse) the TensorRT engines of an export folder: one engine per graph for this GPU, "
                    "TensorRT version and precision, with an optimization profile, a timing cache and a workspace "
                    "limit. Engines and their manifests are written into the export folder. A cached engine whose "
                    "key (TensorRT version, GPU, compute capability, precision, ONNX sha256, profile) matches is "
                    "reused unless --force. The retrieval encoder's export (`geoloc export onnx`): profile over "
                    "batch and T (1..max_frames); TensorRT 10 (JetPack 6): --precision fp16/int8 via builder "
                    "flags (int8 calibrates on --calibration-drive); TensorRT 11 (JetPack 7): precision comes from "
                    "the ONNX (export --fp16). The learned metric pair's export (engines/bevmatch): profile over "
                    "the BEV mosaic's and the aerial window's h, w from the matching parameters (--config), the "
                    "engines checked against ONNX Runtime on the export's parity inputs; auto = fp16 when it "
                    "passes, else fp32.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--onnx", type=Path, required=True,
                   help="ONNX export folder: the retrieval encoder's (from `geoloc export onnx`) or the learned "
                        "metric pair's (engines/bevmatch)")
    p.add_argument("--precision", choices=("auto", "fp32", "fp16", "int8"), default="auto",
                   help="engine precision; auto: fp16 on TensorRT 10, the ONNX's on TensorRT 11")
    p.add_argument("--workspace-mb", type=positive(int, 0, 1 << 20, "--workspace-mb"), default=1024,
                   help="builder workspace limit (MiB)")
    p.add_argument("--max-batch", type=positive(int, 0, 4096, "--max-batch"), default=32,
                   help="largest batch in the optimization profile (aerial tiles per call)")
    p.add_argument("--opt-frames", type=int, default=None, help="T the profile is tuned for (default max_frames-1)")
    p.add_argument("--calibration-drive", type=Path, default=None,
                   help="drive folder (from `geoloc sim drive`: its bag, truth.csv and world) whose frames and "
                        "aerial tiles at the true poses calibrate INT8")
    p.add_argument("--config", type=Path, default=None,
                   help="learned pair only: YAML of LocalizerConfig overrides (or the node's parameters file) whose "
                        "metric_* geometry sets the engines' h, w profile (default: the defaults)")
    p.add_argument("--force", action="store_true", help="rebuild even when cached engines match")
    p.set_defaults(func=run_export_engine)
    return p


def calibration_batches(drive: Path, cfg: Dict, frames: int = 64, batch: int = 8) -> Dict[str, list]:
    """Pre-processed real frames (every 5th camera image) and aerial tiles at the true poses."""
    import numpy as np

    from ..core.tiles import sample_bilinear, tile_grid
    from ..inference.base import to_model_input
    from ..sim.bag import TOPIC_IMAGE, read_drive_manifest, read_truth_csv
    from ..sim.world import World
    from .export_parity_inputs import bag_frames

    imgs, _ = bag_frames(Path(drive) / "bag", frames, every=5, topic=TOPIC_IMAGE)
    x = to_model_input(imgs, tuple(cfg["ground_size"]))
    world = World.load(Path(read_drive_manifest(drive)["world"]["path"]))
    truth = read_truth_csv(Path(drive) / "truth.csv")
    idx = np.linspace(0, len(truth["x"]) - 1, frames).astype(int)
    tiles = []
    for j in idx:
        gx, gy = tile_grid(truth["x"][j], truth["y"][j], truth["yaw"][j], cfg["tile_m"], cfg["aerial_size"][0])
        r, c = world.xy_to_rc(gx, gy)
        tiles.append(np.clip(sample_bilinear(world.ortho, r - 0.5, c - 0.5), 0, 255).astype(np.uint8))
    t = to_model_input(np.stack(tiles), tuple(cfg["aerial_size"]))
    return {"frame": [x[i:i + batch] for i in range(0, len(x) - batch + 1, batch)],
            "aerial": [t[i:i + batch] for i in range(0, len(t) - batch + 1, batch)]}


def run_export_engine(args: argparse.Namespace) -> Path:
    from ..core.errors import InvalidArgument
    from ..inference.artifacts import read_export_manifest
    from ..inference.tensorrt_backend import TensorRTEncoder, import_tensorrt

    onnx_dir = Path(args.onnx)
    if not onnx_dir.is_dir():
        raise InvalidArgument(f"--onnx {onnx_dir} is not a folder; make one with "
                              f"`geoloc export onnx --checkpoint CKPT --out {onnx_dir}`")
    if _is_bevmatch_export(onnx_dir):
        return _pair_engines(args, onnx_dir)
    if args.config is not None:
        raise InvalidArgument("--config sets the learned pair's profile; the retrieval encoder's comes from its model")
    manifest = read_export_manifest(onnx_dir, verify=True)
    if args.precision == "int8" and args.calibration_drive is None:
        raise InvalidArgument("--precision int8 needs --calibration-drive DRIVE (real frames to calibrate on)")
    import_tensorrt()  # raises TensorRTUnavailable with install hints
    calib = None
    if args.calibration_drive is not None:
        drive, cfg = Path(args.calibration_drive), manifest["config"]
        calib = lambda: calibration_batches(drive, cfg)  # noqa: E731
    t0 = time.perf_counter()
    enc = TensorRTEncoder(onnx_dir, precision=args.precision, max_batch=args.max_batch, opt_frames=args.opt_frames,
                          workspace_mb=args.workspace_mb, build=True, force_rebuild=args.force, calibration=calib)
    built = enc.build_log or ["all engines were cached and match"]
    print(f"TensorRT engines for {onnx_dir} ({enc.detail}) ready in {time.perf_counter() - t0:.0f} s: "
          + "; ".join(built))
    return onnx_dir


def _is_bevmatch_export(onnx_dir: Path) -> bool:
    import json

    from ..inference.bevmatch_artifacts import EXPORT_FORMAT, MANIFEST_NAME

    try:
        return json.loads((onnx_dir / MANIFEST_NAME).read_text()).get("format") == EXPORT_FORMAT
    except (OSError, ValueError, AttributeError):
        return False  # the encoder's reader reports what is wrong with it


def _pair_engines(args: argparse.Namespace, onnx_dir: Path) -> Path:
    """The learned metric pair's two engines, built (or reused) and parity-checked."""
    from ..core.errors import InvalidArgument
    from ..evaluation.replay import load_localizer_config
    from ..inference.bevmatch_artifacts import read_bevmatch_export
    from ..inference.tensorrt_backend import import_tensorrt
    from ..metric.learned import build_pair_engines

    read_bevmatch_export(onnx_dir, verify=True)
    if args.precision == "int8" or args.calibration_drive is not None:
        raise InvalidArgument("INT8 (and --calibration-drive) apply to the retrieval encoder only; the learned pair "
                              "builds fp16 or fp32")
    cfg, _ = load_localizer_config(args.config)
    import_tensorrt()  # raises TensorRTUnavailable with install hints
    t0 = time.perf_counter()
    runner = build_pair_engines(onnx_dir, precision=args.precision, metric_params=cfg, force_rebuild=args.force,
                                workspace_mb=args.workspace_mb)
    built = runner.build_log or ["all engines were cached and match"]
    par = runner.parity
    print(f"TensorRT engines of the learned pair {onnx_dir} ({runner.detail}) ready in {time.perf_counter() - t0:.0f} s, "
          f"parity vs ONNX Runtime passed (smallest feature cosine "
          f"{min(par['bev']['min_cos'], par['aerial']['min_cos']):.5f}): " + "; ".join(built))
    return onnx_dir


def main(argv: Optional[List[str]] = None) -> Path:
    return run_export_engine(parse_with(register, ["engine"] + list(argv or [])))
