"""``geoloc export onnx``: a checkpoint -> an ONNX export folder (three graphs + manifest), parity-checked."""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import List, Optional

from .common import parse_with
from .export_parity_inputs import SOURCE_HELP


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "onnx", help="export a checkpoint to ONNX (frame encoder, temporal fusion, aerial encoder)",
        description="Export the model of a checkpoint (or a preset's shipped weights) as three ONNX graphs: the "
                    "per-frame ground encoder [B,3,H,W]->[B,D] (one backbone pass per keyframe), the temporal "
                    "fusion [B,T,D]+pad[B,T]->[B,D] with T dynamic in 1..max_frames, and the aerial encoder "
                    "[B,3,h,w]->[B,D]; plus manifest.json (model identity, shapes, opset, precision, sha256 of "
                    "every graph, versions). The exporter runs ONNX Runtime against PyTorch on random inputs and on "
                    "real frames and aerial tiles (--parity-inputs; default: the small fixture shipped in "
                    "geoloc_ros/weights/) at several T and fails above the tolerance. Needs torch, onnx, "
                    "onnxscript, onnxruntime. Build TensorRT engines from the folder with `geoloc export engine`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint .pt, or a preset name for its shipped weights (e.g. seqgeo_lite)")
    p.add_argument("--out", type=Path, required=True, help="output folder, e.g. engines/seqgeo_lite/")
    p.add_argument("--fp16", action="store_true",
                   help="fp16 weights and compute inside the graphs (inputs/outputs stay float32); for TensorRT 11")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset")
    p.add_argument("--parity-inputs", type=Path, default=None,
                   help=f"real pictures for the parity check: {SOURCE_HELP}; default: the shipped fixture "
                        f"(geoloc_ros/weights/parity_inputs.npz)")
    p.add_argument("--image-topic", default=None,
                   help="camera topic of a --parity-inputs bag (default /camera/image_raw, else the only camera topic)")
    p.add_argument("--force", action="store_true", help="replace an existing, non-empty output folder")
    p.set_defaults(func=run_export_onnx)
    return p


def run_export_onnx(args: argparse.Namespace) -> Path:
    from ..core.errors import InvalidArgument
    from ..core.outputs import check_output_dir
    from ..inference.select import resolve_checkpoint
    from .export_parity_inputs import read_parity_source

    ckpt = resolve_checkpoint(args.checkpoint)
    if not Path(ckpt).is_file():
        raise InvalidArgument(f"--checkpoint {ckpt} does not exist")
    if not (13 <= args.opset <= 23):
        raise InvalidArgument(f"--opset {args.opset} is outside 13..23 (18 is tested)")
    check_output_dir(args.out, args.force)  # before the slow imports
    parity_inputs = None  # the shipped fixture
    if args.parity_inputs is not None:
        parity_inputs = read_parity_source(args.parity_inputs, image_topic=args.image_topic)
    from ..inference.onnx_export import export_onnx

    # the command as `geoloc export onnx` would take it (sys.argv may be another program's, e.g. pytest)
    cmd = " ".join(shlex.quote(a) for a in ["geoloc", "export", "onnx", "--checkpoint", str(args.checkpoint),
                                            "--out", str(args.out)]
                   + (["--fp16"] if args.fp16 else []) + (["--opset", str(args.opset)] if args.opset != 18 else [])
                   + (["--parity-inputs", str(args.parity_inputs)] if args.parity_inputs is not None else [])
                   + (["--image-topic", args.image_topic] if args.image_topic else [])
                   + (["--force"] if args.force else []))
    export_onnx(ckpt, args.out, fp16=args.fp16, force=args.force, opset=args.opset, parity_inputs=parity_inputs,
                command=cmd, progress=True)
    return Path(args.out)


def main(argv: Optional[List[str]] = None) -> Path:
    return run_export_onnx(parse_with(register, ["onnx"] + list(argv or [])))
