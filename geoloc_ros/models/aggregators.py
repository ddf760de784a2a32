"""Per-image aggregators: a feature map [B, C, H, W] -> a descriptor [B, D].

* ``GeMAggregator``: generalised-mean pooling + linear projection (the plain baseline).
* ``LayoutAggregator``: GeoDTR geometric layout descriptors. A channel max-pool gives a
  saliency map; a small transformer over its H*W positions (each token = saliency value +
  an index-aware learnable position embedding) predicts K layout maps; each descriptor is
  the Frobenius product of the (projected) feature map with one layout map, so the
  descriptor encodes *where* things are as well as *what* they are. ``forward`` can also
  take counterfactual (random) layouts for GeoDTR's counterfactual loss.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class GeMAggregator(nn.Module):
    def __init__(self, in_channels: int, dim: int, p: float = 3.0):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.proj = nn.Linear(in_channels, dim, bias=False)

    def forward(self, x: torch.Tensor, layouts: Optional[torch.Tensor] = None) -> torch.Tensor:
        p = self.p.clamp(1.0, 8.0)
        g = x.clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1.0 / p)
        return self.proj(g)


class LayoutAggregator(nn.Module):
    """GeoDTR-style geometric layout descriptors (K layouts x C' channels -> D)."""

    def __init__(self, in_channels: int, dim: int, spatial: Tuple[int, int], k: int = 8, channels: int = 64,
                 token_dim: int = 32, layers: int = 2, heads: int = 4):
        super().__init__()
        self.k, self.spatial = k, tuple(spatial)
        n = spatial[0] * spatial[1]
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, channels, 1), nn.BatchNorm2d(channels),
                                    nn.ReLU(inplace=True))
        self.token = nn.Linear(1, token_dim)
        self.pos = nn.Parameter(torch.randn(1, n, token_dim) * 0.02)  # index-aware position encoding
        layer = nn.TransformerEncoderLayer(token_dim, heads, token_dim * 2, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.to_layout = nn.Linear(token_dim, k)
        self.proj = nn.Linear(k * channels, dim, bias=False)  # a bias would let every descriptor collapse onto it

    def layouts(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, K] layout maps (softmax over positions) from the saliency of ``x``."""
        if tuple(x.shape[-2:]) != self.spatial:
            raise ValueError(f"feature map {tuple(x.shape[-2:])} does not match the preset's {self.spatial}: "
                             f"the input image size differs from the one the model was built for")
        sal = x.amax(dim=1).flatten(1).unsqueeze(-1)  # [B, N, 1]
        sal = (sal - sal.mean(dim=1, keepdim=True)) / (sal.std(dim=1, keepdim=True) + 1e-6)
        t = self.encoder(self.token(sal) + self.pos)
        return self.to_layout(t).softmax(dim=1)

    def forward(self, x: torch.Tensor, layouts: Optional[torch.Tensor] = None) -> torch.Tensor:
        lay = self.layouts(x) if layouts is None else layouts
        f = self.reduce(x).flatten(2)  # [B, C', N]
        d = torch.bmm(f, lay)  # [B, C', K]: Frobenius product per layout
        return self.proj(d.transpose(1, 2).flatten(1))

    def random_layouts(self, batch: int, device=None) -> torch.Tensor:
        """Counterfactual layouts: random maps with the same normalisation as real ones."""
        n = self.spatial[0] * self.spatial[1]
        return torch.rand(batch, n, self.k, device=device).softmax(dim=1)


def l2n(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)
