"""How much of an input stream arrived: expected vs received, from the stamps alone (no ROS).

Over DDS a subscriber never hears about the messages the transport lost; the stamps of the ones
that did arrive still show the stream's own rate. ``StreamMonitor`` learns the period of a stream
from the spacing of its stamps (or takes a configured rate), and counts for every received
message how many the stamp gap before it skipped:

* ``expected`` = ``received`` + ``missing`` (missing = sum over gaps of round(gap / period) - 1);
* a ``gap`` is a spacing of 1.5 periods or more; ``longest_gap_s`` the largest one;
* a spacing longer than ``break_s`` (an outage, a bag skipped ahead) or a stamp going back (a bag
  loop, a clock reset) starts a new segment: counted under ``breaks``, not as missing messages,
  and the period is learned again;
* ``recent_share`` = received / expected over the last ``window_s`` of stamps: what a WARN is
  raised on (``share`` is the same over the whole run).

The period: with a fraction p of the messages arriving, a spacing of one period is the most
frequent one only when p is above ~0.5, and the median spacing is already two periods at p = 0.4.
So the estimate starts from a low percentile of the recent spacings (one period as long as at
least ~15 % of them are single steps) and refines it as the median of spacing / round(spacing /
estimate). Thread-safe: callbacks tick, a timer reads ``snapshot``.
"""
from __future__ import annotations

import collections
import math
import threading
from dataclasses import dataclass
from typing import Deque, Dict, List, Optional, Tuple

import numpy as np

GAP_FACTOR = 1.5  # a spacing of this many periods or more is a gap (at least one message missing)


@dataclass(frozen=True)
class StreamStats:
    received: int
    expected: int
    missing: int
    share: float  # received / expected over the run (nan before the period is known)
    recent_share: float  # the same over the last window_s of stamps
    stream_hz: float  # the rate the stream is sent at (configured, or learned from the stamps; nan: not yet)
    received_hz: float  # received messages per second of stamps over the window
    gaps: int
    longest_gap_s: float
    breaks: int
    bad_stamps: int

    def values(self, prefix: str) -> List[Tuple[str, str]]:
        """(key, text) pairs for /diagnostics."""
        def f(v, fmt):
            return "nan" if not math.isfinite(v) else format(v, fmt)

        return [(f"{prefix}.received", str(self.received)), (f"{prefix}.expected", str(self.expected)),
                (f"{prefix}.missing", str(self.missing)), (f"{prefix}.share", f(self.share, ".3f")),
                (f"{prefix}.recent_share", f(self.recent_share, ".3f")),
                (f"{prefix}.stream_hz", f(self.stream_hz, ".2f")),
                (f"{prefix}.received_hz", f(self.received_hz, ".2f")),
                (f"{prefix}.gaps", str(self.gaps)), (f"{prefix}.longest_gap_s", f(self.longest_gap_s, ".2f")),
                (f"{prefix}.breaks", str(self.breaks)), (f"{prefix}.bad_stamps", str(self.bad_stamps))]


