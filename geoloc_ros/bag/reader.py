"""Reading rosbag2 bags (MCAP or sqlite3; a folder or a single file): one reader for every command.

    src = BagSource(bag)                 # topics, storage; refuses what it cannot read (InvalidArgument)
    for topic, t_ns, msg in src.messages(["/gnss/fix"]): ...      # deserialised, bag order
    for topic, t_ns, raw in src.raw_messages(None, start_ns=...): ...  # CDR bytes (geoloc play)
    stamp_ordered(src.messages(topics), window_ns, late)  # re-ordered by header stamp

rosbags' ``AnyReader`` does the work; a bag without message definitions is read with the Humble
type store (``types.typestore``). A truncated MCAP file (no footer: AnyReader refuses it) is
streamed record by record up to its last complete chunk, registering the message definitions the
file carries; ``truncated`` then says where it ended. A damaged sqlite3 file cannot be opened: a
clear error.
"""
from __future__ import annotations

import heapq
import logging
import re
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Set, Tuple

import numpy as np

from ..core.errors import InvalidArgument
from ..core.msgconv import stamp_to_ns
from .types import typestore

log = logging.getLogger(__name__)

FIX_TYPE = "sensor_msgs/msg/NavSatFix"
POSE_TYPE = "geometry_msgs/msg/PoseWithCovarianceStamped"


def storage_of(bag: Path) -> str:
    """"mcap", "sqlite3" (or another storage identifier) of a bag folder or file; "unknown" if none."""
    bag = Path(bag)
    if bag.is_file():
        return "mcap" if bag.suffix == ".mcap" else "sqlite3" if bag.suffix == ".db3" else bag.suffix.lstrip(".")
    meta = bag / "metadata.yaml"
    if meta.is_file():
        m = re.search(r"storage_identifier:\s*(\S+)", meta.read_text(errors="replace"))
        if m:
            return m.group(1)
    if any(bag.glob("*.mcap")):
        return "mcap"
    if any(bag.glob("*.db3")):
        return "sqlite3"
    return "unknown"


def _mcap_files(bag: Path) -> List[Path]:
    bag = Path(bag)
    return [bag] if bag.is_file() else sorted(bag.glob("*.mcap"))


def _transient_local(qos: Any) -> bool:
    """True when offered QoS profiles (rosbags ``Qos`` objects, or the YAML string older bags and
    MCAP channel metadata hold) say transient-local durability (a latched topic such as /tf_static)."""
    if isinstance(qos, str):
        return "durability: 1" in qos or "transient_local" in qos.lower()
    for q in qos or []:
        d = getattr(q, "durability", None)
        if d is not None and (getattr(d, "value", d) == 1 or "TRANSIENT" in str(d).upper()):
            return True
    return False


