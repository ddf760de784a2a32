"""The message type store every geoloc bag is written and read with, and the stamped header."""
from __future__ import annotations


def typestore():
    """A fresh rosbags type store (``Stores.ROS2_HUMBLE``), used for writing and as the default for
    reading bags that carry no message definitions. Fresh on each call: the MCAP fallback reader
    registers the definitions it finds in a bag into it."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


def header(ts, t_ns: int, frame_id: str):
    """std_msgs/Header of ``ts`` stamped ``t_ns`` (ns since the epoch) in ``frame_id``."""
    T = ts.types
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=t_ns // 10 ** 9, nanosec=t_ns % 10 ** 9),
                                    frame_id=frame_id)
