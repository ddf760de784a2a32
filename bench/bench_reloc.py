#!/usr/bin/env python3
"""Lost and found: relocalisation without GNSS on the protocol's towns (issue 26).

For each town (made as bench_conditions.py makes it) a tile index of the WHOLE town is built once
(every road of roads.geojson as a corridor, ``--spacing`` m, the road's heading bins; the shipped
model on the torch backend) and cached under --data. Each drive of the town (bench_conditions'
drives, cached alike) is replayed through the Localizer with both the orthophoto (metric matching)
and that index (retrieval proposes, metric matching verifies: geoloc_ros/metric/verify.py), with the
GNSS edited by the replay (``evaluation.replay.GnssEdit``; the recorded bag is never changed):

- ``cold``: no GNSS fix for the first 60 s (a car leaving an underground car park);
- ``kidnap``: at 30 s the fixes jump 200 m (direction from the drive seed) for 15 s (long enough to
  re-anchor a filter that nothing holds), then no GNSS to 90 s: 60 s without a true fix.

Reported per run and summarised: first fix within 15 s of driving (the truth's first motion), the
first fix's error, false fixes (published non-lost estimates > 10 m from the truth while GNSS is
edited), time back within 2 m after the kidnap; retrieval R@1 / R@10 of the shipped model on the
drive's keyframes (every 5 m) for 1- and 7-frame sequences against the whole-town index (a hit: a
top-K tile within ``--recall-m`` of the truth). Errors are absolute (the truth) and in the map's own
frame (the truth as the misregistered orthophoto shows it, which no camera can see past).

    python bench/bench_reloc.py --quick                 # one drive per held-out town
    python bench/bench_reloc.py --set validation --quick   # where thresholds are chosen
    python bench/bench_reloc.py --towns 21 --quick --demo bench/results/reloc_demo.png
    python bench/bench_reloc.py --quick --nth 1         # each held-out town's second drive

Writes bench/results/reloc.json (reloc_validation.json for --set validation).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import sys
import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write  # noqa: E402
from bench_conditions import make_drive, make_world  # noqa: E402

COLD_S = 60.0
KIDNAP = (30.0, 45.0, 90.0, 200.0)  # jump start, jump end (= outage start), outage end, jump distance (m)
FIRST_FIX_S = 15.0
FALSE_M = 10.0
BACK_M = 2.0


# ------------------------------------------------------------------ the town's index
@functools.lru_cache(maxsize=1)
def load_shipped_fingerprint() -> str:
    from geoloc_ros.inference import load_encoder

    return load_encoder("seqgeo_lite", backend="torch").identity["fingerprint"]


def town_index(data: Path, town: int, world_dir: Path, encoder, spacing: float, width: float) -> Dict:
    """The whole town's tile index (built once; cached): path, tiles, build seconds, bytes on disk."""
    from geoloc_ros.index import build_index
    from geoloc_ros.index.tiling import corridor_area
    from geoloc_ros.sim.world import read_world_manifest

    fp = encoder.identity["fingerprint"]
    shipped = load_shipped_fingerprint()
    out = data / (f"index_s{town}_sp{spacing:g}_w{width:g}" + ("" if fp == shipped else f"_{fp[:12]}"))
    info = out.parent / f"{out.name}.json"
    if not (out / "manifest.json").is_file() or not info.is_file():
        meta = read_world_manifest(world_dir)
        t0 = time.perf_counter()
        build_index(world_dir / "orthophoto.tif", encoder, out, spacing_m=spacing, heading_bins=8,
                    area=corridor_area(world_dir / "roads.geojson", width), headings="road",
                    datum=(float(meta["origin_lat"]), float(meta["origin_lon"])), progress=True, force=True,
                    command="bench/bench_reloc.py")
        m = json.loads((out / "manifest.json").read_text())
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        info.write_text(json.dumps({"tiles": int(m["counts"]["tiles"]), "build_s": time.perf_counter() - t0,
                                    "disk_mb": size / 1e6, "global_index": m["global_index"].get("type")}))
    return {"path": out, **json.loads(info.read_text())}


