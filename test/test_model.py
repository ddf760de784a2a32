"""The cross-view model, losses, checkpoints, R@K and the trainer (CPU, small inputs)."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is in the [train] extra")

from geoloc_ros.core.errors import IncompatibleArtifact, InvalidArgument  # noqa: E402
from geoloc_ros.models import losses  # noqa: E402
from geoloc_ros.models.config import ModelConfig, available_presets, load_preset  # noqa: E402
from geoloc_ros.models.crossview import build_model, load_checkpoint, save_checkpoint  # noqa: E402
from geoloc_ros.training.evaluate import recall_at_k  # noqa: E402
from geoloc_ros.training.trainer import GeoBatchSampler, sequence_dropout  # noqa: E402

TINY = dict(name="tiny", freeze_blocks=15, ground_size=(64, 128), aerial_size=(64, 64), dim=64, layouts=4,
            layout_channels=16, temporal_layers=1, temporal_heads=4, temporal_ff=64, max_frames=8, dropout=0.0)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model(ModelConfig(**TINY), pretrained=True).eval()


def test_presets_load_and_unknown_keys_or_names_are_refused(tmp_path):
    assert {"seqgeo_lite", "seqgeo_lite_gem", "seqgeo_lite_mean"} <= set(available_presets())
    assert load_preset("seqgeo_lite").aggregator == "layout"
    with pytest.raises(InvalidArgument, match="unknown model preset 'nope'; available: .*seqgeo_lite"):
        load_preset("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nfreeze_block: 3\n")
    with pytest.raises(InvalidArgument, match=r"unknown model config key\(s\) \['freeze_block'\]"):
        load_preset(str(bad))
    with pytest.raises(InvalidArgument, match="multiples of 32"):
        ModelConfig(**{**TINY, "ground_size": (60, 128)})


def test_descriptors_are_unit_vectors_of_the_preset_dimension(tiny):
    g = tiny.encode_ground(torch.rand(3, 5, 3, 64, 128))
    a = tiny.encode_aerial(torch.rand(3, 3, 64, 64))
    assert g.shape == (3, 64) and a.shape == (3, 64)
    assert torch.allclose(g.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(a.norm(dim=1), torch.ones(3), atol=1e-5)


def test_padded_frames_do_not_change_the_output_even_if_garbage(tiny):
    x = torch.rand(2, 6, 3, 64, 128)
    pad = torch.tensor([[True, True, False, False, False, False], [False] * 6])
    ref = tiny.encode_ground(x, pad)
    y = x.clone()
    y[0, 0] = torch.rand(3, 64, 128)
    y[0, 1] = 0.0
    out = tiny.encode_ground(y, pad)
    assert torch.allclose(out, ref, atol=1e-6)
    # and the padded sequence equals the same frames given without padding
    short = tiny.encode_ground(x[:1, 2:])
    assert torch.allclose(short, ref[:1], atol=1e-5)
    # changing an unpadded frame does change it
    y[0, 3] = torch.rand(3, 64, 128)
    assert not torch.allclose(tiny.encode_ground(y, pad)[0], ref[0], atol=1e-4)


def test_any_length_up_to_max_frames(tiny):
    for T in range(1, 9):
        assert tiny.encode_ground(torch.rand(1, T, 3, 64, 128)).shape == (1, 64)
    with pytest.raises(ValueError, match="exceed the model's max_frames"):
        tiny.encode_ground(torch.rand(1, 9, 3, 64, 128))


def test_bad_inputs_give_clear_errors(tiny):
    with pytest.raises(InvalidArgument, match="do not match the model's"):
        tiny.encode_ground(torch.rand(1, 3, 3, 128, 256))
    with pytest.raises(InvalidArgument, match="at least one frame"):
        tiny.encode_ground(torch.rand(1, 0, 3, 64, 128))
    with pytest.raises(InvalidArgument, match=r"\[B, T, 3, H, W\]"):
        tiny.encode_ground(torch.rand(3, 64, 128))
    with pytest.raises(ValueError, match="no valid frame"):
        tiny.encode_ground(torch.rand(1, 2, 3, 64, 128), torch.ones(1, 2, dtype=torch.bool))


def test_losses_prefer_matching_pairs_and_training_reduces_them(tiny):
    torch.manual_seed(1)
    g = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    assert losses.soft_margin_triplet(g, g) < losses.soft_margin_triplet(g, g.roll(1, 0))
    assert losses.info_nce(g, g) < losses.info_nce(g, g.roll(1, 0))
    m = build_model(ModelConfig(**TINY), pretrained=True).train()
    g = torch.Generator().manual_seed(0)

    def scenes(n, h, w):  # smooth random colour fields: distinct images, like scenes (white noise is not)
        return torch.nn.functional.interpolate(torch.rand(n, 3, 4, 8, generator=g), size=(h, w), mode="bilinear")

    fg = m.ground.trunk_features(scenes(8 * 3, 64, 128))
    fa = m.aerial.trunk_features(scenes(8, 64, 64))
    opt = torch.optim.AdamW(m.trainable_parameters(), lr=3e-4)
    first = None
    for _ in range(12):
        loss = losses.soft_margin_triplet(m.fuse(m.frame_descriptors(fg, 8, 3)), m.aerial_from_trunk(fa))
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.5 * first
    m.eval()  # frozen backbone BatchNorm: what was learned holds in eval mode too
    with torch.no_grad():
        assert losses.soft_margin_triplet(m.fuse(m.frame_descriptors(fg, 8, 3)), m.aerial_from_trunk(fa)) < 0.5 * first


def test_counterfactual_layouts_change_the_descriptor(tiny):
    f = tiny.aerial.trunk_features(torch.rand(2, 3, 64, 64))
    real = tiny.aerial_from_trunk(f)
    cf = tiny.aerial_from_trunk(f, tiny.aerial.agg.random_layouts(2))
    assert (real - cf).abs().max() > 1e-3


def test_checkpoint_round_trip_and_mismatches_are_refused(tiny, tmp_path):
    p = tmp_path / "m.pt"
    man = save_checkpoint(p, tiny, extra={"command": "test"})
    assert json.loads(p.with_suffix(".json").read_text())["fingerprint"] == man["fingerprint"]
    m2, m = load_checkpoint(p, preset="tiny")
    x = torch.rand(1, 3, 3, 64, 128)
    assert torch.allclose(m2.encode_ground(x), tiny.encode_ground(x), atol=3e-3)  # float16 storage
    with pytest.raises(IncompatibleArtifact, match="holds preset 'tiny', not 'seqgeo_lite'"):
        load_checkpoint(p, preset="seqgeo_lite")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(IncompatibleArtifact, match="not a readable geoloc checkpoint"):
        load_checkpoint(broken)
    with pytest.raises(IncompatibleArtifact, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")


def test_recall_at_k_on_hand_built_embeddings():
    e = np.eye(4, dtype=np.float32)
    gallery = e
    # query 0 -> exact; query 1 closest to 2 then 1; query 2 -> 2; query 3 closest to 0, then 1, then 3
    q = np.array([[1, 0, 0, 0], [0, 0.6, 0.8, 0], [0, 0, 1, 0], [0.8, 0.5, 0, 0.33]], np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    r = recall_at_k(q, gallery, np.arange(4), ks=(1, 2, 3), gallery_xy=np.array([[0, 0], [10, 0], [20, 0], [90, 0]]),
                    query_xy=np.array([[0, 0], [10, 0], [20, 0], [90, 0]]), radius_m=15)
    assert r["R@1"] == 50.0 and r["R@2"] == 75.0 and r["R@3"] == 100.0
    assert r["hit@15m"] == 75.0  # query 1's top-1 (tile 2) is 10 m away


def test_sequence_dropout_keeps_frames_and_draws_without_replacement():
    g = torch.Generator().manual_seed(0)
    pad = sequence_dropout(500, 7, 1.0, 2, g)
    kept = (~pad).sum(1)
    assert kept.min() >= 2 and kept.max() <= 6
    assert len(set(map(tuple, pad.int().tolist()))) > 50  # per-sample masks, not one per batch


def test_geo_batches_have_near_negatives_but_no_duplicates():
    rng = np.random.default_rng(0)
    xy = np.cumsum(rng.normal(0, 5, (400, 2)), axis=0)  # a wandering drive: many near positions
    s = GeoBatchSampler(xy, ["w"] * 400, 16, 0.5, 20.0, 150.0, 15.0, seed=0)
    near = 0
    for batch in s.epoch(0):
        p = xy[batch]
        d = np.hypot(p[:, None, 0] - p[None, :, 0], p[:, None, 1] - p[None, :, 1])
        d[np.eye(len(batch), dtype=bool)] = np.inf
        assert d.min() >= 15.0
        near += int(np.sum((d >= 20) & (d <= 150))) // 2
    assert near > 50


def test_perspective_view_puts_tile_points_where_the_camera_sees_them():
    """A bright spot 20 m ahead and 4 m right of the vehicle in the heading-up tile appears at the pixel
    the pinhole camera projects that ground point to: u = cx + fx r / d, v = cy + fy h / d."""
    from geoloc_ros.models.crossview import perspective_grid

    cfg = ModelConfig(**{**TINY, "ground_size": (128, 256), "aerial_view": "perspective", "tile_m": 96.0})
    px = 192
    tile = torch.zeros(1, 1, px, px)
    m_per_px = 96.0 / px
    row, col = int(px / 2 - 20.0 / m_per_px), int(px / 2 + 4.0 / m_per_px)
    tile[0, 0, row - 2:row + 3, col - 2:col + 3] = 1.0
    view = torch.nn.functional.grid_sample(tile, perspective_grid(cfg), align_corners=False)[0, 0]
    w = view.numpy()
    vs, us = np.nonzero(w > 0.5)
    v, u = np.average(vs + 0.5, weights=w[vs, us]), np.average(us + 0.5, weights=w[vs, us])  # spot centroid
    ahead, right = (px / 2 - row - 0.5) * m_per_px, (col + 0.5 - px / 2) * m_per_px
    fx = 128.0 / np.tan(np.radians(45.0))
    assert abs(u - (128 + fx * right / ahead)) <= 1.5 and abs(v - (64 + fx * 1.8 / ahead)) <= 1.5
    assert float(view[:64].abs().max()) == 0.0  # nothing above the horizon


def test_trunk_features_do_not_depend_on_mode_or_batch_and_leave_statistics_alone():
    """The cached trunk features must be what inference computes: a freshly built model is in train
    mode, and BatchNorm in train mode would normalise by the batch (and move its running statistics)."""
    m = build_model(ModelConfig(**TINY), pretrained=True)  # nn.Module starts in train mode
    bn = next(x for x in m.ground.trunk.modules() if isinstance(x, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    x = torch.rand(6, 3, 64, 128)
    a = m.ground.trunk_features(x)
    b = m.ground.trunk_features(x[:2])
    m.eval()
    c = m.ground.trunk_features(x)
    assert torch.allclose(a[:2], b, atol=1e-5) and torch.allclose(a, c, atol=1e-5)
    assert torch.equal(bn.running_mean, before)
    m.train()
    assert not any(x.training for x in m.ground.tail.modules() if isinstance(x, torch.nn.BatchNorm2d))


def test_shipped_default_checkpoint_loads_and_matches_its_preset():
    from geoloc_ros.models.crossview import default_checkpoint

    path = default_checkpoint("seqgeo_lite")
    assert path.stat().st_size < 25e6
    model, man = load_checkpoint(path, preset="seqgeo_lite")
    # the preset file still describes it (keys added since take their defaults: old manifests stay valid)
    assert ModelConfig.from_dict(man["config"]) == load_preset("seqgeo_lite")
    assert man["command"].startswith("geoloc train")
    g = model.encode_ground(torch.rand(1, 3, 3, *model.cfg.ground_size))
    a = model.encode_aerial(torch.rand(2, 3, *model.cfg.aerial_size))
    assert g.shape == (1, 512) and a.shape == (2, 512)
    with pytest.raises(IncompatibleArtifact, match="no shipped checkpoint"):
        default_checkpoint("nope")
