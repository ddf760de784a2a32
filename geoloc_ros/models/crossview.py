"""The cross-view model: a ground branch (T frames -> one descriptor) and an aerial branch
(a heading-up tile -> one descriptor) in the same L2-normalised space.

Each branch: EfficientNet-Lite0 trunk (blocks [0, freeze_blocks), frozen, ImageNet) -> tail
(the remaining blocks, trained) -> aggregator (GeoDTR layouts or GeM) -> per-image descriptor.
The ground branch then fuses the frames with ``TemporalFusion`` (or ``MeanFusion``).
Branches do not share weights. Inputs are float images in [0, 1], [.., 3, H, W].
"""
from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import IncompatibleArtifact, InvalidArgument
from ..core.manifest import check_manifest
from .aggregators import GeMAggregator, LayoutAggregator
from .config import CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_VERSION, CHECKPOINT_REBUILD, ModelConfig
from .efficientnet import IMAGENET_MEAN, IMAGENET_STD, EfficientNetLite0, block_channels, block_stride
from .temporal import MeanFusion, TemporalFusion


def perspective_grid(cfg: ModelConfig) -> torch.Tensor:
    """grid_sample grid [1, H, W, 2] that renders a heading-up tile (side ``tile_m``, vehicle at the
    centre, heading up) as the forward pinhole camera of ``cfg`` would see a flat ground."""
    import math

    H, W = cfg.ground_size
    fx = (W / 2.0) / math.tan(math.radians(cfg.camera_hfov_deg) / 2.0)
    v = torch.arange(H, dtype=torch.float64) + 0.5 - H / 2.0
    u = torch.arange(W, dtype=torch.float64) + 0.5 - W / 2.0
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    ahead = torch.where(vv > 0, fx * cfg.camera_height_m / vv.clamp(min=1e-6), torch.full_like(vv, 1e6))
    right = ahead * uu / fx
    half = cfg.tile_m / 2.0
    gx = right / half  # tile column: -1 left edge .. 1 right edge
    gy = -ahead / half  # tile row: -1 top (ahead) .. 1 bottom
    return torch.stack([gx, gy], dim=-1).float().unsqueeze(0)