# ------------------------------------------------------------------ one run
def _errors(log, truth, t0: float):
    """Published estimates: t (from the drive start), status, absolute error."""
    t = np.asarray(log.t, float)
    x, y = np.asarray(log.x, float), np.asarray(log.y, float)
    tx, ty = np.interp(t, truth.t, truth.x), np.interp(t, truth.t, truth.y)
    return t - t0, np.asarray(log.status), np.hypot(x - tx, y - ty)


def replay_case(dd: Path, wd: Path, idx, encoder, cfg, case: str, seed: int, start_s: float = 0.0):
    from geoloc_ros.evaluation.replay import GnssEdit, replay_bag
    from geoloc_ros.metric import open_matcher

    if case == "cold":
        edit = GnssEdit(remove=((0.0, COLD_S),))
    else:
        a, b, c, d = KIDNAP
        ang = np.random.default_rng(seed).uniform(0, 2 * math.pi)
        edit = GnssEdit(shift=((a, b, d * math.cos(ang), d * math.sin(ang)),), remove=((b, c),))
    matcher = open_matcher(wd / "orthophoto.tif", cfg, frame=idx.frame)
    return replay_bag(dd / "bag", encoder, idx, cfg, matcher=matcher, world_dir=wd, progress=False, gnss_edit=edit,
                      start_s=start_s)


def score_cold(res) -> Dict:
    log = res.methods["corrected"]
    t0 = res.t_start
    t, status, err = _errors(log, res.truth, t0)
    tm, _, err_map = _errors(log, res.truth_map or res.truth, t0)
    moving = _first_motion(res.truth, t0) - t0
    fixed = (status != "lost") & (t < COLD_S)
    first = int(np.argmax(fixed)) if fixed.any() else None
    st = res.localizer_stats["corrected"].get("relocalisation", {})
    return {"first_fix_s": None if first is None else round(float(t[first] - moving), 2),
            "first_fix_err_m": None if first is None else round(float(err[first]), 2),
            "first_fix_err_map_m": None if first is None else round(float(err_map[first]), 2),
            "false_fixes": int(np.sum(fixed & (err > FALSE_M))), "false_relocs": false_relocalisations(res),
            "median_err_no_gnss_m": round(float(np.median(err[fixed])), 2) if fixed.any() else None,
            "in95_no_gnss_pct": _in95(log, res.truth, fixed),
            "first_spread_m": next((round(float(r["spread_m"]), 2) for r in res.relocalisations
                                    if r["state"] == "verified" and r.get("spread_m") is not None), None),
            "verdicts": [r["reason"] for r in res.relocalisations if r["state"] == "verified"],
            "attempted": st.get("attempted"), "verified": st.get("verified"), "rejected": st.get("rejected"),
            "moving_at_s": round(float(moving), 2)}


def _in95(log, truth, use) -> Optional[float]:
    """Share (%) of the published estimates ``use`` whose 95 % ellipse holds the truth (honesty)."""
    from geoloc_ros.evaluation.metrics import covariance_honesty

    if not use.any():
        return None
    t = np.asarray(log.t, float)[use]
    dx = np.asarray(log.x, float)[use] - np.interp(t, truth.t, truth.x)
    dy = np.asarray(log.y, float)[use] - np.interp(t, truth.t, truth.y)
    pct = covariance_honesty(dx, dy, np.asarray(log.cov, float)[use][:, :2, :2])["inside_95_pct"]
    return None if pct is None else round(pct, 1)


def score_kidnap(res) -> Dict:
    log = res.methods["corrected"]
    a, b, c, _ = KIDNAP
    t, status, err = _errors(log, res.truth, res.t_start)
    _, _, err_map = _errors(log, res.truth_map or res.truth, res.t_start)
    span = (t >= a) & (t < c)
    fixed = span & (status != "lost")
    out = {"max_err_m": round(float(err[span].max()), 1) if span.any() else None,
           "false_fixes": int(np.sum(fixed & (err > FALSE_M))), "false_relocs": false_relocalisations(res),
           "in95_pct": _in95(log, res.truth, fixed),
           "relocalisations": res.localizer_stats["corrected"].get("relocalisations"),
           "gnss_reanchored": res.localizer_stats["corrected"].get("gnss_reanchored"),
           "verified": res.localizer_stats["corrected"].get("relocalisation", {}).get("verified")}
    for name, e in (("back_s", err), ("back_map_s", err_map)):
        # back within 2 m: from the jump, the first time after which every published estimate of the
        # span stays within 2 m (None: never)
        bad = span & ((e > BACK_M) | (status == "lost"))
        if not bad.any():
            out[name] = 0.0
        else:
            last_bad = float(t[bad].max())
            later = span & (t > last_bad)
            out[name] = round(last_bad - a, 2) if later.any() else None
    return out


