"""A bag through the real node over DDS, recorded as a bag (what ``geoloc demo`` runs after the replay).

``run_node_on_bag`` starts ``geoloc_node`` (its own process), records the node's outputs in this
process (raw CDR straight into an MCAP bag with ``bag.BagWriter``, like ``ros2 bag record``), plays the bag
with ``geoloc play`` (a third process) with /clock, waits until the node's queue is empty, and
stops everything. It runs on ``ROS_DOMAIN_ID`` when that is set, else on a random domain in 1-101
(printed, so rviz or Foxglove can join it), with localhost discovery, so it never talks to a robot
on the same network. ``compare_with_replay`` puts the node's published fixes next to
the replay of the same bag.

It lives with the evaluation, not in ``ros/`` (the node and its conversions): it is a test harness
around the node, which it starts as a separate process. rclpy is imported inside ``_record`` only.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..core.errors import GeolocError, InvalidArgument

RECORDED = {  # topic -> message type: what the demo keeps of the node's outputs
    "/geoloc/fix": "sensor_msgs/msg/NavSatFix",
    "/geoloc/pose": "geometry_msgs/msg/PoseWithCovarianceStamped",
    "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
}


class NodeRunFailed(GeolocError):
    """geoloc_node or geoloc play ended badly; the message holds the end of their logs."""


DOMAIN_MAX = 101  # ROS 2 on Linux: ids above 101 can collide with ephemeral ports (docs.ros.org, domain id)


def pick_domain() -> Tuple[int, str]:
    """(ROS domain id, where it came from): ``ROS_DOMAIN_ID`` when set, so the user's rviz, Foxglove
    bridge or ``ros2 topic echo`` on that domain see the node; otherwise a random id in 1..101
    (never 0, the default domain a robot on this machine may use)."""
    text = os.environ.get("ROS_DOMAIN_ID", "").strip()
    if text:
        try:
            dom = int(text)
        except ValueError:
            raise InvalidArgument(f"ROS_DOMAIN_ID={text!r} is not a domain id (an integer, 0-{DOMAIN_MAX})") from None
        if not 0 <= dom <= 232:
            raise InvalidArgument(f"ROS_DOMAIN_ID={dom} is out of range (0-{DOMAIN_MAX} on Linux, at most 232)")
        return dom, "ROS_DOMAIN_ID"
    return random.randint(1, DOMAIN_MAX), f"a random id in 1-{DOMAIN_MAX}: ROS_DOMAIN_ID is not set"


def isolated_env(log_dir: Path, domain: Optional[int] = None) -> Dict[str, str]:
    """Environment for ROS processes on ``domain`` (default: ``pick_domain``) with localhost discovery
    (other processes on this machine on the same domain see them; other machines do not)."""
    dom = domain if domain is not None else pick_domain()[0]
    env = dict(os.environ, ROS_DOMAIN_ID=str(dom), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_LOG_DIR=str(log_dir), PYTHONUNBUFFERED="1")
    env.pop("ROS_LOCALHOST_ONLY", None)
    return env


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def stop_process(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGINT (rclpy shuts down cleanly), then kill after ``timeout`` (a loaded 2-core CI machine has
    been seen to need more than 15 s)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(pred, timeout: float, what: str, proc: Optional[subprocess.Popen] = None, log: Optional[Path] = None):
    """Poll ``pred`` until it returns something true (returned); fail early when ``proc`` ends."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            raise NodeRunFailed(f"process ended (status {proc.returncode}) while waiting for {what}:\n"
                                + (_tail(log) if log else ""))
        time.sleep(0.2)
    raise NodeRunFailed(f"timed out after {timeout:.0f} s waiting for {what}" + (":\n" + _tail(log) if log else ""))


def mount_param_from_bag(bag: Path, base_frame: str = "base_link") -> Optional[List[float]]:
    """``camera_mount`` ([x, y, z, roll, pitch, yaw], m and deg) from a bag's /tf_static and its
    camera_info frame, or None when the bag does not give both."""
    from ..bag import BagSource
    from ..core import msgconv
    from ..metric.bev import mount_from_transforms
    from ..runtime import mount_to_param

    src = BagSource(Path(bag))
    info_topics = [t for t, (typ, _) in src.topics.items() if typ == "sensor_msgs/msg/CameraInfo"]
    if "/tf_static" not in src.topics or not info_topics:
        return None
    tfs, frame = [], None
    for topic, _, msg in src.messages(["/tf_static", info_topics[0]]):
        if topic == "/tf_static":
            tfs.extend(msgconv.transforms(msg))
        elif frame is None:
            frame = str(msg.header.frame_id)
        if tfs and frame is not None:
            break
    mount = mount_from_transforms(tfs, base_frame, frame) if tfs and frame else None
    return None if mount is None else [round(v, 6) for v in mount_to_param(*mount)]


