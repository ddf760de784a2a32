"""geoloc_ros.metric.selfcal: the camera mounting self-calibration learns a pitch or height error of
the published mounting from the matches themselves (frames rendered by the TRUE camera, the
matcher given the published one), stays put when the mounting is exact, ignores a garbage frame,
never leaves its bounds, keeps its estimate in a file that refuses to be used when corrupt, and
the offline command refuses a held-out town. Tiny world, real renderer, real matcher."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from test_metric import FLAT_LIGHT, camera_model, textured_toy_world, write_world_ortho  # noqa: E402

from geoloc_ros.core.camera import PinholeCamera  # noqa: E402
from geoloc_ros.core.errors import IncompatibleArtifact, InvalidArgument  # noqa: E402
from geoloc_ros.metric.aerial import AerialMap  # noqa: E402
from geoloc_ros.metric.config import MetricParams  # noqa: E402
from geoloc_ros.metric.features import GradientFeatures  # noqa: E402
from geoloc_ros.metric.matcher import MetricMatcher  # noqa: E402
from geoloc_ros.metric.selfcal import MountCalibrator, SelfCalParams, refined_peak  # noqa: E402
from geoloc_ros.sim.render import GroundRenderer  # noqa: E402

CAM = PinholeCamera(256, 128, 90.0, 1.8)
N_KF = 30  # keyframes 5 m apart along the east-west road: 150 m, 15 s at 10 m/s
PARAMS = MetricParams(metric_bev_x_max_m=25.0, metric_bev_y_half_m=12.0, metric_max_range_m=30.0, metric_seq_len=2)


@pytest.fixture(scope="module")
def world():
    return textured_toy_world(size_m=200.0)


@pytest.fixture(scope="module")
def aerial(world, tmp_path_factory):
    return AerialMap(write_world_ortho(world, tmp_path_factory.mktemp("ortho") / "o.tif"), world.frame, 0.5)


def _frames(world, *, pitch_deg=0.0, dz=0.0, n=N_KF):
    """(t, truth pose, frame) along the right lane, rendered by the true camera: pitched down by
    ``pitch_deg`` and ``dz`` higher than the published mounting (level, 1.8 m)."""
    rend = GroundRenderer(world, CAM, FLAT_LIGHT, max_range_m=60.0)
    out = []
    for k in range(n):
        truth = (-85.0 + 5.0 * k, -1.75, 0.0)
        out.append((0.5 * k, truth, rend.render(*truth, z=CAM.mount_height_m + dz, pitch=math.radians(pitch_deg))))
    return out


@pytest.fixture(scope="module")
def frames_pitch2(world):
    return _frames(world, pitch_deg=2.0)


@pytest.fixture(scope="module")
def frames_height(world):
    return _frames(world, dz=0.1)


@pytest.fixture(scope="module")
def frames_exact(world):
    return _frames(world, n=20)


def _run(aerial, frames, cal=None):
    """Match every keyframe around a prior 1 m off the truth; -> peak position errors (m) and the
    calibrator's estimate after each keyframe."""
    m = MetricMatcher(aerial, GradientFeatures(), PARAMS, camera_model(CAM), selfcal=cal)
    errs, hist = [], []
    for t, truth, img in frames:
        m.add_keyframe(t, img, truth)
        v = m.match(truth[0] + 0.8, truth[1] - 0.6, truth[2], 1.5, math.radians(1.0)).volume
        s = np.where(np.isfinite(v.scores), v.scores, -9.0)
        _, i, j = np.unravel_index(np.argmax(s), s.shape)
        errs.append(math.hypot(v.xs[j] - truth[0], v.ys[i] - truth[1]))
        if cal is not None:
            hist.append(cal.estimate())
    return np.array(errs), hist


@pytest.fixture(scope="module")
def pitch_run(aerial, frames_pitch2):
    cal = MountCalibrator()
    errs, hist = _run(aerial, frames_pitch2, cal)
    return cal, errs, hist