def false_relocalisations(res) -> int:
    """Verified relocalisations (accepted fixes) farther than FALSE_M from the truth at that time."""
    n = 0
    for r in res.relocalisations:
        if r["state"] == "verified":
            tx, ty = np.interp(r["t"], res.truth.t, res.truth.x), np.interp(r["t"], res.truth.t, res.truth.y)
            n += math.hypot(r["pose"][0] - tx, r["pose"][1] - ty) > FALSE_M
    return n


def _first_motion(truth, after: float = -np.inf) -> float:
    v = np.hypot(np.diff(truth.x), np.diff(truth.y)) / np.maximum(np.diff(truth.t), 1e-6)
    moving = (v > 1.0) & (truth.t[:-1] >= after)
    i = int(np.argmax(moving)) if moving.any() else 0
    return float(truth.t[i])


# ------------------------------------------------------------------ retrieval recall
def recall(dd: Path, idx, encoder, radius_m: float, lengths=(1, 7), step_m: float = 5.0, vote_keyframes: int = 5,
           vote_k: int = 100, vote_temperature: float = 0.03) -> Dict:
    """R@1 / R@10 of global search for sequences of ``lengths`` keyframes (every ``step_m`` of truth),
    and R@10 / R@30 of the places the Localizer proposes (``metric.verify.vote_places``: the last
    ``vote_keyframes`` 7-frame descriptors' top ``vote_k`` tiles moved with the bag's odometry)."""
    from geoloc_ros.bag import read_bag
    from geoloc_ros.core.geo import heading_deg_to_yaw
    from geoloc_ros.core.images import msg_to_rgb
    from geoloc_ros.core.msgconv import header_time, quat_to_yaw
    from geoloc_ros.metric.verify import vote_places
    from geoloc_ros.sim.bag import read_truth_csv

    tr = read_truth_csv(dd / "truth.csv")
    t0 = tr["stamp_ns"][0] * 1e-9 - tr["t"][0]
    tx, ty = idx.frame.from_latlon(tr["lat"], tr["lon"])
    odom = []
    for _, _, msg in read_bag(dd / "bag", ["/odom"]):
        p = msg.pose.pose.position
        odom.append((header_time(msg), p.x, p.y, quat_to_yaw(msg.pose.pose.orientation)))
    odom = np.asarray(odom)
    feats, pos, opose, last = [], [], [], None
    for _, _, msg in read_bag(dd / "bag", ["/camera/image_raw"]):
        t = header_time(msg) - t0
        x, y = float(np.interp(t, tr["t"], tx)), float(np.interp(t, tr["t"], ty))
        if last is not None and math.hypot(x - last[0], y - last[1]) < step_m:
            continue
        last = (x, y)
        feats.append(encoder.frame_features(msg_to_rgb(msg)[None])[0])
        pos.append((x, y))
        opose.append(tuple(odom[int(np.argmin(np.abs(odom[:, 0] - header_time(msg)))), 1:]))
    feats, pos = np.asarray(feats), np.asarray(pos)
    out = {"queries": len(pos)}
    for T in lengths:
        hits = {1: 0, 10: 0}
        n = 0
        for i in range(T - 1, len(feats)):
            d = encoder.fuse(feats[i - T + 1:i + 1][None])[0]
            r = idx.search(d, k=10)
            dist = np.hypot(np.asarray(r.x[0]) - pos[i, 0], np.asarray(r.y[0]) - pos[i, 1])
            for k in hits:
                hits[k] += bool(np.any(dist[:k] <= radius_m))
            n += 1
        out[f"T{T}"] = {"R@1": round(100.0 * hits[1] / max(n, 1), 1), "R@10": round(100.0 * hits[10] / max(n, 1), 1),
                        "n": n}
    # the voted places (what the Localizer proposes to the verifier), T = the longest length
    T = max(lengths)
    descs = np.stack([encoder.fuse(feats[max(0, i - T + 1):i + 1][None])[0] for i in range(len(feats))])
    r = idx.search(descs, k=vote_k)
    half = math.pi / float(idx.heading_bins)
    hits, n = {10: 0, 30: 0}, 0
    for i in range(T - 1 + vote_keyframes - 1, len(feats)):
        searches = []
        for m in range(i - vote_keyframes + 1, i + 1):
            ok = np.asarray(r.ids[m]) >= 0
            searches.append((np.stack([r.x[m][ok], r.y[m][ok]], axis=1), heading_deg_to_yaw(r.heading_deg[m][ok]),
                             r.scores[m][ok], opose[m]))
        xy, _, _ = vote_places(searches, opose[i], half, max(hits), vote_temperature)
        dist = np.hypot(xy[:, 0] - pos[i, 0], xy[:, 1] - pos[i, 1])
        for k in hits:
            hits[k] += bool(np.any(dist[:k] <= radius_m))
        n += 1
    out["voted"] = {f"R@{k}": round(100.0 * v / max(n, 1), 1) for k, v in hits.items()}
    out["voted"]["n"] = n
    return out


