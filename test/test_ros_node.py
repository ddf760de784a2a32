"""geoloc_node end to end with real Fast DDS across processes.

`geoloc play` (process) plays a short synthetic drive -> `geoloc_node` (process, real encoder, real
FAISS tile index, real Localizer) -> a recorder (process) writes the corrected NavSatFix and
/diagnostics to JSON lines. Then bad input is published at the same node from this process: it
must keep running and report each drop by reason in /diagnostics. Start-up failures (missing
index, missing model, bad parameters) must end the process with a clear message and status 2.

Every process gets a ROS_DOMAIN_ID no other test of the run uses (_shared.ros_domain),
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a log folder under tmp. The drive and the tile index are
the suite's shared ones (conftest.py).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _shared import DRIVE_S, ros_domain

from geoloc_ros.evaluation.live import isolated_env, stop_process, wait_for

pytest.importorskip("rclpy", reason="rclpy not installed (pip install .[ros])")
pytest.importorskip("sensor_msgs.msg", reason="ROS 2 messages not installed (pip install .[ros])")

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 180.0  # the machine is shared: loading torch + the model can be slow

RECORDER = r'''
import json, signal, sys, time
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, NavSatFix
from diagnostic_msgs.msg import DiagnosticArray

out = open(sys.argv[1], "w")
rclpy.init()
node = rclpy.create_node("geoloc_test_recorder")
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
signal.signal(signal.SIGINT, lambda *a: stop.append(1))

def write(d):
    d["recv"] = time.time()
    out.write(json.dumps(d) + "\n")
    out.flush()

def on_fix(m):
    write({"topic": "fix", "t": m.header.stamp.sec + m.header.stamp.nanosec * 1e-9, "lat": m.latitude,
           "lon": m.longitude, "status": m.status.status, "cov": list(m.position_covariance),
           "cov_type": m.position_covariance_type, "frame_id": m.header.frame_id})

def on_diag(m):
    for s in m.status:
        lvl = s.level if isinstance(s.level, int) else s.level[0]
        write({"topic": "diag", "name": s.name, "level": lvl, "message": s.message,
               "values": {kv.key: kv.value for kv in s.values}})

def on_debug(m):
    write({"topic": "debug_image", "height": m.height, "width": m.width, "encoding": m.encoding,
           "nbytes": len(m.data)})

node.create_subscription(NavSatFix, "/geoloc/fix", on_fix, 100)
node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 100)
node.create_subscription(Image, "/geoloc/debug_image", on_debug, qos_profile_sensor_data)
write({"topic": "ready"})
while not stop and rclpy.ok():
    rclpy.spin_once(node, timeout_sec=0.1)
out.close()
'''

def ros_env(tmp: Path) -> dict:
    """Environment for one test's ROS processes (evaluation.live.isolated_env): a domain no other test
    of this run uses (_ros.ros_domain), localhost discovery, logs in tmp; one BLAS thread per process."""
    return {**isolated_env(tmp / "roslog", domain=ros_domain()), "OMP_NUM_THREADS": "1"}


def read_jsonl(path: Path):
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass  # a line being written
    return rows


# ------------------------------------------------------------------------------------------ data
# drive_dir (24 s drive, seed 5) and index_dir (corridor index along it) come from conftest.py


def write_params(path: Path, **over) -> Path:
    import yaml

    doc = {"geoloc_node": {"ros__parameters": dict({"model": "seqgeo_lite", "backend": "torch",
                                                    "encoder_threads": 1, "stale_input_s": 30.0}, **over)}}
    path.write_text(yaml.safe_dump(doc))
    return path


# the integration test checks what the node computes, not how fast this shared machine is: a long
# image queue so no frame is dropped while the worker catches up (drops under load: bench/bench_node.py)
TEST_NODE_PARAMS = {"image_queue_size": 1000, "stale_input_s": 600.0}


def node_cmd(params_file: Path, *extra: str):
    return [sys.executable, "-m", "geoloc_ros.ros.node", "--ros-args", "--params-file", str(params_file), *extra]


# ------------------------------------------------------------------------------------------ the node


@pytest.fixture(scope="module")
def running_node(index_dir, small_world_dir, tmp_path_factory):
    """One geoloc_node process for the module (started once: loading the model takes a while)."""
    tmp = tmp_path_factory.mktemp("ros_node")
    env = ros_env(tmp)
    params = write_params(tmp / "params.yaml", index_path=str(index_dir), use_sim_time=True, **TEST_NODE_PARAMS)
    log = tmp / "node.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(node_cmd(params), env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_for(lambda: "geoloc_node ready" in log.read_text(), READY_TIMEOUT_S, "geoloc_node ready", proc, log)
        yield {"proc": proc, "env": env, "log": log, "tmp": tmp}
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def recorded_drive(running_node, drive_dir):
    """Play the drive into the node and record its outputs (JSON lines)."""
    tmp, env = running_node["tmp"], running_node["env"]
    rec_out = tmp / "recorded.jsonl"
    script = tmp / "recorder.py"
    script.write_text(RECORDER)
    rec = subprocess.Popen([sys.executable, str(script), str(rec_out)], env=env, cwd=ROOT,
                           stdout=open(tmp / "recorder.log", "w"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: any(r["topic"] == "ready" for r in read_jsonl(rec_out)), 60, "recorder", rec)
        # twice real time (the node runs on the player's /clock, its queue holds every frame)
        play = subprocess.run([sys.executable, "-m", "geoloc_ros.tools.play", str(drive_dir), "--rate", "2",
                               "--wait-for", "/camera/image_raw", "/gnss/fix", "/odom", "--delay-s", "1.0", "--clock"],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=DRIVE_S * 4 + 120)
        assert play.returncode == 0, play.stdout + play.stderr
        assert "played" in play.stdout
        # the worker may still be busy with the last frames: wait until the queue is empty, then
        # for two more diagnostics
        def drained():
            d = [r for r in read_jsonl(rec_out) if r["topic"] == "diag"]
            return d and d[-1]["values"].get("queue.depth") == "0" and \
                int(d[-1]["values"].get("count.images_in", 0)) > 0
        wait_for(drained, 300, "the node to drain its queue", running_node["proc"], running_node["log"])
        time.sleep(2.5)
    finally:
        stop_process(rec)
    rows = read_jsonl(rec_out)
    return {"rows": rows, "node": running_node, "play": play.stdout}


def _truth_xy_at(drive_dir: Path, t: np.ndarray):
    from geoloc_ros.sim.bag import read_truth_csv

    truth = read_truth_csv(drive_dir / "truth.csv")
    ts = truth["stamp_ns"] * 1e-9
    return np.interp(t, ts, truth["x"]), np.interp(t, ts, truth["y"]), ts


def _frame(drive_dir: Path):
    from geoloc_ros.core.geo import LocalFrame

    return LocalFrame.from_dict(json.loads((drive_dir / "drive.json").read_text())["world"]["frame"])


def test_corrected_fix_error_is_well_below_raw_gnss_error(recorded_drive, drive_dir):
    from geoloc_ros.bag import read_bag
    from geoloc_ros.core import msgconv

    frame = _frame(drive_dir)
    fixes = [r for r in recorded_drive["rows"] if r["topic"] == "fix"]
    assert len(fixes) > 40, f"only {len(fixes)} corrected fixes recorded; node log:\n" + \
        recorded_drive["node"]["log"].read_text()[-3000:]
    for f in fixes:
        assert f["cov_type"] == 3 and f["frame_id"] == "base_link"
        c = np.asarray(f["cov"]).reshape(3, 3)
        assert np.all(np.isfinite(c)) and c[0, 0] > 0 and c[1, 1] > 0
    t = np.array([f["t"] for f in fixes])
    lat = np.array([f["lat"] for f in fixes])
    lon = np.array([f["lon"] for f in fixes])
    ok = np.array([f["status"] >= 0 for f in fixes])
    x, y = frame.from_latlon(lat, lon)
    tx, ty, ts = _truth_xy_at(drive_dir, t)
    inside = (t >= ts[0]) & (t <= ts[-1])
    err = np.hypot(x - tx, y - ty)[ok & inside]

    raw = [msgconv.navsatfix(m) for _, _, m in read_bag(drive_dir / "bag", ["/gnss/fix"])]
    raw = [r for r in raw if r.ok]
    rt = np.array([r.t for r in raw])
    rx, ry = frame.from_latlon(np.array([r.lat for r in raw]), np.array([r.lon for r in raw]))
    rtx, rty, _ = _truth_xy_at(drive_dir, rt)
    # compare over the same time span: after the node's first valid output
    span = rt >= t[ok].min()
    raw_err = np.hypot(rx - rtx, ry - rty)[span]
    print(f"\nraw GNSS error: median {np.median(raw_err):.2f} m, RMS {np.sqrt(np.mean(raw_err ** 2)):.2f} m "
          f"({raw_err.size} fixes); corrected: median {np.median(err):.2f} m, RMS {np.sqrt(np.mean(err ** 2)):.2f} m "
          f"({err.size} outputs)")
    assert err.size >= 0.5 * len(fixes), "most outputs should carry a fix status (tracking or degraded)"
    # the drive has a multipath episode (raw errors of 20+ m): the output must not follow it. (With the
    # shipped 2-epoch model the Localizer's gates reject most camera matches on this town, so the gain
    # here is the gating and smoothing; the typical error must at least not get worse.)
    rms, raw_rms = np.sqrt(np.mean(err ** 2)), np.sqrt(np.mean(raw_err ** 2))
    assert rms < 0.5 * raw_rms
    assert np.percentile(err, 95) < 0.5 * np.percentile(raw_err, 95)
    assert err.max() < 0.5 * raw_err.max()
    assert np.median(err) < 1.25 * np.median(raw_err)


def test_diagnostics_report_ok_and_nothing_dropped_on_a_clean_drive(recorded_drive, drive_dir):
    from geoloc_ros.bag import bag_topics

    diags = [r for r in recorded_drive["rows"] if r["topic"] == "diag" and r["name"].startswith("geoloc_node")]
    assert len(diags) >= 5
    last = diags[-1]
    v = last["values"]
    # what the transport lost before the node's queue is counted from the stamps that arrived: the expected
    # counts are what the bag holds (2 %, plus the last frames if they were the lost ones)
    bag = bag_topics(drive_dir / "bag")
    for k, topic in (("image", "/camera/image_raw"), ("fix", "/gnss/fix"), ("odom", "/odom")):
        n = bag[topic][1]
        assert abs(int(v[f"input.{k}.expected"]) - n) <= 0.02 * n + 3, (k, n, v[f"input.{k}.expected"])
        assert int(v[f"input.{k}.received"]) <= n
    assert v["input.image.received"] == v["count.images_in"] and v["input.fix.received"] == v["count.fixes_in"]
    print("\nreceived of expected: " + ", ".join(f"{k} {v[f'input.{k}.received']}/{v[f'input.{k}.expected']}"
                                                  for k in ("image", "fix", "odom")))
    # OK, unless an input delivered less than input_min_share (0.9): then WARN, naming it
    low = [k for k in ("image", "fix", "odom") if float(v[f"input.{k}.recent_share"]) < 0.9]
    if low:
        assert last["level"] == 1 and all(f"{k} input at" in last["message"] for k in low), last["message"]
    else:
        assert last["level"] == 0, last["message"]
    assert v["status"] == "tracking", v
    assert v["drops.total"] == "0", {k: x for k, x in v.items() if k.startswith("drops.")}
    assert v["backend"] == "torch" and int(v["count.keyframes"]) > 10
    assert float(v["latency.receipt_to_publish_p50_ms"]) > 0
    # use_sim_time: the node clock followed the player's /clock (bag time), so image stamp -> publish is
    # measurable (without it the stamps are 2023 and the node clock is now: not reported)
    assert 0 <= float(v["latency.stamp_to_publish_p50_ms"]) < 600e3, v["latency.stamp_to_publish_p50_ms"]
    assert int(v["index.tiles_loaded"]) > 0
    # while the drive played, the node said OK at least half of the time after it started tracking
    playing = [d for d in diags if d["values"]["status"] == "tracking"]
    assert sum(d["level"] == 0 or "input at" in d["message"] for d in playing) >= 0.5 * len(playing)


def test_debug_image_is_published_while_someone_listens(recorded_drive):
    dbg = [r for r in recorded_drive["rows"] if r["topic"] == "debug_image"]
    assert dbg, "no debug image"
    assert dbg[-1]["encoding"] == "rgb8" and dbg[-1]["height"] == dbg[-1]["width"] == 400
    assert dbg[-1]["nbytes"] == 400 * 400 * 3


# ------------------------------------------------------------------------------------------ bad input


class Probe:
    """rclpy in this process (same domain as the node): publishes inputs, keeps the diagnostics."""

    def __init__(self, env: dict, wait_subscribed: bool = True):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from nav_msgs.msg import Path as PathMsg
        from rcl_interfaces.msg import Log
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile
        from sensor_msgs.msg import Image, NavSatFix
        from visualization_msgs.msg import MarkerArray

        self._saved = {k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOG_DIR")}
        for k in self._saved:
            os.environ[k] = env[k]
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("geoloc_test_probe", context=self.ctx)
        rel = QoSProfile(depth=50)
        self.pub_img = self.node.create_publisher(Image, "/camera/image_raw", rel)
        self.pub_fix = self.node.create_publisher(NavSatFix, "/gnss/fix", rel)
        self.diags = []
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)
        # every output of the node, counted by topic (what a lifecycle test needs to see stop)
        self.outputs = {}
        for cls, topic in ((NavSatFix, "/geoloc/fix"), (PoseWithCovarianceStamped, "/geoloc/pose"),
                           (PathMsg, "/geoloc/path"), (MarkerArray, "/geoloc/candidates"),
                           (DiagnosticArray, "/diagnostics")):
            self.outputs[topic] = 0
            self.node.create_subscription(cls, topic, lambda m, t=topic: self._count_output(t), 50)
        self.logs = []  # (level, node name, text) from /rosout
        self.node.create_subscription(Log, "/rosout", lambda m: self.logs.append((int(m.level), m.name, m.msg)),
                                      QoSProfile(depth=1000, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()
        if wait_subscribed:
            self.wait_subscribed()

    def wait_subscribed(self, timeout=30.0):
        wait_for(lambda: self.pub_img.get_subscription_count() > 0 and self.pub_fix.get_subscription_count() > 0,
                 timeout, "the node's subscriptions")

    def _count_output(self, topic):
        self.outputs[topic] += 1

    def lifecycle(self, transition: str = "", timeout=300.0):
        """Request a lifecycle transition of /geoloc_node over DDS (configure, activate, ...) -> success;
        without one: the current state's label."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState, GetState

        name = "change_state" if transition else "get_state"
        cli = self.node.create_client(ChangeState if transition else GetState, f"/geoloc_node/{name}")
        try:
            assert cli.wait_for_service(timeout_sec=60), f"no /geoloc_node/{name} service"
            if transition:
                req = ChangeState.Request()
                req.transition = Transition(id=getattr(Transition, f"TRANSITION_{transition.upper()}"))
            else:
                req = GetState.Request()
            fut = cli.call_async(req)
            res = wait_for(lambda: fut.done() and (fut.result(),), timeout, f"lifecycle {name} {transition}")[0]
            return res.success if transition else res.current_state.label
        finally:
            self.node.destroy_client(cli)

    def _spin(self):
        while self.ctx.ok():
            try:
                self.ex.spin_once(timeout_sec=0.1)
            except Exception:
                return

    def _on_diag(self, m):
        for s in m.status:
            if s.name.startswith("geoloc_node"):
                lvl = s.level if isinstance(s.level, int) else s.level[0]
                self.diags.append((lvl, s.message, {kv.key: kv.value for kv in s.values}))

    def counter(self, key: str) -> int:
        return int(self.diags[-1][2].get(key, 0)) if self.diags else 0

    def wait_counter(self, key: str, at_least: int, proc, log, timeout=30.0) -> int:
        return wait_for(lambda: self.counter(key) >= at_least and self.counter(key), timeout,
                        f"diagnostics {key} >= {at_least}", proc, log)

    def image(self, t: float, encoding="rgb8", h=128, w=256, data=None, step=None):
        from sensor_msgs.msg import Image

        from geoloc_ros.core.msgconv import sec_to_stamp_parts

        m = Image(height=h, width=w, encoding=encoding, is_bigendian=0, step=step if step is not None else 3 * w)
        m.header.stamp.sec, m.header.stamp.nanosec = sec_to_stamp_parts(t)
        m.header.frame_id = "camera_optical_frame"
        m.data = data if data is not None else bytes(np.random.default_rng(int(t)).integers(0, 255, h * w * 3,
                                                                                              dtype=np.uint8))
        self.pub_img.publish(m)

    def fix(self, t: float, lat: float, lon: float, status: int = 0,
            cov=(9.0, 0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 25.0), cov_type: int = 2):
        from sensor_msgs.msg import NavSatFix

        from geoloc_ros.core.msgconv import sec_to_stamp_parts

        m = NavSatFix(latitude=lat, longitude=lon, altitude=50.0, position_covariance_type=cov_type)
        m.position_covariance = [float(c) for c in cov]
        m.status.status = status
        m.header.stamp.sec, m.header.stamp.nanosec = sec_to_stamp_parts(t)
        self.pub_fix.publish(m)

    def close(self):
        import rclpy

        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)
        self._thread.join(2.0)
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def probe(running_node):
    p = Probe(running_node["env"])
    yield p
    p.close()


