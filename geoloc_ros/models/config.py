"""Model presets: frozen dataclasses read from ``config/models/<name>.yaml`` (no torch import).

Unknown keys are an error naming the key; the registry lists the valid preset names when a
name is wrong. A checkpoint carries its full config, so loading one never needs the YAML.
"""
from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Tuple

from ..core.config import check_keys
from ..core.errors import InvalidArgument

# the checkpoint manifest (inside the .pt and beside it as .json); here so torch-free readers check it
CHECKPOINT_FORMAT = "geoloc-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
CHECKPOINT_REBUILD = "train one with `geoloc train` (or load it with the geoloc_ros that wrote it)"

BACKBONES = ("efficientnet_lite0",)
AGGREGATORS = ("layout", "gem")
TEMPORALS = ("tfam", "mean")
AERIAL_VIEWS = ("tile", "perspective")
# what turns an image (or the frozen trunk's feature map) into a per-image descriptor:
# cnn: trained EfficientNet tail + aggregator (SeqGeo/GeoDTR); hybrid_vit: trunk map -> ViT (L2LTR);
# vit: image patches -> ViT (TransGeo/EgoTR); multiscale: three backbone stages -> hierarchical
# attention fusion
ENCODERS = ("cnn", "hybrid_vit", "vit", "multiscale")
ATTENTIONS = ("self", "self_cross")


@dataclass(frozen=True)
class ModelConfig:
    name: str
    backbone: str = "efficientnet_lite0"
    freeze_blocks: int = 11
    ground_size: Tuple[int, int] = (128, 256)
    aerial_size: Tuple[int, int] = (192, 192)
    aggregator: str = "layout"
    layouts: int = 8
    layout_channels: int = 64
    dim: int = 512
    temporal: str = "tfam"
    max_frames: int = 8
    temporal_layers: int = 2
    temporal_heads: int = 4
    temporal_ff: int = 1024
    dropout: float = 0.1
    # "perspective": the aerial branch first warps the heading-up tile into the forward camera's
    # view (flat-ground projection), so roads and kerbs line up with the ground image
    aerial_view: str = "tile"
    tile_m: float = 96.0
    camera_hfov_deg: float = 90.0
    camera_height_m: float = 1.8
    encoder: str = "cnn"
    # transformer heads (hybrid_vit, vit)
    vit_dim: int = 192
    vit_depth: int = 4
    vit_heads: int = 4
    vit_mlp: int = 384
    attention: str = "self"  # self_cross: L2LTR's self-cross attention between adjacent layers
    patch: int = 8  # vit: patch side in pixels (hybrid_vit: one token per trunk position)
    zoom_keep: float = 1.0  # vit, aerial branch: < 1 = attention-guided crop keeping this fraction of patches
    # multiscale: loss weights of the three per-scale descriptors (the fused one has weight 1)
    scale_loss_weights: Tuple[float, float, float] = (0.3, 0.3, 0.3)

    def __post_init__(self):
        object.__setattr__(self, "ground_size", tuple(int(v) for v in self.ground_size))
        object.__setattr__(self, "aerial_size", tuple(int(v) for v in self.aerial_size))
        object.__setattr__(self, "scale_loss_weights", tuple(float(v) for v in self.scale_loss_weights))
        for value, valid, key in ((self.backbone, BACKBONES, "backbone"), (self.aggregator, AGGREGATORS, "aggregator"),
                                  (self.temporal, TEMPORALS, "temporal"), (self.aerial_view, AERIAL_VIEWS, "aerial_view"),
                                  (self.encoder, ENCODERS, "encoder"), (self.attention, ATTENTIONS, "attention")):
            if value not in valid:
                raise InvalidArgument(f"model {self.name}: {key} {value!r} is not one of {', '.join(valid)}")
        if not (0 <= self.freeze_blocks <= 16):
            raise InvalidArgument(f"model {self.name}: freeze_blocks {self.freeze_blocks} is outside 0..16")
        for key in ("ground_size", "aerial_size"):
            h, w = getattr(self, key)
            if len(getattr(self, key)) != 2 or h % 32 or w % 32 or not (32 <= h <= 1024 and 32 <= w <= 1024):
                raise InvalidArgument(f"model {self.name}: {key} {getattr(self, key)} must be two multiples of 32 "
                                      f"in 32..1024")
        if not (1 <= self.max_frames <= 64):
            raise InvalidArgument(f"model {self.name}: max_frames {self.max_frames} is outside 1..64")
        if self.dim % max(self.temporal_heads, 1) or self.dim < 16:
            raise InvalidArgument(f"model {self.name}: dim {self.dim} must be >= 16 and divisible by temporal_heads")
        self._check_encoder()

    def _check_encoder(self) -> None:
        bad = None
        if self.encoder == "vit" and self.freeze_blocks != 0:
            bad = "a pure ViT (encoder vit) has no CNN trunk: set freeze_blocks 0"
        elif self.encoder == "hybrid_vit" and self.freeze_blocks < 1:
            bad = "encoder hybrid_vit tokenises the frozen CNN trunk's map: freeze_blocks must be 1..16"
        elif self.encoder == "multiscale" and self.freeze_blocks > 11:
            bad = "encoder multiscale taps the backbone from block 11 on: freeze_blocks must be <= 11"
        elif self.encoder in ("vit", "hybrid_vit") and (self.vit_dim % self.vit_heads or self.vit_depth < 1):
            bad = f"vit_dim {self.vit_dim} must be divisible by vit_heads {self.vit_heads} and vit_depth >= 1"
        elif self.encoder == "vit" and any(v % self.patch for v in self.ground_size + self.aerial_size):
            bad = f"ground_size and aerial_size must be multiples of patch {self.patch}"
        elif not (0.05 <= self.zoom_keep <= 1.0) or (self.zoom_keep < 1.0 and self.encoder != "vit"):
            bad = f"zoom_keep {self.zoom_keep} must be in 0.05..1 and is only for encoder vit"
        elif len(self.scale_loss_weights) != 3 or any(w < 0 for w in self.scale_loss_weights):
            bad = f"scale_loss_weights {self.scale_loss_weights} must be three non-negative numbers"
        if bad:
            raise InvalidArgument(f"model {self.name}: {bad}")

    @classmethod
    def from_dict(cls, d: Dict) -> "ModelConfig":
        check_keys(cls, d, "model config")
        if "name" not in d:
            raise InvalidArgument("model config has no 'name'")
        return cls(**d)

    def to_dict(self) -> Dict:
        d = asdict(self)
        d["ground_size"], d["aerial_size"] = list(self.ground_size), list(self.aerial_size)
        d["scale_loss_weights"] = list(self.scale_loss_weights)
        return d