# ------------------------------------------------------------------ the picture
def demo_picture(res, idx, path: Path) -> Optional[Path]:
    """The first verified relocalisation: retrieval's candidates on the orthophoto, the places metric
    matching scored, the verified winner, its odometry path as the road test placed it over the
    index's tile centres, the truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geoloc_ros.metric.aerial import AerialMap  # noqa: F401  (the matcher's map is in res.aerial)

    logs = res.relocalisations
    win = next((r for r in logs if r["state"] == "verified"), None)
    if win is None or res.aerial is None:
        return None
    prop = next((r for r in reversed(logs) if r["t"] <= win["t"] and r["candidates"] is not None), None)
    cand = prop["candidates"] if prop is not None else np.zeros((0, 2))
    places = np.asarray([p[:2] + (p[3],) for p in (prop or win)["places"]], float).reshape(-1, 3)
    tx, ty = np.interp(win["t"], res.truth.t, res.truth.x), np.interp(win["t"], res.truth.t, res.truth.y)
    road = np.asarray(win["road_path"], float).reshape(-1, 2) if win.get("road_path") is not None else np.zeros((0, 2))
    pts = np.vstack([cand.reshape(-1, 2), places[:, :2], road, [[tx, ty]], [win["pose"][:2]]])
    lo, hi = pts.min(axis=0) - 40, pts.max(axis=0) + 40
    half = float(max(hi - lo) / 2)
    cx, cy = (lo + hi) / 2
    w = res.aerial.window(float(cx), float(cy), int(math.ceil(half / res.aerial.res_m)))
    ext = (w.x_left, w.x_left + w.rgb.shape[1] * res.aerial.res_m, w.y_top - w.rgb.shape[0] * res.aerial.res_m, w.y_top)
    fig, ax = plt.subplots(figsize=(8, 8))
    ax.imshow(np.clip(w.rgb, 0, 255).astype(np.uint8), extent=ext)
    meta = idx.tile_metadata()
    inside = (meta["x"] >= ext[0]) & (meta["x"] <= ext[1]) & (meta["y"] >= ext[2]) & (meta["y"] <= ext[3])
    ax.scatter(meta["x"][inside], meta["y"][inside], s=3, c="white", alpha=0.5, label="index tile centres (the roads)")
    if len(road):
        ax.plot(road[:, 0], road[:, 1], "-", color="orange", lw=1.2,
                label=f"odometry path placed by the winner ({len(road) * 2} m, road test)")
    if len(cand):
        ax.scatter(cand[:, 0], cand[:, 1], s=40, facecolors="none", edgecolors="yellow", linewidths=1.2,
                   label=f"retrieval top-{len(cand)} tiles")
    for x, y, s in places:
        ax.annotate(f"{s:.2f}", (x, y), color="cyan", fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.scatter(places[:, 0], places[:, 1], s=30, c="cyan", marker="s", label="places scored by metric matching")
    if win.get("track"):
        tk = np.asarray(win["track"], float)
        ax.plot(tk[:, 0], tk[:, 1], "-", color="red", lw=1.5, label="winner's track (peaks, keyframe by keyframe)")
    t0 = prop["t"] if prop is not None else win["t"]
    sel = (res.truth.t >= t0) & (res.truth.t <= win["t"])
    ax.plot(res.truth.x[sel], res.truth.y[sel], "--", color="lime", lw=1.2, label="truth since the proposal")
    ax.scatter([win["pose"][0]], [win["pose"][1]], s=160, c="red", marker="*", label="verified winner")
    ax.scatter([tx], [ty], s=80, facecolors="none", edgecolors="lime", linewidths=2, label="truth")
    ax.set_title(f"t={win['t'] - res.t_start:.1f} s: {win['reason']}", fontsize=9)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_xlabel("x (m, map frame)")
    ax.set_ylabel("y (m)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# ------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data/bench_reloc"), help="cache of towns, drives, indexes")
    ap.add_argument("--set", dest="which", choices=("heldout", "validation"), default="heldout")
    ap.add_argument("--towns", type=int, nargs="+", default=None)
    ap.add_argument("--quick", action="store_true", help="one drive per town (the first of the protocol's)")
    ap.add_argument("--nth", type=int, default=0,
                    help="with --quick: the town's n-th drive of the protocol instead of its first (fresh drives for "
                         "a new verifier: the first ones were seen before)")
    ap.add_argument("--cases", nargs="*", default=["cold", "kidnap"], choices=("cold", "kidnap"),
                    help="replayed cases (none: only the retrieval recall)")
    ap.add_argument("--starts", type=float, nargs="+", default=[0.0],
                    help="cold starts this many seconds into each drive (the node started then, no GNSS for 60 s)")
    ap.add_argument("--spacing", type=float, default=10.0, help="index tile spacing (m)")
    ap.add_argument("--width", type=float, default=6.0, help="road corridor half-width of the index (m)")
    ap.add_argument("--recall-m", type=float, default=15.0, help="a retrieval hit: a tile within this of the truth (m)")
    ap.add_argument("--no-recall", action="store_true")
    ap.add_argument("--model", default="seqgeo_lite", help="retrieval model (name, checkpoint or export folder)")
    ap.add_argument("--config", type=Path, default=None, help="LocalizerConfig overrides (YAML)")
    ap.add_argument("--demo", type=Path, default=None, help="PNG of the first verified relocalisation")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    from tqdm import tqdm

    from geoloc_ros.evaluation.protocol import load_protocol
    from geoloc_ros.evaluation.replay import load_localizer_config
    from geoloc_ros.index import TileIndex
    from geoloc_ros.inference import load_encoder

    t_start = time.perf_counter()
    protocol = load_protocol()
    cfg, overrides = load_localizer_config(args.config)
    if "reloc_verify" not in overrides:  # the bench measures the verifier (off by default in the Localizer)
        cfg = dataclasses.replace(cfg, reloc_verify=True)
    pool = protocol.drives if args.which == "heldout" else protocol.validation_drives
    towns = args.towns or sorted({d.town for d in pool})
    drives = []
    for town in towns:
        mine = [d for d in pool if d.town == town]
        drives += mine[args.nth:args.nth + 1] if args.quick else mine
    args.data.mkdir(parents=True, exist_ok=True)
    encoder = load_encoder(args.model, backend="torch")
    rows, indexes, recalls = [], {}, []
    for d in tqdm(drives, desc=f"{args.which} drives", unit="drive"):
        wd = make_world(args.data, d.town, protocol)
        if d.town not in indexes:
            indexes[d.town] = town_index(args.data, d.town, wd, encoder, args.spacing, args.width)
        info = indexes[d.town]
        idx = TileIndex.open(info["path"], expect_model=encoder.identity)
        dd = make_drive(args.data, wd, d)
        runs = [(c, s) for c in args.cases for s in (args.starts if c == "cold" else [0.0])]
        for case, start in runs:
            t0 = time.perf_counter()
            res = replay_case(dd, wd, idx, encoder, cfg, case, d.drive_seed, start)
            row = {"town": d.town, "preset": d.preset, "drive": d.name, "case": case, "start_s": start,
                   "tiles": info["tiles"],
                   **(score_cold(res) if case == "cold" else score_kidnap(res)),
                   "replay_s": round(time.perf_counter() - t0, 1)}
            rows.append(row)
            tqdm.write(json.dumps(row))
            if args.demo is not None and case == "cold" and not (args.demo.is_file() and args.demo.stat().st_mtime
                                                                 > t_start):
                p = demo_picture(res, idx, args.demo)
                if p:
                    tqdm.write(f"demo picture: {p}")
        if not args.no_recall:
            r = recall(dd, idx, encoder, args.recall_m, vote_keyframes=cfg.reloc_vote_keyframes, vote_k=cfg.reloc_vote_k,
                       vote_temperature=cfg.reloc_vote_temperature)
            recalls.append({"drive": d.name, "tiles": info["tiles"], **r})
            tqdm.write(json.dumps(recalls[-1]))
        st = idx.stats()
        indexes[d.town]["global_memory_mb"] = st["global_memory_mb"]
    cold = [r for r in rows if r["case"] == "cold"]
    kid = [r for r in rows if r["case"] == "kidnap"]
    summary = {}
    if cold:
        ok = [r for r in cold if r["first_fix_s"] is not None and r["first_fix_s"] <= FIRST_FIX_S]
        errs = [r["first_fix_err_m"] for r in cold if r["first_fix_err_m"] is not None]
        summary["cold"] = {"runs": len(cold), "first_fix_within_15s_pct": round(100.0 * len(ok) / len(cold), 1),
                           "first_fix_err_median_m": float(np.median(errs)) if errs else None,
                           "first_fix_within_2m_pct": round(100.0 * sum(e <= BACK_M for e in errs) / len(cold), 1),
                           "false_fixes": int(sum(r["false_fixes"] for r in cold)),
                           "false_relocs": int(sum(r["false_relocs"] for r in cold))}
    if kid:
        back = [r["back_s"] for r in kid]
        summary["kidnap"] = {"runs": len(kid), "back_within_2m_in_20s_pct":
                             round(100.0 * sum(b is not None and b <= 20.0 for b in back) / len(kid), 1),
                             "false_fixes": int(sum(r["false_fixes"] for r in kid)),
                             "false_relocs": int(sum(r["false_relocs"] for r in kid)),
                             "back_s": back}
    if recalls:
        summary["recall"] = {f"T{T}": {k: round(float(np.mean([r[f"T{T}"][k] for r in recalls])), 1)
                                       for k in ("R@1", "R@10")} for T in (1, 7)}
        summary["recall"]["voted"] = {k: round(float(np.mean([r["voted"][k] for r in recalls])), 1)
                                      for k in ("R@10", "R@30")}
    if rows:
        print("\n" + table(rows, ["drive", "case", "start_s", "tiles", "first_fix_s", "first_fix_err_m",
                                  "first_fix_err_map_m", "first_spread_m", "false_fixes", "false_relocs",
                                  "in95_no_gnss_pct", "back_s",
                                  "back_map_s", "max_err_m", "in95_pct", "gnss_reanchored", "attempted", "verified",
                                  "replay_s"]))
    if recalls:
        print("\n" + table([{"drive": r["drive"], "tiles": r["tiles"], "queries": r["queries"],
                             **{f"T{T} {k}": r[f"T{T}"][k] for T in (1, 7) for k in ("R@1", "R@10")},
                             **{f"places {k}": r["voted"][k] for k in ("R@10", "R@30")}}
                            for r in recalls], ["drive", "tiles", "queries", "T1 R@1", "T1 R@10", "T7 R@1", "T7 R@10",
                                                "places R@10", "places R@30"]))
    name = "reloc" if args.which == "heldout" else "reloc_validation"
    out = write(name, rows, args.out, summary=summary, recall=recalls, config_overrides=overrides,
                indexes={str(k): {kk: str(vv) if isinstance(vv, Path) else vv for kk, vv in v.items()}
                         for k, v in indexes.items()},
                quick=args.quick, nth=args.nth if args.quick else None, spacing_m=args.spacing,
                seconds=time.perf_counter() - t_start)
    print(f"\nbench_reloc: {len(rows)} runs on {len(drives)} {args.which} drives: {json.dumps(summary)}; "
          f"{time.perf_counter() - t_start:.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
