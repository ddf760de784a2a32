"""Every command that takes a bag takes the same things (core.bagpath.resolve_bag): a rosbag2
folder, a drive folder holding one in bag/, or a single .mcap/.db3 file. The commands themselves
are run on real bags in test_eval_replay.py (eval replay) and test_ros_node.py (play)."""
from __future__ import annotations

import pytest

from geoloc_ros.core.bagpath import resolve_bag
from geoloc_ros.core.errors import InvalidArgument


def _bag(folder, storage="bag.mcap"):
    folder.mkdir(parents=True)
    (folder / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    (folder / storage).write_bytes(b"x")
    return folder


def test_a_bag_folder_a_drive_folder_and_a_single_file_all_resolve(tmp_path):
    bag = _bag(tmp_path / "drive" / "bag")
    assert resolve_bag(bag) == bag
    assert resolve_bag(tmp_path / "drive") == bag  # what `geoloc sim drive --out D` writes
    assert resolve_bag(bag / "bag.mcap") == bag / "bag.mcap"
    assert resolve_bag(bag / "metadata.yaml") == bag
    lone = tmp_path / "lone.db3"
    lone.write_bytes(b"x")
    assert resolve_bag(lone) == lone
    only = tmp_path / "only"  # a folder with one storage file and no metadata.yaml
    only.mkdir()
    (only / "rec_0.mcap").write_bytes(b"x")
    assert resolve_bag(only) == only / "rec_0.mcap"
    assert resolve_bag(str(tmp_path / "drive")) == bag


def test_what_is_not_a_bag_is_refused_with_what_would_be(tmp_path):
    with pytest.raises(InvalidArgument, match="does not exist"):
        resolve_bag(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidArgument, match="drive folder holding one in bag/"):
        resolve_bag(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InvalidArgument, match="single .mcap/.db3 file"):
        resolve_bag(tmp_path / "notes.txt")
    two = tmp_path / "two"
    two.mkdir()
    (two / "a.mcap").write_bytes(b"x")
    (two / "b.mcap").write_bytes(b"x")
    with pytest.raises(InvalidArgument, match="holds 2 bag files"):
        resolve_bag(two)
