"""The evaluation protocol (bench/heldout.yaml): what it declares, and the tools that must refuse its held-out towns."""
import json
from pathlib import Path

import pytest

from geoloc_ros.core.errors import IncompatibleArtifact, InvalidArgument
from geoloc_ros.evaluation.protocol import load_protocol, refuse_heldout
from geoloc_ros.sim.conditions import PRESETS

REPO = Path(__file__).resolve().parents[1]


def test_the_shipped_protocol_holds_at_least_12_heldout_drives_in_4_towns_over_every_preset():
    p = load_protocol(REPO / "bench" / "heldout.yaml")
    assert len(p.drives) >= 12 and len({d.town for d in p.drives}) >= 4
    assert all(d.duration_s >= 90 for d in p.drives)
    # each drive its own route and its own GNSS noise
    assert len({d.drive_seed for d in p.drives}) == len(p.drives)
    assert len({d.gnss_seed for d in p.drives}) == len(p.drives)
    assert {d.preset for d in p.drives} == set(PRESETS)
    # no town in two roles, and towns that chose defaults before the protocol are never held out
    assert not set(p.heldout_towns) & (set(p.training) | set(p.validation))
    assert {8, 11} <= set(p.validation)
    assert p.validation_drives and all(d.town in p.validation for d in p.validation_drives)


def test_the_demo_runs_in_a_heldout_town():
    from geoloc_ros.tools import demo

    ns = demo.parse_with(demo.register, ["demo"])
    assert load_protocol().role(ns.world_seed) == "heldout"


def _write(tmp_path, **doc):
    import yaml

    base = {"format": "geoloc-heldout-protocol", "format_version": 1, "training": [1], "validation": [2],
            "heldout_towns": [3], "drives": [{"town": 3, "preset": "clear", "drive_seed": 1, "gnss_seed": 2}]}
    base.update(doc)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def test_a_protocol_with_a_town_in_two_roles_or_a_misplaced_drive_is_refused(tmp_path):
    with pytest.raises(InvalidArgument, match="both"):
        load_protocol(_write(tmp_path, validation=[2, 3]))
    with pytest.raises(InvalidArgument, match="not one of"):
        load_protocol(_write(tmp_path, drives=[{"town": 2, "preset": "clear", "drive_seed": 1, "gnss_seed": 2}]))
    with pytest.raises(InvalidArgument, match="preset"):
        load_protocol(_write(tmp_path, drives=[{"town": 3, "preset": "sunny", "drive_seed": 1, "gnss_seed": 2}]))
    with pytest.raises(IncompatibleArtifact, match="format_version"):
        load_protocol(_write(tmp_path, format_version=9))
    with pytest.raises(InvalidArgument, match="does not exist"):
        load_protocol(tmp_path / "missing.yaml")


def test_refusal_names_the_input_and_the_file_and_lets_other_towns_pass():
    p = load_protocol()
    refuse_heldout([("w7", p.training[0]), ("w8", p.validation[0]), ("outside", None)], "x", protocol=p)
    with pytest.raises(InvalidArgument, match=r"geoloc train refuses held-out towns .*heldout.yaml: my/world \(town"):
        refuse_heldout([("my/world", p.heldout_towns[0])], "geoloc train", protocol=p)


def test_geoloc_train_refuses_a_dataset_from_a_heldout_town(tmp_path, capsys):
    from geoloc_ros import cli

    held = load_protocol().heldout_towns[-1]
    data = tmp_path / "ds"
    data.mkdir()
    (data / "dataset.json").write_text(json.dumps({"worlds": [{"name": "a", "seed": 7}, {"name": "b", "seed": held}]}))
    assert cli.main(["train", "--data", str(data), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "geoloc train refuses held-out towns" in err and f"world 'b' (town {held})" in err
    assert not (tmp_path / "run").exists()


def test_eval_calibrate_refuses_a_drive_in_a_heldout_town_before_replaying_anything(tmp_path, capsys):
    from geoloc_ros import cli
    from geoloc_ros.sim.bag import DRIVE_FORMAT, DRIVE_FORMAT_VERSION

    held = load_protocol().heldout_towns[0]
    world = tmp_path / "world"
    world.mkdir()
    (world / "world.json").write_text(json.dumps({"seed": held}))
    (world / "orthophoto.tif").write_bytes(b"")
    drive = tmp_path / "drive"
    (drive / "bag").mkdir(parents=True)
    (drive / "bag" / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    (drive / "drive.json").write_text(json.dumps({"format": DRIVE_FORMAT, "format_version": DRIVE_FORMAT_VERSION,
                                                  "world": {"seed": held, "path": str(world)}}))
    assert cli.main(["eval", "calibrate", str(drive), "--out", str(tmp_path / "cal.yaml")]) == 2
    err = capsys.readouterr().err
    assert "geoloc eval calibrate refuses held-out towns" in err and f"(town {held})" in err
    assert not (tmp_path / "cal.yaml").exists()
