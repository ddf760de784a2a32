"""Camera mounting self-calibration (metric.selfcal): how fast it converges from a wrong published
mounting, what it does to the fix, and what it costs per keyframe.

    .venv/bin/python bench/bench_selfcal.py [--world data/bench/w11] [--drive-seed 5] [--duration-s 60]
        [--skip-drive] [--out JSON]

Part 1, the toy road (test_selfcal's scene: the toy world with random ground texture, flat light,
256x128 camera at 1.8 m): keyframes every 5 m at 10 m/s (0.5 s apart) rendered by the TRUE camera,
the matcher given the published one (level, 1.8 m). Rows: true pitch +2 deg, true height +0.1 m,
exact. ``kf_to_conv`` / ``s_to_conv``: the first keyframe (and seconds of driving) after which the
estimate stays within 0.3 deg (pitch) or 0.03 m (height) of the truth (exact: its largest excursion); the estimate +- sigma at the
end; median peak error of the last 10 keyframes without / with self-calibration; ``ms`` per keyframe
(add_keyframe + match) without / with it and their ratio (same run, same machine).

Part 2, a simulated drive (`geoloc sim drive` in a VALIDATION town of bench/heldout.yaml: the
parameters were chosen on it, so it must never be a held-out one), replayed through the Localizer
(GNSS + odometry + metric matching) with the published mounting given as --camera-mount (the bag
copied without /tf_static): exact, pitch off by 2 deg, height off by 0.1 m, each without and with
self-calibration (and once probing every 2nd gated match). Columns: median / p95 horizontal error
in the map's frame after 30 s of driving, the median's difference to the exact mounting without
self-calibration (the issue's target: within 0.1 m), the estimate at the end, and the Localizer's
ms per keyframe in the replay.
"""
from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
from _common import table, write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KF_DT = 0.5  # s between keyframes on the toy road (5 m at 10 m/s)


def _geoloc(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "geoloc_ros.cli", *args], check=True)