def run_node_on_bag(bag: Path, index_dir: Path, out: Path, *, model: str = "seqgeo_lite", backend: str = "auto",
                    rate: float = 1.0, ready_timeout_s: float = 300.0, drain_timeout_s: float = 600.0,
                    extra_params: Optional[Dict] = None) -> Path:
    """Play ``bag`` into a fresh geoloc_node and record its outputs; returns the recorded bag folder
    (``out/recorded``, MCAP). ``out`` also gets the node's parameters, the logs and the last debug
    image (``debug_image.png``)."""
    import yaml

    from ..bag import BagWriter, TopicSpec, typestore

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rec_dir = out / "recorded"
    if rec_dir.exists():
        import shutil

        shutil.rmtree(rec_dir)  # our own output of an earlier run of this same command
    domain, why = pick_domain()
    env = isolated_env(out / "roslog", domain)
    print(f"geoloc_node runs on ROS domain {domain} ({why}); to watch it on this machine (rviz2, Foxglove "
          f"bridge, ros2 topic echo): export ROS_DOMAIN_ID={domain}", flush=True)
    params = {"index_path": str(Path(index_dir).resolve()), "model": str(model), "backend": backend,
              "use_sim_time": True, "image_queue_size": 1000, "stale_input_s": 600.0, **(extra_params or {})}
    if params.get("orthophoto") and not params.get("camera_mount"):
        # the mounting the bag's /tf_static records (the pip install has no tf2_msgs to read it live)
        mount = mount_param_from_bag(bag, params.get("base_frame", "base_link"))
        if mount is not None:
            params["camera_mount"] = mount
    pfile = out / "params.yaml"
    pfile.write_text(yaml.safe_dump({"geoloc_node": {"ros__parameters": params}}))
    node_log, play_log = out / "node.log", out / "play.log"
    with open(node_log, "w") as f:
        node = subprocess.Popen([sys.executable, "-m", "geoloc_ros.ros.node", "--ros-args", "--params-file",
                                 str(pfile)], env=env, stdout=f, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "geoloc_node ready" in _tail(node_log, 100000), ready_timeout_s, "geoloc_node ready", node,
              node_log)
        specs = [TopicSpec(t, typ, "", "recorded from geoloc_node") for t, typ in RECORDED.items()]
        with BagWriter(rec_dir, specs, storage="mcap") as writer:
            state = _record(env, writer)
            try:
                wait_for(lambda: state["ready"], 60, "the recorder to start")
                with open(play_log, "w") as f:
                    play = subprocess.run([sys.executable, "-m", "geoloc_ros.tools.play", str(bag), "--rate", str(rate),
                                           "--clock", "--wait-for", "/camera/image_raw", "/gnss/fix", "--delay-s", "1.0"],
                                          env=env, stdout=f, stderr=subprocess.STDOUT)
                if play.returncode != 0:
                    raise NodeRunFailed(f"geoloc play ended with status {play.returncode}:\n{_tail(play_log)}")
                wait_for(lambda: state["drained"], drain_timeout_s, "the node to work through its queue", node, node_log)
                time.sleep(2.0)
            finally:
                state["stop"] = True
                state["thread"].join(10)
    finally:
        stop_process(node)
    counts = state["counts"]
    if state.get("debug_image"):
        from PIL import Image as PILImage

        from ..core.images import msg_to_rgb

        msg = typestore().deserialize_cdr(state["debug_image"], "sensor_msgs/msg/Image")
        PILImage.fromarray(msg_to_rgb(msg)).save(out / "debug_image.png")
    (out / "recorded.json").write_text(json.dumps({"counts": counts, "params": params, "domain": domain,
                                                   "domain_from": why}, indent=2) + "\n")
    return rec_dir


