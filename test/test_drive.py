"""Simulated drives: route geometry, truth dynamics, GNSS and odometry error models, the rosbag2
(read back with rosbags AND independently with mcap + mcap_ros2), determinism and bad input."""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from geoloc_ros.bag import bag_topics, read_bag
from geoloc_ros.cli import main as cli_main
from geoloc_ros.core.camera import PinholeCamera
from geoloc_ros.core.errors import InvalidArgument
from geoloc_ros.core.geo import wrap_angle
from geoloc_ros.core.images import msg_to_rgb
from geoloc_ros.sim.bag import (
    EPOCH_NS,
    OPTICAL_QUAT,
    TOPIC_CAMERA_INFO,
    TOPIC_COMPRESSED,
    TOPIC_FIX,
    TOPIC_FIX_TRUTH,
    TOPIC_IMAGE,
    TOPIC_IMU,
    TOPIC_ODOM,
    TOPIC_TF,
    TOPIC_TF_STATIC,
    read_truth_csv,
    stamp_ns,
    write_drive,
)
from geoloc_ros.sim.drive import (
    GNSS_MULTIPATH,
    GNSS_NOMINAL,
    GNSS_OUTAGE,
    STATUS_NO_FIX,
    DriveConfig,
    GnssModel,
    OdometryModel,
    Trajectory,
    lane_offset,
    odometry_drift,
    plan_route,
    simulate_drive,
    simulate_gnss,
    simulate_odometry,
    stream_rng,
)
from geoloc_ros.sim.world import Sem, make_toy_world

ROAD_SURFACE = (Sem.ROAD, Sem.MARKING, Sem.MARKING_YELLOW)
CAM = PinholeCamera(width=64, height=32, hfov_deg=90.0)


@pytest.fixture(scope="module")
def toy_world():
    return make_toy_world()


def synthetic_frames(camera: PinholeCamera):
    """A deterministic 'renderer' whose pixels encode the pose (no dependency on sim.render)."""

    def render(x: float, y: float, yaw: float, **attitude) -> np.ndarray:
        img = np.empty((camera.height, camera.width, 3), np.uint8)
        img[..., 0] = int(round(x * 10)) % 256
        img[..., 1] = int(round(y * 10)) % 256
        img[..., 2] = (np.arange(camera.width)[None, :] + int(round(math.degrees(yaw)))) % 256
        return img

    return render


def semantic_at(world, xy: np.ndarray) -> np.ndarray:
    r, c = world.xy_to_rc(xy[:, 0], xy[:, 1])
    return world.semantic[np.floor(r).astype(int), np.floor(c).astype(int)]


# ---- route ----------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["small", "toy"])
def test_route_stays_on_the_road_surface_and_inside_the_world(which, small_world, toy_world):
    world = small_world if which == "small" else toy_world
    for seed in range(6):
        route = plan_route(world, stream_rng(seed, "route"), 1500.0)
        assert route.length >= 1500.0
        assert np.all(world.contains(route.xy[:, 0], route.xy[:, 1], margin_m=0.5))
        sem = semantic_at(world, route.xy)
        off = ~np.isin(sem, ROAD_SURFACE)
        assert off.sum() == 0, f"seed {seed}: {off.sum()} samples off the road, e.g. at {route.xy[off][:3]}"


