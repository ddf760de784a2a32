"""Camera-only metric matching on held-out towns: recall of the volume's peak per feature extractor,
single frame and sequence, with only the extractor swapped in the same MetricMatcher.

    .venv/bin/python bench/bench_metric.py [--world data/bench/w8] [--drive data/bench/w8_d1 ...]
        [--extractors gradient learned] [--seq-lens 1 4] [--checkpoint PT] [--out JSON]

The world defaults to a held-out town (seed 8, never trained on), made under data/bench/ with
`geoloc sim world` when missing (the installed sim: with the aerial survey gap where it has one).
Drives: folders of `geoloc sim drive` (drive.json + truth.csv) with --drive, else --drive-seeds
simulated in memory exactly as `geoloc sim drive --seed S` simulates them (same route, speeds and
appearance; no bag, only the keyframes are rendered). Keyframes every 5 m are rendered from the
drive's truth and appearance; odometry between keyframes is the truth plus a random walk (0.05 m, 0.1 deg per
keyframe); the prior is the truth plus N(0, --prior-sigma-m) per axis and N(0, --prior-yaw-deg),
the matcher's window is sized from those sigmas (3 sigma, clamped), every extractor and sequence
length sees the same keyframes and priors.

Errors are measured in the map's own frame (truth displaced by the survey's recorded
misregistration, which no camera can see; zero without a survey gap): lateral / longitudinal in
the true heading's frame, heading in degrees. Columns: recall (%) within 1/3/5 m and 1/3/5 deg,
median horizontal error, ``ms`` median time of one match (mosaic, features, volume) and ``feat_ms``
of the feature extractor alone (BEV + aerial window), on this machine.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _geoloc(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "geoloc_ros.cli", *args], check=True)


def ensure_world(path: Path, seed: int, size_m: float) -> Path:
    if not (path / "world.json").is_file():
        _geoloc("sim", "world", "--out", str(path), "--seed", str(seed), "--size-m", str(size_m), "--force")
    return path


def drive_from_dir(drive_dir: Path):
    """(name, camera, appearance dict, camera_x_m, t, x, y, yaw) of a `geoloc sim drive` folder."""
    from geoloc_ros.core.camera import PinholeCamera

    d = json.loads((drive_dir / "drive.json").read_text())
    cam = PinholeCamera(**{k: d["camera"][k] for k in ("width", "height", "hfov_deg", "mount_height_m")})
    tr = np.genfromtxt(drive_dir / "truth.csv", delimiter=",", names=True)
    return (drive_dir.name, cam, d["appearance"], d.get("rig", {}).get("camera_x_m", 0.0), tr["t"], tr["x"],
            tr["y"], tr["yaw"])


def drive_from_seed(world, seed: int, duration_s: float):
    """The same drive as `geoloc sim drive --seed SEED --duration-s D` (defaults otherwise), in memory."""
    from geoloc_ros.core.camera import PinholeCamera
    from geoloc_ros.sim.drive import DriveConfig, simulate_drive, stream_rng
    from geoloc_ros.sim.render import Appearance

    cfg = DriveConfig(duration_s=duration_s, seed=seed)
    sim = simulate_drive(world, cfg)
    st = sim.truth.at(sim.camera_t)
    app = Appearance.sample(stream_rng(cfg.seed, "appearance")).to_dict()
    return (f"seed{seed}", PinholeCamera(), app, cfg.rig.camera_x_m, sim.camera_t, np.asarray(st.x),
            np.asarray(st.y), np.asarray(st.yaw))


def displacement(world_dir: Path, x, y):
    """The survey's misregistration at (x, y), or zeros where the installed sim has none."""
    try:
        from geoloc_ros.sim.survey import misregistration_displacement
    except ImportError:
        return np.zeros_like(np.asarray(x, float)), np.zeros_like(np.asarray(y, float))
    return misregistration_displacement(world_dir, x, y)


def recall_row(errs: np.ndarray) -> dict:
    r = {"n": int(len(errs))}
    if not len(errs):
        return r
    for m in (1, 3, 5):
        r[f"lat@{m}m"] = round(float(np.mean(np.abs(errs[:, 0]) <= m) * 100), 1)
    for m in (1, 3, 5):
        r[f"lon@{m}m"] = round(float(np.mean(np.abs(errs[:, 1]) <= m) * 100), 1)
    for d in (1, 3, 5):
        r[f"yaw@{d}deg"] = round(float(np.mean(np.abs(errs[:, 2]) <= d) * 100), 1)
    r["median_m"] = round(float(np.median(np.hypot(errs[:, 0], errs[:, 1]))), 2)
    return r


