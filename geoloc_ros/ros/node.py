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

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from ..core import msgconv
from ..core.errors import GeolocError
from ..core.images import rgb_to_image_fields
from ..core.rates import InputMonitor
from ..runtime import InputRouter, build_localizer, load_measurements, mount_from_param
from . import params as P

log = logging.getLogger(__name__)

STATUS_LEVEL = {"tracking": 0, "initialising": 0, "degraded": 1, "lost": 2}  # DiagnosticStatus levels


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """Attribute or key (Estimate fields may be attributes; candidates may be a dict or an object)."""
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


class DropCounter:
    """Thread-safe counters by reason, with one throttled log line per reason."""

    def __init__(self, logger, throttle_s: float):
        self._lock = threading.Lock()
        self.counts: Dict[str, int] = collections.Counter()
        self._last_log: Dict[str, float] = {}
        self._logger = logger
        self.throttle_s = throttle_s

    def add(self, key: str, message: str = "", level: str = "warning") -> None:
        with self._lock:
            self.counts[key] += 1
            n = self.counts[key]
            now = time.monotonic()
            last = self._last_log.get(key)
            if last is not None and now - last < self.throttle_s:
                return
            self._last_log[key] = now
        text = f"{key} (#{n}){': ' + message if message else ''}"
        # one call site per severity: rclpy refuses a call site whose severity changes between calls
        if level == "error":
            self._logger.error(text)
        elif level == "info":
            self._logger.info(text)
        else:
            self._logger.warning(text)

    def snapshot(self) -> Dict[str, int]:
        with self._lock:
            return dict(self.counts)


class EventQueue:
    """FIFO of input events; images are capped (drop-oldest image), other events capped separately."""

    def __init__(self, image_cap: int, other_cap: int, on_drop: Callable[[str], None]):
        self._dq: Deque[Tuple[str, Any]] = collections.deque()
        self._cond = threading.Condition()
        self.image_cap, self.other_cap = int(image_cap), int(other_cap)
        self.n_images = 0
        self.puts = 0  # items ever put (the worker's ``applied`` catches up with it)
        self._on_drop = on_drop

    def put(self, kind: str, item: Any) -> None:
        dropped = None
        with self._cond:
            if kind == "image":
                if self.n_images >= self.image_cap:
                    for i, (k, _) in enumerate(self._dq):
                        if k == "image":
                            del self._dq[i]
                            self.n_images -= 1
                            dropped = "image.queue_full"
                            break
                self.n_images += 1
            elif len(self._dq) - self.n_images >= self.other_cap:
                for i, (k, _) in enumerate(self._dq):
                    if k != "image":
                        del self._dq[i]
                        dropped = f"{k}.queue_full"
                        break
            self._dq.append((kind, item))
            self.puts += 1
            self._cond.notify()
        if dropped:
            self._on_drop(dropped)

    def get(self, timeout: float) -> Optional[Tuple[str, Any]]:
        with self._cond:
            if not self._dq:
                self._cond.wait(timeout)
            if not self._dq:
                return None
            kind, item = self._dq.popleft()
            if kind == "image":
                self.n_images -= 1
            return kind, item

    def __len__(self) -> int:
        return len(self._dq)

    def clear(self) -> None:
        with self._cond:
            self._dq.clear()
            self.n_images = 0


