"""Encoder speed: torch eager vs ONNX Runtime (threads tuned), per keyframe, per sequence, aerial tiles.

    .venv/bin/python bench/bench_inference.py [--export engines/seqgeo_lite] [--seconds 1.0] [--out FILE]

Cases (the shipped model, synthetic rendered frames):
  keyframe T=1 / T=Tmax  what the node does per keyframe: encode ONE new frame (frame graph) and fuse
                         the cached features of the last T frames (temporal graph)
  sequence T=1 / T=Tmax  a sequence from scratch (T backbone passes + fusion; offline use)
  fuse T=Tmax            the temporal graph alone
  aerial x16             16 heading-up tiles per call (index building): column per_s = tiles/s
  pair bev / pair aerial the learned metric pair (``--features learned``), one call each at the TensorRT
                         profile's opt and max sizes of the default matching geometry (``pair_profiles``):
                         torch, ONNX Runtime and, where TensorRT and a GPU are present, TensorRT (fp16
                         when its parity check passes); otherwise a tensorrt row says why it was skipped
Columns: ``ms`` median latency per call, ``per_s`` calls/s (tiles/s for aerial), ``vs_torch``
= the best torch ms (over its thread counts) / this ms, measured in the same run (> 1: faster
than torch eager), so numbers from noisy, shared machines compare. Both backends run with 1
and with all cores (intra-op threads): on a loaded machine one thread is often faster. If the
export folder is missing it is made first (export time reported).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, timed, write  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", type=Path, default=Path("engines/seqgeo_lite"),
                    help="ONNX export folder (made from the shipped weights if missing)")
    ap.add_argument("--seconds", type=float, default=1.0, help="measuring time per case and backend")
    ap.add_argument("--pair-export", type=Path, default=Path("engines/bevmatch"),
                    help="the learned pair's ONNX export (made from the shipped weights if missing)")
    ap.add_argument("--only", choices=("all", "encoder", "pair"), default="all", help="which cases to run")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    import torch

    if args.only == "pair":
        rows = pair_rows(args)
        print(table(rows, ["case", "backend", "threads", "ms", "per_s", "vs_torch", "skipped"]))
        path = write("inference_pair", rows, args.out, pair_export=str(args.pair_export), torch=torch.__version__)
        print(f"wrote {path}")
        return rows

    from geoloc_ros.inference.artifacts import is_export_dir
    from geoloc_ros.inference.onnx_export import export_onnx
    from geoloc_ros.inference.ort_backend import OrtEncoder
    from geoloc_ros.inference.torch_backend import TorchEncoder
    from geoloc_ros.models.crossview import default_checkpoint
    from geoloc_ros.sim.samples import synthetic_inputs

    cores = os.cpu_count() or 1
    export_s = None
    if not is_export_dir(args.export):
        t0 = time.perf_counter()
        export_onnx(default_checkpoint(), args.export, progress=True)
        export_s = round(time.perf_counter() - t0, 1)
    threads = sorted({1, cores})
    tenc = TorchEncoder(default_checkpoint(), threads=cores)
    encoders = [("torch", t, tenc) for t in threads]
    encoders += [("onnxruntime", t, OrtEncoder(args.export, threads=t)) for t in threads]
    cfg = encoders[0][2].config
    Tm = cfg.max_frames
    frames, tiles = synthetic_inputs(cfg, n_frames=Tm, n_tiles=4, seed=3)
    tiles16 = np.concatenate([tiles] * 4)
    cached = encoders[0][2].frame_features(frames)[None]  # [1, Tm, D]: the node's cache
    cases = {
        "keyframe T=1": lambda e: e.fuse(e.frame_features(frames[-1:])[None]),
        f"keyframe T={Tm}": lambda e: e.fuse(np.concatenate([cached[:, 1:], e.frame_features(frames[-1:])[None]], 1)),
        "sequence T=1": lambda e: e.encode_sequence(frames[-1:]),
        f"sequence T={Tm}": lambda e: e.encode_sequence(frames),
        f"fuse T={Tm}": lambda e: e.fuse(cached),
        "aerial x16": lambda e: e.encode_aerial(tiles16),
    }
    rows = []
    for case, fn in cases.items():
        case_rows = []
        for name, nthreads, enc in encoders:
            if name == "torch":
                torch.set_num_threads(nthreads)
            dt = timed(lambda: fn(enc), args.seconds)
            per = (16.0 if case.startswith("aerial") else 1.0) / dt
            case_rows.append({"case": case, "backend": name, "threads": nthreads, "ms": round(dt * 1e3, 2),
                              "per_s": round(per, 1), "_dt": dt})
        base = min(r["_dt"] for r in case_rows if r["backend"] == "torch")  # torch at its best thread count
        for r in case_rows:
            r["vs_torch"] = round(base / r.pop("_dt"), 2)
        rows += case_rows
    if args.only == "all":
        rows += pair_rows(args)
    print(table(rows, ["case", "backend", "threads", "ms", "per_s", "vs_torch", "skipped"]))
    if export_s is not None:
        print(f"export of {args.export}: {export_s} s")
    sizes = {p.name: p.stat().st_size for p in sorted(Path(args.export).glob("*.onnx"))}
    import onnxruntime

    path = write("inference", rows, args.out, export=str(args.export), export_seconds=export_s, onnx_bytes=sizes,
                 torch=torch.__version__, onnxruntime=onnxruntime.__version__)
    print(f"wrote {path}")


def pair_rows(args):
    """The learned metric pair per backend: one BEV and one aerial window per call, at the
    TensorRT profile's opt and max sizes; TensorRT only where it can run (else a row saying why)."""
    import torch

    from geoloc_ros.core.errors import GeolocError
    from geoloc_ros.metric.learned import LearnedFeatures, pair_profiles

    cores = os.cpu_count() or 1
    prof = pair_profiles()
    (bev_opt, bev_max), (a_opt, a_max) = [(v[1][2:], v[2][2:]) for p in prof.values() for v in p.values()]
    rng = np.random.default_rng(0)

    def bev_case(hw):
        h, w = hw
        valid = np.ones((h, w), bool)
        valid[: h // 3, : w // 4] = False
        return rng.random((h, w, 3)).astype(np.float32) * 255, valid, rng.random((h, w)).astype(np.float32) * 30

    cases = {}
    for hw in (bev_opt, bev_max):
        x = bev_case(hw)
        cases[f"pair bev {hw[0]}x{hw[1]}"] = lambda fx, x=x: fx.bev(*x)
    for hw in (a_opt, a_max):
        a = (rng.random((hw[0], hw[1], 3)) * 255).astype(np.uint8)
        cases[f"pair aerial {hw[0]}x{hw[1]}"] = lambda fx, a=a: fx.aerial(a)
    fxs, skipped = [], {}
    for t in sorted({1, cores}):
        fxs.append(("torch", t, LearnedFeatures(backend="torch", threads=t)))
        fxs.append(("onnxruntime", t, LearnedFeatures(backend="onnxruntime", threads=t, export_dir=args.pair_export,
                                                      export_missing=True)))
    try:
        fx = LearnedFeatures(backend="tensorrt", export_dir=args.pair_export)
        fxs.append(("tensorrt", 0, fx))
    except (GeolocError, ImportError, OSError, RuntimeError) as exc:
        skipped["tensorrt"] = f"{type(exc).__name__}: {exc}"
    rows = []
    for case, fn in cases.items():
        case_rows = []
        for name, nthreads, fx in fxs:
            if name == "torch":
                torch.set_num_threads(nthreads)
            dt = timed(lambda: fn(fx), args.seconds)
            case_rows.append({"case": case, "backend": name if name != "tensorrt" else f"tensorrt {fx.runner.precision}",
                              "threads": nthreads or "", "ms": round(dt * 1e3, 2), "per_s": round(1.0 / dt, 1),
                              "_dt": dt})
        base = min(r["_dt"] for r in case_rows if r["backend"] == "torch")
        for r in case_rows:
            r["vs_torch"] = round(base / r.pop("_dt"), 2)
        for name, why in skipped.items():
            case_rows.append({"case": case, "backend": name, "skipped": why.split(" (")[0]})
        rows += case_rows
    return rows


if __name__ == "__main__":
    main()