def test_route_drives_in_the_right_hand_lane(small_world):
    """Independent of the planner's bookkeeping: the nearest road centreline must be on the left."""
    roads = small_world.roads
    dense, offs = [], []
    for e in range(roads.num_edges):
        p = roads.edge_points[e]
        for a, b in zip(p[:-1], p[1:]):
            n = max(int(np.hypot(*(b - a)) / 0.1), 1)
            dense.append(a + (b - a) * np.linspace(0, 1, n, endpoint=False)[:, None])
            offs.append(np.full(n, lane_offset(roads.edge_width[e], roads.edge_lanes[e])))
    dense, offs = np.vstack(dense), np.concatenate(offs)
    route = plan_route(small_world, stream_rng(3, "route"), 1500.0)
    every = int(round(2.0 / route.spacing_m))  # a sample every 2 m
    xy, heading = route.xy[::every], route.heading[::every]
    far = np.min(np.hypot(xy[:, None, 0] - roads.nodes[None, :, 0],
                          xy[:, None, 1] - roads.nodes[None, :, 1]), axis=1) > 15.0
    pts, head = xy[far], heading[far]
    assert len(pts) > 250
    d2 = (pts[:, None, 0] - dense[None, :, 0]) ** 2 + (pts[:, None, 1] - dense[None, :, 1]) ** 2
    k = np.argmin(d2, axis=1)
    to_centre = dense[k] - pts
    side = np.cos(head) * to_centre[:, 1] - np.sin(head) * to_centre[:, 0]  # > 0: centreline on the left
    dist = np.hypot(*to_centre.T)
    assert np.all(side > 0), "driving on the left somewhere"
    assert np.median(np.abs(dist - offs[k])) < 0.1 and np.percentile(np.abs(dist - offs[k]), 99) < 0.5


def test_route_refuses_a_world_without_roads(toy_world):
    from dataclasses import replace

    from geoloc_ros.sim.world import RoadGraph

    empty = RoadGraph(nodes=np.zeros((0, 2)), edge_uv=np.zeros((0, 2), int), edge_points=[],
                      edge_width=np.zeros(0), edge_lanes=np.zeros(0, int), edge_kind=[])
    with pytest.raises(InvalidArgument, match="no roads"):
        plan_route(replace(toy_world, roads=empty), np.random.default_rng(0), 100.0)


# ---- ground truth ---------------------------------------------------------------------

def test_truth_speed_acceleration_and_heading_are_plausible(small_world):
    for seed in (0, 1, 2):
        sim = simulate_drive(small_world, DriveConfig(seed=seed, duration_s=120.0))
        tr = sim.truth
        assert tr.t[-1] == pytest.approx(120.0) and np.allclose(np.diff(tr.t), 0.01)
        assert tr.speed.min() >= 5.0 - 1e-9 and tr.speed.max() <= 15.0 + 1e-9
        assert tr.speed.max() > 9.0, "the car should reach cruise speed somewhere"
        acc = np.diff(tr.speed) / np.diff(tr.t)
        assert acc.min() > -2.5 and acc.max() < 1.5
        # positions advance at the reported speed, along the reported heading
        step = np.hypot(np.diff(tr.x), np.diff(tr.y)) / np.diff(tr.t)
        np.testing.assert_allclose(step, 0.5 * (tr.speed[1:] + tr.speed[:-1]), rtol=0.03, atol=0.05)
        course = np.arctan2(np.diff(tr.y), np.diff(tr.x))
        dev = np.abs(wrap_angle(course - 0.5 * (tr.yaw[1:] + tr.yaw[:-1])))
        assert dev.max() < 0.02, "the car moves where it points"
        # heading is continuous: no jumps between 10 ms samples, turns at most ~2 rad/s
        assert np.max(np.abs(np.diff(tr.yaw))) < 0.025
        # lateral acceleration respects the 2 m/s^2 limit except where the 5 m/s floor forces more
        lat = np.abs(tr.speed * tr.yaw_rate)
        assert np.percentile(lat[tr.speed > 6.0], 99.5) < 2.6
        assert np.all(np.diff(tr.distance) > 0)


def test_trajectory_at_interpolates_yaw_across_the_wrap():
    t = np.array([0.0, 1.0])
    tr = Trajectory(t=t, x=np.zeros(2), y=np.zeros(2), yaw=np.array([math.pi - 0.1, math.pi + 0.1]),
                    speed=np.ones(2), yaw_rate=np.full(2, 0.2), s=np.array([0.0, 1.0]))
    st = tr.at(0.5)
    assert abs(abs(float(st.yaw)) - math.pi) < 1e-9, "interpolating wrapped angles would give ~0"
    assert tr.at(0.75).yaw == pytest.approx(-math.pi + 0.05)