@pytest.fixture(scope="module")
def origin(drive_dir):
    """A point inside the index (the drive's start) and a time after the drive."""
    from geoloc_ros.sim.bag import read_truth_csv

    tr = read_truth_csv(drive_dir / "truth.csv")
    return float(tr["lat"][0]), float(tr["lon"][0]), float(tr["stamp_ns"][-1] * 1e-9) + 1000.0


def _still_running(node):
    assert node["proc"].poll() is None, "geoloc_node died:\n" + node["log"].read_text()[-3000:]


def _dropped_reported(probe, reason):
    """Some diagnostics message said it dropped messages for this reason (level WARN)."""
    return any(lvl == 1 and reason in msg for lvl, msg, _ in probe.diags)


def test_wrong_encodings_are_dropped_counted_and_reported(running_node, probe, origin):
    lat, lon, t0 = origin
    before = probe.counter("drops.image.unsupported_encoding")
    probe.image(t0 + 1, encoding="yuv422", data=bytes(128 * 256 * 2), step=512)
    probe.image(t0 + 2, encoding="32FC1", data=bytes(128 * 256 * 4), step=1024)
    probe.image(t0 + 3, encoding="bayer_rggb8", data=bytes(128 * 256), step=256)
    probe.wait_counter("drops.image.unsupported_encoding", before + 3, running_node["proc"], running_node["log"])
    wait_for(lambda: _dropped_reported(probe, "image.unsupported_encoding"), 10, "a WARN naming the reason")
    _still_running(running_node)
    assert "image encoding 'yuv422' is not supported" in running_node["log"].read_text()


