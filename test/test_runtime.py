"""The one way in (geoloc_ros.runtime): the node's callbacks and the bag replay give the same
estimates at the same stamps, because both go through one InputRouter; the builder's rules."""
from __future__ import annotations

import time

import numpy as np
import pytest

from geoloc_ros.core.errors import InvalidArgument


def _metric_localizer(world_dir):
    from geoloc_ros.evaluation.replay import world_frame
    from geoloc_ros.pipeline import LocalizerConfig
    from geoloc_ros.runtime import build_localizer, load_measurements

    cfg = LocalizerConfig()
    return cfg, build_localizer(cfg, load_measurements(cfg, orthophoto=world_dir / "orthophoto.tif",
                                                       frame=world_frame(world_dir)))


def _bag_messages(bag, topics):
    """(role, message) in the replay's order: header stamps, its reorder window."""
    from geoloc_ros.bag import BagSource, stamp_ordered

    src = BagSource(bag)
    late = {}
    for topic, _, msg in stamp_ordered(src.messages(list(topics)), int(0.5e9), late):
        yield topics[topic], msg
    assert not late


def test_node_callbacks_and_the_replay_give_the_same_estimates_at_the_same_stamps(small_world_dir, drive_dir):
    rclpy = pytest.importorskip("rclpy")
    from _shared import ros_domain
    from rclpy.parameter import Parameter

    from geoloc_ros.evaluation.replay import replay_bag
    from geoloc_ros.ros.node import GeolocNode

    cfg, loc = _metric_localizer(small_world_dir)
    res = replay_bag(drive_dir / "bag", None, None, cfg, matcher=loc.matcher, progress=False,
                     camera_mount=None)
    rep = res.methods["corrected"]
    assert sum(rep.keyframe) > 10 and sum(rep.match_used) > 5, "the replay matched too little to compare"

    topics = {res.topics["image"]: "image", res.topics["fix"]: "fix", res.topics["odom"]: "odom",
              "/camera/camera_info": "camera_info", "/tf_static": "tf_static"}
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=ros_domain())
    node = None
    try:
        _, loc2 = _metric_localizer(small_world_dir)
        node = GeolocNode(localizer=loc2, context=ctx, parameter_overrides=[
            Parameter("orthophoto", value=str(small_world_dir / "orthophoto.tif")),
            # without tf2_msgs the node refuses metric matching without a mounting; the bag's /tf_static
            # (fed to the callbacks below) still wins over it, as in the replay
            Parameter("camera_mount", value=[0.0, 0.0, 1.5, 0.0, 5.0, 0.0]),
            Parameter("compressed", value=res.topics["image"].endswith("/compressed")),
            Parameter("image_queue_size", value=1000), Parameter("input_queue_size", value=100000),
            Parameter("publish_debug_image", value=False)])
        got = []
        publish = node._publish_estimate

        def record(est, keyframe):
            got.append((est.t, est.x, est.y, est.yaw, bool(keyframe)))
            publish(est, keyframe)

        node._publish_estimate = record
        callbacks = {"image": node._on_image, "fix": node._on_fix, "odom": node._on_odom,
                     "camera_info": node._on_camera_info, "tf_static": node._on_tf_static}
        for role, msg in _bag_messages(drive_dir / "bag", topics):
            callbacks[role](msg)
        deadline = time.monotonic() + 300
        while node.applied < node.queue.puts and time.monotonic() < deadline:
            time.sleep(0.05)
        assert node.applied == node.queue.puts, "the node's worker did not finish"
        assert not node.drops.snapshot(), node.drops.snapshot()
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.shutdown(context=ctx)
    node_t = np.array([g[0] for g in got])
    assert len(got) == len(rep.t), f"node published {len(got)} estimates, the replay recorded {len(rep.t)}"
    np.testing.assert_array_equal(node_t, np.asarray(rep.t))
    np.testing.assert_allclose([g[1] for g in got], rep.x, rtol=0, atol=1e-9)
    np.testing.assert_allclose([g[2] for g in got], rep.y, rtol=0, atol=1e-9)
    np.testing.assert_allclose([g[3] for g in got], rep.yaw, rtol=0, atol=1e-9)
    assert [g[4] for g in got] == list(rep.keyframe)


