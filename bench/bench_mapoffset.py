"""The orthophoto's learned offset (core.mapoffset) on held-out towns: survey offset size x minutes
driven -> absolute / map-frame median, p95, truth inside the published 95 % ellipse, and the
estimated vs the true offset (the true one from the world's survey record: here, in the bench,
only), with the sidecar carried from one drive to the next; the same drives with the estimator off
(the constant map_registration_sigma_m) beside them. A picture of the offset estimate converging.

    python bench/bench_mapoffset.py --quick        # town 21, offsets 0.5 / 2 / 4 m, 2 drives of 90 s
    python bench/bench_mapoffset.py                # towns 21-24, 0 / 0.5 / 2 / 4 m, 4 drives of 150 s

Worlds are `geoloc sim world --seed TOWN --size-m 800 --survey-shift-m S S` (offset 0: `--survey-without
misregistration`, an exact orthophoto; the protocol's world otherwise), drives `geoloc sim drive
--camera-hz 4` (a lower camera rate keeps it cheap: keyframes come every 5 m anyway), all cached
under --data; the worlds of one town differ in their orthophoto only, so one set of drives per
town serves every offset. Figures are over the published estimates (every
fix and keyframe) of usable status. The estimator's settings are its defaults (chosen on nothing
held-out); `--prior` sets map_registration_sigma_m (the orthophoto's stated accuracy).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write  # noqa: E402

FIRST_MINUTE_S = 60.0


def make_world(data: Path, town: int, shift: float, size_m: float = 800.0) -> Path:
    from geoloc_ros.tools import sim_world

    out = data / f"world_s{town}_shift{shift:g}"
    if not (out / "world.json").is_file():
        argv = ["--out", str(out), "--seed", str(town), "--size-m", f"{size_m:g}", "--force"]
        argv += ["--survey-shift-m", f"{shift:g}", f"{shift:g}"] if shift > 0 else ["--survey-without", "misregistration"]
        sim_world.main(argv)
    return out


def make_drive(data: Path, world: Path, town: int, k: int, duration_s: float, camera_hz: float) -> Path:
    """A drive of ``town``; the same bag serves every survey offset of the town (the worlds differ in
    their orthophoto only: the camera renders the same ground)."""
    from geoloc_ros.tools import sim_drive

    out = data / f"town{town}_drive{k}_{duration_s:g}s_{camera_hz:g}hz"
    if not (out / "drive.json").is_file():
        sim_drive.main(["--world", str(world), "--out", str(out), "--seed", str(7000 + 100 * town + k),
                        "--gnss-seed", str(8000 + 100 * town + k), "--duration-s", f"{duration_s:g}",
                        "--camera-hz", f"{camera_hz:g}", "--force"])
    return out


def _window(track, truth, t0: float, t1: float) -> Dict[str, Optional[float]]:
    """median, p95 and inside-95 % of the published samples of ``track`` in [t0, t1)."""
    from geoloc_ros.evaluation import metrics as M

    if truth is None or len(track) == 0:
        return {}
    err, dx, dy = M.horizontal_errors(track, truth)
    sel = (track.t >= t0) & (track.t < t1) & track.usable() & np.isfinite(err)
    if not sel.any():
        return {}
    hon = M.covariance_honesty(dx[sel], dy[sel], track.cov[sel])
    return {"median": float(np.median(err[sel])), "p95": float(np.percentile(err[sel], 95)),
            "inside95": hon["inside_95_pct"], "n": int(sel.sum())}


def replay(world: Path, drive: Path, cfg) -> Dict:
    """One drive through the Localizer with ``cfg``: the figures of the whole drive, of its first
    minute, and the offset estimate against the truth's along the way."""
    from geoloc_ros.evaluation.replay import replay_bag, world_frame
    from geoloc_ros.metric import open_matcher
    from geoloc_ros.sim.survey import misregistration_displacement

    matcher = open_matcher(world / "orthophoto.tif", cfg, frame=world_frame(world))
    res = replay_bag(drive / "bag", None, None, cfg, matcher=matcher, world_dir=world, progress=False)
    log_ = res.methods["corrected"]
    t0, t1 = res.t_start, res.t_end + 1.0
    absolute = log_.track()
    ortho = log_.track(ortho=True)
    tm = res.truth_map if res.truth_map is not None else res.truth
    out = {"abs": _window(absolute, res.truth, t0, t1), "map": _window(ortho, tm, t0, t1),
           "abs_first_min": _window(absolute, res.truth, t0, t0 + FIRST_MINUTE_S),
           "map_first_min": _window(ortho, tm, t0, t0 + FIRST_MINUTE_S), "duration_s": res.duration_s}
    # the learned offset vs the true one (absolute - map = -misregistration at the truth), per estimate
    if log_.offset and res.truth is not None:
        t = np.asarray(log_.t, float)
        ok = np.array([o is not None for o in log_.offset])
        tx, ty, valid = res.truth.at(t)
        sel = ok & valid
        if sel.any():
            dx, dy = misregistration_displacement(world, tx[sel], ty[sel])
            est = np.array([[o["east_m"], o["north_m"], o["sigma_m"]] for o, s in zip(log_.offset, sel) if s])
            err = np.hypot(est[:, 0] + dx, est[:, 1] + dy)
            ts = t[sel] - res.t_start
            out["offset_curve"] = [(float(a), float(b), float(c)) for a, b, c in zip(ts[::20], err[::20], est[::20, 2])]
            last = ts >= ts[-1] - 30.0
            out["offset_end"] = {"true_m": float(np.mean(np.hypot(dx, dy)[last])), "error_m": float(np.mean(err[last])),
                                 "sigma_m": float(np.mean(est[last, 2])),
                                 "est": [float(np.mean(est[last, 0])), float(np.mean(est[last, 1]))],
                                 "true": [float(-np.mean(dx[last])), float(-np.mean(dy[last]))]}
    stats = res.localizer_stats.get("corrected", {})
    out["map_offset"] = stats.get("map_offset", {})
    return out


