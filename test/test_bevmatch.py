"""The learned metric features: the torch score volume agrees with the OpenCV one (training and
inference score the same thing), the NLL trains, checkpoints and exports carry their identity and
are refused on mismatch, ONNX Runtime reproduces torch, and the extractor keeps the interface."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from geoloc_ros.core.errors import IncompatibleArtifact  # noqa: E402
from geoloc_ros.metric.bev import BevGrid  # noqa: E402
from geoloc_ros.metric.correlate import match_bev  # noqa: E402
from geoloc_ros.models.bevmatch import (  # noqa: E402
    BevMatchConfig,
    BevMatchModel,
    load_bevmatch,
    save_bevmatch,
    torch_match_bev,
    volume_nll,
    volume_target,
)

TINY = BevMatchConfig(channels=4, width=4, width_low=4)


def _smooth(rng, shape, sigma=1.5):
    return cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)


@pytest.mark.parametrize("yaw0", [0.7, -2.6])
def test_torch_volume_matches_opencv_volume(yaw0):
    rng = np.random.default_rng(3)
    g = BevGrid(0.5, 3.0, 20.0, 8.0)
    h, w = g.shape
    f = _smooth(rng, (h, w, 4))
    wt = ((rng.random((h, w)) > 0.2) * np.linspace(0.2, 1.0, w)[None]).astype(np.float32)
    a = _smooth(rng, (90, 100, 4))
    av = np.ones((90, 100), bool)
    av[:35] = False  # part of the window without imagery: overlap masks must agree too
    yaws = yaw0 + np.radians(np.arange(-5, 6))
    ref = match_bev(f, wt, g, yaws, a, av, 10.0, 50.0, min_overlap=0.5)
    tv = torch_match_bev(torch.from_numpy(f).permute(2, 0, 1), torch.from_numpy(wt), g, yaws,
                         torch.from_numpy(a).permute(2, 0, 1), torch.from_numpy(av), 10.0, 50.0, min_overlap=0.5)
    np.testing.assert_array_equal(tv.xs, ref.xs)
    np.testing.assert_array_equal(tv.ys, ref.ys)
    finite = np.isfinite(ref.scores)
    assert finite.mean() > 0.3 and (~finite).any()
    np.testing.assert_array_equal(tv.mask.numpy(), finite)
    np.testing.assert_allclose(tv.scores.numpy()[finite], ref.scores[finite], atol=1e-4)
    # the peak of both is the same cell
    s = np.where(finite, ref.scores, -9)
    assert int(np.argmax(s)) == int(torch.argmax(torch.where(tv.mask, tv.scores, torch.tensor(-9.0))))


def _aligned_problem(rng, yaw=0.0):
    """An aerial texture and the BEV a vehicle at a known pose (heading east) sees of it."""
    res = 0.5
    g = BevGrid(res, 1.0, 9.0, 4.0)
    H = W = 64
    aerial = np.clip(128 + 60 * _smooth(rng, (H, W, 3), 1.2), 0, 255).astype(np.float32)
    x_left, y_top = 0.0, 32.0
    xv, yv = 13.0 * res + 0.0, y_top - 31.5 * res  # cell centre at col 13 ... vehicle origin
    X, Y = g.centres()
    col = np.round((xv + X - x_left) / res - 0.5).astype(int)
    row = np.round((y_top - (yv + Y)) / res - 0.5).astype(int)
    bev = aerial[row, col]
    valid = np.ones(g.shape, bool)
    rng_m = np.hypot(X, Y).astype(np.float32)
    return g, bev, valid, rng_m, aerial, x_left, y_top, (xv, yv, yaw)


def test_nll_decreases_in_a_few_steps():
    from geoloc_ros.metric.learned import aerial_input, bev_input

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead on a shared 2-core machine
    try:
        _train_tiny(aerial_input, bev_input)
    finally:
        torch.set_num_threads(threads)


def _train_tiny(aerial_input, bev_input):
    torch.manual_seed(0)
    g, bev, valid, rng_m, aerial, x_left, y_top, (xv, yv, yaw) = _aligned_problem(np.random.default_rng(1))
    model = BevMatchModel(TINY)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    yaws = np.radians(np.arange(-4, 5, 2.0))
    losses = []
    for _ in range(12):
        f, w = model.encode_bev(torch.from_numpy(bev_input(bev, valid, rng_m)))
        a = model.encode_aerial(torch.from_numpy(aerial_input(aerial)))
        vol = torch_match_bev(f[0], w[0], g, yaws, a[0], None, x_left, y_top, crop=(xv, yv, 5.0))
        target = volume_target(vol, xv, yv, yaw)
        assert vol.mask[target]
        loss = volume_nll(vol.scores, vol.mask, model.temperature, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    uniform = math.log(int(vol.mask.sum()))
    # the weights' scale is pinned (mean 1 over valid cells): a free scale collapsed to ~0 under Adam
    assert abs(float(w[0][torch.from_numpy(valid)].mean()) - 1.0) < 1e-3
    assert losses[0] > 0.8 * uniform  # starts near chance
    assert losses[-1] < losses[0] - 1.0, losses  # and learns the true cell


def test_checkpoint_round_trip_and_refusal(tmp_path):
    m = BevMatchModel(TINY)
    man = save_bevmatch(tmp_path / "a.pt", m)
    assert json.loads((tmp_path / "a.json").read_text())["fingerprint"] == man["fingerprint"]
    m2, man2 = load_bevmatch(tmp_path / "a.pt")
    assert man2["fingerprint"] == man["fingerprint"] and m2.cfg == TINY
    with pytest.raises(IncompatibleArtifact, match="holds weights"):
        load_bevmatch(tmp_path / "a.pt", expect_fingerprint="0" * 64)
    # weights changed behind the manifest's back
    blob = torch.load(tmp_path / "a.pt", weights_only=True)
    k = next(iter(blob["state_dict"]))
    blob["state_dict"][k] = blob["state_dict"][k] + 1.0
    torch.save(blob, tmp_path / "b.pt")
    with pytest.raises(IncompatibleArtifact, match="fingerprint"):
        load_bevmatch(tmp_path / "b.pt")
    # another kind of checkpoint
    blob["manifest"]["format"] = "geoloc-checkpoint"
    torch.save(blob, tmp_path / "c.pt")
    with pytest.raises(IncompatibleArtifact, match="not a bevmatch checkpoint"):
        load_bevmatch(tmp_path / "c.pt")
    (tmp_path / "d.pt").write_bytes(b"not torch")
    with pytest.raises(IncompatibleArtifact, match="not a readable"):
        load_bevmatch(tmp_path / "d.pt")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from geoloc_ros.inference.bevmatch_export import export_bevmatch

    d = tmp_path_factory.mktemp("bevmatch")
    torch.manual_seed(1)
    save_bevmatch(d / "m.pt", BevMatchModel(TINY))
    man = export_bevmatch(d / "m.pt", d / "onnx")
    return d, man


def test_onnx_export_parity(exported):
    d, man = exported
    assert man["parity"]["passed"] and man["parity"]["max_abs"] < 1e-4 and man["parity"]["weight_max_abs"] < 1e-3
    sizes = {tuple(c["size"]) for c in man["parity"]["checks"]}
    assert len(sizes) >= 4  # several spatial sizes through one graph (dynamic h, w)


def test_extractor_backends_agree_and_keep_the_interface(exported):
    from geoloc_ros.metric.features import make_extractor
    from geoloc_ros.metric.learned import LearnedFeatures

    d, _ = exported
    ort_fx = make_extractor("learned", checkpoint=d / "m.pt", export_dir=d / "onnx", backend="onnxruntime", threads=1)
    th_fx = LearnedFeatures(d / "m.pt", backend="torch")
    assert ort_fx.backend == "onnxruntime" and th_fx.backend == "torch"
    rng = np.random.default_rng(0)
    h, w = 61, 40
    rgb = rng.random((h, w, 3)).astype(np.float32) * 255
    valid = np.zeros((h, w), bool)
    valid[10:, 5:35] = True
    rng_m = rng.random((h, w)).astype(np.float32) * 30
    f1, w1 = ort_fx.bev(rgb, valid, rng_m)
    f2, w2 = th_fx.bev(rgb, valid, rng_m)
    assert f1.shape == (h, w, 4) and w1.shape == (h, w) and f1.dtype == np.float32
    assert np.all(w1[~valid] == 0) and np.all(w1[valid] > 0)
    np.testing.assert_allclose(np.linalg.norm(f1, axis=2), 1.0, atol=1e-4)
    np.testing.assert_allclose(f1, f2, atol=1e-4)
    np.testing.assert_allclose(w1, w2, atol=1e-4)
    a = (rng.random((77, 90, 3)) * 255).astype(np.uint8)
    a1, a2 = ort_fx.aerial(a), th_fx.aerial(a)
    assert a1.shape == (77, 90, 4)
    np.testing.assert_allclose(a1, a2, atol=1e-4)
    assert not hasattr(ort_fx, "rotate_channels")  # learned features do not turn with the view


def test_export_of_other_weights_or_tampered_graph_is_refused(exported, tmp_path):
    from geoloc_ros.metric.learned import LearnedFeatures

    d, _ = exported
    torch.manual_seed(2)
    save_bevmatch(tmp_path / "other.pt", BevMatchModel(TINY))
    with pytest.raises(IncompatibleArtifact, match="made from weights"):
        LearnedFeatures(tmp_path / "other.pt", export_dir=d / "onnx", backend="onnxruntime")
    # auto falls back to torch with the reason logged
    assert LearnedFeatures(tmp_path / "other.pt", export_dir=d / "onnx", backend="auto").backend == "torch"
    bad = tmp_path / "onnx"
    shutil.copytree(d / "onnx", bad)
    with open(bad / "aerial_encoder.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(IncompatibleArtifact, match="sha256"):
        LearnedFeatures(d / "m.pt", export_dir=bad, backend="onnxruntime")


def test_shipped_pair_exports_itself_on_first_use_and_never_replaces_other_weights(exported, tmp_path,
                                                                                   monkeypatch):
    """The node's first start with the shipped pair (the default checkpoint) makes its ONNX export;
    the next start reuses it; a folder holding another checkpoint's export is left as it is."""
    from geoloc_ros.metric.learned import LearnedFeatures

    monkeypatch.delenv("GEOLOC_AUTO_EXPORT", raising=False)
    fx = LearnedFeatures(engines_dir=tmp_path / "engines", backend="auto", threads=1)
    man = tmp_path / "engines" / "bevmatch" / "manifest.json"
    assert fx.backend in ("onnxruntime", "tensorrt") and man.is_file()
    stamp = man.stat().st_mtime_ns
    assert LearnedFeatures(engines_dir=tmp_path / "engines", backend="onnxruntime", threads=1).backend == "onnxruntime"
    assert man.stat().st_mtime_ns == stamp  # reused, not re-exported
    d, _ = exported  # another checkpoint's export where the shipped pair would look: refused, kept, torch runs
    other = tmp_path / "other_engines"
    shutil.copytree(d / "onnx", other / "bevmatch")
    before = (other / "bevmatch" / "manifest.json").read_bytes()
    assert LearnedFeatures(engines_dir=other, backend="auto", threads=1).backend == "torch"
    assert (other / "bevmatch" / "manifest.json").read_bytes() == before


def test_learned_extractor_module_imports_without_torch_or_onnxruntime():
    """metric/ stays numpy + OpenCV at import time: the node loads the ONNX path without torch."""
    import subprocess
    import sys

    code = ("import sys\nfor m in ('torch', 'onnxruntime'):\n    sys.modules[m] = None\n"
            "import geoloc_ros.metric.learned as L, geoloc_ros.inference.bevmatch_artifacts\n"
            "from geoloc_ros.metric.features import EXTRACTORS\nassert 'learned' in EXTRACTORS\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_train_metric_refuses_held_out_towns(tmp_path):
    from geoloc_ros.core.errors import InvalidArgument
    from geoloc_ros.evaluation.protocol import load_protocol
    from geoloc_ros.tools.train_metric import _check_worlds

    for seed, ok in ((7, True), (load_protocol().heldout_towns[0], False)):
        w = tmp_path / f"w{seed}"
        w.mkdir()
        (w / "world.json").write_text(json.dumps({"seed": seed}))
        if ok:
            _check_worlds([w], False)
        else:
            with pytest.raises(InvalidArgument, match="held-out"):
                _check_worlds([w], False)
            _check_worlds([w], True)
