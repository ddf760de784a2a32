"""Small helpers shared by the offline tools."""
from __future__ import annotations

import argparse
import math
import shlex
import sys
from typing import Callable, List, Optional


def command_line() -> str:
    """The command that is running, for manifests (reproducibility)."""
    return " ".join(shlex.quote(a) for a in ["geoloc"] + sys.argv[1:]) if sys.argv else "geoloc"


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
