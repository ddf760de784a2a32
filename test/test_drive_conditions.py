"""Drive-time sensor conditions (sim.sensors through simulate_drive and write_drive) and their options on
`geoloc sim drive` / `geoloc sim dataset`: default conditions change nothing, the miscalibration is
published and not rendered, the load pitch tilts the body, the wheel scale error and slip, the GNSS
environments and over-confidence. The camera side (traffic, light, weather, road changes) is
sim.render's and tested there."""
from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
from _geometry import quat_matrix

from geoloc_ros.bag import read_bag
from geoloc_ros.core.camera import PinholeCamera
from geoloc_ros.core.errors import InvalidArgument
from geoloc_ros.sim.bag import (
    TOPIC_CAMERA_INFO,
    TOPIC_FIX,
    TOPIC_TF_STATIC,
    TRUTH_COLUMNS,
    read_drive_manifest,
    read_truth_csv,
    write_drive,
)
from geoloc_ros.sim.conditions import PRESETS, CalibError, Conditions
from geoloc_ros.sim.drive import (
    GNSS_MULTIPATH,
    GNSS_OUTAGE,
    DriveConfig,
    GnssModel,
    simulate_drive,
    simulate_odometry,
    stream_rng,
)
from geoloc_ros.sim.sensors import GNSS_BIAS_EPISODE, GNSS_QUALITIES, conditions_of, raw_error_median

CAM = PinholeCamera(width=64, height=32, hfov_deg=90.0)


def recording_frames(calls):
    """A 'renderer' that records each call (pose and keywords) and writes the call index into the pixels."""

    def render(x, y, yaw, **kw):
        calls.append((x, y, yaw, kw))
        return np.full((CAM.height, CAM.width, 3), len(calls) % 256, np.uint8)

    return render


def rpy_matrix(roll, pitch, yaw):
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch), math.cos(yaw),
                              math.sin(yaw))
    Rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    Ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    Rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def published_camera(bag):
    """(camera_link translation, rotation matrix) from /tf_static and the first camera_info K."""
    mount = K = None
    for topic, _, msg in read_bag(bag, [TOPIC_TF_STATIC, TOPIC_CAMERA_INFO]):
        if topic == TOPIC_TF_STATIC:
            for tf in msg.transforms:
                if (tf.header.frame_id, tf.child_frame_id) == ("base_link", "camera_link"):
                    t, r = tf.transform.translation, tf.transform.rotation
                    mount = (np.array([t.x, t.y, t.z]), quat_matrix((r.x, r.y, r.z, r.w)))
        elif K is None:
            K = np.asarray(msg.k, float).reshape(3, 3)
    return mount, K


# ---- default conditions change nothing --------------------------------------------------------------

def test_default_conditions_spelled_out_on_the_cli_give_the_same_bytes(small_world_dir, tmp_path):
    """`geoloc sim drive` with every condition option at its default writes the same bag and truth.csv
    as without them, and the same drive.json (no conditions recorded)."""
    from geoloc_ros.tools.sim_drive import main

    base = ["--world", str(small_world_dir), "--seed", "4", "--duration-s", "2", "--width", "64", "--height", "32"]
    main(base + ["--out", str(tmp_path / "a")])
    main(base + ["--out", str(tmp_path / "b"), "--traffic", "0", "--time-of-day", "day", "--weather", "clear",
                 "--road-changes", "0", "--calib-error", "0,0,0,0,0", "--gnss-overconfident", "1",
                 "--gnss-quality", "default"])
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert {str(f) for f in files} >= {"truth.csv", "drive.json", "bag/bag.mcap", "bag/metadata.yaml"}
    for f in files:
        if f.name != "drive.json":
            assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    ma, mb = (json.loads((tmp_path / d / "drive.json").read_text()) for d in "ab")
    ma.pop("command"), mb.pop("command")  # sys.argv, the same under pytest
    assert ma == mb and "conditions" not in ma and "realisation" not in ma
    assert conditions_of(ma) == Conditions()  # an old drive reads as default conditions
    assert read_truth_csv(tmp_path / "a" / "truth.csv").keys() == set(TRUTH_COLUMNS)


