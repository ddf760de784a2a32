"""Config dataclasses from dicts (YAML, JSON manifests): unknown keys are an error naming them."""
from __future__ import annotations

from dataclasses import fields
from typing import Mapping

from .errors import InvalidArgument


def check_keys(cls, d: Mapping, what: str) -> None:
    """Raise InvalidArgument if ``d`` has keys that are not fields of dataclass ``cls``."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise InvalidArgument(f"unknown {what} key(s) {unknown}; valid keys: {sorted(known)}")
