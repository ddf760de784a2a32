"""The ``Encoder`` interface every backend implements, and the one shared pre-processing.

A keyframe costs one backbone pass: ``frame_features`` encodes new frames (the node caches the
result per frame), ``fuse`` runs only the temporal model over cached features of the last T
frames, ``encode_aerial`` encodes heading-up aerial tiles (index building).

Pre-processing is defined once here (resize to the model's input size, scale to [0, 1],
HWC -> CHW) and is the same for every backend; ImageNet normalisation and the perspective
warp of aerial tiles are inside the model graphs.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from ..core.errors import InvalidArgument
from ..core.manifest import model_identity
from ..models.config import ModelConfig


def to_model_input(images: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """uint8 RGB images [N, H, W, 3] (any H, W) -> float32 [N, 3, h, w] in [0, 1], resized to ``size``.

    A float array [N, 3, h, w] already at ``size`` passes through unchanged (values in [0, 1]).
    """
    images = np.asarray(images)
    h, w = size
    if images.ndim == 4 and images.shape[1] == 3 and images.dtype != np.uint8:
        if tuple(images.shape[2:]) != (h, w):
            raise InvalidArgument(f"float input {tuple(images.shape)} must already be [N, 3, {h}, {w}]")
        return np.ascontiguousarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise InvalidArgument(f"expected uint8 RGB images [N, H, W, 3], got {images.dtype} {tuple(images.shape)}")
    if images.shape[1:3] != (h, w):
        from PIL import Image

        images = np.stack([np.asarray(Image.fromarray(im).resize((w, h), Image.BILINEAR)) for im in images])
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


class Encoder(ABC):
    """One model on one backend. Subclasses implement ``_frames``, ``_fuse`` and ``_aerial``
    on pre-processed float32 arrays and set ``backend``."""

    backend: str = "?"

    def __init__(self, manifest: Mapping[str, Any]):
        self.manifest: Dict[str, Any] = dict(manifest)
        self.identity = model_identity(self.manifest)
        self.config = ModelConfig.from_dict(self.manifest["config"])
        self.detail = ""  # backend detail for logs/diagnostics (providers, device, precision)

    # ---- facts about the model --------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def max_frames(self) -> int:
        return self.config.max_frames

    @property
    def ground_size(self) -> Tuple[int, int]:
        return self.config.ground_size

    @property
    def aerial_size(self) -> Tuple[int, int]:
        return self.config.aerial_size

    def describe(self) -> str:
        return f"{self.identity['preset']} ({self.identity['fingerprint'][:12]}) on {self.backend}" + \
            (f" [{self.detail}]" if self.detail else "")

    # ---- public API -------------------------------------------------------------------
    def frame_features(self, images: np.ndarray) -> np.ndarray:
        """Ground frames [N, H, W, 3] uint8 RGB -> per-frame features [N, D] float32 (cache these)."""
        x = to_model_input(images, self.ground_size)
        if len(x) == 0:
            return np.zeros((0, self.dim), np.float32)
        return np.asarray(self._frames(x), dtype=np.float32)

    def fuse(self, feats: np.ndarray, pad: Optional[np.ndarray] = None) -> np.ndarray:
        """Per-frame features [B, T, D] (oldest..newest) and pad [B, T] (True = missing) -> [B, D]."""
        feats = np.ascontiguousarray(feats, dtype=np.float32)
        if feats.ndim != 3 or feats.shape[2] != self.dim:
            raise InvalidArgument(f"frame features must be [B, T, {self.dim}], got {tuple(feats.shape)}")
        B, T = feats.shape[:2]
        if not (1 <= T <= self.max_frames):
            raise InvalidArgument(f"sequence length {T} is outside 1..{self.max_frames} (the model's max_frames)")
        pad = np.zeros((B, T), bool) if pad is None else np.asarray(pad, dtype=bool)
        if pad.shape != (B, T):
            raise InvalidArgument(f"pad must be [{B}, {T}], got {tuple(pad.shape)}")
        if pad.all(axis=1).any():
            raise InvalidArgument("a sequence has no valid frame")
        return np.asarray(self._fuse(feats, pad), dtype=np.float32)

    def encode_sequence(self, frames: np.ndarray) -> np.ndarray:
        """Convenience for offline use: frames [T, H, W, 3] uint8 (oldest..newest) -> descriptor [D]."""
        return self.fuse(self.frame_features(frames)[None])[0]

    def encode_aerial(self, tiles: np.ndarray) -> np.ndarray:
        """Heading-up aerial tiles [N, H, W, 3] uint8 RGB -> descriptors [N, D] float32."""
        x = to_model_input(tiles, self.aerial_size)
        if len(x) == 0:
            return np.zeros((0, self.dim), np.float32)
        return np.asarray(self._aerial(x), dtype=np.float32)

    # ---- backend hooks ----------------------------------------------------------------
    @abstractmethod
    def _frames(self, x: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _fuse(self, feats: np.ndarray, pad: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _aerial(self, x: np.ndarray) -> np.ndarray: ...
