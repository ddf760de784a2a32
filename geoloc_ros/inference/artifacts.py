"""The ONNX export folder format (stdlib only): file names, tensor names, manifest checks.

An export folder (``geoloc export onnx``) holds three graphs and ``manifest.json``::

    frame_encoder.onnx    images [B, 3, H, W] float32 in [0, 1]       -> features [B, D]
    temporal_fusion.onnx  features [B, T, D] float32, pad [B, T] bool -> descriptor [B, D]
    aerial_encoder.onnx   tiles [B, 3, h, w] float32 in [0, 1]        -> descriptor [B, D]

B is dynamic, T is dynamic in 1..max_frames. Inputs and outputs are float32 in every precision
(an fp16 export casts inside the graph), so all backends share ``base.to_model_input``.
The manifest carries the model identity (``core.manifest.model_identity``), the model config,
the sha256 of every graph (checked by every loader), the parity check the exporter ran, and
the versions and command that made it. Nothing here imports torch or onnxruntime.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from ..core.errors import IncompatibleArtifact
from ..core.manifest import model_identity, read_manifest, sha256_file

EXPORT_FORMAT = "geoloc-onnx-export"
EXPORT_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
PRECISIONS = ("fp32", "fp16")

#: graph key -> (file name, input names, output name)
GRAPHS: Dict[str, Dict[str, Any]] = {
    "frame": {"file": "frame_encoder.onnx", "inputs": ["images"], "output": "features"},
    "temporal": {"file": "temporal_fusion.onnx", "inputs": ["features", "pad"], "output": "descriptor"},
    "aerial": {"file": "aerial_encoder.onnx", "inputs": ["tiles"], "output": "descriptor"},
}


def is_export_dir(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / MANIFEST_NAME).is_file()


def export_command_hint(export_dir: Path, manifest: Optional[Dict[str, Any]] = None) -> str:
    ckpt = (manifest or {}).get("checkpoint", {}).get("path", "CHECKPOINT.pt")
    return f"geoloc export onnx --checkpoint {ckpt} --out {export_dir} --force"


def read_export_manifest(export_dir: Path, *, verify: bool = True,
                         expect_model: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Read and check ``export_dir/manifest.json``.

    ``verify``: recompute the sha256 of every graph and refuse a mismatch (a corrupted, truncated
    or replaced file). ``expect_model``: a manifest or identity the export must have been made from.
    Raises IncompatibleArtifact with the command that rebuilds the export.
    """
    export_dir = Path(export_dir)
    m = read_manifest(export_dir / MANIFEST_NAME, EXPORT_FORMAT, EXPORT_FORMAT_VERSION,
                      what=f"ONNX export {export_dir}", rebuild=f"re-export: {export_command_hint(export_dir)}")
    fix = export_command_hint(export_dir, m)
    model_identity(m)  # raises when missing
    if m.get("precision") not in PRECISIONS:
        raise IncompatibleArtifact(f"ONNX export {export_dir}: unknown precision {m.get('precision')!r}")
    graphs = m.get("graphs")
    if not isinstance(graphs, dict) or set(graphs) != set(GRAPHS):
        raise IncompatibleArtifact(f"ONNX export {export_dir}: manifest lists graphs "
                                   f"{sorted(graphs or [])}, expected {sorted(GRAPHS)}. Re-export: {fix}")
    for key, g in graphs.items():
        if not isinstance(g, dict) or g.get("file") != GRAPHS[key]["file"]:
            raise IncompatibleArtifact(f"ONNX export {export_dir}: graph {key} must be {GRAPHS[key]['file']}, the "
                                       f"manifest says {g.get('file') if isinstance(g, dict) else g!r}")
    if expect_model is not None:
        from ..core.manifest import check_same_model

        check_same_model(expect_model, m, what=f"ONNX export {export_dir}", rebuild=fix)
    if verify:
        for key, g in graphs.items():
            p = export_dir / g["file"]
            if not p.is_file():
                raise IncompatibleArtifact(f"ONNX export {export_dir}: {p.name} is missing. Re-export: {fix}")
            digest = sha256_file(p)
            if digest != g.get("sha256"):
                raise IncompatibleArtifact(
                    f"ONNX export {export_dir}: {p.name} has sha256 {digest[:16]}.., the manifest says "
                    f"{str(g.get('sha256'))[:16]}.. (corrupted or replaced file). Re-export: {fix}")
    return m


def checkpoint_identity(checkpoint: Path) -> Dict[str, Any]:
    """The model identity of a checkpoint without torch: from its ``.json`` sidecar manifest
    (written next to every checkpoint by ``models.crossview.save_checkpoint``)."""
    from ..models.config import CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_VERSION, CHECKPOINT_REBUILD

    side = Path(checkpoint).with_suffix(".json")
    if not side.is_file():
        raise IncompatibleArtifact(f"checkpoint {checkpoint} has no manifest {side.name} beside it")
    return model_identity(read_manifest(side, CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_VERSION,
                                        what="geoloc checkpoint", rebuild=CHECKPOINT_REBUILD))