def preset_dirs() -> List[Path]:
    """Where presets are looked up, in order: $GEOLOC_MODEL_PRESETS, the source tree, the install share dir."""
    dirs = []
    if os.environ.get("GEOLOC_MODEL_PRESETS"):
        dirs.append(Path(os.environ["GEOLOC_MODEL_PRESETS"]))
    dirs.append(Path(__file__).resolve().parents[2] / "config" / "models")
    dirs.append(Path(sys.prefix) / "share" / "geoloc_ros" / "config" / "models")
    return dirs


def available_presets() -> Dict[str, Path]:
    found: Dict[str, Path] = {}
    for d in preset_dirs():
        for p in sorted(d.glob("*.yaml")) if d.is_dir() else []:
            found.setdefault(p.stem, p)
    return found


def load_preset(name_or_path: str) -> ModelConfig:
    """A preset by name (``seqgeo_lite``) or by path to a YAML file."""
    import yaml

    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise InvalidArgument(f"model preset file {p} does not exist")
    else:
        presets = available_presets()
        if name_or_path not in presets:
            raise InvalidArgument(f"unknown model preset {name_or_path!r}; available: {', '.join(presets) or 'none'}")
        p = presets[name_or_path]
    d = yaml.safe_load(p.read_text()) or {}
    if not isinstance(d, dict):
        raise InvalidArgument(f"{p}: a model preset must be a YAML mapping")
    return ModelConfig.from_dict(d)
