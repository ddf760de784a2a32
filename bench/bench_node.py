"""geoloc_node end to end at a real camera's rate: every input received, latency, CPU, memory.

    .venv/bin/python bench/bench_node.py [--width 1280 --height 720] [--seconds 20] [--work DIR] [--out FILE]

A generated town, a drive at a real sensor set's rates (default 1280x720 rgb8 camera at 30 Hz, GNSS
10 Hz, odometry 50 Hz, IMU 200 Hz) and a tile index are made once (cached in --work). For each row a
real `geoloc_node` process (metric matching on the orthophoto, the retrieval encoder for
relocalisation, Fast DDS) gets the drive's inputs from this process in real time, re-stamped with
the current time: the latency here (pose received by this process - image stamp) is what a live
system sees. The IMU is published for the DDS load (the node does not subscribe to it).

Rows: raw (sensor_msgs/Image) and CompressedImage (JPEG), each with the default single executor
thread, with a 3-thread MultiThreadedExecutor (``executor_threads``) and with reliable input
subscriptions (``input_reliability``); ``--retrieval`` adds the retrieval-only row.
Columns: ``<input>_recv`` received / expected messages per input (the node's own input figures,
from the stamps), ``keyframes_hz`` and ``kf_expected_hz`` (distance driven / keyframe spacing),
``lat_p50_ms``/``lat_p95_ms`` stamp -> pose received, ``image_drops`` frames dropped by the node's
queue (drop-oldest), ``cpu_pct`` the node's CPU (100 = one core), ``rss_mb`` its resident memory at
the end; ``vs_baseline`` = lat_p50 / one ``frame_features`` call of the encoder measured in this
process.
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

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _common import table, write  # noqa: E402


def prepare(work: Path, seconds: float, camera_hz: float, width: int = 1280, height: int = 720,
            gnss_hz: float = 10.0, odom_hz: float = 50.0):
    """World, drive (size and rates) and index in ``work`` (reused when present)."""
    from geoloc_ros.sim.bag import read_truth_csv

    world = work / "world"
    drive = work / f"drive_{width}x{height}_{camera_hz:g}hz_gnss{gnss_hz:g}_odom{odom_hz:g}_{seconds:g}s"
    index = work / "index"
    if not (world / "world.json").is_file():
        from geoloc_ros.sim.generate import generate_world

        generate_world(seed=11, size_m=400.0, gsd_m=0.5).save(world, force=True)
    if not (drive / "drive.json").is_file():
        from geoloc_ros.tools.sim_drive import main as sim_drive

        sim_drive(["--world", str(world), "--out", str(drive), "--seed", "5", "--duration-s", str(seconds),
                   "--camera-hz", str(camera_hz), "--gnss-hz", str(gnss_hz), "--odom-hz", str(odom_hz),
                   "--width", str(width), "--height", str(height), "--compressed", "--force"])
    if not (index / "manifest.json").is_file():
        from geoloc_ros.index import build_index
        from geoloc_ros.index.tiling import corridor_area

        tr = read_truth_csv(drive / "truth.csv")
        route = work / "route.geojson"
        route.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": {
            "type": "LineString", "coordinates": [[float(a), float(b)] for a, b in zip(tr["lon"][::10], tr["lat"][::10])]}}))
        build_index(world / "orthophoto.tif", "seqgeo_lite", index, backend="auto", spacing_m=12.0,
                    area=corridor_area(route, 15.0), force=True, command="bench_node")
    return world, drive, index


def pick_backend(requested: str, model: str):
    """(backend actually usable, encoder, note)."""
    from geoloc_ros.inference import load_encoder

    order = [requested] if requested != "auto" else ["onnxruntime", "torch"]
    if requested == "onnxruntime":
        order.append("torch")
    err = None
    for b in order:
        try:
            return b, load_encoder(model, backend=b, threads=1), ("" if b == requested else f"{requested} failed: {err}")
        except Exception as exc:  # not exported yet, runtime missing, ...
            err = f"{type(exc).__name__}: {exc}"
    raise SystemExit(f"no backend could load {model}: {err}")


def baseline_ms(enc, n: int = 20) -> float:
    img = np.random.default_rng(0).integers(0, 255, (1, *enc.ground_size, 3), dtype=np.uint8)
    enc.frame_features(img)
    t0 = time.perf_counter()
    for _ in range(n):
        enc.frame_features(img)
    return (time.perf_counter() - t0) / n * 1e3


class Feeder:
    """Publishes a drive's inputs live (re-stamped to now) and records pose receipt latencies."""

    def __init__(self, drive: Path, imu_hz: float = 200.0):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from nav_msgs.msg import Odometry
        from rclpy.qos import QoSProfile
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, Imu, NavSatFix

        from geoloc_ros.bag import read_bag

        topics = ["/camera/image_raw", "/camera/image_raw/compressed", "/camera/camera_info", "/gnss/fix", "/odom"]
        self.msgs = list(read_bag(drive / "bag", topics))
        if imu_hz > 0:  # the IMU's DDS load (the node does not subscribe): zero rates at imu_hz
            t0, t1 = self.msgs[0][1], self.msgs[-1][1]
            self.msgs += [("/imu/data", int(t), None) for t in np.arange(t0, t1, 1e9 / imu_hz)]
            self.msgs.sort(key=lambda m: m[1])
        self.compressed = False
        rclpy.init()
        self.node = rclpy.create_node("geoloc_bench_feeder")
        # reliable writers (a camera driver's default): they match best-effort and reliable subscriptions
        qos_profile_sensor_data = QoSProfile(depth=5)
        self.pub = {"/camera/image_raw": self.node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data),
                    "/gnss/fix": self.node.create_publisher(NavSatFix, "/gnss/fix", QoSProfile(depth=50)),
                    "/odom": self.node.create_publisher(Odometry, "/odom", QoSProfile(depth=50)),
                    "/camera/camera_info": self.node.create_publisher(CameraInfo, "/camera/camera_info",
                                                                      qos_profile_sensor_data),
                    "/camera/image_raw/compressed": self.node.create_publisher(
                        CompressedImage, "/camera/image_raw/compressed", qos_profile_sensor_data),
                    "/imu/data": self.node.create_publisher(Imu, "/imu/data", qos_profile_sensor_data)}
        self.cls = {"/camera/image_raw": Image, "/gnss/fix": NavSatFix, "/odom": Odometry,
                    "/camera/camera_info": CameraInfo, "/camera/image_raw/compressed": CompressedImage,
                    "/imu/data": Imu}
        self.lat_ms = []
        self.diag = None
        self.node.create_subscription(PoseWithCovarianceStamped, "/geoloc/pose", self._on_pose, 100)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self._stop = False
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        import rclpy

        while not self._stop and rclpy.ok():
            rclpy.spin_once(self.node, timeout_sec=0.05)

    def _on_pose(self, m):
        now = time.time()
        self.lat_ms.append((now - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)) * 1e3)

    def _on_diag(self, m):
        for s in m.status:
            if s.name.startswith("geoloc_node"):
                self.diag = {kv.key: kv.value for kv in s.values}

    def _convert(self, topic, msg, stamp_ns):
        """rosbags message -> rclpy message with a new stamp (fields copied by name)."""
        cls = self.cls[topic]
        out = cls()
        sec, nsec = divmod(stamp_ns, 1_000_000_000)
        out.header.stamp.sec, out.header.stamp.nanosec = int(sec), int(nsec)
        if msg is None:  # the synthetic IMU
            out.header.frame_id = "imu_link"
            out.orientation.w = 1.0
            return out
        out.header.frame_id = msg.header.frame_id
        if topic == "/camera/image_raw/compressed":
            out.format = msg.format
            out.data = msg.data.tobytes()
        elif topic == "/camera/image_raw":
            out.height, out.width, out.encoding, out.step = msg.height, msg.width, msg.encoding, msg.step
            out.is_bigendian = msg.is_bigendian
            out.data = msg.data.tobytes()
        elif topic == "/camera/camera_info":
            out.height, out.width, out.distortion_model = msg.height, msg.width, msg.distortion_model
            out.d = [float(v) for v in msg.d]
            out.k = [float(v) for v in msg.k]
            out.r = [float(v) for v in msg.r]
            out.p = [float(v) for v in msg.p]
        elif topic == "/gnss/fix":
            out.status.status, out.status.service = int(msg.status.status), int(msg.status.service)
            out.latitude, out.longitude, out.altitude = float(msg.latitude), float(msg.longitude), float(msg.altitude)
            out.position_covariance = [float(v) for v in msg.position_covariance]
            out.position_covariance_type = int(msg.position_covariance_type)
        else:
            out.child_frame_id = msg.child_frame_id
            p, q = msg.pose.pose.position, msg.pose.pose.orientation
            out.pose.pose.position.x, out.pose.pose.position.y = float(p.x), float(p.y)
            o = out.pose.pose.orientation
            o.x, o.y, o.z, o.w = float(q.x), float(q.y), float(q.z), float(q.w)
            out.pose.covariance = [float(v) for v in msg.pose.covariance]
            out.twist.twist.linear.x = float(msg.twist.twist.linear.x)
            out.twist.twist.angular.z = float(msg.twist.twist.angular.z)
            out.twist.covariance = [float(v) for v in msg.twist.covariance]
        return out

    def wait_for_node(self, timeout: float):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if all(p.get_subscription_count() > 0 for t, p in self.pub.items() if t in self._needed()):
                return
            time.sleep(0.1)
        raise SystemExit("geoloc_node did not subscribe in time")

    def _needed(self):
        return ("/camera/image_raw/compressed" if self.compressed else "/camera/image_raw", "/gnss/fix", "/odom")

    def play(self):
        """Publish everything in real time (the raw or the compressed camera); returns the wall duration."""
        self.lat_ms.clear()
        t0_bag = self.msgs[0][1]
        wall0 = time.time() + 0.2
        skip = "/camera/image_raw" if self.compressed else "/camera/image_raw/compressed"
        for topic, t_ns, msg in self.msgs:
            if topic == skip:
                continue
            target = wall0 + (t_ns - t0_bag) / 1e9
            d = target - time.time()
            if d > 0:
                time.sleep(d)
            stamp_ns = int(target * 1e9)
            self.pub[topic].publish(self._convert(topic, msg, stamp_ns))
        return time.time() - wall0

    def close(self):
        import rclpy

        self._stop = True
        self._thread.join(2)
        self.node.destroy_node()
        rclpy.shutdown()


