"""Choosing a backend: ``load_encoder(model, backend)``.

``model`` is a preset name (the shipped weights), a checkpoint ``.pt`` file, or an export folder
(``geoloc export onnx``). ``backend`` is ``auto | tensorrt | onnxruntime | torch``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Union

from ..core.errors import InvalidArgument
from .base import Encoder

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
log = logging.getLogger(__name__)


def resolve_checkpoint(model: Union[str, Path]) -> Path:
    """A preset name -> its shipped checkpoint; a path -> itself."""
    p = Path(model)
    if p.suffix == ".pt" or p.exists():
        return p
    from ..models.crossview import default_checkpoint

    return default_checkpoint(str(model))


def load_encoder(model: Union[str, Path], backend: str = "auto", *, device: str = "cpu",
                 threads: Optional[int] = None, logger: Optional[logging.Logger] = None) -> Encoder:
    if backend not in BACKENDS:
        raise InvalidArgument(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    from .torch_backend import TorchEncoder

    return TorchEncoder(resolve_checkpoint(model), device=device, threads=threads)
