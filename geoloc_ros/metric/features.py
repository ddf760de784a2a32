"""Feature extractors for metric matching: one interface, two implementations.

An extractor turns the fused BEV (in the vehicle frame) and the aerial window (north-up map
frame) into feature rasters at the same resolution, compared by ``correlate.match_bev``::

    feats, weight = fx.bev(bev_rgb [h, w, 3] float, valid [h, w] bool, range_m [h, w])
    feats_a = fx.aerial(aerial_rgb [H, W, 3] uint8|float)           # [H, W, C]
    fx.rotate_channels(feats_on_canvas, yaw) -> feats                # channels that are vectors

* ``GradientFeatures``: the non-learned baseline. Locally contrast-normalised image gradients
  at two scales (4 channels); gradients are vectors, so they turn with the view.
* ``LearnedFeatures`` (``metric/learned.py``): a pair of small CNNs through an inference backend.

Registry: ``make_extractor(name, **kw)``; names in ``EXTRACTORS``.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Tuple

import numpy as np

from ..core.errors import InvalidArgument
from .bev import _cv2

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def luma(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img, np.float32)
    return a @ _LUMA if a.ndim == 3 else a


def view_weight(valid: np.ndarray, range_m: np.ndarray, range_scale_m: float) -> np.ndarray:
    """Per-cell weight of a BEV: valid cells, closer ones (finer ground resolution) count more."""
    return np.asarray(valid, np.float32) * np.exp(-np.asarray(range_m, np.float32) / float(range_scale_m))


class GradientFeatures:
    """Non-learned baseline: (d/dcol, d/drow) of the luma at ``sigmas`` (px), each divided by the
    local gradient energy (so shadows and exposure changes matter less)."""

    name = "gradient"
    version = 1
    volume_temperature = 0.08  # the localizer's volume temperature for these scores (geoloc eval calibrate, town 9)
    min_posterior_at_peak = 0.0  # no posterior-share gate: broad peaks (on the validation drives 0.25 and 0.5 hurt)

    def __init__(self, sigmas=(1.0, 2.5), norm_sigma: float = 4.0, floor: float = 2.0, range_scale_m: float = 25.0,
                 erode_px: int = 2):
        self.sigmas = tuple(float(s) for s in sigmas)
        self.norm_sigma = float(norm_sigma)
        self.floor = float(floor)
        self.range_scale_m = float(range_scale_m)
        self.erode_px = int(erode_px)
        self.channels = 2 * len(self.sigmas)

    def identity(self) -> Dict:
        return {"name": self.name, "version": self.version, "sigmas": list(self.sigmas),
                "norm_sigma": self.norm_sigma, "floor": self.floor}

    def _grad(self, grey: np.ndarray) -> np.ndarray:
        cv2 = _cv2()
        out = []
        for s in self.sigmas:
            g = cv2.GaussianBlur(grey, (0, 0), s)
            gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) / 8.0
            gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) / 8.0
            e = cv2.GaussianBlur(gx * gx + gy * gy, (0, 0), self.norm_sigma * s)
            n = np.sqrt(e) + self.floor / max(s, 1.0)
            out += [gx / n, gy / n]
        return np.stack(out, axis=2).astype(np.float32)

    def bev(self, bev_rgb: np.ndarray, valid: np.ndarray, range_m: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        cv2 = _cv2()
        v = np.asarray(valid, np.uint8)
        if self.erode_px > 0:
            k = 2 * self.erode_px + 1
            v = cv2.erode(v, np.ones((k, k), np.uint8))
        # fill invalid pixels with the valid mean so the border does not make gradients
        g = luma(bev_rgb)
        m = float(g[valid].mean()) if np.any(valid) else 0.0
        g = np.where(valid, g, m).astype(np.float32)
        return self._grad(g), view_weight(v > 0, range_m, self.range_scale_m)

    def aerial(self, aerial_rgb: np.ndarray) -> np.ndarray:
        return self._grad(luma(aerial_rgb))

    def rotate_channels(self, f: np.ndarray, yaw: float) -> np.ndarray:
        """BEV pixel gradients (d/dcol = -d/dY, d/drow = -d/dX in the vehicle frame) -> canvas pixel
        gradients (d/dcol = d/dx, d/drow = -d/dy in the map frame) for a vehicle at ``yaw``:
        (g_col, g_row) -> (s g_col - c g_row, c g_col + s g_row) per (col, row) channel pair."""
        c, s = math.cos(yaw), math.sin(yaw)
        M = np.zeros((f.shape[2], f.shape[2]), np.float32)
        for i in range(0, f.shape[2], 2):
            M[i:i + 2, i:i + 2] = [[s, c], [-c, s]]  # out = f @ M
        return f @ M


EXTRACTORS: Dict[str, Callable[..., object]] = {"gradient": GradientFeatures}


def register_extractor(name: str, factory: Callable[..., object]) -> None:
    EXTRACTORS[name] = factory


def make_extractor(name: str, **kw):
    if name == "learned" and "learned" not in EXTRACTORS:
        from . import learned  # noqa: F401  (registers itself)
    try:
        factory = EXTRACTORS[name]
    except KeyError:
        raise InvalidArgument(f"unknown feature extractor {name!r}; choose one of {', '.join(sorted(EXTRACTORS))}"
                              ) from None
    return factory(**kw)
