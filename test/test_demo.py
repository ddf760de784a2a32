"""`geoloc demo` and `geoloc sim preview` end to end on a tiny configuration (real files, real bag)."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from geoloc_ros import cli


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    data = tmp_path_factory.mktemp("demo")
    assert cli.main(["demo", "--data", str(data), "--size-m", "400", "--duration-s", "6",
                     "--docs-images", str(data / "img")]) == 0
    return data


def test_demo_writes_world_drive_previews_and_docs_images(demo_run, capsys):
    world = demo_run / "world_s7_400m"
    drive = demo_run / "drive_s1_6s_world_s7_400m"
    assert (world / "world.json").is_file() and (world / "orthophoto.tif").is_file()
    assert (drive / "drive.json").is_file() and (drive / "bag" / "metadata.yaml").is_file()
    for name in ("drive_preview.png", "drive_preview_straight.png", "world_overview.png"):
        img = np.asarray(Image.open(demo_run / "img" / name))
        assert img.ndim == 3 and img.shape[0] >= 300 and img.std() > 20, name
    assert (demo_run / f"preview_{drive.name}.png").is_file()


def test_demo_rerun_reuses_cached_outputs_without_touching_them(demo_run, capsys):
    world_json = demo_run / "world_s7_400m" / "world.json"
    bag = next((demo_run / "drive_s1_6s_world_s7_400m" / "bag").glob("*.mcap"))
    before = (world_json.stat().st_mtime_ns, bag.stat().st_mtime_ns)
    capsys.readouterr()
    assert cli.main(["demo", "--data", str(demo_run), "--size-m", "400", "--duration-s", "6"]) == 0
    out = capsys.readouterr().out
    assert out.count("(cached)") == 2 and out.strip().splitlines()[-1].startswith("demo:")
    assert (world_json.stat().st_mtime_ns, bag.stat().st_mtime_ns) == before


def test_preview_shows_the_frames_of_the_bag(demo_run, tmp_path):
    out = tmp_path / "p.png"
    drive = demo_run / "drive_s1_6s_world_s7_400m"
    assert cli.main(["sim", "preview", "--drive", str(drive), "--out", str(out), "--frames", "2",
                     "--start-m", "0", "--span-m", "20"]) == 0
    img = np.asarray(Image.open(out))
    # right-hand panels: two frames of 256x128 scaled to half the 384 px map height
    assert img.shape[1] == 384 + 6 + 384 and img.shape[0] == 384 + 18
    from geoloc_ros.sim.bag import TOPIC_IMAGE, image_to_numpy, read_bag

    first = image_to_numpy(next(m for _, _, m in read_bag(drive / "bag", [TOPIC_IMAGE])))
    panel = np.asarray(Image.fromarray(first).resize((384, 190), Image.BILINEAR), float)
    shown = img[18:18 + 190, 390:390 + 384].astype(float)
    shown[:15, :17] = panel[:15, :17]  # the number badge
    assert np.abs(shown - panel).mean() < 2.0


def test_preview_errors_are_clear_and_nothing_is_overwritten(demo_run, tmp_path, capsys):
    drive = demo_run / "drive_s1_6s_world_s7_400m"
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