def test_an_orthophoto_alone_or_an_index_alone_is_enough_and_neither_is_a_clear_error(small_world_dir, tmp_path):
    from geoloc_ros.pipeline import LocalizerConfig
    from geoloc_ros.runtime import build_localizer, load_measurements

    cfg = LocalizerConfig()
    m = load_measurements(cfg, orthophoto=small_world_dir / "orthophoto.tif")
    loc = build_localizer(cfg, m)
    assert loc.matcher is not None and loc.index is None and loc.frame is m.frame
    with pytest.raises(InvalidArgument, match="set orthophoto .* and/or index_path"):
        load_measurements(cfg)
    with pytest.raises(InvalidArgument, match="does not exist"):
        load_measurements(cfg, orthophoto=tmp_path / "missing.tif")
    with pytest.raises(InvalidArgument, match="index_path .* does not exist"):
        load_measurements(cfg, index_path=tmp_path / "missing")


def test_the_router_never_guesses_the_camera_mounting(small_world_dir, drive_dir):
    """Without /tf_static and without camera_mount the camera model is refused (counted), with
    /tf_static it is built from the transforms and the source is said."""
    from geoloc_ros.runtime import InputRouter

    _, loc = _metric_localizer(small_world_dir)
    msgs = {}
    for role, msg in _bag_messages(drive_dir / "bag", {"/camera/camera_info": "camera_info",
                                                        "/tf_static": "tf_static"}):
        msgs.setdefault(role, msg)
    bare = InputRouter(loc, camera_mount=None)
    bare.feed("camera_info", msgs["camera_info"])
    assert bare.camera is None and bare.drops.counts == {"camera_info.invalid": 1}
    assert "set camera_mount" in bare.drops.examples["camera_info.invalid"]
    tf = InputRouter(loc, camera_mount=None)
    tf.feed("tf_static", msgs["tf_static"])
    tf.feed("camera_info", msgs["camera_info"])
    assert tf.camera is not None and tf.mount_source.startswith("/tf_static")
    assert loc.matcher.camera == tf.camera


def test_time_going_backwards_is_an_event_and_runs_the_reset_hooks(small_world_dir):
    from geoloc_ros.core.msgconv import FixSample
    from geoloc_ros.runtime import FixInput, InputRouter

    _, loc = _metric_localizer(small_world_dir)
    r = InputRouter(loc)
    resets = []
    r.on_reset.append(resets.append)
    lat, lon = loc.frame.to_latlon(0.0, 0.0)
    for t in (10.0, 11.0, 11.0 - 0.5 * loc.config.time_backwards_eps_s, 5.0):
        r.apply("fix", FixInput(FixSample(t, float(lat), float(lon), np.eye(2), True), 0.0, None, 1))
    assert r.events.counts.get("time_backwards") == 1, r.events.counts
    assert len(resets) == 1 and "fix stamp went back 5.99" in resets[0]


def test_the_mounting_read_from_a_bag_is_the_one_the_router_builds(small_world_dir, drive_dir):
    """``camera_mount`` from the bag's /tf_static (what the live run passes to a node without tf2_msgs)
    gives the same camera model as /tf_static itself."""
    from geoloc_ros.evaluation.live import mount_param_from_bag
    from geoloc_ros.runtime import InputRouter, mount_from_param

    _, loc = _metric_localizer(small_world_dir)
    mount = mount_param_from_bag(drive_dir / "bag")
    assert mount is not None and len(mount) == 6
    msgs = {}
    for role, msg in _bag_messages(drive_dir / "bag", {"/camera/camera_info": "camera_info", "/tf_static": "tf_static"}):
        msgs.setdefault(role, msg)
    by_tf = InputRouter(loc)
    by_tf.feed("tf_static", msgs["tf_static"])
    by_tf.feed("camera_info", msgs["camera_info"])
    by_param = InputRouter(loc, camera_mount=mount_from_param(mount))
    by_param.feed("camera_info", msgs["camera_info"])
    assert by_param.mount_source == "camera_mount"
    np.testing.assert_allclose(by_param.camera.R_base_opt, by_tf.camera.R_base_opt, atol=1e-6)
    np.testing.assert_allclose(by_param.camera.t_base_opt, by_tf.camera.t_base_opt, atol=1e-6)


