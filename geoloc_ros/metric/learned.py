"""``LearnedFeatures``: the learned feature extractor of metric matching (``models.bevmatch``).

Same interface as ``features.GradientFeatures`` (registered as "learned")::

    feats, weight = fx.bev(bev_rgb [h, w, 3], valid [h, w], range_m [h, w])  # [h, w, C], [h, w]
    feats_a = fx.aerial(aerial_rgb [H, W, 3])                                # [H, W, C]

The features are unit vectors per cell that do not turn with the view (no ``rotate_channels``).
The weight is the BEV branch's per-cell confidence times the valid mask.

Backends: ``onnxruntime`` runs the export folder (``<engines_dir>/bevmatch/`` by default, made by
``inference.bevmatch_export``; its manifest must name the checkpoint's weights and every graph's
sha256 must match), ``torch`` runs the checkpoint; ``auto`` takes ONNX Runtime when the export is
there and valid, else torch, and logs why. With ``export_missing`` (or $GEOLOC_AUTO_EXPORT=1) and
torch installed, a missing export is made on the spot (a few seconds, parity-checked). No torch
import at module level: the node runs the ONNX path without torch.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np

from ..core.errors import GeolocError, IncompatibleArtifact, InvalidArgument
from .features import register_extractor

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_CHECKPOINT = WEIGHTS_DIR / "bevmatch.pt"
BACKENDS = ("auto", "onnxruntime", "torch")


def bev_input(bev_rgb: np.ndarray, valid: np.ndarray, range_m: np.ndarray) -> np.ndarray:
    """[1, 5, h, w] float32: R, G, B (0..255), valid, range (m), zero outside the valid cells."""
    v = np.asarray(valid, np.float32)
    rgb = np.asarray(bev_rgb, np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[:2] != v.shape or np.shape(range_m) != v.shape:
        raise InvalidArgument(f"BEV rgb {rgb.shape}, valid {v.shape}, range {np.shape(range_m)} do not agree")
    x = np.concatenate([rgb * v[..., None], v[..., None],
                        (np.minimum(np.asarray(range_m, np.float32), 1e3) * v)[..., None]], axis=2)
    return np.ascontiguousarray(x.transpose(2, 0, 1))[None]


def aerial_input(aerial_rgb: np.ndarray) -> np.ndarray:
    a = np.asarray(aerial_rgb, np.float32)
    if a.ndim != 3 or a.shape[2] != 3:
        raise InvalidArgument(f"aerial window must be [H, W, 3] RGB, got {a.shape}")
    return np.ascontiguousarray(a.transpose(2, 0, 1))[None]


def default_export_dir(engines_dir: Optional[Union[str, Path]] = None, preset: str = "bevmatch") -> Path:
    base = Path(engines_dir) if engines_dir is not None else Path(os.environ.get("GEOLOC_ENGINES_DIR", "engines"))
    return base / preset


class _OrtRunner:
    backend = "onnxruntime"

    def __init__(self, export_dir: Path, fingerprint: Optional[str], threads: Optional[int]):
        import onnxruntime as ort

        from ..inference.bevmatch_artifacts import GRAPHS, read_bevmatch_export

        self.manifest = read_bevmatch_export(export_dir, verify=True, expect_fingerprint=fingerprint)
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.sessions = {}
        for key, g in GRAPHS.items():
            path = Path(export_dir) / g["file"]
            try:
                self.sessions[key] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            except Exception as exc:  # ORT raises its own types
                raise IncompatibleArtifact(f"ONNX Runtime cannot load {path}: {exc}") from exc
            names = [i.name for i in self.sessions[key].get_inputs()]
            if names != g["inputs"]:
                raise IncompatibleArtifact(f"{path} has inputs {names}, expected {g['inputs']}")

    def bev(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        f, w = self.sessions["bev"].run(None, {"bev": x})
        return f[0], w[0, 0]

    def aerial(self, x: np.ndarray) -> np.ndarray:
        return self.sessions["aerial"].run(None, {"aerial": x})[0][0]


class _TorchRunner:
    backend = "torch"

    def __init__(self, checkpoint: Path, threads: Optional[int]):
        import torch

        from ..models.bevmatch import load_bevmatch

        self.torch = torch
        if threads:
            torch.set_num_threads(int(threads))
        self.model, self.manifest = load_bevmatch(checkpoint)

    def bev(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        with self.torch.inference_mode():
            f, w = self.model.encode_bev(self.torch.from_numpy(x))
        return f[0].numpy(), w[0].numpy()

    def aerial(self, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model.encode_aerial(self.torch.from_numpy(x))[0].numpy()


class LearnedFeatures:
    """See the module doc. ``checkpoint``: a bevmatch ``.pt`` (default: the shipped
    ``geoloc_ros/weights/bevmatch.pt``); ``export_dir``: its ONNX folder (default
    ``<engines_dir>/bevmatch``)."""

    name = "learned"
    version = 1

    def __init__(self, checkpoint: Optional[Union[str, Path]] = None, *, backend: str = "auto",
                 export_dir: Optional[Union[str, Path]] = None, engines_dir: Optional[Union[str, Path]] = None,
                 threads: Optional[int] = None, export_missing: Optional[bool] = None):
        if backend not in BACKENDS:
            raise InvalidArgument(f"learned features backend {backend!r} is not one of {', '.join(BACKENDS)}")
        from ..inference.bevmatch_artifacts import checkpoint_manifest

        self.checkpoint = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
        ck = checkpoint_manifest(self.checkpoint)
        self.fingerprint = str(ck["fingerprint"])
        self.channels = int(ck["dim"])
        self.temperature = float(ck.get("temperature") or 0.1)
        self.export_dir = Path(export_dir) if export_dir is not None else default_export_dir(engines_dir, ck["preset"])
        if export_missing is None:
            export_missing = os.environ.get("GEOLOC_AUTO_EXPORT", "") == "1"
        self.runner = None
        reasons = []
        if backend in ("auto", "onnxruntime"):
            try:
                if export_missing and not (self.export_dir / "manifest.json").is_file():
                    from ..inference.bevmatch_export import export_bevmatch

                    log.info("exporting %s to %s (ONNX, parity-checked)", self.checkpoint, self.export_dir)
                    export_bevmatch(self.checkpoint, self.export_dir, force=True)
                self.runner = _OrtRunner(self.export_dir, self.fingerprint, threads)
            except (GeolocError, ImportError) as exc:
                if backend == "onnxruntime":
                    raise
                reasons.append(f"onnxruntime: {exc}")
        if self.runner is None:
            self.runner = _TorchRunner(self.checkpoint, threads)
            if self.runner.manifest["fingerprint"] != self.fingerprint:
                raise IncompatibleArtifact(f"{self.checkpoint} and its manifest {self.checkpoint.with_suffix('.json')} "
                                           f"name different weights")
            for r in reasons:
                log.info("learned features on torch (%s)", r)
        self.backend = self.runner.backend

    def identity(self) -> Dict:
        return {"name": self.name, "version": self.version, "fingerprint": self.fingerprint,
                "channels": self.channels, "backend": self.backend}

    def bev(self, bev_rgb: np.ndarray, valid: np.ndarray, range_m: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        f, w = self.runner.bev(bev_input(bev_rgb, valid, range_m))
        return np.ascontiguousarray(f.transpose(1, 2, 0), dtype=np.float32), np.asarray(w, np.float32)

    def aerial(self, aerial_rgb: np.ndarray) -> np.ndarray:
        f = self.runner.aerial(aerial_input(aerial_rgb))
        return np.ascontiguousarray(f.transpose(1, 2, 0), dtype=np.float32)


register_extractor("learned", LearnedFeatures)