def test_empty_and_truncated_images_are_dropped(running_node, probe, origin):
    lat, lon, t0 = origin
    e0, t_0 = probe.counter("drops.image.empty"), probe.counter("drops.image.truncated")
    probe.image(t0 + 4, data=b"")
    probe.image(t0 + 5, h=0, w=0, data=b"", step=0)
    probe.image(t0 + 6, data=bytes(128 * 256 * 3 - 100))
    probe.wait_counter("drops.image.empty", e0 + 2, running_node["proc"], running_node["log"])
    probe.wait_counter("drops.image.truncated", t_0 + 1, running_node["proc"], running_node["log"])
    _still_running(running_node)


def test_nan_fixes_are_counted_and_the_node_keeps_running(running_node, probe, origin):
    lat, lon, t0 = origin
    n0 = probe.counter("drops.fix.nan_position")
    probe.fix(t0 + 7, float("nan"), lon)
    probe.fix(t0 + 7.2, lat, float("inf"))
    probe.wait_counter("drops.fix.nan_position", n0 + 2, running_node["proc"], running_node["log"])
    probe.fix(t0 + 7.4, lat, lon)  # and a good one is still used afterwards
    _still_running(running_node)


def test_time_going_backwards_resets_and_is_reported(running_node, probe, origin):
    lat, lon, t0 = origin
    n0 = probe.counter("events.time_backwards")
    probe.fix(t0 + 20, lat, lon)
    probe.image(t0 + 20)
    time.sleep(0.5)
    probe.fix(t0 + 10, lat, lon)  # 10 s back
    probe.image(t0 + 10.1)
    probe.wait_counter("events.time_backwards", n0 + 1, running_node["proc"], running_node["log"])
    _still_running(running_node)
    # after the reset the node takes new input in the new time line without complaint
    probe.fix(t0 + 10.5, lat, lon)
    time.sleep(1.0)
    _still_running(running_node)