def test_the_node_queue_keeps_stamp_order_across_callback_groups_and_drops_the_oldest_frame():
    """Two callback groups may enqueue a little out of stamp order: an event goes before waiting events
    of later stamps; a full image queue drops its oldest frame, counted."""
    from geoloc_ros.ros.plumbing import EventQueue

    dropped = []
    q = EventQueue(2, 10, dropped.append)
    q.put("image", "frame@1.05", 1.05)
    q.put("fix", "fix@1.00", 1.00)  # its callback ran a moment after the image's
    q.put("odom", "odom@?", None)  # no stamp: arrival order
    q.put("image", "frame@1.10", 1.10)
    q.put("image", "frame@1.20", 1.20)
    out = []
    while (g := q.get(0.01)) is not None:
        out.append(g[1])
    assert out == ["fix@1.00", "odom@?", "frame@1.10", "frame@1.20"] and dropped == ["image.queue_full"]


def test_a_message_late_behind_another_stream_is_dropped_not_a_reset(small_world_dir):
    """A large frame still in transport while newer fixes arrived is older than what the Localizer took:
    counted as image.late and dropped; only a stream going back by itself resets."""
    from geoloc_ros.core.msgconv import FixSample
    from geoloc_ros.runtime import FixInput, ImageInput, InputRouter

    _, loc = _metric_localizer(small_world_dir)
    r = InputRouter(loc)
    lat, lon = loc.frame.to_latlon(0.0, 0.0)
    for t in (10.0, 10.1, 10.2):
        r.apply("fix", FixInput(FixSample(t, float(lat), float(lon), np.eye(2), True), 0.0, None, 1))
    frame = np.zeros((64, 64, 3), np.uint8)
    assert r.apply("image", ImageInput(10.05, frame, 0.0)) is None
    assert r.drops.counts == {"image.late": 1} and loc.tracker.counters["resets"] == 0
    r.apply("fix", FixInput(FixSample(9.0, float(lat), float(lon), np.eye(2), True), 0.0, None, 1))
    assert loc.tracker.counters["resets"] == 1 and r.events.counts == {"time_backwards": 1}


def test_a_fix_outside_the_tile_index_is_an_event_for_retrieval_only(small_world_dir, encoder, index):
    """With metric matching the index only relocalises, so a fix outside it is no warning; with retrieval as
    the camera's measurement it is (the camera cannot help there)."""
    from geoloc_ros.core.msgconv import FixSample
    from geoloc_ros.pipeline import LocalizerConfig
    from geoloc_ros.runtime import FixInput, InputRouter, build_localizer, load_measurements

    cfg = LocalizerConfig()
    lat, lon = index.frame.to_latlon(50_000.0, 50_000.0)  # 70 km away: outside any index of the small town
    counts = {}
    for name, ortho in (("metric", small_world_dir / "orthophoto.tif"), ("retrieval", None)):
        loc = build_localizer(cfg, load_measurements(cfg, orthophoto=ortho, index_path=index.path, encoder=encoder))
        assert loc.metric_matching is (ortho is not None)
        r = InputRouter(loc)
        r.apply("fix", FixInput(FixSample(1.0, float(lat), float(lon), np.eye(2), True), 0.0, None, 1))
        counts[name] = r.events.counts.get("fix.outside_index", 0)
    assert counts == {"metric": 0, "retrieval": 1}
