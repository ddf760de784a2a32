#!/usr/bin/env python3
"""Choose the filter's GNSS model (``gnss_bias_tau_s``, ``gnss_bias_scale``) on the VALIDATION drives.

The drives are the protocol's ``validation_drives`` (bench/heldout.yaml: validation towns, every GNSS
quality among the presets), made and cached like bench/bench_conditions.py makes the held-out ones. Every
(tau, scale) pair replays every drive; the choice is the pair with the smallest median-over-drives p95
error of the published fix among those whose pooled truth-inside-95 %-ellipse share is >= --target
(honest first, then sharp). A held-out town is refused (evaluation.protocol), so nothing here can be
tuned on the numbers we report. Prints the grid, writes bench/results/tune_gnss.json and a YAML of the
chosen overrides.

    python bench/tune_gnss.py
    python bench/tune_gnss.py --taus 10 20 40 --scales 1.0 1.2 1.5
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write  # noqa: E402
from bench_conditions import cells, make_drive, make_world  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data/bench_conditions"))
    ap.add_argument("--protocol", type=Path, default=None)
    ap.add_argument("--taus", type=float, nargs="+", default=[10.0, 20.0, 40.0])
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.2, 1.6])
    ap.add_argument("--target", type=float, default=90.0, help="pooled truth-inside-95%% share required")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    from tqdm import tqdm

    from geoloc_ros.evaluation.protocol import load_protocol, refuse_heldout
    from geoloc_ros.evaluation.replay import replay_bag, world_frame
    from geoloc_ros.metric import open_matcher
    from geoloc_ros.pipeline import LocalizerConfig

    protocol = load_protocol(args.protocol)
    drives = list(protocol.validation_drives)
    refuse_heldout([(d.name, d.town) for d in drives], "bench/tune_gnss.py", protocol=protocol)
    t0 = time.perf_counter()
    made = [(d, make_world(args.data, d.town, protocol)) for d in drives]
    made = [(d, wd, make_drive(args.data, wd, d)) for d, wd in made]
    grid = []
    for tau in args.taus:
        for scale in args.scales:
            cfg = dataclasses.replace(LocalizerConfig(), gnss_bias_tau_s=float(tau), gnss_bias_scale=float(scale))
            per = []
            for d, wd, dd in tqdm(made, desc=f"tau {tau:g} scale {scale:g}", leave=False):
                m = open_matcher(wd / "orthophoto.tif", cfg, frame=world_frame(wd))
                per.append(cells(replay_bag(dd / "bag", None, None, cfg, matcher=m, world_dir=wd,
                                            progress=False).metrics))
            inside = [c["inside95_pct"] for c in per if c.get("inside95_pct") is not None]
            row = {"gnss_bias_tau_s": tau, "gnss_bias_scale": scale,
                   "inside95_pct": float(np.mean(inside)) if inside else None,
                   "p95_m": float(np.median([c["geoloc_p95_m"] for c in per])),
                   "median_m": float(np.median([c["geoloc_median_m"] for c in per])),
                   "baseline_p95_m": float(np.median([c["gnss_odom_p95_m"] for c in per])),
                   "per_drive": per}
            grid.append(row)
            print(f"tau {tau:>5g} s  scale {scale:>4g}: geoloc median {row['median_m']:.2f} m, p95 {row['p95_m']:.2f} m "
                  f"(GNSS+odometry p95 {row['baseline_p95_m']:.2f} m), truth in 95% {row['inside95_pct']:.0f}%",
                  flush=True)
    ok = [r for r in grid if (r["inside95_pct"] or 0) >= args.target]
    best = min(ok or grid, key=lambda r: r["p95_m"] if ok else -(r["inside95_pct"] or 0))
    out = write("tune_gnss", grid, args.out, drives=[d.name for d in drives], target=args.target,
                chosen={"gnss_bias_tau_s": best["gnss_bias_tau_s"], "gnss_bias_scale": best["gnss_bias_scale"]},
                seconds=time.perf_counter() - t0)
    yml = (args.out or RESULTS / "tune_gnss.json").with_suffix(".yaml")
    yml.write_text(f"# bench/tune_gnss.py on validation drives {[d.name for d in drives]}\n"
                   f"gnss_bias_tau_s: {best['gnss_bias_tau_s']:g}\ngnss_bias_scale: {best['gnss_bias_scale']:g}\n")
    print(f"tune_gnss: gnss_bias_tau_s {best['gnss_bias_tau_s']:g}, gnss_bias_scale {best['gnss_bias_scale']:g} "
          f"({'sharpest meeting' if ok else 'none met'} {args.target:g}% inside) over {len(drives)} validation drives; "
          f"{time.perf_counter() - t0:.0f} s -> {out}, {yml}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
