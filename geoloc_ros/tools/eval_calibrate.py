"""``geoloc eval calibrate``: choose the metric volume's temperature on validation drives.

The camera likelihood is ``exp(cosine score / T)``. Too small a T makes the filter over-confident
(the truth falls outside the published ellipse), too large a T throws the camera's precision
away. Each candidate T replays every validation bag through the Localizer; the chosen T is the
smallest whose truth-inside-95 %-ellipse share, pooled over the bags, reaches ``--target``
(default 93 %): the sharpest honest one. The truth is taken as the map shows it where the world
records a misregistration, and the orthophoto's registration sigma is left out of the covariance
for this (``map_registration_sigma_m`` is a property of the orthophoto, not of the camera). Writes a YAML of
LocalizerConfig overrides to use with
``geoloc eval replay --config`` or the node's ``localizer.volume_temperature``. Validation drives
must come from towns that are not used for the final (held-out) numbers: a drive in a held-out town of
the evaluation protocol (bench/heldout.yaml) is refused.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import List, Optional

from ..metric.config import DEFAULT_FEATURES, FEATURES
from .common import parse_with, positive


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "calibrate", help="choose the metric matching temperature on validation drives (honest covariance)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bags", type=Path, nargs="+", help="validation drives (bag folders or drive folders)")
    p.add_argument("--temperatures", type=float, nargs="+", default=[0.01, 0.015, 0.02, 0.03, 0.05, 0.08],
                   help="candidate volume temperatures")
    p.add_argument("--target", type=positive(float, 0, 100, "--target"), default=93.0,
                   help="pooled percent of time the truth must lie inside the published 95%% ellipse")
    p.add_argument("--config", type=Path, default=None, help="other LocalizerConfig overrides (YAML)")
    p.add_argument("--features", default=DEFAULT_FEATURES, choices=FEATURES)
    p.add_argument("--out", type=Path, default=Path("runs/calibration.yaml"), help="YAML written with the choice")
    p.add_argument("--force", action="store_true", help="replace --out")
    p.set_defaults(func=run_eval_calibrate)
    return p


def run_eval_calibrate(args: argparse.Namespace) -> Path:
    import yaml

    from ..core.bagpath import resolve_bag
    from ..core.outputs import check_output_file
    from ..evaluation.replay import find_world_dir, load_localizer_config, replay_bag, world_frame
    from ..runtime import load_measurements

    check_output_file(args.out, args.force)
    from ..core.errors import InvalidArgument
    from ..evaluation.protocol import refuse_heldout, world_seed

    worlds = {}
    for b in args.bags:
        wd = find_world_dir(resolve_bag(b))
        if wd is None:
            raise InvalidArgument(f"{b}: no world orthophoto beside the drive (calibration needs the drive's world)")
        worlds[b] = wd
    refuse_heldout([(str(b), world_seed(wd)) for b, wd in worlds.items()], "geoloc eval calibrate")
    base, overrides = load_localizer_config(args.config)
    t0 = time.perf_counter()
    rows = []
    for tau in sorted(args.temperatures):
        # the camera's own consistency: against the truth as the map shows it (a synthetic world's
        # recorded misregistration), without the orthophoto's registration sigma in the covariance
        cfg = dataclasses.replace(base, volume_temperature=float(tau), map_registration_sigma_m=0.0)
        inside, n, med = 0.0, 0, []
        for b in args.bags:
            bag, wd = resolve_bag(b), worlds[b]
            m = load_measurements(cfg, orthophoto=wd / "orthophoto.tif", frame=world_frame(wd), features=args.features)
            res = replay_bag(bag, None, None, cfg, matcher=m.matcher, progress=False)
            c = res.metrics["methods"]["corrected"]
            mf = ((res.metrics.get("map_frame") or {}).get("methods") or {}).get("corrected")
            cov = (mf or c).get("covariance") or {}
            k = int(cov.get("n") or 0)
            if k:
                inside += float(cov["inside_95_pct"]) * k / 100.0
                n += k
            med.append((c.get("error_m") or {}).get("median"))
        pct = 100.0 * inside / max(n, 1)
        rows.append({"temperature": tau, "inside_95_pct": pct, "median_error_m": [m_ for m_ in med]})
        print(f"T={tau:g}: truth inside 95% ellipse {pct:.1f}% (n={n}); median error "
              + ", ".join(f"{m_:.2f}" if m_ is not None else "-" for m_ in med) + " m", flush=True)
    ok = [r for r in rows if r["inside_95_pct"] >= args.target]
    best = ok[0] if ok else max(rows, key=lambda r: r["inside_95_pct"])
    doc = dict(overrides)
    doc["volume_temperature"] = float(best["temperature"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("# geoloc eval calibrate: " + json.dumps(rows) + "\n" + yaml.safe_dump(doc, sort_keys=True))
    why = "the sharpest meeting the target" if ok else f"none reached {args.target:g}%: the most honest"
    print(f"eval calibrate: volume_temperature {best['temperature']:g} ({why}: truth inside the 95% ellipse "
          f"{best['inside_95_pct']:.1f}%) -> {args.out} ({time.perf_counter() - t0:.0f} s)")
    return args.out


def main(argv: Optional[List[str]] = None) -> Path:
    return run_eval_calibrate(parse_with(register, ["calibrate"] + list(argv or [])))
