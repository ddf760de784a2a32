"""``geoloc play BAG``: publish a rosbag2 on its topics with its original timing (rclpy).

``ros2 bag play`` is not installable from PyPI; this player covers what the node needs:
original inter-message timing scaled by ``--rate``, ``--loop``, ``/clock`` for ``use_sim_time``,
a topic filter, and latched (transient-local) ``/tf_static``. Users with a full ROS install can use
``ros2 bag play`` instead: the node works with both.

Messages are read with ``bag.BagSource`` (MCAP or sqlite3, as the replay reads them) and published
as the raw CDR bytes stored in the bag (``Publisher.publish(bytes)``), so what subscribers get is
bit-identical to what was recorded. A topic whose message package is not importable (e.g. tf2_msgs with the PyPI ROS
wheels) is skipped with a warning.

QoS: reliable, keep-last 100 (a reliable publisher serves both reliable and best-effort
subscribers, e.g. the node's SENSOR_DATA image subscription); topics recorded as transient-local
(``/tf_static``) are re-published transient-local, depth 1.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from ..core.bagpath import BAG_HELP, resolve_bag
from .common import parse_with, positive

log = logging.getLogger(__name__)


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "play", help="publish a rosbag2 (MCAP/sqlite3) on its topics with original timing (rclpy)",
        description="Publish the messages of a rosbag2 on their original topics with their original timing "
                    "(scaled by --rate), like `ros2 bag play`, using rclpy. --clock publishes /clock "
                    "(rosgraph_msgs/Clock) from the bag time so nodes can run with use_sim_time:=true. "
                    "Ends when the bag is played (or never with --loop: stop with Ctrl-C).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("bag", type=Path, help=BAG_HELP)
    p.add_argument("--rate", type=positive(float, 0.0, 1000.0, "--rate"), default=1.0,
                   help="playback speed factor (2 = twice as fast)")
    p.add_argument("--loop", action="store_true", help="start again at the end (time goes backwards at each loop)")
    p.add_argument("--clock", type=positive(float, 0.0, 1000.0, "--clock"), nargs="?", const=40.0, default=None,
                   metavar="HZ", help="publish /clock at HZ (default 40 when given without a value) and with "
                                      "every message")
    p.add_argument("--topics", nargs="+", default=None, metavar="TOPIC", help="only these topics (default: all)")
    p.add_argument("--delay-s", type=float, default=1.0,
                   help="wait this long after creating publishers before the first message (discovery)")
    p.add_argument("--wait-for", nargs="+", default=(), metavar="TOPIC",
                   help="before starting, wait (up to --wait-timeout-s) until each of these topics has a subscriber")
    p.add_argument("--wait-timeout-s", type=float, default=30.0, help="limit for --wait-for")
    p.add_argument("--start-offset-s", type=float, default=0.0, help="skip the first seconds of the bag")
    p.add_argument("--duration-s", type=float, default=None, help="play only this many seconds of the bag")
    p.add_argument("--node-name", default="geoloc_player", help="ROS node name of the player")
    p.set_defaults(func=run_play)
    return p


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class, or None if its package is not importable."""
    parts = msgtype.split("/")
    if len(parts) == 2:  # 'pkg/Type'
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3:
        return None
    try:
        return getattr(importlib.import_module(f"{parts[0]}.{parts[1]}"), parts[2])
    except (ImportError, AttributeError):
        return None


def run_play(args: argparse.Namespace) -> Path:
    from ..bag import BagSource
    from ..core.errors import InvalidArgument

    bag = resolve_bag(args.bag)
    if args.start_offset_s < 0 or (args.duration_s is not None and args.duration_s <= 0):
        raise InvalidArgument("--start-offset-s must be >= 0 and --duration-s > 0")
    src = BagSource(bag)
    want = None if not args.topics else set(args.topics)
    if want is not None:
        missing = want - set(src.topics)
        if missing:
            raise InvalidArgument(f"topics not in {bag}: {', '.join(sorted(missing))}; it has "
                                  f"{', '.join(sorted(src.topics))}")
    topics = {t: typ for t, (typ, _) in src.topics.items() if want is None or t in want}

    import rclpy
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    rclpy.init(args=None)
    node = rclpy.create_node(args.node_name)
    try:
        return _play(args, bag, src, topics, node, rclpy, QoSProfile, ReliabilityPolicy, DurabilityPolicy,
                     HistoryPolicy)
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