def test_fix_outside_the_index_coverage_is_reported(running_node, probe, origin):
    lat, lon, t0 = origin
    n0 = probe.counter("events.fix.outside_index")
    probe.fix(t0 + 30, lat + 0.5, lon + 0.5)  # ~60 km away
    probe.fix(t0 + 30.2, lat + 0.5, lon + 0.5)
    probe.wait_counter("events.fix.outside_index", n0 + 2, running_node["proc"], running_node["log"])
    wait_for(lambda: _dropped_reported(probe, "fix.outside_index"), 10, "a WARN naming it")
    _still_running(running_node)
    assert "outside the tile index coverage" in running_node["log"].read_text()


def test_invalid_gnss_covariances_are_counted_as_substitutions(running_node, probe, origin):
    """NaN, negative, and zeros with a KNOWN type: the default sigma is used, and each time is counted
    (events.fix.covariance_invalid, WARN); an UNKNOWN covariance is not a substitution."""
    lat, lon, t0 = origin
    n0, f0 = probe.counter("events.fix.covariance_invalid"), probe.counter("count.fixes_in")
    nan = float("nan")
    for i, (cov, ctype) in enumerate((((nan,) * 9, 3), ((-4, 0, 0, 0, 4, 0, 0, 0, 9), 2), ((0.0,) * 9, 3),
                                      ((0.0,) * 9, 0), ((4, 0, 0, 0, 4, 0, 0, 0, 9), 2))):
        probe.fix(t0 + 40 + 0.2 * i, lat, lon, cov=cov, cov_type=ctype)
        time.sleep(0.05)
    probe.wait_counter("count.fixes_in", f0 + 5, running_node["proc"], running_node["log"])
    assert probe.counter("events.fix.covariance_invalid") == n0 + 3
    wait_for(lambda: _dropped_reported(probe, "fix.covariance_invalid"), 10, "a WARN naming it")
    assert "has NaN, negative or zero variances: the default sigma 5 m is used" in running_node["log"].read_text()
    _still_running(running_node)