class RateMeter:
    """Events per second over a sliding window (monotonic wall time)."""

    def __init__(self, window_s: float = 5.0):
        self.window_s = window_s
        self._t: Deque[float] = collections.deque()
        self._lock = threading.Lock()
        self.total = 0
        self.last = None

    def tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._t.append(now)
            self.total += 1
            self.last = now

    def rate(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._t and now - self._t[0] > self.window_s:
                self._t.popleft()
            if len(self._t) < 2:
                return 0.0
            return (len(self._t) - 1) / max(now - self._t[0], 1e-6)


class _LogBridge(logging.Handler):
    """Python logging of the core (``geoloc_ros.*``) -> the node's ROS logger."""

    def __init__(self, ros_logger):
        super().__init__()
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = f"[{record.name}] {record.getMessage()}"
            if record.levelno >= logging.ERROR:
                self.ros_logger.error(msg)
            elif record.levelno >= logging.WARNING:
                self.ros_logger.warning(msg)
            elif record.levelno >= logging.INFO:
                self.ros_logger.info(msg)
            else:
                self.ros_logger.debug(msg)
        except Exception:  # logging must never take the node down
            pass


class GeolocMixin:
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
        self._worker_error: Optional[str] = None
        self._debug = None
        self._make_publishers(create_publisher or self.create_publisher)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="geoloc_worker", daemon=True)
        self._worker.start()

    def _ready_line(self) -> str:
        s = self.settings
        return (f"model {s.model} ({self._backend_name()}), index {s.index_path} "
                f"({self._index_stats().get('tiles_loaded', '?')} tiles loaded), camera {self.image_topic} "
                f"({'compressed' if s.compressed else 'raw'}), fix {s.fix_topic}, odom {s.odom_topic or 'none'} "
                f"({s.input_reliability}); map frame {s.map_frame} = index datum {self.frame.crs} origin "
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

    def _make_publishers(self, create_publisher) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from nav_msgs.msg import Path
        from sensor_msgs.msg import Image, NavSatFix
        from visualization_msgs.msg import MarkerArray

        s = self.settings
        rel = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        one = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        best = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                          durability=DurabilityPolicy.VOLATILE)
        self.pub_fix = create_publisher(NavSatFix, "geoloc/fix", rel)
        self.pub_pose = create_publisher(PoseWithCovarianceStamped, "geoloc/pose", rel)
        self.pub_path = create_publisher(Path, "geoloc/path", one)
        self.pub_markers = create_publisher(MarkerArray, "geoloc/candidates", one)
        self.pub_debug = create_publisher(Image, "geoloc/debug_image", best) if s.publish_debug_image else None
        self.pub_diag = create_publisher(DiagnosticArray, "/diagnostics", rel)
        self._pubs = [p for p in (self.pub_fix, self.pub_pose, self.pub_path, self.pub_markers, self.pub_debug,
                                  self.pub_diag) if p is not None]
        self._path_msg = Path()
        self._path_msg.header.frame_id = s.map_frame

    def input_qos(self) -> QoSProfile:
        """SENSOR_DATA (best effort, depth 5) or the same reliable (``input_reliability``)."""
        if self.settings.input_reliability == "reliable":
            return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=qos_profile_sensor_data.depth,
                              reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
        return qos_profile_sensor_data

    def _activate(self) -> None:
        """Subscriptions and the diagnostics timer."""
        from nav_msgs.msg import Odometry
        from sensor_msgs.msg import CompressedImage, Image, NavSatFix

        s = self.settings
        qos = self.input_qos()
        if s.compressed:
            self._subs.append(self.create_subscription(CompressedImage, self.image_topic, self._on_compressed, qos))
        else:
            self._subs.append(self.create_subscription(Image, self.image_topic, self._on_image, qos))
        self._subs.append(self.create_subscription(NavSatFix, s.fix_topic, self._on_fix, qos))
        if s.odom_topic:
            self._subs.append(self.create_subscription(Odometry, s.odom_topic, self._on_odom, qos))
        if getattr(self.loc, "matcher", None) is not None:
            from sensor_msgs.msg import CameraInfo

            self._subs.append(self.create_subscription(CameraInfo, self.camera_info_topic, self._on_camera_info, qos))
            try:  # tf2_msgs comes with a ROS install, not with the pip wheels (then: camera_mount)
                from tf2_msgs.msg import TFMessage

                latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
                self._subs.append(self.create_subscription(TFMessage, "/tf_static", self._on_tf_static, latched))
            except ImportError:
                self.get_logger().info("no tf2_msgs: the camera mounting comes from the camera_mount parameter")
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

    def _on_input(self, kind: str, msg) -> None:
        """Every message that reaches a callback: counted by its stamp (expected vs received)."""
        self.rate_in[kind].tick()
        try:
            t = msgconv.header_time(msg)
        except Exception:
            t = float("nan")
        self.inputs.tick(kind, t)

    # ------------------------------------------------------------------ callbacks (executor thread)
    def _on_image(self, msg) -> None:
        self._on_input("image", msg)
        item = self.router.convert("image", msg)
        if item is not None:
            self.queue.put("image", item)
            self.count["images_converted"] += 1

    _on_compressed = _on_image

    def _on_fix(self, msg) -> None:
        self._on_input("fix", msg)
        self._enqueue("fix", msg)

    def _on_odom(self, msg) -> None:
        self._on_input("odom", msg)
        self._enqueue("odom", msg)

    def _on_camera_info(self, msg) -> None:
        self._enqueue("camera_info", msg)  # None (nothing queued) while it repeats unchanged

    def _on_tf_static(self, msg) -> None:
        self._enqueue("tf_static", msg)

    def _enqueue(self, kind: str, msg) -> None:
        item = self.router.convert(kind, msg)
        if item is not None:
            self.queue.put(kind, item)

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

    # ------------------------------------------------------------------ publishing
    def _stamp(self, msg_header, t: float, frame_id: str) -> None:
        msg_header.stamp.sec, msg_header.stamp.nanosec = msgconv.sec_to_stamp_parts(t)
        msg_header.frame_id = frame_id

    def _publish_estimate(self, est, keyframe: bool) -> None:
        from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
        from sensor_msgs.msg import NavSatFix

        s = self.settings
        t = float(_get(est, "t"))
        x, y, yaw = float(_get(est, "x")), float(_get(est, "y")), float(_get(est, "yaw", 0.0) or 0.0)
        cov = np.asarray(_get(est, "cov"), float).reshape(3, 3)
        status = str(_get(est, "status", "tracking"))
        self._last_est, self._last_status = est, status
        self._last_reasons = list(_get(est, "reasons", []) or [])
        if not (math.isfinite(x) and math.isfinite(y) and np.all(np.isfinite(cov[:2, :2]))):
            self.drops.add("estimate.nonfinite", "the localizer returned a non-finite estimate; not published")
            return

        raw = self.router.last_fix
        f = msgconv.fix_fields(est.lat, est.lon, cov[:2, :2], self.loc.grid_convergence_deg(x, y),
                               ok=msgconv.estimate_status_ok(status),
                               altitude=raw.altitude if raw is not None else float("nan"),
                               var_up=raw.var_up if raw is not None else None,
                               service=raw.service if raw is not None else None)
        fix = NavSatFix(latitude=f["latitude"], longitude=f["longitude"], altitude=f["altitude"],
                        position_covariance=f["position_covariance"],
                        position_covariance_type=f["position_covariance_type"])
        self._stamp(fix.header, t, s.base_frame)
        fix.status.status, fix.status.service = f["status"], f["service"]
        self.pub_fix.publish(fix)

        p = msgconv.pose_fields(x, y, yaw, cov)
        pose = PoseWithCovarianceStamped()
        self._stamp(pose.header, t, s.map_frame)
        pp = pose.pose.pose
        pp.position.x, pp.position.y, pp.position.z = p["position"]
        pp.orientation.x, pp.orientation.y, pp.orientation.z, pp.orientation.w = p["orientation"]
        pose.pose.covariance = p["covariance"]
        self.pub_pose.publish(pose)
        self.rate_pub.tick()

        ps = PoseStamped()
        ps.header = pose.header
        ps.pose = pose.pose.pose
        self._path_msg.poses.append(ps)
        if len(self._path_msg.poses) > s.path_max_poses:
            del self._path_msg.poses[: len(self._path_msg.poses) - s.path_max_poses]
        self._path_msg.header.stamp = pose.header.stamp
        self.pub_path.publish(self._path_msg)
        self._path_xy.append((x, y))
        if keyframe:
            self._publish_markers(est, pose.header)
            if self.pub_debug is not None and self.pub_debug.get_subscription_count() > 0:
                self._publish_debug(est, pose.header, x, y, yaw, cov, status)

    def _publish_markers(self, est, header) -> None:
        from visualization_msgs.msg import Marker, MarkerArray

        k = self.settings.markers_top_k
        cand = _get(est, "candidates")
        arr = MarkerArray()
        clear = Marker()
        clear.header = header
        clear.action = Marker.DELETEALL
        arr.markers.append(clear)
        if cand is not None and k > 0:
            xs = np.asarray(_get(cand, "x", []), float).reshape(-1)[:k]
            ys = np.asarray(_get(cand, "y", []), float).reshape(-1)[:k]
            sc = np.asarray(_get(cand, "score", _get(cand, "scores", [])), float).reshape(-1)[:k]
            ok = np.isfinite(xs) & np.isfinite(ys)
            if ok.any():
                lo, hi = (float(np.nanmin(sc[ok])), float(np.nanmax(sc[ok]))) if sc.size == xs.size else (0.0, 1.0)
                for i in np.flatnonzero(ok):
                    m = Marker()
                    m.header = header
                    m.ns, m.id = "candidates", int(i)
                    m.type, m.action = Marker.SPHERE, Marker.ADD
                    m.pose.position.x, m.pose.position.y, m.pose.position.z = float(xs[i]), float(ys[i]), 0.5
                    m.pose.orientation.w = 1.0
                    m.scale.x = m.scale.y = m.scale.z = 4.0 if i == 0 else 2.5
                    v = (float(sc[i]) - lo) / (hi - lo) if sc.size == xs.size and hi > lo else 1.0
                    m.color.r, m.color.g, m.color.b, m.color.a = 1.0, float(v), float(1.0 - v), 0.8
                    arr.markers.append(m)
        self.pub_markers.publish(arr)

    def _debug_renderer(self):
        if self._debug is None:
            from .debug_image import DebugRenderer

            s = self.settings
            ortho = s.debug_orthophoto or None
            if ortho is None and self.index is not None:
                man = getattr(self.index, "manifest", {}) or {}
                img = man.get("imagery") if isinstance(man.get("imagery"), dict) else {}
                ortho = img.get("path") if img.get("kind", "geotiff") == "geotiff" else None  # XYZ: not drawn
                if ortho is not None:
                    from pathlib import Path

                    ortho = Path(ortho)
                    if not ortho.is_absolute():
                        ortho = Path(s.index_path) / ortho
                    if not ortho.is_file():
                        ortho = None
            cell = float(getattr(self.index, "spacing_m", 5.0) or 5.0)
            self._debug = DebugRenderer(self.frame, ortho, s.debug_image_size_px, s.debug_crop_m, cell_m=cell)
        return self._debug

    def _publish_debug(self, est, header, x, y, yaw, cov, status) -> None:
        from sensor_msgs.msg import Image

        try:
            sm = _get(est, "sim_map")
            sim = None
            if sm is not None:
                sim = (_get(sm, "x"), _get(sm, "y"), _get(sm, "score", _get(sm, "scores")))
                if any(v is None for v in sim):
                    sim = None
            cand = _get(est, "candidates")
            cands = None
            if cand is not None:
                cands = (np.asarray(_get(cand, "x", []), float).reshape(-1),
                         np.asarray(_get(cand, "y", []), float).reshape(-1),
                         np.asarray(_get(cand, "score", _get(cand, "scores", [])), float).reshape(-1))
            raw = self.router.last_fix
            gcov = raw.sample.cov_en if raw is not None and raw.sample.ok else None
            conf = _get(est, "confidence")
            text = (f"{status} conf {float(conf):.2f} " if conf is not None else f"{status} ") + \
                f"t {float(_get(est, 't')):.1f} " + ", ".join(self._last_reasons)
            pic = self._debug_renderer().render(
                centre=(x, y), estimate={"x": x, "y": y, "yaw": yaw, "cov": cov, "status": status}, sim_map=sim,
                candidates=cands, gnss=list(self._gnss_xy), gnss_cov=gcov, path=list(self._path_xy), text=text)
            f = rgb_to_image_fields(pic)
            msg = Image(height=f["height"], width=f["width"], encoding=f["encoding"], is_bigendian=0, step=f["step"])
            msg.data = f["data"]
            msg.header = header
            self.pub_debug.publish(msg)
        except Exception as exc:
            self.drops.add("debug_image.error", f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ diagnostics
    def _backend_name(self) -> str:
        enc = self.encoder if self.encoder is not None else getattr(self.loc, "encoder", None)
        return str(getattr(enc, "backend", "?"))

    def _index_stats(self) -> Dict[str, Any]:
        try:
            return dict(self.index.stats()) if self.index is not None else {}
        except Exception:
            return {}

    def diagnostics_status(self):
        """(level, message, [(key, value)]) of the current state; also used by tests."""
        s = self.settings
        now = time.monotonic()
        drops = self.drops.snapshot()
        new = {k: v - self._drops_at_last_diag.get(k, 0) for k, v in drops.items()
               if v > self._drops_at_last_diag.get(k, 0)}
        self._drops_at_last_diag = drops
        level, msgs = STATUS_LEVEL.get(self._last_status, 1), [self._last_status]
        if self._last_reasons:
            msgs[0] += f" ({', '.join(self._last_reasons)})"
        if self._worker is None or not self._worker.is_alive():
            level, msgs = 2, ["worker thread stopped"] + msgs
        for k in ("image", "fix"):
            last = self.rate_in[k].last
            if last is None:
                level = max(level, 1)
                msgs.append(f"no {k} received yet")
            elif now - last > s.stale_input_s:
                level = max(level, 1)
                msgs.append(f"no {k} for {now - last:.1f} s")
        if new:
            level = max(level, 1)
            msgs.append("dropped " + ", ".join(f"{v} {k}" for k, v in sorted(new.items())))
        events = self.events.snapshot()
        new_ev = {k: v - self._events_at_last_diag.get(k, 0) for k, v in events.items()
                  if v > self._events_at_last_diag.get(k, 0)}
        self._events_at_last_diag = events
        if new_ev.get("fix.outside_index"):
            level = max(level, 1)
            msgs.append(f"{new_ev['fix.outside_index']} fix.outside_index (GNSS outside the tile index)")
        if new_ev.get("time_backwards"):
            msgs.append(f"time went backwards {new_ev['time_backwards']}x: reset")
        if new_ev.get("fix.covariance_invalid"):
            level = max(level, 1)
            msgs.append(f"{new_ev['fix.covariance_invalid']} fix.covariance_invalid (default sigma used)")
        input_warnings, input_values = self.inputs.report()
        if input_warnings:
            level = max(level, 1)
            msgs += input_warnings

        def pct(d, q):
            with self._stats_lock:
                a = np.asarray(list(d), float)
            return f"{np.percentile(a, q):.1f}" if a.size else "nan"

        ist = self._index_stats()
        values = [
            ("status", self._last_status), ("reasons", ", ".join(self._last_reasons)),
            ("backend", self._backend_name()), ("model", s.model), ("index_path", s.index_path),
            ("index.shards_loaded", str(ist.get("shards_loaded", "?"))),
            ("index.shards_total", str(ist.get("shards_total", "?"))),
            ("index.tiles_loaded", str(ist.get("tiles_loaded", "?"))),
            ("index.memory_mb", str(ist.get("memory_mb", "?"))),
            ("rate.image_in_hz", f"{self.rate_in['image'].rate():.2f}"),
            ("rate.fix_in_hz", f"{self.rate_in['fix'].rate():.2f}"),
            ("rate.odom_in_hz", f"{self.rate_in['odom'].rate():.2f}"),
            ("rate.keyframes_hz", f"{self.rate_keyframe.rate():.2f}"),
            ("rate.published_hz", f"{self.rate_pub.rate():.2f}"),
            ("count.images_in", str(self.rate_in["image"].total)), ("count.fixes_in", str(self.rate_in["fix"].total)),
            ("count.keyframes", str(self.rate_keyframe.total)), ("count.published", str(self.rate_pub.total)),
            ("count.images_converted", str(self.count["images_converted"])),
            ("count.images_processed", str(self.count["images_processed"])),
            ("latency.receipt_to_publish_p50_ms", pct(self._lat_ms, 50)),
            ("latency.receipt_to_publish_p95_ms", pct(self._lat_ms, 95)),
            ("latency.stamp_to_publish_p50_ms", pct(self._stamp_lat_ms, 50)),
            ("latency.compute_p50_ms", pct(self._compute_ms, 50)),
            ("queue.depth", str(len(self.queue))), ("queue.images", str(self.queue.n_images)),
            ("drops.total", str(sum(drops.values()))),
        ]
        values += input_values
        values += [(f"drops.{k}", str(v)) for k, v in sorted(drops.items())]
        values += [(f"events.{k}", str(v)) for k, v in sorted(events.items())]
        try:
            st = self.loc.stats()
            values += [(f"localizer.{k}", str(v)) for k, v in sorted(_flatten(st).items())]
        except Exception as exc:
            values.append(("localizer.stats_error", str(exc)))
        return level, "; ".join(msgs), values

    def _publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        try:
            level, message, values = self.diagnostics_status()
        except Exception as exc:
            level, message, values = 2, f"diagnostics failed: {exc}", []
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        st = DiagnosticStatus()
        st.level = bytes([level]) if isinstance(DiagnosticStatus().level, bytes) else level
        st.name = f"{self.get_name()}: localization"
        st.message = message
        st.hardware_id = "geoloc"
        st.values = [KeyValue(key=k, value=str(v)) for k, v in values]
        arr.status = [st]
        self.pub_diag.publish(arr)

    # ------------------------------------------------------------------ shutdown
    def stop(self) -> None:
        """Stop the worker thread (after the current message) and the log bridge."""
        self._stop.set()
        if self._worker is not None and self._worker.is_alive():
            self._worker.join(timeout=5.0)
        self._worker = None
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


def _flatten(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _init_without_signal_handlers(args: List[str]) -> None:
    """rclpy.init leaving SIGINT to Python (KeyboardInterrupt) and SIGTERM raising it too, so the
    context stays valid until the node has stopped and logged: rclpy's own handler shuts the
    context down first, and every log line after that fails to reach /rosout with "publisher's
    context is invalid". SignalHandlerOptions exists from Humble on; without it, the default."""
    import signal

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
        from rclpy.executors import SingleThreadedExecutor

        ext = getattr(__import__("rclpy.executors", fromlist=["x"]), "ExternalShutdownException", KeyboardInterrupt)
        executor = SingleThreadedExecutor()
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