def test_sensor_conditions_keep_the_other_random_draws(small_world):
    """Each sensor option changes its own signal only: over-confidence scales the reported sigma and
    leaves the fixes; a fixed wheel scale leaves the gyro; the load pitch shifts the pitch by a constant."""
    cfg = DriveConfig(seed=7, duration_s=20.0)
    ref = simulate_drive(small_world, cfg)
    assert ref.realisation["odometry"]["source"] == "drawn" and ref.conditions == Conditions()
    sim = simulate_drive(small_world, cfg, Conditions(gnss_overconfident=0.25, odom_scale_err_pct=-3.0,
                                                      load_pitch_max_deg=2.0))
    np.testing.assert_array_equal(sim.gnss.x, ref.gnss.x)
    np.testing.assert_allclose(sim.gnss.sigma_h, 0.5 * ref.gnss.sigma_h)  # covariance x 0.25
    np.testing.assert_allclose(sim.gnss.sigma_v, 0.5 * ref.gnss.sigma_v)
    np.testing.assert_array_equal(sim.odom.yaw_rate, ref.odom.yaw_rate)
    assert sim.odom.scale_error == -0.03 and ref.odom.scale_error != -0.03
    load = sim.realisation["load_pitch_deg"]
    assert 0.0 < load <= 2.0
    np.testing.assert_allclose(sim.attitude.pitch - ref.attitude.pitch, -math.radians(load), atol=1e-12)
    np.testing.assert_array_equal(sim.truth.x, ref.truth.x)
    # the load draw is the drive's own: another seed draws another pitch
    other = simulate_drive(small_world, DriveConfig(seed=8, duration_s=5.0), Conditions(load_pitch_max_deg=2.0))
    assert other.realisation["load_pitch_deg"] != load


def test_a_gnss_seed_gives_the_same_drive_with_another_receivers_noise(small_world):
    """Held-out drives each have their own GNSS noise (bench/heldout.yaml gnss_seed): the route, the
    truth and the odometry stay those of the drive seed; the fixes change; gnss_seed = seed is the default."""
    ref = simulate_drive(small_world, DriveConfig(seed=7, duration_s=10.0))
    same = simulate_drive(small_world, DriveConfig(seed=7, gnss_seed=7, duration_s=10.0))
    other = simulate_drive(small_world, DriveConfig(seed=7, gnss_seed=70, duration_s=10.0))
    np.testing.assert_array_equal(same.gnss.x, ref.gnss.x)
    np.testing.assert_array_equal(other.truth.x, ref.truth.x)
    np.testing.assert_array_equal(other.odom.x, ref.odom.x)
    assert np.nanmax(np.abs(other.gnss.x - ref.gnss.x)) > 0.1
    assert "gnss_seed" not in DriveConfig(seed=7).to_dict()  # today's drive.json, key for key
    assert DriveConfig.from_dict(DriveConfig(seed=7, gnss_seed=70).to_dict()).gnss_seed == 70
    with pytest.raises(InvalidArgument, match="gnss_seed"):
        DriveConfig(gnss_seed=-1)


# ---- miscalibration, load pitch, drive.json ----------------------------------------------------------

@pytest.fixture(scope="module")
def miscalibrated(small_world, tmp_path_factory):
    """A 3 s drive under a miscalibration, a load pitch, a fixed wheel error and an urban receiver that
    reports half its covariance; and the same drive under default conditions."""
    cond = Conditions(calib=CalibError(pitch_deg=1.5, yaw_deg=-0.7, roll_deg=0.4, height_m=0.08, fx_pct=2.5),
                      load_pitch_max_deg=1.0, odom_scale_err_pct=2.0, gnss_overconfident=0.5, gnss_quality="urban")
    cfg = DriveConfig(seed=2, duration_s=3.0)
    root = tmp_path_factory.mktemp("cond")
    runs = {}
    for name, c in (("ref", None), ("cond", cond)):
        sim = simulate_drive(small_world, cfg, c)
        calls = []
        write_drive(root / name, small_world, sim, CAM, recording_frames(calls), command="pytest",
                    render_realisation=lambda: {"kind": "synthetic"})
        runs[name] = (root / name, sim, calls)
    return cond, runs