class BagSource:
    """Topics and messages of a rosbag2, via rosbags' AnyReader; a truncated MCAP file (which
    AnyReader refuses: no footer) is streamed record by record up to its last complete chunk.

    ``topics``: {name: (message type, count)}; ``storage``; ``start_ns``: the first bag time (None
    when the bag is empty); ``latched``: topics recorded transient-local; ``open_error``: why the
    normal reader refused the bag (None when it did not); ``truncated``: set when reading stopped
    early."""

    def __init__(self, bag: Path):
        self.bag = Path(bag)
        if not self.bag.exists():
            raise InvalidArgument(f"bag {self.bag} does not exist")
        self.storage = storage_of(self.bag)
        self.truncated: Optional[str] = None
        self.open_error: Optional[str] = None  # set when the fallback reader is in use
        self.topics: Dict[str, Tuple[str, int]] = {}
        self.latched: Set[str] = set()
        self.start_ns: Optional[int] = None
        from rosbags.highlevel import AnyReader, AnyReaderError

        try:
            with AnyReader([self.bag], default_typestore=typestore()) as reader:
                self.topics = {name: (info.msgtype or "?", int(info.msgcount)) for name, info in reader.topics.items()}
                self.latched = {c.topic for c in reader.connections
                                if _transient_local(getattr(getattr(c, "ext", None), "offered_qos_profiles", None))}
                if any(info.msgcount for info in reader.topics.values()):
                    self.start_ns = int(reader.start_time)
        except (AnyReaderError, OSError, ValueError, KeyError) as exc:
            files = _mcap_files(self.bag)
            if self.storage == "mcap" and files:
                log.warning("bag %s cannot be opened normally (%s): reading the MCAP data record by record "
                            "(a truncated recording?)", self.bag, exc)
                self.open_error = str(exc)
                self._scan_stream(files)
                if not self.topics:
                    raise InvalidArgument(f"bag {self.bag} cannot be read ({exc}) and holds no complete MCAP "
                                          f"chunk; record it again (or try `mcap recover`)") from exc
            elif self.storage == "sqlite3":
                raise InvalidArgument(f"bag {self.bag} cannot be opened ({exc}): the sqlite3 file is damaged or "
                                      f"truncated; try `sqlite3 bag.db3 .recover` or record it again") from exc
            else:
                raise InvalidArgument(f"{self.bag} is not a readable rosbag2 (MCAP or sqlite3) folder: {exc}") from exc

    # -- fallback: sequential MCAP reading -------------------------------------------------
    def _stream_records(self, files: List[Path]) -> Iterator[Tuple[Any, Any, Any]]:
        """(schema, channel, message) of every complete message, in file order; sets
        ``self.truncated`` when a file ends early."""
        from mcap.exceptions import McapError
        from mcap.records import Channel, Message, Schema
        from mcap.stream_reader import StreamReader

        for f in files:
            schemas: Dict[int, Any] = {}
            channels: Dict[int, Any] = {}
            with open(f, "rb") as fh:
                try:
                    for rec in StreamReader(fh).records:
                        if isinstance(rec, Schema):
                            schemas[rec.id] = rec
                        elif isinstance(rec, Channel):
                            channels[rec.id] = rec
                        elif isinstance(rec, Message):
                            ch = channels.get(rec.channel_id)
                            if ch is not None:
                                yield schemas.get(ch.schema_id), ch, rec
                except (McapError, EOFError, ValueError) as exc:
                    self.truncated = f"{f.name} ends early ({type(exc).__name__}{': ' + str(exc) if str(exc) else ''})"

    def _scan_stream(self, files: List[Path]) -> None:
        """Topics, counts, latched topics and start time from a full pass over the readable records."""
        out: Dict[str, List] = {}
        for schema, ch, rec in self._stream_records(files):
            e = out.setdefault(ch.topic, [schema.name if schema is not None else "?", 0])
            e[1] += 1
            if _transient_local(ch.metadata.get("offered_qos_profiles", "")):
                self.latched.add(ch.topic)
            t = int(rec.log_time)
            self.start_ns = t if self.start_ns is None else min(self.start_ns, t)
        self.topics = {k: (v[0], v[1]) for k, v in out.items()}

    def _stream_messages(self, want: Optional[Set[str]], start_ns: Optional[int], stop_ns: Optional[int],
                         raw: bool) -> Iterator[Tuple[str, int, Any]]:
        ts = typestore()
        registered = set(ts.types)
        for schema, ch, rec in self._stream_records(_mcap_files(self.bag)):
            if (want is not None and ch.topic not in want) or schema is None:
                continue
            t_ns = int(rec.log_time)
            if (start_ns is not None and t_ns < start_ns) or (stop_ns is not None and t_ns >= stop_ns):
                continue
            if raw:
                yield ch.topic, t_ns, bytes(rec.data)
                continue
            name = schema.name
            if name not in registered and schema.encoding == "ros2msg":
                from rosbags.typesys import get_types_from_msg

                try:
                    ts.register(get_types_from_msg(schema.data.decode(), name))
                except Exception as exc:
                    raise InvalidArgument(f"topic {ch.topic}: cannot read message type {name} ({exc})") from exc
                registered.add(name)
            yield ch.topic, t_ns, ts.deserialize_cdr(bytes(rec.data), name)

    # -- messages ----------------------------------------------------------------------------
    def _read(self, topics: Optional[Iterable[str]], start_ns: Optional[int], stop_ns: Optional[int],
              raw: bool) -> Iterator[Tuple[str, int, Any]]:
        want = None if topics is None else set(topics)
        if self.open_error is not None:
            yield from self._stream_messages(want, start_ns, stop_ns, raw)
            return
        from rosbags.highlevel import AnyReader

        with AnyReader([self.bag], default_typestore=typestore()) as reader:
            conns = [c for c in reader.connections if want is None or c.topic in want]
            if not conns:  # (an empty selection would mean every connection to AnyReader)
                return
            it = reader.messages(connections=conns, start=start_ns, stop=stop_ns)
            while True:
                try:
                    conn, t_ns, data = next(it)
                except StopIteration:
                    return
                except Exception as exc:  # a damaged chunk/page in the middle: keep what was read
                    self.truncated = f"reading stopped: {type(exc).__name__}: {exc}"
                    log.warning("bag %s: %s", self.bag, self.truncated)
                    return
                yield conn.topic, t_ns, data if raw else reader.deserialize(data, conn.msgtype)

    def messages(self, topics: Optional[Iterable[str]] = None) -> Iterator[Tuple[str, int, Any]]:
        """(topic, bag time ns, deserialised message) of ``topics`` (None: all) in bag order. Stops
        early (setting ``truncated``) if the file ends before its index says."""
        return self._read(topics, None, None, raw=False)

    def raw_messages(self, topics: Optional[Iterable[str]] = None, *, start_ns: Optional[int] = None,
                     stop_ns: Optional[int] = None) -> Iterator[Tuple[str, int, bytes]]:
        """(topic, bag time ns, CDR bytes as recorded) with ``start_ns <= time < stop_ns``, in bag order."""
        return self._read(topics, start_ns, stop_ns, raw=True)