# ---- GNSS -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def long_gnss():
    """Three hours of fixes at 5 Hz along a synthetic circular drive."""
    t = np.arange(0.0, 3 * 3600.0 + 0.05, 0.1)
    w = 10.0 / 300.0
    tr = Trajectory(t=t, x=300 * np.cos(w * t), y=300 * np.sin(w * t), yaw=w * t + math.pi / 2,
                    speed=np.full(len(t), 10.0), yaw_rate=np.full(len(t), w), s=10.0 * t)
    return simulate_gnss(tr, np.random.default_rng(5), 5.0, GnssModel())


def test_gnss_nominal_error_matches_the_reported_sigma(long_gnss):
    g = long_gnss
    nom = g.state == GNSS_NOMINAL
    z = g.error_xy[nom] / g.sigma_h[nom, None]
    assert 0.8 < z[:, 0].std() < 1.2 and 0.8 < z[:, 1].std() < 1.2, z.std(axis=0)
    assert abs(z.mean()) < 0.3
    rms = float(np.sqrt(np.mean(g.error_h[nom] ** 2)))
    assert 3.0 < rms < 6.5, rms  # sqrt(2) * hypot(3, 0.8) = 4.4 m at hdop 1
    zv = (g.alt - g.true_alt)[nom] / g.sigma_v[nom]
    assert 0.75 < zv.std() < 1.3
    # errors are time-correlated (Gauss-Markov bias), not white
    ex = g.error_xy[:, 0]
    ok = np.isfinite(ex[:-5]) & np.isfinite(ex[5:])
    assert np.corrcoef(ex[:-5][ok], ex[5:][ok])[0, 1] > 0.8


def test_gnss_multipath_jumps_and_outages_happen(long_gnss):
    g = long_gnss
    assert g.events(GNSS_MULTIPATH) >= 20 and g.events(GNSS_OUTAGE) >= 10
    mp = g.state == GNSS_MULTIPATH
    assert np.median(g.error_h[mp]) > 15.0
    assert np.mean(g.error_h[mp] > 3 * g.sigma_h[mp]) > 0.8, "multipath must look like outliers"
    # the receiver does not know about multipath: its reported sigma does not change
    assert np.median(g.sigma_h[mp]) < 1.5 * np.median(g.sigma_h[g.state == GNSS_NOMINAL])
    out = g.state == GNSS_OUTAGE
    assert np.all(g.status[out] == STATUS_NO_FIX) and np.all(np.isnan(g.x[out]))
    assert np.all(g.status[~out] != STATUS_NO_FIX) and np.all(np.isfinite(g.x[~out]))
    lengths = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], out.astype(int), [0]]))))[::2] / 5.0
    assert lengths.max() <= 6.0 + 0.2, "outages are short"


# ---- odometry -------------------------------------------------------------------------

def test_odometry_drifts_but_stays_plausible(small_world):
    for seed in (0, 1, 2, 3):
        sim = simulate_drive(small_world, DriveConfig(seed=seed, duration_s=120.0))
        o, tr = sim.odom, sim.truth
        assert (o.x[0], o.y[0], o.yaw[0]) == (0.0, 0.0, 0.0), "odom frame starts at the first pose"
        drift = odometry_drift(o, tr)
        dist = np.interp(o.t, tr.t, tr.distance)
        early, late = drift[o.t < 10.0].mean(), drift[o.t > 110.0].mean()
        assert late > 2 * early and late > 0.3, (early, late)
        assert drift[-1] < 0.05 * dist[-1], f"seed {seed}: {drift[-1]:.1f} m after {dist[-1]:.0f} m"
        assert np.all(o.pos_sigma[1:] >= o.pos_sigma[:-1]), "reported uncertainty grows"


def test_odometry_measures_speed_with_a_scale_error(small_world):
    sim = simulate_drive(small_world, DriveConfig(seed=4, duration_s=30.0, odom=OdometryModel(speed_scale_sigma=0.02)))
    o = sim.odom
    true_v = sim.truth.at(o.t).speed
    ratio = np.sum(o.speed) / np.sum(true_v) - 1.0
    assert ratio == pytest.approx(o.scale_error, abs=2e-3) and abs(o.scale_error) > 1e-4


