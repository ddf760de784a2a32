"""core.manifest: model identities, atomic JSON, format checks (and every loader's use of them);
core.outputs: the --force rule for output folders and files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from geoloc_ros.core.errors import IncompatibleArtifact, InvalidArgument, OutputExists
from geoloc_ros.core.manifest import check_manifest, check_same_model, model_identity, read_manifest, write_json_atomic
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


def test_several_readable_versions_and_a_rebuild_hint(tmp_path):
    p = write_json_atomic(tmp_path / "m.json", {"format": "f", "format_version": 1})
    assert read_manifest(p, "f", (1, 2))["format_version"] == 1
    with pytest.raises(IncompatibleArtifact, match=r"format_version 1; this geoloc_ros reads versions 2, 3; run x"):
        read_manifest(p, "f", {3, 2}, rebuild="run x")
    with pytest.raises(IncompatibleArtifact, match=r"^cp.pt is not a thing \(format 'f', expected 'g'\); run y$"):
        check_manifest({"format": "f"}, "g", 1, source="cp.pt", what="thing", rebuild="run y")
    with pytest.raises(IncompatibleArtifact, match="format 'list'"):  # not even a JSON object
        check_manifest([], "g", 1, source="cp.pt", what="thing")


# ---- every loader refuses another format and another format_version, in its own words ----------------

def _json_artifact(*rel):
    """Write the manifest as ``tmp/<rel>``; the loader gets ``tmp``."""

    def write(tmp: Path, m) -> Path:
        write_json_atomic(tmp.joinpath(*rel), m)
        return tmp

    return write


def _torch_artifact(tmp: Path, m) -> Path:
    torch = pytest.importorskip("torch")
    torch.save({"manifest": m, "state_dict": {}}, tmp / "c.pt")
    return tmp / "c.pt"


def _engine_artifact(tmp: Path, m) -> Path:
    (tmp / "g.engine").write_bytes(b"engine")
    write_json_atomic(tmp / "g.engine.json", m)
    return tmp / "g.engine"


def _parity_artifact(tmp: Path, m) -> Path:
    write_json_atomic(tmp / "p.json", m)
    return tmp / "p.npz"


def _load_world(p):
    pytest.importorskip("rasterio")
    from geoloc_ros.sim.world import World
    return World.load(p)


def _load_drive(p):
    from geoloc_ros.sim.bag import read_drive_manifest
    return read_drive_manifest(p)


def _load_dataset(p):
    from geoloc_ros.core.dataset import read_manifest as read_dataset_manifest
    return read_dataset_manifest(p)


def _load_checkpoint(p):
    from geoloc_ros.models.crossview import read_checkpoint_manifest
    return read_checkpoint_manifest(p)


def _load_bevmatch(p):
    from geoloc_ros.models.bevmatch import load_bevmatch
    return load_bevmatch(p)


def _load_index(p):
    from geoloc_ros.index.store import TileIndex
    return TileIndex.open(p)


def _load_export(p):
    from geoloc_ros.inference.artifacts import read_export_manifest
    return read_export_manifest(p)


def _load_bevmatch_export(p):
    from geoloc_ros.inference.bevmatch_artifacts import read_bevmatch_export
    return read_bevmatch_export(p)


def _load_engine(p):
    from geoloc_ros.inference import engine_cache as ec

    d = ec.rebuild_decision(ec.EngineKey("frame", "0" * 64, "10.3", "gpu", "sm_87", "fp16"), p)
    assert d.rebuild  # the node rebuilds instead of failing; the reason is the refusal
    raise IncompatibleArtifact(d.reason)


def _load_parity(p):
    from geoloc_ros.inference.parity_inputs import load_parity_inputs
    return load_parity_inputs(p)


def _load_samples(p):
    from geoloc_ros.training.metric_data import list_samples
    return list_samples(p)


# name: (writer, loader, format, a readable version, words naming the artifact, words of the fix)
LOADERS = {
    "world": (_json_artifact("world.json"), _load_world, "geoloc-world", 2, "geoloc world", "geoloc sim world"),
    "drive": (_json_artifact("drive.json"), _load_drive, "geoloc-drive", 2, "geoloc drive", "geoloc sim drive"),
    "dataset": (_json_artifact("dataset.json"), _load_dataset, "geoloc-dataset", 1, "geoloc dataset",
                "geoloc sim dataset"),
    "checkpoint": (_torch_artifact, _load_checkpoint, "geoloc-checkpoint", 1, "geoloc checkpoint", "geoloc train"),
    "bevmatch checkpoint": (_torch_artifact, _load_bevmatch, "geoloc-bevmatch-checkpoint", 1, "bevmatch checkpoint",
                            "geoloc train-metric"),
    "tile index": (_json_artifact("manifest.json"), _load_index, "geoloc-tile-index", 1, "tile index",
                   "geoloc index build"),
    "onnx export": (_json_artifact("manifest.json"), _load_export, "geoloc-onnx-export", 1, "ONNX export",
                    "geoloc export onnx"),
    "bevmatch export": (_json_artifact("manifest.json"), _load_bevmatch_export, "geoloc-bevmatch-onnx", 1,
                        "bevmatch ONNX export", "export_bevmatch"),
    "engine": (_engine_artifact, _load_engine, "geoloc-trt-engine", 1, "TensorRT engine", "geoloc export engine"),
    "parity inputs": (_parity_artifact, _load_parity, "geoloc-parity-inputs", 1, "parity inputs",
                      "geoloc export parity-inputs"),
    "bevmatch samples": (_json_artifact("index.json"), _load_samples, "geoloc-bevmatch-samples", 1,
                         "bevmatch sample folder", "geoloc train-metric"),
}


@pytest.mark.parametrize("wrong", ["format", "format_version"])
@pytest.mark.parametrize("name", list(LOADERS))
def test_every_loader_refuses_another_format_or_version_and_says_how_to_rebuild(name, wrong, tmp_path):
    write, load, fmt, version, what, fix = LOADERS[name]
    m = {"format": "geoloc-something-else", "format_version": version} if wrong == "format" else \
        {"format": fmt, "format_version": 99}
    path = write(tmp_path, m)
    with pytest.raises(IncompatibleArtifact) as e:
        load(path)
    msg = str(e.value)
    if wrong == "format":
        assert f"is not a {what}" in msg and "'geoloc-something-else'" in msg and repr(fmt) in msg, msg
    else:
        assert f"{what}" in msg and "format_version 99" in msg and "this geoloc_ros reads version" in msg, msg
    assert fix in msg, msg


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
