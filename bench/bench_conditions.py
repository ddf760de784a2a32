#!/usr/bin/env python3
"""The held-out matrix: every held-out drive of bench/heldout.yaml under its conditions preset.

For each drive the protocol declares (town, preset, drive seed, GNSS seed, duration), the town is made
as `geoloc sim world` makes it (the protocol's size, survey gap and terrain) and the drive as
`geoloc sim drive --conditions PRESET --seed S --gnss-seed G` makes it; both are cached under --data
and made once. Each drive is replayed (``evaluation.replay``: raw GNSS, GNSS+odometry, geoloc) and its
metrics are saved beside it (``bench_conditions.json``), so an interrupted run resumes where it stopped
and a partial run reports what it has.

Printed and written (bench/results/conditions.json, bench/results/conditions.png):
- per drive and per preset (median over its drives): raw / GNSS+odometry / geoloc median and p95,
  absolute and in the map's own frame (the truth as the orthophoto shows it: the survey's
  misregistration, which no camera can see, taken out);
- truth inside the published 95 % ellipse: the share of PUBLISHED estimates (absolute frame);
- the camera: share of camera measurements the filter used, and the camera peak's lateral /
  longitudinal recall at 1/3/5 m and heading recall at 1/3 deg (map frame, before the filter);
- milliseconds per keyframe (the Localizer's compute per camera keyframe).

    python bench/bench_conditions.py                         # every held-out drive
    python bench/bench_conditions.py --presets night busy    # a subset
    python bench/bench_conditions.py --report-only           # table + picture from what is cached
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write  # noqa: E402

from geoloc_ros.metric.config import DEFAULT_FEATURES, FEATURES  # noqa: E402

RESULT = "bench_conditions.json"  # per drive, beside its bag
RESULT_VERSION = 1


def make_world(data: Path, town: int, protocol) -> Path:
    from geoloc_ros.tools import sim_world

    out = data / f"world_s{town}_{protocol.world_size_m:g}m"
    if not (out / "world.json").is_file():
        argv = ["--out", str(out), "--seed", str(town), "--size-m", f"{protocol.world_size_m:g}", "--force"]
        argv += [] if protocol.survey_gap else ["--no-survey-gap"]
        argv += [] if protocol.terrain else ["--no-terrain"]
        sim_world.main(argv)
    return out


@functools.lru_cache(maxsize=None)  # once per run: the code that was imported, not what is on disk later
def sim_fingerprint() -> str:
    """sha256 of the simulator's sources: a cached drive rendered by another simulator is made again
    (a stale cache would report numbers of a world the code no longer makes)."""
    import hashlib

    import geoloc_ros.sim as sim

    h = hashlib.sha256()
    for f in sorted(Path(sim.__file__).parent.glob("*.py")):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def code_fingerprint() -> str:
    """sha256 of the localizer's sources (everything but the simulator and the tools): a cached replay
    made by other code is replayed again."""
    import hashlib

    import geoloc_ros

    root = Path(geoloc_ros.__file__).parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root).as_posix()
        if not rel.startswith(("sim/", "tools/", "training/", "models/", "data/", "ros/")):
            h.update(rel.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def make_drive(data: Path, world_dir: Path, drive) -> Path:
    from geoloc_ros.tools import sim_drive

    out = data / drive.name
    stamp = out / "bench_sim.sha"
    fp = sim_fingerprint()
    if not ((out / "drive.json").is_file() and stamp.is_file() and stamp.read_text().strip() == fp):
        sim_drive.main(["--world", str(world_dir), "--out", str(out), "--seed", str(drive.drive_seed),
                        "--gnss-seed", str(drive.gnss_seed), "--conditions", drive.preset,
                        "--duration-s", f"{drive.duration_s:g}", "--force"])
        stamp.write_text(fp + "\n")
    return out


def run_drive(data: Path, drive, protocol, cfg, cfg_key: str, features: str, rerun: bool,
              checkpoint: Optional[Path] = None, features_key: Optional[str] = None) -> Dict:
    """Replay one held-out drive (cached by config and ``features_key``: the extractor, and the learned
    checkpoint's hash when one is given) and return its row."""
    features_key = features_key or features
    from geoloc_ros.evaluation.replay import replay_bag, world_frame
    from geoloc_ros.metric import open_matcher

    wd = make_world(data, drive.town, protocol)
    dd = make_drive(data, wd, drive)
    cache = dd / RESULT
    if cache.is_file() and not rerun and cache.stat().st_mtime > (dd / "bench_sim.sha").stat().st_mtime:
        saved = json.loads(cache.read_text())
        if saved.get("version") == RESULT_VERSION and saved.get("config_key") == cfg_key \
                and saved.get("features") == features_key and saved.get("code") == code_fingerprint():
            return saved["row"]
    t0 = time.perf_counter()
    # a train-metric run's checkpoint: its own ONNX folder (the run's onnx/, where train-metric exports;
    # the auto backend falls back to torch when that export is of another checkpoint)
    kw = {"checkpoint": checkpoint, "export_dir": checkpoint.parent / "onnx"} if checkpoint is not None else {}
    matcher = open_matcher(wd / "orthophoto.tif", cfg, frame=world_frame(wd), features=features, **kw)
    res = replay_bag(dd / "bag", None, None, cfg, matcher=matcher, world_dir=wd, progress=False)
    row = {"town": drive.town, "preset": drive.preset, "drive": drive.name, "drive_seed": drive.drive_seed,
           "gnss_seed": drive.gnss_seed, "duration_s": drive.duration_s, "cells": cells(res.metrics),
           "replay_s": time.perf_counter() - t0}
    cache.write_text(json.dumps({"version": RESULT_VERSION, "config_key": cfg_key, "features": features_key,
                                 "code": code_fingerprint(), "row": row}, indent=1) + "\n")
    return row


def _get(d, *keys):
    for k in keys:
        d = (d or {}).get(k) if isinstance(d, dict) else None
    return d


def cells(m: Dict) -> Dict[str, Optional[float]]:
    """The matrix's columns from a replay's metrics (None where the replay has no such number)."""
    out: Dict[str, Optional[float]] = {}
    for method, label in (("raw", "raw"), ("baseline", "gnss_odom"), ("corrected", "geoloc")):
        e = _get(m, "methods", method, "error_m") or {}
        out[f"{label}_median_m"], out[f"{label}_p95_m"] = e.get("median"), e.get("p95")
        mf = _get(m, "map_frame", "methods", method, "error_m") or {}
        out[f"{label}_map_median_m"], out[f"{label}_map_p95_m"] = mf.get("median"), mf.get("p95")
    out["inside95_pct"] = _get(m, "methods", "corrected", "covariance", "inside_95_pct")
    out["map_inside95_pct"] = _get(m, "map_frame", "methods", "corrected", "covariance", "inside_95_pct")
    cam = m.get("camera") or {}
    out["camera_used_pct"] = cam.get("used_pct")
    for r in ("1", "3", "5"):
        out[f"lat_r{r}m_pct"] = cam.get(f"lateral_within_{r}_pct")
        out[f"lon_r{r}m_pct"] = cam.get(f"longitudinal_within_{r}_pct")
    for d in ("1", "3"):
        out[f"yaw_r{d}deg_pct"] = cam.get(f"heading_within_{d}deg_pct")
    out["ms_per_keyframe"] = _get(m, "methods", "corrected", "compute_ms", "median")
    return {k: (None if v is None or (isinstance(v, float) and not np.isfinite(v)) else float(v))
            for k, v in out.items()}


def per_preset(rows: List[Dict]) -> List[Dict]:
    """Median over the drives of each preset (the issue's 'median over drives per cell')."""
    from geoloc_ros.sim.conditions import PRESETS

    out = []
    for name in PRESETS:
        rs = [r for r in rows if r["preset"] == name]
        if not rs:
            continue
        keys = rs[0]["cells"].keys()
        agg = {}
        for k in keys:
            v = [r["cells"][k] for r in rs if r["cells"].get(k) is not None]
            agg[k] = float(np.median(v)) if v else None
        out.append({"preset": name, "drives": len(rs), "cells": agg})
    return out


COLUMNS = [  # (label, key, digits)
    ("raw med/p95", ("raw_median_m", "raw_p95_m"), 2),
    ("gnss+odom med/p95", ("gnss_odom_median_m", "gnss_odom_p95_m"), 2),
    ("geoloc med/p95", ("geoloc_median_m", "geoloc_p95_m"), 2),
    ("gnss+odom map med", ("gnss_odom_map_median_m",), 2),
    ("geoloc map med/p95", ("geoloc_map_median_m", "geoloc_map_p95_m"), 2),
    ("in 95% (pub.)", ("inside95_pct",), 0),
    ("cam used %", ("camera_used_pct",), 0),
    ("cam lat 1/3/5m", ("lat_r1m_pct", "lat_r3m_pct", "lat_r5m_pct"), 0),
    ("cam lon 1/3/5m", ("lon_r1m_pct", "lon_r3m_pct", "lon_r5m_pct"), 0),
    ("cam yaw 1/3deg", ("yaw_r1deg_pct", "yaw_r3deg_pct"), 0),
    ("ms/kf", ("ms_per_keyframe",), 1),
]


def _fmt(c: Dict, keys, nd) -> str:
    return "/".join("-" if c.get(k) is None else f"{c[k]:.{nd}f}" for k in keys)


def markdown(rows: List[Dict], first: str) -> str:
    hdr = [first] + [c[0] for c in COLUMNS]
    lines = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for r in rows:
        name = r.get("preset") if first == "preset" else f"t{r['town']} {r['preset']}"
        if first == "preset":
            name = f"{name} ({r['drives']})"
        lines.append("| " + " | ".join([name] + [_fmt(r["cells"], k, nd) for _, k, nd in COLUMNS]) + " |")
    return "\n".join(lines)


def never_worse(c: Dict) -> Optional[bool]:
    """geoloc's median and p95 <= GNSS+odometry's (absolute), the never-worse rule of the next issue."""
    a, b = (c.get("geoloc_median_m"), c.get("geoloc_p95_m")), (c.get("gnss_odom_median_m"), c.get("gnss_odom_p95_m"))
    if None in a or None in b:
        return None
    return a[0] <= b[0] and a[1] <= b[1]


def heat_map(presets: List[Dict], path: Path, title: str) -> Path:
    """Conditions x metrics, each cell coloured by how good it is (green good, red bad) with its value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [  # label, key, "good" function -> 0 (bad) .. 1 (good)
        ("geoloc med\n/ gnss+odom", lambda c: _ratio(c, "geoloc_median_m", "gnss_odom_median_m"), "ratio"),
        ("geoloc p95\n/ gnss+odom", lambda c: _ratio(c, "geoloc_p95_m", "gnss_odom_p95_m"), "ratio"),
        ("geoloc med\n(m)", lambda c: c.get("geoloc_median_m"), "m"),
        ("map-frame\nmed (m)", lambda c: c.get("geoloc_map_median_m"), "m"),
        ("truth in\n95% (%)", lambda c: c.get("inside95_pct"), "pct95"),
        ("camera\nused (%)", lambda c: c.get("camera_used_pct"), "info"),
        ("cam lat\n<=1 m (%)", lambda c: c.get("lat_r1m_pct"), "pct"),
        ("cam lon\n<=3 m (%)", lambda c: c.get("lon_r3m_pct"), "pct"),
        ("cam yaw\n<=1 deg (%)", lambda c: c.get("yaw_r1deg_pct"), "pct"),
        ("ms per\nkeyframe", lambda c: c.get("ms_per_keyframe"), "ms"),
    ]
    names = [f"{p['preset']} ({p['drives']})" for p in presets]
    vals = np.full((len(presets), len(cols)), np.nan)
    good = np.full_like(vals, np.nan)
    for i, p in enumerate(presets):
        for j, (_, fn, kind) in enumerate(cols):
            v = fn(p["cells"])
            if v is None:
                continue
            vals[i, j] = v
            good[i, j] = _goodness(v, kind)
    fig, ax = plt.subplots(figsize=(1.25 * len(cols) + 2.5, 0.55 * len(presets) + 1.8))
    ax.imshow(np.ma.masked_invalid(good), cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for i in range(vals.shape[0]):
        for j in range(vals.shape[1]):
            v = vals[i, j]
            txt = "-" if not np.isfinite(v) else (f"{v:.2f}" if cols[j][2] in ("ratio", "m") else f"{v:.0f}"
                                                  if cols[j][2] != "ms" else f"{v:.0f}")
            ax.text(j, i, txt, ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(cols)), [c[0] for c in cols], fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=9)
    ax.xaxis.tick_top()
    ax.set_title(title, fontsize=10, pad=34)
    fig.text(0.01, 0.01, "median over the drives of each preset (count in brackets); green = good: ratio <= 1 "
             "(camera helps), error small, truth inside the 95 % ellipse near 95 %, recall high; camera used: no colour",
             fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _ratio(c, a, b):
    if c.get(a) is None or not c.get(b):
        return None
    return c[a] / c[b]


def _goodness(v: float, kind: str) -> float:
    if kind == "ratio":  # 0.3 or less: great; 1: break-even; 1.5+: bad
        return float(np.clip(1.0 - (v - 0.3) / 1.2, 0, 1))
    if kind == "m":
        return float(np.clip(1.0 - (v - 0.4) / 3.0, 0, 1))
    if kind == "pct95":  # honest: 90-98
        return float(np.clip(1.0 - abs(v - 95.0) / 30.0, 0, 1))
    if kind == "pct":
        return float(np.clip(v / 100.0, 0, 1))
    if kind == "ms":
        return float(np.clip(1.0 - (v - 40.0) / 110.0, 0, 1))
    return float("nan")  # "info": neither good nor bad (a camera used 100 % of the time may be a confident wrong one)


def write_docs_block(doc: Path, presets: List[Dict], rows: List[Dict], source: str, label: str = "current") -> None:
    """Replace the block between ``<!-- conditions:LABEL:begin -->`` and ``<!-- conditions:LABEL:end -->`` in
    ``doc`` with the tables (the docs quote the JSON, never numbers typed by hand)."""
    BEGIN, END = f"<!-- conditions:{label}:begin -->", f"<!-- conditions:{label}:end -->"
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc} has no '{BEGIN}' ... '{END}' block to fill")
    block = (f"{BEGIN}\n_Generated by {source}: median over the drives of each preset._\n\n"
             + markdown(presets, "preset") + "\n\n<details><summary>Per drive</summary>\n\n"
             + markdown(rows, "drive") + "\n\n</details>\n" + END)
    a, b = text.index(BEGIN), text.index(END) + len(END)
    doc.write_text(text[:a] + block + text[b:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data/bench_conditions"), help="cache of towns and drives")
    ap.add_argument("--protocol", type=Path, default=None, help="protocol file (default bench/heldout.yaml)")
    ap.add_argument("--set", dest="which", choices=("heldout", "validation"), default="heldout",
                    help="the protocol's held-out drives (the numbers we report) or its validation drives (where "
                         "defaults are chosen)")
    ap.add_argument("--presets", nargs="+", default=None, help="only these presets")
    ap.add_argument("--towns", type=int, nargs="+", default=None, help="only these held-out towns")
    ap.add_argument("--features", default=DEFAULT_FEATURES, choices=FEATURES)
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="with --features learned: this bevmatch checkpoint instead of the shipped one "
                         "(e.g. a geoloc train-metric run's best.pt; ONNX Runtime on the run's onnx/ folder when it "
                         "holds this checkpoint's export, else torch)")
    ap.add_argument("--config", type=Path, default=None, help="LocalizerConfig overrides (YAML)")
    ap.add_argument("--rerun", action="store_true", help="replay again even where a result is cached")
    ap.add_argument("--report-only", action="store_true", help="no new replays: report what is cached")
    ap.add_argument("--out", type=Path, default=None, help="JSON (default bench/results/conditions.json)")
    ap.add_argument("--docs", type=Path, nargs="*", default=[],
                    help="markdown files whose block between '<!-- conditions:LABEL:begin -->' and "
                         "'<!-- conditions:LABEL:end -->' is replaced with this run's tables")
    ap.add_argument("--docs-label", default="current", help="LABEL of that block")
    args = ap.parse_args(argv)
    features = args.features
    if args.checkpoint is not None:
        if args.features != "learned":
            ap.error("--checkpoint needs --features learned")
        import hashlib

        features = f"learned:{hashlib.sha256(args.checkpoint.read_bytes()).hexdigest()[:12]}"  # the cache key

    from geoloc_ros.evaluation.protocol import load_protocol
    from geoloc_ros.evaluation.replay import load_localizer_config

    protocol = load_protocol(args.protocol)
    sim_fingerprint(), code_fingerprint()  # the code this run imports
    cfg, overrides = load_localizer_config(args.config)
    cfg_key = json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str)
    pool = protocol.drives if args.which == "heldout" else protocol.validation_drives
    drives = [d for d in pool if (args.presets is None or d.preset in args.presets)
              and (args.towns is None or d.town in args.towns)]
    args.data.mkdir(parents=True, exist_ok=True)
    rows: List[Dict] = []
    missing = []
    t0 = time.perf_counter()
    from tqdm import tqdm

    for d in tqdm(drives, desc=f"{args.which} drives", unit="drive"):
        cache = args.data / d.name / RESULT
        if args.report_only:
            if cache.is_file():
                rows.append(json.loads(cache.read_text())["row"])
            else:
                missing.append(d.name)
            continue
        try:
            row = run_drive(args.data, d, protocol, cfg, cfg_key, args.features, args.rerun, args.checkpoint, features)
        except KeyboardInterrupt:
            print("interrupted: reporting what is done (rerun to resume)")
            break
        rows.append(row)
        tqdm.write(f"t{d.town} {d.preset:<13} " + _fmt(row["cells"], ("gnss_odom_median_m", "gnss_odom_p95_m"), 2)
                   + " gnss+odom, " + _fmt(row["cells"], ("geoloc_median_m", "geoloc_p95_m"), 2) + " geoloc")
    done = {r["drive"] for r in rows}
    missing += [d.name for d in drives if d.name not in done and d.name not in missing]
    presets = per_preset(rows)
    print("\nper held-out drive:\n" + markdown(rows, "drive"))
    print("\nper preset (median over its drives):\n" + markdown(presets, "preset"))
    worse = [p["preset"] for p in presets if never_worse(p["cells"]) is False]
    name = "conditions" if args.which == "heldout" else "conditions_validation"
    out = write(name, rows, args.out, presets=presets, protocol=str(protocol.path), features=features,
                checkpoint=str(args.checkpoint) if args.checkpoint else None, config_overrides=overrides,
                missing=missing, seconds=time.perf_counter() - t0)
    for doc in args.docs:
        which = "held-out" if args.which == "heldout" else args.which
        write_docs_block(doc, presets, rows, f"`python bench/bench_conditions.py` ({which} drives, "
                         f"{features} features{', config ' + str(args.config) if args.config else ''})",
                         args.docs_label)
    png = heat_map(presets, (args.out or RESULTS / f"{name}.json").with_suffix(".png"),
                   f"{args.which} matrix ({len(rows)} of {len(drives)} drives, {features} features)")
    print(f"bench_conditions: {len(rows)} of {len(drives)} {args.which} drives"
          + (f" ({len(missing)} missing: rerun to resume)" if missing else "")
          + f"; geoloc worse than GNSS+odometry (median or p95) in {len(worse)} of {len(presets)} presets"
          + (f" ({', '.join(worse)})" if worse else "") + f"; {time.perf_counter() - t0:.0f} s -> {out}, {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