def test_odometry_without_errors_reproduces_the_truth(small_world):
    sim = simulate_drive(small_world, DriveConfig(seed=2, duration_s=60.0))
    perfect = OdometryModel(speed_scale_sigma=0, speed_noise_mps=0, gyro_bias_sigma_dps=0,
                            gyro_bias_walk_dps_per_sqrt_s=0, gyro_noise_dps=0)
    o = simulate_odometry(sim.truth, np.random.default_rng(0), 100.0, perfect)
    assert odometry_drift(o, sim.truth).max() < 0.05 * 60


# ---- bag ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def written_drive(small_world, tmp_path_factory):
    cfg = DriveConfig(seed=3, duration_s=4.0, compressed=True,
                      gnss=GnssModel(outage_rate_per_min=30.0, outage_duration_s=(0.5, 1.0),
                                     multipath_rate_per_min=0.0))
    sim = simulate_drive(small_world, cfg)
    out = tmp_path_factory.mktemp("drive") / "d"
    frames = []
    render = synthetic_frames(CAM)

    def recording_render(x, y, yaw, **attitude):
        frames.append(render(x, y, yaw))
        return frames[-1]

    res = write_drive(out, small_world, sim, CAM, recording_render, appearance={"kind": "synthetic"},
                      command="pytest")
    return out, sim, frames, res


def test_bag_round_trip_with_rosbags(written_drive, small_world):
    out, sim, frames, res = written_drive
    n_cam, n_gnss, n_odom = 40, 20, 200
    expect = {TOPIC_IMAGE: n_cam, TOPIC_COMPRESSED: n_cam, TOPIC_CAMERA_INFO: n_cam, TOPIC_FIX: n_gnss,
              TOPIC_FIX_TRUTH: n_gnss, TOPIC_ODOM: n_odom, TOPIC_TF: n_odom, TOPIC_TF_STATIC: 1, TOPIC_IMU: 2 * n_odom}
    assert {k: v[1] for k, v in bag_topics(out / "bag").items()} == expect
    msgs = list(read_bag(out / "bag"))
    assert Counter(t for t, _, _ in msgs) == expect
    stamps = [t for _, t, _ in msgs]
    assert stamps == sorted(stamps) and stamps[0] == EPOCH_NS
    images, fixes = [], []
    for topic, t_ns, msg in msgs:
        if hasattr(msg, "header"):
            assert msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec == t_ns, topic
        if topic == TOPIC_IMAGE:
            assert (msg.encoding, msg.header.frame_id, msg.step) == ("rgb8", "camera_optical_frame", 3 * CAM.width)
            images.append(msg_to_rgb(msg))
        elif topic == TOPIC_COMPRESSED:
            jpeg = msg_to_rgb(msg)
            assert np.abs(jpeg.astype(int) - frames[len(images) - 1].astype(int)).mean() < 6.0
        elif topic == TOPIC_CAMERA_INFO:
            np.testing.assert_allclose(np.array(msg.k).reshape(3, 3), CAM.K)
            np.testing.assert_allclose(np.array(msg.p).reshape(3, 4)[:, :3], CAM.K)
            assert msg.distortion_model == "plumb_bob" and not np.any(msg.d)
        elif topic == TOPIC_FIX:
            fixes.append((t_ns, msg))
        elif topic == TOPIC_ODOM:
            assert (msg.header.frame_id, msg.child_frame_id) == ("odom", "base_link")
            assert msg.pose.covariance[0] > 0 and msg.twist.covariance[35] > 0
    assert len(images) == len(frames) == n_cam
    for a, b in zip(images, frames):
        np.testing.assert_array_equal(a, b)
    # GNSS: lat/lon are the local-frame fixes through the world frame; outages are NO_FIX + NaN
    g = sim.gnss
    for k, (t_ns, msg) in enumerate(fixes):
        assert t_ns == stamp_ns(g.t[k])
        if g.status[k] == STATUS_NO_FIX:
            assert msg.status.status == -1 and math.isnan(msg.latitude) and msg.position_covariance_type == 0
        else:
            x, y = small_world.frame.from_latlon(msg.latitude, msg.longitude)
            assert (float(x), float(y)) == pytest.approx((g.x[k], g.y[k]), abs=1e-6)
            assert msg.position_covariance_type == 2
            assert msg.position_covariance[0] == pytest.approx(g.sigma_h[k] ** 2)
    assert any(m.status.status == -1 for _, m in fixes) and any(m.status.status == 0 for _, m in fixes)


