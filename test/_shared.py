"""Constants and helpers shared by test modules (not a test module)."""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Callable

# the length of conftest's shared drive (drive_dir): about 200 m, ~35 keyframes
DRIVE_S = 24.0

_DOMAINS_TAKEN = set()


def ros_domain() -> int:
    """A ROS domain id no other test of this run uses: random in 1..101, and with pytest-xdist only
    ids of this worker's residue class, so parallel workers never share a domain."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    n = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    k = int(worker[2:]) if worker[2:].isdigit() else 0
    free = [d for d in range(1, 102) if d % n == k % n and d not in _DOMAINS_TAKEN]
    dom = random.choice(free)
    _DOMAINS_TAKEN.add(dom)
    return dom


def copy_bag(src, dst, *, drop=(), extra_topic=None, storage: str = "mcap", first_s=None):
    """Copy a rosbag2 message by message with rosbags itself (not the code under test): without the
    ``drop`` topics, into ``storage`` (mcap or sqlite3), only the first ``first_s`` seconds when given;
    ``extra_topic`` adds a topic of a custom message type (``my_msgs/msg/Blob``) unknown to the
    default type store, written beside every /gnss/fix."""
    import numpy as np
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    blob = "my_msgs/msg/Blob"
    ts.register(get_types_from_msg("uint8[] data\nstring note\n", blob))
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    with Reader(src) as r, Writer(dst, version=8, storage_plugin=plugin) as w:
        conns = {c.id: w.add_connection(c.topic, c.msgtype, typestore=ts) for c in r.connections
                 if c.topic not in drop}
        xc = w.add_connection(extra_topic, blob, typestore=ts) if extra_topic else None
        end = None if first_s is None else r.start_time + int(first_s * 1e9)
        Blob = ts.types[blob]
        for c, t, raw in r.messages(stop=end):
            if c.id in conns:
                w.write(conns[c.id], t, raw)
                if xc is not None and c.topic == "/gnss/fix":
                    w.write(xc, t, ts.serialize_cdr(Blob(data=np.arange(5, dtype=np.uint8), note="x"), blob))
    return dst


def made_once(tmp_path_factory, name: str, make: Callable[[Path], object]) -> Path:
    """``base_temp/name``, made by ``make(path)`` once per test run: with pytest-xdist the workers share
    it (the first one makes it while a file lock keeps the others waiting), the others reuse it."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's base temp, above each worker's own
    out, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.is_file():
            if out.exists():  # a worker that failed half-way
                shutil.rmtree(out)
            make(out)
            done.touch()
    return out
