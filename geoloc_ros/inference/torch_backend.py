"""PyTorch backend: the checkpoint itself (the reference the other backends are checked against)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .base import Encoder


class TorchEncoder(Encoder):
    backend = "torch"

    def __init__(self, checkpoint: Path, *, device: str = "cpu", threads: Optional[int] = None):
        import torch

        from ..models.crossview import load_checkpoint

        model, manifest = load_checkpoint(Path(checkpoint))
        super().__init__(manifest)
        if threads:
            torch.set_num_threads(int(threads))
        self._torch = torch
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.checkpoint = Path(checkpoint)
        self.detail = f"device={self.device}, threads={torch.get_num_threads()}"

    def _run(self, fn, *arrays):
        t = self._torch
        with t.inference_mode():
            out = fn(*[t.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in arrays])
        return out.float().cpu().numpy()

    def _frames(self, x: np.ndarray) -> np.ndarray:
        m = self.model
        return self._run(lambda im: m.frame_descriptors(m.ground.trunk_features(im), len(im), 1)[:, 0], x)

    def _fuse(self, feats: np.ndarray, pad: np.ndarray) -> np.ndarray:
        return self._run(self.model.fuse, feats, pad)

    def _aerial(self, x: np.ndarray) -> np.ndarray:
        return self._run(self.model.encode_aerial, x)
