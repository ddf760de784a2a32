"""``geoloc eval retrieval``: R@K of a checkpoint on dataset splits, with baselines in one table."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import List, Optional

from .common import parse_with, positive


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "retrieval", help="R@1/5/10/1% ground sequence -> aerial tile, per sequence length, with baselines",
        description="Encode every sequence and aerial tile of the given splits with a checkpoint and report "
                    "R@1, R@5, R@10, R@1% and hit@25m (top-1 tile within 25 m) per number of frames used "
                    "(1, 3, 5, T), for the model's temporal fusion and two baselines on the same weights: the "
                    "centre frame alone and the mean of per-frame descriptors. Prints a table, writes JSON.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="dataset directory")
    p.add_argument("--splits", nargs="+", default=["test", "test_world"], help="splits to evaluate")
    p.add_argument("--lengths", type=int, nargs="+", default=[1, 3, 5], help="sequence lengths besides T")
    p.add_argument("--max-sequences", type=int, default=0, help="subsample each split (0 = all)")
    p.add_argument("--out", type=Path, default=None, help="JSON file for the results (default: beside the checkpoint)")
    p.add_argument("--cache", type=Path, default=None, help="feature cache directory (default: beside the checkpoint)")
    p.add_argument("--threads", type=positive(int, 0, 256, "--threads"), default=None)
    p.set_defaults(func=run_eval_retrieval)
    return p


MODES = ("model", "mean", "centre")


def evaluate_checkpoint(checkpoint: Path, data: Path, splits, lengths, cache: Path, max_sequences: int = 0,
                        modes=MODES):
    """Rows of R@K per split, method and number of frames. ``modes``: the model's own temporal
    fusion ("model"), the mean of frame descriptors ("mean"), the centre frame alone ("centre")."""
    from ..models.crossview import load_checkpoint
    from ..training.data import build_feature_cache
    from ..training.trainer import evaluate_cached

    model, manifest = load_checkpoint(checkpoint)
    rows = []
    for split in splits:
        d = build_feature_cache(model, data, split, cache, variants=1, max_sequences=max_sequences)
        T = d[0].seq_frames.shape[1]
        Ls = sorted({L for L in lengths if 1 <= L < T}) + [None]
        for mode, label in (("model", model.cfg.temporal), ("mean", "mean of frames"), ("centre", "centre frame")):
            if mode not in modes:
                continue
            if mode == "centre":
                res = evaluate_cached(model, *d, lengths=[None], mode="centre")
            else:
                res = evaluate_cached(model, *d, lengths=Ls, mode=mode)
            for L, r in res.items():
                rows.append({"split": split, "method": label, "frames": 1 if mode == "centre" else
                             (T if L == "T" else int(L)), **{k: (round(v, 2) if isinstance(v, float) else v)
                                                               for k, v in r.items()}})
    return rows, manifest


def run_eval_retrieval(args: argparse.Namespace) -> Path:
    import torch

    from ..core.errors import InvalidArgument

    if args.threads:
        torch.set_num_threads(args.threads)
    if any(L < 1 for L in args.lengths):
        raise InvalidArgument("--lengths must be positive")
    t0 = time.perf_counter()
    ck = Path(args.checkpoint)
    cache = args.cache or ck.parent / "cache"
    rows, manifest = evaluate_checkpoint(ck, args.data, args.splits, args.lengths, cache, args.max_sequences)
    cols = ["split", "method", "frames", "R@1", "R@5", "R@10", "R@1%", "hit@25m", "median_err_m", "queries"]
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(cols, widths)))
    out = args.out or ck.with_name(ck.stem + "_retrieval.json")
    out.write_text(json.dumps({"checkpoint": str(ck), "preset": manifest["preset"],
                               "fingerprint": manifest["fingerprint"], "data": str(args.data), "rows": rows},
                              indent=2) + "\n")
    best = [r for r in rows if r["method"] == manifest["config"]["temporal"] and r["frames"] ==
            max(x["frames"] for x in rows)]
    print("eval: " + "; ".join(f"{r['split']} ({r['queries']} queries) R@1 {r['R@1']:.1f}% "
                               f"R@5 {r.get('R@5', float('nan')):.1f}% hit@25m {r['hit@25m']:.1f}%"
                               for r in best) + f"; {out} in {time.perf_counter() - t0:.0f} s")
    return out


def main(argv: Optional[List[str]] = None) -> Path:
    return run_eval_retrieval(parse_with(register, ["retrieval"] + list(argv or [])))