def test_lost_input_is_counted_from_the_stamps_and_warned_about(running_node, probe, origin):
    """A 10 Hz fix stream of which one message in three never arrives: the node counts what its stamps
    say was sent (expected) against what came (received) and warns, naming the input."""
    lat, lon, t0 = origin

    def v(key):
        return int(probe.diags[-1][2][key])

    r0, e0, b0, n0 = v("input.fix.received"), v("input.fix.expected"), v("input.fix.breaks"), v("count.fixes_in")
    t1 = t0 + 3000.0  # a new segment of the stream (a break, not lost messages)
    sent = [k for k in range(60) if k % 3 != 1]
    for k in sent:
        probe.fix(t1 + 0.1 * k, lat, lon)
        time.sleep(0.03)
    time.sleep(2.5)  # two more diagnostics
    got, exp = v("input.fix.received") - r0, v("input.fix.expected") - e0
    assert got == v("count.fixes_in") - n0 and 0 < got <= len(sent), got
    assert 50 <= exp <= 60, exp  # 60 stamps' worth (fewer only if the last ones were lost too)
    assert v("input.fix.breaks") >= b0 + 1
    assert float(probe.diags[-1][2]["input.fix.stream_hz"]) == pytest.approx(10, 0.02)
    lvl, msg, _ = probe.diags[-1]
    assert lvl >= 1 and "fix input at" in msg and "10.0 Hz" in msg, msg
    _still_running(running_node)