def test_bag_round_trip_with_the_independent_mcap_reader(written_drive):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    out, sim, frames, _ = written_drive
    (mcap_file,) = (out / "bag").glob("*.mcap")
    counts, images, last = Counter(), [], -1
    tf_static = None
    with open(mcap_file, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for schema, channel, message, ros in reader.iter_decoded_messages():
            counts[channel.topic] += 1
            assert message.log_time >= last and message.log_time == message.publish_time
            last = message.log_time
            if hasattr(ros, "header"):
                assert ros.header.stamp.sec * 10 ** 9 + ros.header.stamp.nanosec == message.log_time
            if channel.topic == TOPIC_IMAGE:
                assert schema.name == "sensor_msgs/msg/Image"
                images.append(np.frombuffer(bytes(ros.data), np.uint8).reshape(ros.height, ros.width, 3))
            elif channel.topic == TOPIC_CAMERA_INFO:
                np.testing.assert_allclose(np.array(ros.k).reshape(3, 3), CAM.K)
            elif channel.topic == TOPIC_TF_STATIC:
                tf_static = ros
    assert counts[TOPIC_IMAGE] == 40 and counts[TOPIC_ODOM] == 200 and counts[TOPIC_TF_STATIC] == 1
    for a, b in zip(images, frames):
        np.testing.assert_array_equal(a, b)
    pairs = {(t.header.frame_id, t.child_frame_id): t.transform for t in tf_static.transforms}
    assert set(pairs) == {("base_link", "camera_link"), ("camera_link", "camera_optical_frame"),
                          ("base_link", "gnss_link"), ("base_link", "imu_link")}
    assert pairs[("base_link", "camera_link")].translation.z == pytest.approx(CAM.mount_height_m)
    q = pairs[("camera_link", "camera_optical_frame")].rotation
    assert (q.x, q.y, q.z, q.w) == OPTICAL_QUAT
    R = quat_matrix(q.x, q.y, q.z, q.w)  # optical axes expressed in camera_link
    np.testing.assert_allclose(R @ [0, 0, 1], [1, 0, 0], atol=1e-12)  # optical z = forward
    np.testing.assert_allclose(R @ [1, 0, 0], [0, -1, 0], atol=1e-12)  # optical x = right
    np.testing.assert_allclose(R @ [0, 1, 0], [0, 0, -1], atol=1e-12)  # optical y = down


def quat_matrix(x, y, z, w) -> np.ndarray:
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def test_truth_csv_and_manifest_describe_the_drive(written_drive, small_world):
    out, sim, frames, res = written_drive
    truth = read_truth_csv(out / "truth.csv")
    assert len(truth["t"]) == len(frames) == 40
    np.testing.assert_allclose(truth["t"], sim.camera_t)
    assert truth["stamp_ns"][0] == EPOCH_NS and np.all(np.diff(truth["stamp_ns"]) == 100_000_000)
    st = sim.truth.at(sim.camera_t)
    np.testing.assert_allclose(truth["x"], st.x, atol=1e-4)
    x, y = small_world.frame.from_latlon(truth["lat"], truth["lon"])
    np.testing.assert_allclose(x, truth["x"], atol=1e-3)
    np.testing.assert_allclose(y, truth["y"], atol=1e-3)
    # truth.csv and the images agree: the synthetic renderer wrote the pose into the pixels
    assert frames[7][0, 0, 0] == int(round(truth["x"][7] * 10)) % 256
    m = json.loads((out / "drive.json").read_text())
    assert m["format"] == "geoloc-drive" and m["command"] == "pytest"
    assert m["config"]["seed"] == 3 and DriveConfig.from_dict(m["config"]) == sim.config
    assert {t["name"]: t["count"] for t in m["topics"]}[TOPIC_IMAGE] == 40
    assert m["world"]["seed"] == small_world.meta.seed and m["appearance"] == {"kind": "synthetic"}
    assert m["camera"]["K"] == CAM.K.tolist()
    assert set(m["files"]) >= {"truth.csv", "bag/metadata.yaml", "bag/bag.mcap"}


def test_sqlite3_storage_reads_back(small_world, tmp_path):
    sim = simulate_drive(small_world, DriveConfig(seed=1, duration_s=1.0, storage="sqlite3"))
    write_drive(tmp_path / "d", small_world, sim, CAM, synthetic_frames(CAM))
    assert list((tmp_path / "d" / "bag").glob("*.db3"))
    counts = Counter(t for t, _, _ in read_bag(tmp_path / "d" / "bag"))
    assert counts[TOPIC_IMAGE] == 10 and counts[TOPIC_FIX] == 5 and TOPIC_COMPRESSED not in counts


def test_iterable_frame_source_and_its_errors(small_world, tmp_path):
    sim = simulate_drive(small_world, DriveConfig(seed=1, duration_s=1.0))
    frames = [np.full((CAM.height, CAM.width, 3), k, np.uint8) for k in range(10)]
    write_drive(tmp_path / "ok", small_world, sim, CAM, iter(frames))
    got = [msg_to_rgb(m) for _, _, m in read_bag(tmp_path / "ok" / "bag", [TOPIC_IMAGE])]
    assert [int(g[0, 0, 0]) for g in got] == list(range(10))
    with pytest.raises(InvalidArgument, match="ended after 5 of 10"):
        write_drive(tmp_path / "short", small_world, sim, CAM, iter(frames[:5]))
    assert not (tmp_path / "short" / "bag").exists() and not (tmp_path / "short" / "drive.json").exists()
    with pytest.raises(InvalidArgument, match=r"expected uint8 \(32, 64, 3\)"):
        write_drive(tmp_path / "bad", small_world, sim, CAM, lambda x, y, yaw, **attitude: np.zeros((10, 10, 3), np.uint8))


# ---- config ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(duration_s=0.0), "duration_s"), (dict(duration_s=-5.0), "duration_s"),
    (dict(duration_s=float("nan")), "duration_s"), (dict(duration_s=1e5), "duration_s"),
    (dict(camera_hz=0.0), "camera_hz"), (dict(gnss_hz=100.0), "gnss_hz"), (dict(seed=-1), "seed"),
    (dict(seed=1.5), "seed"), (dict(speed_min_mps=16.0), "speed_min_mps"), (dict(storage="rosbag1"), "storage"),
    (dict(compressed="yes"), "compressed"), (dict(jpeg_quality=0), "jpeg_quality"),
    (dict(gnss=GnssModel), "drive.gnss"),
])
def test_invalid_drive_config_is_refused(kwargs, match):
    with pytest.raises(InvalidArgument, match=match):
        DriveConfig(**kwargs)