class TimedExtractor:
    """Wraps an extractor to time its calls (the matcher is not changed)."""

    def __init__(self, fx):
        self.fx = fx
        self.t = 0.0
        if hasattr(fx, "rotate_channels"):
            self.rotate_channels = fx.rotate_channels

    def bev(self, *a):
        t0 = time.perf_counter()
        out = self.fx.bev(*a)
        self.t += time.perf_counter() - t0
        return out

    def aerial(self, *a):
        t0 = time.perf_counter()
        out = self.fx.aerial(*a)
        self.t += time.perf_counter() - t0
        return out


def run_drive(world_dir: Path, world, drive, extractors: dict, seq_lens, args) -> dict:
    from geoloc_ros.metric.aerial import AerialMap
    from geoloc_ros.metric.config import MetricParams
    from geoloc_ros.metric.matcher import MetricMatcher
    from geoloc_ros.sim.render import Appearance, GroundRenderer
    from geoloc_ros.training.metric_data import camera_model_for, keyframe_indices

    name, cam, app, cam_x, ts, xs, ys, yaws = drive
    rend = GroundRenderer(world, cam, Appearance.from_dict(app))
    cm = camera_model_for(cam, cam_x)
    keys = keyframe_indices(xs, ys, args.keyframe_m)[:args.max_keyframes or None]
    am = AerialMap(world_dir / "orthophoto.tif", world.frame, 0.5, memory_budget_mb=128.0)
    matchers = {}
    for name, fx in extractors.items():
        for T in seq_lens:
            tfx = TimedExtractor(fx)
            matchers[(name, T)] = (MetricMatcher(am, tfx, MetricParams(metric_seq_len=T), cm), tfx)
    rng = np.random.default_rng([args.seed, zlib.crc32(name.encode())])
    errs = {k: [] for k in matchers}
    ms = {k: [] for k in matchers}
    fms = {k: [] for k in matchers}
    ox = oy = oyaw = 0.0
    sig, sig_yaw = args.prior_sigma_m, math.radians(args.prior_yaw_deg)
    for k in keys:
        x, y, yaw = float(xs[k]), float(ys[k]), float(yaws[k])
        img = rend.render(x, y, yaw)
        ox, oy = ox + rng.normal(0, 0.05), oy + rng.normal(0, 0.05)
        oyaw += math.radians(rng.normal(0, 0.1))
        px, py = x + rng.normal(0, sig), y + rng.normal(0, sig)
        pyaw = yaw + rng.normal(0, sig_yaw)
        dx, dy = displacement(world_dir, x, y)
        xm, ym = x + float(dx), y + float(dy)  # where the map shows the vehicle
        for key, (m, tfx) in matchers.items():
            m.add_keyframe(float(ts[k]), img, (x + ox, y + oy, yaw + oyaw))
            if len(m.views) < key[1]:
                continue
            tfx.t = 0.0
            t0 = time.perf_counter()
            res = m.match(px, py, pyaw, sig, sig_yaw)
            ms[key].append((time.perf_counter() - t0) * 1e3)
            fms[key].append(tfx.t * 1e3)
            v = res.volume
            s = np.where(np.isfinite(v.scores), v.scores, -9.0)
            kk, i, j = np.unravel_index(int(np.argmax(s)), s.shape)
            ex, ey = float(v.xs[j]) - xm, float(v.ys[i]) - ym
            lon = ex * math.cos(yaw) + ey * math.sin(yaw)
            lat = -ex * math.sin(yaw) + ey * math.cos(yaw)
            eyaw = math.degrees(math.remainder(float(v.yaws[kk]) - yaw, 2 * math.pi))
            errs[key].append((lat, lon, eyaw))
    return {"errs": errs, "ms": ms, "feat_ms": fms, "keyframes": len(keys)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=Path, default=ROOT / "data" / "bench" / "w8", help="held-out world")
    ap.add_argument("--world-seed", type=int, default=8, help="seed when the world must be generated")
    ap.add_argument("--size-m", type=float, default=1000.0)
    ap.add_argument("--drive", type=Path, nargs="*", default=None,
                    help="drive folders of `geoloc sim drive` (drive.json + truth.csv); default: --drive-seeds")
    ap.add_argument("--drive-seeds", type=int, nargs="+", default=[1, 2],
                    help="drives simulated in memory as `geoloc sim drive --seed S` would (when no --drive)")
    ap.add_argument("--duration-s", type=float, default=90.0)
    ap.add_argument("--extractors", nargs="+", default=["gradient", "learned"])
    ap.add_argument("--checkpoint", type=Path, default=None, help="bevmatch checkpoint (default: the shipped one)")
    ap.add_argument("--export-dir", type=Path, default=None, help="its ONNX export (default: engines/bevmatch)")
    ap.add_argument("--backend", default="auto", help="learned features backend: auto | onnxruntime | torch")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime / torch threads")
    ap.add_argument("--seq-lens", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--keyframe-m", type=float, default=5.0)
    ap.add_argument("--max-keyframes", type=int, default=0, help="per drive (0 = all)")
    ap.add_argument("--prior-sigma-m", type=float, default=3.0)
    ap.add_argument("--prior-yaw-deg", type=float, default=1.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", default="", help="free text stored with the results (e.g. 'survey gap on')")
    ap.add_argument("--out", type=Path, default=None, help="JSON (default bench/results/metric.json)")
    args = ap.parse_args(argv)

    from geoloc_ros.metric.features import make_extractor
    from geoloc_ros.sim.world import World

    world = ensure_world(args.world, args.world_seed, args.size_m)
    wobj = World.load(world)
    drives = ([drive_from_dir(Path(d)) for d in args.drive] if args.drive
              else [drive_from_seed(wobj, s, args.duration_s) for s in args.drive_seeds])
    extractors = {}
    for name in args.extractors:
        if name == "learned":
            kw = {"backend": args.backend, "threads": args.threads, "export_missing": True}
            if args.checkpoint:
                kw["checkpoint"] = args.checkpoint
            if args.export_dir:
                kw["export_dir"] = args.export_dir
            extractors[name] = make_extractor(name, **kw)
        else:
            extractors[name] = make_extractor(name)
    allerr, allms, allfms, per_drive = {}, {}, {}, []
    t0 = time.perf_counter()
    for dd in drives:
        r = run_drive(world, wobj, dd, extractors, args.seq_lens, args)
        per_drive.append({"drive": dd[0], "keyframes": r["keyframes"]})
        for key in r["errs"]:
            allerr.setdefault(key, []).extend(r["errs"][key])
            allms.setdefault(key, []).extend(r["ms"][key])
            allfms.setdefault(key, []).extend(r["feat_ms"][key])
    rows = []
    for (name, T), e in allerr.items():
        row = {"extractor": name, "T": T, **recall_row(np.asarray(e, float).reshape(-1, 3))}
        row["ms"] = round(statistics.median(allms[(name, T)]), 1) if allms[(name, T)] else None
        row["feat_ms"] = round(statistics.median(allfms[(name, T)]), 1) if allfms[(name, T)] else None
        if name == "learned":
            row["backend"] = extractors[name].backend
        rows.append(row)
    cols = ["extractor", "T", "n", "lat@1m", "lat@3m", "lat@5m", "lon@1m", "lon@3m", "lon@5m", "yaw@1deg",
            "yaw@3deg", "yaw@5deg", "median_m", "ms", "feat_ms", "backend"]
    wj = json.loads((Path(world) / "world.json").read_text())
    gap = bool((wj.get("survey") or {}).get("enabled", bool(wj.get("survey"))))
    print(f"metric matching, camera only: world {world} (seed {wj.get('seed')}, survey gap "
          f"{'on' if gap else 'off'}), {len(drives)} drives, prior sigma {args.prior_sigma_m} m / "
          f"{args.prior_yaw_deg} deg {args.label}")
    print(table(rows, cols))
    out = write("metric", rows, args.out, world=str(world), world_seed=wj.get("seed"), survey_gap=gap,
                drives=per_drive, label=args.label, args={k: str(v) for k, v in vars(args).items()},
                extractors={k: getattr(v, "identity", lambda: {})() for k, v in extractors.items()},
                wall_s=round(time.perf_counter() - t0, 1))
    print(f"wrote {out}")
    return rows


if __name__ == "__main__":
    main()
