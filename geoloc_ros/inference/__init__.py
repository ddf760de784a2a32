"""Inference backends behind one ``Encoder`` interface (torch, ONNX Runtime, TensorRT).

Heavy imports (torch, onnxruntime, tensorrt) happen inside the backend modules, so importing
this package is cheap and the node never imports torch when it runs another backend.
"""
from .base import Encoder, to_model_input  # noqa: F401
from .select import BACKENDS, load_encoder  # noqa: F401