def _play(args, bag, src, topics, node, rclpy, QoSProfile, ReliabilityPolicy, DurabilityPolicy, HistoryPolicy):
    by_topic: Dict[str, object] = {}
    skipped: List[str] = []
    for topic, msgtype in topics.items():
        cls = message_class(msgtype)
        if cls is None:
            skipped.append(f"{topic} ({msgtype})")
            continue
        latched = topic in src.latched or topic == "/tf_static"
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1 if latched else 100,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
        by_topic[topic] = node.create_publisher(cls, topic, qos)
    if skipped:
        log.warning("not publishing (message package not installed): %s", ", ".join(skipped))
        print(f"geoloc play: skipping {', '.join(skipped)}: message package not importable", file=sys.stderr)
    if not by_topic:
        from ..core.errors import InvalidArgument

        raise InvalidArgument(f"nothing to play from {bag}: no topic has an importable message type")
    clock_pub = None
    if args.clock:
        from rosgraph_msgs.msg import Clock

        clock_pub = node.create_publisher(Clock, "/clock", QoSProfile(depth=10))

    def spin_for(seconds: float) -> None:
        end = time.monotonic() + max(0.0, seconds)
        while True:
            rclpy.spin_once(node, timeout_sec=0.0)
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.01))

    deadline = time.monotonic() + args.wait_timeout_s
    for topic in args.wait_for:
        pub = by_topic.get(topic)
        if pub is None:
            from ..core.errors import InvalidArgument

            raise InvalidArgument(f"--wait-for {topic}: not a topic being played ({', '.join(by_topic)})")
        while pub.get_subscription_count() < 1:
            if time.monotonic() > deadline:
                from ..core.errors import InvalidArgument

                raise InvalidArgument(f"no subscriber on {topic} after {args.wait_timeout_s:g} s")
            spin_for(0.05)
    spin_for(args.delay_s)

    def publish_clock(t_ns: int) -> None:
        if clock_pub is not None:
            msg = Clock()
            msg.clock.sec, msg.clock.nanosec = t_ns // 1_000_000_000, t_ns % 1_000_000_000
            clock_pub.publish(msg)

    start_ns = (src.start_ns or 0) + int(args.start_offset_s * 1e9)
    end_ns = None if args.duration_s is None else start_ns + int(args.duration_s * 1e9)
    counts: Dict[str, int] = {}
    late_max = 0.0
    loops = 0
    t_begin = time.monotonic()
    clock_period = 1.0 / args.clock if args.clock else None
    try:
        while True:
            wall0 = time.monotonic()
            last_clock = -1.0
            for topic, t_ns, raw in src.raw_messages(list(by_topic), start_ns=start_ns, stop_ns=end_ns):
                pub = by_topic[topic]
                target = wall0 + (t_ns - start_ns) / 1e9 / args.rate
                while True:  # sleep until the message is due, publishing /clock meanwhile
                    now = time.monotonic()
                    if now >= target:
                        break
                    if clock_period is not None and now - last_clock >= clock_period:
                        publish_clock(start_ns + int((now - wall0) * args.rate * 1e9))
                        last_clock = now
                    time.sleep(min(target - now, clock_period or 0.05, 0.05))
                late_max = max(late_max, time.monotonic() - target)
                publish_clock(t_ns)
                pub.publish(bytes(raw))
                counts[topic] = counts.get(topic, 0) + 1
            loops += 1
            if not args.loop:
                break
    except KeyboardInterrupt:
        print("geoloc play: interrupted", file=sys.stderr)
    spin_for(0.2)  # let the middleware deliver the last messages
    total = sum(counts.values())
    dt = time.monotonic() - t_begin
    print(f"played {total} messages on {len(counts)} topics from {bag} in {dt:.1f} s "
          f"(rate {args.rate:g}, {loops} loop(s), max lateness {late_max * 1e3:.0f} ms): "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if src.truncated:
        print(f"geoloc play: the bag ends early ({src.truncated}): played what could be read", file=sys.stderr)
    return Path(bag)


def main(argv: Optional[List[str]] = None) -> Path:
    return run_play(parse_with(register, ["play"] + list(argv or [])))


if __name__ == "__main__":
    from ..core.errors import GeolocError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        main(sys.argv[1:])
    except GeolocError as exc:
        print(f"geoloc play: error: {exc}", file=sys.stderr)
        sys.exit(2)
