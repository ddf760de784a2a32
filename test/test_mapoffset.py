"""The map-offset estimator (core.mapoffset): learning the orthophoto's offset from GNSS minus the
camera, separated from the receiver's wandering bias; its sidecar (atomic, checked)."""
import json
import math

import numpy as np
import pytest

from geoloc_ros.core.errors import IncompatibleArtifact, InvalidArgument
from geoloc_ros.core.geo import LocalFrame
from geoloc_ros.core.mapoffset import MapOffsetEstimator, MapOffsetParams, OffsetSample, sidecar_path

FRAME = LocalFrame.at(44.4759, -73.2121)
ORTHO = {"kind": "geotiff", "crs": "EPSG:32618", "shape": [1600, 1600], "gsd_m": 0.5,
         "bounds_latlon": [44.47, -73.22, 44.48, -73.20]}
BIAS_SIGMA, TAU, WHITE = 3.0, 60.0, 0.8


def _est(prior=2.5, **kw):
    return MapOffsetEstimator(MapOffsetParams(map_offset_gnss_tau_s=TAU, **kw), prior, FRAME, ortho=ORTHO)


def _drive(est, offset, seconds, dt, rng, *, speed=8.0, start=0.0):
    """Samples d = offset + Gauss-Markov bias (sigma 3 m, tau 60 s) + white, along a loop in the town."""
    n = int(seconds / dt)
    phi = math.exp(-dt / TAU)
    b = BIAS_SIGMA * rng.standard_normal(2)
    used = 0
    for k in range(n):
        t = start + k * dt
        b = phi * b + BIAS_SIGMA * math.sqrt(1 - phi * phi) * rng.standard_normal(2)
        a = speed * t / 300.0
        x, y = 300.0 * math.cos(a), 300.0 * math.sin(a)
        d = np.asarray(offset, float) + b + WHITE * rng.standard_normal(2)
        used += est.observe(OffsetSample(t=t, x=x, y=y, d=d, noise_var=WHITE ** 2, bias_var=BIAS_SIGMA ** 2))
    return used


def test_converges_to_a_known_offset_despite_a_wandering_bias():
    rng = np.random.default_rng(3)
    est = _est()
    true = np.array([2.0, -1.5])
    _drive(est, true, 2 * 3600.0, 2.0, rng)
    for q in ((300.0, 0.0), (0.0, 300.0), (-300.0, 0.0)):  # on the loop driven
        o, var = est.offset_at(*q)
        sd = math.sqrt(var)
        # two hours = ~60 independent bias draws: sigma ~ 3 / sqrt(60 / cells seen) ~ 0.5 m, the truth within it
        assert sd < 0.6
        assert np.all(np.abs(o - true) < 3.0 * sd), (q, o, sd)
    assert 45 < est.diagnostics(300.0, 0.0)["independent_samples_total"] < 75  # 7200 s / (2 tau)


def test_sigma_shrinks_with_independent_samples_not_with_correlated_ones():
    rng = np.random.default_rng(5)
    one = _est()
    _drive(one, (1.0, 1.0), 2.0, 2.0, rng, speed=0.0)  # one sample (at one place: 300, 0)
    burst = _est()
    _drive(burst, (1.0, 1.0), 1.0, 0.01, rng, speed=0.0)  # 100 samples within one second (one bias draw)
    spread = _est()
    _drive(spread, (1.0, 1.0), 30 * 5 * TAU, 5 * TAU, rng, speed=0.0)  # 30 samples 5 tau apart
    s1 = math.sqrt(one.offset_at(300.0, 0.0)[1])
    sb = math.sqrt(burst.offset_at(300.0, 0.0)[1])
    ss = math.sqrt(spread.offset_at(300.0, 0.0)[1])
    assert burst.counts["samples"] == 100
    assert sb > 0.9 * s1, (sb, s1)  # a burst is worth about one sample
    assert ss < 0.4 * s1, (ss, s1)  # independent samples are worth many
    assert burst.n_eff_total < 1.1 and spread.n_eff_total > 25, (burst.n_eff_total, spread.n_eff_total)


