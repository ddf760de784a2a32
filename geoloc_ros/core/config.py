"""The one configuration schema: every tunable is a typed dataclass field with its help, range or
choices and group, defined once (``param``); the same description becomes the ROS parameter
(``ros.params``), the lines of config/geoloc.yaml and the ``--config`` YAML of the tools, and
``Param.check`` is the one validator of a value (dataclasses, ROS overrides, YAML alike).

Config dataclasses from dicts (YAML, JSON manifests): unknown keys are an error naming them.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .errors import InvalidArgument

GROUPS = ("node", "localizer", "filter", "metric", "retrieval")


def param(default, help_: str, lo=None, hi=None, *, choices=None, group: Optional[str] = None):
    """A dataclass field with a machine-readable description: ``help``, inclusive ``range`` (numbers),
    ``choices`` (strings) and ``group`` (default: the defining class's ``_group``)."""
    md: Dict[str, Any] = {"help": help_}
    if lo is not None or hi is not None:
        md["range"] = (lo, hi)
    if choices is not None:
        md["choices"] = tuple(choices)
    if group is not None:
        md["group"] = group
    return field(default=default, metadata=md)


@dataclass(frozen=True)
class Param:
    """One tunable: name, default (its type is the parameter's), description, inclusive bounds,
    choices, group."""

    name: str
    default: Any  # bool | int | float | str | list
    description: str
    lo: Optional[float] = None
    hi: Optional[float] = None
    choices: Optional[Tuple[str, ...]] = None
    group: str = "node"

    @property
    def kind(self) -> type:
        d = self.default
        for k in (bool, int, float, str):
            if isinstance(d, k):
                return k
        if isinstance(d, (list, tuple)):
            return list
        raise TypeError(f"parameter {self.name}: unsupported default {d!r}")

    def constraint_text(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.lo is not None or self.hi is not None:
            return f"{self.kind.__name__} in [{_g(self.lo)}, {_g(self.hi)}]"
        return self.kind.__name__

    def check(self, value: Any) -> Tuple[Any, Optional[str]]:
        """(``value`` converted to the parameter's type, the problem or None): the one validator."""
        kind = self.kind
        if hasattr(value, "tolist"):  # numpy scalars and arrays
            value = value.tolist()
        elif hasattr(value, "typecode"):  # array.array from rclpy
            value = list(value)
        if kind is bool:
            return (value, None) if isinstance(value, bool) else (value, f"must be true or false, got {value!r}")
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                return value, f"must be an integer, got {value!r}"
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return value, f"must be a number, got {value!r}"
            value = float(value)
            if not math.isfinite(value):
                return value, f"must be finite, got {value!r}"
        elif kind is str:
            if not isinstance(value, str):
                return value, f"must be a string, got {value!r}"
        elif kind is list:
            if value is None and not self.default:  # an empty list in a ROS parameters file reads as unset
                value = []
            if not isinstance(value, (list, tuple)):
                return value, f"must be a list like {list(self.default)!r}, got {value!r}"
            value = list(value)  # the schema's lists are lists of numbers
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
                return value, f"must be a list of finite numbers, got {value!r}"
            value = [float(v) for v in value]
        if self.choices and value not in self.choices:
            return value, f"must be one of {', '.join(self.choices)}, got {value!r}"
        if kind in (int, float) and ((self.lo is not None and value < self.lo) or
                                     (self.hi is not None and value > self.hi)):
            return value, f"must be in [{_g(self.lo)}, {_g(self.hi)}], got {value!r}"
        return value, None


def _g(v) -> str:
    if v is None or not math.isfinite(v):
        return "-inf" if v is None or v < 0 else "inf"
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"


def _group_of(cls, name: str, md: Mapping) -> str:
    if md.get("group"):
        return str(md["group"])
    for klass in cls.__mro__:  # the class that declares the field
        if name in getattr(klass, "__annotations__", {}) and "_group" in vars(klass):
            return str(vars(klass)["_group"])
    return str(getattr(cls, "_group", "node"))


def params_of(cls, prefix: str = "") -> List[Param]:
    """The ``Param`` of every field of dataclass ``cls`` (its name prefixed), in field order."""
    out: List[Param] = []
    for f in fields(cls):
        if f.name.startswith("_") or not f.init or f.default is dataclasses.MISSING:
            continue
        md = dict(f.metadata or {})
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        lo, hi = md.get("range") or (None, None)
        ch = md.get("choices")
        out.append(Param(prefix + f.name, default, str(md.get("help") or f.name),
                         None if lo is None else float(lo), None if hi is None else float(hi),
                         tuple(str(c) for c in ch) if ch else None, _group_of(cls, f.name, md)))
    return out


def validate_fields(obj, owner: str) -> None:
    """Check every field of dataclass ``obj`` with its ``Param.check``; raise InvalidArgument naming
    the field, what it accepts and what it is for."""
    for p in params_of(type(obj)):
        v = getattr(obj, p.name)
        if p.kind is list:
            v = list(v) if isinstance(v, (list, tuple)) else v
        _, problem = p.check(v)
        if problem:
            raise InvalidArgument(f"{owner}.{p.name} {problem}  ({p.description})")


def check_keys(cls, d: Mapping, what: str) -> None:
    """Raise InvalidArgument if ``d`` has keys that are not fields of dataclass ``cls``."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise InvalidArgument(f"unknown {what} key(s) {unknown}; valid keys: {sorted(known)}")
