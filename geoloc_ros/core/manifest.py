"""Artifact manifests: one way to write, read and compare them (stdlib only).

Every artifact (checkpoint, ONNX export, TensorRT engine, tile index) names the model that made
it with the same three keys, ``model_identity``: preset name, weights fingerprint (sha256 of the
checkpoint's tensors) and descriptor dimension. Loading compares identities with
``check_same_model`` and refuses a mismatch with a message that says what to rebuild.

Every manifest also carries ``format`` and ``format_version``; every loader checks them here,
``read_manifest`` (a JSON file) or ``check_manifest`` (a dict already loaded, e.g. embedded in a
checkpoint), with its own words for the artifact and the command that rebuilds it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Collection, Dict, Mapping, Optional, Tuple, Union

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


Versions = Union[int, Collection[int]]


def _versions_text(readable: Tuple[int, ...]) -> str:
    return f"version {readable[0]}" if len(readable) == 1 else "versions " + ", ".join(map(str, readable))


def check_manifest(m: Any, fmt: str, versions: Versions, *, source: Union[str, Path], what: str,
                   rebuild: Optional[str] = None) -> Dict[str, Any]:
    """Check the ``format`` and ``format_version`` of a manifest already in memory (``read_manifest``
    for one on disk; a checkpoint's embedded manifest directly) and return it.

    ``versions``: the version this geoloc_ros writes, or every version it still reads (a world
    reads {1, 2}). ``source`` names where it came from (a path), ``what`` the artifact in words
    ("bevmatch checkpoint"), ``rebuild`` what fixes it (a command), appended to both messages;
    without it a version mismatch says "rebuild it with this version".
    """
    readable = (int(versions),) if isinstance(versions, int) else tuple(sorted(versions))
    if not isinstance(m, dict) or m.get("format") != fmt:
        got = m.get("format") if isinstance(m, dict) else type(m).__name__
        raise IncompatibleArtifact(f"{source} is not a {what} (format {got!r}, expected {fmt!r})"
                                   + (f"; {rebuild}" if rebuild else ""))
    if m.get("format_version") not in readable:
        raise IncompatibleArtifact(f"{source}: {what} format_version {m.get('format_version')!r}; this geoloc_ros "
                                   f"reads {_versions_text(readable)}; {rebuild or 'rebuild it with this version'}")
    return m


def read_manifest(path: Path, fmt: str, versions: Versions, *, what: Optional[str] = None,
                  rebuild: Optional[str] = None) -> Dict[str, Any]:
    """Read a JSON manifest and check its ``format`` and ``format_version`` (``check_manifest``).

    ``what`` names the artifact ("tile index /x"; default: ``fmt``), ``rebuild`` the command that
    makes a good one; both end up in every refusal (IncompatibleArtifact)."""
    path = Path(path)
    what = what or fmt
    tail = f"; {rebuild}" if rebuild else ""
    if not path.is_file():
        raise IncompatibleArtifact(f"{what}: manifest {path} does not exist{tail}")
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise IncompatibleArtifact(f"{what}: manifest {path} is not readable JSON ({exc}){tail}") from exc
    return check_manifest(m, fmt, versions, source=path, what=f"{what} manifest", rebuild=rebuild)
