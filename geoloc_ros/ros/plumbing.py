"""The node's plumbing, rclpy-free: drop counters with throttled log lines, the worker's input queue
(images capped, drop-oldest), rate meters, and the bridge from Python logging to the ROS logger."""
from __future__ import annotations

import collections
import logging
import math
import threading
import time
from typing import Any, Callable, Deque, Dict, Optional, Tuple


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
    """Input events in arrival order; images are capped (drop-oldest image), other events capped
    separately. With a ``stamp``, an event goes before the waiting events of later stamps: callbacks
    of two callback groups (a multi-threaded executor) may enqueue a little out of stamp order."""

    def __init__(self, image_cap: int, other_cap: int, on_drop: Callable[[str], None]):
        self._dq: Deque[Tuple[str, Any, float]] = collections.deque()
        self._cond = threading.Condition()
        self.image_cap, self.other_cap = int(image_cap), int(other_cap)
        self.n_images = 0
        self.puts = 0  # items ever put (the worker's ``applied`` catches up with it)
        self._on_drop = on_drop

    def put(self, kind: str, item: Any, stamp: Optional[float] = None) -> None:
        dropped = None
        with self._cond:
            if kind == "image":
                if self.n_images >= self.image_cap:
                    for i, (k, _, _) in enumerate(self._dq):
                        if k == "image":
                            del self._dq[i]
                            self.n_images -= 1
                            dropped = "image.queue_full"
                            break
                self.n_images += 1
            elif len(self._dq) - self.n_images >= self.other_cap:
                for i, (k, _, _) in enumerate(self._dq):
                    if k != "image":
                        del self._dq[i]
                        dropped = f"{k}.queue_full"
                        break
            s = -math.inf if stamp is None else float(stamp)
            pos = len(self._dq)
            while stamp is not None and pos > 0 and self._dq[pos - 1][2] > s:
                pos -= 1
            self._dq.insert(pos, (kind, item, s))
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
            kind, item, _ = self._dq.popleft()
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