def _record(env: Dict[str, str], writer) -> Dict:
    """Subscribe (raw CDR) to the RECORDED topics in this process and write them to ``writer``
    (a ``bag.BagWriter``), stamped with the time of receipt."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, NavSatFix

    state: Dict = {"ready": False, "drained": False, "stop": False, "counts": {t: 0 for t in RECORDED}}
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = env["ROS_AUTOMATIC_DISCOVERY_RANGE"]
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(env["ROS_DOMAIN_ID"]))
    node = rclpy.create_node("geoloc_demo_recorder", context=ctx)
    lock = threading.Lock()

    def writer_for(topic):
        def on_raw(data: bytes):
            with lock:  # receipt time, never before the previous message (the writer refuses that)
                writer.write_raw(topic, max(time.time_ns(), writer.last_ns), bytes(data))
                state["counts"][topic] += 1
            if topic == "/diagnostics":
                msg = writer.ts.deserialize_cdr(bytes(data), RECORDED[topic])
                for s in msg.status:
                    vals = {kv.key: kv.value for kv in s.values}
                    if vals.get("queue.depth") == "0" and int(vals.get("count.images_in", "0") or 0) > 0 and \
                            state.get("played"):
                        state["drained"] = True
        return on_raw

    for topic, cls in (("/geoloc/fix", NavSatFix), ("/geoloc/pose", PoseWithCovarianceStamped),
                       ("/diagnostics", DiagnosticArray)):
        node.create_subscription(cls, topic, writer_for(topic), 100, raw=True)

    def on_debug(data: bytes):  # keep the latest debug picture (what users watch in rviz)
        state["debug_image"] = bytes(data)

    node.create_subscription(Image, "/geoloc/debug_image", on_debug, qos_profile_sensor_data, raw=True)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)

    def spin():
        state["ready"] = True
        while not state["stop"] and ctx.ok():
            ex.spin_once(timeout_sec=0.1)
            if state["counts"]["/geoloc/fix"] > 0:
                state["played"] = True
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)

    state["thread"] = threading.Thread(target=spin, name="geoloc-demo-recorder", daemon=True)
    state["thread"].start()
    return state


def compare_with_replay(recorded: Path, run_dir: Path, truth_bag: Path, *, gt_topic: str = "/gnss/fix_truth") -> Dict:
    """Errors of the node's published fixes against truth, next to the replay's corrected track,
    and how far the node's positions are from the replay's at the same stamps."""
    import numpy as np

    from ..core.geo import LocalFrame
    from . import metrics as M
    from .replay import read_track

    doc = json.loads((Path(run_dir) / "metrics.json").read_text())
    frame = LocalFrame.from_dict(doc["index"]["frame"]) if "frame" in doc.get("index", {}) else None
    if frame is None:
        raise NodeRunFailed(f"{run_dir}/metrics.json does not name the map frame")
    node = read_track(recorded, "/geoloc/fix", frame, name="node")
    gt = read_track(truth_bag, gt_topic, frame, name="truth")
    truth = M.Truth(t=gt.t, x=gt.x, y=gt.y)
    err_node = M.horizontal_errors(node, truth)[0]
    node_stats = M.error_stats(err_node[np.isfinite(err_node)])
    rep = doc["metrics"]["methods"]["corrected"]["error_m"]
    # replay positions at the node's stamps (nearest corrected estimate within 0.2 s)
    import csv

    rows = [r for r in csv.DictReader(open(Path(run_dir) / "estimates.csv")) if r["method"] == "corrected"]
    rt = np.array([float(r["t"]) for r in rows])
    rx = np.array([float(r["x"]) for r in rows])
    ry = np.array([float(r["y"]) for r in rows])
    gaps = []
    if len(rt) and len(node.t):
        j = np.clip(np.searchsorted(rt, node.t), 1, len(rt) - 1)
        j = np.where(np.abs(rt[j - 1] - node.t) < np.abs(rt[j] - node.t), j - 1, j)
        ok = np.abs(rt[j] - node.t) <= 0.2
        gaps = np.hypot(rx[j] - node.x, ry[j] - node.y)[ok]
    out = {"node_fixes": int(len(node.t)), "node_median_m": node_stats.get("median"), "node_error_m": node_stats,
           "replay_median_m": rep.get("median"),
           "node_vs_replay_median_m": float(np.median(gaps)) if len(gaps) else None,
           "node_vs_replay_p95_m": float(np.percentile(gaps, 95)) if len(gaps) else None}

    def f(v):
        return "n/a" if v is None else f"{v:.2f} m"

    out["line"] = (f"{out['node_fixes']} fixes published, median error {f(out['node_median_m'])} "
                   f"(replay {f(out['replay_median_m'])}); node vs replay at the same stamps: median "
                   f"{f(out['node_vs_replay_median_m'])}, p95 {f(out['node_vs_replay_p95_m'])}")
    return out
