"""``geoloc_node``: camera sequences + GNSS (+ odometry) in, corrected GPS pose out.

A thin rclpy shell around ``pipeline.Localizer`` (pure Python):

* subscription callbacks only convert messages (``core.images``, ``core.msgconv``) and enqueue
  them; images go to a bounded drop-oldest queue (``image_queue_size``), GNSS/odometry to a larger
  one; every problem is a counted drop with a reason and a throttled log line;
* one worker thread feeds the Localizer in arrival order and publishes, so the executor never
  blocks on inference;
* a timer publishes ``/diagnostics`` (rates, latency, backend, index shards, drops by reason,
  status).

Topics (relative names: they follow the node namespace and remappings)::

    in   IMAGE_TOPIC (sensor_msgs/Image) or IMAGE_TOPIC/compressed (CompressedImage)  SENSOR_DATA QoS
    in   FIX_TOPIC   sensor_msgs/NavSatFix                                              SENSOR_DATA QoS
    in   ODOM_TOPIC  nav_msgs/Odometry (optional)                                       SENSOR_DATA QoS
    out  geoloc/fix          sensor_msgs/NavSatFix (covariance KNOWN)                   reliable, depth 10
    out  geoloc/pose         geometry_msgs/PoseWithCovarianceStamped (map frame)        reliable, depth 10
    out  geoloc/map_pose     PoseWithCovarianceStamped (orthophoto's own frame)         reliable, depth 10
    out  geoloc/path         nav_msgs/Path (map frame)                                  reliable, depth 1
    out  geoloc/candidates   visualization_msgs/MarkerArray (top-k tiles)               reliable, depth 1
    out  geoloc/debug_image  sensor_msgs/Image rgb8                                     best effort, depth 1
    out  /diagnostics        diagnostic_msgs/DiagnosticArray                            reliable, depth 10

The ``map`` frame is the tile index's local frame (``index.frame``): x grid east, y grid north
(UTM grid axes of the index's zone), origin at the index datum; see docs/ros.md.

Run: ``ros2 run geoloc_ros geoloc_node --ros-args --params-file config/geoloc.yaml`` or
``python -m geoloc_ros.ros.node --ros-args -p index_path:=...``. Bad parameters, a missing index
or model end the process at start with exit status 2 and a message saying what to fix.
"""
from __future__ import annotations

import collections
import logging
import math
import sys
import threading
import time
import traceback
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from ..core import msgconv
from ..core.errors import GeolocError, InvalidArgument
from ..core.rates import InputMonitor
from ..runtime import InputRouter, build_localizer, load_measurements, mount_from_param
from . import params as P
from .diagnostics import STATUS_LEVEL, DiagnosticsMixin, _flatten  # noqa: F401 (re-exported)
from .plumbing import DropCounter, EventQueue, RateMeter, _LogBridge  # noqa: F401 (re-exported)
from .publishing import PublishingMixin

log = logging.getLogger(__name__)



