"""ONNX export: three graphs + manifest, dynamic B and T, padding mask, parity with torch, CLI rules."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from _export_fixture import shared_export  # noqa: E402

from geoloc_ros.core.errors import IncompatibleArtifact, OutputExists  # noqa: E402
from geoloc_ros.inference.artifacts import GRAPHS, read_export_manifest, sha256_file  # noqa: E402
from geoloc_ros.models.config import ModelConfig  # noqa: E402
from geoloc_ros.models.crossview import default_checkpoint, load_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return shared_export(tmp_path_factory)


@pytest.fixture(scope="module")
def model():
    return load_checkpoint(default_checkpoint())[0]


def _session(export_dir, key):
    return ort.InferenceSession(str(export_dir / GRAPHS[key]["file"]), providers=["CPUExecutionProvider"])


def _unit(rng, *shape):
    f = rng.standard_normal(shape).astype(np.float32)
    return f / np.linalg.norm(f, axis=-1, keepdims=True)


def test_export_folder_has_three_graphs_and_a_checked_manifest(export_dir):
    m = read_export_manifest(export_dir, verify=True)  # recomputes every sha256
    ck = json.loads(default_checkpoint().with_suffix(".json").read_text())
    assert m["format"] == "geoloc-onnx-export" and m["format_version"] == 1
    assert m["model"] == {"preset": ck["preset"], "fingerprint": ck["fingerprint"], "dim": ck["dim"]}
    assert ModelConfig.from_dict(m["config"]) == ModelConfig.from_dict(ck["config"])
    assert m["precision"] == "fp32" and m["opset"] == 18
    assert sorted(p.name for p in export_dir.iterdir()) == sorted([g["file"] for g in GRAPHS.values()]
                                                                   + ["manifest.json"])
    for key, g in m["graphs"].items():
        assert g["sha256"] == sha256_file(export_dir / g["file"])
        model_proto = onnx.load(str(export_dir / g["file"]))
        assert [i.name for i in model_proto.graph.input] == GRAPHS[key]["inputs"]
        assert [o.name for o in model_proto.graph.output] == [GRAPHS[key]["output"]]
    t_in = m["graphs"]["temporal"]["inputs"]
    assert t_in[0]["shape"] == ["B", "T", 512] and t_in[1] == {"name": "pad", "shape": ["B", "T"], "dtype": "bool"}
    p = m["parity"]
    assert p["passed"] and p["max_l2"] <= p["tolerance_l2"] == 1e-4
    assert {c["T"] for c in p["checks"] if c["graph"] == "temporal"} == {1, 2, 7, 8}
    assert {c["input"] for c in p["checks"]} >= {"random", "real", "random+pad"}
    assert m["versions"]["torch"] == torch.__version__ and m["versions"]["onnx"] == onnx.__version__
    assert "export onnx" in m["command"]


def test_batch_and_sequence_length_are_dynamic_in_the_graphs(export_dir):
    for key, axes in (("frame", {"images": [0]}), ("aerial", {"tiles": [0]}),
                      ("temporal", {"features": [0, 1], "pad": [0, 1]})):
        g = onnx.load(str(export_dir / GRAPHS[key]["file"])).graph
        for inp in g.input:
            dims = inp.type.tensor_type.shape.dim
            for a in axes[inp.name]:
                assert dims[a].dim_param and not dims[a].dim_value, (key, inp.name, a)
                assert dims[a].dim_param == ("B" if a == 0 else "T")  # the manifest's names
            fixed = [d.dim_value for i, d in enumerate(dims) if i not in axes[inp.name]]
            assert all(v > 0 for v in fixed)


def test_temporal_graph_matches_torch_at_every_length_and_batch(export_dir, model):
    s = _session(export_dir, "temporal")
    rng = np.random.default_rng(1)
    worst = 0.0
    for T in range(1, model.cfg.max_frames + 1):
        for B in (1, 4):
            f = _unit(rng, B, T, model.cfg.dim)
            pad = np.zeros((B, T), bool)
            if B > 1 and T > 1:
                pad[1, 0] = True
                pad[3, :T - 1] = True
            got = s.run(None, {"features": f, "pad": pad})[0]
            with torch.inference_mode():
                ref = model.fuse(torch.from_numpy(f), torch.from_numpy(pad)).numpy()
            assert got.shape == (B, model.cfg.dim)
            worst = max(worst, float(np.linalg.norm(got - ref, axis=1).max()))
    assert worst < 1e-4


def test_padding_mask_is_in_the_graph(export_dir, model):
    """Padded (missing) oldest frames give exactly the shorter sequence's descriptor, whatever they hold."""
    s = _session(export_dir, "temporal")
    rng = np.random.default_rng(2)
    T, k = model.cfg.max_frames, 3
    f = _unit(rng, 1, T, model.cfg.dim)
    short = s.run(None, {"features": np.ascontiguousarray(f[:, k:]), "pad": np.zeros((1, T - k), bool)})[0]
    pad = np.zeros((1, T), bool)
    pad[0, :k] = True
    for garbage in (0.0, 1e6, np.nan):
        g = f.copy()
        g[0, :k] = garbage
        out = s.run(None, {"features": g, "pad": pad})[0]
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out, short, atol=1e-5)
    unpadded = s.run(None, {"features": f, "pad": np.zeros((1, T), bool)})[0]
    assert np.linalg.norm(unpadded - short) > 1e-3  # the mask, not the data, made the difference


