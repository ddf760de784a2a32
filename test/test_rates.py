"""core.rates: expected vs received messages of an input stream, from the stamps that arrived."""
from __future__ import annotations

import math

import numpy as np
import pytest

from geoloc_ros.core.rates import InputMonitor, StreamMonitor


def _feed(mon, stamps):
    for t in stamps:
        mon.tick(float(t))
    return mon.snapshot()


@pytest.mark.parametrize("keep", [1.0, 0.9, 0.4, 0.25])
def test_expected_count_matches_what_was_sent_whatever_arrived(keep):
    """30 Hz for 60 s with 2 ms stamp jitter; a random share of it arrives (the transport's loss)."""
    rng = np.random.default_rng(3)
    sent = 1000.0 + np.arange(1800) / 30.0 + rng.normal(0, 0.002, 1800)
    got = sent[rng.random(1800) < keep]
    got = np.concatenate([[sent[0]], got[1:-1], [sent[-1]]])  # the first and last frame arrived
    s = _feed(StreamMonitor(), got)
    assert s.received == len(got)
    assert abs(s.expected - 1800) <= 0.02 * 1800, s
    assert s.stream_hz == pytest.approx(30.0, rel=0.01)
    assert s.share == pytest.approx(len(got) / 1800, abs=0.02)
    assert s.recent_share == pytest.approx(keep, abs=0.1)
    assert (s.gaps == 0) == (keep == 1.0) and s.breaks == 0
    assert s.received_hz == pytest.approx(30 * keep, rel=0.15)


def test_a_configured_rate_is_used_from_the_first_message():
    s = _feed(StreamMonitor(expected_hz=5.0), 10.0 + 0.2 * np.array([0, 1, 3, 4, 8]))
    assert (s.received, s.expected, s.missing, s.gaps) == (5, 9, 4, 2)
    assert s.longest_gap_s == pytest.approx(0.8) and s.stream_hz == pytest.approx(5.0)


def test_a_bag_loop_or_a_long_outage_is_a_break_not_lost_messages():
    mon = StreamMonitor(break_s=5.0)
    _feed(mon, 100.0 + 0.1 * np.arange(50))
    _feed(mon, 100.0 + 0.1 * np.arange(50))  # the bag starts again
    s = _feed(mon, 200.0 + 0.1 * np.arange(50))  # 95 s later
    assert s.breaks == 2 and s.missing == 0 and s.expected == s.received == 150 and s.share == 1.0


def test_bad_stamps_are_received_but_not_timed():
    mon = StreamMonitor()
    s = _feed(mon, [0.0, float("nan")] + list(10.0 + 0.1 * np.arange(20)))
    assert s.received == 22 and s.bad_stamps == 2 and s.missing == 0


def test_nothing_is_claimed_before_the_period_is_known():
    s = _feed(StreamMonitor(), [1.0, 1.1, 1.3])
    assert math.isnan(s.share) and math.isnan(s.recent_share) and math.isnan(s.stream_hz)
    assert s.expected == s.received == 3


def test_input_monitor_warns_only_for_the_input_below_the_share():
    mon = InputMonitor({"image": 0.0, "fix": 0.0}, min_share=0.9, window_s=10.0, break_s=10.0)
    for i in range(300):
        mon.tick("image", 50.0 + i / 30.0)
        if i % 3 != 1:  # one fix in three lost
            mon.tick("fix", 50.0 + i / 10.0)
    warnings, values = mon.report()
    assert len(warnings) == 1 and warnings[0].startswith("fix input at 6") and "of its 10.0 Hz" in warnings[0], warnings
    v = dict(values)
    assert v["input.image.received"] == v["input.image.expected"] == "300" and v["input.image.share"] == "1.000"
    assert v["input.fix.received"] == "200" and v["input.fix.expected"] == "300" and v["input.fix.gaps"] == "100"