def fleet(hours=(1 / 6, 0.5, 1, 2, 4), seeds: int = 30, prior: float = 2.5) -> List[Dict]:
    """The estimator alone (core.mapoffset) on synthetic "GNSS minus camera" samples with the
    simulator's receivers (default: bias 3 m, tau 60 s, white 0.8 m; open-sky: 0.95 m, 90 s, 0.35 m),
    one sample per 2 s while driving a 300 m loop, a 2 m offset: how many hours of driving (one car,
    or a fleet sharing the sidecar) the offset needs. Mean |error| and sigma over ``seeds`` draws."""
    from geoloc_ros.core.geo import LocalFrame
    from geoloc_ros.core.mapoffset import MapOffsetEstimator, MapOffsetParams, OffsetSample

    rows = []
    for name, sb, tau, wh in (("default", 3.0, 60.0, 0.8), ("open-sky", 0.95, 90.0, 0.35)):
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            est = MapOffsetEstimator(MapOffsetParams(), prior, LocalFrame.at(44.4759, -73.2121))
            true = np.array([2.0 * math.cos(seed), 2.0 * math.sin(seed)])
            b = sb * rng.standard_normal(2)
            phi = math.exp(-2.0 / tau)
            marks = sorted(int(h * 3600 / 2.0) for h in hours)
            for k in range(marks[-1] + 1):
                b = phi * b + sb * math.sqrt(1 - phi * phi) * rng.standard_normal(2)
                a = 8.0 * 2.0 * k / 300.0
                x, y = 300.0 * math.cos(a), 300.0 * math.sin(a)
                r = sb * sb + wh * wh
                est.observe(OffsetSample(t=2.0 * k, x=x, y=y, d=true + b + wh * rng.standard_normal(2),
                                         noise_var=0.0625 * r + 0.25, bias_var=r))
                if k in marks:
                    o, var = est.offset_at(x, y)
                    rows.append({"receiver": name, "hours": round(k * 2.0 / 3600, 2), "seed": seed,
                                 "error_m": float(np.hypot(*(o - true))), "sigma_m": math.sqrt(var)})
    out = []
    for name in ("default", "open-sky"):
        for h in sorted({r["hours"] for r in rows}):
            sel = [r for r in rows if r["receiver"] == name and r["hours"] == h]
            out.append({"receiver": name, "hours": h, "error_median_m": round(float(np.median([r["error_m"] for r in sel])), 2),
                        "sigma_m": round(float(np.mean([r["sigma_m"] for r in sel])), 2)})
    return out