class GeolocMixin(PublishingMixin, DiagnosticsMixin):
    """The node's work, for a plain rclpy Node (``GeolocNode``) and a managed one
    (``lifecycle.GeolocLifecycleNode``): the steps are the lifecycle's.

    ``_declare`` (construction): parameters; ``_configure``: encoder, index, Localizer, publishers
    and the worker thread; ``_activate``: subscriptions and the diagnostics timer;
    ``_deactivate``: those removed, waiting input discarded; ``_cleanup``: worker stopped,
    publishers destroyed, model and index released."""

    def _declare(self) -> None:
        self.settings = P.declare(self)
        s = self.settings
        self.drops = DropCounter(self.get_logger(), s.log_throttle_s)
        # not drops (the message is used): GNSS without fix, time resets, fixes outside the index
        self.events = DropCounter(self.get_logger(), s.log_throttle_s)
        self.encoder = self.index = self.loc = None
        self._subs: List[Any] = []
        self._pubs: List[Any] = []
        self._diag_timer = None
        self._worker: Optional[threading.Thread] = None
        self._bridge: Optional[_LogBridge] = None
        self._stop = threading.Event()

    def _configure(self, localizer=None, create_publisher=None) -> None:
        """Load (unless ``localizer`` is given), create the publishers, start the worker.
        Raises GeolocError (InvalidArgument, IncompatibleArtifact) with a message for the user."""
        s = self.settings
        if localizer is None:
            localizer = self._load()
        self.loc = localizer
        self.frame = localizer.frame
        # the one way from a message to the Localizer (runtime.InputRouter): the callbacks convert,
        # the worker applies; the replay goes through the same object's methods
        self.router = InputRouter(localizer, camera_mount=mount_from_param(s.camera_mount), base_frame=s.base_frame,
                                  publish_on_fix=s.publish_on_fix, drops=self.drops, events=self.events)
        self.router.on_reset.append(self._on_reset)
        self.applied = 0  # inputs the worker has given to the Localizer
        self.index = self.index or getattr(localizer, "index", None)
        self._bridge = _LogBridge(self.get_logger())
        logging.getLogger("geoloc_ros").addHandler(self._bridge)
        logging.getLogger("geoloc_ros").setLevel(logging.INFO)

        self.queue = EventQueue(s.image_queue_size, s.input_queue_size, lambda k: self.drops.add(k, "worker busy"))
        self.rate_in = {k: RateMeter() for k in ("image", "fix", "odom")}
        self.inputs = InputMonitor({"image": s.expected_image_hz, "fix": s.expected_fix_hz,
                                    "odom": s.expected_odom_hz if s.odom_topic else 0.0},
                                   s.input_min_share, s.input_window_s, s.input_break_s)
        self.count = collections.Counter()  # images converted (queued) and processed by the worker
        self.rate_keyframe = RateMeter()
        self.rate_pub = RateMeter()
        self._lat_ms: Deque[float] = collections.deque(maxlen=200)  # receipt -> publish (wall)
        self._stamp_lat_ms: Deque[float] = collections.deque(maxlen=200)  # node clock now - image stamp
        self._compute_ms: Deque[float] = collections.deque(maxlen=200)
        self._last_est = None
        self._last_status = "initialising"
        self._last_reasons: List[str] = []
        self._gnss_xy: Deque[Tuple[float, float]] = collections.deque(maxlen=30)
        self._path_xy: Deque[Tuple[float, float]] = collections.deque(maxlen=300)
        self._drops_at_last_diag: Dict[str, int] = {}
        self._events_at_last_diag: Dict[str, int] = {}
        self._stats_lock = threading.Lock()
        self._inputs_lock = threading.Lock()
        self._worker_error: Optional[str] = None
        self._debug = None
        self._make_publishers(create_publisher or self.create_publisher)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="geoloc_worker", daemon=True)
        self._worker.start()

    def _ready_line(self) -> str:
        s = self.settings
        parts = []
        if getattr(self.loc, "matcher", None) is not None:
            parts.append(f"metric matching on {s.orthophoto or 'the given matcher'} ({s.metric_features})")
        if self.index is not None:
            parts.append(f"retrieval: model {s.model} ({self._backend_name()}), index {s.index_path} "
                         f"({self._index_stats().get('tiles_loaded', '?')} tiles loaded)")
        return (f"{' and '.join(parts) or 'no camera measurement'}, camera {self.image_topic} "
                f"({'compressed' if s.compressed else 'raw'}), fix {s.fix_topic}, odom {s.odom_topic or 'none'} "
                f"({s.input_reliability}); map frame {s.map_frame} = datum {self.frame.crs} origin "
                f"({self.frame.origin_e:.0f} E, {self.frame.origin_n:.0f} N)")

    # ------------------------------------------------------------------ setup
    def _load(self):
        """The Localizer on the configured orthophoto and/or tile index (``runtime.load_measurements``)."""
        s = self.settings
        t0 = time.perf_counter()
        m = load_measurements(s.localizer, orthophoto=s.orthophoto or None, index_path=s.index_path or None,
                              model=s.model, backend=s.backend, device=s.device, threads=s.encoder_threads or None,
                              engines_dir=s.engines_dir or None, features=s.metric_features,
                              memory_budget_mb=s.memory_budget_mb)
        self.encoder, self.index = m.encoder, m.index
        loc = build_localizer(s.localizer, m)
        self.get_logger().info(f"loaded {m.describe()} in {time.perf_counter() - t0:.1f} s")
        return loc

    @property
    def camera_info_topic(self) -> str:
        t = self.settings.camera_info_topic
        if t:
            return t
        base = self.settings.image_topic.rstrip("/")
        if base.endswith("/compressed"):
            base = base[:-len("/compressed")]
        return base.rsplit("/", 1)[0] + "/camera_info"

    @property
    def image_topic(self) -> str:
        t = self.settings.image_topic
        return t.rstrip("/") + "/compressed" if self.settings.compressed and not t.endswith("/compressed") else t

    def input_qos(self, rate_hz: float = 0.0, unknown_depth: int = 5) -> QoSProfile:
        """SENSOR_DATA-like (best effort) or reliable (``input_reliability``), volatile, with a depth
        that holds ``input_depth_s`` of the stream at ``rate_hz`` (its expected rate; unknown (0):
        ``unknown_depth``), at least SENSOR_DATA's 5."""
        s = self.settings
        depth = max(qos_profile_sensor_data.depth, int(math.ceil(rate_hz * s.input_depth_s)) if rate_hz > 0
                    else unknown_depth)
        rel = ReliabilityPolicy.RELIABLE if s.input_reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=rel,
                          durability=DurabilityPolicy.VOLATILE)

    def _activate(self) -> None:
        """Subscriptions and the diagnostics timer. Small, frequent messages (fix, odometry,
        camera_info, /tf_static) have their own callback group, so a MultiThreadedExecutor takes
        them off DDS whatever the image callbacks cost; image callbacks only enqueue. Metric
        matching without a way to know the camera mounting (no tf2_msgs for /tf_static and no
        ``camera_mount``) refuses to activate with one line saying what to set."""
        from nav_msgs.msg import Odometry
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
        from sensor_msgs.msg import CompressedImage, Image, NavSatFix

        s = self.settings
        metric = getattr(self.loc, "matcher", None) is not None
        TFMessage = None
        if metric:
            try:  # tf2_msgs comes with a ROS install, not with the pip wheels (then: camera_mount)
                from tf2_msgs.msg import TFMessage
            except ImportError:
                if not s.camera_mount:
                    raise InvalidArgument("metric matching needs the camera mounting and /tf_static cannot be read "
                                          "(no tf2_msgs): set camera_mount:=[x, y, z, roll, pitch, yaw] (m, deg; "
                                          f"camera_link in {s.base_frame})") from None
        self._cb_small = MutuallyExclusiveCallbackGroup()
        self._cb_image = MutuallyExclusiveCallbackGroup()
        small = dict(callback_group=self._cb_small)
        if s.compressed:
            self._subs.append(self.create_subscription(CompressedImage, self.image_topic, self._on_image,
                                                       self.input_qos(s.expected_image_hz, 2),
                                                       callback_group=self._cb_image))
        else:  # taken off DDS serialized: the worker deserialises (a 720p frame is 2.7 MB)
            self._subs.append(self.create_subscription(Image, self.image_topic, self._on_image_serialized,
                                                       self.input_qos(s.expected_image_hz, 2),
                                                       callback_group=self._cb_image, raw=True))
        self._subs.append(self.create_subscription(NavSatFix, s.fix_topic, self._on_fix,
                                                   self.input_qos(s.expected_fix_hz, 50), **small))
        if s.odom_topic:
            self._subs.append(self.create_subscription(Odometry, s.odom_topic, self._on_odom,
                                                       self.input_qos(s.expected_odom_hz, 200), **small))
        if metric:
            from sensor_msgs.msg import CameraInfo

            self._subs.append(self.create_subscription(CameraInfo, self.camera_info_topic, self._on_camera_info,
                                                       self.input_qos(s.expected_image_hz, 10), **small))
            if TFMessage is not None:
                latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
                self._subs.append(self.create_subscription(TFMessage, "/tf_static", self._on_tf_static, latched,
                                                           **small))
            mount = (f"camera_mount {list(s.camera_mount)} unless /tf_static connects {s.base_frame} to the "
                     f"camera" if s.camera_mount else f"/tf_static {s.base_frame} -> the camera_info frame")
            self.get_logger().info(f"camera mounting: {mount}" + ("" if TFMessage is not None else
                                                                   " (no tf2_msgs: /tf_static not read)"))
        # steady clock: diagnostics keep coming while a bag is paused or over (use_sim_time, no /clock)
        from rclpy.clock import Clock, ClockType

        self._diag_timer = self.create_timer(s.diagnostics_period_s, self._publish_diagnostics,
                                             clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _deactivate(self) -> None:
        """No more input: subscriptions and the diagnostics timer removed, waiting input discarded."""
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self._worker is not None:
            self.queue.clear()

    def _cleanup(self) -> None:
        """Back to before ``_configure``: worker stopped, publishers destroyed, model and index released."""
        self._deactivate()
        self.stop()
        destroy = getattr(self, "destroy_lifecycle_publisher", self.destroy_publisher)  # also unmanages it
        for pub in self._pubs:
            destroy(pub)
        self._pubs = []
        self.encoder = self.index = self.loc = None
        self._debug = None

    def _on_input(self, kind: str, msg) -> float:
        """Every message that reaches a callback: counted by its stamp (expected vs received). The
        two callback groups may run at once: the monitor is shared under a lock."""
        self.rate_in[kind].tick()
        try:
            t = msgconv.header_time(msg)
        except Exception:
            t = float("nan")
        with self._inputs_lock:
            self.inputs.tick(kind, t)
        return t

    # ------------------------------------------------------------------ callbacks (executor thread)
    def _on_image(self, msg) -> None:
        """Counted and queued as it came (drop-oldest): the worker converts it."""
        t = self._on_input("image", msg)
        self.queue.put("image", (msg, time.monotonic()), stamp=t)

    _on_compressed = _on_image

    def _on_image_serialized(self, data: bytes) -> None:
        """A raw Image as its CDR bytes: counted by the stamp read from them, queued; the worker
        deserialises it (the executor never spends its time on pixels)."""
        self.rate_in["image"].tick()
        t = msgconv.cdr_header_time(data)
        with self._inputs_lock:
            self.inputs.tick("image", t)
        self.queue.put("image", (data, time.monotonic()), stamp=t)

    def _on_fix(self, msg) -> None:
        self._enqueue("fix", msg, self._on_input("fix", msg))

    def _on_odom(self, msg) -> None:
        self._enqueue("odom", msg, self._on_input("odom", msg))

    def _on_camera_info(self, msg) -> None:
        self._enqueue("camera_info", msg)  # None (nothing queued) while it repeats unchanged

    def _on_tf_static(self, msg) -> None:
        self._enqueue("tf_static", msg)

    def _enqueue(self, kind: str, msg, stamp: Optional[float] = None) -> None:
        item = self.router.convert(kind, msg)
        if item is not None:
            self.queue.put(kind, item, stamp=stamp if stamp is not None and math.isfinite(stamp) else None)

    # ------------------------------------------------------------------ worker thread
    def _on_reset(self, why: str) -> None:
        """Time went backwards (router): the drawn path and GNSS trail start again."""
        self._path_xy.clear()
        self._gnss_xy.clear()
        self._path_msg.poses = []

    def _work(self) -> None:
        while not self._stop.is_set():
            ev = self.queue.get(timeout=0.2)
            if ev is None:
                continue
            kind, item = ev
            try:
                self._process(kind, item)
            except Exception as exc:  # never let one message kill the worker
                try:
                    self.drops.add(f"{kind}.processing_error", f"{type(exc).__name__}: {exc}\n"
                                   + "".join(traceback.format_exc(limit=6)), level="error")
                except Exception:
                    pass
            finally:
                self.applied += 1

    def _process(self, kind: str, item) -> None:
        """One input through the router to the Localizer, and what it gives published."""
        if kind == "image":
            msg, recv = item
            if isinstance(msg, (bytes, bytearray, memoryview)):
                from rclpy.serialization import deserialize_message
                from sensor_msgs.msg import Image

                try:
                    msg = deserialize_message(bytes(msg), Image)
                except Exception as exc:  # a truncated or foreign message: a counted drop, not a crash
                    self.drops.add("image.undecodable", f"the serialized Image did not deserialise: {exc}")
                    return
            item = self.router.convert("image", msg)
            if item is None:
                return
            item = item._replace(recv=recv)
            self.count["images_converted"] += 1
            self.count["images_processed"] += 1
        est = self.router.apply(kind, item)
        if kind == "fix" and item.sample.ok:
            x, y = self.frame.from_latlon(item.sample.lat, item.sample.lon)
            self._gnss_xy.append((float(x), float(y)))
        if est is None:
            return
        self._publish_estimate(est, keyframe=bool(est.keyframe))
        if kind == "image":
            self._keyframe_stats(est, item)

    def _keyframe_stats(self, est, item) -> None:
        self.rate_keyframe.tick()
        now = self.get_clock().now().nanoseconds * 1e-9
        with self._stats_lock:
            self._compute_ms.append(float(est.compute_ms))
            self._lat_ms.append((time.monotonic() - item.recv) * 1e3)
            if now > 0 and abs(now - item.t) < 3600.0:  # stamps from another clock (a bag without use_sim_time): skip
                self._stamp_lat_ms.append((now - item.t) * 1e3)

    # ------------------------------------------------------------------ shutdown
    def stop(self) -> None:
        """Stop the worker thread (after the current message), write the learned map offset (when a
        sidecar is configured) and stop the log bridge."""
        self._stop.set()
        if self._worker is not None and self._worker.is_alive():
            self._worker.join(timeout=5.0)
        self._worker = None
        if getattr(self, "loc", None) is not None:
            self.loc.save_map_offset()  # the orthophoto's learned offset, when a sidecar is configured
        if self._bridge is not None:
            logging.getLogger("geoloc_ros").removeHandler(self._bridge)
            self._bridge = None


class GeolocNode(GeolocMixin, Node):
    """The plain node: configured and active from construction until ``stop``."""

    def __init__(self, *, localizer=None, **node_kwargs):
        """Declare and validate parameters, load the encoder, index and Localizer, subscribe, start the worker.

        Raises GeolocError (InvalidArgument, IncompatibleArtifact) with a message for the user.
        ``localizer``: an already built Localizer (tests, benchmarks); skips loading."""
        super().__init__(P.NODE_NAME, **node_kwargs)
        self._declare()
        self._configure(localizer)
        self._activate()
        self.get_logger().info(f"geoloc_node ready: {self._ready_line()}")


def _init_without_signal_handlers(args: List[str]) -> None:
    """rclpy.init leaving SIGINT to Python (KeyboardInterrupt) and SIGTERM raising it too, so the
    context stays valid until the node has stopped and logged: rclpy's own handler shuts the
    context down first, and every log line after that fails to reach /rosout with "publisher's
    context is invalid". SignalHandlerOptions exists from Humble on; without it, the default.
    A parent that ignores or blocks SIGINT / SIGTERM (both are inherited by a child process: a test
    runner's worker, a launcher) must not leave the node deaf to them: they are restored first."""
    import signal

    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        from rclpy.signals import SignalHandlerOptions

        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except (ImportError, TypeError):  # an rclpy without the option: its own handler (noisier stop)
        rclpy.init(args=args)
        return

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)