# ---------------------------------------------------------------- part 1: the toy road
def toy_rows(n_kf: int = 40):
    import tempfile

    from test_metric import FLAT_LIGHT, camera_model, textured_toy_world, write_world_ortho

    from geoloc_ros.core.camera import PinholeCamera
    from geoloc_ros.metric.aerial import AerialMap
    from geoloc_ros.metric.config import MetricParams
    from geoloc_ros.metric.features import GradientFeatures
    from geoloc_ros.metric.matcher import MetricMatcher
    from geoloc_ros.metric.selfcal import MountCalibrator
    from geoloc_ros.sim.render import GroundRenderer

    world = textured_toy_world(size_m=240.0)
    tmp = Path(tempfile.mkdtemp(prefix="bench_selfcal_"))
    aerial = AerialMap(write_world_ortho(world, tmp / "o.tif"), world.frame, 0.5)
    cam = PinholeCamera(256, 128, 90.0, 1.8)
    rend = GroundRenderer(world, cam, FLAT_LIGHT, max_range_m=60.0)
    params = MetricParams(metric_bev_x_max_m=25.0, metric_bev_y_half_m=12.0, metric_max_range_m=30.0,
                          metric_seq_len=2)
    rows = []
    for label, pitch_deg, dz in (("pitch +2 deg", 2.0, 0.0), ("height +0.1 m", 0.0, 0.1), ("exact", 0.0, 0.0)):
        frames = []
        for k in range(n_kf):
            truth = (-105.0 + 5.0 * k, -1.75, 0.0)
            frames.append((KF_DT * k, truth, rend.render(*truth, z=cam.mount_height_m + dz,
                                                          pitch=math.radians(pitch_deg))))
        out = {}
        for use in (False, True):
            cal = MountCalibrator() if use else None
            m = MetricMatcher(aerial, GradientFeatures(), params, camera_model(cam), selfcal=cal)
            errs, ms, est = [], [], []
            for t, truth, img in frames:
                t0 = time.perf_counter()
                m.add_keyframe(t, img, truth)
                v = m.match(truth[0] + 0.8, truth[1] - 0.6, truth[2], 1.5, math.radians(1.0)).volume
                ms.append(1000.0 * (time.perf_counter() - t0))
                s = np.where(np.isfinite(v.scores), v.scores, -9.0)
                _, i, j = np.unravel_index(np.argmax(s), s.shape)
                errs.append(math.hypot(v.xs[j] - truth[0], v.ys[i] - truth[1]))
                if cal is not None:
                    est.append(cal.estimate())
            out[use] = (errs, ms, est, cal)
        errs1, ms1, est, cal = out[True]
        if pitch_deg:
            ok = [abs(e["pitch_deg"][0] - pitch_deg) < 0.3 for e in est]
        elif dz:
            ok = [abs(e["height_m"][0] - dz) < 0.03 for e in est]
        else:  # exact: never converges "to" anything; the largest excursion is the number
            ok = None
        conv = next((k + 1 for k in range(len(ok)) if all(ok[k:])), None) if ok is not None else None
        e = cal.estimate()
        ms0 = statistics.median(out[False][1][2:])
        ms_1 = statistics.median(ms1[2:])
        if ok is None:
            kf_txt = s_txt = (f"max |{max(abs(e['pitch_deg'][0]) for e in est):.2f}| deg, "
                              f"|{max(abs(e['height_m'][0]) for e in est):.3f}| m")
        else:
            kf_txt = conv if conv is not None else f"> {n_kf}"
            s_txt = f"{(conv - 1) * KF_DT:.1f}" if conv is not None else f"> {n_kf * KF_DT:.0f}"
        rows.append({"case": label, "kf_to_conv": kf_txt, "s_to_conv": s_txt,
                     "pitch_deg": f"{e['pitch_deg'][0]:+.2f} +- {e['pitch_deg'][1]:.2f}",
                     "height_m": f"{e['height_m'][0]:+.3f} +- {e['height_m'][1]:.3f}",
                     "err_off_m": f"{statistics.median(out[False][0][-10:]):.2f}",
                     "err_on_m": f"{statistics.median(errs1[-10:]):.2f}",
                     "accepted": cal.counts["accepted"], "ms_off": f"{ms0:.1f}", "ms_on": f"{ms_1:.1f}",
                     "cost_ratio": f"{ms_1 / ms0:.2f}"})
    return rows


# ---------------------------------------------------------------- part 2: a simulated drive
def ensure_drive(world: Path, seed: int, duration_s: float, world_seed: int) -> Path:
    from _shared import copy_bag

    if not (world / "world.json").is_file():
        _geoloc("sim", "world", "--out", str(world), "--seed", str(world_seed), "--size-m", "400", "--force")
    drive = world.parent / f"{world.name}_d{seed}_{int(duration_s)}s"
    if not (drive / "drive.json").is_file():
        _geoloc("sim", "drive", "--world", str(world), "--out", str(drive), "--seed", str(seed), "--duration-s",
                str(duration_s), "--width", "256", "--height", "128", "--force")
    notf = drive.parent / f"{drive.name}_notf"
    if not (notf / "bag" / "metadata.yaml").is_file():
        notf.mkdir(parents=True, exist_ok=True)
        for f in ("drive.json", "truth.csv"):
            (notf / f).write_bytes((drive / f).read_bytes())
        copy_bag(drive / "bag", notf / "bag", drop=("/tf_static",))
    return notf


