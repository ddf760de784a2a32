"""Output folders: one rule for "never overwrite a user's output without --force" (stdlib only).

``check_output_dir`` is the early check (a tool calls it before any slow work; nothing is
touched); ``prepare_output_dir`` is the same check followed by the write: it empties the folder
under ``force`` (no stale file survives next to new ones), creates it and proves it writable.
Both raise ``OutputExists`` / ``InvalidArgument`` with the same messages. ``check_output_file``
is the rule for a tool whose output is one file (a PNG, a YAML, a report).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Union

from .errors import InvalidArgument, OutputExists


def _holds_user_files(out: Path, force: bool) -> bool:
    """True when ``out`` is a non-empty folder (that ``force`` allows replacing); raises otherwise."""
    if out.exists() and not out.is_dir():
        raise OutputExists(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise OutputExists(f"{out} already exists and is not empty; pass --force to replace it")
        return True
    return False


def check_output_dir(out: Union[str, Path], force: bool) -> Path:
    """Fail early (before any work) if ``out`` would overwrite something without --force, or
    cannot be written (checked on ``out`` or its nearest existing parent). Touches nothing."""
    out = Path(out)
    _holds_user_files(out, force)
    parent = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not os.access(parent, os.W_OK):
        raise InvalidArgument(f"cannot write to {out}: {parent} is not writable")
    return out


def prepare_output_dir(out_dir: Union[str, Path], *, force: bool) -> Path:
    """Create ``out_dir``; refuse to touch an existing non-empty one unless ``force``.

    With ``force`` the directory's previous contents are removed first so no stale file
    survives next to new ones.
    """
    out_dir = Path(out_dir)
    if _holds_user_files(out_dir, force):
        shutil.rmtree(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write_probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InvalidArgument(f"cannot write to {out_dir}: {exc.strerror or exc}") from exc
    return out_dir


def check_output_file(out: Union[str, Path], force: bool) -> Path:
    """Refuse to replace an existing output file without --force."""
    out = Path(out)
    if out.exists() and not force:
        raise OutputExists(f"{out} exists; pass --force to replace it")
    return out
