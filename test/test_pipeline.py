"""The Localizer end to end on a tiny synthetic drive: the first 16 s of the suite's shared drive
(conftest: generated world, `geoloc sim drive` bag with GNSS, odometry and rendered camera frames),
the shipped model on the torch backend and the real tile index built along the drive with
geoloc_ros.index.build_index. Plus its config, keyframe selection, bad input and time handling."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from geoloc_ros.core.errors import InvalidArgument
from geoloc_ros.core.keyframes import KeyframeBuffer
from geoloc_ros.pipeline import STATUSES, Estimate, Localizer, LocalizerConfig

PIPELINE_S = 16.0  # the first seconds of conftest's shared drive


@pytest.fixture(scope="module")
def drive(drive_dir):
    """The first 16 s of the shared drive as events (t, kind, payload) in stamp order, converted as the
    node converts its messages: odometry (0), fixes (1), RGB frames (2); t in seconds from the drive's
    start. With the truth of the drive (truth.csv, at the camera times)."""
    from geoloc_ros.bag import read_bag
    from geoloc_ros.core import msgconv
    from geoloc_ros.core.images import msg_to_rgb
    from geoloc_ros.sim.bag import read_truth_csv

    truth = read_truth_csv(drive_dir / "truth.csv")
    t0 = truth["stamp_ns"][0] * 1e-9 - truth["t"][0]  # the stamp of the drive's t = 0
    ev = []
    for topic, _, msg in read_bag(drive_dir / "bag", ["/gnss/fix", "/odom", "/camera/image_raw"]):
        if topic == "/gnss/fix":
            f = msgconv.navsatfix(msg)
            ev.append((f.t - t0, 1, (f.lat, f.lon, f.cov_en, f.ok)))
        elif topic == "/odom":
            o = msgconv.odometry(msg)
            ev.append((o.t - t0, 0, (o.x, o.y, o.yaw, o.vx, o.wz, None)))
        else:
            ev.append((msgconv.header_time(msg) - t0, 2, msg_to_rgb(msg)))
    ev = sorted((e for e in ev if e[0] <= PIPELINE_S), key=lambda e: (e[0], e[1]))
    keep = truth["t"] <= PIPELINE_S
    truth = {k: v[keep] for k, v in truth.items()}
    return {"events": ev, "truth": truth, "frames": sum(1 for e in ev if e[1] == 2),
            "distance_m": float(np.sum(np.hypot(np.diff(truth["x"]), np.diff(truth["y"]))))}


def feed(loc, events, *, until=None):
    """Drive ``loc`` with the events; returns the keyframe estimates."""
    out = []
    for t, kind, p in events:
        if until is not None and t > until:
            break
        if kind == 0:
            loc.on_odom(t, *p)
        elif kind == 1:
            loc.on_fix(t, *p)
        else:
            est = loc.on_image(t, p)
            if est is not None:
                out.append(est)
    return out


def truth_xy(drive, loc, t):
    """Truth at ``t`` (interpolated between camera times) in the Localizer's frame, and its yaw."""
    tr = drive["truth"]
    lat, lon = np.interp(t, tr["t"], tr["lat"]), np.interp(t, tr["t"], tr["lon"])
    x, y = loc.frame.from_latlon(float(lat), float(lon))
    return float(x), float(y), float(np.interp(t, tr["t"], np.unwrap(tr["yaw"])))


# ---------------------------------------------------------------------------------------------


