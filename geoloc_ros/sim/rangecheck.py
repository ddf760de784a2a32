"""Range checks of the simulator's frozen configuration dataclasses (drive, GNSS, odometry, IMU, sensors):
each raises ``core.errors.InvalidArgument`` naming the owner and the field."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.errors import InvalidArgument


def _check_range(owner: str, name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False,
                 integer: bool = False) -> None:
    """Raise InvalidArgument unless ``value`` is a finite number in [lo, hi] ((lo, hi] if lo_open)."""
    ok_type = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.integer,
                                                                                      np.floating))
    if isinstance(value, bool) or not ok_type:
        kind = "an integer" if integer else "a number"
        raise InvalidArgument(f"{owner}.{name} must be {kind}, got {value!r}")
    v = float(value)
    low_ok = v > lo if lo_open else v >= lo
    if not (math.isfinite(v) and low_ok and v <= hi):
        bracket = "(" if lo_open else "["
        raise InvalidArgument(f"{owner}.{name} must be in {bracket}{lo:g}, {hi:g}], got {value!r}")


def _check_interval(owner: str, name: str, value: Any, lo: float, hi: float) -> None:
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise InvalidArgument(f"{owner}.{name} must be a (low, high) pair, got {value!r}")
    for v in value:
        _check_range(owner, name, v, lo, hi)
    if value[0] > value[1]:
        raise InvalidArgument(f"{owner}.{name} low {value[0]} is above high {value[1]}")
