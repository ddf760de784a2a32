"""Artifact manifests: one way to write, read and compare them (stdlib only).

Every artifact (checkpoint, ONNX export, TensorRT engine, tile index) names the model that made
it with the same three keys, ``model_identity``: preset name, weights fingerprint (sha256 of the
checkpoint's tensors) and descriptor dimension. Loading compares identities with
``check_same_model`` and refuses a mismatch with a message that says what to rebuild.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from .errors import IncompatibleArtifact

IDENTITY_KEYS = ("preset", "fingerprint", "dim")


def model_identity(manifest: Mapping[str, Any]) -> Dict[str, Any]:
    """The model identity of a manifest: either its own ``model`` entry or (for a checkpoint
    manifest) its top-level preset/fingerprint/dim."""
    src = manifest.get("model", manifest)
    missing = [k for k in IDENTITY_KEYS if k not in src]
    if missing:
        raise IncompatibleArtifact(f"manifest has no model identity (missing {', '.join(missing)})")
    return {"preset": str(src["preset"]), "fingerprint": str(src["fingerprint"]), "dim": int(src["dim"])}


def check_same_model(expected: Mapping[str, Any], found: Mapping[str, Any], *, what: str, rebuild: str) -> None:
    """Raise IncompatibleArtifact unless both manifests (or identities) name the same model.

    ``what`` names the artifact being loaded ("tile index /x"), ``rebuild`` the command that fixes it.
    """
    a, b = model_identity(expected), model_identity(found)
    diffs = [f"{k} {b[k]!r} (expected {a[k]!r})" for k in IDENTITY_KEYS if a[k] != b[k]]
    if diffs:
        raise IncompatibleArtifact(f"{what} was made by another model: {'; '.join(diffs)}. Rebuild it with: {rebuild}")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file's bytes, read in chunks (artifacts can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def write_json_atomic(path: Path, obj: Any) -> Path:
    """Write JSON to ``path`` via a temporary file and rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def read_manifest(path: Path, fmt: str, version: int, *, what: Optional[str] = None) -> Dict[str, Any]:
    """Read a JSON manifest and check its ``format`` and ``format_version``."""
    path = Path(path)
    what = what or fmt
    if not path.is_file():
        raise IncompatibleArtifact(f"{what}: manifest {path} does not exist")
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise IncompatibleArtifact(f"{what}: manifest {path} is not readable JSON ({exc})") from exc
    if not isinstance(m, dict) or m.get("format") != fmt:
        got = m.get("format") if isinstance(m, dict) else type(m).__name__
        raise IncompatibleArtifact(f"{path} is not a {what} manifest (format {got!r}, expected {fmt!r})")
    if m.get("format_version") != version:
        raise IncompatibleArtifact(f"{path}: {what} format_version {m.get('format_version')!r}; this geoloc_ros reads "
                                   f"version {version}. Rebuild it with this version.")
    return m
