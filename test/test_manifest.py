"""core.manifest: model identities, atomic JSON, format checks; core.outputs: the --force rule
for output folders and files."""
from __future__ import annotations

import json

import pytest

from geoloc_ros.core.errors import IncompatibleArtifact, InvalidArgument, OutputExists
from geoloc_ros.core.manifest import check_same_model, model_identity, read_manifest, write_json_atomic
from geoloc_ros.core.outputs import check_output_dir, check_output_file, prepare_output_dir

CKPT = {"format": "geoloc-checkpoint", "preset": "seqgeo_lite", "fingerprint": "ab" * 32, "dim": 512}


def test_identity_from_checkpoint_and_nested_manifests():
    ident = model_identity(CKPT)
    assert ident == {"preset": "seqgeo_lite", "fingerprint": "ab" * 32, "dim": 512}
    assert model_identity({"format": "geoloc-tile-index", "model": ident}) == ident
    with pytest.raises(IncompatibleArtifact, match="fingerprint"):
        model_identity({"preset": "x", "dim": 3})


def test_mismatch_names_what_differs_and_how_to_rebuild():
    check_same_model(CKPT, {"model": model_identity(CKPT)}, what="index", rebuild="geoloc index build")
    other = dict(CKPT, fingerprint="cd" * 32)
    with pytest.raises(IncompatibleArtifact) as e:
        check_same_model(CKPT, other, what="tile index /x", rebuild="geoloc index build ...")
    msg = str(e.value)
    assert "tile index /x" in msg and "fingerprint" in msg and "geoloc index build" in msg and "dim" not in msg


def test_write_is_atomic_and_read_checks_format(tmp_path):
    p = write_json_atomic(tmp_path / "sub" / "manifest.json", {"format": "f", "format_version": 1, "n": 3})
    assert json.loads(p.read_text())["n"] == 3 and list(p.parent.iterdir()) == [p]
    assert read_manifest(p, "f", 1)["n"] == 3
    with pytest.raises(IncompatibleArtifact, match="format_version"):
        read_manifest(p, "f", 2)
    with pytest.raises(IncompatibleArtifact, match="not a"):
        read_manifest(p, "g", 1)
    with pytest.raises(IncompatibleArtifact, match="does not exist"):
        read_manifest(tmp_path / "none.json", "f", 1)
    (tmp_path / "bad.json").write_text("{trunc")
    with pytest.raises(IncompatibleArtifact, match="not readable JSON"):
        read_manifest(tmp_path / "bad.json", "f", 1)


# ---- core.outputs ------------------------------------------------------------------------------

def test_output_folders_and_files_are_only_replaced_with_force(tmp_path):
    out = tmp_path / "out"
    assert check_output_dir(out, False) == out and not out.exists()  # nothing touched
    assert prepare_output_dir(out, force=False).is_dir()
    (out / "keep.txt").write_text("user data")
    for call in (lambda: check_output_dir(out, False), lambda: prepare_output_dir(out, force=False)):
        with pytest.raises(OutputExists, match="already exists and is not empty; pass --force to replace it"):
            call()
    check_output_dir(out, True)
    assert (out / "keep.txt").exists()  # the early check never deletes
    prepare_output_dir(out, force=True)
    assert out.is_dir() and not any(out.iterdir())  # no stale file survives next to new ones
    (tmp_path / "f").write_text("x")
    for call in (lambda: check_output_dir(tmp_path / "f", True), lambda: prepare_output_dir(tmp_path / "f", force=True)):
        with pytest.raises(OutputExists, match="exists and is not a directory"):
            call()
    with pytest.raises(OutputExists, match="f exists; pass --force to replace it"):
        check_output_file(tmp_path / "f", False)
    assert check_output_file(tmp_path / "f", True) == tmp_path / "f"


def test_an_unwritable_output_is_refused_before_any_work(tmp_path, monkeypatch):
    import os

    monkeypatch.setattr(os, "access", lambda p, mode: False)
    with pytest.raises(InvalidArgument, match="is not writable"):
        check_output_dir(tmp_path / "new" / "out", False)
