"""Bag replay evaluation: metrics, replay through the Localizer, pictures and a report.

    from geoloc_ros.evaluation.replay import replay_bag, write_run
    res = replay_bag("drive/bag", encoder, index, LocalizerConfig())   # -> ReplayResult
    run_dir = write_run(res, "runs/eval", command="geoloc eval replay ...")

Modules: ``metrics`` (pure numpy: errors against interpolated truth, covariance honesty,
availability, time to first fix, recall@K, status shares, latency), ``replay`` (rosbag2 MCAP /
sqlite3 -> raw GNSS, GNSS+odometry baseline and the full Localizer in one pass; run directory),
``plots`` (matplotlib, Agg), ``report`` (report.md), ``live`` (the demo's run of the real node over
DDS on a bag, recorded and compared with the replay; rclpy inside its functions). Bags are read and
written through ``geoloc_ros.bag``. Importing this package is cheap: numpy, rosbags and matplotlib
are imported by the modules that need them.
"""
from __future__ import annotations

RUN_FORMAT = "geoloc-eval-run"
RUN_FORMAT_VERSION = 1

__all__ = ["RUN_FORMAT", "RUN_FORMAT_VERSION"]