def test_localizer_end_to_end_with_the_real_encoder_and_index(drive, encoder, index):
    loc = Localizer(encoder, index, LocalizerConfig(min_seq_len=2))
    ests = feed(loc, drive["events"])
    dist = drive["distance_m"]
    st = loc.stats()
    # keyframes: one per ~5 m of odometry (the first one comes with the first frame)
    assert dist / 6.0 - 1 <= st["keyframes"] <= dist / 5.0 + 1, (st["keyframes"], dist)  # 10 Hz camera: 5-6 m
    assert st["frames"] == drive["frames"]
    assert len(ests) == st["keyframes"] - sum(1 for e in ests if e is None)
    assert st["matches_attempted"] > 0
    assert st["matches_used"] + sum(st["matches_rejected"].values()) == st["matches_attempted"]
    assert st["gnss_accepted"] > 0 and st["drops"] == {}
    errs = []
    for e in ests:
        assert isinstance(e, Estimate) and e.keyframe
        assert e.status in STATUSES and isinstance(e.reasons, list)
        cov = np.asarray(e.cov)
        assert cov.shape == (3, 3) and np.allclose(cov, cov.T) and np.all(np.linalg.eigvalsh(cov) > 0)
        assert e.compute_ms > 0
        lat, lon = loc.frame.to_latlon(e.x, e.y)
        assert lat == pytest.approx(e.lat, abs=1e-9) and lon == pytest.approx(e.lon, abs=1e-9)
        tx, ty, tyaw = truth_xy(drive, loc, e.t)
        errs.append(math.hypot(e.x - tx, e.y - ty))
        if e.sim_map is not None:  # the similarity map: tiles within the search radius, scored
            assert len(e.sim_map.x) == len(e.sim_map.score) >= 1
            assert e.candidates is not None and len(e.candidates.score) <= loc.config.candidates_k
            assert np.all(np.diff(e.candidates.score) <= 1e-6)  # best first
            assert math.isfinite(e.confidence)
            r = np.hypot(e.sim_map.x - e.x, e.sim_map.y - e.y)
            assert r.max() <= loc.config.search_radius_max_m + 8.0
    assert any(e.sim_map is not None for e in ests)
    # the drive is short (16 s): the estimate follows GNSS within its reported uncertainty
    assert float(np.median(errs)) < 12.0
    later = ests[len(ests) // 2:]
    assert any(e.status in ("tracking", "degraded") for e in later)
    # heading bins used for the search are those of the filter heading (true compass degrees)
    e = ests[-1]
    _, _, tyaw = truth_xy(drive, loc, e.t)
    d = (e.yaw - tyaw + math.pi) % (2 * math.pi) - math.pi
    assert abs(math.degrees(d)) < 20.0
    if e.sim_map is not None:
        hd = (e.sim_map.heading_deg - e.heading_deg + 180.0) % 360.0 - 180.0
        assert np.all(np.abs(hd) <= 180.0 / index.heading_bins + 1e-6)


def test_replaying_after_time_goes_backwards_resets_and_repeats_exactly(drive, encoder, index):
    loc = Localizer(encoder, index, LocalizerConfig(min_seq_len=2))
    ev = [e for e in drive["events"] if e[0] <= 5.0]
    first = feed(loc, ev)
    second = feed(loc, ev)  # a bag loop: stamps restart
    st = loc.stats()
    assert st["resets"] == 1 and st["reset_reasons"] == {"time went backwards": 1}
    assert len(first) == len(second) > 0
    for a, b in zip(first, second):
        assert (a.t, a.x, a.y, a.yaw, a.status) == (b.t, b.x, b.y, b.yaw, b.status)
        np.testing.assert_array_equal(a.cov, b.cov)


def test_gnss_odometry_baseline_needs_no_encoder_or_index(drive, index):
    loc = Localizer(None, None, LocalizerConfig(use_camera=False), frame=index.frame)
    ests = feed(loc, drive["events"])
    st = loc.stats()
    assert ests and all(not e.match_used and e.sim_map is None for e in ests)
    assert st["matches_attempted"] == 0 and st["keyframes"] == len(ests)
    e = loc.estimate()
    assert e is not None and e.status in STATUSES
    with pytest.raises(InvalidArgument, match="encoder and a tile index"):
        Localizer(None, None, LocalizerConfig(use_camera=True), frame=index.frame)


def test_outside_index_coverage_is_counted_and_degrades_the_status(drive, encoder, index):
    """The vehicle is 3 km away from the indexed corridor (GNSS says so): no crash, no match, no
    encoder work, status degraded with the reason, counted."""
    loc = Localizer(encoder, index, LocalizerConfig(min_seq_len=1))
    lat0, lon0 = index.frame.to_latlon(3000.0, 3000.0)
    img = next(p for t, k, p in drive["events"] if k == 2)
    ests = []
    for i in range(24):
        t = 0.25 * i
        loc.on_odom(t, 2.5 * i, 0.0, 0.0)
        lat, lon = index.frame.to_latlon(3000.0 + 2.5 * i, 3000.0)
        loc.on_fix(t, float(lat), float(lon), np.eye(2) * 9.0, True)
        e = loc.on_image(t, img)
        if e is not None:
            ests.append(e)
    st = loc.stats()
    assert st["outside_coverage"] > 0 and st["matches_attempted"] == 0
    assert loc.keyframes.sequence(8)[0].shape[0] == 0  # no encoder pass where nothing can be matched
    late = [e for e in ests if e.t > 3.0]
    assert late and all(e.status in ("degraded", "initialising") for e in late)
    assert any("outside tile index coverage" in r for e in late for r in e.reasons)
    assert math.hypot(late[-1].x - 3000.0 - 2.5 * 23, late[-1].y - 3000.0) < 15.0


def test_without_gnss_the_camera_relocalises_globally_and_says_it_is_lost(drive, encoder, index):
    """No fix at all: after relocalise_after_s the keyframes run a global search and seed the
    particles around the candidates; the status is 'lost' (the shipped model's global recall is
    weak) with the reason, until a GNSS fix re-initialises the filter."""
    cfg = LocalizerConfig(min_seq_len=2, relocalise_after_s=0.5, relocalise_k=10)
    loc = Localizer(encoder, index, cfg)
    ests = feed(loc, [e for e in drive["events"] if e[1] != 1 and e[0] <= 3.0])
    st = loc.stats()
    assert st["relocalisations"] >= 1 and st["gnss_accepted"] == 0
    relocs = [e for e in ests if e.match_reason.startswith("relocalised globally")]
    assert relocs and relocs[0].candidates is not None and len(relocs[0].candidates.score) >= 1
    e = loc.estimate()
    assert e is not None and e.status in ("lost", "initialising")
    if e.status == "lost":
        assert any("relocalising" in r for r in e.reasons)
    # a GNSS fix is a better prior than a lost cloud
    tr = drive["truth"]
    lat, lon = np.interp(3.0, tr["t"], tr["lat"]), np.interp(3.0, tr["t"], tr["lon"])
    loc.on_fix(3.01, float(lat), float(lon), np.eye(2) * 9.0, True)
    e = loc.estimate(3.01)
    tx, ty, _ = truth_xy(drive, loc, 3.0)
    assert math.hypot(e.x - tx, e.y - ty) < 15.0 and e.pos_std_m < 10.0


def test_bad_inputs_are_counted_drops_and_the_localizer_keeps_running(drive, encoder, index):
    loc = Localizer(encoder, index, LocalizerConfig())
    lat, lon = index.frame.to_latlon(0.0, 0.0)
    loc.on_fix(0.0, float(lat), float(lon), np.eye(2) * 9.0, True)
    loc.on_fix(0.2, float("nan"), float("nan"), None, True)  # status OK but NaN position
    loc.on_fix(0.3, 95.0, 10.0, None, True)  # not a latitude
    loc.on_fix(0.4, float(lat), float(lon), np.array([[-1.0, 0.0], [0.0, 4.0]]), True)  # bad covariance
    loc.on_fix(0.5, float("nan"), float("nan"), None, False)  # an honest NO_FIX: not a drop
    loc.on_odom(0.5, float("nan"), 0.0, 0.0)
    assert loc.on_image(0.6, np.zeros((128, 256), np.uint8)) is None  # mono
    assert loc.on_image(0.6, np.zeros((128, 256, 3), np.float32)) is None
    assert loc.on_image(0.6, None) is None
    st = loc.stats()
    assert st["drops"] == {"fix.nan": 1, "fix.out_of_range": 1, "fix.bad_covariance": 1, "odom.nonfinite": 1,
                           "image.bad_shape": 2, "image.bad_dtype": 1}
    assert st["gnss_no_fix"] == 3  # the NaN, the out-of-range one and the NO_FIX
    assert st["gnss_accepted"] == 2  # the first and the one with a bad covariance (default sigma used)
    e = loc.estimate(0.6)
    assert e is not None and np.all(np.isfinite(e.cov))
    with pytest.raises(InvalidArgument):
        loc.on_fix(float("nan"), float(lat), float(lon), None, True)


def test_estimate_is_none_before_the_first_fix_and_does_not_change_the_state(encoder, index):
    loc = Localizer(encoder, index, LocalizerConfig())
    assert loc.estimate() is None
    lat, lon = index.frame.to_latlon(0.0, 0.0)
    loc.on_odom(0.0, 0.0, 0.0, 0.0)
    loc.on_fix(0.0, float(lat), float(lon), np.eye(2) * 4.0, True)
    e0 = loc.estimate(0.0)
    assert e0.status == "initialising" and e0.reasons  # the heading is not known yet
    loc.on_odom(0.5, 5.0, 0.0, 0.0)
    particles = loc.tracker.f.x.copy()
    a = loc.estimate(0.5)
    b = loc.estimate(0.5)
    assert (a.x, a.y) == (b.x, b.y)
    np.testing.assert_array_equal(particles, loc.tracker.f.x)
    # the pending odometry moves the reported mean by its increment (in the filter heading)
    assert math.hypot(a.x - e0.x, a.y - e0.y) == pytest.approx(5.0, abs=0.5)
    loc.reset("test")
    assert loc.estimate() is None and loc.stats()["reset_reasons"] == {"test": 1}


def test_config_fields_are_documented_validated_and_unknown_keys_rejected():
    for f in dataclasses.fields(LocalizerConfig):
        md = f.metadata
        assert md.get("help"), f"{f.name} has no help text"
        if isinstance(f.default, (int, float)) and not isinstance(f.default, bool):
            lo, hi = md["range"]
            assert lo <= f.default <= hi, f.name
    d = LocalizerConfig.describe()
    assert {r["name"] for r in d} == {f.name for f in dataclasses.fields(LocalizerConfig)}
    assert LocalizerConfig.from_dict({"match_temperature": 0.3}).match_temperature == 0.3
    with pytest.raises(InvalidArgument, match="match_temprature"):
        LocalizerConfig.from_dict({"match_temprature": 0.3})
    with pytest.raises(InvalidArgument, match="localizer.search_radius_max_m"):
        LocalizerConfig(search_radius_max_m=0.0)
    with pytest.raises(InvalidArgument, match="search_radius_min_m"):
        LocalizerConfig(search_radius_min_m=100.0, search_radius_max_m=50.0)
    with pytest.raises(InvalidArgument, match="use_camera"):
        LocalizerConfig(use_camera="yes")
    assert LocalizerConfig.from_dict(LocalizerConfig().to_dict()) == LocalizerConfig()


def test_keyframes_by_distance_by_time_and_gaps_break_the_sequence():
    kb = KeyframeBuffer(spacing_m=5.0, interval_s=0.5, capacity=3, max_gap_s=2.0)
    assert kb.is_keyframe(0.0, 0.0)
    kb.add(0.0, np.ones(4), 0.0)
    assert not kb.is_keyframe(0.1, 4.9) and kb.is_keyframe(0.1, 5.0)  # distance, whatever the time
    kb.add(0.1, np.ones(4) * 2, 5.0)
    assert not kb.is_keyframe(0.5, None) and kb.is_keyframe(0.6, None)  # no odometry: time
    for i in range(3):
        kb.add(0.6 + 0.5 * i, np.ones(4) * (3 + i), None)
    assert len(kb) == 3  # ring buffer
    feats, ts = kb.sequence(8)
    assert feats.shape == (3, 4) and list(feats[:, 0]) == [3.0, 4.0, 5.0] and np.all(np.diff(ts) > 0)
    kb.add(10.0, np.ones(4) * 9, None)  # a gap longer than max_gap_s: sequence restarts
    assert len(kb) == 1 and kb.breaks == 1
    with pytest.raises(InvalidArgument):
        KeyframeBuffer(0.0, 0.5, 3, 2.0)