def start_node(name: str, feeder: Feeder, params: dict, env: dict, work: Path):
    """A geoloc_node process with ``params`` (work/params_NAME.yaml, log work/node_NAME.log), started and
    subscribed to the feeder -> (process, log path)."""
    import yaml

    slug = "".join(c if c.isalnum() else "_" for c in name)
    pfile = work / f"params_{slug}.yaml"
    pfile.write_text(yaml.safe_dump({"geoloc_node": {"ros__parameters": params}}))
    log = work / f"node_{slug}.log"
    proc = subprocess.Popen([sys.executable, "-m", "geoloc_ros.ros.node", "--ros-args", "--params-file", str(pfile)],
                            env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=ROOT)
    end = time.monotonic() + 300
    while "geoloc_node ready" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            raise SystemExit(f"geoloc_node did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    feeder.wait_for_node(60)
    time.sleep(1.0)
    return proc, log


def run_row(name: str, feeder: Feeder, params: dict, env: dict, work: Path, expected: dict):
    import psutil

    feeder.compressed = bool(params.get("compressed"))
    proc, log = start_node(name, feeder, params, env, work)
    try:
        ps = psutil.Process(proc.pid)
        cpu0 = sum(ps.cpu_times()[:2])
        feeder.diag = None
        dur = feeder.play()
        time.sleep(3.0)  # let the queue drain and one more /diagnostics arrive
        cpu = sum(ps.cpu_times()[:2]) - cpu0
        rss = ps.memory_info().rss / 2 ** 20
        d = feeder.diag or {}
        lat = np.asarray(feeder.lat_ms)
        row = {"mode": name}
        for k in ("image", "fix", "odom"):
            row[f"{k}_recv"] = f"{d.get(f'input.{k}.received', '?')}/{d.get(f'input.{k}.expected', '?')}"
        row.update({
            "keyframes_hz": round(int(d.get("count.keyframes", 0)) / dur, 2), "kf_expected_hz": expected["kf_hz"],
            "lat_p50_ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
            "lat_p95_ms": round(float(np.percentile(lat, 95)), 1) if lat.size else None,
            "image_drops": int(d.get("drops.image.queue_full", 0)),
            "resets": d.get("localizer.resets"), "status": d.get("status"),
            "cpu_pct": round(100.0 * cpu / dur, 0), "rss_mb": round(rss, 0),
            "compute_p50_ms": d.get("latency.compute_p50_ms")})
        return row
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "torch", "auto"))
    ap.add_argument("--model", default="seqgeo_lite")
    ap.add_argument("--seconds", type=float, default=15.0, help="drive length (real time per row)")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--camera-hz", type=float, default=30.0)
    ap.add_argument("--gnss-hz", type=float, default=10.0)
    ap.add_argument("--odom-hz", type=float, default=50.0)
    ap.add_argument("--imu-hz", type=float, default=200.0)
    ap.add_argument("--retrieval", action="store_true", help="also the retrieval-only rows (no orthophoto)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_node")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    world, drive, index = prepare(args.work, args.seconds, args.camera_hz, args.width, args.height, args.gnss_hz,
                                  args.odom_hz)
    backend, enc, note = pick_backend(args.backend, args.model)
    base = baseline_ms(enc)
    del enc
    if note:
        print(f"note: using the {backend} backend ({note})")
    env = dict(os.environ, ROS_DOMAIN_ID=str(random.randint(1, 101)), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_LOG_DIR=str(args.work / "roslog"), PYTHONUNBUFFERED="1")
    for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOG_DIR"):
        os.environ[k] = env[k]
    from geoloc_ros.evaluation.live import mount_param_from_bag
    from geoloc_ros.pipeline import LocalizerConfig
    from geoloc_ros.sim.bag import read_truth_csv

    tr = read_truth_csv(drive / "truth.csv")
    dist = float(np.sum(np.hypot(np.diff(tr["x"]), np.diff(tr["y"]))))
    expected = {"kf_hz": round(dist / LocalizerConfig().keyframe_spacing_m / max(float(tr["t"][-1] - tr["t"][0]), 1e-6),
                               2)}
    common = {"model": args.model, "backend": backend, "index_path": str(index), "encoder_threads": 1,
              "publish_on_fix": False, "publish_debug_image": False, "image_queue_size": 2,
              "expected_image_hz": args.camera_hz, "expected_fix_hz": args.gnss_hz, "expected_odom_hz": args.odom_hz}
    metric = dict(common, orthophoto=str(world / "orthophoto.tif"), camera_mount=mount_param_from_bag(drive / "bag"))
    feeder = Feeder(drive, args.imu_hz)
    rows = []
    try:
        for comp in (False, True):
            for threads in (1, 3):
                name = f"metric, {'jpeg' if comp else 'raw'}, {threads} thread{'s' if threads > 1 else ''}"
                rows.append(run_row(name, feeder, dict(metric, compressed=comp, executor_threads=threads), env,
                                    args.work, expected))
            # best effort over UDP drops small messages among the fragments of raw HD frames: reliable inputs
            name = f"metric, {'jpeg' if comp else 'raw'}, 1 thread, reliable"
            rows.append(run_row(name, feeder, dict(metric, compressed=comp, input_reliability="reliable"), env,
                                args.work, expected))
        if args.retrieval:
            rows.append(run_row("retrieval, raw, 1 thread", feeder, common, env, args.work, expected))
    finally:
        feeder.close()
    for r in rows:
        r["baseline_ms"] = round(base, 1)
        r["vs_baseline"] = round(r["lat_p50_ms"] / base, 2) if r["lat_p50_ms"] else None
    print(table(rows, list(rows[0])))
    print(f"camera {args.width}x{args.height} rgb8 {args.camera_hz:g} Hz, GNSS {args.gnss_hz:g} Hz, odometry "
          f"{args.odom_hz:g} Hz, IMU {args.imu_hz:g} Hz, {args.seconds:g} s drive ({dist:.0f} m); baseline = one "
          f"frame_features call ({backend}, 1 thread) in this process")
    print(f"wrote {write('node', rows, args.out, backend=backend, backend_note=note, camera_hz=args.camera_hz)}")


if __name__ == "__main__":
    main()