def test_miscalibration_is_published_while_frames_use_the_true_camera(miscalibrated):
    cond, runs = miscalibrated
    (ref_dir, _, _), (out, _, _) = runs["ref"], runs["cond"]
    (t_true, R_true), K_true = published_camera(ref_dir / "bag")
    (t_pub, R_pub), K_pub = published_camera(out / "bag")
    c = cond.calib
    np.testing.assert_allclose(t_true, [0.0, 0.0, CAM.mount_height_m])
    np.testing.assert_allclose(R_true, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(t_pub - t_true, [0.0, 0.0, c.height_m], atol=1e-12)
    d2r = math.radians
    np.testing.assert_allclose(R_pub, rpy_matrix(d2r(c.roll_deg), d2r(c.pitch_deg), d2r(c.yaw_deg)) @ R_true,
                               atol=1e-9)
    np.testing.assert_allclose(K_true, CAM.K)
    np.testing.assert_allclose(K_pub[0, 0] / K_true[0, 0], 1.025)
    np.testing.assert_allclose(K_pub[1, 1] / K_true[1, 1], 1.025)
    np.testing.assert_allclose(K_pub[:2, 2], K_true[:2, 2])
    m = read_drive_manifest(out)
    cam = m["realisation"]["camera"]
    diff = {k: cam["published"][k] - cam["true"][k] for k in ("x", "y", "z", "roll_deg", "pitch_deg", "yaw_deg")}
    assert diff == pytest.approx({"x": 0, "y": 0, "z": c.height_m, "roll_deg": c.roll_deg, "pitch_deg": c.pitch_deg,
                                  "yaw_deg": c.yaw_deg}, abs=1e-12)
    assert cam["published"]["fx"] / cam["true"]["fx"] == pytest.approx(1.025)
    assert cam["true"]["fx"] == pytest.approx(CAM.fx) and m["camera"]["K"] == CAM.K.tolist()


def test_rendered_camera_carries_the_load_pitch_and_truth_csv_records_it(miscalibrated):
    cond, runs = miscalibrated
    (ref_dir, _, ref_calls), (out, sim, calls) = runs["ref"], runs["cond"]
    load = sim.realisation["load_pitch_deg"]
    assert 0.0 < load <= 1.0
    assert len(calls) == len(ref_calls) == 30
    # same camera position and yaw (the miscalibration is not rendered), pitch shifted by the load
    for (x, y, yaw, kw), (rx, ry, ryaw, rkw) in zip(calls, ref_calls):
        assert (x, y, yaw) == pytest.approx((rx, ry, ryaw), abs=0.05)  # the tilt moves the camera by mm
        assert kw["pitch"] - rkw["pitch"] == pytest.approx(-math.radians(load), abs=1e-9)
        assert kw["t"] == rkw["t"]
    assert [kw["t"] for *_, kw in calls] == pytest.approx(list(sim.camera_t))
    header = (out / "truth.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == TRUTH_COLUMNS + ("load_pitch",)
    tr, tr_ref = read_truth_csv(out / "truth.csv"), read_truth_csv(ref_dir / "truth.csv")
    np.testing.assert_allclose(tr["load_pitch"], -math.radians(load), atol=1e-7)
    np.testing.assert_allclose(tr["pitch"] - tr_ref["pitch"], tr["load_pitch"], atol=2e-7)
    np.testing.assert_array_equal(tr["x"], tr_ref["x"])


def test_drive_json_records_conditions_and_realisation(miscalibrated):
    cond, runs = miscalibrated
    out, sim, _ = runs["cond"]
    m = read_drive_manifest(out)
    assert Conditions.from_dict(m["conditions"]) == cond
    r = m["realisation"]
    assert set(r) >= {"camera", "load_pitch_deg", "odometry", "gnss", "renderer"}
    assert r["renderer"] == {"kind": "synthetic"}
    assert r["odometry"]["scale_error"] == 0.02 and r["odometry"]["source"] == "fixed"
    assert r["odometry"]["slip"]["accel_mps2"] > 0
    g = r["gnss"]
    assert g["quality"] == "urban" and g["overconfidence"] == 0.5
    assert GnssModel(**{k: tuple(v) if isinstance(v, list) else v for k, v in g["model"]["model"].items()}) \
        == GNSS_QUALITIES["urban"].model
    assert g["reported_sigma_m"] == pytest.approx(GnssModel().nominal_sigma_m)
    # the published covariance is half the receiver's nominal one (hdop-scaled)
    var = [msg.position_covariance[0] for _, _, msg in read_bag(out / "bag", [TOPIC_FIX])
           if msg.status.status >= 0]
    ok = sim.gnss.status >= 0
    np.testing.assert_allclose(var, 0.5 * (sim.gnss.hdop[ok] * GnssModel().nominal_sigma_m) ** 2, rtol=1e-9)


# ---- odometry -----------------------------------------------------------------------------------------

def test_fixed_wheel_scale_error_and_slip_in_hard_braking(small_world):
    sim = simulate_drive(small_world, DriveConfig(seed=0, duration_s=60.0), Conditions(odom_scale_err_pct=3.0))
    slip = sim.realisation["odometry"]["slip"]
    assert slip["episodes"] >= 1 and slip["samples"] > 0 and all(2.0 <= p <= 4.0 for p in slip["pct"])
    a = np.interp(sim.odom.t, sim.truth.t, np.gradient(sim.truth.speed, sim.truth.t))
    v = sim.truth.at(sim.odom.t).speed
    ratio = sim.odom.speed / v
    calm, braking = np.abs(a) < 1.5, a < -slip["accel_mps2"]
    assert calm.sum() > 1000 and braking.sum() > 10
    assert np.mean(ratio[calm]) == pytest.approx(1.03, abs=0.002)
    assert 1.03 - 0.045 < np.mean(ratio[braking]) < 1.03 - 0.015  # the wheels lag a braking car
    # the same odometry stream without slip: only the wheel speed changes
    plain = simulate_odometry(sim.truth, stream_rng(0, "odom"), 50.0, sim.config.odom, t=sim.odom.t, scale_error=0.03)
    np.testing.assert_array_equal(plain.yaw_rate, sim.odom.yaw_rate)
    assert np.array_equal(plain.speed[calm], sim.odom.speed[calm])


# ---- GNSS environments ---------------------------------------------------------------------------------

def test_gnss_quality_raw_medians_and_urban_effects(small_world):
    """Median horizontal error of the published fixes, median over 8 drives of 60 s: open-sky ~1-1.5 m,
    suburban ~3-5 m, urban 5-10 m (loose bounds: one drive's error is correlated over a minute)."""
    med, urban = {}, []
    for q in ("open-sky", "suburban", "urban"):
        per = []
        for seed in range(8):
            sim = simulate_drive(small_world, DriveConfig(seed=seed, duration_s=60.0), Conditions(gnss_quality=q))
            per.append(raw_error_median(sim.gnss))
            if q == "urban":
                urban.append(sim)
        med[q] = float(np.median(per))
    print("GNSS raw median by quality:", {k: round(v, 2) for k, v in med.items()})
    assert 0.7 < med["open-sky"] < 2.0
    assert 2.5 < med["suburban"] < 6.0
    assert 4.5 < med["urban"] < 12.0
    assert med["open-sky"] < med["suburban"] < med["urban"]
    g = [s.gnss for s in urban]
    assert sum(x.events(GNSS_BIAS_EPISODE) for x in g) >= 2 and sum(x.events(GNSS_MULTIPATH) for x in g) >= 4
    assert sum(len(s.realisation["gnss"]["reacquisitions"]) for s in urban) >= 2
    assert all(s.realisation["gnss"]["bias_episodes"] or not s.gnss.events(GNSS_BIAS_EPISODE) for s in urban)
    # the urban receiver reports its nominal sigma, well below the error it makes
    err = np.concatenate([x.error_h[x.state != GNSS_OUTAGE] for x in g])
    sig = np.concatenate([x.sigma_h[x.state != GNSS_OUTAGE] for x in g])
    assert np.median(sig) < 0.7 * np.median(err)
    np.testing.assert_allclose(sig, np.concatenate([x.hdop[x.state != GNSS_OUTAGE] for x in g])
                               * GnssModel().nominal_sigma_m)


# ---- CLI --------------------------------------------------------------------------------------------------

def _parse(register, argv):
    parser = argparse.ArgumentParser(prog="geoloc")
    register(parser.add_subparsers(dest="subcommand", required=True))
    return parser.parse_args(argv)


def test_drive_cli_builds_one_conditions_from_a_preset_and_overrides():
    from geoloc_ros.tools.common import conditions_from_args
    from geoloc_ros.tools.sim_drive import register

    req = ["drive", "--world", "w", "--out", "o"]
    assert conditions_from_args(_parse(register, req)) == Conditions()
    c = conditions_from_args(_parse(register, req + ["--conditions", "urban-gnss", "--gnss-overconfident", "2"]))
    assert c == Conditions(**{**PRESETS["urban-gnss"].__dict__, "gnss_overconfident": 2.0})
    c = conditions_from_args(_parse(register, req + [
        "--traffic", "12", "--time-of-day", "dusk", "--weather", "fog", "--road-changes", "0.3",
        "--calib-error", "1,-0.5,0.2,0.05,3", "--odom-scale-err", "-1.5", "--gnss-quality", "suburban"]))
    assert c == Conditions(traffic=12, time_of_day="dusk", weather="fog", road_changes=0.3,
                           calib=CalibError(1.0, -0.5, 0.2, 0.05, 3.0), odom_scale_err_pct=-1.5,
                           gnss_quality="suburban")
    with pytest.raises(InvalidArgument, match="5 numbers"):
        conditions_from_args(_parse(register, req + ["--calib-error", "1,2"]))
    with pytest.raises(InvalidArgument, match="outside 0.05..20"):
        conditions_from_args(_parse(register, req + ["--gnss-overconfident", "0"]))
    with pytest.raises(SystemExit):
        _parse(register, req + ["--conditions", "sunny"])


def test_dataset_cli_cycles_presets():
    from geoloc_ros.tools.common import condition_cycle
    from geoloc_ros.tools.sim_dataset import register

    req = ["dataset", "--world", "w", "--out", "o"]
    assert condition_cycle(_parse(register, req)) is None
    cyc = condition_cycle(_parse(register, req + ["--conditions", "all"]))
    assert [n for n, _ in cyc] == list(PRESETS) and [c for _, c in cyc] == list(PRESETS.values())
    cyc = condition_cycle(_parse(register, req + ["--conditions", "night,fog", "--traffic", "3"]))
    assert [n for n, _ in cyc] == ["night+custom", "fog+custom"] and all(c.traffic == 3 for _, c in cyc)
    assert cyc[0][1].time_of_day == "night" and cyc[1][1].weather == "fog"
    assert condition_cycle(_parse(register, req + ["--gnss-quality", "urban"])) == [
        ("custom", Conditions(gnss_quality="urban"))]
    with pytest.raises(InvalidArgument, match="unknown conditions preset 'sunny'"):
        condition_cycle(_parse(register, req + ["--conditions", "night,sunny"]))


def test_dataset_records_each_drives_conditions(small_world, tmp_path):
    """Default conditions named on the dataset: the same images as without, and drives.csv /
    dataset.json name each drive's conditions."""
    from geoloc_ros.sim.dataset import DatasetConfig, export_dataset

    cfg = DatasetConfig(seq_len=2, spacing_m=10.0, drives_per_world=2, drive_length_m=40.0, tile_m=40.0, tile_px=32,
                        cell_m=200.0, width=32, height=16, camera_effects=False)
    a = export_dataset(tmp_path / "a", [("w", small_world)], [], cfg, progress=False)
    b = export_dataset(tmp_path / "b", [("w", small_world)], [], cfg, progress=False,
                       conditions=[("custom", Conditions())])
    assert "conditions" not in a and not (tmp_path / "a" / "drives.csv").exists()
    assert b["conditions"]["cycle"] == ["custom"] and set(b["conditions"]["drives"]) == {"w_d000", "w_d001"}
    assert (tmp_path / "b" / "drives.csv").read_text().splitlines() == [
        "drive,world,conditions,load_pitch_deg", "w_d000,w,custom,0.0", "w_d001,w,custom,0.0"]
    pngs = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "ground").rglob("*.png"))
    assert len(pngs) >= 8
    for p in pngs:
        assert (tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes()
    assert (tmp_path / "a" / "keyframes.csv").read_bytes() == (tmp_path / "b" / "keyframes.csv").read_bytes()
