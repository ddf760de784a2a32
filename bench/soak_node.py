"""geoloc_node soak: a 30 Hz camera, 5 Hz GNSS and 20 Hz odometry for 10 minutes (not part of `make test`).

    .venv/bin/python bench/soak_node.py                      # 600 s, the full soak
    .venv/bin/python bench/soak_node.py --seconds 120        # a shorter run on a busy machine

A real `geoloc_node` process (torch backend, one encoder thread, default queues and keyframe
spacing) gets a drive's camera, GNSS and odometry from this process, looped and re-stamped on an
exact schedule (stamp k of an input = start + k / rate, published when due, or late when this
process falls behind: the stamps stay exact, so the node's stamp-based figures can be checked
against what was sent). The drive loops every --loop-s seconds (the vehicle jumps back to its
start: the GNSS gate and the filter's reset see that too).

Checked at the end (exit status 1 if one fails):
* memory: the node's RSS grew less than 5 % between the end of the warm-up (--warmup-s) and the end;
* no unhandled exception: the node is alive, its worker is running, no ``processing_error`` drop,
  no Traceback in its log, and Ctrl-C stops it with status 0;
* /diagnostics ``input.<in>.expected`` is within 2 % of what was sent, and ``input.<in>.received``
  equals the node's own ``count.*`` and is at most what was sent (the transport may lose some: the
  shares are reported, not judged).
Writes a JSON summary (bench/results/soak_node.json by default) with the RSS samples.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from bench_node import Feeder, prepare, start_node  # noqa: E402

RATES = {"/camera/image_raw": 30.0, "/gnss/fix": 5.0, "/odom": 20.0}
INPUT = {"/camera/image_raw": "image", "/gnss/fix": "fix", "/odom": "odom"}


def drive_for_soak(work: Path, world: Path, seconds: float) -> Path:
    drive = work / f"drive_soak_{seconds:g}s"
    if not (drive / "drive.json").is_file():
        from geoloc_ros.tools.sim_drive import main as sim_drive

        sim_drive(["--world", str(world), "--out", str(drive), "--seed", "5", "--duration-s", str(seconds),
                   "--camera-hz", str(RATES["/camera/image_raw"]), "--gnss-hz", str(RATES["/gnss/fix"]),
                   "--odom-hz", str(RATES["/odom"]), "--force"])
    return drive


def schedule(feeder: Feeder, loop_s: float):
    """Per topic: the drive's messages within one loop (the k-th one is sent at stamp k / rate)."""
    by_topic = {t: [m for tp, _, m in feeder.msgs if tp == t] for t in RATES}
    return {t: msgs[: int(round(loop_s * RATES[t]))] for t, msgs in by_topic.items()}