def test_compressed_images_from_a_bag_reach_the_localizer(index_dir, drive_dir, tmp_path):
    """compressed:=true: the node subscribes IMAGE_TOPIC/compressed (JPEG) and localizes from it."""
    env = ros_env(tmp_path)
    params = write_params(tmp_path / "p.yaml", index_path=str(index_dir), compressed=True, **TEST_NODE_PARAMS)
    log = tmp_path / "node.log"
    rec_out = tmp_path / "rec.jsonl"
    (tmp_path / "rec.py").write_text(RECORDER)
    with open(log, "w") as f:
        node = subprocess.Popen(node_cmd(params), env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    rec = subprocess.Popen([sys.executable, str(tmp_path / "rec.py"), str(rec_out)], env=env, cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "geoloc_node ready" in log.read_text(), READY_TIMEOUT_S, "geoloc_node ready", node, log)
        assert "camera /camera/image_raw/compressed (compressed)" in log.read_text()
        play = subprocess.run([sys.executable, "-m", "geoloc_ros.tools.play", str(drive_dir), "--rate", "2",
                               "--duration-s", "10", "--topics", "/camera/image_raw/compressed", "/gnss/fix", "/odom",
                               "--wait-for", "/camera/image_raw/compressed", "/gnss/fix"],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert play.returncode == 0, play.stderr

        def done():
            d = [r for r in read_jsonl(rec_out) if r["topic"] == "diag"]
            v = d[-1]["values"] if d else {}
            return d and v["queue.depth"] == "0" and int(v["count.keyframes"]) >= 1 and \
                v["count.images_processed"] == v["count.images_converted"] and d[-1]
        last = wait_for(done, 180, "keyframes from compressed images", node, log)
        v = last["values"]
        # what the node controls, not what the transport delivered on a loaded machine: every frame that
        # reached it was converted (JPEG) and processed, and its counters agree with each other
        n_in = int(v["count.images_in"])
        # (the failure names the drops: it was once seen with one drop on a loaded 2-core machine)
        assert n_in > 0 and v["drops.total"] == "0", {k: x for k, x in v.items() if "drop" in k or k.startswith("input")}
        assert int(v["count.images_converted"]) == int(v["count.images_processed"]) == n_in, v
        assert int(v["input.image.received"]) == n_in
        assert n_in <= int(v["input.image.expected"]) <= 10 * 10 + 2  # 10 s of a 10 Hz camera were played
        assert any(r["topic"] == "fix" for r in read_jsonl(rec_out))
        assert node.poll() is None
    finally:
        stop_process(rec)
        stop_process(node)
    # Ctrl-C: a clean stop, nothing alarming printed
    text = log.read_text()
    assert node.returncode == 0, text[-3000:]
    assert "geoloc_node stopped" in text and "Failed to publish" not in text and "Traceback" not in text, text[-3000:]


# ------------------------------------------------------------------------------------------ lifecycle


def _lifecycle_node(tmp_path, **params):
    env = ros_env(tmp_path)
    pfile = write_params(tmp_path / "lc.yaml", **params)
    log = tmp_path / "lifecycle.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "geoloc_ros.ros.lifecycle", "--ros-args", "--params-file",
                                 str(pfile)], env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    return env, proc, log


def _clean_stop(proc, log):
    """Ctrl-C: exit status 0 and nothing alarming printed."""
    stop_process(proc)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "Failed to publish" not in text and "Traceback" not in text, text[-3000:]
    return text


def test_lifecycle_node_follows_its_transitions_over_dds_and_is_silent_while_inactive(index_dir, origin, tmp_path):
    """geoloc_lifecycle_node driven over DDS (lifecycle_msgs services, as nav2's lifecycle manager or
    `ros2 lifecycle set` do): unconfigured -> configure (loads) -> inactive: no subscriptions, nothing
    published -> activate: subscribed, publishing -> deactivate: silent again -> cleanup -> Ctrl-C."""
    lat, lon, t0 = origin
    env, proc, log = _lifecycle_node(tmp_path, index_path=str(index_dir), diagnostics_period_s=0.2,
                                     **TEST_NODE_PARAMS)
    probe = Probe(env, wait_subscribed=False)
    try:
        assert probe.lifecycle() == "unconfigured"
        assert probe.pub_fix.get_subscription_count() == 0  # nothing loaded, nothing subscribed

        def feed(t, n=10):
            for i in range(n):
                probe.fix(t + 0.2 * i, lat, lon)
                probe.image(t + 0.2 * i)
                time.sleep(0.1)

        def silent_while_fed(t):
            time.sleep(0.5)  # what was on its way before the transition
            before = dict(probe.outputs)
            feed(t)
            time.sleep(1.0)
            assert probe.outputs == before, (before, probe.outputs)
            assert probe.pub_fix.get_subscription_count() == 0 and probe.pub_img.get_subscription_count() == 0

        assert probe.lifecycle("configure") is True and probe.lifecycle() == "inactive"
        assert "configured: retrieval: model seqgeo_lite (torch)" in log.read_text()
        silent_while_fed(t0 + 100)
        assert sum(probe.outputs.values()) == 0

        assert probe.lifecycle("activate") is True and probe.lifecycle() == "active"
        probe.wait_subscribed()
        feed(t0 + 200)
        wait_for(lambda: probe.outputs["/geoloc/fix"] > 0 and probe.outputs["/diagnostics"] > 0, 30,
                 "outputs while active", proc, log)
        wait_for(lambda: probe.counter("count.fixes_in") > 0, 10, "diagnostics counting the input", proc, log)

        assert probe.lifecycle("deactivate") is True and probe.lifecycle() == "inactive"
        silent_while_fed(t0 + 300)

        assert probe.lifecycle("cleanup") is True and probe.lifecycle() == "unconfigured"
        assert "model and index released" in log.read_text()
        # and up again: configure + activate after a cleanup works (a bring-up that recovers)
        assert probe.lifecycle("configure") is True and probe.lifecycle("activate") is True
        probe.wait_subscribed()
    finally:
        probe.close()
    _clean_stop(proc, log)


def test_lifecycle_configure_fails_cleanly_on_a_missing_index_or_model(index_dir, tmp_path):
    """configure returns failure, the node stays unconfigured and alive, and /rosout carries one ERROR
    saying what to fix (no traceback)."""
    cases = [({"index_path": str(tmp_path / "no_such_index")}, ["no_such_index does not exist", "geoloc index build"]),
             ({"index_path": str(index_dir), "model": str(tmp_path / "engines" / "nothing_here"),
               "backend": "onnxruntime"}, ["nothing_here"])]
    for i, (params, needles) in enumerate(cases):
        sub = tmp_path / f"case{i}"
        sub.mkdir()
        env, proc, log = _lifecycle_node(sub, **params)
        probe = Probe(env, wait_subscribed=False)
        try:
            assert probe.lifecycle() == "unconfigured"
            assert probe.lifecycle("configure") is False
            assert probe.lifecycle() == "unconfigured" and proc.poll() is None
            errors = wait_for(lambda: [m for lvl, name, m in probe.logs if lvl >= 40 and name == "geoloc_node"], 10,
                              "an ERROR on /rosout")
            assert errors[0].startswith("configure failed:") and all(n in errors[0] for n in needles), errors
            assert sum(probe.outputs.values()) == 0
        finally:
            probe.close()
        _clean_stop(proc, log)


# ------------------------------------------------------------------------------------------ start-up errors


def _start_fails(tmp_path, params_extra, args=()):
    env = ros_env(tmp_path)
    params = write_params(tmp_path / "p.yaml", **params_extra)
    out = subprocess.run(node_cmd(params, *args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    return out.returncode, out.stdout + out.stderr


def test_missing_index_is_a_clear_error_at_start(tmp_path):
    code, text = _start_fails(tmp_path, {"index_path": str(tmp_path / "no_such_index")})
    assert code == 2, text
    assert "no_such_index does not exist" in text and "geoloc index build" in text
    assert "Traceback" not in text


def test_unset_index_path_and_bad_parameters_are_rejected_at_start(tmp_path):
    code, text = _start_fails(tmp_path, {"backend": "cuda", "image_queue_size": 0})
    assert code == 2, text
    for needle in ("'backend' must be one of auto, tensorrt, onnxruntime, torch", "'image_queue_size' must be in",
                   "set 'orthophoto' (metric matching"):
        assert needle in text, text
    code, text = _start_fails(tmp_path, {"index_path": "/x"}, ["-p", "odom_topc:=/odom"])
    assert code == 2 and "unknown parameter 'odom_topc' (did you mean odom_topic" in text, text


def test_missing_model_or_engine_is_a_clear_error_at_start(tmp_path, index_dir):
    missing = tmp_path / "engines" / "nothing_here"
    code, text = _start_fails(tmp_path, {"index_path": str(index_dir), "model": str(missing),
                                         "backend": "onnxruntime"})
    assert code == 2, text
    assert "nothing_here" in text and "geoloc_node: error:" in text


# ------------------------------------------------------------------------------------------ the player


def test_play_publishes_every_message_bit_exact_with_clock(drive_dir, tmp_path, monkeypatch):
    """`geoloc play` (main(argv), in this process) -> a subscriber in this process on its own context."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image, NavSatFix

    from geoloc_ros.bag import bag_topics, read_bag
    from geoloc_ros.tools.play import main as play

    env = ros_env(tmp_path)
    for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOG_DIR"):
        monkeypatch.setenv(k, env[k])
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("play_check", context=ctx)
    got = {"fix": [], "img": [], "clock": []}
    q = QoSProfile(depth=1000)
    node.create_subscription(NavSatFix, "/gnss/fix", lambda m: got["fix"].append(m), q)
    node.create_subscription(Image, "/camera/image_raw", lambda m: got["img"].append(m), q)
    node.create_subscription(Clock, "/clock", lambda m: got["clock"].append(m.clock.sec + m.clock.nanosec * 1e-9), q)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    stop = threading.Event()
    th = threading.Thread(target=lambda: [ex.spin_once(timeout_sec=0.05) for _ in iter(stop.is_set, True)],
                          daemon=True)
    th.start()
    try:
        t0 = time.monotonic()
        out = play([str(drive_dir), "--rate", "6", "--clock", "--topics", "/gnss/fix", "/camera/image_raw",
                    "--wait-for", "/gnss/fix", "/camera/image_raw"])
        played_s = time.monotonic() - t0
        assert out == drive_dir / "bag"
        wait_for(lambda: len(got["fix"]) >= bag_topics(drive_dir / "bag")["/gnss/fix"][1], 10, "all fixes")
    finally:
        stop.set()
        th.join(2)
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    counts = bag_topics(drive_dir / "bag")
    assert len(got["fix"]) == counts["/gnss/fix"][1] and len(got["img"]) == counts["/camera/image_raw"][1]
    assert played_s >= DRIVE_S / 6 * 0.9  # original timing, scaled by the rate
    # exact content: every field of the first image as recorded (pixels byte for byte)
    first = next(m for _, _, m in read_bag(drive_dir / "bag", ["/camera/image_raw"]))
    g = got["img"][0]
    assert (g.height, g.width, g.encoding, g.step, g.header.frame_id) == \
        (first.height, first.width, first.encoding, first.step, first.header.frame_id)
    assert (g.header.stamp.sec, g.header.stamp.nanosec) == (first.header.stamp.sec, first.header.stamp.nanosec)
    assert bytes(g.data) == first.data.tobytes()
    # /clock follows the bag time, never backwards, and spans the drive
    c = np.asarray(got["clock"])
    assert c.size > 20 and np.all(np.diff(c) >= 0)
    stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in got["fix"]]
    assert c.min() <= stamps[0] + 1e-6 and c.max() >= stamps[-1] - 1e-6


def test_play_refuses_unknown_topics_and_missing_bags(drive_dir, tmp_path):
    from geoloc_ros.core.errors import InvalidArgument
    from geoloc_ros.tools.play import main as play

    with pytest.raises(InvalidArgument, match="does not exist"):
        play([str(tmp_path / "nothing")])
    with pytest.raises(InvalidArgument, match="topics not in"):
        play([str(drive_dir), "--topics", "/no/such/topic"])


def test_metric_matching_without_a_way_to_know_the_mounting_refuses_to_start_with_one_line(small_world_dir, tmp_path):
    """An orthophoto alone is a valid configuration, but the camera mounting is never guessed: with no
    tf2_msgs (/tf_static unreadable) and no camera_mount the node exits 2 saying what to set; with
    camera_mount it starts on the orthophoto alone (no index, no model loaded) and logs the mounting."""
    pytest.importorskip("rclpy")
    try:
        import tf2_msgs.msg  # noqa: F401
        has_tf2 = True
    except ImportError:
        has_tf2 = False
    ortho = str(small_world_dir / "orthophoto.tif")
    if not has_tf2:
        code, text = _start_fails(tmp_path, {"orthophoto": ortho})
        assert code == 2, text
        assert "set camera_mount:=[x, y, z, roll, pitch, yaw]" in text and "Traceback" not in text, text
    env = ros_env(tmp_path)
    params = write_params(tmp_path / "ok.yaml", orthophoto=ortho, camera_mount=[0.0, 0.0, 1.5, 0.0, 5.0, 0.0])
    log = tmp_path / "node.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(node_cmd(params), env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "geoloc_node ready" in log.read_text(), 120.0, "geoloc_node ready", proc, log)
    finally:
        text = _clean_stop(proc, log)
    assert "loaded metric matching on" in text and "and retrieval on" not in text, text
    assert "camera mounting: camera_mount [0.0, 0.0, 1.5, 0.0, 5.0, 0.0]" in text, text


def test_the_node_stops_on_sigint_even_when_its_parent_blocked_it(index_dir, tmp_path):
    """A blocked or ignored SIGINT is inherited by a child process (a test runner's worker, a launcher):
    the node restores it, so Ctrl-C still stops it cleanly (before, it had to be killed)."""
    import signal

    env = ros_env(tmp_path)
    params = write_params(tmp_path / "p.yaml", index_path=str(index_dir))
    log = tmp_path / "node.log"

    def deaf():
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    with open(log, "w") as f:
        proc = subprocess.Popen(node_cmd(params), env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                preexec_fn=deaf)
    try:
        wait_for(lambda: "geoloc_node ready" in log.read_text(), 120.0, "geoloc_node ready", proc, log)
    finally:
        text = _clean_stop(proc, log)
    assert "geoloc_node stopped" in text, text