def _r(v, nd=2):
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def run(args) -> Dict:
    from geoloc_ros.evaluation.replay import make_config

    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    rows: List[Dict] = []
    curves: Dict[str, List] = {}
    t_start = time.perf_counter()
    for town in args.towns:
        first = make_world(data, town, args.offsets[0])
        drives = [make_drive(data, first, town, k, args.duration_s, args.camera_hz) for k in range(args.drives)]
        for shift in args.offsets:
            world = make_world(data, town, shift)
            side = data / f"{world.name}_prior{args.prior:g}.offset.json"
            if side.exists():
                side.unlink()  # every bench run learns from nothing
            on = make_config({"map_offset_estimate": True, "map_offset_file": str(side),
                              "map_registration_sigma_m": args.prior})
            off = make_config({"map_registration_sigma_m": args.prior})
            minutes = 0.0
            curve = []
            for k, drive in enumerate(drives):
                t0 = time.perf_counter()
                a = replay(world, drive, on)
                b = replay(world, drive, off) if not args.no_off else {}
                for c in a.get("offset_curve", []):
                    curve.append((minutes + c[0] / 60.0, c[1], c[2]))
                minutes += a["duration_s"] / 60.0
                oe = a.get("offset_end", {})
                row = {"town": town, "offset_m": shift, "drive": k + 1, "minutes": round(minutes, 1),
                       "abs_med": _r(a["abs"].get("median")), "abs_p95": _r(a["abs"].get("p95")),
                       "abs_in95": _r(a["abs"].get("inside95"), 0),
                       "abs_in95_1st_min": _r(a["abs_first_min"].get("inside95"), 0),
                       "map_med": _r(a["map"].get("median")), "map_p95": _r(a["map"].get("p95")),
                       "map_in95": _r(a["map"].get("inside95"), 0),
                       "off_abs_med": _r(b.get("abs", {}).get("median")),
                       "off_abs_in95": _r(b.get("abs", {}).get("inside95"), 0),
                       "off_map_med": _r(b.get("map", {}).get("median")),
                       "off_map_in95": _r(b.get("map", {}).get("inside95"), 0),
                       "true_off": _r(oe.get("true_m")), "est_err": _r(oe.get("error_m")),
                       "est_sigma": _r(oe.get("sigma_m")),
                       "samples": (a.get("map_offset") or {}).get("counts", {}).get("samples", 0),
                       "n_indep": (a.get("map_offset") or {}).get("independent_samples_total", 0),
                       "replay_s": round(time.perf_counter() - t0, 1), "raw": {"on": a, "off": b}}
                rows.append(row)
                print(f"town {town} offset {shift:g} m drive {k + 1}: abs {row['abs_med']} m "
                      f"(in95 {row['abs_in95']} %), map {row['map_med']} m (in95 {row['map_in95']} %); off: abs "
                      f"{row['off_abs_med']} m (in95 {row['off_abs_in95']} %); offset error {row['est_err']} m "
                      f"(sigma {row['est_sigma']}, true {row['true_off']})", flush=True)
            curves[f"town {town}, {shift:g} m"] = curve
    return {"rows": rows, "curves": curves, "wall_s": time.perf_counter() - t_start}


