"""The other encoder families: L2LTR hybrid ViT (self / self-cross attention), TransGeo/EgoTR pure
ViT with the attention-guided aerial crop, hierarchical multi-scale attention fusion.

Small configurations (CPU, a few seconds each), real ImageNet weights where the family uses the
CNN, and the real ONNX export + ONNX Runtime for parity."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is in the [train] extra")

from geoloc_ros.core.errors import IncompatibleArtifact, InvalidArgument  # noqa: E402
from geoloc_ros.models.config import ModelConfig, available_presets, load_preset  # noqa: E402
from geoloc_ros.models.crossview import build_model, load_checkpoint, save_checkpoint  # noqa: E402
from geoloc_ros.models.vit import ViTEncoder, ViTHead, keep_count, select_patches  # noqa: E402

COMMON = dict(ground_size=(64, 128), aerial_size=(64, 64), aerial_view="tile", dim=64, temporal_layers=1,
              temporal_heads=4, temporal_ff=64, max_frames=8, dropout=0.0, vit_dim=32, vit_depth=3, vit_heads=4,
              vit_mlp=64)
CONFIGS = {
    "hybrid_self": dict(name="t_hybrid", encoder="hybrid_vit", freeze_blocks=15, attention="self"),
    "hybrid_sc": dict(name="t_hybrid_sc", encoder="hybrid_vit", freeze_blocks=15, attention="self_cross"),
    # aerial 128x128 in 16-pixel patches (8x8); the base view is 96x96 (6x6): 36 of 64 patches kept
    "vit_crop": dict(name="t_vit", encoder="vit", freeze_blocks=0, patch=16, zoom_keep=0.5625, aerial_size=(128, 128)),
    "multiscale": dict(name="t_ms", encoder="multiscale", freeze_blocks=11),
}


def tiny(kind: str):
    torch.manual_seed(0)
    return build_model(ModelConfig(**{**COMMON, **CONFIGS[kind]}), pretrained=True).eval()


@pytest.fixture(scope="module", params=list(CONFIGS))
def model(request):
    return tiny(request.param)


def test_shipped_presets_of_every_family_load_and_build():
    names = {"l2ltr_lite", "l2ltr_lite_sc", "transgeo_lite", "transgeo_lite_crop", "hafusion_lite"}
    assert names <= set(available_presets())
    encoders = {load_preset(n).encoder for n in names}
    assert encoders == {"hybrid_vit", "vit", "multiscale"}
    assert load_preset("l2ltr_lite_sc").attention == "self_cross"
    # stage 2 of TransGeo has exactly the parameter shapes of stage 1 (it is trained from it)
    a = build_model(load_preset("transgeo_lite"), pretrained=False).state_dict()
    b = build_model(load_preset("transgeo_lite_crop"), pretrained=False).state_dict()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}


def test_family_settings_are_checked_with_clear_errors():
    with pytest.raises(InvalidArgument, match="pure ViT .* freeze_blocks 0"):
        ModelConfig(**{**COMMON, **CONFIGS["vit_crop"], "freeze_blocks": 5})
    with pytest.raises(InvalidArgument, match="zoom_keep .* only for encoder vit"):
        ModelConfig(**{**COMMON, **CONFIGS["hybrid_self"], "zoom_keep": 0.5})
    with pytest.raises(InvalidArgument, match="freeze_blocks must be <= 11"):
        ModelConfig(**{**COMMON, **CONFIGS["multiscale"], "freeze_blocks": 15})
    with pytest.raises(InvalidArgument, match="attention 'cross' is not one of self, self_cross"):
        ModelConfig(**{**COMMON, **CONFIGS["hybrid_self"], "attention": "cross"})
    with pytest.raises(InvalidArgument, match="multiples of patch 24"):
        ModelConfig(**{**COMMON, **CONFIGS["vit_crop"], "patch": 24})


def test_descriptors_are_unit_vectors_and_padding_is_masked(model):
    H, W = model.cfg.ground_size
    x = torch.rand(2, 5, 3, H, W)
    g = model.encode_ground(x)
    a = model.encode_aerial(torch.rand(3, 3, *model.cfg.aerial_size))
    assert g.shape == (2, 64) and a.shape == (3, 64)
    assert torch.allclose(g.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(a.norm(dim=1), torch.ones(3), atol=1e-5)
    # a padded frame's content (even NaN) cannot change the output; the padded sequence equals the
    # same frames given without padding; an unpadded frame does change it
    pad = torch.tensor([[True, True, False, False, False], [False] * 5])
    ref = model.encode_ground(x, pad)
    y = x.clone()
    y[0, 0] = float("nan")
    y[0, 1] = torch.rand(3, H, W)
    assert torch.allclose(model.encode_ground(y, pad), ref, atol=1e-5)
    assert torch.allclose(model.encode_ground(x[:1, 2:]), ref[:1], atol=1e-5)
    y[0, 3] = torch.rand(3, H, W)
    assert not torch.allclose(model.encode_ground(y, pad)[0], ref[0], atol=1e-4)


def test_wrong_input_size_is_refused_with_the_expected_size(model):
    with pytest.raises(InvalidArgument, match="do not match the model's"):
        model.encode_aerial(torch.rand(1, 3, 96, 96))


def _block_inputs(enc: ViTEncoder, x: torch.Tensor):
    seen = []
    hooks = [b.register_forward_pre_hook(lambda m, args: seen.append((args[0], args[1]))) for b in enc.blocks]
    try:
        enc(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_self_cross_attention_attends_to_the_previous_layer():
    torch.manual_seed(0)
    x = torch.randn(2, 9, 32)
    cross = ViTEncoder(32, 3, 4, 64, attention="self_cross").eval()
    seen = _block_inputs(cross, x)
    # layer l's keys/values come from the previous layer's tokens (the input of layer l-1); layer 0
    # has no previous layer and attends to itself
    assert seen[0][1] is seen[0][0]
    for l in (1, 2):
        assert torch.equal(seen[l][1], seen[l - 1][0])
        assert not torch.allclose(seen[l][1], seen[l][0])
    plain = ViTEncoder(32, 3, 4, 64, attention="self").eval()
    assert all(ctx is q for q, ctx in _block_inputs(plain, x))

    # changing the previous layer's tokens (only what layer 2 attends to, not its queries) changes the result
    ref, _ = cross(x)

    def perturb(m, args):
        return args[0], args[1] + 0.5 * torch.randn_like(args[1])

    h = cross.blocks[2].register_forward_pre_hook(perturb)
    try:
        changed, _ = cross(x)
    finally:
        h.remove()
    assert (changed - ref).abs().max() > 1e-3
    # and the two attention modes compute different things with the same weights
    plain.load_state_dict(cross.state_dict())
    assert (plain(x)[0] - ref).abs().max() > 1e-3


@pytest.mark.parametrize("keep", [0.25, 0.5, 0.64, 1.0])
def test_attention_guided_crop_keeps_the_requested_fraction_of_the_most_attended_patches(keep):
    grid_lo, grid_hi = (4, 4), (8, 8)
    rc = torch.arange(4.0)[:, None] + torch.arange(4.0)[None, :]
    attn = torch.stack([(-rc).flatten(), rc.flatten()]).softmax(dim=1)  # most attention top-left / bottom-right
    idx = select_patches(attn, grid_lo, grid_hi, keep)
    k = keep_count(grid_hi, keep)
    assert idx.shape == (2, k) and k == round(keep * 64)
    assert all(len(set(row.tolist())) == k for row in idx)  # no patch twice
    hi_rc = (torch.arange(64) // 8 + torch.arange(64) % 8).float()  # distance from the top-left, hi grid
    for row, sign in ((idx[0], 1.0), (idx[1], -1.0)):
        kept = torch.zeros(64, dtype=torch.bool)
        kept[row] = True
        if keep < 1.0:  # every kept patch is at least as close to the attended corner as every dropped one
            assert (sign * hi_rc[kept]).max() <= (sign * hi_rc[~kept]).min()
        else:
            assert kept.all()


def test_zoomed_aerial_head_encodes_only_the_kept_high_resolution_patches():
    torch.manual_seed(0)
    head = ViTHead(3, (64, 64), 32, patch=8, dim=32, depth=2, heads=4, mlp=64, zoom_keep=0.5625).eval()
    assert head.base_size == (48, 48) and head.grid_hi == (8, 8)
    lengths = []
    h = head.encoder.register_forward_pre_hook(lambda m, args: lengths.append(args[0].shape[1]))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = head(x)
    h.remove()
    # first pass: base view (36 patches + class token) for the attention; second: the 36 kept of 64
    assert lengths == [37, 1 + keep_count((8, 8), 0.5625)] and lengths[1] == 37
    assert out.shape == (2, 32) and torch.isfinite(out).all()
    # what it ranks the patches by: the class token's attention over the base-view patches
    attn = head.patch_attention(x)
    assert attn.shape == (2, 36) and (attn > 0).all() and (attn.sum(1) < 1.0).all()


def test_multiscale_fusion_weights_three_scales_and_each_scale_gets_a_loss():
    m = tiny("multiscale")
    H, W = m.cfg.ground_size
    feats = m.ground.trunk_features(torch.rand(6, 3, H, W))
    maps = m.ground.tail(feats)
    assert [tuple(t.shape[1:]) for t in maps] == [(112, 4, 8), (192, 2, 4), (320, 2, 4)]
    fused, per_scale, w = m.ground.agg.forward_scales(maps)
    assert len(per_scale) == 3 and w.shape == (6, 3)
    assert torch.allclose(w.sum(1), torch.ones(6), atol=1e-5) and (w > 0).all()
    assert torch.allclose(fused, (torch.stack(per_scale, 1) * w.unsqueeze(-1)).sum(1), atol=1e-6)
    fa = m.aerial.trunk_features(torch.rand(3, 3, *m.cfg.aerial_size))
    pad = torch.zeros(3, 2, dtype=torch.bool)
    pairs = m.scale_outputs(feats, fa, 3, 2, pad)  # the fused pair, then one per scale (one pass)
    assert [(g.shape, a.shape) for g, a in pairs] == [((3, 64), (3, 64))] * 4
    assert torch.allclose(pairs[0][0], m.fuse(m.frame_descriptors(feats, 3, 2), pad), atol=1e-5)
    assert torch.allclose(pairs[0][1], m.aerial_from_trunk(fa), atol=1e-5)
    # only the last block of the backbone trains (as in seqgeo_lite); blocks 11-14 keep ImageNet
    trained = {n.split(".")[1] for n, p in m.ground.tail.named_parameters() if p.requires_grad}
    assert trained == {"1"}


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    """The family's real ONNX export (export_onnx, parity check included), made once and shared by the
    tests below: (checkpoint, export folder, manifest)."""
    pytest.importorskip("onnxruntime", reason="ONNX Runtime is in the [ort] extra")
    from geoloc_ros.inference.onnx_export import export_onnx

    tmp = tmp_path_factory.mktemp(model.cfg.name)
    ck = tmp / f"{model.cfg.name}.pt"
    save_checkpoint(ck, model, half=False)
    return ck, tmp / "onnx", export_onnx(ck, tmp / "onnx", progress=False)


def test_onnx_export_parity_for_every_family(model, exported):
    ck, onnx_dir, manifest = exported
    assert manifest["parity"]["passed"] and manifest["parity"]["max_l2"] < 1e-4


def test_onnx_export_of_every_family_runs_through_the_encoder_api(model, exported):
    from geoloc_ros.inference.select import load_encoder
    from geoloc_ros.inference.torch_backend import TorchEncoder

    ck, onnx_dir, _ = exported
    # the node's way in: load_encoder on the export folder (what the `model` parameter names)
    ort, tch = load_encoder(onnx_dir, backend="onnxruntime", threads=1), TorchEncoder(ck)
    assert ort.identity["preset"] == model.cfg.name and ort.backend == "onnxruntime"
    rng = np.random.default_rng(1)
    frames = (rng.random((4, *model.cfg.ground_size, 3)) * 255).astype(np.uint8)
    tiles = (rng.random((2, *model.cfg.aerial_size, 3)) * 255).astype(np.uint8)
    assert np.abs(ort.encode_sequence(frames) - tch.encode_sequence(frames)).max() < 1e-4
    assert np.abs(ort.encode_aerial(tiles) - tch.encode_aerial(tiles)).max() < 1e-4


def test_second_stage_starts_from_the_first_and_other_presets_are_refused(tmp_path):
    from geoloc_ros.training.trainer import init_weights

    stage1 = build_model(ModelConfig(**{**COMMON, **CONFIGS["vit_crop"], "name": "s1", "zoom_keep": 1.0,
                                        "aerial_size": (96, 96)}), pretrained=False)
    ck = tmp_path / "s1.pt"
    save_checkpoint(ck, stage1, half=False)
    stage2 = tiny("vit_crop")
    init_weights(stage2, ck)
    assert all(torch.equal(stage2.state_dict()[k], v) for k, v in stage1.state_dict().items())
    with pytest.raises(IncompatibleArtifact, match="does not fit preset t_hybrid"):
        init_weights(tiny("hybrid_self"), ck)
    # a checkpoint of any family round-trips through the manifest-checked loader
    back, m = load_checkpoint(ck)
    assert m["config"]["encoder"] == "vit" and back.cfg.zoom_keep == 1.0
