"""Training data export: layout, area/world splits that share no pixel, heading-up tiles, determinism."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from geoloc_ros.core.dataset import SPLITS, read_manifest, read_split
from geoloc_ros.core.errors import IncompatibleArtifact, InvalidArgument
from geoloc_ros.core.geo import heading_deg_to_yaw
from geoloc_ros.sim.dataset import DatasetConfig, export_dataset

CFG = DatasetConfig(seq_len=4, spacing_m=5.0, drives_per_world=3, drive_length_m=500.0, tile_m=40.0, tile_px=80,
                    heading_bins=8, cell_m=100.0, width=64, height=32, seed=3)


@pytest.fixture(scope="module")
def heldout_world():
    from geoloc_ros.sim.generate import generate_world

    return generate_world(seed=12, size_m=300.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, small_world, heldout_world):
    out = tmp_path_factory.mktemp("ds") / "d"
    export_dataset(out, [("w11", small_world)], [("w12", heldout_world)], CFG, progress=False)
    return out


def all_records(root):
    m = read_manifest(root)
    return {s: read_split(root, s) for s in SPLITS if s in m["splits"]}


def test_layout_manifest_and_files(dataset):
    m = read_manifest(dataset)
    assert m["seq_len"] == 4 and m["aerial"]["heading_bins"] == 8 and m["ground"]["width"] == 64
    recs = all_records(dataset)
    assert set(recs) >= {"train", "test_world"} and len(recs["train"]) > 20
    for split, rs in recs.items():
        assert m["splits"][split] == len(rs)
        for r in rs[::7]:
            assert r.split == split and len(r.frame_paths) == 4
            assert Image.open(dataset / r.aerial).size == (80, 80)
            assert all(Image.open(dataset / f).size == (64, 32) for f in r.frame_paths)
            assert abs(r.jitter_deg) <= 180.0 / 8


def test_keyframes_are_spaced_by_distance_travelled(dataset):
    import csv

    rows = list(csv.DictReader(open(dataset / "keyframes.csv")))
    by_drive = {}
    for r in rows:
        by_drive.setdefault(r["drive"], []).append(r)
    for kfs in by_drive.values():
        xy = np.array([[float(r["x"]), float(r["y"])] for r in kfs])
        step = np.hypot(*np.diff(xy, axis=0).T)
        assert np.all(np.diff([float(r["distance_m"]) for r in kfs]) == pytest.approx(5.0))
        assert np.all(step <= 5.0 + 2e-3) and np.median(step) > 4.9  # chords of a smooth path


def test_area_splits_share_no_aerial_pixel_and_worlds_stay_apart(dataset):
    recs = all_records(dataset)
    assert all(r.world == "w12" for r in recs["test_world"])
    half_diag = CFG.tile_m / math.sqrt(2)
    area = [s for s in ("train", "val", "test") if s in recs]
    assert len(area) >= 2, "the fixture should produce at least two area splits"
    for i, a in enumerate(area):
        assert all(r.world == "w11" for r in recs[a])
        pa = np.array([[r.x, r.y] for r in recs[a]])
        for b in area[i + 1:]:
            pb = np.array([[r.x, r.y] for r in recs[b]])
            d = np.hypot(pa[:, None, 0] - pb[None, :, 0], pa[:, None, 1] - pb[None, :, 1])
            assert d.min() >= 2 * half_diag  # tile circles of different splits never overlap


def test_aerial_tile_is_heading_up_at_the_recorded_true_heading(dataset, small_world):
    """10 m 'up' in the tile is 10 m along tile_heading_deg (true north based) in the orthophoto."""
    conv = small_world.frame.grid_convergence_deg()
    px_per_m = CFG.tile_px / CFG.tile_m

    def median_diff(offset_deg):
        diffs = []
        for r in read_split(dataset, "train")[::5]:
            tile = np.asarray(Image.open(dataset / r.aerial), float)
            yaw = heading_deg_to_yaw(r.tile_heading_deg + offset_deg - conv)
            for ahead, right in ((10.0, 0.0), (0.0, 8.0), (-12.0, -5.0), (6.0, 6.0)):
                x = r.x + ahead * math.cos(yaw) + right * math.sin(yaw)
                y = r.y + ahead * math.sin(yaw) - right * math.cos(yaw)
                rr, cc = small_world.xy_to_rc(x, y)
                ortho = small_world.ortho[int(rr) - 1:int(rr) + 2, int(cc) - 1:int(cc) + 2].reshape(-1, 3).mean(0)
                tr, tc = CFG.tile_px / 2 - ahead * px_per_m, CFG.tile_px / 2 + right * px_per_m
                t = tile[int(tr) - 1:int(tr) + 2, int(tc) - 1:int(tc) + 2].reshape(-1, 3).mean(0)
                diffs.append(np.abs(t - ortho).mean())
        return float(np.median(diffs))

    right = median_diff(0.0)
    assert right < 12.0
    # the check can tell orientations apart: a wrong heading (or a missed grid convergence) shows
    assert median_diff(90.0) > 2 * right
    assert median_diff(-2.0 * conv - 6.0) > right


def test_same_config_same_dataset(tmp_path, small_world, heldout_world, dataset):
    out = tmp_path / "again"
    export_dataset(out, [("w11", small_world)], [("w12", heldout_world)], CFG, progress=False)
    for split in read_manifest(dataset)["splits"]:
        assert (out / "splits" / f"{split}.csv").read_bytes() == (dataset / "splits" / f"{split}.csv").read_bytes()
    r = read_split(out, "train")[3]
    assert (out / r.aerial).read_bytes() == (dataset / r.aerial).read_bytes()
    assert (out / r.frame_paths[0]).read_bytes() == (dataset / r.frame_paths[0]).read_bytes()


def test_reader_refuses_what_is_not_a_dataset(tmp_path, dataset):
    with pytest.raises(IncompatibleArtifact, match="dataset.json is missing"):
        read_manifest(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"format": "geoloc-dataset", "format_version": 99}))
    with pytest.raises(IncompatibleArtifact, match="format_version 99"):
        read_manifest(tmp_path)
    with pytest.raises(IncompatibleArtifact, match="no split 'nope'"):
        read_split(dataset, "nope")


@pytest.mark.parametrize("kwargs, match", [
    ({"seq_len": 0}, "seq_len"), ({"cell_m": 50.0, "tile_m": 40.0}, "cell_m"),
    ({"fractions": (0.5, 0.5, 0.5)}, "fractions"), ({"hfov_deg": 200.0}, "FOV"),
    ({"drive_length_m": 10.0}, "shorter than one sequence"),
])
def test_invalid_config_is_refused(kwargs, match):
    with pytest.raises(InvalidArgument, match=match):
        DatasetConfig(**kwargs)


def test_cli_dataset_errors_are_clear_and_outputs_kept(tmp_path, capsys, small_world_dir):
    from geoloc_ros import cli

    assert cli.main(["sim", "dataset", "--out", str(tmp_path / "x")]) == 2
    assert "at least one --world" in capsys.readouterr().err
    out = tmp_path / "keep"
    out.mkdir()
    (out / "mine.txt").write_text("precious")
    assert cli.main(["sim", "dataset", "--world", str(small_world_dir), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "mine.txt").read_text() == "precious"
    assert cli.main(["sim", "dataset", "--world", str(tmp_path), "--out", str(tmp_path / "y")]) == 2
    assert "not a geoloc world" in capsys.readouterr().err


def test_cli_dataset_end_to_end(tmp_path, small_world_dir, capsys):
    from geoloc_ros import cli

    out = tmp_path / "ds"
    assert cli.main(["sim", "dataset", "--world", str(small_world_dir), "--out", str(out), "--drives-per-world", "1",
                     "--drive-length-m", "200", "--width", "64", "--height", "32", "--tile-m", "40", "--tile-px", "64",
                     "--cell-m", "100"]) == 0
    assert "dataset:" in capsys.readouterr().out
    m = read_manifest(out)
    assert m["command"].startswith("geoloc") and m["keyframes"] >= 40
    assert m["gap"]["camera_effects"] is True  # on by default (--no-camera-effects)