def test_gate_drops_a_multipath_jump_and_to_map_adds_the_offset_variance():
    rng = np.random.default_rng(7)
    est = _est(prior=0.5)
    _drive(est, (0.3, 0.0), 600.0, 2.0, rng)
    bad = OffsetSample(t=700.0, x=0.0, y=0.0, d=np.array([40.0, 0.0]), noise_var=WHITE ** 2, bias_var=BIAS_SIGMA ** 2)
    assert not est.observe(bad)
    assert est.counts["rejected_gate"] == 1
    z, R = est.to_map(np.array([10.0, 20.0]), np.eye(2) * 4.0)
    o, var = est.offset_at(10.0, 20.0)
    assert np.allclose(z, [10.0 - o[0], 20.0 - o[1]])
    assert np.allclose(R, np.eye(2) * (4.0 + var))


def test_exact_orthophoto_stays_near_zero_with_a_tight_prior():
    rng = np.random.default_rng(11)
    est = _est(prior=0.5)
    _drive(est, (0.0, 0.0), 600.0, 2.0, rng)
    o, var = est.offset_at(0.0, 0.0)
    assert float(np.hypot(*o)) < 0.5 and math.sqrt(var) <= 0.5


def test_camera_samples_move_the_peak_to_the_fix_time_by_odometry():
    est = _est(prior=3.0)
    # vehicle heading north-east in the map, odom frame rotated by 90 deg; offset (2, 1), no bias/noise
    true = np.array([2.0, 1.0])
    for k in range(200):
        t = 10.0 * k
        p = np.array([0.5 * k, 0.3 * k])  # map-frame truth as the orthophoto shows it at the fix time
        odom_f = (0.0, 0.0, math.pi / 2)  # odom yaw = map yaw + 90 deg
        est.on_fix(t, p + true, np.eye(2) * 9.0, odom_f)
        # 0.3 s later the vehicle moved 3 m along its heading (map yaw 0.5 rad)
        yaw = 0.5
        step_map = 3.0 * np.array([math.cos(yaw), math.sin(yaw)])
        rot = math.pi / 2 - yaw  # map -> odom
        step_odom = (math.cos(rot) * step_map[0] - math.sin(rot) * step_map[1],
                     math.sin(rot) * step_map[0] + math.cos(rot) * step_map[1])
        peak = p + step_map
        assert est.on_camera(t + 0.3, peak, yaw, (step_odom[0], step_odom[1], math.pi / 2), peak, 0.5) == "used"
    o, _ = est.offset_at(50.0, 30.0)
    assert np.allclose(o, true, atol=0.3), o  # a step of 3 m moved the wrong way would be metres off


