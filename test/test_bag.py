"""The bag module (geoloc_ros.bag): BagWriter -> BagSource round trips in MCAP and sqlite3, raw CDR
and time windows (geoloc play), the checks the writer enforces, stamp ordering with late messages,
a truncated MCAP read up to its last chunk, and topics read back as position arrays."""
from __future__ import annotations

import numpy as np
import pytest

from geoloc_ros.bag import BagSource, BagWriter, TopicSpec, bag_topics, header, read_bag, read_positions, stamp_ordered, typestore
from geoloc_ros.core.errors import InvalidArgument

T0 = 1_700_000_000 * 10 ** 9
SPECS = [TopicSpec("/tf_static", "tf2_msgs/msg/TFMessage", "base_link", "mounting", latched=True),
         TopicSpec("/fix", "sensor_msgs/msg/NavSatFix", "gnss_link", "receiver"),
         TopicSpec("/pose", "geometry_msgs/msg/PoseWithCovarianceStamped", "map", "estimate")]


def _fix(ts, t_ns, lat, lon, status=0, cov=(4.0, 0.5, 0.0, 0.5, 9.0, 0.0, 0.0, 0.0, 16.0), ctype=3):
    T = ts.types
    return T["sensor_msgs/msg/NavSatFix"](
        header=header(ts, t_ns, "gnss_link"), status=T["sensor_msgs/msg/NavSatStatus"](status=status, service=1),
        latitude=lat, longitude=lon, altitude=0.0, position_covariance=np.asarray(cov, float),
        position_covariance_type=ctype)


def _pose(ts, t_ns, x, y, var=0.25):
    T = ts.types
    cov = np.zeros(36)
    cov[[0, 7, 35]] = (var, 2 * var, 0.01)
    return T["geometry_msgs/msg/PoseWithCovarianceStamped"](
        header=header(ts, t_ns, "map"), pose=T["geometry_msgs/msg/PoseWithCovariance"](
            pose=T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=x, y=y, z=0.0),
                                             orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)),
            covariance=cov))


def _write(path, storage):
    """A small bag: /tf_static once, then 5 fixes (the third without a fix, the last with an unknown
    covariance) and 5 poses, 0.1 s apart. -> the messages written, in order."""
    ts = typestore()
    T = ts.types
    written = []
    with BagWriter(path, SPECS, storage=storage) as w:
        tf = T["tf2_msgs/msg/TFMessage"](transforms=[])
        w.write("/tf_static", T0, tf)
        written.append(("/tf_static", T0, tf))
        for k in range(5):
            t = T0 + k * 100_000_000
            fix = _fix(ts, t, 44.5 + 1e-5 * k, -73.2, status=-1 if k == 2 else 0, ctype=0 if k == 4 else 3)
            pose = _pose(ts, t, 10.0 + k, 20.0 - k)
            w.write("/fix", t, fix)
            w.write("/pose", t, pose)
            written += [("/fix", t, fix), ("/pose", t, pose)]
    assert w.counts == {"/tf_static": 1, "/fix": 5, "/pose": 5}
    return written


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bags_written_by_bagwriter_read_back_through_bagsource(tmp_path, storage):
    bag = tmp_path / storage
    written = _write(bag, storage)
    src = BagSource(bag)
    assert src.storage == storage and src.open_error is None and src.truncated is None
    assert src.topics == {"/tf_static": ("tf2_msgs/msg/TFMessage", 1), "/fix": ("sensor_msgs/msg/NavSatFix", 5),
                          "/pose": ("geometry_msgs/msg/PoseWithCovarianceStamped", 5)}
    assert bag_topics(bag) == src.topics
    assert src.latched == {"/tf_static"} and src.start_ns == T0
    got = list(src.messages())
    assert [(tp, t) for tp, t, _ in got] == [(tp, t) for tp, t, _ in written]
    assert [m.latitude for tp, _, m in got if tp == "/fix"] == [m.latitude for tp, _, m in written if tp == "/fix"]
    assert [t for tp, t, _ in read_bag(bag, ["/pose"])] == [t for tp, t, _ in written if tp == "/pose"]
    assert list(read_bag(bag, ["/not_in_the_bag"])) == []
    # raw CDR as serialised, within [start, stop) of bag time (what `geoloc play` publishes)
    ts = typestore()
    raw = list(src.raw_messages(["/fix"], start_ns=T0 + 100_000_000, stop_ns=T0 + 300_000_000))
    assert [t for _, t, _ in raw] == [T0 + 100_000_000, T0 + 200_000_000]
    want = [m for tp, t, m in written if tp == "/fix"][1:3]
    assert [bytes(r) for _, _, r in raw] == [bytes(ts.serialize_cdr(m, "sensor_msgs/msg/NavSatFix")) for m in want]


