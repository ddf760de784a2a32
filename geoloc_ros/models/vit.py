"""Transformer image heads: the L2LTR hybrid (CNN feature map -> ViT) and the TransGeo / EgoTR
pure ViT, both with learnable position embeddings and a class token.

* ``Attention`` / ``Block``: pre-norm multi-head attention + MLP. A block takes ``x`` (queries)
  and ``context`` (keys and values); ``context is x`` is plain self-attention.
* ``ViTEncoder``: the stack. ``attention="self_cross"`` is L2LTR's self-cross attention: the
  queries of layer l come from its input (the output of layer l-1) while its keys and values come
  from the input of layer l-1 (the previous layer's tokens), so information from adjacent layers
  is mixed instead of only refined; the first layer has no previous layer and attends to itself.
* ``ViTHead``: tokens from a feature map (``patch=1``: one token per CNN position, L2LTR's hybrid)
  or from image patches (``patch=p``: TransGeo/EgoTR) -> encoder -> class token -> descriptor.
  With ``zoom_keep < 1`` (TransGeo's attention-guided non-uniform crop, second training stage)
  the head first looks at the image at the base resolution, takes the class token's attention
  over the patches, keeps the ``zoom_keep`` fraction of the high-resolution patches with the most
  attention and encodes only those: the compute saved on dropped (uninformative) patches is spent
  on resolution for the informative ones (same token count as the base view).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

ATTENTIONS = ("self", "self_cross")


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"transformer width {dim} is not divisible by {heads} heads")
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """x [B, N, C] (queries), context [B, M, C] (keys, values) -> ([B, N, C], attention [B, h, N, M])."""
        B, N, C = x.shape
        h = self.heads
        q = self.q(x).view(B, N, h, C // h).transpose(1, 2)
        k, v = self.kv(context).view(B, context.shape[1], 2, h, C // h).permute(2, 0, 3, 1, 4)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(y), attn


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        q = self.norm1(x)
        kv = q if context is x else self.norm1(context)
        y, attn = self.attn(q, kv)
        x = x + self.drop(y)
        return x + self.drop(self.mlp(self.norm2(x))), attn


class ViTEncoder(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, mlp: int, attention: str = "self", dropout: float = 0.0):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"attention {attention!r} is not one of {', '.join(ATTENTIONS)}")
        self.attention = attention
        self.blocks = nn.ModuleList(Block(dim, heads, mlp, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, N, C] -> (normalised tokens [B, N, C], last layer's attention [B, h, N, N])."""
        prev, attn = x, None
        for blk in self.blocks:
            context = prev if self.attention == "self_cross" else x
            prev, (x, attn) = x, blk(x, context)
        return self.norm(x), attn


def select_patches(attn: torch.Tensor, grid_lo: Tuple[int, int], grid_hi: Tuple[int, int], keep: float) -> torch.Tensor:
    """Indices [B, k] of the high-resolution patches to keep, k = round(keep * H_hi * W_hi).

    ``attn`` [B, N_lo] is the class token's attention over the base-resolution patches; it is
    resampled onto the high-resolution patch grid and the k patches with the most attention are
    kept, in descending order of attention."""
    B = attn.shape[0]
    a = attn.reshape(B, 1, *grid_lo)
    a = F.interpolate(a, size=grid_hi, mode="bilinear", align_corners=False).flatten(1)
    k = keep_count(grid_hi, keep)
    return a.topk(k, dim=1).indices


def keep_count(grid_hi: Tuple[int, int], keep: float) -> int:
    return max(1, int(round(keep * grid_hi[0] * grid_hi[1])))


class ViTHead(nn.Module):
    """An image or feature map [B, C, H, W] -> descriptor [B, out_dim] (not normalised)."""

    def __init__(self, in_channels: int, size: Tuple[int, int], out_dim: int, *, patch: int = 1, dim: int = 192,
                 depth: int = 4, heads: int = 4, mlp: int = 384, attention: str = "self", dropout: float = 0.0,
                 zoom_keep: float = 1.0):
        super().__init__()
        H, W = size
        self.patch, self.input_size, self.zoom_keep = patch, (H, W), float(zoom_keep)
        if self.zoom_keep < 1.0:
            # the base view has (about) as many patches as are kept from the high-resolution one
            s = math.sqrt(self.zoom_keep)
            self.base_size = (max(patch, int(round(H * s / patch)) * patch), max(patch, int(round(W * s / patch)) * patch))
        else:
            self.base_size = (H, W)
        if self.base_size[0] % patch or self.base_size[1] % patch or H % patch or W % patch:
            raise ValueError(f"input {size} is not a multiple of the patch size {patch}")
        self.grid_lo = (self.base_size[0] // patch, self.base_size[1] // patch)
        self.grid_hi = (H // patch, W // patch)
        self.embed = nn.Conv2d(in_channels, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 1 + self.grid_lo[0] * self.grid_lo[1], dim) * 0.02)
        self.encoder = ViTEncoder(dim, depth, heads, mlp, attention, dropout)
        self.out = nn.Linear(dim, out_dim, bias=False)

    def _tokens(self, x: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        """Patch tokens + position embedding (resampled when ``grid`` is not the base grid) [B, N, C]."""
        t = self.embed(x).flatten(2).transpose(1, 2)
        pos = self.pos[:, 1:]
        if grid != self.grid_lo:
            C = pos.shape[-1]
            pos = F.interpolate(pos.transpose(1, 2).reshape(1, C, *self.grid_lo), size=grid, mode="bilinear",
                                align_corners=False).flatten(2).transpose(1, 2)
        return t + pos

    def _encode(self, tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        cls = (self.cls + self.pos[:, :1]).expand(tokens.shape[0], -1, -1)
        y, attn = self.encoder(torch.cat([cls, tokens], dim=1))
        return y[:, 0], attn

    def base_view(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == self.base_size:
            return x
        return F.interpolate(x, size=self.base_size, mode="bilinear", align_corners=False)

    def patch_attention(self, x: torch.Tensor) -> torch.Tensor:
        """The class token's attention over the base-view patches [B, N_lo] (mean over heads)."""
        _, attn = self._encode(self._tokens(self.base_view(x), self.grid_lo))
        return attn[:, :, 0, 1:].mean(dim=1)

    def forward(self, x: torch.Tensor, layouts: Optional[torch.Tensor] = None) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(f"input {tuple(x.shape[-2:])} does not match the preset's {self.input_size}: the input "
                             f"image size differs from the one the model was built for")
        if self.zoom_keep >= 1.0:
            return self.out(self._encode(self._tokens(self.base_view(x), self.grid_lo))[0])
        with torch.no_grad():  # where to look is decided by the current weights, not trained through
            keep = select_patches(self.patch_attention(x), self.grid_lo, self.grid_hi, self.zoom_keep)
        t = self._tokens(x, self.grid_hi)
        t = torch.gather(t, 1, keep.unsqueeze(-1).expand(-1, -1, t.shape[-1]))
        return self.out(self._encode(t)[0])
