"""Writing rosbag2 bags (MCAP or sqlite3) with rosbags: one checked writer for every geoloc bag.

    specs = [TopicSpec("/gnss/fix", "sensor_msgs/msg/NavSatFix", "gnss_link", "the receiver")]
    with BagWriter(out_dir, specs, storage="mcap") as w:
        w.write("/gnss/fix", t_ns, msg)          # a rosbags message, serialised here
        w.write_raw("/diagnostics", t_ns, cdr)  # CDR bytes as received (a recorder)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, NamedTuple, Sequence

from ..core.errors import InvalidArgument
from .types import typestore

BAG_VERSION = 8  # rosbag2 metadata version (QoS profiles as a YAML string, as older distros expect)


class TopicSpec(NamedTuple):
    """A topic a bag declares: name, message type, frame_id of its messages, what it holds, and
    whether it is latched (transient-local, depth 1: /tf_static)."""

    name: str
    msgtype: str
    frame_id: str
    description: str
    latched: bool = False


class BagWriter:
    """Thin, checked wrapper around ``rosbags.rosbag2.Writer``.

    Enforces what every geoloc bag promises: known topics only, non-decreasing timestamps,
    and (for stamped messages) bag timestamp == header stamp. Counts messages and bytes.
    """

    def __init__(self, path: Path, topics: Sequence[TopicSpec], storage: str = "mcap"):
        from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise InvalidArgument(f"storage must be one of {', '.join(plugins)}, got {storage!r}")
        self.path = Path(path)
        self.ts = typestore()
        self.topics = {t.name: t for t in topics}
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=plugins[storage])
        zero = QosTime(sec=0, nsec=0)

        def qos(latched: bool):
            return Qos(history=QosHistory.KEEP_LAST, depth=1 if latched else 10, reliability=QosReliability.RELIABLE,
                       durability=QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE,
                       deadline=zero, lifespan=zero, liveliness=QosLiveliness.AUTOMATIC,
                       liveliness_lease_duration=zero, avoid_ros_namespace_conventions=False)

        self._qos = qos
        self._conns: Dict[str, Any] = {}
        self.counts: Dict[str, int] = {t.name: 0 for t in topics}
        self.bytes = 0
        self.last_ns = -1

    def __enter__(self) -> "BagWriter":
        self._writer.open()
        for t in self.topics.values():
            self._conns[t.name] = self._writer.add_connection(t.name, t.msgtype, typestore=self.ts,
                                                              offered_qos_profiles=[self._qos(t.latched)])
        return self

    def __exit__(self, *exc) -> bool:
        return self._writer.__exit__(*exc)

    def write(self, topic: str, t_ns: int, msg) -> None:
        """Serialise ``msg`` (a rosbags message of the topic's type) at bag time ``t_ns``."""
        spec = self._spec(topic, t_ns)
        hdr = getattr(msg, "header", None)
        if hdr is not None and hdr.stamp.sec * 10 ** 9 + hdr.stamp.nanosec != t_ns:
            raise ValueError(f"{topic}: header stamp differs from the bag timestamp {t_ns}")
        self._put(topic, t_ns, self.ts.serialize_cdr(msg, spec.msgtype))

    def write_raw(self, topic: str, t_ns: int, data: bytes) -> None:
        """Write CDR bytes as received (a recorder: bag time is the receive time, so the header
        stamp is not checked)."""
        self._spec(topic, t_ns)
        self._put(topic, t_ns, bytes(data))

    def _spec(self, topic: str, t_ns: int) -> TopicSpec:
        spec = self.topics.get(topic)
        if spec is None:
            raise InvalidArgument(f"topic {topic} was not declared; declared: {', '.join(self.topics)}")
        if t_ns < self.last_ns:
            raise ValueError(f"{topic}: timestamp {t_ns} is before the previous message ({self.last_ns})")
        return spec

    def _put(self, topic: str, t_ns: int, data: bytes) -> None:
        self._writer.write(self._conns[topic], t_ns, data)
        self.counts[topic] += 1
        self.bytes += len(data)
        self.last_ns = t_ns