def test_model_and_config_dict_round_trip_and_unknown_keys():
    cfg = DriveConfig(seed=9, duration_s=12.5, gnss=GnssModel(bias_sigma_m=2.0), compressed=True)
    assert DriveConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(InvalidArgument, match="unknown key drive.duration"):
        DriveConfig.from_dict({"duration": 10})
    with pytest.raises(InvalidArgument, match="unknown key drive.gnss.bias_m"):
        DriveConfig.from_dict({"gnss": {"bias_m": 1.0}})
    with pytest.raises(InvalidArgument, match="multipath_jump_m low 40"):
        GnssModel(multipath_jump_m=(40.0, 15.0))


# ---- command line ---------------------------------------------------------------------

def drive_args(world_dir, out, *extra):
    return ["sim", "drive", "--world", str(world_dir), "--out", str(out), "--duration-s", "1.5", "--width", "64",
            "--height", "32", *extra]


@pytest.mark.parametrize("extra, match", [
    (["--duration-s", "-5"], "duration_s"), (["--duration-s", "nan"], "duration_s"),
    (["--hfov-deg", "200"], "FOV"), (["--width", "4"], "camera size"), (["--camera-hz", "0"], "camera_hz"),
])
def test_cli_drive_bad_arguments_are_clear_errors(small_world_dir, tmp_path, capsys, extra, match):
    rc = cli_main(drive_args(small_world_dir, tmp_path / "o", *extra))
    assert rc == 2 and match in capsys.readouterr().err
    assert not (tmp_path / "o").exists(), "nothing is written for bad arguments"