def drive_rows(drive: Path, world: Path, after_s: float = 30.0):
    import json

    from geoloc_ros.evaluation import metrics as M
    from geoloc_ros.evaluation.protocol import refuse_heldout, towns_of_drives
    from geoloc_ros.evaluation.replay import load_localizer_config, replay_bag, world_frame
    from geoloc_ros.metric import open_matcher
    from geoloc_ros.metric.bev import CameraModel
    from geoloc_ros.metric.selfcal import MountCalibrator, SelfCalParams

    refuse_heldout(towns_of_drives([drive]), "bench_selfcal")
    d = json.loads((drive / "drive.json").read_text())
    h = float(d["camera"]["mount_height_m"])
    x_cam = float(d.get("rig", {}).get("camera_x_m", 0.0))
    cfg, _ = load_localizer_config(None)
    rows = []
    ref = None  # median after 30 s with the exact mounting, no self-calibration
    cases = [("exact", 0.0, 0.0, (0, 1)), ("pitch off 2 deg", 2.0, 0.0, (0, 1, 2)),
             ("height off 0.1 m", 0.0, 0.1, (0, 1))]
    for label, dp, dh, modes in cases:
        # published = truth - error: the calibrator must find +dp / +dh
        mount = CameraModel.mount_from_rpy(x_cam, 0.0, h - dh, 0.0, -math.radians(dp), 0.0)
        for mode in modes:  # 0: off, 1: on (every gated match), 2: on, every 2nd gated match
            use = mode > 0
            cal = MountCalibrator(SelfCalParams(selfcal_every_n=mode)) if use else None
            m = open_matcher(world / "orthophoto.tif", cfg, frame=world_frame(world), selfcal=cal)
            t0 = time.perf_counter()
            res = replay_bag(drive / "bag", None, None, cfg, matcher=m, camera_mount=mount, progress=False)
            wall = time.perf_counter() - t0
            tr = res.tracks()["corrected"]
            err, _, _ = M.horizontal_errors(tr, res.truth_map or res.truth)
            late = err[(tr.t >= res.t_start + after_s) & np.isfinite(err)]
            kfs = max(1, int(res.metrics["methods"]["corrected"].get("keyframes", 0) or 0))
            med = float(np.median(late)) if late.size else float("nan")
            ref = med if ref is None else ref
            row = {"case": label, "selfcal": {0: "off", 1: "on", 2: "on, every 2nd"}[mode],
                   f"median_after_{int(after_s)}s_m": f"{med:.2f}",
                   "vs_exact_off_m": f"{med - ref:+.2f}",
                   f"p95_after_{int(after_s)}s_m": f"{np.percentile(late, 95):.2f}" if late.size else "-",
                   "ms_per_kf": f"{1000.0 * res.timing.get('corrected_s', wall) / kfs:.1f}"}
            if cal is not None:
                e = cal.estimate()
                row.update(pitch_deg=f"{e['pitch_deg'][0]:+.2f} +- {e['pitch_deg'][1]:.2f}",
                           height_m=f"{e['height_m'][0]:+.3f} +- {e['height_m'][1]:.3f}",
                           roll_deg=f"{e['roll_deg'][0]:+.2f} +- {e['roll_deg'][1]:.2f}",
                           yaw_deg=f"{e['yaw_deg'][0]:+.2f} +- {e['yaw_deg'][1]:.2f}",
                           accepted=f"{cal.counts['accepted']}/{cal.counts['matches']}")
            rows.append(row)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=Path, default=ROOT / "data" / "bench" / "w11",
                    help="a validation town (made with `geoloc sim world --seed 11` when missing)")
    ap.add_argument("--world-seed", type=int, default=11)
    ap.add_argument("--drive-seed", type=int, default=5)
    ap.add_argument("--duration-s", type=float, default=60.0)
    ap.add_argument("--toy-keyframes", type=int, default=40)
    ap.add_argument("--skip-drive", action="store_true", help="only the toy road")
    ap.add_argument("--skip-toy", action="store_true", help="only the simulated drive")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    toy = [] if args.skip_toy else toy_rows(args.toy_keyframes)
    if toy:
        print(table(toy, list(toy[0].keys())))
    drive = []
    if not args.skip_drive:
        notf = ensure_drive(args.world, args.drive_seed, args.duration_s, args.world_seed)
        drive = drive_rows(notf, args.world)
        cols = []
        for r in drive:
            cols += [k for k in r if k not in cols]
        print()
        print(table(drive, cols))
    out = write("selfcal", toy, args.out, drive_rows=drive, world=str(args.world), drive_seed=args.drive_seed,
                duration_s=args.duration_s)
    print(f"bench_selfcal: {len(toy)} toy rows, {len(drive)} drive rows -> {out}")


if __name__ == "__main__":
    main()
