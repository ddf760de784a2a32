"""Learned features for metric matching: a ground-BEV CNN and an aerial CNN, and the
differentiable score volume they are trained through (OrienterNet-style NLL over x, y, heading).

Both branches are small fully-convolutional nets at the input resolution (0.5 m/px): a full-
resolution stem, half- and quarter-resolution bodies (stride-2 convs, residual and dilated convs)
whose projections are upsampled back and added to a projection of the stem (``DenseEncoder``). Outputs are ``channels`` features,
L2-normalised per cell; the BEV branch also outputs a per-cell weight (sigmoid times the valid
mask, scaled to mean 1 over the valid cells) that the correlation uses. Inputs are raw values, the scaling is in the
graph (so ONNX, torch and the numpy callers cannot disagree on it):

    bev    [N, 5, h, w]: R, G, B in 0..255, valid (0/1), horizontal range from the camera (m)
    aerial [N, 3, H, W]: R, G, B in 0..255

``TorchVolume`` / ``torch_match_bev`` restate ``metric.correlate.match_bev`` in torch (rotated
templates with ``affine_grid``-style sampling grids built from the same matrices, FFT correlation,
the same cosine normalisation, the same axes and crops); ``test_bevmatch`` checks the two agree
on the same features. ``volume_nll`` is the loss.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import IncompatibleArtifact, InvalidArgument
from ..core.manifest import check_manifest
from ..metric.bev import BevGrid
from ..metric.correlate import canvas_for, rigid, volume_axes
from .crossview import state_fingerprint, write_checkpoint_file

CHECKPOINT_FORMAT = "geoloc-bevmatch-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
BEV_INPUTS = ("red", "green", "blue", "valid", "range_m")


@dataclass(frozen=True)
class BevMatchConfig:
    name: str = "bevmatch"
    channels: int = 8  # feature channels (C)
    width: int = 8  # full-resolution channels
    width_low: int = 16  # half-resolution channels (quarter resolution: twice this)
    range_scale_m: float = 30.0  # the BEV's range input is divided by this (and clipped at 2)
    temperature_init: float = 0.1  # initial softmax temperature of the cosine volume

    def __post_init__(self):
        if not (1 <= self.channels <= 64 and 4 <= self.width <= 128 and 4 <= self.width_low <= 256):
            raise InvalidArgument(f"bevmatch sizes out of range: {self}")
        if not (self.range_scale_m > 0 and self.temperature_init > 0):
            raise InvalidArgument(f"bevmatch range_scale_m and temperature_init must be positive: {self}")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "BevMatchConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidArgument(f"unknown bevmatch config keys: {', '.join(unknown)}")
        return cls(**d)


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, padding=dilation * (k // 2), dilation=dilation)


class DenseEncoder(nn.Module):
    """in_ch -> ``channels`` unit features (+ 1 weight when ``weight_head``) at the input size.

    Full resolution: a 3x3 stem and a 3x3 output projection (the fine detail); half resolution:
    a stride-2 conv and a residual conv; quarter resolution: a stride-2 conv and two residual
    convs, one dilated (the context, ~10 m). Coarser maps are projected to the output channels,
    upsampled (bilinear) and added. About 3 k multiply-adds per input pixel at the default widths.
    """

    def __init__(self, in_ch: int, cfg: BevMatchConfig, weight_head: bool):
        super().__init__()
        w, wl, C = cfg.width, cfg.width_low, cfg.channels
        wq = 2 * wl
        self.weight_head = weight_head
        out = C + (1 if weight_head else 0)
        self.stem = _conv(in_ch, w)
        self.down1 = _conv(w, wl, stride=2)
        self.body1 = _conv(wl, wl)
        self.down2 = _conv(wl, wq, stride=2)
        self.body2 = _conv(wq, wq, dilation=2)
        self.body3 = _conv(wq, wq)
        self.out_full = _conv(w, out)
        self.out_half = _conv(wl, out, k=1)
        self.out_quarter = _conv(wq, out, k=1)
        self.channels = C

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        s = F.relu(self.stem(x))
        h = F.relu(self.down1(s))
        h = F.relu(self.body1(h)) + h
        q = F.relu(self.down2(h))
        q = F.relu(self.body2(q)) + q
        q = F.relu(self.body3(q)) + q
        y = self.out_half(h) + F.interpolate(self.out_quarter(q), size=h.shape[-2:], mode="bilinear",
                                             align_corners=False)
        y = self.out_full(s) + F.interpolate(y, size=s.shape[-2:], mode="bilinear", align_corners=False)
        f = F.normalize(y[:, :self.channels], dim=1, eps=1e-6)
        if not self.weight_head:
            return f, None
        return f, torch.sigmoid(y[:, self.channels:self.channels + 1])


class BevMatchModel(nn.Module):
    def __init__(self, cfg: Optional[BevMatchConfig] = None):
        super().__init__()
        self.cfg = cfg or BevMatchConfig()
        self.bev_net = DenseEncoder(len(BEV_INPUTS), self.cfg, weight_head=True)
        self.aerial_net = DenseEncoder(3, self.cfg, weight_head=False)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(self.cfg.temperature_init)))

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def encode_bev(self, bev: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """bev [N, 5, h, w] raw (see the module doc) -> (features [N, C, h, w], weight [N, h, w])."""
        rgb, valid, rng = bev[:, :3], bev[:, 3:4], bev[:, 4:5]
        x = torch.cat([(rgb / 255.0 - 0.5) * valid, valid,
                       torch.clamp(rng / self.cfg.range_scale_m, 0.0, 2.0) * valid], dim=1)
        f, w = self.bev_net(x)
        # the cosine volume does not depend on the weights' scale (only on their ratios), so fix it:
        # mean 1 over the valid cells. A free scale has no gradient but the denominator's epsilon,
        # which Adam amplifies: in training the weights collapsed to ~1e-11 within 100 steps.
        w = w * valid
        n = valid.sum(dim=(1, 2, 3), keepdim=True)
        w = w * (n / (w.sum(dim=(1, 2, 3), keepdim=True) + 1e-6))
        return f, w[:, 0]

    def encode_aerial(self, aerial: torch.Tensor) -> torch.Tensor:
        """aerial [N, 3, H, W] in 0..255 -> features [N, C, H, W]."""
        return self.aerial_net(aerial / 255.0 - 0.5)[0]


def count_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


# ---- the differentiable score volume -----------------------------------------------------------

def template_grids(grid: BevGrid, yaws: Sequence[float]) -> Tuple[np.ndarray, np.ndarray, int]:
    """``grid_sample`` grids (align_corners=True) [R, S, S, 2] that put a BEV on the north-up
    canvas of each heading exactly as ``correlate.rotated_templates`` does with cv2.warpAffine,
    the canvas origins [R, 2] (row, col) and the canvas side S."""
    side, c0 = canvas_for(grid)
    res = grid.res_m
    h, w = grid.shape
    P_inv = np.linalg.inv(grid.pixel_to_vehicle())
    centre = (side - 1) / 2.0
    cols, rows = np.meshgrid(np.arange(side, dtype=float), np.arange(side, dtype=float))
    pts = np.stack([cols.ravel(), rows.ravel(), np.ones(cols.size)])
    out = np.zeros((len(yaws), side, side, 2), np.float32)
    origins = np.zeros((len(yaws), 2), np.int64)
    for k, yaw in enumerate(yaws):
        cs, sn = math.cos(yaw), math.sin(yaw)
        gx, gy = cs * c0[0] - sn * c0[1], sn * c0[0] + cs * c0[1]
        o_c = int(round(centre - gx / res))
        o_r = int(round(centre + gy / res))
        canvas_to_map = np.array([[res, 0.0, -o_c * res], [0.0, -res, o_r * res], [0.0, 0.0, 1.0]])
        M = P_inv @ rigid(0.0, 0.0, -yaw) @ canvas_to_map
        src = M @ pts  # (col, row) in the BEV for every canvas pixel
        out[k, ..., 0] = (2.0 * src[0] / max(w - 1, 1) - 1.0).reshape(side, side)
        out[k, ..., 1] = (2.0 * src[1] / max(h - 1, 1) - 1.0).reshape(side, side)
        origins[k] = (o_r, o_c)
    return out, origins, side


def fast_len(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (FFT sizes: a prime factor like 47 makes pocketfft 2-3x slower)."""
    best = 1 << max(0, (int(n) - 1).bit_length())
    p5 = 1
    while p5 < 2 * n:
        p35 = p5
        while p35 < 2 * n:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _fft_corr(a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """a [C, H, W], t [R, C, S, S] -> sum_c sum_p t_c(p) a_c(p + s) for s in [0, H-S] x [0, W-S]: [R, .., ..].
    Circular correlation on N >= H samples: the shifts kept never wrap."""
    H, W = a.shape[-2:]
    S = t.shape[-1]
    N = (fast_len(H), fast_len(W))
    Fa = torch.fft.rfft2(a, s=N)
    Ft = torch.fft.rfft2(t, s=N)
    out = torch.fft.irfft2((Fa[None] * Ft.conj()).sum(dim=1), s=N)
    return out[:, :H - S + 1, :W - S + 1]


@dataclass
class TorchVolume:
    scores: torch.Tensor  # [R, Ny, Nx] cosine scores (0 where masked)
    mask: torch.Tensor  # [R, Ny, Nx] bool: overlap >= min_overlap
    xs: np.ndarray
    ys: np.ndarray
    yaws: np.ndarray


def torch_match_bev(feats: torch.Tensor, weight: torch.Tensor, grid: BevGrid, yaws: Sequence[float],
                    aerial_feats: torch.Tensor, aerial_valid: Optional[torch.Tensor], x_left: float, y_top: float, *,
                    min_overlap: float = 0.5, crop: Optional[Tuple[float, float, float]] = None) -> TorchVolume:
    """``correlate.match_bev`` in torch, channel-first: feats [C, h, w], weight [h, w], aerial_feats
    [C, H, W], aerial_valid [H, W] (bool/float or None). ``crop`` = (x, y, half_m) applies the
    matcher's crop to the prior window. Differentiable in feats, weight and aerial_feats."""
    C = feats.shape[0]
    if tuple(feats.shape[1:]) != grid.shape or tuple(weight.shape) != grid.shape:
        raise InvalidArgument(f"BEV features {tuple(feats.shape)} / weight {tuple(weight.shape)} do not match the "
                              f"grid {grid.shape}")
    g_np, origins, side = template_grids(grid, yaws)
    R = len(yaws)
    g = torch.from_numpy(g_np).to(feats.dtype)
    aerial_feats = aerial_feats.to(feats.dtype)
    src = torch.cat([feats, weight.to(feats.dtype)[None]], dim=0)[None].expand(R, -1, -1, -1)
    warped = F.grid_sample(src, g, mode="bilinear", padding_mode="zeros", align_corners=True)
    T, Wt = warped[:, :C], warped[:, C:C + 1]
    H, W = aerial_feats.shape[-2:]
    if H < side or W < side:
        raise InvalidArgument(f"aerial window {H}x{W} is smaller than the template canvas {side}")
    v = torch.ones((H, W), dtype=feats.dtype) if aerial_valid is None else aerial_valid.to(feats.dtype)
    a = aerial_feats * v[None]
    num = _fft_corr(a, T * Wt)
    en = _fft_corr((a * a).sum(dim=0, keepdim=True), Wt)
    with torch.no_grad():
        wsum = Wt.sum(dim=(1, 2, 3))
        cover = _fft_corr(v[None], Wt) / torch.clamp(wsum, min=1e-6)[:, None, None]
    # the template's energy on the valid aerial pixels only, as correlate.score_volume does
    tn2 = _fft_corr(v[None], (Wt * T * T).sum(dim=1, keepdim=True))
    den = torch.sqrt(torch.clamp(tn2, min=0.0) + 1e-12) * torch.sqrt(torch.clamp(en, min=0.0) + 1e-12) + 1e-6
    S = num / den
    xs, ys, offs = volume_axes(origins, tuple(S.shape[1:]), x_left, y_top, grid.res_m)
    ny, nx = len(ys), len(xs)
    scores = torch.stack([S[k, r:r + ny, c:c + nx] for k, (r, c) in enumerate(offs)])
    ok = torch.stack([cover[k, r:r + ny, c:c + nx] for k, (r, c) in enumerate(offs)]) >= min_overlap
    if crop is not None:
        x, y, half = crop
        jx = np.flatnonzero(np.abs(xs - x) <= half + 1e-6)
        iy = np.flatnonzero(np.abs(ys - y) <= half + 1e-6)
        if len(jx) and len(iy):
            sl = (slice(None), slice(int(iy[0]), int(iy[-1]) + 1), slice(int(jx[0]), int(jx[-1]) + 1))
            scores, ok = scores[sl], ok[sl]
            xs, ys = xs[jx[0]:jx[-1] + 1], ys[iy[0]:iy[-1] + 1]
    return TorchVolume(torch.where(ok, scores, torch.zeros_like(scores)), ok, xs, ys, np.asarray(yaws, float))


def volume_target(vol: TorchVolume, x: float, y: float, yaw: float) -> Tuple[int, int, int]:
    """The (heading, row, col) cell nearest to the true pose."""
    k = int(np.argmin(np.abs(np.angle(np.exp(1j * (vol.yaws - yaw))))))
    return k, int(np.argmin(np.abs(vol.ys - y))), int(np.argmin(np.abs(vol.xs - x)))


def volume_nll(scores: torch.Tensor, mask: torch.Tensor, temperature: torch.Tensor,
               target: Tuple[int, int, int]) -> torch.Tensor:
    """-log p(true cell) under a softmax of scores / temperature over the WHOLE (heading, y, x) volume."""
    logits = torch.where(mask, scores / temperature, torch.full_like(scores, -1e4))
    return torch.logsumexp(logits.reshape(-1), dim=0) - logits[target]


# ---- checkpoints -------------------------------------------------------------------------------

def save_bevmatch(path: Path, model: BevMatchModel, *, extra: Optional[Dict] = None) -> Dict:
    """``path`` (torch: manifest + float32 weights) and ``path.with_suffix('.json')`` (the manifest),
    written via a temporary name so a crash never leaves a complete-looking half file."""
    path = Path(path)
    state = {k: v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu()
             for k, v in model.state_dict().items()}
    manifest = {
        "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_FORMAT_VERSION,
        "preset": model.cfg.name, "config": model.cfg.to_dict(), "dim": model.cfg.channels,
        "parameters": count_parameters(model), "temperature": float(model.temperature.detach()),
        "fingerprint": state_fingerprint(state), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    write_checkpoint_file(path, manifest, state)
    return manifest


def load_bevmatch(path: Path, *, expect_fingerprint: Optional[str] = None) -> Tuple[BevMatchModel, Dict]:
    """Model (eval mode) and manifest; refuses a file that is not a bevmatch checkpoint, whose weights
    do not match its fingerprint, or (``expect_fingerprint``) that holds other weights."""
    path = Path(path)
    if not path.is_file():
        raise IncompatibleArtifact(f"bevmatch checkpoint {path} does not exist; train one with `geoloc train-metric`")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise IncompatibleArtifact(f"{path} is not a readable bevmatch checkpoint: {exc}") from exc
    m = check_manifest(blob.get("manifest", {}) if isinstance(blob, dict) else {}, CHECKPOINT_FORMAT,
                       CHECKPOINT_FORMAT_VERSION, source=path, what="bevmatch checkpoint",
                       rebuild="train one with `geoloc train-metric` (or load it with the geoloc_ros that wrote it)")
    state = blob["state_dict"]
    if state_fingerprint(state) != m.get("fingerprint"):
        raise IncompatibleArtifact(f"{path}: weights do not match the manifest fingerprint (corrupted file?)")
    if expect_fingerprint is not None and m["fingerprint"] != expect_fingerprint:
        raise IncompatibleArtifact(f"{path} holds weights {m['fingerprint'][:12]}.., expected "
                                   f"{expect_fingerprint[:12]}..")
    try:
        model = BevMatchModel(BevMatchConfig.from_dict(m["config"]))
        model.load_state_dict(state, strict=True)
    except (RuntimeError, InvalidArgument, KeyError, TypeError) as exc:
        raise IncompatibleArtifact(f"{path} does not fit the bevmatch model: {exc}") from exc
    return model.eval(), m