class StreamMonitor:
    """Expected vs received messages of one input stream, from the stamps (see the module docstring)."""

    def __init__(self, expected_hz: float = 0.0, window_s: float = 10.0, break_s: float = 10.0,
                 history: int = 200, min_spacings: int = 8, refresh_every: int = 10):
        self.fixed_period = 1.0 / expected_hz if expected_hz and expected_hz > 0 else None
        self.window_s, self.break_s = float(window_s), float(break_s)
        self.min_spacings, self.refresh_every = int(min_spacings), int(refresh_every)
        self._spacings: Deque[float] = collections.deque(maxlen=int(history))
        self._pending: List[float] = []  # spacings of this segment seen before the period was known
        self._recent: Deque[List] = collections.deque()  # [stamp, messages it stands for]
        self._lock = threading.Lock()
        self._period: Optional[float] = self.fixed_period
        self._since_refresh = 0
        self._last: Optional[float] = None
        self.received = self.missing = self.gaps = self.breaks = self.bad_stamps = 0
        self.longest_gap_s = 0.0

    # ------------------------------------------------------------------ feeding
    def tick(self, stamp: float) -> None:
        """One received message with header stamp ``stamp`` (seconds)."""
        with self._lock:
            self.received += 1
            if not math.isfinite(stamp) or stamp <= 0.0:
                self.bad_stamps += 1
                return
            last, self._last = self._last, stamp
            if last is None:
                self._add_recent(stamp, 1)
                return
            d = stamp - last
            if d < 0.0 or d > self.break_s:  # a new segment: bag loop, clock reset, outage, skip
                self.breaks += 1
                self._new_segment()
                self._add_recent(stamp, 1)
                return
            if d == 0.0:  # a duplicate stamp: nothing to learn from
                self._add_recent(stamp, 1)
                return
            self._spacings.append(d)
            if self._period is None:
                self._pending.append(d)
                self._add_recent(stamp, 1)
                if len(self._spacings) >= self.min_spacings:
                    self._period = self._estimate()
                    first = len(self._recent) - len(self._pending)  # the entries of these spacings' stamps
                    for i, p in enumerate(self._pending):
                        miss = self._count(p)
                        if first + i >= 0:
                            self._recent[first + i][1] += miss
                    self._pending = []
                return
            self._since_refresh += 1
            if self.fixed_period is None and self._since_refresh >= self.refresh_every:
                self._since_refresh = 0
                self._period = self._estimate()
            self._add_recent(stamp, 1 + self._count(d))

    def _new_segment(self) -> None:
        self._pending = []
        self._recent.clear()
        if self.fixed_period is None:
            self._spacings.clear()
            self._period = None

    def _count(self, d: float) -> int:
        """Record one spacing against the known period; returns the messages it skipped."""
        k = max(int(round(d / self._period)), 1)
        if d >= GAP_FACTOR * self._period:
            self.gaps += 1
            self.longest_gap_s = max(self.longest_gap_s, d)
        self.missing += k - 1
        return k - 1

    def _add_recent(self, stamp: float, n: int) -> None:
        self._recent.append([stamp, n])
        while self._recent and stamp - self._recent[0][0] > self.window_s:
            self._recent.popleft()

    def _estimate(self) -> float:
        d = np.asarray(self._spacings, float)
        t0 = float(np.percentile(d, 10))
        k = np.maximum(np.round(d / t0), 1.0)
        ok = k <= 20
        return float(np.median(d[ok] / k[ok])) if ok.any() else t0

    # ------------------------------------------------------------------ reading
    def snapshot(self) -> StreamStats:
        with self._lock:
            known = self._period is not None
            pending = len(self._pending)  # spacings not classified yet (the period is being learned)
            expected = self.received + self.missing
            share = self.received / expected if known and expected > 0 else float("nan")
            n_recv = len(self._recent)
            n_exp = sum(n for _, n in self._recent)
            recent = n_recv / n_exp if known and n_exp > 0 and pending == 0 else float("nan")
            span = self._recent[-1][0] - self._recent[0][0] if n_recv > 1 else 0.0
            rx_hz = (n_recv - 1) / span if span > 0 else float("nan")
            hz = 1.0 / self._period if known else float("nan")
            return StreamStats(received=self.received, expected=expected, missing=self.missing, share=share,
                               recent_share=recent, stream_hz=hz, received_hz=rx_hz, gaps=self.gaps,
                               longest_gap_s=self.longest_gap_s, breaks=self.breaks, bad_stamps=self.bad_stamps)


class InputMonitor:
    """One ``StreamMonitor`` per named input, and the WARN text when one falls below ``min_share``."""

    def __init__(self, expected_hz: Dict[str, float], min_share: float, window_s: float, break_s: float):
        self.min_share = float(min_share)
        self.streams = {name: StreamMonitor(hz, window_s=window_s, break_s=break_s)
                        for name, hz in expected_hz.items()}

    def tick(self, name: str, stamp: float) -> None:
        self.streams[name].tick(stamp)

    def report(self) -> Tuple[List[str], List[Tuple[str, str]]]:
        """(warnings, diagnostics values): a warning per input whose recent share is below min_share."""
        warnings: List[str] = []
        values: List[Tuple[str, str]] = []
        for name, mon in self.streams.items():
            s = mon.snapshot()
            values += s.values(f"input.{name}")
            if math.isfinite(s.recent_share) and s.recent_share < self.min_share:
                warnings.append(f"{name} input at {100 * s.recent_share:.0f} % of its {s.stream_hz:.1f} Hz "
                                f"({s.missing} of {s.expected} missing since start, {s.gaps} gaps)")
        return warnings, values
