"""Temporal fusion (TFAM): a transformer over per-frame descriptors -> one sequence descriptor.

Frame-index position encoding (index 0 = newest frame, so a sequence of any length 1..T_max
lines up on its newest frame), key-padding mask for missing/dropped frames, pooling over the
unmasked frames only, L2-normalised output. ``MeanFusion`` is the no-attention baseline.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def masked_mean(x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of x [B, T, D] ignoring positions where pad [B, T] is True."""
    keep = ~pad.unsqueeze(-1)
    return torch.where(keep, x, 0.0).sum(1) / keep.sum(1).clamp(min=1).to(x.dtype)


class TemporalFusion(nn.Module):
    def __init__(self, dim: int, max_frames: int = 8, layers: int = 2, heads: int = 4, ff: int = 512,
                 dropout: float = 0.1):
        super().__init__()
        self.max_frames = max_frames
        self.pos = nn.Parameter(torch.randn(1, max_frames, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, ff, dropout=dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """x [B, T, D] frames oldest..newest; pad [B, T] True where a frame is missing."""
        T = x.shape[1]
        if T > self.max_frames:
            raise ValueError(f"{T} frames exceed the model's max_frames {self.max_frames}")
        if bool(pad.all(dim=1).any()):
            raise ValueError("a sequence has no valid frame")
        x = x.masked_fill(pad.unsqueeze(-1), 0.0)  # whatever a padded frame holds (even NaN) cannot leak
        pos = self.pos[:, :T].flip(1)  # newest frame gets index 0
        y = self.encoder(x + pos, src_key_padding_mask=pad)
        # residual to the plain mean keeps the descriptor useful from the first step of training
        return F.normalize(self.out(masked_mean(y, pad)) + masked_mean(x, pad), dim=-1)


class MeanFusion(nn.Module):
    """Baseline: the mean of the per-frame descriptors."""

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        if bool(pad.all(dim=1).any()):
            raise ValueError("a sequence has no valid frame")
        return F.normalize(masked_mean(x, pad), dim=-1)
