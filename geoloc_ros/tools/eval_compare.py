"""``geoloc eval compare``: side-by-side table of replay runs (from their metrics.json)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional

from .common import parse_with


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "compare", help="side-by-side table of `geoloc eval replay` runs",
        description="Read the metrics.json of each run directory and print one column per run: errors of the "
                    "corrected output, the baseline and the raw GNSS, improvement ratios, covariance honesty, "
                    "availability, recall@K, compute and speed. Optionally write the table as markdown.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="run directories (made by `geoloc eval replay`)")
    p.add_argument("--out", type=Path, default=None, help="also write the table as markdown to this file")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run_eval_compare)
    return p


def _short_names(runs: List[Path]) -> List[str]:
    names = [r.resolve().name for r in runs]
    if len(set(names)) < len(names):
        names = [str(r) for r in runs]
    return names


def run_eval_compare(args: argparse.Namespace) -> Path:
    import os

    from ..core.outputs import check_output_file
    from ..evaluation.replay import load_run
    from ..evaluation.report import compare_table, md_table, text_table

    runs = [Path(r) for r in args.runs]
    if args.out is not None:
        check_output_file(args.out, args.force)
    docs = [load_run(r) for r in runs]
    names = _short_names(runs)
    cols = [f"run {i + 1}" for i in range(len(runs))]
    rows = compare_table(docs, names)
    print("\n".join(f"run {i + 1}: {n}" for i, n in enumerate(names)))
    print(text_table(["metric"] + cols, rows))
    if args.out is None:
        return runs[0]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.write_text("# Replay runs compared\n\n" + "\n".join(f"- run {i + 1}: `{r}`" for i, r in enumerate(runs))
                   + "\n\n" + md_table(["metric"] + cols, rows) + "\n")
    tmp.replace(out)
    print(f"eval compare: {len(runs)} runs; table written to {out}")
    return out


def main(argv: Optional[List[str]] = None) -> Path:
    return run_eval_compare(parse_with(register, ["compare"] + list(argv or [])))
