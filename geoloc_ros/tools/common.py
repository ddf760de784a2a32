"""Small helpers shared by the offline tools."""
from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path
from typing import Callable, List, Optional

from ..core.errors import InvalidArgument, OutputExists


def command_line() -> str:
    """The command that is running, for manifests (reproducibility)."""
    return " ".join(shlex.quote(a) for a in ["geoloc"] + sys.argv[1:]) if sys.argv else "geoloc"


def check_output_dir(out: Path, force: bool) -> None:
    """Fail early (before any work) if ``out`` would overwrite something without --force."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExists(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputExists(f"{out} already exists and is not empty; pass --force to replace it")
    parent = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    import os

    if not os.access(parent, os.W_OK):
        raise InvalidArgument(f"cannot write to {out}: {parent} is not writable")


def positive(kind: type = float, lo: float = 0.0, hi: float = math.inf, name: str = "value") -> Callable[[str], float]:
    """argparse type: a number in (lo, hi]."""

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a {kind.__name__}, got {text!r}")
        if not (isinstance(v, int) or math.isfinite(v)) or not (lo < v <= hi):
            raise argparse.ArgumentTypeError(f"{name} must be in ({lo}, {hi}], got {text}")
        return v

    return parse


def seed_type(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be a non-negative integer, got {text!r}")
    if v < 0 or v >= 2 ** 63:
        raise argparse.ArgumentTypeError(f"seed must be in 0..2^63-1, got {text}")
    return v


def parse_with(register: Callable, argv: Optional[List[str]]) -> argparse.Namespace:
    """Parse ``argv`` with a parser holding only this tool (for ``main(argv)`` entry points)."""
    parser = argparse.ArgumentParser(prog="geoloc")
    register(parser.add_subparsers(dest="subcommand", required=True))
    return parser.parse_args(argv)