def test_sidecar_roundtrip_atomic_and_refuses_another_orthophoto(tmp_path):
    rng = np.random.default_rng(2)
    est = _est()
    _drive(est, (1.5, -0.5), 900.0, 2.0, rng)
    path = tmp_path / "ortho.tif.offset.json"
    est.path = path
    assert est.maybe_save(900.0) == path
    assert not [p for p in tmp_path.iterdir() if p.name != path.name]  # no temporary left behind
    back = _est()
    back.load(path)
    for q in ((0.0, 0.0), (250.0, -120.0)):
        a, va = est.offset_at(*q)
        b, vb = back.offset_at(*q)
        assert np.allclose(a, b) and math.isclose(va, vb, rel_tol=1e-9)
    assert back.diagnostics(0.0, 0.0)["independent_samples"] == est.diagnostics(0.0, 0.0)["independent_samples"]
    # another orthophoto (other bounds): refused with what differs
    other = MapOffsetEstimator(MapOffsetParams(), 2.5, FRAME, ortho=dict(ORTHO, bounds_latlon=[44.0, -73.3, 44.1, -73.2]))
    with pytest.raises(IncompatibleArtifact, match="another orthophoto"):
        other.load(path)
    # a bad update is never written: the old sidecar stays whole
    good = path.read_text()
    est.M[1, 0] = float("nan")
    with pytest.raises(InvalidArgument, match="not finite"):
        est.save(path)
    assert path.read_text() == good
    # a truncated or tampered file is refused, not half-read
    path.write_text(good[: len(good) // 2])
    with pytest.raises(IncompatibleArtifact, match="not readable JSON"):
        _est().load(path)
    doc = json.loads(good)
    doc["covariance"][0][0] = -5.0
    path.write_text(json.dumps(doc))
    with pytest.raises(IncompatibleArtifact, match="not valid"):
        _est().load(path)


def test_sidecar_path_setting(tmp_path):
    assert sidecar_path("", tmp_path / "o.tif") is None
    assert sidecar_path("auto", tmp_path / "o.tif") == tmp_path / "o.tif.offset.json"
    assert sidecar_path(str(tmp_path / "x.json"), None) == tmp_path / "x.json"


# ------------------------------------------------------------------- on a real drive (the suite's small town)

def test_map_calibrate_learns_a_sidecar_and_the_replay_publishes_absolute_as_map_plus_offset(
        drive_dir, small_world_dir, tmp_path, capsys):
    """`geoloc map calibrate` writes the sidecar (refusing to overwrite without --force); a replay that
    starts from it (read only) publishes absolute = orthophoto frame + the learned offset."""
    from geoloc_ros.core.errors import OutputExists
    from geoloc_ros.evaluation.replay import make_config, replay_bag, world_frame
    from geoloc_ros.metric import open_matcher
    from geoloc_ros.tools.map_calibrate import main as map_calibrate

    ortho = small_world_dir / "orthophoto.tif"
    out = tmp_path / "ortho.offset.json"
    cfg_yaml = tmp_path / "cfg.yaml"
    cfg_yaml.write_text("map_registration_sigma_m: 2.0\nmap_offset_sample_interval_s: 0.5\n")
    assert map_calibrate([str(drive_dir), "--ortho", str(ortho), "--out", str(out), "--config", str(cfg_yaml)]) == out
    doc = json.loads(out.read_text())
    assert doc["format"] == "geoloc_map_offset" and doc["cells"] and doc["orthophoto"]["crs"].startswith("EPSG:")
    assert "map calibrate: 1 drive(s)" in capsys.readouterr().out
    with pytest.raises(OutputExists):
        map_calibrate([str(drive_dir), "--ortho", str(ortho), "--out", str(out)])
    before = out.read_text()
    cfg = make_config({"map_offset_estimate": True, "map_offset_file": str(out), "map_offset_save": False,
                       "map_registration_sigma_m": 2.0})
    matcher = open_matcher(ortho, cfg, frame=world_frame(small_world_dir))
    res = replay_bag(drive_dir / "bag", None, None, cfg, matcher=matcher, world_dir=small_world_dir, progress=False)
    assert out.read_text() == before  # read only
    log_ = res.methods["corrected"]
    rows = [i for i, o in enumerate(log_.offset) if o is not None]
    assert len(rows) > 50 and len(log_.ortho_x) == len(log_.t)
    for i in rows:
        o = log_.offset[i]
        assert abs(log_.x[i] - log_.ortho_x[i] - o["east_m"]) < 2e-3 and abs(log_.y[i] - log_.ortho_y[i] - o["north_m"]) < 2e-3
        # the published covariance holds the orthophoto frame's plus (some of) the offset's
        assert log_.cov[i][0, 0] >= log_.ortho_cov[i][0, 0] - 1e-9
    assert any(abs(log_.offset[i]["east_m"]) + abs(log_.offset[i]["north_m"]) > 0.01 for i in rows)  # not the prior
    assert res.localizer_stats["corrected"]["map_offset"]["file"] == str(out)
    # the orthophoto frame's track is the one the map-frame figures use
    a, b = log_.track(), log_.track(ortho=True)
    assert np.allclose(b.x, log_.ortho_x) and not np.allclose(a.x, b.x)


def test_time_restarting_forgets_the_bias_and_keeps_the_field():
    rng = np.random.default_rng(4)
    est = _est()
    _drive(est, (1.0, 0.0), 300.0, 2.0, rng, start=1000.0)
    o, var = est.offset_at(300.0, 0.0)
    est.on_fix(999.0, np.array([300.0, 0.0]), np.eye(2) * 9.0, (0.0, 0.0, 0.0))
    est._last_sample_t = 1290.0
    est.forget_time()
    o2, var2 = est.offset_at(300.0, 0.0)
    assert np.allclose(o, o2) and var == var2 and est.bias_t is None
    # samples from an earlier clock are taken again (not stuck behind the old stamps)
    est.on_fix(10.0, np.array([301.0, 0.0]), np.eye(2) * 9.0, None)
    assert est.on_camera(10.0, (300.0, 0.0), 0.0, None, (300.0, 0.0), 0.5) in ("used", "rejected")
