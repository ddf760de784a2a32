"""``geoloc train-metric``: synthesise BEV/aerial samples from sim worlds and train the learned
metric-matching features (``models.bevmatch``) with the volume NLL; resumable; exports ONNX."""
from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import List, Optional

from .common import command_line, parse_with, positive, seed_type

log = logging.getLogger(__name__)


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train-metric", help="train the learned BEV/aerial features for metric matching (resumable)",
        description="1) For each --world (made by `geoloc sim world`; training towns only: the tool refuses the "
                    "held-out seeds) simulate --drives drives, render keyframes every 5 m and cache the fused BEV "
                    "mosaics of MetricMatcher (single frame and 4-keyframe sequences) under --cache (skipped "
                    "when already there), optionally under the drive-time condition --presets. 2) Train the "
                    "ground-BEV and aerial CNNs with the negative log-likelihood of the true pose over the whole "
                    "(x, y, heading) volume, priors drawn around the truth (+-10 m, +-8 deg), aerial windows cut "
                    "from the orthophoto as the matcher cuts them. Rerunning the same command resumes. 3) Export "
                    "both branches to OUT/onnx (ONNX, parity-checked against torch). Writes OUT/best.pt, "
                    "OUT/last.pt (+ .json manifests), OUT/history.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--world", type=Path, nargs="+", required=True, help="training world directories")
    p.add_argument("--out", type=Path, required=True, help="run directory (resumed if it holds the same run)")
    p.add_argument("--cache", type=Path, default=None, help="sample cache (default OUT/samples)")
    p.add_argument("--drives", type=positive(int, 0, 1000, "--drives"), default=10, help="drives per world")
    p.add_argument("--duration-s", type=positive(float, 0, 3600, "--duration-s"), default=90.0)
    p.add_argument("--presets", nargs="+", default=None, metavar="NAME",
                   help=f"drive-time condition presets ({', '.join(_preset_names())}): drive i of each world is "
                        "driven under preset i mod their number and rendered as `geoloc sim drive --conditions` "
                        "renders it (traffic, light, weather, changed roads, sensor model, body attitude); a "
                        "miscalibrated preset's mosaics are built with the PUBLISHED camera model while the "
                        "frames come from the true camera. Default: no conditions (daylit, empty, exact "
                        "calibration). The cache records them and refuses other presets")
    p.add_argument("--steps", type=positive(int, 0, 10 ** 7, "--steps"), default=10000,
                   help="optimizer steps (10000 x --batch 4 at ~0.09 s per sample: ~1 h on the 2-core CPU when "
                        "it is not shared, <= 3 h when other jobs take 2/3 of it)")
    p.add_argument("--batch", type=positive(int, 0, 256, "--batch"), default=4)
    p.add_argument("--lr", type=positive(float, 0, 1, "--lr"), default=2e-3)
    p.add_argument("--warmup-steps", type=int, default=100, help="linear learning-rate warm-up")
    p.add_argument("--val-samples", type=positive(int, 0, 10 ** 5, "--val-samples"), default=48,
                   help="validation samples (fixed priors) per evaluation")
    p.add_argument("--channels", type=positive(int, 0, 64, "--channels"), default=8, help="feature channels")
    p.add_argument("--val-every", type=positive(int, 0, 10 ** 6, "--val-every"), default=250)
    p.add_argument("--threads", type=positive(int, 0, 64, "--threads"), default=2, help="torch CPU threads")
    p.add_argument("--stop-after-min", type=positive(float, 0, 1e6, "--stop-after-min"), default=None,
                   help="save and stop after this many minutes of training; rerun the same command to continue")
    p.add_argument("--init", type=Path, default=None,
                   help="start from this bevmatch checkpoint's weights (e.g. continue a finished run with a new schedule)")
    p.add_argument("--no-export", action="store_true", help="skip the ONNX export at the end")
    p.add_argument("--allow-held-out", action="store_true",
                   help="allow held-out towns of the evaluation protocol (bench/heldout.yaml): experiments only, "
                        "never for a shipped model")
    p.add_argument("--seed", type=seed_type, default=0)
    p.add_argument("--force", action="store_true", help="start the training over (the sample cache is kept)")
    p.set_defaults(func=run_train_metric)
    return p