def plot(curves: Dict[str, List], path: Path, prior: float) -> Path:
    """Offset error (solid) and published sigma (dashed) vs minutes driven, mean over the towns,
    one colour per survey offset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_off: Dict[str, List[np.ndarray]] = {}
    for name, c in curves.items():
        if c:
            by_off.setdefault(name.split(", ", 1)[1], []).append(np.asarray(c, float))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (off, cs) in enumerate(sorted(by_off.items(), key=lambda kv: float(kv[0].split()[0]))):
        grid = np.arange(0.0, min(c[-1, 0] for c in cs), 0.05)
        err = np.mean([np.interp(grid, c[:, 0], c[:, 1]) for c in cs], axis=0)
        sig = np.mean([np.interp(grid, c[:, 0], c[:, 2]) for c in cs], axis=0)
        col = f"C{i % 10}"
        ax.plot(grid, err, color=col, label=f"survey offset {off}: |estimate - truth|")
        ax.plot(grid, sig, color=col, ls="--", lw=1, label=f"survey offset {off}: published sigma (per axis)")
    ax.set_xlabel("minutes driven (drives in turn, sidecar carried over)")
    ax.set_ylabel("m")
    ax.set_title(f"orthophoto offset learned from GNSS, prior sigma {prior:g} m "
                 f"(mean over {len(next(iter(by_off.values()), []))} held-out towns)")
    ax.grid(alpha=0.3)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _mean(rows: List[Dict], key: str) -> Optional[float]:
    v = [float(r[key]) for r in rows if r.get(key) not in (None, "")]
    return float(np.mean(v)) if v else None


def markdown(rows: List[Dict], prior: float) -> str:
    """Mean over towns per survey offset and drive (minutes driven): the docs table."""
    head = ("| offset (m) | minutes | abs median / p95 (m) | abs in 95 % | abs in 95 % 1st min | map median / p95 (m) "
            "| map in 95 % | off: abs median (m) | off: abs in 95 % | off: map median (m) | offset error / sigma (m) |")
    out = [f"prior sigma (`map_registration_sigma_m`) {prior:g} m; towns "
           f"{', '.join(str(t) for t in sorted({r['town'] for r in rows}))}", "", head, "|" + "---|" * 11]
    for off in sorted({r["offset_m"] for r in rows}):
        for d in sorted({r["drive"] for r in rows}):
            sel = [r for r in rows if r["offset_m"] == off and r["drive"] == d]
            if not sel:
                continue

            def f(k, nd=2):
                v = _mean(sel, k)
                return "" if v is None else f"{v:.{nd}f}"
            out.append(f"| {off:g} | {f('minutes', 1)} | {f('abs_med')} / {f('abs_p95')} | {f('abs_in95', 0)} | "
                       f"{f('abs_in95_1st_min', 0) if d == 1 else ''} | {f('map_med')} / {f('map_p95')} | "
                       f"{f('map_in95', 0)} | {f('off_abs_med')} | {f('off_abs_in95', 0)} | {f('off_map_med')} | "
                       f"{f('est_err')} / {f('est_sigma')} |")
    return "\n".join(out)


COLUMNS = ["town", "offset_m", "drive", "minutes", "abs_med", "abs_p95", "abs_in95", "abs_in95_1st_min", "map_med",
           "map_p95", "map_in95", "off_abs_med", "off_abs_in95", "off_map_med", "off_map_in95", "true_off", "est_err",
           "est_sigma", "n_indep"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data/bench_mapoffset"), help="cache of worlds and drives")
    ap.add_argument("--quick", action="store_true", help="town 21, offsets 0.5/2/4 m, 2 drives of 90 s")
    ap.add_argument("--towns", type=int, nargs="+", default=[21, 22, 23, 24])
    ap.add_argument("--offsets", type=float, nargs="+", default=[0.0, 0.5, 2.0, 4.0])
    ap.add_argument("--drives", type=int, default=4, help="drives per town and offset (the sidecar carried over)")
    ap.add_argument("--duration-s", type=float, default=150.0)
    ap.add_argument("--camera-hz", type=float, default=4.0)
    ap.add_argument("--prior", type=float, default=0.5, help="map_registration_sigma_m (the prior sigma)")
    ap.add_argument("--no-off", action="store_true", help="skip the estimator-off replays")
    ap.add_argument("--out", type=Path, default=None, help="JSON (default bench/results/mapoffset.json)")
    ap.add_argument("--fleet-only", action="store_true", help="only the estimator on synthetic samples over hours")
    ap.add_argument("--report", type=Path, nargs="+", default=None, metavar="JSON",
                    help="no replays: the docs tables of these result files")
    args = ap.parse_args(argv)
    if args.quick:
        args.towns, args.offsets, args.drives, args.duration_s = [21], [0.5, 2.0, 4.0], 2, 90.0
    if args.report:  # result files of the same prior are merged (towns run separately)
        merged: Dict[float, Dict] = {}
        for path in args.report:
            doc = json.loads(Path(path).read_text())
            m = merged.setdefault(float(doc["args"]["prior"]), {"rows": [], "curves": {}, "path": Path(path)})
            m["rows"] += doc["rows"]
            m["curves"].update(doc["curves"])
        for prior, m in sorted(merged.items()):
            print(markdown(m["rows"], prior) + "\n")
            print("picture:", plot(m["curves"], m["path"].with_name(f"{m['path'].stem}_all.png"), prior))
        return 0
    if args.fleet_only:
        rows = fleet(prior=args.prior)
        print(table(rows, ["receiver", "hours", "error_median_m", "sigma_m"]))
        path = write(f"mapoffset_fleet_prior{args.prior:g}", rows, args.out)
        print(f"bench mapoffset (fleet, synthetic samples): -> {path}")
        return 0
    from geoloc_ros.evaluation.protocol import load_protocol

    held = set(load_protocol().heldout_towns)
    if not set(args.towns) <= held:
        print(f"note: towns {sorted(set(args.towns) - held)} are not held-out towns", flush=True)
    got = run(args)
    print(table(got["rows"], COLUMNS))
    print(markdown(got["rows"], args.prior))
    name = f"mapoffset_prior{args.prior:g}" + ("_quick" if args.quick else "")
    png = plot(got["curves"], (args.out.parent if args.out else Path(__file__).resolve().parent / "results")
               / f"{name}.png", args.prior)
    rows = [{k: v for k, v in r.items() if k != "raw"} for r in got["rows"]]
    path = write(name, rows, args.out, args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                 raw=[r["raw"] for r in got["rows"]], curves=got["curves"], wall_s=got["wall_s"])
    print(f"bench mapoffset: {len(rows)} drive replays in {got['wall_s'] / 60:.1f} min -> {path}, {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
