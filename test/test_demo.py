"""`geoloc demo` and `geoloc sim preview` end to end on a tiny configuration: real files, real bag,
real tile index (shipped model), the replay through the Localizer and, when rclpy is installed, the
same drive through geoloc_node over Fast DDS."""
from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest
from PIL import Image

from geoloc_ros import cli


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from _shared import ros_domain

    data = tmp_path_factory.mktemp("demo")
    mp = pytest.MonkeyPatch()
    mp.setenv("ROS_DOMAIN_ID", str(ros_domain()))  # the node run of the demo: a domain no other test uses
    try:
        assert cli.main(["demo", "--data", str(data), "--world-seed", "7", *SMALL, "--docs-images", str(data / "img")]) == 0
    finally:
        mp.undo()
    return data


# a tiny town, a short drive, a coarse index of the roads near it, torch (no export step). 12 s: the
# learned pair's first volumes on this small town are ambiguous (runner-up 0.6-0.98) and its peaks must
# follow the odometry through probation before the camera is used (6 s: never; 12 s: 6 of 15 keyframes)
SMALL = ["--size-m", "400", "--duration-s", "12", "--backend", "torch", "--spacing", "12", "--corridor-width", "6",
         "--roads-within", "15"]
HAVE_RCLPY = importlib.util.find_spec("rclpy") is not None


def test_demo_writes_world_drive_previews_and_docs_images(demo_run, capsys):
    world = demo_run / "world_s7_400m"
    drive = demo_run / "drive_s1_12s_world_s7_400m"
    assert (world / "world.json").is_file() and (world / "orthophoto.tif").is_file()
    assert (drive / "drive.json").is_file() and (drive / "bag" / "metadata.yaml").is_file()
    for name in ("drive_preview.png", "drive_preview_straight.png", "world_overview.png", "survey_gap.png"):
        img = np.asarray(Image.open(demo_run / "img" / name))
        assert img.ndim == 3 and img.shape[0] >= 250 and img.std() > 20, name
    assert (demo_run / f"preview_{drive.name}.png").is_file()
    # the demo runs with the whole simulation gap: survey, terrain, attitude, realistic camera
    wm = json.loads((world / "world.json").read_text())
    assert len(wm["survey"]["parts"]) == 7 and wm["terrain"]["max_grade"] > 0
    dm = json.loads((drive / "drive.json").read_text())
    assert (dm["camera"]["width"], dm["camera"]["height"]) == (512, 288) and dm["camera"]["sensor"]
    assert dm["stats"]["attitude"]["pitch_deg_max"] > 0.1 and dm["survey_gap"]["misregistration"]


def test_demo_replays_the_drive_and_writes_a_report(demo_run, capsys):
    runs = [r for r in (demo_run / "runs").iterdir() if "drive_hard_" not in r.name]
    assert len(runs) == 1
    doc = json.loads((runs[0] / "metrics.json").read_text())
    m = doc["metrics"]["methods"]
    for method in ("raw", "baseline", "corrected"):
        assert m[method]["error_m"]["n"] > 10, method
        assert m[method]["error_m"]["median"] < 15.0, method  # a 6 s drive: GNSS noise of a few metres
    assert doc["localizer_stats"]["corrected"]["keyframes"] >= 3
    # the camera's measurement is metric matching on the orthophoto: its peaks were scored and used
    cam = doc["metrics"]["camera"]
    assert cam["keyframes"] >= 3 and cam["used_pct"] > 0
    assert doc["localizer_stats"]["corrected"]["matches_used"] >= 1
    assert np.asarray(Image.open(runs[0] / "camera_bev.png")).std() > 10
    report = (runs[0] / "report.md").read_text()
    assert "geoloc demo" in report and "trajectory.png" in report
    for name in ("demo_trajectory.png", "demo_error_over_time.png", "demo_error_cdf.png"):
        assert np.asarray(Image.open(demo_run / "img" / name)).std() > 10, name
    index = [p for p in demo_run.iterdir() if p.name.startswith("index_")]
    assert len(index) == 1 and json.loads((index[0] / "manifest.json").read_text())["model"]["preset"] == "seqgeo_lite"


