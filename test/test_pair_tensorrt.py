"""The learned metric pair on TensorRT: the engine cache keys, files, profiles and rebuild decisions
of the pair's graphs beside the retrieval encoder's (one mechanism, pure, runs everywhere), the
parity report an engine must pass, the backend chain and the CLI where TensorRT is absent, and the
GPU path itself (build, parity, run, cache, rebuild), which skips here with the reason."""
from __future__ import annotations

import importlib.util
import json
import logging
import shutil

import numpy as np
import pytest

from geoloc_ros.core.errors import InvalidArgument
from geoloc_ros.inference import engine_cache as ec
from geoloc_ros.inference.bevmatch_artifacts import PARITY_SIZES, parity_inputs

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
NO_TRT = "TensorRT is installed here: this checks the path without it"
NEEDS_TRT = ("TensorRT is not installable on the development machines (no PyPI wheels; the lent GPUs have none "
             "either); runs on a Jetson / GPU host with TensorRT")
ENV = {"trt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "sm_87"}
FP16 = ec.precision_plan("10.3.0", "fp16", "fp32")


def _profiles(**params):
    from geoloc_ros.metric.config import MetricParams
    from geoloc_ros.metric.learned import pair_profiles

    cover = {k: [x.shape[2:] for x in v] for k, v in parity_inputs().items()}
    return pair_profiles(MetricParams(**params), cover)


# ---- pure: one engine cache for every graph -----------------------------------------------------

def test_pair_graphs_are_specs_beside_the_encoders_with_their_own_engine_files():
    pair, enc = ec.GRAPH_FAMILIES["bevmatch"], ec.GRAPH_FAMILIES["encoder"]
    assert set(pair) == {"bev", "aerial"} and set(enc) == {"frame", "temporal", "aerial"}
    assert pair["bev"].inputs == ("bev",) and pair["bev"].outputs == ("features", "weight")
    # both exports name their aerial graph aerial_encoder.onnx: the engines must not collide in one folder
    assert pair["aerial"].file == enc["aerial"].file == "aerial_encoder.onnx"
    a_pair = ec.engine_path(ec.Path("e"), pair["aerial"], "sm_87", "fp16")
    a_enc = ec.engine_path(ec.Path("e"), "aerial", "sm_87", "fp16")
    assert a_pair.name == "bevmatch_aerial_encoder.sm_87.fp16.engine" and a_enc.name == "aerial_encoder.sm_87.fp16.engine"
    assert ec.graph_spec("bevmatch_bev") is pair["bev"] and ec.graph_spec("aerial", "bevmatch") is pair["aerial"]
    assert ec.graph_spec("aerial") is enc["aerial"]  # the encoder's names stay what its engines were keyed by
    with pytest.raises(InvalidArgument, match="bevmatch_bev"):
        ec.graph_spec("bev_encoder")
    # INT8 never reaches the pair (no calibration path): kept fp16 like the temporal transformer
    i8 = ec.precision_plan("10.3.0", "int8", "fp32")
    assert ec.graph_precision(i8, "bevmatch_bev").precision == "fp16" and ec.graph_precision(i8, "frame") is i8


def test_pair_profiles_follow_the_matching_geometry_and_hold_the_parity_inputs():
    p = _profiles()
    (bmin, bopt, bmax), = p["bev"].values()
    (amin, aopt, amax), = p["aerial"].values()
    assert bmin == [1, 5, 16, 16] and amin == [1, 3, 16, 16]
    # default geometry: BEV 30 m x 30 m at 0.5 m = 60 x 60, the mosaic reaches 4 lengths back -> 300 rows;
    # a parity input is 61 wide, so the maximum widens to hold it
    assert bmax == [1, 5, 300, 61] and bopt == [1, 5, 120, 60]
    assert amax[2] == amax[3] and amax[2] > 300 and aopt[2] < amax[2]
    for g, xs in parity_inputs().items():
        (name, prof), = p[g].items()
        assert all(ec.within_profile(p[g], name, x.shape) for x in xs)
    assert not ec.within_profile(p["bev"], "bev", (1, 5, 301, 60))
    assert not ec.within_profile(p["bev"], "bev", (1, 5, 8, 60))
    assert not ec.within_profile(p["bev"], "aerial", (1, 5, 60, 60))
    # one view only: the BEV is its own size, no mosaic
    assert _profiles(metric_seq_len=1)["bev"]["bev"][2][2] == 128  # the largest parity input, not 300
    # a larger translation window -> a larger aerial maximum
    assert _profiles(metric_window_max_m=60.0)["aerial"]["aerial"][2][2] > amax[2]
    with pytest.raises(InvalidArgument, match="one image input"):
        ec.spatial_profile("temporal", 5, (60, 60), (100, 100))


def test_engine_plan_keys_pair_and_encoder_graphs_the_same_way():
    p = _profiles()
    key, path = ec.engine_plan("bevmatch_bev", "a" * 64, ENV, FP16, p["bev"], ec.Path("engines/bevmatch"))
    assert key.graph == "bevmatch_bev" and key.precision == "fp16" and key.profile == p["bev"]
    assert key.trt_version == "10.3.0" and key.compute_capability == "sm_87"
    assert path == ec.Path("engines/bevmatch/bevmatch_bev_encoder.sm_87.fp16.engine")
    cfg = {"ground_size": [128, 256], "aerial_size": [192, 192], "dim": 512, "max_frames": 8}
    ekey, epath = ec.engine_plan("frame", "b" * 64, ENV, FP16, ec.profile_shapes("frame", cfg, max_batch=4),
                                 ec.Path("engines/seqgeo_lite"))
    assert epath.name == "frame_encoder.sm_87.fp16.engine" and ekey.profile["images"][2] == [4, 3, 128, 256]
    with pytest.raises(InvalidArgument, match="profile names input 'images'"):
        ec.engine_plan("bevmatch_aerial", "a" * 64, ENV, FP16, {"images": [[1], [1], [1]]}, ec.Path("e"))


def test_rebuild_decisions_for_the_pair_graphs(tmp_path):
    p = _profiles()
    key, path = ec.engine_plan("bevmatch_aerial", "a" * 64, ENV, FP16, p["aerial"], tmp_path)
    d = ec.rebuild_decision(key, path)
    assert d.rebuild and "no engine bevmatch_aerial_encoder" in d.reason
    ec.write_engine(path, b"\x02pair-engine" * 50, key, build_seconds=3.0)
    assert not ec.rebuild_decision(key, path).rebuild
    assert json.loads(ec.manifest_path(path).read_text())["key"]["graph"] == "bevmatch_aerial"
    # the encoder's aerial engine in the same folder is another file: neither invalidates the other
    cfg = {"ground_size": [128, 256], "aerial_size": [192, 192], "dim": 512, "max_frames": 8}
    ekey, epath = ec.engine_plan("aerial", "c" * 64, ENV, FP16, ec.profile_shapes("aerial", cfg, max_batch=4), tmp_path)
    ec.write_engine(epath, b"\x03enc" * 50, ekey, build_seconds=1.0)
    assert not ec.rebuild_decision(key, path).rebuild and not ec.rebuild_decision(ekey, epath).rebuild
    # matching parameters changed since the build -> another profile -> rebuild, and the reason says so
    wide = _profiles(metric_window_max_m=60.0)
    k2, p2 = ec.engine_plan("bevmatch_aerial", "a" * 64, ENV, FP16, wide["aerial"], tmp_path)
    assert p2 == path
    d = ec.rebuild_decision(k2, path)
    assert d.rebuild and "profile" in d.reason
    # a re-export (new ONNX), another TensorRT or GPU -> rebuild
    for change, word in (({"onnx": "d" * 64}, "onnx_sha256"), ({"trt_version": "10.7.0"}, "trt_version"),
                         ({"compute_capability": "sm_90"}, "compute_capability")):
        env = {**ENV, **{k: v for k, v in change.items() if k != "onnx"}}
        k3, _ = ec.engine_plan("bevmatch_aerial", change.get("onnx", "a" * 64), env, FP16, p["aerial"], tmp_path)
        d = ec.rebuild_decision(k3, path)
        assert d.rebuild and word in d.reason, (change, d.reason)
    path.write_bytes(b"\x00truncated")
    d = ec.rebuild_decision(key, path)
    assert d.rebuild and "corrupted" in d.reason


def test_precision_candidates_try_fp16_then_fp32_only_under_auto():
    assert ec.precision_candidates("10.3.0", "auto", "fp32") == ["fp16", "fp32"]
    assert ec.precision_candidates("10.3.0", "fp16", "fp32") == ["fp16"]
    assert ec.precision_candidates("10.3.0", "fp32", "fp32") == ["fp32"]
    assert ec.precision_candidates("11.0.1", "auto", "fp32") == ["fp32"]  # strongly typed: the ONNX's
    with pytest.raises(InvalidArgument):
        ec.precision_candidates("11.0.1", "fp16", "fp32")


def test_parity_report_passes_close_outputs_and_fails_wrong_ones():
    from geoloc_ros.inference.tensorrt_backend import parity_report

    rng = np.random.default_rng(0)
    f = rng.standard_normal((1, 8, 20, 30))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    f[..., :3] = 0.0  # zero vectors in both: agree
    w = rng.random((1, 1, 20, 30)) * 2
    tol = {"min_cos": 0.995, "weight_max_abs": 0.25}
    near = f + 1e-3 * rng.standard_normal(f.shape) * (np.abs(f).sum(axis=1, keepdims=True) > 0)
    ok = parity_report({"features": [f], "weight": [w]}, {"features": [near], "weight": [w + 0.01]}, tol)
    assert ok["passed"] and ok["min_cos"] > 0.999 and ok["weight_max_abs"] == pytest.approx(0.01)
    flipped = near.copy()
    flipped[0, :, 5, 5] *= -1  # one cell's feature reversed
    bad = parity_report({"features": [f], "weight": [w]}, {"features": [flipped], "weight": [w]}, tol)
    assert not bad["passed"] and bad["min_cos"] < 0
    assert not parity_report({"features": [f], "weight": [w]}, {"features": [near], "weight": [w + 0.3]}, tol)["passed"]
    nan = near.copy()
    nan[0, 0, 0, 0] = np.nan
    assert not parity_report({"features": [f]}, {"features": [nan]}, tol)["passed"]
    assert not parity_report({"features": [f]}, {"features": [near[..., :-1]]}, tol)["passed"]
    assert not parity_report({"features": [f, f]}, {"features": [near]}, tol)["passed"]


def test_parity_inputs_follow_the_manifest_and_default_to_the_exporters():
    d = parity_inputs()
    assert [x.shape[2:] for x in d["bev"]] == PARITY_SIZES["bev"] and d["bev"][0].shape[1] == 5
    bev = d["bev"][0]
    assert np.all(bev[:, :3][np.broadcast_to(bev[:, 3:4] == 0, bev[:, :3].shape)] == 0)  # nothing outside valid cells
    again = parity_inputs({"parity": {"seed": 0, "checks": [{"graph": "bev", "size": [40, 33]},
                                                            {"graph": "aerial", "size": [50, 20]}]}})
    assert again["bev"][0].shape == (1, 5, 40, 33) and again["aerial"][0].shape == (1, 3, 50, 20)
    other = parity_inputs({"parity": {"seed": 1}})
    assert not np.array_equal(other["bev"][0], d["bev"][0])


# ---- the pair's backends and the CLI where TensorRT is absent ----------------------------------

@pytest.fixture(scope="module")
def pair_export(tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from geoloc_ros.inference.bevmatch_export import export_bevmatch
    from geoloc_ros.models.bevmatch import BevMatchConfig, BevMatchModel, save_bevmatch

    d = tmp_path_factory.mktemp("pair")
    torch.manual_seed(1)
    save_bevmatch(d / "m.pt", BevMatchModel(BevMatchConfig(channels=4, width=4, width_low=4)))
    man = export_bevmatch(d / "m.pt", d / "onnx")
    return d, man


def test_regenerated_parity_inputs_are_the_ones_the_export_checked(pair_export):
    """The engines are checked on the export's own parity inputs: regenerating them from the
    manifest reproduces the ONNX Runtime vs torch differences the exporter recorded."""
    import onnxruntime as ort
    import torch

    from geoloc_ros.models.bevmatch import load_bevmatch

    d, man = pair_export
    assert man["parity"]["seed"] == 0
    model, _ = load_bevmatch(d / "m.pt")
    inputs = parity_inputs(man)
    sess = {k: ort.InferenceSession(str(d / "onnx" / f), providers=["CPUExecutionProvider"])
            for k, f in (("bev", "bev_encoder.onnx"), ("aerial", "aerial_encoder.onnx"))}
    recorded = [c["max_abs"] for c in man["parity"]["checks"]]
    got = []
    with torch.inference_mode():
        for x in inputs["bev"]:
            got.append(float(np.abs(sess["bev"].run(None, {"bev": x})[0]
                                    - model.encode_bev(torch.from_numpy(x))[0].numpy()).max()))
        for x in inputs["aerial"]:
            got.append(float(np.abs(sess["aerial"].run(None, {"aerial": x})[0]
                                    - model.encode_aerial(torch.from_numpy(x)).numpy()).max()))
    np.testing.assert_allclose(got, recorded, rtol=1e-6, atol=0)


@pytest.mark.skipif(HAS_TRT, reason=NO_TRT)
def test_auto_without_tensorrt_runs_onnxruntime_and_says_why(pair_export, caplog):
    from geoloc_ros.metric.learned import LearnedFeatures

    d, _ = pair_export
    with caplog.at_level(logging.INFO, logger="geoloc_ros.metric.learned"):
        fx = LearnedFeatures(d / "m.pt", export_dir=d / "onnx", backend="auto", threads=1)
    assert fx.backend == "onnxruntime"
    assert [b for b, _ in fx.selection] == ["tensorrt", "onnxruntime"]
    assert "TensorRT is not installed" in fx.selection[0][1]
    desc = fx.describe()
    assert "on onnxruntime" in desc and "tensorrt skipped" in desc
    assert fx.identity()["backend"] == "onnxruntime"
    assert any("backend tensorrt skipped" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(HAS_TRT, reason=NO_TRT)
def test_named_tensorrt_backend_fails_with_the_reason_and_writes_nothing(pair_export):
    from geoloc_ros.inference.tensorrt_backend import TensorRTUnavailable
    from geoloc_ros.metric.learned import LearnedFeatures
    from geoloc_ros.tools import export_engine

    d, _ = pair_export
    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed"):
        LearnedFeatures(d / "m.pt", export_dir=d / "onnx", backend="tensorrt")
    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed"):
        export_engine.main(["--onnx", str(d / "onnx")])
    with pytest.raises(InvalidArgument, match="retrieval encoder only"):
        export_engine.main(["--onnx", str(d / "onnx"), "--precision", "int8"])
    assert not list((d / "onnx").glob("*.engine"))


# ---- the GPU path: needs TensorRT and a CUDA GPU ------------------------------------------------

@pytest.mark.skipif(not HAS_TRT, reason=NEEDS_TRT)
def test_tensorrt_pair_builds_passes_parity_matches_onnxruntime_and_rebuilds_a_corrupted_engine(
        pair_export, tmp_path, caplog):
    from geoloc_ros.metric.learned import LearnedFeatures

    d, _ = pair_export
    work = tmp_path / "onnx"
    shutil.copytree(d / "onnx", work)
    fx = LearnedFeatures(d / "m.pt", export_dir=work, backend="tensorrt")
    assert fx.backend == "tensorrt" and fx.runner.build_log and fx.runner.parity["passed"]
    assert fx.identity()["precision"] in ("fp16", "fp32") and "TensorRT" in fx.describe()
    assert len(list(work.glob("bevmatch_*.engine"))) == 2
    ref = LearnedFeatures(d / "m.pt", export_dir=work, backend="onnxruntime")
    rng = np.random.default_rng(5)
    h, w = 90, 60
    rgb = rng.random((h, w, 3)).astype(np.float32) * 255
    valid = np.zeros((h, w), bool)
    valid[20:, 5:55] = True
    rng_m = rng.random((h, w)).astype(np.float32) * 30
    (f1, w1), (f2, w2) = fx.bev(rgb, valid, rng_m), ref.bev(rgb, valid, rng_m)
    assert f1.shape == f2.shape and float(np.min(np.sum(f1 * f2, axis=2))) > 0.995
    assert float(np.abs(w1 - w2).max()) < 0.25
    a = (rng.random((150, 140, 3)) * 255).astype(np.uint8)
    assert float(np.min(np.sum(fx.aerial(a) * ref.aerial(a), axis=2))) > 0.995
    # outside the profile: served by ONNX Runtime, counted, not a crash
    big = (rng.random((1200, 40, 3)) * 255).astype(np.uint8)
    assert fx.aerial(big).shape == (1200, 40, 4) and fx.runner.out_of_profile == 1
    again = LearnedFeatures(d / "m.pt", export_dir=work, backend="tensorrt")
    assert not again.runner.build_log  # cached
    for e in work.glob("bevmatch_*.engine"):
        e.write_bytes(b"corrupt")
    with caplog.at_level(logging.WARNING):
        rebuilt = LearnedFeatures(d / "m.pt", export_dir=work, backend="tensorrt")
    assert rebuilt.runner.build_log and any("corrupted" in r.getMessage() for r in caplog.records)
