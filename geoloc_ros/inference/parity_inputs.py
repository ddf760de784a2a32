"""Real pictures for the parity check of an ONNX export (numpy + stdlib; no simulator, no torch).

The exporter compares ONNX Runtime with torch on random inputs and on real ground frames and aerial
tiles (``ParityInputs``). Those come from the caller (``export_onnx(parity_inputs=...)``; `geoloc
export onnx --parity-inputs` takes a bag, a dataset or a saved file) or, by default, from the fixture
shipped with the package: ``weights/parity_inputs.npz`` with its manifest ``parity_inputs.json``
(format ``geoloc-parity-inputs``: shapes, sha256, source, the command that made it). The frames are
consecutive keyframes, oldest first (the parity check feeds sequences of the first T of them); any
size, since every backend resizes its input (``base.to_model_input``).

The shipped fixture was made with ``geoloc export parity-inputs --out
geoloc_ros/weights/parity_inputs.npz --force``: 8 frames rendered 5 m apart along a road of a
generated town and 4 aerial tiles at those poses, at the sizes of the default preset (exactly the
inputs the exporter rendered itself before it stopped importing the simulator).

The .npz is written with fixed zip timestamps, so the same arrays give the same bytes.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from ..core.errors import IncompatibleArtifact, InvalidArgument
from ..core.manifest import read_manifest, sha256_file, write_json_atomic

PARITY_INPUTS_FORMAT = "geoloc-parity-inputs"
PARITY_INPUTS_FORMAT_VERSION = 1
DEFAULT_PARITY_INPUTS = Path(__file__).resolve().parents[1] / "weights" / "parity_inputs.npz"
MAKE_COMMAND = "geoloc export parity-inputs --out OUT.npz"


@dataclass(frozen=True)
class ParityInputs:
    """uint8 RGB ``frames`` [N, H, W, 3] (consecutive keyframes, oldest first) and ``tiles`` [M, h, w, 3]
    (heading-up aerial tiles); ``source`` says where they came from (for the export manifest)."""

    frames: np.ndarray
    tiles: np.ndarray
    source: str = "caller"

    def __post_init__(self) -> None:
        for name in ("frames", "tiles"):
            a = getattr(self, name)
            if not (isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.ndim == 4 and a.shape[-1] == 3
                    and len(a) >= 1 and min(a.shape[1:3]) >= 8):
                got = f"{a.dtype} {list(a.shape)}" if isinstance(a, np.ndarray) else type(a).__name__
                raise InvalidArgument(f"parity inputs ({self.source}): {name} must be uint8 RGB [N>=1, H>=8, W>=8, 3], "
                                      f"got {got}")

    def need_frames(self, n: int) -> None:
        """Refuse fewer frames than the longest sequence the parity check runs (it would check less)."""
        if len(self.frames) < n:
            raise InvalidArgument(f"parity inputs ({self.source}) hold {len(self.frames)} ground frames; the parity "
                                  f"check runs sequences of up to T={n}: give at least {n}")

    def summary(self) -> Dict[str, Any]:
        return {"source": self.source, "frames": list(self.frames.shape), "tiles": list(self.tiles.shape)}


def manifest_path(npz: Union[str, Path]) -> Path:
    return Path(npz).with_suffix(".json")


def save_parity_inputs(path: Union[str, Path], inputs: ParityInputs, *,
                       command: Optional[str] = None) -> Dict[str, Any]:
    """Write ``path`` (.npz: ``frames``, ``tiles``) and its manifest beside it; returns the manifest."""
    path = Path(path)
    if path.suffix != ".npz":
        raise InvalidArgument(f"{path}: parity inputs are written as a .npz file")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name in ("frames", "tiles"):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with z.open(info, "w") as f:
                np.lib.format.write_array(f, np.ascontiguousarray(getattr(inputs, name)), allow_pickle=False)
    tmp.replace(path)
    manifest = {"format": PARITY_INPUTS_FORMAT, "format_version": PARITY_INPUTS_FORMAT_VERSION, "file": path.name,
                "sha256": sha256_file(path), "bytes": path.stat().st_size,
                "frames": {"shape": list(inputs.frames.shape), "dtype": "uint8", "order": "oldest first"},
                "tiles": {"shape": list(inputs.tiles.shape), "dtype": "uint8", "view": "heading-up"},
                "source": inputs.source, "command": command}
    write_json_atomic(manifest_path(path), manifest)
    return manifest


def load_parity_inputs(path: Union[str, Path, None] = None) -> ParityInputs:
    """The parity inputs saved at ``path`` (default: the shipped fixture), checked against their
    manifest: format, sha256 and the shapes it lists."""
    path = Path(path) if path is not None else DEFAULT_PARITY_INPUTS
    what = f"parity inputs {path}"
    rebuild = f"make them again with `{MAKE_COMMAND.replace('OUT.npz', str(path))} --force`"
    m = read_manifest(manifest_path(path), PARITY_INPUTS_FORMAT, PARITY_INPUTS_FORMAT_VERSION, what=what,
                      rebuild=rebuild)
    if not path.is_file():
        raise IncompatibleArtifact(f"{what}: {path.name} is missing beside its manifest; {rebuild}")
    if sha256_file(path) != m.get("sha256"):
        raise IncompatibleArtifact(f"{what}: the file does not match the sha256 of its manifest (corrupted or "
                                   f"replaced); {rebuild}")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in ("frames", "tiles") if k in z.files}
    for k in ("frames", "tiles"):
        if k not in arrays or list(arrays[k].shape) != list(m.get(k, {}).get("shape", [])):
            raise IncompatibleArtifact(f"{what}: {k} {list(arrays[k].shape) if k in arrays else 'missing'} does not "
                                       f"match the manifest's {m.get(k, {}).get('shape')}; {rebuild}")
    return ParityInputs(arrays["frames"], arrays["tiles"], source=str(m.get("source") or path))


ParityInputsLike = Union[None, str, Path, ParityInputs, Tuple[np.ndarray, np.ndarray]]


def as_parity_inputs(x: ParityInputsLike) -> ParityInputs:
    """What ``export_onnx(parity_inputs=...)`` accepts: None (the shipped fixture), a saved .npz, a
    ``ParityInputs`` or a (frames, tiles) pair of uint8 arrays."""
    if x is None or isinstance(x, (str, Path)):
        return load_parity_inputs(x)
    if isinstance(x, ParityInputs):
        return x
    frames, tiles = x
    return ParityInputs(np.asarray(frames), np.asarray(tiles))
