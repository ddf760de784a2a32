"""ONNX Runtime backend: runs an export folder (``geoloc export onnx``); needs no torch.

The graphs' sha256 are checked against the manifest before a session is created: a corrupted
or replaced file is refused with IncompatibleArtifact (``load_encoder`` then falls back with a
warning). Provider: CUDA when onnxruntime offers it, else CPU. Threads: ``intra_op_num_threads``
(default: the number of physical cores ONNX Runtime picks; the node sets it so that the encoder
does not compete with the rest of the stack), one inter-op thread (the graphs are sequential).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..core.errors import IncompatibleArtifact, InvalidArgument
from .artifacts import GRAPHS, read_export_manifest
from .base import Encoder

log = logging.getLogger(__name__)


def available_providers() -> List[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def choose_providers(available: Sequence[str], prefer: str = "auto") -> List[str]:
    """Execution providers to request, best first. ``prefer``: auto | cuda | cpu."""
    if prefer not in ("auto", "cuda", "cpu"):
        raise InvalidArgument(f"onnxruntime provider {prefer!r} is not one of auto, cuda, cpu")
    if prefer == "cuda" and "CUDAExecutionProvider" not in available:
        raise InvalidArgument(f"onnxruntime has no CUDA provider here (available: {', '.join(available)}); "
                              f"install onnxruntime-gpu or use the CPU provider")
    if prefer != "cpu" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OrtEncoder(Encoder):
    backend = "onnxruntime"

    def __init__(self, export_dir: Path, *, threads: Optional[int] = None, provider: str = "auto",
                 expect_model: Optional[Mapping[str, Any]] = None):
        import onnxruntime as ort

        export_dir = Path(export_dir)
        manifest = read_export_manifest(export_dir, verify=True, expect_model=expect_model)
        super().__init__(manifest)
        self.export_dir = export_dir
        self.precision = manifest["precision"]
        so = ort.SessionOptions()
        if threads:
            if int(threads) < 1:
                raise InvalidArgument(f"threads must be >= 1, got {threads}")
            so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        providers = choose_providers(ort.get_available_providers(), provider)
        self.sessions: Dict[str, Any] = {}
        for key, g in GRAPHS.items():
            path = export_dir / g["file"]
            try:
                self.sessions[key] = ort.InferenceSession(str(path), so, providers=providers)
            except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
                raise IncompatibleArtifact(f"ONNX Runtime cannot load {path}: {exc}") from exc
            names = [i.name for i in self.sessions[key].get_inputs()]
            if names != g["inputs"]:
                raise IncompatibleArtifact(f"{path} has inputs {names}, expected {g['inputs']}")
        used = self.sessions["frame"].get_providers()
        self.providers = used
        self.threads = int(threads) if threads else 0
        self.detail = (f"{used[0].replace('ExecutionProvider', '')}, {self.precision}, "
                       f"threads={self.threads or 'default'}")

    def _run(self, key: str, *arrays: np.ndarray) -> np.ndarray:
        s = self.sessions[key]
        return s.run(None, dict(zip(GRAPHS[key]["inputs"], arrays)))[0]

    def _frames(self, x: np.ndarray) -> np.ndarray:
        return self._run("frame", x)

    def _fuse(self, feats: np.ndarray, pad: np.ndarray) -> np.ndarray:
        return self._run("temporal", feats, np.ascontiguousarray(pad, dtype=bool))

    def _aerial(self, x: np.ndarray) -> np.ndarray:
        return self._run("aerial", x)