def _preset_names() -> List[str]:
    from ..sim.conditions import PRESETS

    return list(PRESETS)


def _check_worlds(worlds: List[Path], allow_held_out: bool) -> None:
    from ..core.errors import InvalidArgument
    from ..evaluation.protocol import refuse_heldout, world_seed

    for w in worlds:
        if not (Path(w) / "world.json").is_file():
            raise InvalidArgument(f"--world {w} is not a world directory; make one with `geoloc sim world --out {w}`")
    if not allow_held_out:
        refuse_heldout([(f"--world {w}", world_seed(w)) for w in worlds], "geoloc train-metric")


def run_train_metric(args: argparse.Namespace) -> Path:
    import torch

    from ..training.metric_data import SynthConfig, synthesize
    from ..training.metric_trainer import MetricTrainConfig, MetricTrainer

    torch.set_num_threads(int(args.threads))
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    _check_worlds(args.world, args.allow_held_out)
    presets = tuple(args.presets or ())
    synth_cfg = SynthConfig(drives=args.drives, duration_s=args.duration_s, presets=presets)  # checks the names
    if presets and args.drives < len(presets):
        log.warning("%d drives per world cannot cover the %d presets %s; raise --drives", args.drives,
                    len(presets), ", ".join(presets))
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out / "samples"
    t0 = time.perf_counter()
    index = synthesize(args.world, cache, synth_cfg)
    n = sum(w["samples"] for w in index["worlds"])
    print(f"train-metric: {n} cached samples from {len(index['worlds'])} worlds in {cache} "
          f"({time.perf_counter() - t0:.0f} s)" + (f"; presets cycled over the drives: {', '.join(presets)}"
                                                   if presets else ""))
    cfg = MetricTrainConfig(steps=args.steps, batch=args.batch, lr=args.lr, warmup_steps=args.warmup_steps,
                            val_every=args.val_every, val_samples=args.val_samples, seed=args.seed,
                            model={"channels": args.channels} if args.channels != 8 else {})
    trainer = MetricTrainer(cache, out, cfg, force=args.force, init=args.init)
    stop = None if args.stop_after_min is None else args.stop_after_min * 60.0
    res = trainer.run(stop_after_s=stop)
    val = res["history"]["val"][-1] if res["history"]["val"] else {}
    first = res["history"]["val"][0] if res["history"]["val"] else {}
    summary = (f"step {res['step']}/{cfg.steps} after {res['elapsed_s'] / 60:.1f} min; val NLL "
               f"{first.get('nll', float('nan')):.2f} -> {val.get('nll', float('nan')):.2f}, lat@1m "
               f"{val.get('lat@1m', float('nan')):.0f}%, lon@1m {val.get('lon@1m', float('nan')):.0f}%, "
               f"median {val.get('median_m', float('nan')):.2f} m (n={val.get('n', 0)})")
    if res["paused"]:
        print(f"train-metric: paused at {summary}; rerun the same command to resume from {out}")
    else:
        print(f"train-metric: done, {summary}; {res['checkpoint']}")
    if not args.no_export:
        from ..inference.bevmatch_export import export_bevmatch

        m = export_bevmatch(Path(res["checkpoint"]), out / "onnx", force=True, command=command_line())
        print(f"train-metric: ONNX export in {out / 'onnx'} (parity max abs {m['parity']['max_abs']:.1e})")
    return Path(res["checkpoint"])


def main(argv: Optional[List[str]] = None) -> Path:
    return run_train_metric(parse_with(register, ["train-metric"] + list(argv or [])))