def test_split_per_frame_plus_temporal_equals_the_whole_torch_model(model):
    """What the node does per keyframe (cached per-frame features + fusion) = encode_ground."""
    from geoloc_ros.inference.onnx_export import FrameGraph, TemporalGraph
    from geoloc_ros.inference.torch_backend import TorchEncoder

    enc = TorchEncoder(default_checkpoint())
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (4, *model.cfg.ground_size, 3), dtype=np.uint8)
    x = torch.from_numpy(frames.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    with torch.inference_mode():
        whole = model.encode_ground(x[None]).numpy()[0]
        graph_feats = FrameGraph(model)(x)
        graph_whole = TemporalGraph(model)(graph_feats[None], torch.zeros(1, 4, dtype=torch.bool)).numpy()[0]
    split = enc.fuse(enc.frame_features(frames)[None])[0]
    np.testing.assert_allclose(split, whole, atol=1e-5)
    np.testing.assert_allclose(enc.encode_sequence(frames), whole, atol=1e-5)
    np.testing.assert_allclose(graph_whole, whole, atol=1e-5)  # the exported wrappers, still in torch
    # features cached one call at a time (as the node does) give the same descriptor
    one_by_one = np.concatenate([enc.frame_features(frames[i:i + 1]) for i in range(4)])
    np.testing.assert_allclose(enc.fuse(one_by_one[None])[0], whole, atol=1e-5)


def test_parity_check_catches_a_graph_that_differs_from_the_model(export_dir, model, tmp_path):
    from geoloc_ros.inference.onnx_export import parity_check
    from geoloc_ros.sim.samples import synthetic_inputs

    real = synthetic_inputs(model.cfg, n_frames=3, n_tiles=2)
    assert real[0].shape == (3, 128, 256, 3) and real[1].shape == (2, 192, 192, 3)
    assert real[0].std() > 10 and real[1].std() > 10  # rendered content, not blank frames
    ok = parity_check(model, export_dir, "fp32", real=real, frame_counts=(1, 3))
    assert ok["passed"] and ok["max_l2"] < 1e-4
    other = load_checkpoint(default_checkpoint())[0]
    with torch.no_grad():
        other.temporal.out.weight.mul_(1.5)  # a model the graphs were not made from
    bad = parity_check(other, export_dir, "fp32", real=real, frame_counts=(1, 3))
    assert not bad["passed"] and bad["max_l2"] > 1e-3
    assert {c["graph"] for c in bad["checks"] if c["max_l2"] > 1e-3} <= {"temporal", "frame+temporal"}


def test_export_cli_refuses_to_overwrite_and_names_bad_input(tmp_path, export_dir):
    from geoloc_ros.tools import export_onnx

    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(OutputExists, match="--force"):
        export_onnx.main(["--checkpoint", "seqgeo_lite", "--out", str(out)])
    assert (out / "keep.txt").read_text() == "user data"
    with pytest.raises(IncompatibleArtifact, match="no shipped checkpoint"):
        export_onnx.main(["--checkpoint", "no_such_preset", "--out", str(tmp_path / "x")])
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(IncompatibleArtifact, match="not a readable geoloc checkpoint"):
        export_onnx.main(["--checkpoint", str(broken), "--out", str(tmp_path / "y")])
    assert not (tmp_path / "y").exists() and not list(tmp_path.glob(".y.tmp*"))


def test_manifest_checks_refuse_tampered_exports(export_dir, tmp_path):
    bad = tmp_path / "tampered"
    shutil.copytree(export_dir, bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["format_version"] = 99
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IncompatibleArtifact, match="format_version"):
        read_export_manifest(bad)
    m["format_version"] = 1
    (bad / "manifest.json").write_text(json.dumps(m))
    read_export_manifest(bad)  # restored: fine
    with pytest.raises(IncompatibleArtifact, match="fingerprint"):
        read_export_manifest(bad, expect_model={**m["model"], "fingerprint": "0" * 64})
    (bad / GRAPHS["aerial"]["file"]).unlink()
    with pytest.raises(IncompatibleArtifact, match="missing"):
        read_export_manifest(bad)


# ---- the parity check's real inputs: the shipped fixture, or the caller's (a bag, a dataset) -------

def test_shipped_parity_inputs_are_small_checked_and_made_by_the_documented_command(export_dir, tmp_path):
    from geoloc_ros.inference.parity_inputs import DEFAULT_PARITY_INPUTS, load_parity_inputs, manifest_path
    from geoloc_ros.tools.export_parity_inputs import rendered_inputs

    shipped = load_parity_inputs()  # format, sha256 and shapes checked against parity_inputs.json
    assert shipped.frames.shape == (8, 128, 256, 3) and shipped.tiles.shape == (4, 192, 192, 3)
    assert DEFAULT_PARITY_INPUTS.stat().st_size + manifest_path(DEFAULT_PARITY_INPUTS).stat().st_size < 1_000_000
    assert shipped.frames.std() > 10 and shipped.tiles.std() > 10  # pictures, not blank frames
    # the documented command renders the same pictures (what the exporter rendered itself before)
    again = rendered_inputs("seqgeo_lite", seed=11)
    assert np.abs(again.frames.astype(int) - shipped.frames).mean() < 0.5
    assert np.abs(again.tiles.astype(int) - shipped.tiles).mean() < 0.5
    # the default export was checked on them, and says so
    real = json.loads((export_dir / "manifest.json").read_text())["parity"]["real_inputs"]
    assert real == {"source": shipped.source, "frames": [8, 128, 256, 3], "tiles": [4, 192, 192, 3]}
    # a replaced file is refused
    bad = tmp_path / "p.npz"
    shutil.copy(DEFAULT_PARITY_INPUTS, bad)
    shutil.copy(manifest_path(DEFAULT_PARITY_INPUTS), manifest_path(bad))
    bad.write_bytes(bad.read_bytes()[:-10])
    with pytest.raises(IncompatibleArtifact, match="sha256"):
        load_parity_inputs(bad)


@pytest.fixture(scope="module")
def small_drive(small_world, tmp_path_factory):
    """A 4 s drive (10 Hz camera) whose k-th image is filled with the value k."""
    from geoloc_ros.core.camera import PinholeCamera
    from geoloc_ros.sim.bag import write_drive
    from geoloc_ros.sim.drive import DriveConfig, simulate_drive

    cam = PinholeCamera(width=64, height=32, hfov_deg=90.0)
    sim = simulate_drive(small_world, DriveConfig(seed=1, duration_s=4.0))
    out = tmp_path_factory.mktemp("drive") / "d"
    write_drive(out, small_world, sim, cam, iter([np.full((32, 64, 3), k, np.uint8) for k in range(40)]))
    return out


def _tiny_dataset(root):
    from PIL import Image

    from geoloc_ros.core.dataset import DATASET_FORMAT, DATASET_FORMAT_VERSION, SequenceRecord, write_split
    from geoloc_ros.core.manifest import write_json_atomic

    for k in range(10):
        (root / "ground" / "d0").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 64, 3), 10 * k, np.uint8)).save(root / "ground" / "d0" / f"{k}.png")
    recs = []
    for i in range(6):  # sliding sequences of 4 keyframes, as the sim export writes them
        (root / "aerial" / "train").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((48, 48, 3), 200 + i, np.uint8)).save(root / "aerial" / "train" / f"s{i}.png")
        recs.append(SequenceRecord(seq=f"s{i}", split="train", world="w", drive="d0",
                                   frames=";".join(f"ground/d0/{k}.png" for k in range(i, i + 4)),
                                   aerial=f"aerial/train/s{i}.png", x=0.0, y=0.0, yaw=0.0, lat=0.0, lon=0.0,
                                   heading_deg=0.0, tile_heading_deg=0.0, jitter_deg=0.0))
    write_split(root, "train", recs)
    write_json_atomic(root / "dataset.json", {"format": DATASET_FORMAT, "format_version": DATASET_FORMAT_VERSION,
                                              "splits": {"train": len(recs)}})
    return root


