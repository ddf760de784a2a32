"""Retrieval proposes, metric matching verifies (geoloc_ros/metric/verify.py): the verifier on a
textured toy world rendered by the simulator (true candidate accepted; a copied patch of the map as
good as the truth refused as ambiguous; odometry that disagrees with the camera refused), and the
Localizer with both the orthophoto and the real tile index relocalising without any GNSS fix on the
suite's shared drive (conftest: generated town, `geoloc sim drive` bag, index along the drive)."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

pytest.importorskip("cv2")

from test_metric import FLAT_LIGHT, _matcher_at, textured_toy_world, write_geotiff  # noqa: E402

from geoloc_ros.core.camera import PinholeCamera  # noqa: E402
from geoloc_ros.core.errors import InvalidArgument  # noqa: E402
from geoloc_ros.metric.aerial import AerialMap  # noqa: E402
from geoloc_ros.metric.verify import RelocParams, RelocVerifier, RoadNetwork, odom_moved, vote_places  # noqa: E402
from geoloc_ros.sim.render import GroundRenderer  # noqa: E402

CAM = PinholeCamera(256, 128, 90.0, 1.8)
START = (-50.0, 20.0, 0.0)  # drive east on open textured ground, 4 m per keyframe
FAR = [(30.0, -40.0), (-20.0, -50.0), (40.0, 45.0)]  # wrong places (inside the 160 m world)
FRESH_M = 36.0  # the BEV's reach (33 m) plus the 2-keyframe mosaic's length (4 m): the proposal's ground has left
OUTLIVE_M = 16.0  # 4 keyframes alone (the 160 m toy world is too small for the default 50 m after the fresh ground)


@pytest.fixture(scope="module")
def world():
    return textured_toy_world(seed=3)


def _aerial(world, tmp_path, copy_to=None):
    """The world's orthophoto as a GeoTIFF; ``copy_to`` (dx, dy): the map around the drive is also
    pasted that far away (a second place that looks exactly the same)."""
    ortho = world.ortho.copy()
    m = world.meta
    if copy_to is not None:
        r0, c0 = (int(round(float(v))) for v in world.xy_to_rc(START[0] - 10.0, START[1] + 20.0))
        h, w = 80, 160  # 40 x 80 m around the drive
        dr, dc = int(round(-copy_to[1] / m.gsd_m)), int(round(copy_to[0] / m.gsd_m))
        ortho[r0 + dr:r0 + dr + h, c0 + dc:c0 + dc + w] = world.ortho[r0:r0 + h, c0:c0 + w]
    p = write_geotiff(tmp_path / "ortho.tif", ortho, world.frame, m.x_min, m.y_max, m.gsd_m)
    return AerialMap(p, world.frame, 0.5)


def _keyframes(world, n, odom_error=None):
    """``n`` keyframes 4 m apart: (image, truth pose, odometry pose); ``odom_error(k)`` -> (dx, dy)
    added to the odometry of keyframe k (the odometry lives in its own frame: truth + 500 m)."""
    rend = GroundRenderer(world, CAM, FLAT_LIGHT, max_range_m=60.0)
    out = []
    for k in range(n):
        truth = (START[0] + 4.0 * k, START[1], START[2])
        ex, ey = odom_error(k) if odom_error else (0.0, 0.0)
        out.append((rend.render(*truth), truth, (truth[0] + 500.0 + ex, truth[1] - 200.0 + ey, truth[2])))
    return out


def _run(verifier, matcher, frames, cands, path=False):
    """Propose at the first keyframe (after 2 for the mosaic), then step: -> the verdicts. ``path``:
    give each step the odometry path so far (the road test)."""
    verdicts = []
    for k, (img, truth, odom) in enumerate(frames):
        matcher.add_keyframe(float(k), img, odom)
        if k == 1:
            xy = np.array([c[:2] for c in cands], float)
            verdicts.append(verifier.propose(odom, xy, np.array([c[2] for c in cands], float), 22.5))
        elif k > 1 and verifier.active:
            verdicts.append(verifier.step(odom, np.array([f[2][:2] for f in frames[:k + 1]]) if path else None))
    return verdicts


def _cands(truth):
    # the true place is the retrieval's THIRD candidate, 4 m and 10 deg off (a tile centre, a heading bin)
    return [(FAR[0][0], FAR[0][1], 0.0), (FAR[1][0], FAR[1][1], 0.5), (truth[0] + 3.0, truth[1] - 2.5, 0.17),
            (FAR[2][0], FAR[2][1], -0.3)]


def test_the_verifier_accepts_the_true_candidate_after_following_it_with_odometry(world, tmp_path):
    m = _matcher_at(world, _aerial(world, tmp_path), CAM, metric_seq_len=2)
    v = RelocVerifier(m, RelocParams(reloc_confirm_keyframes=3, reloc_fresh_m=FRESH_M, reloc_outlive_m=OUTLIVE_M))
    frames = _keyframes(world, 16)
    verdicts = _run(v, m, frames, _cands(frames[1][1]))
    states = [d.state for d in verdicts]
    assert states[-1] == "verified" and set(states[:-1]) == {"tracking"} and len(states) >= 4, \
        [d.describe() for d in verdicts]
    frames = frames[:len(verdicts) + 1]
    x, y, yaw = verdicts[-1].pose
    truth = frames[-1][1]
    # (tracking itself finds -3 deg of heading on this toy scene)
    assert math.hypot(x - truth[0], y - truth[1]) < 1.0 and abs(yaw - truth[2]) < math.radians(5.0)
    assert verdicts[-1].runner_up < 0.8 * verdicts[-1].best and verdicts[-1].evidence >= v.p.reloc_evidence
    assert v.counts["verified"] == 1 and v.counts["attempted"] == 1 and not v.active
    assert "relocalised (verified): 4 candidates, best" in v.diagnostics()["last"]
    # how far the winner's own ground lets the car be (the filter's starting sigma): a distinct place on
    # this textured ground, within a couple of metres
    assert 0.0 < verdicts[-1].spread_m < 2.0 and "its ground spread" in verdicts[-1].describe()


def test_the_verifier_refuses_when_another_place_looks_as_good(world, tmp_path):
    """The map around the drive pasted 60 m north: both places follow the odometry equally well,
    so the runner-up is as good as the winner and nothing is accepted."""
    m = _matcher_at(world, _aerial(world, tmp_path, copy_to=(0.0, -60.0)), CAM, metric_seq_len=2)
    v = RelocVerifier(m, RelocParams(reloc_confirm_keyframes=3, reloc_max_keyframes=3))
    frames = _keyframes(world, 5)
    truth = frames[1][1]
    cands = _cands(truth) + [(truth[0] - 2.0, truth[1] - 60.0 + 3.0, -0.1)]
    verdicts = _run(v, m, frames, cands)
    assert verdicts[-1].state == "rejected" and verdicts[-1].reason.startswith("ambiguous"), \
        [d.describe() for d in verdicts]
    assert verdicts[-1].runner_up > 0.9 * verdicts[-1].best
    assert v.counts["verified"] == 0 and v.counts["rejected"] == {"ambiguous": 1}


def test_a_look_alike_blocks_the_fix_until_the_road_tells_them_apart(world, tmp_path):
    """The map around the start of the drive pasted 60 m north (a look-alike that ends): both places
    follow the odometry while the car drives over the copied ground, and nothing is accepted while the
    copy still follows, however clear the score margin; once the ground beyond the copy is in view the copy's
    peaks stop following and the true place is accepted after it has been alone for reloc_outlive_m."""
    m = _matcher_at(world, _aerial(world, tmp_path, copy_to=(0.0, -60.0)), CAM, metric_seq_len=2)
    v = RelocVerifier(m, RelocParams(reloc_confirm_keyframes=3, reloc_fresh_m=FRESH_M, reloc_outlive_m=OUTLIVE_M,
                                     reloc_max_keyframes=30))
    frames = _keyframes(world, 28)
    truth = frames[1][1]
    cands = _cands(truth) + [(truth[0] - 2.0, truth[1] - 60.0 + 3.0, -0.1)]
    verdicts = _run(v, m, frames, cands)
    # the true place's score margin was clear before the copy's ground ran out: the margin alone would
    # have accepted it there; a surviving far rival blocks the fix instead
    blocked = [d for d in verdicts if d.state == "tracking" and d.travel_m >= FRESH_M and d.following >= 2
               and d.evidence >= v.p.reloc_evidence]
    assert blocked, [d.describe() for d in verdicts]
    assert verdicts[-1].state == "verified", [d.describe() for d in verdicts]
    x, y, _ = verdicts[-1].pose
    now = frames[len(verdicts)][1]
    assert math.hypot(x - now[0], y - now[1]) < 1.0 and verdicts[-1].following == 1
    # ... and only after it had outlived the copy by reloc_outlive_m
    assert verdicts[-1].alone_m >= OUTLIVE_M and verdicts[-2].state == "tracking" and verdicts[-2].alone_m < OUTLIVE_M
    assert "1 follow the odometry" not in blocked[0].describe() and "follow the odometry after" in blocked[0].describe()


def _road_at(y_road):
    """A road network with one straight east-west road along y = ``y_road`` (the index's tile centres)."""
    def dist(x, y, max_m):
        d = np.abs(np.asarray(y, float) - y_road)
        return np.where(d <= max_m, d, np.inf)
    return RoadNetwork(dist, 0.0)


def test_the_road_network_rules_out_a_look_alike_whose_path_leaves_the_roads(world, tmp_path):
    """The map around the drive pasted 60 m north, the copy as long as the drive: without the road
    test both places follow the odometry to the end and nothing is accepted; with the road network
    (the index's tile centres) the copy's path lies off every road and the true place is accepted
    once alone."""
    frames = _keyframes(world, 16)
    truth = frames[1][1]
    cands = _cands(truth) + [(truth[0] - 2.0, truth[1] - 60.0 + 3.0, -0.1)]
    params = RelocParams(reloc_confirm_keyframes=3, reloc_fresh_m=FRESH_M, reloc_outlive_m=OUTLIVE_M,
                         reloc_max_keyframes=30)
    out = {}
    for name, road in (("none", None), ("roads", _road_at(START[1]))):
        m = _matcher_at(world, _aerial(world, tmp_path, copy_to=(0.0, -60.0)), CAM, metric_seq_len=2)
        out[name] = _run(RelocVerifier(m, params, road=road), m, frames, cands, path=True)
    assert all(d.state == "tracking" for d in out["none"]) and out["none"][-1].following >= 2, \
        [d.describe() for d in out["none"]]
    got = out["roads"]
    assert got[-1].state == "verified" and got[-1].following == 1, [d.describe() for d in got]
    x, y, _ = got[-1].pose
    now = frames[len(got)][1]
    assert math.hypot(x - now[0], y - now[1]) < 1.0
    assert any(h.off_road for h in got[-1].hypotheses) and got[-1].hypotheses[0].road_m < 1.0
    assert "4 left the indexed roads" in got[-2].describe()  # the copy and the three far places
    # off: a negative tolerance disables the test (the copy keeps following)
    m = _matcher_at(world, _aerial(world, tmp_path, copy_to=(0.0, -60.0)), CAM, metric_seq_len=2)
    off = RelocVerifier(m, dataclasses.replace(params, reloc_road_tol_m=-1.0), road=_road_at(START[1]))
    assert off.road is None and _run(off, m, frames, cands, path=True)[-1].following >= 2


def test_the_verifier_refuses_a_place_the_odometry_does_not_follow(world, tmp_path):
    """The odometry says the car slid 3 m sideways per keyframe while the camera saw it drive straight:
    no hypothesis' peak lands where the odometry puts it."""
    m = _matcher_at(world, _aerial(world, tmp_path), CAM, metric_seq_len=1)
    v = RelocVerifier(m, RelocParams(reloc_confirm_keyframes=3))
    frames = _keyframes(world, 5, odom_error=lambda k: (0.0, 3.0 * k))
    verdicts = _run(v, m, frames, _cands(frames[1][1]))
    assert verdicts[-1].state == "rejected" and verdicts[-1].reason == "track disagrees with odometry", \
        [d.describe() for d in verdicts]
    assert v.counts["rejected"] == {"track disagrees with odometry": 1} and not v.active
    with pytest.raises(InvalidArgument, match="no relocalisation hypotheses"):
        v.step(frames[-1][2])


def test_a_map_pose_moved_by_the_odometry_lands_where_the_car_drove():
    """The estimate before a GNSS jump, carried on by the odometry (its own rotated, shifted frame):
    the car drove 20 m along its heading and turned left 90 deg, then 10 m."""
    a = (7.0, -3.0, math.radians(-70.0))  # odometry pose when the map pose was held
    fwd = (a[0] + 20.0 * math.cos(a[2]), a[1] + 20.0 * math.sin(a[2]), a[2])
    b = (fwd[0] + 10.0 * math.cos(a[2] + math.pi / 2), fwd[1] + 10.0 * math.sin(a[2] + math.pi / 2),
         a[2] + math.pi / 2)
    x, y, yaw = odom_moved((100.0, 200.0, 0.0), a, b)  # the map pose faced east
    assert math.hypot(x - 120.0, y - 210.0) < 1e-9 and abs(yaw - math.pi / 2) < 1e-9


def _searches(rng, true_rank, n_frames=5, k=40):
    """Global top-k per keyframe of a car driving north-east 5 m per keyframe (map frame) while its
    odometry runs in its own rotated, shifted frame: the true tile (within 4 m, its heading bin
    centre 15 deg off) ranks ``true_rank`` (score 0.50) among look-alikes scattered over a 1 km town
    (scores 0.52 .. 0.40); -> (searches, truth now, odometry now)."""
    heading = math.radians(40.0)
    rot = math.radians(-70.0)  # odometry frame vs map frame
    out = []
    for n in range(n_frames):
        tx, ty = 100.0 + 5.0 * n * math.cos(heading), 200.0 + 5.0 * n * math.sin(heading)
        ox, oy = 7.0 + math.cos(rot) * tx - math.sin(rot) * ty, -3.0 + math.sin(rot) * tx + math.cos(rot) * ty
        xy = rng.uniform(-500.0, 500.0, (k, 2))
        yaw = rng.uniform(-math.pi, math.pi, k)
        score = np.linspace(0.52, 0.40, k)
        xy[true_rank] = (tx + rng.uniform(-3, 3), ty + rng.uniform(-3, 3))
        yaw[true_rank] = heading + math.radians(15.0)
        score[true_rank] = 0.50 if true_rank else 0.52
        out.append((xy, yaw, score, (ox, oy, heading + rot)))
    return out, (tx, ty), out[-1][3]


def test_the_vote_moves_older_keyframes_candidates_with_the_odometry_and_pools_them():
    """The true tile is only the 3rd of each keyframe's list (a different look-alike wins each
    time): alone the newest keyframe puts it 3rd, pooled over 5 keyframes moved by the odometry it is
    the best place; the places keep their distance and carry the heading; nothing to pool: none."""
    rng = np.random.default_rng(0)
    searches, (tx, ty), odom = _searches(rng, true_rank=2)
    xy1, _, _ = vote_places(searches[-1:], odom, math.radians(22.5), k=10, temperature=0.03)
    assert math.hypot(*(xy1[0] - (tx, ty))) > 50.0  # the newest alone: a look-alike first
    xy, yaw, support = vote_places(searches, odom, math.radians(22.5), k=10, temperature=0.03)
    assert math.hypot(*(xy[0] - (tx, ty))) < 8.0, (xy[0], (tx, ty))  # inside the verifier's window
    assert abs((yaw[0] - math.radians(55.0) + math.pi) % (2 * math.pi) - math.pi) < math.radians(16.0)
    assert np.all(np.diff(support) <= 0) and len(xy) == 10
    d = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    assert d[np.triu_indices(len(xy), 1)].min() > 10.0
    # without the odometry's motion (every keyframe's tiles taken where they were) the votes scatter
    frozen = [(a, b, c, odom) for a, b, c, _ in searches]
    xy0, _, _ = vote_places(frozen, odom, math.radians(22.5), k=10, temperature=0.03)
    assert math.hypot(*(xy0[0] - (tx, ty))) > 8.0
    empty = vote_places([(np.zeros((0, 2)), np.zeros(0), np.zeros(0), odom)], odom, 0.4, k=5)
    assert all(len(a) == 0 for a in empty)


def test_reloc_parameters_are_checked():
    with pytest.raises(InvalidArgument, match="reloc_track_tol_m"):
        RelocParams(reloc_track_tol_m=5.0, reloc_window_m=4.0)
    with pytest.raises(InvalidArgument):
        RelocParams(reloc_k=0)


# ------------------------------------------------------------------ the Localizer on a real drive
def test_a_localizer_with_orthophoto_and_index_relocalises_without_any_gnss(small_world_dir, drive_dir, encoder,
                                                                             index):
    """Every GNSS fix removed by the replay: the global search proposes, metric matching verifies,
    and the filter starts at a verified pose: a fix within metres of the truth before the drive ends,
    no published non-lost estimate far from the truth, counters in the diagnostics."""
    from geoloc_ros.evaluation.replay import GnssEdit, replay_bag
    from geoloc_ros.metric import open_matcher
    from geoloc_ros.pipeline import LocalizerConfig

    cfg = LocalizerConfig(min_seq_len=2, reloc_verify=True)
    matcher = open_matcher(small_world_dir / "orthophoto.tif", cfg, frame=index.frame)
    res = replay_bag(drive_dir / "bag", encoder, index, cfg, matcher=matcher, world_dir=small_world_dir,
                     progress=False, gnss_edit=GnssEdit(remove=((0.0, 1e6),)))
    st = res.localizer_stats["corrected"]
    assert st["gnss_accepted"] == 0 and res.counts["fix"] > 0
    rl = st["relocalisation"]
    assert rl["attempted"] >= 1 and rl["verified"] >= 1, rl
    log = res.methods["corrected"]
    t = np.asarray(log.t)
    tx, ty = np.interp(t, res.truth.t, res.truth.x), np.interp(t, res.truth.t, res.truth.y)
    err = np.hypot(np.asarray(log.x) - tx, np.asarray(log.y) - ty)
    fixed = np.asarray(log.status) != "lost"
    # the defaults need ~110 m of driving after the proposal (60 m of fresh ground, 50 m alone): at
    # 8.4 m/s that is ~13 s after the warm-up; the drive lasts 24 s
    assert fixed.any() and t[fixed][0] - res.t_start < 21.0
    assert err[fixed].max() < 10.0 and np.median(err[fixed]) < 3.0, (err[fixed].max(), np.median(err[fixed]))
    ver = next(r for r in res.relocalisations if r["state"] == "verified")
    # the winner's track (for the pictures): its peaks keyframe by keyframe, ending at the verified pose,
    # over at least reloc_fresh_m of driving
    tk = np.asarray(ver["track"], float)
    assert len(tk) >= 4 and np.allclose(tk[-1], ver["pose"][:2])
    assert np.sum(np.hypot(*np.diff(tk, axis=0).T)) > 0.8 * cfg.reloc_fresh_m
    assert any("GNSS edited by the replay" in n for n in res.topics["notes"])
    # the road test placed the drive's odometry path (2 m steps) on the index's corridor: every known
    # point within the tolerance of a tile centre, ending at the verified pose; the filter started
    # with the winner's ground spread (reloc_init_pos_std_m at least)
    road = np.asarray(ver["road_path"], float)
    assert len(road) >= 10 and np.hypot(*(road[-1] - np.asarray(ver["pose"][:2]))) < 1.0
    d = index.distance_to_tiles(road[:, 0], road[:, 1], 50.0)
    assert np.nanmax(d) <= 0.71 * index.spacing_m + cfg.reloc_road_tol_m
    assert ver["spread_m"] >= 0.0 and "its ground spread" in ver["reason"]


def test_the_road_path_follows_the_odometry_and_restarts_when_it_jumps(small_world_dir, encoder, index):
    """The Localizer keeps the odometry path the road test places (one point per 2 m, the last
    reloc_road_history_m); an odometry jump (a driver restart) starts a new one."""
    from geoloc_ros.metric import open_matcher
    from geoloc_ros.pipeline import ODOM_PATH_STEP_M, Localizer, LocalizerConfig

    cfg = LocalizerConfig(reloc_verify=True, reloc_road_history_m=40.0)
    loc = Localizer(encoder, index, cfg, matcher=open_matcher(small_world_dir / "orthophoto.tif", cfg,
                                                               frame=index.frame))
    for k in range(100):  # 1 m per 0.1 s along x
        loc.on_odom(0.1 * k, float(k), 0.0, 0.0)
    P = np.asarray(loc._odom_path)
    assert len(P) == int(40.0 / ODOM_PATH_STEP_M) + 1 and np.allclose(np.diff(P[:, 0]), ODOM_PATH_STEP_M)
    assert P[-1, 0] == 98.0
    loc.on_odom(10.0, 5000.0, 0.0, 0.0)  # 4.9 km in 0.1 s: the odometry frame jumped
    assert list(loc._odom_path) == [(5000.0, 0.0)] and loc.stats()["drops"].get("odom.jump") == 1


def test_retrieval_alone_never_publishes_an_unverified_relocalisation_as_a_fix(drive_dir, encoder, index):
    """Without an orthophoto nothing can verify the global search's candidates: the seeded cloud is
    published as 'lost' with the reason, whatever it converges to."""
    from geoloc_ros.evaluation.replay import GnssEdit, replay_bag
    from geoloc_ros.pipeline import LocalizerConfig

    cfg = LocalizerConfig(min_seq_len=2, relocalise_after_s=0.5, relocalise_k=10)
    res = replay_bag(drive_dir / "bag", encoder, index, cfg, progress=False, gnss_edit=GnssEdit(remove=((0.0, 1e6),)))
    log = res.methods["corrected"]
    assert res.localizer_stats["corrected"]["relocalisations"] >= 1
    assert log.status and set(log.status) == {"lost"}, set(log.status)
    assert any("unverified relocalisation" in r for rs in log.reasons for r in rs)
