"""Bag replay evaluation on a real (tiny) chain: generated world -> `geoloc sim drive` rosbag2 (the
suite's shared drive, its first 6 s copied to MCAP and to sqlite3) -> tile index built with the
shipped model -> replay through the real Localizer."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _shared import copy_bag

from geoloc_ros.core.errors import InvalidArgument, OutputExists

DRIVE_S = 6.0  # the first seconds of conftest's shared drive


@pytest.fixture(scope="module")
def drives(drive_dir, tmp_path_factory):
    """The first 6 s of the shared drive as two drive folders (drive.json, truth.csv and the bag), one
    MCAP and one sqlite3, holding the same messages."""
    root = tmp_path_factory.mktemp("eval_drives")
    out = {}
    for storage in ("mcap", "sqlite3"):
        d = root / f"drive_{storage}"
        d.mkdir()
        for name in ("drive.json", "truth.csv"):
            shutil.copy(drive_dir / name, d / name)
        copy_bag(drive_dir / "bag", d / "bag", storage=storage, first_s=DRIVE_S)
        out[storage] = d
    return out


def _replay(bag, encoder, index, **kw):
    from geoloc_ros.evaluation.replay import replay_bag
    from geoloc_ros.pipeline import LocalizerConfig

    return replay_bag(bag, encoder, index, LocalizerConfig(), progress=False, **kw)


def _strip_timing(m):
    """Metrics without wall-clock quantities (compute time per keyframe)."""
    m = json.loads(json.dumps(m))
    for meth in m["methods"].values():
        meth.pop("compute_ms", None)
    return m


def _published(res):
    return {k: (np.asarray(v.t), np.asarray(v.x), np.asarray(v.y), np.asarray(v.cov), list(v.status))
            for k, v in res.methods.items()}


def _assert_same(a, b):
    assert _strip_timing(a.metrics) == _strip_timing(b.metrics)
    pa, pb = _published(a), _published(b)
    for k in pa:
        for x, y in zip(pa[k], pb[k]):
            if isinstance(x, list):
                assert x == y
            else:
                np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def mcap_result(drives, encoder, index):
    return _replay(drives["mcap"] / "bag", encoder, index)


def test_replay_evaluates_three_methods_against_truth(mcap_result, drives):
    res = mcap_result
    m = res.metrics["methods"]
    n_fix = res.bag_topics["/gnss/fix"][1]
    assert res.counts == {"image": res.bag_topics["/camera/image_raw"][1], "fix": n_fix,
                          "odom": res.bag_topics["/odom"][1], "gt": res.bag_topics["/gnss/fix_truth"][1]}
    assert res.partial is None and res.truth is not None and not res.drops
    assert set(res.skipped_topics) == {"/tf", "/tf_static", "/camera/camera_info", "/camera/image_raw/compressed",
                                      "/imu/data"}
    # raw GNSS: one sample per usable fix; its error is what the simulator put in (sub-10 m here)
    assert 0 < len(res.methods["raw"]) <= n_fix
    for k in ("raw", "baseline", "corrected"):
        e = m[k]["error_m"]
        assert e["n"] > 0 and 0.0 < e["median"] < 15.0
        assert m[k]["covariance"]["n"] > 0
    # the baseline never uses the camera; the corrected output ran its encoder at every keyframe
    assert m["corrected"]["keyframes"] > 3 and m["corrected"]["compute_ms"]["n"] == m["corrected"]["keyframes"]
    assert res.localizer_stats["baseline"]["matches_attempted"] == 0
    assert res.localizer_stats["corrected"]["keyframes"] == m["corrected"]["keyframes"]
    assert res.metrics["recall"]["n"] > 0 and res.metrics["recall"]["radius_m"] > 0
    assert set(res.metrics["improvement"]) == {"corrected_vs_raw", "corrected_vs_baseline", "baseline_vs_raw"}
    # the raw error matches an independent computation from the bag's own truth topic
    from geoloc_ros.bag import read_bag

    truth = {t: (msg.latitude, msg.longitude) for _, t, msg in read_bag(drives["mcap"] / "bag", ["/gnss/fix_truth"])}
    fixes = [(t, msg.latitude, msg.longitude) for _, t, msg in read_bag(drives["mcap"] / "bag", ["/gnss/fix"])
             if msg.status.status >= 0 and np.isfinite(msg.latitude)]
    errs = []
    for t, lat, lon in fixes:
        x0, y0 = res.frame.from_latlon(lat, lon)
        x1, y1 = res.frame.from_latlon(*truth[t])
        errs.append(float(np.hypot(x0 - x1, y0 - y1)))
    assert m["raw"]["error_m"]["median"] == pytest.approx(float(np.median(errs)), abs=1e-6)
    assert res.timing["speedup_total"] > 0 and res.duration_s == pytest.approx(DRIVE_S - 0.02, abs=0.1)


def test_replay_is_deterministic(mcap_result, drives, encoder, index):
    _assert_same(mcap_result, _replay(drives["mcap"] / "bag", encoder, index))


def test_sqlite3_and_mcap_inputs_give_identical_results(mcap_result, drives, encoder, index):
    res = _replay(drives["sqlite3"] / "bag", encoder, index)
    assert res.storage == "sqlite3" and mcap_result.storage == "mcap"
    _assert_same(mcap_result, res)


def test_cli_writes_the_run_directory_and_refuses_to_overwrite(drives, index_dir, tmp_path, capsys):
    from geoloc_ros.bag import read_bag
    from geoloc_ros.evaluation.replay import read_estimates_csv
    from geoloc_ros.tools import eval_compare, eval_replay

    argv = [str(drives["mcap"] / "bag"), "--index", str(index_dir), "--model", "seqgeo_lite", "--backend", "torch",
            "--out", str(tmp_path / "runs")]
    run = eval_replay.main(argv)
    assert run.parent == tmp_path / "runs" and run.name.startswith("drive_mcap__seqgeo_lite-")
    assert run.name.endswith("__default")
    for f in ("metrics.json", "estimates.csv", "report.md", "trajectory.png", "error_over_time.png",
              "error_cdf.png"):
        assert (run / f).is_file() and (run / f).stat().st_size > 0, f
    for f in ("trajectory.png", "error_over_time.png", "error_cdf.png"):
        assert (run / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((run / "metrics.json").read_text())
    assert doc["format"] == "geoloc-eval-run" and doc["command"].startswith("geoloc")
    assert doc["model"]["preset"] == "seqgeo_lite" and doc["bag"]["storage"] == "mcap"
    report = (run / "report.md").read_text()
    assert "![trajectory](trajectory.png)" in report and "| median error (m) |" in report
    assert doc["command"] in report
    # estimates.csv <-> the estimates bag of published topics (read by rosbags and by the mcap library)
    est = read_estimates_csv(run / "estimates.csv")
    assert set(est) == {"raw", "baseline", "corrected"}
    usable = np.isin(est["corrected"]["status"].astype(str), ["tracking", "degraded"])
    assert np.nanmedian(est["corrected"]["error_m"][usable]) == pytest.approx(
        doc["metrics"]["methods"]["corrected"]["error_m"]["median"], abs=1e-3)
    msgs = list(read_bag(run / "estimates"))
    by_topic = {}
    for topic, _, msg in msgs:
        by_topic.setdefault(topic, []).append(msg)
    assert len(by_topic["/geoloc/fix"]) == len(by_topic["/geoloc/pose"]) == len(est["corrected"]["t"])
    assert len(by_topic["/geoloc_baseline/pose"]) == len(est["baseline"]["t"])
    assert len(by_topic["/gnss/fix"]) == len(est["raw"]["t"])
    p0 = by_topic["/geoloc/pose"][0]
    assert p0.header.frame_id == "map" and p0.pose.pose.position.x == pytest.approx(est["corrected"]["x"][0], abs=1e-3)
    from mcap.reader import make_reader

    (mcap_file,) = (run / "estimates").glob("*.mcap")
    with open(mcap_file, "rb") as f:
        n = sum(1 for _ in make_reader(f).iter_messages())
    assert n == len(msgs)
    # the published fixes read back as a track give the run's metrics (how `geoloc demo` compares the node)
    from geoloc_ros.evaluation import metrics as M
    from geoloc_ros.evaluation.replay import read_track
    from geoloc_ros.index import TileIndex

    frame = TileIndex.open(index_dir).frame
    tr = read_track(run / "estimates", "/geoloc/fix", frame)
    truth = read_track(run / "estimates", "/gnss/fix_truth", frame)
    back = M.evaluate_track(tr, M.Truth(truth.t, truth.x, truth.y), t_start=doc["bag"]["t_start"],
                            t_end=doc["bag"]["t_end"])
    ref = doc["metrics"]["methods"]["corrected"]
    assert back["error_m"]["n"] == ref["error_m"]["n"]
    assert back["error_m"]["median"] == pytest.approx(ref["error_m"]["median"], abs=2e-3)
    assert back["covariance"]["nees_mean"] == pytest.approx(ref["covariance"]["nees_mean"], rel=1e-2)
    with pytest.raises(InvalidArgument, match="no topic /nope"):
        read_track(run / "estimates", "/nope", frame)
    # never overwrite without --force (checked before the replay); --force replaces
    stamp = (run / "metrics.json").stat().st_mtime_ns
    with pytest.raises(OutputExists, match="--force"):
        eval_replay.main(argv)
    assert (run / "metrics.json").stat().st_mtime_ns == stamp
    capsys.readouterr()
    # compare: one column per run
    out = eval_compare.main([str(run), str(run), "--out", str(tmp_path / "cmp.md")])
    text = capsys.readouterr().out
    assert "corrected median error (m)" in text and "run 2" in text
    assert "| corrected median error (m) |" in out.read_text()
    with pytest.raises(OutputExists):
        eval_compare.main([str(run), "--out", str(out)])
    with pytest.raises(Exception, match="not a run directory"):
        eval_compare.main([str(tmp_path / "nothing")])


# ---------------------------------------------------------------------------------------
# bad input: bags rewritten from the drive bag with rosbags (raw copies, real files)


def test_bag_without_ground_truth_runs_and_says_what_it_cannot_compute(drives, encoder, index, tmp_path):
    from geoloc_ros.evaluation.replay import write_run

    bag = copy_bag(drives["mcap"] / "bag", tmp_path / "nogt", drop=("/gnss/fix_truth",), extra_topic="/blob")
    res = _replay(bag, encoder, index)
    assert res.truth is None and res.gt_topic is None
    assert any("no ground truth" in n for n in res.topics["notes"])
    nc = " ".join(res.metrics["not_computed"])
    for what in ("horizontal error", "covariance honesty", "recall@K"):
        assert what in nc
    assert "error_m" not in res.metrics["methods"]["corrected"]
    assert res.metrics["methods"]["corrected"]["availability"]["available_pct"] > 0
    assert len(res.methods["corrected"]) > 0
    # the unknown message type is skipped and listed, not fatal
    assert "my_msgs/msg/Blob" in res.skipped_topics["/blob"]
    run = write_run(res, tmp_path / "runs")
    doc = json.loads((run / "metrics.json").read_text())
    # no truth: no error pictures; the trajectory and the camera at work (verdicts, mask, self-calibration) remain
    assert doc["pictures"] == {"trajectory": "trajectory.png", "camera": "camera_integrity.png"}
    assert not (run / "error_cdf.png").exists()
    assert "not computed: horizontal error" in (run / "report.md").read_text()
    # a needed topic of an unknown type is a clear error
    with pytest.raises(InvalidArgument, match="my_msgs/msg/Blob, not a sensor_msgs/msg/NavSatFix"):
        _replay(bag, encoder, index, fix_topic="/blob")


def test_compressed_camera_topic_is_used_when_it_is_the_only_one(mcap_result, drives, encoder, index, tmp_path):
    bag = copy_bag(drives["mcap"] / "bag", tmp_path / "jpeg", drop=("/camera/image_raw",))
    res = _replay(bag, encoder, index)
    assert res.topics["image"] == "/camera/image_raw/compressed"
    assert res.topics["image_type"] == "sensor_msgs/msg/CompressedImage"
    assert res.counts["image"] == mcap_result.counts["image"] and not res.drops
    assert res.metrics["methods"]["corrected"]["keyframes"] == mcap_result.metrics["methods"]["corrected"]["keyframes"]
    with pytest.raises(InvalidArgument, match="not a sensor_msgs/Image or CompressedImage"):
        _replay(bag, encoder, index, image_topic="/gnss/fix")


def test_bag_without_camera_is_a_clear_error(drives, encoder, index, tmp_path):
    bag = copy_bag(drives["mcap"] / "bag", tmp_path / "nocam",
                    drop=("/camera/image_raw", "/camera/image_raw/compressed"))
    with pytest.raises(InvalidArgument, match="no camera topic"):
        _replay(bag, encoder, index)


def test_truncated_mcap_gives_a_partial_evaluation_that_says_so(drives, encoder, index, tmp_path):
    bag = tmp_path / "trunc"
    shutil.copytree(drives["mcap"] / "bag", bag)
    (f,) = bag.glob("*.mcap")
    f.write_bytes(f.read_bytes()[: int(f.stat().st_size * 0.6)])
    res = _replay(bag, encoder, index)
    assert res.partial is not None and "truncated" in res.partial
    full = res.bag_topics  # what the readable part holds
    assert 0 < res.counts["image"] < 60 and res.counts["image"] == full["/camera/image_raw"][1]
    assert res.duration_s < DRIVE_S - 1.0
    assert res.metrics["methods"]["raw"]["error_m"]["n"] > 0


def test_truncated_sqlite3_and_missing_bag_are_clear_errors(drives, encoder, index, tmp_path):
    bag = tmp_path / "trunc_sql"
    shutil.copytree(drives["sqlite3"] / "bag", bag)
    (f,) = bag.glob("*.db3")
    f.write_bytes(f.read_bytes()[: int(f.stat().st_size * 0.5)])
    with pytest.raises(InvalidArgument, match="damaged or truncated"):
        _replay(bag, encoder, index)
    with pytest.raises(InvalidArgument, match="does not exist"):
        _replay(tmp_path / "nope", encoder, index)


def test_ground_truth_from_an_odometry_in_the_map_frame_gives_the_same_errors(mcap_result, drives, encoder, index,
                                                                             tmp_path):
    """The NavSatFix truth rewritten as nav_msgs/Odometry in the map frame (index datum): same metrics."""
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer

    from geoloc_ros.bag import typestore

    ts = typestore()
    T = ts.types
    dst = tmp_path / "odomgt"
    with Reader(drives["mcap"] / "bag") as r, Writer(dst, version=8, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {c.id: w.add_connection(c.topic, c.msgtype, typestore=ts) for c in r.connections
                 if c.topic != "/gnss/fix_truth"}
        oc = w.add_connection("/odom_truth", "nav_msgs/msg/Odometry", typestore=ts)
        for c, t, raw in r.messages():
            if c.id in conns:
                w.write(conns[c.id], t, raw)
                continue
            fix = ts.deserialize_cdr(raw, c.msgtype)
            x, y = index.frame.from_latlon(fix.latitude, fix.longitude)
            odo = T["nav_msgs/msg/Odometry"](
                header=fix.header, child_frame_id="base_link",
                pose=T["geometry_msgs/msg/PoseWithCovariance"](
                    pose=T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=float(x), y=float(y),
                                                                                           z=0.0),
                                                     orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0,
                                                                                                   w=1.0)),
                    covariance=np.zeros(36)),
                twist=T["geometry_msgs/msg/TwistWithCovariance"](
                    twist=T["geometry_msgs/msg/Twist"](linear=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0),
                                                       angular=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)),
                    covariance=np.zeros(36)))
            w.write(oc, t, ts.serialize_cdr(odo, "nav_msgs/msg/Odometry"))
    res = _replay(dst, encoder, index, gt_topic="/odom_truth")
    assert res.topics["gt_type"] == "nav_msgs/msg/Odometry"
    for k in ("raw", "baseline", "corrected"):
        a, b = res.metrics["methods"][k]["error_m"], mcap_result.metrics["methods"][k]["error_m"]
        for stat in ("n", "mean", "median", "p95", "max"):
            assert a[stat] == pytest.approx(b[stat], abs=1e-6)


def test_eval_replay_takes_the_drive_folder_and_a_single_bag_file(drives, index_dir, tmp_path, capsys):
    """`geoloc eval replay D` on the folder `geoloc sim drive --out D` wrote (as `geoloc play D` does),
    and on a lone .db3 file copied out of its bag folder: the same numbers as the bag folder."""
    from geoloc_ros.tools import eval_replay

    # the orthophoto named explicitly: a drive folder would find its world by itself, a lone file cannot
    world = Path(json.loads((drives["sqlite3"] / "drive.json").read_text())["world"]["path"])

    def run(bag, name):
        out = eval_replay.main([str(bag), "--index", str(index_dir), "--model", "seqgeo_lite", "--backend", "torch",
                                "--ortho", str(world / "orthophoto.tif"), "--out", str(tmp_path / name)])
        return json.loads((out / "metrics.json").read_text())["metrics"]["methods"]["corrected"]["error_m"]

    lone = tmp_path / "lone.db3"
    (db3,) = (drives["sqlite3"] / "bag").glob("*.db3")
    shutil.copy(db3, lone)
    from_drive, from_file = run(drives["sqlite3"], "drive"), run(lone, "file")
    assert from_drive["n"] > 0 and from_drive == from_file
