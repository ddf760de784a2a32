"""Choosing a backend: ``load_encoder(model, backend)``.

``model`` is a preset name (the shipped weights), a checkpoint ``.pt`` file, or an export folder
(``geoloc export onnx``). ``backend`` is ``auto | tensorrt | onnxruntime | torch``.

``auto`` tries TensorRT, then ONNX Runtime (CUDA provider if present, else CPU), then torch, and
logs why each one was skipped (not installed, no GPU, no export, a corrupted or stale artifact).
A named backend is used or fails with the reason: no silent substitution.

Exports for a preset or checkpoint are looked up in ``<engines_dir>/<preset>/`` (engines_dir:
argument, else $GEOLOC_ENGINES_DIR, else ``./engines``); the export's model fingerprint must match
the checkpoint's. When none exists, the default is to report it (one log line with the
``geoloc export onnx`` command) and go on to torch: loading a model must not silently write 45 MB
into the working tree or spend a minute exporting (tests and tools call this too). With
``export_missing=True`` (or $GEOLOC_AUTO_EXPORT=1), and torch installed, the export is created
there on the fly instead (about 30 s on an idle 2-core CPU, parity-checked like the CLI export):
what ``geoloc demo`` and the node's first start on a new machine want. An existing folder that
holds another model's or a corrupted export is never replaced automatically: it is reported with
the command that rebuilds it, and the next backend is tried. The TensorRT and ONNX Runtime paths
never import torch, so the node runs without it.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from ..core.errors import GeolocError, IncompatibleArtifact, InvalidArgument
from .artifacts import checkpoint_identity, is_export_dir, read_export_manifest
from .base import Encoder

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
AUTO_ORDER = ("tensorrt", "onnxruntime", "torch")
log = logging.getLogger(__name__)


def default_engines_dir() -> Path:
    return Path(os.environ.get("GEOLOC_ENGINES_DIR", "engines"))


def resolve_checkpoint(model: Union[str, Path]) -> Path:
    """A preset name -> its shipped checkpoint; a path -> itself."""
    p = Path(model)
    if p.suffix == ".pt" or p.exists():
        return p
    from ..models.crossview import default_checkpoint

    return default_checkpoint(str(model))


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class _Source:
    """What ``model`` names: an export folder and/or a checkpoint, and the model identity."""

    def __init__(self, model: Union[str, Path], engines_dir: Path):
        self.export_dir: Optional[Path] = None
        self.checkpoint: Optional[Path] = None
        self.identity: Optional[Dict[str, Any]] = None
        self.export_problem = ""
        p = Path(model)
        if p.is_dir():
            if not is_export_dir(p):
                raise InvalidArgument(f"{p} is a folder but not an ONNX export (no manifest.json); make one with "
                                      f"`geoloc export onnx --checkpoint CKPT --out {p}`")
            m = read_export_manifest(p, verify=False)  # the backends verify the graphs' sha256
            self.export_dir, self.identity = p, dict(m["model"])
            ck = Path(m.get("checkpoint", {}).get("path", ""))
            if ck.suffix == ".pt" and ck.is_file():
                try:
                    if checkpoint_identity(ck) == self.identity:
                        self.checkpoint = ck
                except IncompatibleArtifact:
                    pass
            return
        self.checkpoint = resolve_checkpoint(model)
        if not self.checkpoint.is_file():
            raise InvalidArgument(f"checkpoint {self.checkpoint} does not exist")
        try:
            self.identity = checkpoint_identity(self.checkpoint)
        except IncompatibleArtifact as exc:
            self.export_problem = str(exc)
            return
        cand = Path(engines_dir) / self.identity["preset"]
        self.default_export = cand
        if not cand.exists():
            self.export_problem = f"no export in {cand}"
            return
        try:
            read_export_manifest(cand, verify=False, expect_model=self.identity)
            self.export_dir = cand
        except IncompatibleArtifact as exc:
            self.export_problem = f"{exc}"


def _make_export(src: _Source, notes: List[Tuple[str, str]]) -> None:
    """Create the missing export for ``src`` in engines/<preset>/ (torch needed)."""
    target = getattr(src, "default_export", None)
    if target is None or src.export_dir is not None or target.exists():
        return
    if not _installed("torch"):
        notes.append(("export", f"{src.export_problem}; torch is not installed to make one"))
        return
    log.warning("no ONNX export of %s in %s: exporting it now (once; about 30 s on a small CPU)",
                src.checkpoint, target)
    try:
        from .onnx_export import export_onnx

        t0 = time.perf_counter()
        export_onnx(src.checkpoint, target, progress=False,
                    command=f"load_encoder(auto): geoloc export onnx --checkpoint {src.checkpoint} --out {target}")
        src.export_dir = target
        notes.append(("export", f"created {target} in {time.perf_counter() - t0:.0f} s (no export existed)"))
    except (GeolocError, OSError) as exc:
        if is_export_dir(target):  # another process made it meanwhile
            src.export_dir = target
        else:
            notes.append(("export", f"exporting to {target} failed: {exc}"))


def _need_export(src: _Source) -> None:
    if src.export_dir is None:
        raise _Skip(f"no ONNX export ({src.export_problem or 'none given'}); make one with `geoloc export onnx "
                    f"--checkpoint {src.checkpoint} --out {getattr(src, 'default_export', 'engines/NAME/')}`")


def _try(backend: str, src: _Source, *, device: str, threads: Optional[int], precision: str) -> Encoder:
    if backend == "torch":
        if not _installed("torch"):
            raise _Skip("torch is not installed")
        if src.checkpoint is None:
            raise _Skip(f"the export {src.export_dir} names no checkpoint that exists here with the same "
                        f"fingerprint (torch needs the .pt)")
        from .torch_backend import TorchEncoder

        return TorchEncoder(src.checkpoint, device=device, threads=threads)
    if backend == "onnxruntime":
        if not _installed("onnxruntime"):
            raise _Skip("onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu)")
        _need_export(src)
        from .ort_backend import OrtEncoder

        return OrtEncoder(src.export_dir, threads=threads, expect_model=src.identity)
    if not _installed("tensorrt"):
        raise _Skip("TensorRT is not installed (the `tensorrt` Python module comes with JetPack or NVIDIA's "
                    "TensorRT packages)")
    _need_export(src)
    from .tensorrt_backend import TensorRTEncoder, TensorRTUnavailable

    try:
        # engines are cached in the export folder (engines/<name>/) beside the ONNX they come from
        return TensorRTEncoder(src.export_dir, precision=precision, expect_model=src.identity)
    except TensorRTUnavailable as exc:
        raise _Skip(str(exc)) from exc
    except GeolocError:
        raise
    except Exception as exc:  # TensorRT raises RuntimeError/TypeError/...: report, never crash the node
        raise IncompatibleArtifact(f"TensorRT failed on {src.export_dir}: {type(exc).__name__}: {exc}") from exc


class _Skip(Exception):
    """A backend that cannot run here (expected: not installed, no export): logged at info level."""


def load_encoder(model: Union[str, Path], backend: str = "auto", *, device: str = "cpu",
                 threads: Optional[int] = None, engines_dir: Optional[Union[str, Path]] = None,
                 precision: str = "auto", export_missing: Optional[bool] = None,
                 logger: Optional[logging.Logger] = None) -> Encoder:
    """An ``Encoder`` for ``model`` on ``backend`` (see the module docstring for the rules).

    ``threads``: intra-op threads (torch, ONNX Runtime). ``precision``: TensorRT engine precision
    (auto | fp32 | fp16 | int8). ``export_missing``: create a missing export on the fly (default:
    $GEOLOC_AUTO_EXPORT, else no). The returned encoder has ``selection``: (backend, why) for every
    backend tried, in order.
    """
    lg = logger or log
    if backend not in BACKENDS:
        raise InvalidArgument(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if export_missing is None:
        export_missing = os.environ.get("GEOLOC_AUTO_EXPORT", "0") not in ("", "0", "false", "no")
    edir = Path(engines_dir) if engines_dir is not None else default_engines_dir()
    src = _Source(model, edir)
    order = AUTO_ORDER if backend == "auto" else (backend,)
    notes: List[Tuple[str, str]] = []
    if src.export_dir is None and export_missing and src.checkpoint is not None and \
            any(b in order for b in ("tensorrt", "onnxruntime")) and \
            (_installed("onnxruntime") or _installed("tensorrt")):
        _make_export(src, notes)
    for name, why in notes:
        lg.warning("%s: %s", name, why)
    for b in order:
        try:
            enc = _try(b, src, device=device, threads=threads, precision=precision)
        except _Skip as exc:
            notes.append((b, f"skipped: {exc}"))
            lg.info("encoder backend %s skipped: %s", b, exc)
            if backend != "auto":
                raise IncompatibleArtifact(f"backend {b} cannot run: {exc}") from None
            continue
        except (GeolocError, OSError, RuntimeError) as exc:
            if backend != "auto":
                raise
            notes.append((b, f"failed: {exc}"))
            lg.warning("encoder backend %s failed, falling back: %s", b, exc)
            continue
        notes.append((b, "selected"))
        enc.selection = notes
        lg.info("encoder: %s", enc.describe())
        return enc
    raise IncompatibleArtifact("no encoder backend could run: " + "; ".join(f"{b} {w}" for b, w in notes))
