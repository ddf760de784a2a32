"""rosbag2 (MCAP / sqlite3) reading and writing, for every command that touches a bag: the replay,
``geoloc play``, the demo's live run and the simulator. numpy, stdlib, ``core`` and rosbags (and the
``mcap`` package for truncated MCAP files), both imported inside functions: no sim, evaluation,
ros, torch or rclpy.

The module reads messages into plain values; what they mean stays with the caller. A published
position topic comes back as ``Positions`` arrays in the messages' own terms (lat/lon or x/y, the
covariance as published): ``evaluation.replay.read_track`` puts them in the map frame and makes the
``metrics.Track``, so this module never imports evaluation.

    types.py   typestore() (Humble message definitions), header(ts, t_ns, frame_id)
    reader.py  BagSource (topics, messages, raw CDR; truncated MCAP read up to its last chunk),
               read_bag / bag_topics (thin functions over it), stamp_ordered (header-stamp reorder),
               read_positions (NavSatFix / PoseWithCovarianceStamped topic -> arrays)
    writer.py  TopicSpec, BagWriter (declared topics, ordered stamps, header == bag time)
"""
from __future__ import annotations

from .reader import FIX_TYPE, POSE_TYPE, BagSource, Positions, bag_topics, read_bag, read_positions, stamp_ordered, storage_of
from .types import header, typestore
from .writer import BAG_VERSION, BagWriter, TopicSpec

__all__ = ["BAG_VERSION", "FIX_TYPE", "POSE_TYPE", "BagSource", "BagWriter", "Positions", "TopicSpec", "bag_topics",
           "header", "read_bag", "read_positions", "stamp_ordered", "storage_of", "typestore"]
