"""Geodesy: WGS84 <-> UTM <-> a local metric frame.

The local frame used throughout geoloc_ros is the UTM grid of the zone that contains
the datum, translated so that the datum (rounded to whole metres) is (0, 0):
x = easting - origin_e (metres, grid east), y = northing - origin_n (grid north).
Its axes are UTM grid axes, which differ from true north by the meridian convergence
(about 1.5 deg at 73 W, 44 N); ``grid_convergence_deg`` gives it for headings.

Yaw convention (REP-103): radians, counter-clockwise from the local +x (east) axis.
Compass heading (NavSatFix course, GIS): degrees clockwise from north. Convert with
``yaw_to_heading_deg`` / ``heading_deg_to_yaw``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Tuple

import numpy as np

from .errors import InvalidArgument


def utm_epsg_for(lat: float, lon: float) -> int:
    """EPSG code of the WGS84 / UTM zone containing (lat, lon)."""
    if not (-80.0 <= lat <= 84.0):
        raise InvalidArgument(f"latitude {lat} is outside UTM coverage (-80..84 deg); use a polar CRS")
    if not (-180.0 <= lon <= 180.0):
        raise InvalidArgument(f"longitude {lon} is outside -180..180 deg")
    zone = int((lon + 180.0) // 6.0) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def yaw_to_heading_deg(yaw: np.ndarray | float) -> np.ndarray | float:
    """ENU yaw (rad, CCW from east) -> compass heading (deg, CW from north) in [0, 360)."""
    return np.mod(90.0 - np.degrees(yaw), 360.0)


def heading_deg_to_yaw(heading_deg: np.ndarray | float) -> np.ndarray | float:
    """Compass heading (deg, CW from north) -> ENU yaw (rad) in (-pi, pi]."""
    yaw = np.radians(90.0 - np.asarray(heading_deg, dtype=float))
    return np.arctan2(np.sin(yaw), np.cos(yaw))


def wrap_angle(a: np.ndarray | float) -> np.ndarray | float:
    """Wrap radians to (-pi, pi]."""
    return np.arctan2(np.sin(a), np.cos(a))


@dataclass(frozen=True)
class LocalFrame:
    """A local metric frame: UTM grid axes, origin at (origin_e, origin_n) in ``epsg``."""

    epsg: int
    origin_e: float
    origin_n: float

    @staticmethod
    def at(lat: float, lon: float) -> "LocalFrame":
        """Frame whose origin is (lat, lon) rounded to the nearest whole UTM metre."""
        epsg = utm_epsg_for(lat, lon)
        e, n = _transformer(4326, epsg).transform(lon, lat)
        return LocalFrame(epsg=epsg, origin_e=float(round(e)), origin_n=float(round(n)))

    @property
    def crs(self) -> str:
        return f"EPSG:{self.epsg}"

    @cached_property
    def _fwd(self):  # WGS84 -> UTM
        return _transformer(4326, self.epsg)

    @cached_property
    def _inv(self):  # UTM -> WGS84
        return _transformer(self.epsg, 4326)

    def to_latlon(self, x, y) -> Tuple[np.ndarray, np.ndarray]:
        """Local (x, y) metres -> (lat, lon) degrees. Works on scalars and arrays."""
        lon, lat = self._inv.transform(np.asarray(x, float) + self.origin_e, np.asarray(y, float) + self.origin_n)
        return lat, lon

    def from_latlon(self, lat, lon) -> Tuple[np.ndarray, np.ndarray]:
        """(lat, lon) degrees -> local (x, y) metres."""
        e, n = self._fwd.transform(np.asarray(lon, float), np.asarray(lat, float))
        return e - self.origin_e, n - self.origin_n

    def to_utm(self, x, y) -> Tuple[np.ndarray, np.ndarray]:
        return np.asarray(x, float) + self.origin_e, np.asarray(y, float) + self.origin_n

    def grid_convergence_deg(self, x: float = 0.0, y: float = 0.0) -> float:
        """Bearing (deg, clockwise) of grid north measured from true north at local (x, y).

        A true (compass) heading = grid heading + convergence.
        """
        lat, lon = self.to_latlon(x, y)
        lat2, lon2 = self.to_latlon(x, y + 100.0)  # 100 m grid north
        # bearing of grid north measured from true north, clockwise
        phi1, phi2 = math.radians(float(lat)), math.radians(float(lat2))
        dlon = math.radians(float(lon2) - float(lon))
        b = math.degrees(math.atan2(math.sin(dlon) * math.cos(phi2),
                                    math.cos(phi1) * math.sin(phi2) - math.sin(phi1) * math.cos(phi2) * math.cos(dlon)))
        return b

    def to_dict(self) -> dict:
        return {"epsg": self.epsg, "origin_e": self.origin_e, "origin_n": self.origin_n}

    @staticmethod
    def from_dict(d: dict) -> "LocalFrame":
        return LocalFrame(epsg=int(d["epsg"]), origin_e=float(d["origin_e"]), origin_n=float(d["origin_n"]))


_TRANSFORMERS: dict = {}


def _transformer(src: int, dst: int):
    key = (src, dst)
    if key not in _TRANSFORMERS:
        from pyproj import Transformer

        _TRANSFORMERS[key] = Transformer.from_crs(src, dst, always_xy=True)
    return _TRANSFORMERS[key]