def test_parity_inputs_from_a_bag_or_a_dataset_feed_the_parity_check(export_dir, model, small_drive, tmp_path):
    from geoloc_ros.core.errors import InvalidArgument
    from geoloc_ros.inference.onnx_export import parity_check
    from geoloc_ros.inference.parity_inputs import ParityInputs, load_parity_inputs
    from geoloc_ros.tools.export_parity_inputs import main as save_main
    from geoloc_ros.tools.export_parity_inputs import read_parity_source

    bag = read_parity_source(small_drive)  # every 5th camera image; tiles of the shipped fixture
    assert [int(f[0, 0, 0]) for f in bag.frames] == [0, 5, 10, 15, 20, 25, 30, 35]
    assert bag.frames.shape == (8, 32, 64, 3) and np.array_equal(bag.tiles, load_parity_inputs().tiles)
    ds = read_parity_source(_tiny_dataset(tmp_path / "ds"))  # consecutive keyframes + the sequences' tiles
    assert [int(f[0, 0, 0]) for f in ds.frames] == [10 * k for k in range(8)]
    assert [int(t[0, 0, 0]) for t in ds.tiles] == [200, 201, 202, 203]
    # the export's parity check runs on them like on the fixture (resized to the model's inputs)
    report = parity_check(model, export_dir, "fp32", real=bag, frame_counts=(1, 8))
    assert report["passed"] and report["real_inputs"]["source"].startswith(f"bag {small_drive}")
    with pytest.raises(InvalidArgument, match="hold 3 ground frames.*up to T=8"):
        parity_check(model, export_dir, "fp32", real=ParityInputs(bag.frames[:3], bag.tiles), frame_counts=(1, 8))
    # saved once (`geoloc export parity-inputs --source`), reused by file
    out = save_main(["--source", str(small_drive), "--out", str(tmp_path / "mine.npz")])
    again = load_parity_inputs(out)
    assert np.array_equal(again.frames, bag.frames) and again.source == bag.source
    assert np.array_equal(read_parity_source(out).frames, bag.frames)


def test_export_cli_reads_parity_inputs_before_the_slow_export(tmp_path):
    from geoloc_ros.tools import export_onnx

    with pytest.raises(IncompatibleArtifact, match="parity inputs .*none.npz.*does not exist"):
        export_onnx.main(["--checkpoint", "seqgeo_lite", "--out", str(tmp_path / "o"),
                          "--parity-inputs", str(tmp_path / "none.npz")])
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.tmp*"))
