"""Hierarchical multi-scale attention fusion (after the ICASSP 2021 cross-view work).

Three backbone stages of EfficientNet-Lite0 are tapped: the map entering block 11 (stride 16,
112 channels), the one entering block 15 (stride 32, 192 channels) and the last block's output
(stride 32, 320 channels). Each scale gets its own spatial attention (``maps`` softmax maps over
its positions, pooling a 1x1-reduced feature map) and its own descriptor; a small scale-attention
layer then weights the three (softmax over scales, per image) and the fused descriptor is their
weighted sum. Training adds a loss on each scale's own descriptor with weights (w1, w2, w3), so
every scale must be discriminative on its own, not only in the mix.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .efficientnet import EfficientNetLite0, block_channels, block_stride

TAPS = (11, 15, 16)  # feature maps entering these blocks (16 = after the last block)


class StageTail(nn.Module):
    """Blocks [start, 16) of EfficientNet-Lite0 returning the maps at ``TAPS`` (the input counts as
    the map entering ``start``). Stages that end at or before block ``train_from`` stay frozen (their
    ImageNet weights), so only the last block trains, as in ``seqgeo_lite``."""

    def __init__(self, start: int, train_from: int = 15):
        super().__init__()
        if start > TAPS[0]:
            raise ValueError(f"the multi-scale taps start at block {TAPS[0]}; freeze_blocks {start} is past it")
        self.start = start
        ranges = [(a, b) for a, b in zip((start,) + TAPS[:-1], TAPS) if b > a]
        self.stages = nn.ModuleList(EfficientNetLite0(a, b) for a, b in ranges)
        self.first_is_input = start == TAPS[0]
        for stage, (_, b) in zip(self.stages, ranges):
            if b <= train_from:
                stage.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        out = [x] if self.first_is_input else []
        for s in self.stages:
            x = s(x)
            out.append(x)
        return out

    def load_imagenet(self) -> None:
        for s in self.stages:
            s.load_imagenet()


def tap_shapes(size: Tuple[int, int]) -> List[Tuple[int, Tuple[int, int]]]:
    """(channels, (h, w)) of each tapped map for an input image of ``size``."""
    return [(block_channels(t), (size[0] // block_stride(t), size[1] // block_stride(t))) for t in TAPS]


class ScaleAttentionPool(nn.Module):
    """[B, C, h, w] -> [B, maps * channels]: ``maps`` spatial attention maps pool a reduced map."""

    def __init__(self, in_channels: int, channels: int, maps: int):
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, channels, 1), nn.BatchNorm2d(channels),
                                    nn.ReLU(inplace=True))
        self.score = nn.Conv2d(in_channels, maps, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.score(x).flatten(2).softmax(dim=-1)  # [B, M, N]
        f = self.reduce(x).flatten(2)  # [B, C', N]
        return torch.bmm(a, f.transpose(1, 2)).flatten(1)


class MultiScaleFusion(nn.Module):
    """Three tapped maps -> fused descriptor [B, dim] (``forward``) or also the per-scale ones."""

    def __init__(self, shapes: Sequence[Tuple[int, Tuple[int, int]]], dim: int, channels: int = 128, maps: int = 4):
        super().__init__()
        self.shapes = [tuple(s) for _, s in shapes]
        self.pools = nn.ModuleList(ScaleAttentionPool(c, channels, maps) for c, _ in shapes)
        self.proj = nn.ModuleList(nn.Linear(maps * channels, dim, bias=False) for _ in shapes)
        self.scale_attn = nn.Sequential(nn.Linear(len(shapes) * maps * channels, 128), nn.ReLU(inplace=True),
                                        nn.Linear(128, len(shapes)))

    def forward_scales(self, maps: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, List[torch.Tensor], torch.Tensor]:
        """(fused [B, D], per-scale descriptors [B, D] each (L2-normalised), scale weights [B, S])."""
        if [tuple(m.shape[-2:]) for m in maps] != self.shapes:
            raise ValueError(f"feature maps {[tuple(m.shape[-2:]) for m in maps]} do not match the preset's "
                             f"{self.shapes}: the input image size differs from the one the model was built for")
        pooled = [p(m) for p, m in zip(self.pools, maps)]
        desc = [F.normalize(proj(p), dim=-1) for proj, p in zip(self.proj, pooled)]
        w = self.scale_attn(torch.cat(pooled, dim=1)).softmax(dim=-1)
        fused = (torch.stack(desc, dim=1) * w.unsqueeze(-1)).sum(dim=1)
        return fused, desc, w

    def forward(self, maps: Sequence[torch.Tensor], layouts=None) -> torch.Tensor:
        return self.forward_scales(maps)[0]