@pytest.mark.skipif(not HAVE_RCLPY, reason="rclpy not installed (pip install .[ros]): the node step is skipped")
def test_demo_ran_the_same_drive_through_the_node_over_dds(demo_run):
    rec = next((demo_run / "node_runs").iterdir())
    counts = json.loads((rec / "recorded.json").read_text())["counts"]
    assert counts["/geoloc/fix"] > 10 and counts["/diagnostics"] >= 2
    debug = np.asarray(Image.open(rec / "debug_image.png"))  # the node drew it while the recorder listened
    assert debug.ndim == 3 and debug.shape[0] == debug.shape[1] >= 64 and debug.std() > 10
    from geoloc_ros.evaluation.live import compare_with_replay

    cmp = compare_with_replay(rec / "recorded", demo_run / "runs" / rec.name,
                              demo_run / "drive_s1_12s_world_s7_400m" / "bag")
    assert cmp["node_median_m"] < 15.0 and cmp["node_vs_replay_median_m"] < 10.0
    # on a domain outside tools can join (printed by the demo), inside the range ROS advises on Linux
    rec_doc = json.loads((rec / "recorded.json").read_text())
    assert 0 <= rec_doc["domain"] <= 101 and rec_doc["domain_from"]


def test_the_demo_node_honours_ros_domain_id_and_otherwise_stays_in_0_101(monkeypatch, tmp_path):
    from geoloc_ros.core.errors import InvalidArgument
    from geoloc_ros.evaluation.live import isolated_env, pick_domain

    monkeypatch.setenv("ROS_DOMAIN_ID", "42")
    assert pick_domain() == (42, "ROS_DOMAIN_ID")
    assert isolated_env(tmp_path)["ROS_DOMAIN_ID"] == "42"
    monkeypatch.setenv("ROS_DOMAIN_ID", "car")
    with pytest.raises(InvalidArgument, match="not a domain id"):
        pick_domain()
    monkeypatch.delenv("ROS_DOMAIN_ID")
    doms = {int(isolated_env(tmp_path)["ROS_DOMAIN_ID"]) for _ in range(300)}
    assert min(doms) >= 1 and max(doms) <= 101 and len(doms) > 50
    env = isolated_env(tmp_path, domain=7)
    assert env["ROS_DOMAIN_ID"] == "7" and env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"


def test_demo_rerun_reuses_cached_outputs_without_touching_them(demo_run, capsys):
    world_json = demo_run / "world_s7_400m" / "world.json"
    bag = next((demo_run / "drive_s1_12s_world_s7_400m" / "bag").glob("*.mcap"))
    index_manifest = next(demo_run.glob("index_*/manifest.json"))
    before = (world_json.stat().st_mtime_ns, bag.stat().st_mtime_ns, index_manifest.stat().st_mtime_ns)
    capsys.readouterr()
    assert cli.main(["demo", "--data", str(demo_run), "--world-seed", "7", *SMALL, "--node", "no"]) == 0
    out = capsys.readouterr().out
    assert out.count("(cached)") == 4 and out.strip().splitlines()[-1].startswith("demo:")
    assert "median error raw GNSS" in out.strip().splitlines()[-1]
    assert (world_json.stat().st_mtime_ns, bag.stat().st_mtime_ns, index_manifest.stat().st_mtime_ns) == before