def _head(cfg: ModelConfig, size: Tuple[int, int], aerial: bool) -> Tuple[nn.Module, nn.Module]:
    """(tail, aggregator) after the frozen trunk for ``cfg.encoder``; ``size`` is the image size the
    trunk sees (the ground size for a perspective-warped aerial tile)."""
    fb = cfg.freeze_blocks
    if cfg.encoder == "multiscale":
        from .multiscale import MultiScaleFusion, StageTail, tap_shapes

        return StageTail(fb), MultiScaleFusion(tap_shapes(size), cfg.dim)
    if cfg.encoder in ("hybrid_vit", "vit"):
        from .vit import ViTHead

        if cfg.encoder == "vit":
            in_ch, spatial, patch = 3, size, cfg.patch
        else:  # one token per position of the frozen trunk's map
            in_ch, spatial, patch = block_channels(fb), (size[0] // block_stride(fb), size[1] // block_stride(fb)), 1
        return nn.Identity(), ViTHead(in_ch, spatial, cfg.dim, patch=patch, dim=cfg.vit_dim, depth=cfg.vit_depth,
                                      heads=cfg.vit_heads, mlp=cfg.vit_mlp, attention=cfg.attention,
                                      dropout=cfg.dropout, zoom_keep=cfg.zoom_keep if aerial else 1.0)
    # cnn: freeze_blocks == 16 means the whole backbone is frozen, only aggregator and fusion train
    tail = EfficientNetLite0(fb, 16) if fb < 16 else nn.Identity()
    channels, spatial = block_channels(16), (size[0] // 32, size[1] // 32)
    if cfg.aggregator == "layout":
        return tail, LayoutAggregator(channels, cfg.dim, spatial, k=cfg.layouts, channels=cfg.layout_channels)
    return tail, GeMAggregator(channels, cfg.dim)


class Branch(nn.Module):
    """Trunk (frozen) + tail + aggregator for one view."""

    def __init__(self, cfg: ModelConfig, size: Tuple[int, int], warp: bool = False, aerial: bool = False):
        super().__init__()
        self.input_size = tuple(size)
        if warp:  # the tile is rendered into the camera view first; the rest sees a ground-sized image
            self.register_buffer("grid", perspective_grid(cfg), persistent=False)
            size = cfg.ground_size
        else:
            self.grid = None
        self.trunk = EfficientNetLite0(0, cfg.freeze_blocks) if cfg.freeze_blocks > 0 else None
        self.tail, self.agg = _head(cfg, size, aerial)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if self.trunk is not None:
            self.trunk.requires_grad_(False)
        self.train(self.training)  # apply the frozen-BatchNorm rule from construction on

    def train(self, mode: bool = True):
        super().train(mode)
        if self.trunk is not None:
            self.trunk.eval()  # frozen: BatchNorm statistics stay ImageNet's
        for m in self.tail.modules():  # frozen BatchNorm statistics in the trained tail too: small, correlated
            if isinstance(m, nn.BatchNorm2d):  # batches would otherwise make train and eval behave differently
                m.eval()
        return self

    def trunk_features(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] -> the feature map entering the tail (what training caches)."""
        if tuple(images.shape[-2:]) != self.input_size or images.shape[-3] != 3:
            raise InvalidArgument(f"images of shape {tuple(images.shape[-3:])} do not match the model's "
                                  f"(3, {self.input_size[0]}, {self.input_size[1]})")
        x = (images - self.mean) / self.std
        if self.grid is not None:
            x = F.grid_sample(x, self.grid.expand(len(x), -1, -1, -1), mode="bilinear", padding_mode="zeros",
                              align_corners=False)
        if self.trunk is None:
            return x
        self.trunk.eval()  # never batch statistics here: features must not depend on the batch or the mode
        with torch.no_grad():
            return self.trunk(x)

    def from_trunk(self, feats: torch.Tensor, layouts: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Trunk features -> un-normalised descriptor [N, D]."""
        return self.agg(self.tail(feats), layouts)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.from_trunk(self.trunk_features(images))


class CrossViewModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.ground = Branch(cfg, cfg.ground_size)
        self.aerial = Branch(cfg, cfg.aerial_size, warp=cfg.aerial_view == "perspective", aerial=True)
        if cfg.temporal == "tfam":
            self.temporal = TemporalFusion(cfg.dim, cfg.max_frames, cfg.temporal_layers, cfg.temporal_heads,
                                           cfg.temporal_ff, cfg.dropout)
        else:
            self.temporal = MeanFusion()

    # ---- encoders used at inference -----------------------------------------------------
    def encode_ground(self, frames: torch.Tensor, pad: Optional[torch.Tensor] = None) -> torch.Tensor:
        """frames [B, T, 3, H, W] (oldest..newest, [0, 1]); pad [B, T] True = missing -> [B, D]."""
        if frames.dim() != 5:
            raise InvalidArgument(f"ground frames must be [B, T, 3, H, W], got {tuple(frames.shape)}")
        B, T = frames.shape[:2]
        if T == 0:
            raise InvalidArgument("a ground sequence needs at least one frame")
        feats = self.ground.trunk_features(frames.flatten(0, 1))
        return self.fuse(self.frame_descriptors(feats, B, T), pad)

    def encode_aerial(self, tiles: torch.Tensor) -> torch.Tensor:
        """tiles [B, 3, H, W] in [0, 1] -> [B, D]."""
        return F.normalize(self.aerial(tiles), dim=-1)

    # ---- pieces used by training on cached trunk features ------------------------------
    def frame_descriptors(self, feats: torch.Tensor, B: int, T: int,
                          layouts: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Trunk features of B*T frames -> L2-normalised per-frame descriptors [B, T, D]."""
        return F.normalize(self.ground.from_trunk(feats, layouts), dim=-1).view(B, T, -1)

    def fuse(self, frame_desc: torch.Tensor, pad: Optional[torch.Tensor] = None) -> torch.Tensor:
        if pad is None:
            pad = torch.zeros(frame_desc.shape[:2], dtype=torch.bool, device=frame_desc.device)
        return self.temporal(frame_desc, pad)

    def scale_outputs(self, ground_feats: torch.Tensor, aerial_feats: torch.Tensor, B: int, T: int,
                      pad: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Multi-scale encoders, in one pass: (ground sequence, aerial) descriptors of the fused output
        (what ``fuse(frame_descriptors)`` and ``aerial_from_trunk`` give), then of each scale for the
        per-scale losses; the frames of every scale go through the same temporal fusion."""
        gf, gs, _ = self.ground.agg.forward_scales(self.ground.tail(ground_feats))
        af, as_, _ = self.aerial.agg.forward_scales(self.aerial.tail(aerial_feats))
        return [(self.fuse(F.normalize(g, dim=-1).view(B, T, -1), pad), F.normalize(a, dim=-1))
                for g, a in [(gf, af)] + list(zip(gs, as_))]

    def aerial_from_trunk(self, feats: torch.Tensor, layouts: Optional[torch.Tensor] = None) -> torch.Tensor:
        return F.normalize(self.aerial.from_trunk(feats, layouts), dim=-1)

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    def load_imagenet(self) -> None:
        """Initialise both backbones (trunk and tail) from the shipped ImageNet weights."""
        for b in (self.ground, self.aerial):
            for part in (b.trunk, b.tail):
                if hasattr(part, "load_imagenet"):
                    part.load_imagenet()


WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


def default_checkpoint(preset: str = "seqgeo_lite") -> Path:
    """The trained default shipped with the package (``geoloc_ros/weights/<preset>.pt``)."""
    p = WEIGHTS_DIR / f"{preset}.pt"
    if not p.is_file():
        raise IncompatibleArtifact(f"no shipped checkpoint for preset {preset!r} in {WEIGHTS_DIR}; train one with "
                                   f"`geoloc train --preset {preset}`")
    return p


def count_parameters(model: nn.Module) -> Dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def build_model(cfg: ModelConfig, pretrained: bool = True) -> CrossViewModel:
    m = CrossViewModel(cfg)
    if pretrained:
        m.load_imagenet()
    return m


# ---- checkpoints ---------------------------------------------------------------------------

def state_fingerprint(state: Dict[str, torch.Tensor]) -> str:
    """SHA-256 over the (name, dtype, shape, bytes) of every tensor: identifies the weights."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: Path, model: CrossViewModel, *, extra: Optional[Dict] = None, half: bool = True) -> Dict:
    """Write ``path`` (torch, weights only) and ``path.with_suffix('.json')`` (manifest).

    ``half`` stores floating tensors as float16 (halves the file; weights are cast back to
    float32 on load). Written to a temporary name and renamed, so a crash leaves no
    half-written checkpoint that looks complete.
    """
    path = Path(path)
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu()
             for k, v in model.state_dict().items()}
    manifest = {
        "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_FORMAT_VERSION,
        "preset": model.cfg.name, "config": model.cfg.to_dict(), "dim": model.cfg.dim,
        "parameters": count_parameters(model), "dtype": "float16" if half else "float32",
        "fingerprint": state_fingerprint(state), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    write_checkpoint_file(path, manifest, state)
    return manifest


def write_checkpoint_file(path: Path, manifest: Dict, state: Dict[str, torch.Tensor]) -> None:
    """``path`` (torch: manifest + state_dict) and ``path.with_suffix('.json')`` (the manifest), each
    written to a temporary name and renamed, so a crash never leaves a complete-looking half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"manifest": manifest, "state_dict": state}, buf)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    side = path.with_suffix(".json")
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(side)


def read_checkpoint_manifest(path: Path) -> Dict:
    path = Path(path)
    if not path.is_file():
        raise IncompatibleArtifact(f"checkpoint {path} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated / not a torch file
        raise IncompatibleArtifact(f"{path} is not a readable geoloc checkpoint: {exc}") from exc
    check_manifest(blob.get("manifest", {}) if isinstance(blob, dict) else {}, CHECKPOINT_FORMAT,
                   CHECKPOINT_FORMAT_VERSION, source=path, what="geoloc checkpoint", rebuild=CHECKPOINT_REBUILD)
    return blob


def load_checkpoint(path: Path, *, preset: Optional[str] = None) -> Tuple[CrossViewModel, Dict]:
    """Model (eval mode, float32) and manifest. ``preset`` (if given) must match the checkpoint's."""
    blob = read_checkpoint_manifest(path)
    m = blob["manifest"]
    if preset is not None and m["preset"] != preset:
        raise IncompatibleArtifact(f"{path} holds preset {m['preset']!r}, not {preset!r}; pass the matching "
                                   f"--preset or another checkpoint")
    state = blob["state_dict"]
    if state_fingerprint(state) != m["fingerprint"]:
        raise IncompatibleArtifact(f"{path}: weights do not match the manifest fingerprint (corrupted file?)")
    cfg = ModelConfig.from_dict(m["config"])
    model = CrossViewModel(cfg)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    except RuntimeError as exc:
        raise IncompatibleArtifact(f"{path} does not fit preset {cfg.name}: {exc}") from exc
    return model.eval(), m