def publish_for(feeder: Feeder, msgs, seconds: float, stop: threading.Event):
    """Publish every input on its exact schedule for ``seconds``; returns {topic: sent}."""
    start = time.time() + 0.5
    next_k = {t: 0 for t in RATES}
    sent = {t: 0 for t in RATES}
    end = start + seconds
    while not stop.is_set():
        due = min(RATES, key=lambda t: next_k[t] / RATES[t])
        t_due = start + next_k[due] / RATES[due]
        if t_due >= end:
            break
        d = t_due - time.time()
        if d > 0:
            time.sleep(d)
        loop = msgs[due]
        msg = loop[next_k[due] % len(loop)]
        feeder.pub[due].publish(feeder._convert(due, msg, int(round(t_due * 1e9))))
        sent[due] += 1
        next_k[due] += 1
    return sent, time.time() - start


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=600.0, help="soak length (s)")
    ap.add_argument("--warmup-s", type=float, default=60.0, help="memory reference taken after this long (s)")
    ap.add_argument("--loop-s", type=float, default=30.0, help="length of the looped drive (whole seconds)")
    ap.add_argument("--backend", default="torch", choices=("torch", "onnxruntime", "auto"))
    ap.add_argument("--input-reliability", default="best_effort", choices=("best_effort", "reliable"),
                    help="the node's input_reliability; reliable also makes this process publish the camera "
                         "reliable (GNSS and odometry always are)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_node")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak_node.json")
    args = ap.parse_args(argv)
    import psutil

    args.work.mkdir(parents=True, exist_ok=True)
    world, _, index = prepare(args.work, args.loop_s, RATES["/camera/image_raw"])
    drive = drive_for_soak(args.work, world, args.loop_s)
    env = dict(os.environ, ROS_DOMAIN_ID=str(random.randint(1, 101)), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_LOG_DIR=str(args.work / "roslog"), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOG_DIR"):
        os.environ[k] = env[k]
    feeder = Feeder(drive)
    if args.input_reliability == "reliable":  # a reliable subscription does not match a best-effort publisher
        from rclpy.qos import QoSProfile
        from sensor_msgs.msg import Image

        feeder.node.destroy_publisher(feeder.pub["/camera/image_raw"])
        feeder.pub["/camera/image_raw"] = feeder.node.create_publisher(Image, "/camera/image_raw", QoSProfile(depth=10))
    proc, log = start_node("soak", feeder, {"model": "seqgeo_lite", "backend": args.backend, "index_path": str(index),
                                            "encoder_threads": 1, "stale_input_s": 30.0,
                                            "input_reliability": args.input_reliability}, env, args.work)
    rss, failures = [], []
    stop = threading.Event()
    try:
        pnode = psutil.Process(proc.pid)
        t0 = time.monotonic()

        def sample():
            while not stop.is_set() and proc.poll() is None:
                rss.append((round(time.monotonic() - t0, 1), pnode.memory_info().rss / 2 ** 20))
                stop.wait(5.0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        sent, dur = publish_for(feeder, schedule(feeder, args.loop_s), args.seconds, stop)
        time.sleep(4.0)  # the last messages in flight, the queue drained, two more /diagnostics
        d = dict(feeder.diag or {})
    finally:
        stop.set()
        alive = proc.poll() is None
        if alive:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        feeder.close()
    text = log.read_text()
    ref = [m for t, m in rss if t >= args.warmup_s] or [m for _, m in rss]
    growth = 100.0 * (ref[-1] - ref[0]) / ref[0] if ref else float("nan")
    inputs = {}
    for topic, n in sent.items():
        k = INPUT[topic]
        exp, rec = int(d.get(f"input.{k}.expected", -1)), int(d.get(f"input.{k}.received", -1))
        inputs[k] = {"sent": n, "expected": exp, "received": rec, "received_share": round(rec / max(n, 1), 3),
                     "expected_error_pct": round(100.0 * (exp - n) / max(n, 1), 2),
                     "gaps": d.get(f"input.{k}.gaps"), "breaks": d.get(f"input.{k}.breaks")}
        if abs(exp - n) > 0.02 * n:
            failures.append(f"{k}: expected {exp} vs sent {n} (more than 2 % apart)")
        if not 0 <= rec <= n:
            failures.append(f"{k}: received {rec} of {n} sent")
    if d.get("input.image.received") != d.get("count.images_in") or \
            d.get("input.fix.received") != d.get("count.fixes_in"):
        failures.append("input.*.received disagrees with count.*")
    errors = {k: v for k, v in d.items() if k.endswith("processing_error")}
    if not alive:
        failures.append("the node died during the soak")
    if errors or "Traceback" in text or "worker thread stopped" in text:
        failures.append(f"unhandled exceptions: {errors or 'see the node log'}")
    if proc.returncode != 0 or "Failed to publish" in text:
        failures.append(f"Ctrl-C: exit status {proc.returncode}")
    if not growth < 5.0:
        failures.append(f"memory grew {growth:.1f} % after the warm-up")
    summary = {"seconds": args.seconds, "input_reliability": args.input_reliability, "published_s": round(dur, 1),
               "rates_hz": {INPUT[t]: r for t, r in RATES.items()}, "backend": d.get("backend"),
               "keyframes": d.get("count.keyframes"), "published": d.get("count.published"),
               "queue_drops": d.get("drops.image.queue_full", "0"), "status": d.get("status"),
               "rss_mb_after_warmup": round(ref[0], 1) if ref else None,
               "rss_mb_end": round(ref[-1], 1) if ref else None,
               "rss_mb_max": round(max(m for _, m in rss), 1) if rss else None, "rss_growth_pct": round(growth, 2),
               "inputs": inputs, "exit_status": proc.returncode, "failures": failures, "rss_samples": rss}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "rss_samples"}, indent=2))
    print(f"wrote {args.out}; node log {log}")
    if failures:
        print("SOAK FAILED: " + "; ".join(failures))
        return 1
    print("soak passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