def test_preview_shows_the_frames_of_the_bag(demo_run, tmp_path):
    out = tmp_path / "p.png"
    drive = demo_run / "drive_s1_12s_world_s7_400m"
    assert cli.main(["sim", "preview", "--drive", str(drive), "--out", str(out), "--frames", "2",
                     "--start-m", "0", "--span-m", "20"]) == 0
    img = np.asarray(Image.open(out))
    # right-hand panels: two frames (512x288 by default) scaled to half the 384 px map height
    from geoloc_ros.bag import read_bag
    from geoloc_ros.core.images import msg_to_rgb
    from geoloc_ros.sim.bag import TOPIC_IMAGE

    first = msg_to_rgb(next(m for _, _, m in read_bag(drive / "bag", [TOPIC_IMAGE])))
    pw = img.shape[1] - (384 + 6)
    assert pw == round(384 // 2 * first.shape[1] / first.shape[0]) and img.shape[0] == 384 + 18
    panel = np.asarray(Image.fromarray(first).resize((pw, 190), Image.BILINEAR), float)
    shown = img[18:18 + 190, 390:390 + pw].astype(float)
    shown[:15, :17] = panel[:15, :17]  # the number badge
    assert np.abs(shown - panel).mean() < 2.0


def test_preview_errors_are_clear_and_nothing_is_overwritten(demo_run, tmp_path, capsys):
    drive = demo_run / "drive_s1_12s_world_s7_400m"
    assert cli.main(["sim", "preview", "--drive", str(tmp_path), "--out", str(tmp_path / "a.png")]) == 2
    assert "not a drive" in capsys.readouterr().err
    keep = tmp_path / "keep.png"
    keep.write_bytes(b"mine")
    assert cli.main(["sim", "preview", "--drive", str(drive), "--out", str(keep)]) == 2
    assert "--force" in capsys.readouterr().err and keep.read_bytes() == b"mine"
    assert cli.main(["sim", "preview", "--drive", str(drive), "--out", str(tmp_path / "a.jpg")]) == 2
    assert ".png" in capsys.readouterr().err
    other = demo_run / "other_world"
    assert cli.main(["sim", "world", "--out", str(other), "--seed", "3", "--size-m", "200"]) == 0
    assert cli.main(["sim", "preview", "--drive", str(drive), "--world", str(other),
                     "--out", str(tmp_path / "b.png")]) == 2
    assert "is not the world of this drive" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "b.png")


def test_demo_replays_a_second_drive_under_hard_conditions_with_the_camera_picture(demo_run):
    """The --hard drive (dusk, rain, traffic, changed markings, pitch published 2 deg off): made with
    those conditions, replayed, its camera picture (gate, mask, self-calibration) written and copied."""
    (hard,) = [r for r in (demo_run / "runs").iterdir() if "drive_hard_" in r.name]
    (drive,) = [d for d in demo_run.iterdir() if d.name.startswith("drive_hard_")]
    cond = json.loads((drive / "drive.json").read_text())["conditions"]
    assert cond["time_of_day"] == "dusk" and cond["weather"] == "rain" and cond["traffic"] == 25
    assert cond["calib"]["pitch_deg"] == 2.0
    doc = json.loads((hard / "metrics.json").read_text())
    assert doc["localizer_stats"]["corrected"]["keyframes"] >= 3
    assert "integrity" in doc["localizer_stats"]["corrected"]["camera"]
    for png in (hard / "camera_integrity.png", demo_run / "img" / "demo_hard_camera_integrity.png"):
        assert np.asarray(Image.open(png)).std() > 10, png
    # camera.csv: one row per keyframe, its verdicts those the integrity monitor counted
    import csv

    with open(hard / "camera.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == doc["localizer_stats"]["corrected"]["keyframes"]
    judged = [r for r in rows if r["verdict"] != "not measured"]
    counted = doc["localizer_stats"]["corrected"]["camera"]["verdicts"]
    assert {k: sum(r["verdict"] == k for r in judged) for k in counted} == counted and len(judged) == sum(counted.values())
    assert all(r["trust"] in ("probation", "trusted", "suspect") and r["reason"] for r in judged)
    assert sum(int(r["used"]) for r in rows) == doc["localizer_stats"]["corrected"]["matches_used"]