def test_a_2_deg_pitch_error_is_learned_from_the_matches_and_the_fix_improves(aerial, frames_pitch2, pitch_run):
    cal, errs, hist = pitch_run
    pitch, sigma = cal.estimate()["pitch_deg"]
    assert abs(pitch - 2.0) < 0.3, cal.summary()  # measured +1.84
    assert sigma < 0.25 * SelfCalParams().selfcal_prior_sigma_pitch_deg, cal.summary()
    sig = [h["pitch_deg"][1] for h in hist]
    assert sig[-1] < sig[len(sig) // 2] < sig[0]  # the sigma shrinks as observations come in
    first = next(k for k, h in enumerate(hist) if abs(h["pitch_deg"][0] - 2.0) < 0.3)
    assert first <= 20, [round(h["pitch_deg"][0], 2) for h in hist]  # within 10 s of driving
    assert cal.counts["accepted"] >= 15 and abs(cal.estimate()["height_m"][0]) < 0.1, cal.counts
    # the match: the published level camera stretches the BEV and the peak slides metres
    base, _ = _run(aerial, frames_pitch2)
    tail = slice(N_KF - 10, N_KF)
    assert errs[tail].mean() < 0.5 * base[tail].mean() and base[tail].mean() > 1.0, (errs, base)


def test_a_10_cm_height_error_is_learned_too(aerial, frames_height):
    """Alone, the height converges to the truth. With the pitch estimated too, the two trade off
    along a ridge (a camera 0.1 m too high and one looking 0.3 deg further down stretch this BEV
    almost alike, docs/metric.md): the estimate moves towards the truth on it, stays bounded, and
    the fix is as good as with the right height."""
    only = MountCalibrator(SelfCalParams(selfcal_pitch=False, selfcal_roll=False, selfcal_yaw=False))
    _, hist = _run(aerial, frames_height, only)
    h, sigma = only.estimate()["height_m"]
    assert abs(h - 0.1) < 0.03, only.summary()
    assert sigma < 0.25 * SelfCalParams().selfcal_prior_sigma_height_m
    assert next(k for k, e in enumerate(hist) if abs(e["height_m"][0] - 0.1) < 0.03) <= 20, hist
    both = MountCalibrator()
    errs, _ = _run(aerial, frames_height, both)
    e = both.estimate()
    assert e["height_m"][0] > 0.03 and abs(e["pitch_deg"][0]) < 0.3, both.summary()  # measured +0.049, -0.13 deg
    base, _ = _run(aerial, frames_height)
    assert np.median(errs[-10:]) <= np.median(base[-10:]) and np.median(errs[-10:]) < 0.5, (errs, base)


def test_an_exact_mounting_stays_exact(aerial, frames_exact):
    cal = MountCalibrator()
    _, hist = _run(aerial, frames_exact, cal)
    assert cal.counts["accepted"] >= 10, cal.counts
    for h in hist:  # no drift at any point, not only at the end
        assert abs(h["pitch_deg"][0]) < 0.3 and abs(h["height_m"][0]) < 0.03 and abs(h["roll_deg"][0]) < 0.5, h
        assert abs(h["yaw_deg"][0]) < 0.5, h
    assert cal.camera_model() == camera_model(CAM) or abs(cal.estimate()["pitch_deg"][0]) < 0.3


def test_a_garbage_frame_is_gated_out_and_moves_nothing(aerial, frames_exact):
    cal = MountCalibrator()
    m = MetricMatcher(aerial, GradientFeatures(), dataclasses.replace(PARAMS, metric_seq_len=1),
                      camera_model(CAM), selfcal=cal)
    t, truth, _ = frames_exact[5]
    noise = np.random.default_rng(3).integers(0, 256, (CAM.height, CAM.width, 3), dtype=np.uint8)
    x0, P0 = cal.x.copy(), cal.P.copy()
    for k in range(3):
        m.add_keyframe(t + k, noise, truth)
        m.match(truth[0] + 0.8, truth[1] - 0.6, truth[2], 1.5, math.radians(1.0))
    assert cal.counts["accepted"] == 0 and sum(cal.counts["rejected"].values()) == 3, cal.counts
    assert np.array_equal(cal.x, x0) and np.array_equal(cal.P, P0)
    # the same matcher on a real frame does use it (the gate is not simply closed)
    m.add_keyframe(t + 5, frames_exact[5][2], truth)
    m.match(truth[0] + 0.8, truth[1] - 0.6, truth[2], 1.5, math.radians(1.0))
    assert cal.counts["accepted"] >= 1, cal.counts


def test_the_estimate_never_leaves_its_bound(aerial, frames_pitch2):
    cal = MountCalibrator(SelfCalParams(selfcal_bound_pitch_deg=0.5, selfcal_height=False, selfcal_roll=False))
    _run(aerial, frames_pitch2[:12], cal)
    assert abs(cal.estimate()["pitch_deg"][0]) <= 0.5 + 1e-9, cal.summary()
    assert cal.counts["rejected"].get("beyond the bound", 0) >= 1, cal.counts


def test_dynamic_pitch_is_predicted_from_the_longitudinal_acceleration():
    cal = MountCalibrator()
    for k in range(13):  # braking at 2 m/s^2, odometry speeds at 20 Hz
        cal.on_odom(k * 0.05, 10.0 - 2.0 * k * 0.05)
    assert cal.accel_at(0.6) == pytest.approx(-2.0, abs=1e-6)
    assert cal.dynamic_pitch(-2.0) == pytest.approx(0.012, abs=2e-4)  # nose down: the camera looks down
    # without odometry speeds: from three keyframe poses (speeding up from 10 to 11 m/s over 0.5 s)
    new = MountCalibrator()
    hist = [(0.0, (0.0, 0.0, 0.3)), (0.5, (5.0 * math.cos(0.3), 5.0 * math.sin(0.3), 0.3)),
            (1.0, (10.5 * math.cos(0.3), 10.5 * math.sin(0.3), 0.3))]
    assert new.accel_at(1.0, hist) == pytest.approx(2.0, abs=1e-6)


def test_save_load_round_trip_keeps_the_estimate_and_the_model(tmp_path, pitch_run):
    cal = pitch_run[0]
    path = cal.save(tmp_path / "vehicle.json")
    back = MountCalibrator.load(path)
    np.testing.assert_array_equal(back.x, cal.x)
    np.testing.assert_array_equal(back.P, cal.P)
    assert back.camera_model() == cal.camera_model() and back.estimate() == cal.estimate()
    doc = json.loads(path.read_text())
    assert doc["format"] == "geoloc_camera_selfcal" and abs(doc["estimate"]["pitch_deg"]["value"] - 2.0) < 0.3
    # a matcher handed the loaded calibrator projects with the corrected model from the first keyframe
    back2 = MountCalibrator.load(path)
    m = MetricMatcher(AerialMapStub(), GradientFeatures(), PARAMS, camera_model(CAM), selfcal=back2)
    assert m.camera == cal.camera_model() != camera_model(CAM)
    # the file applies to the published model it was made for
    other = CameraModel_with_height(camera_model(CAM), 1.5)
    with pytest.raises(IncompatibleArtifact, match="another published camera model"):
        MountCalibrator.load(path).set_published(other)


class AerialMapStub:
    """Only the resolution of an AerialMap (the matcher checks it at construction)."""
    res_m = 0.5


def CameraModel_with_height(cam, z):
    t = list(cam.t_base_opt)
    t[2] = z
    return cam.with_mount(np.asarray(cam.R_base_opt).reshape(3, 3), t)


@pytest.mark.parametrize("corrupt, match", [
    (lambda d: "{ not json", "not readable JSON"),
    (lambda d: json.dumps({**d, "format": "geoloc_world"}), "is not a camera calibration"),
    (lambda d: json.dumps({**d, "format_version": 99}), "format_version 99"),
    (lambda d: json.dumps({**d, "state": {**d["state"], "x": [float("nan")] + d["state"]["x"][1:]}}).replace(
        "NaN", "1e999"), "finite"),
    (lambda d: json.dumps({**d, "state": {**d["state"], "x": [0.5] + d["state"]["x"][1:]}}), "beyond the bound"),
    (lambda d: json.dumps({**d, "state": {**d["state"], "x": d["state"]["x"][:-1]}}), "5 finite numbers"),
    (lambda d: json.dumps({**d, "state": {**d["state"], "P": (-np.eye(5)).tolist()}}), "not a covariance"),
    (lambda d: json.dumps({k: v for k, v in d.items() if k != "state"}), "state.names"),
])
def test_a_corrupt_or_foreign_calibration_file_is_refused(tmp_path, corrupt, match):
    good = MountCalibrator()
    good.set_published(camera_model(CAM))
    path = tmp_path / "cal.json"
    path.write_text(corrupt(good.to_dict()))
    with pytest.raises(IncompatibleArtifact, match=match):
        MountCalibrator.load(path)


def test_params_are_checked_and_pitch_search_conflicts_with_selfcal(aerial):
    with pytest.raises(InvalidArgument, match="localizer.selfcal_bound_pitch_deg"):
        SelfCalParams(selfcal_bound_pitch_deg=-1.0)
    with pytest.raises(InvalidArgument, match="unknown localizer.selfcal key"):
        SelfCalParams.from_dict({"selfcal_bound_pitch": 2.0})
    with pytest.raises(InvalidArgument, match="probe_min_pitch_deg"):
        SelfCalParams(selfcal_probe_min_pitch_deg=3.0, selfcal_probe_max_pitch_deg=1.0)
    p = SelfCalParams(selfcal_min_peak=0.3)
    assert SelfCalParams.from_config(p) == p
    with pytest.raises(InvalidArgument, match="metric_pitch_search_deg"):
        MetricMatcher(aerial, GradientFeatures(), MetricParams(metric_pitch_search_deg=1.0), selfcal=MountCalibrator())


def test_refined_peak_interpolates_between_cells():
    x = np.arange(-3, 4) * 0.5
    s = 1.0 - (x[None, None, :] - 0.2) ** 2 - (x[None, :, None] + 0.1) ** 2  # vertex between cells
    assert refined_peak(s) == pytest.approx(1.0, abs=1e-9) and float(s.max()) < 1.0 - 0.01
    assert refined_peak(np.full((1, 3, 3), np.nan)) is None


def test_calibrate_camera_refuses_a_drive_in_a_heldout_town(tmp_path, capsys):
    from geoloc_ros import cli
    from geoloc_ros.evaluation.protocol import load_protocol
    from geoloc_ros.sim.bag import DRIVE_FORMAT, DRIVE_FORMAT_VERSION

    held = load_protocol().heldout_towns[0]
    drive = tmp_path / "drive"
    (drive / "bag").mkdir(parents=True)
    (drive / "bag" / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    (drive / "drive.json").write_text(json.dumps({"format": DRIVE_FORMAT, "format_version": DRIVE_FORMAT_VERSION,
                                                  "world": {"seed": held}}))
    out = tmp_path / "cal.json"
    assert cli.main(["calibrate", "camera", str(drive), "--ortho", str(tmp_path / "o.tif"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "geoloc calibrate camera refuses held-out towns" in err and f"(town {held})" in err
    assert not out.exists()


def test_a_yaw_error_shows_as_the_matches_heading_against_their_track(world, aerial):
    """The true camera looks 1 deg left of the published one: the matched heading is 1 deg off the
    direction the matched positions move in; the calibrator learns it and the peak heading returns
    to the truth."""
    rend = GroundRenderer(world, CAM, FLAT_LIGHT, max_range_m=60.0)
    frames = []
    for k in range(N_KF):
        truth = (-85.0 + 5.0 * k, -1.75, 0.0)
        frames.append((0.5 * k, truth, rend.render(truth[0], truth[1], truth[2] + math.radians(1.0))))
    cal = MountCalibrator(SelfCalParams(selfcal_pitch=False, selfcal_height=False, selfcal_roll=False))
    m = MetricMatcher(aerial, GradientFeatures(), PARAMS, camera_model(CAM), selfcal=cal)
    heads = []
    for t, truth, img in frames:
        m.add_keyframe(t, img, truth)
        v = m.match(truth[0] + 0.8, truth[1] - 0.6, truth[2], 1.5, math.radians(1.5)).volume
        s = np.where(np.isfinite(v.scores), v.scores, -9.0)
        heads.append(math.degrees(v.yaws[np.unravel_index(np.argmax(s), s.shape)[0]]))
    yaw, sigma = cal.estimate()["yaw_deg"]
    assert abs(yaw - 1.0) < 0.3 and sigma < 0.6, cal.summary()
    assert cal.counts.get("accepted_yaw", 0) >= 4, cal.counts
    assert heads[0] == pytest.approx(1.0) and all(abs(h) < 0.5 for h in heads[-5:]), heads


def test_calibrate_camera_writes_a_calibration_file_from_a_drive(drive_dir, tmp_path, capsys):
    """The shared simulated drive (validation town, exact /tf_static): the command replays it with
    self-calibration, prints its one-line summary and writes a file that loads; it refuses to
    overwrite it without --force."""
    from geoloc_ros import cli
    from geoloc_ros.core.errors import OutputExists
    from geoloc_ros.tools.calibrate_camera import main

    out = tmp_path / "vehicle.json"
    assert main([str(drive_dir), "--out", str(out)]) == out
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("calibrate camera: pitch ") and "observations accepted" in line, line
    cal = MountCalibrator.load(out)
    e = cal.estimate()
    assert cal.published is not None and abs(e["pitch_deg"][0]) < 4.0 and abs(e["height_m"][0]) < 0.3
    assert e["pitch_deg"][1] < SelfCalParams().selfcal_prior_sigma_pitch_deg  # it learned something
    with pytest.raises(OutputExists):
        main([str(drive_dir), "--out", str(out)])
    assert cli.main(["calibrate", "camera", str(drive_dir), "--out", str(out), "--from", str(tmp_path / "none.json"),
                     "--force"]) == 2  # a --from file that does not exist is a clear error
    assert "does not exist" in capsys.readouterr().err