def test_bagwriter_refuses_undeclared_topics_time_going_back_and_stamps_off_the_bag_time(tmp_path):
    ts = typestore()
    with pytest.raises(InvalidArgument, match="storage must be one of"):
        BagWriter(tmp_path / "x", SPECS, storage="rosbag1")
    with BagWriter(tmp_path / "b", SPECS) as w:
        w.write("/fix", T0 + 10, _fix(ts, T0 + 10, 44.5, -73.2))
        with pytest.raises(InvalidArgument, match="not declared"):
            w.write("/other", T0 + 10, _fix(ts, T0 + 10, 44.5, -73.2))
        with pytest.raises(ValueError, match="before the previous message"):
            w.write("/fix", T0 + 5, _fix(ts, T0 + 5, 44.5, -73.2))
        with pytest.raises(ValueError, match="header stamp differs"):
            w.write("/fix", T0 + 20, _fix(ts, T0 + 21, 44.5, -73.2))
        # a recorder writes CDR as received, stamped with the receipt time (header not checked)
        cdr = ts.serialize_cdr(_pose(ts, T0, 1.0, 2.0), "geometry_msgs/msg/PoseWithCovarianceStamped")
        w.write_raw("/pose", T0 + 30, cdr)
        with pytest.raises(ValueError, match="before the previous message"):
            w.write_raw("/pose", T0 + 29, b"")
    assert w.counts["/fix"] == 1 and w.counts["/pose"] == 1
    (_, t, pose), = read_bag(tmp_path / "b", ["/pose"])
    assert t == T0 + 30 and pose.header.stamp.sec * 10 ** 9 + pose.header.stamp.nanosec == T0
    assert pose.pose.pose.position.x == 1.0


def _stamped(t_ns):
    return type("M", (), {"header": type("H", (), {"stamp": type("S", (), {"sec": t_ns // 10 ** 9,
                                                                          "nanosec": t_ns % 10 ** 9})})})


def test_stamp_ordered_reorders_within_the_window_and_counts_what_comes_too_late():
    ms = 1_000_000
    # (topic, bag time, header stamp): /b's stamps lag their bag time; /late arrives after the window
    src = [("/a", 0, 0), ("/b", 5 * ms, 2 * ms), ("/a", 10 * ms, 10 * ms), ("/a", 700 * ms, 700 * ms),
           ("/late", 710 * ms, 1 * ms), ("/a", 1400 * ms, 1400 * ms)]
    late = {}
    out = list(stamp_ordered(((tp, t, _stamped(s)) for tp, t, s in src), 500 * ms, late))
    assert [(tp, s) for tp, s, _ in out] == [("/a", 0), ("/b", 2 * ms), ("/a", 10 * ms), ("/a", 700 * ms),
                                              ("/a", 1400 * ms)]
    assert late == {"/late": 1}
    # a message without a header is ordered by its bag time
    plain = object()
    out = list(stamp_ordered(iter([("/a", 5, _stamped(7)), ("/p", 6, plain)]), 10, {}))
    assert [(tp, s) for tp, s, _ in out] == [("/p", 6), ("/a", 7)]


def test_read_positions_gives_fix_and_pose_topics_as_arrays(tmp_path):
    bag = tmp_path / "b"
    _write(bag, "mcap")
    f = read_positions(bag, "/fix")
    assert f.msgtype == "sensor_msgs/msg/NavSatFix"
    np.testing.assert_allclose(f.t, T0 * 1e-9 + 0.1 * np.arange(5))
    np.testing.assert_allclose(f.lat, 44.5 + 1e-5 * np.arange(5))
    assert np.all(np.isnan(f.x)) and list(f.fix) == [True, True, False, True, True]
    np.testing.assert_allclose(f.cov[0], [[4.0, 0.5], [0.5, 9.0]])
    assert np.all(np.isnan(f.cov[4]))  # covariance type UNKNOWN
    p = read_positions(bag, "/pose")
    np.testing.assert_allclose(p.x, 10.0 + np.arange(5))
    np.testing.assert_allclose(p.cov[1], [[0.25, 0.0], [0.0, 0.5]])
    assert np.all(np.isnan(p.lat)) and p.fix.all()
    with pytest.raises(InvalidArgument, match="no topic /nope"):
        read_positions(bag, "/nope")
    with pytest.raises(InvalidArgument, match="TFMessage; a track needs"):
        read_positions(bag, "/tf_static")


def test_a_truncated_mcap_is_read_up_to_its_last_complete_chunk(tmp_path):
    """rosbags refuses an MCAP file without its footer; BagSource streams the complete chunks and
    says where the file ended; read_bag (strict) raises after the last message it could read."""
    ts = typestore()
    T = ts.types
    specs = [TopicSpec("/img", "sensor_msgs/msg/Image", "cam", "frames")]
    rng = np.random.default_rng(0)
    bag = tmp_path / "full"
    n = 24
    with BagWriter(bag, specs) as w:
        for k in range(n):
            t = T0 + k * 100_000_000
            w.write("/img", t, T["sensor_msgs/msg/Image"](
                header=header(ts, t, "cam"), height=256, width=256, encoding="rgb8", is_bigendian=0, step=768,
                data=rng.integers(0, 256, 256 * 768, dtype=np.uint8)))
    (f,) = bag.glob("*.mcap")
    f.write_bytes(f.read_bytes()[: int(f.stat().st_size * 0.6)])
    src = BagSource(bag)
    assert src.open_error is not None and src.storage == "mcap"
    k = src.topics["/img"][1]
    assert 0 < k < n and src.start_ns == T0
    got = [t for _, t, _ in src.messages(["/img"])]
    assert got == [T0 + i * 100_000_000 for i in range(k)] and "ends early" in src.truncated
    assert [t for _, t, _ in src.raw_messages(["/img"], stop_ns=T0 + 100_000_000)] == [T0]
    with pytest.raises(InvalidArgument, match="damaged or truncated"):
        list(read_bag(bag))
    with pytest.raises(InvalidArgument, match="does not exist"):
        BagSource(tmp_path / "nope")