def read_bag(path: Path, topics: Optional[Iterable[str]] = None) -> Iterator[Tuple[str, int, Any]]:
    """Yield (topic, bag timestamp ns, deserialised message) of ``topics`` (None: all) in time order
    (``BagSource.messages``); a bag that ends early raises ``InvalidArgument`` after its last message."""
    src = BagSource(path)
    yield from src.messages(topics)
    if src.truncated:
        raise InvalidArgument(f"bag {path} is damaged or truncated: {src.truncated}")


def bag_topics(path: Path) -> Dict[str, Tuple[str, int]]:
    """{topic: (message type, count)} from the bag's index."""
    return BagSource(path).topics


def _header_ns(msg, fallback: int) -> int:
    hdr = getattr(msg, "header", None)
    if hdr is None:
        return fallback
    try:
        return stamp_to_ns(hdr.stamp)
    except (AttributeError, TypeError, ValueError):
        return fallback


def stamp_ordered(source: Iterator[Tuple[str, int, Any]], window_ns: int, late: Dict[str, int]):
    """Re-order (topic, bag ns, msg) by header stamp (bag time for messages without a header) within
    ``window_ns`` of the newest stamp seen; yields (topic, stamp ns, msg). Messages older than what
    was already released are dropped and counted in ``late[topic]``."""
    heap: List[Tuple[int, int, str, int, Any]] = []
    newest = -(1 << 62)
    released = -(1 << 62)
    seq = 0
    for topic, t_ns, msg in source:
        s = _header_ns(msg, t_ns)
        if s < released:
            late[topic] = late.get(topic, 0) + 1
            continue
        heapq.heappush(heap, (s, seq, topic, t_ns, msg))
        seq += 1
        newest = max(newest, s)
        while heap and heap[0][0] <= newest - window_ns:
            s0, _, tp, bt, m = heapq.heappop(heap)
            released = s0
            yield tp, s0, m
    while heap:
        s0, _, tp, bt, m = heapq.heappop(heap)
        yield tp, s0, m


class Positions(NamedTuple):
    """The positions one topic published, in header-stamp order, in the messages' own terms (no map
    frame: turning them into a track is the caller's business, e.g. ``evaluation.replay.read_track``).

    NavSatFix: ``lat``/``lon`` (degrees), ``cov`` the east/north block of the position covariance
    (NaN when its type is UNKNOWN), ``fix`` status >= STATUS_FIX; ``x``/``y`` NaN.
    PoseWithCovarianceStamped: ``x``/``y`` in the message's frame, ``cov`` its x/y block, ``fix``
    True; ``lat``/``lon`` NaN."""

    msgtype: str
    t: np.ndarray  # header stamp (s)
    lat: np.ndarray
    lon: np.ndarray
    x: np.ndarray
    y: np.ndarray
    cov: np.ndarray  # (n, 2, 2)
    fix: np.ndarray  # bool


def read_positions(bag: Path, topic: str) -> Positions:
    """The NavSatFix or PoseWithCovarianceStamped messages of ``topic`` as arrays (``Positions``)."""
    from ..core.msgconv import header_time

    src = BagSource(Path(bag))
    if topic not in src.topics:
        raise InvalidArgument(f"bag {bag} has no topic {topic}; its topics: {', '.join(sorted(src.topics))}")
    typ = src.topics[topic][0]
    if typ not in (FIX_TYPE, POSE_TYPE):
        raise InvalidArgument(f"{topic} is a {typ}; a track needs a NavSatFix or PoseWithCovarianceStamped")
    nan = float("nan")
    t, lat, lon, x, y, cov, fix = [], [], [], [], [], [], []
    for _, _, msg in src.messages([topic]):
        t.append(header_time(msg))
        if typ == FIX_TYPE:
            lat.append(float(msg.latitude))
            lon.append(float(msg.longitude))
            x.append(nan)
            y.append(nan)
            cov.append(np.asarray(msg.position_covariance, float).reshape(3, 3)[:2, :2]
                       if int(msg.position_covariance_type) > 0 else np.full((2, 2), nan))
            fix.append(int(msg.status.status) >= 0)
        else:
            p = msg.pose.pose.position
            lat.append(nan)
            lon.append(nan)
            x.append(float(p.x))
            y.append(float(p.y))
            cov.append(np.asarray(msg.pose.covariance, float).reshape(6, 6)[:2, :2])
            fix.append(True)
    order = np.argsort(np.asarray(t, float), kind="stable")
    n = len(t)
    return Positions(typ, np.asarray(t, float)[order], np.asarray(lat, float)[order], np.asarray(lon, float)[order],
                     np.asarray(x, float)[order], np.asarray(y, float)[order],
                     np.asarray(cov, float).reshape(n, 2, 2)[order], np.asarray(fix, bool)[order])
