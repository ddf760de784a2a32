"""``geoloc train``: train a cross-view model preset on a dataset (resumable)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import List, Optional, Tuple

from .common import command_line, parse_with, positive, seed_type


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train", help="train a model preset (config/models/*.yaml) on a dataset",
        description="Train the ground and aerial branches of a model preset on a dataset made by `geoloc sim "
                    "dataset` (or converted to its layout). The frozen backbone blocks are encoded once into a "
                    "feature cache under OUT/cache; the rest trains with in-batch soft-margin triplet (or "
                    "InfoNCE) loss, GeoDTR counterfactual loss, geographic hard negatives, mirror and photometric "
                    "augmentation and sequential dropout. Rerunning the same command resumes where it stopped. "
                    "Writes OUT/best.pt (best validation R@1), OUT/last.pt, their .json manifests and "
                    "OUT/history.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default="seqgeo_lite", help="model preset name or YAML path")
    p.add_argument("--data", type=Path, required=True, help="dataset directory")
    p.add_argument("--out", type=Path, required=True, help="run directory (resumed if it holds the same run)")
    p.add_argument("--epochs", type=positive(int, 0, 10000, "--epochs"), default=20)
    p.add_argument("--batch", type=positive(int, 1, 4096, "--batch"), default=32, help="sequences per step (>= 2)")
    p.add_argument("--lr", type=positive(float, 0, 1, "--lr"), default=3e-4, help="learning rate of new layers")
    p.add_argument("--lr-backbone", type=positive(float, 0, 1, "--lr-backbone"), default=5e-5,
                   help="learning rate of the trained backbone blocks")
    p.add_argument("--loss", choices=("triplet", "infonce"), default="triplet")
    p.add_argument("--seq-dropout", type=float, default=0.5, help="probability that a sample drops frames")
    p.add_argument("--variants", type=positive(int, 0, 16, "--variants"), default=2,
                   help="cached photometric variants per image (1 = no photometric augmentation)")
    p.add_argument("--counterfactual-weight", type=float, default=5.0,
                   help="GeoDTR counterfactual loss weight (layout aggregator only; 0 = off)")
    p.add_argument("--mirror-prob", type=float, default=0.5,
                   help="GeoDTR layout simulation: probability of mirroring ground sequence and tile together "
                        "(0 = off)")
    p.add_argument("--init", type=Path, default=None,
                   help="start from this checkpoint's weights instead of ImageNet (same parameter shapes, e.g. "
                        "transgeo_lite -> transgeo_lite_crop)")
    p.add_argument("--cache", type=Path, default=None,
                   help="trunk-feature cache folder (default OUT/cache); presets with the same trunk can share one")
    p.add_argument("--max-train-sequences", type=int, default=0, help="subsample the train split (0 = all)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=positive(int, 0, 256, "--threads"), default=None, help="torch CPU threads")
    p.add_argument("--stop-after-min", type=positive(float, 0, 1e6, "--stop-after-min"), default=None,
                   help="save and stop after this many minutes; rerun the same command to continue")
    p.add_argument("--seed", type=seed_type, default=0)
    p.add_argument("--force", action="store_true", help="replace a run directory that holds other settings")
    p.add_argument("--allow-held-out", action="store_true",
                   help="allow a dataset made from held-out towns of the evaluation protocol (bench/heldout.yaml): "
                        "experiments only, never for a shipped model")
    p.set_defaults(func=run_train)
    return p


def dataset_towns(data: Path) -> List[Tuple[str, Optional[int]]]:
    """(label, town) of every world a dataset was exported from (its dataset.json), for the protocol check."""
    import json

    meta = Path(data) / "dataset.json"
    if not meta.is_file():
        return []
    out = []
    for w in json.loads(meta.read_text()).get("worlds") or []:
        s = w.get("seed")
        out.append((f"--data {data} world {w.get('name')!r}", s if isinstance(s, int) and not isinstance(s, bool)
                    else None))
    return out


def run_train(args: argparse.Namespace) -> Path:
    import torch

    if not args.allow_held_out:
        from ..evaluation.protocol import refuse_heldout

        refuse_heldout(dataset_towns(args.data), "geoloc train")

    from ..models.config import load_preset
    from ..training.trainer import TrainConfig, Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    model_cfg = load_preset(args.preset)
    cfg = TrainConfig(epochs=args.epochs, batch=args.batch, lr=args.lr, lr_backbone=args.lr_backbone, loss=args.loss,
                      seq_dropout=args.seq_dropout, variants=args.variants,
                      counterfactual_weight=args.counterfactual_weight, mirror_prob=args.mirror_prob,
                      max_train_sequences=args.max_train_sequences, seed=args.seed, device=args.device)
    t0 = time.perf_counter()
    stop = None if args.stop_after_min is None else args.stop_after_min * 60.0
    res = Trainer(model_cfg, cfg, args.data, args.out, force=args.force, init=args.init,
                  cache_dir=args.cache).run(command_line(), stop_after_s=stop)
    if res["paused"]:
        print(f"train: {model_cfg.name} paused after {time.perf_counter() - t0:.0f} s with {len(res['history'])} "
              f"epochs done; rerun the same command to resume from {args.out}")
        return Path(args.out)
    last = res["history"][-1] if res["history"] else {}
    val = last.get("val", {})
    print(f"train: {model_cfg.name} on {res['train_sequences']} sequences, {len(res['history'])} epochs "
          f"({res['parameters']['trainable'] / 1e6:.1f}M trainable of {res['parameters']['total'] / 1e6:.1f}M); "
          f"last loss {last.get('loss', float('nan')):.3f}"
          + (f", val R@1 {val['R@1']:.1f}% R@5 {val.get('R@5', float('nan')):.1f}%" if val else "")
          + f"; {res['checkpoint']} in {time.perf_counter() - t0:.0f} s")
    return Path(res["checkpoint"])


def main(argv: Optional[List[str]] = None) -> Path:
    return run_train(parse_with(register, ["train"] + list(argv or [])))