def test_cli_drive_bad_seed_and_missing_world(small_world_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli_main(drive_args(small_world_dir, tmp_path / "o", "--seed", "-3"))
    assert "seed must be" in capsys.readouterr().err
    rc = cli_main(drive_args(tmp_path / "nope", tmp_path / "o"))
    err = capsys.readouterr().err
    assert rc == 2 and "does not exist" in err and "geoloc sim world" in err
    (tmp_path / "empty").mkdir()
    rc = cli_main(drive_args(tmp_path / "empty", tmp_path / "o"))
    assert rc == 2 and "not a geoloc world" in capsys.readouterr().err


def test_cli_drive_refuses_existing_output_without_force(small_world_dir, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "precious.txt").write_text("user data")
    rc = cli_main(drive_args(small_world_dir, out))
    assert rc == 2 and "--force" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["precious.txt"] and (out / "precious.txt").read_text() == "user data"


def _messages(bag_dir: Path):
    from mcap.reader import make_reader

    (f,) = bag_dir.glob("*.mcap")
    with open(f, "rb") as fh:
        return [(c.topic, m.log_time, bytes(m.data)) for _, c, m in make_reader(fh).iter_messages()]


def test_cli_drive_renders_and_is_deterministic(small_world_dir, small_world, tmp_path, capsys):
    pytest.importorskip("geoloc_ros.sim.render")
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        assert cli_main(drive_args(small_world_dir, tmp_path / name, "--seed", str(seed), "--compressed")) == 0
        runs[name] = ((tmp_path / name / "truth.csv").read_bytes(), _messages(tmp_path / name / "bag"))
    summary = capsys.readouterr().out
    assert "15 frames" in summary and "GNSS RMS" in summary and "drift" in summary and "MB" in summary
    assert runs["a"] == runs["b"], "same seed must give the same truth and the same messages"
    assert runs["a"][0] != runs["c"][0] and runs["a"][1] != runs["c"][1]
    imgs = [msg_to_rgb(m) for _, _, m in read_bag(tmp_path / "a" / "bag", [TOPIC_IMAGE])]
    assert len(imgs) == 15 and imgs[0].shape == (32, 64, 3) and imgs[0].std() > 5.0
    m = json.loads((tmp_path / "a" / "drive.json").read_text())
    assert m["command"].startswith("geoloc") and m["appearance"]["sun_elevation_deg"] > 0
    assert m["world"]["manifest_sha256"] and m["world"]["path"] == str(Path(small_world_dir).resolve())
    # the renderer's parked cars never stand in the lane the car drives in
    from geoloc_ros.sim.render import Appearance, GroundRenderer

    cfg = DriveConfig.from_dict(m["config"])
    app = Appearance.from_dict(m["appearance"])
    r = GroundRenderer(small_world, CAM, app)
    for seed in range(4):
        sim = simulate_drive(small_world, DriveConfig(seed=seed, duration_s=120.0))
        rr, cc = small_world.xy_to_rc(sim.route.xy[:, 0], sim.route.xy[:, 1])
        assert not np.any(r.sem[np.floor(rr).astype(int), np.floor(cc).astype(int)] == Sem.CAR)
    assert cfg.seed == 5