def run(make_node: Callable[[], Node], name: str, argv: Optional[List[str]] = None) -> int:
    """Start ``make_node()`` and spin it until Ctrl-C / SIGTERM; a clean stop exits 0.
    Start-up errors: status 2 with the message (GeolocError), 1 with the traceback (a bug)."""
    args = sys.argv if argv is None else [name] + list(argv)
    _init_without_signal_handlers(args)
    node = None
    code = 0
    try:
        node = make_node()
    except GeolocError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr, flush=True)
        code = 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted while starting", file=sys.stderr, flush=True)
        code = 130
    except Exception as exc:  # a bug or an environment problem: show it all
        traceback.print_exc()
        print(f"{name}: error: could not start: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        code = 1
    if node is not None:
        from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor

        ext = getattr(__import__("rclpy.executors", fromlist=["x"]), "ExternalShutdownException", KeyboardInterrupt)
        # executor_threads 1 (default): one thread takes every message in arrival order, image callbacks
        # only enqueue (measured: no fix or odometry lost, bench/bench_node.py); > 1: the image group, the
        # small messages' group and the timers run side by side (the queue keeps them in stamp order)
        threads = int(getattr(node, "settings", None).executor_threads) if getattr(node, "settings", None) else 1
        executor = SingleThreadedExecutor() if threads <= 1 else MultiThreadedExecutor(num_threads=threads)
        executor.add_node(node)
        try:
            while rclpy.ok():  # a bounded wait: Python sees Ctrl-C only between waits (no timer while inactive)
                executor.spin_once(timeout_sec=0.25)
        except (KeyboardInterrupt, ext):
            pass
        finally:
            try:
                node.stop()
                if getattr(node, "loc", None) is not None:
                    node.get_logger().info(f"{name} stopped: drops {node.drops.snapshot()}, "
                                           f"events {node.events.snapshot()}")
                executor.shutdown()
                node.destroy_node()
            except KeyboardInterrupt:  # a second Ctrl-C while stopping: stop now
                pass
    if rclpy.ok():
        rclpy.shutdown()
    return code


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``geoloc_node`` (``ros2 run geoloc_ros geoloc_node``)."""
    return run(GeolocNode, P.NODE_NAME, argv)


if __name__ == "__main__":
    sys.exit(main())
