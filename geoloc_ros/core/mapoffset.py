"""The orthophoto's own offset, learned from GNSS while the camera holds the fix (numpy + stdlib).

Camera matches land where the orthophoto says; the orthophoto is off the truth by its survey's
registration error (decimetres for a national DOP, metres for NAIP-like imagery). GNSS is off by
the receiver's bias, which wanders in time (Gauss-Markov, ``map_offset_gnss_tau_s``) around zero;
the orthophoto's offset does not move. So "GNSS fix minus camera-on-map position", sampled while
the camera is trusted and used, measures ``offset(p) + bias(t) + noise`` and the two separate by
their behaviour over space and time.

Model (one Kalman filter, per axis, the two axes sharing one covariance):

* the offset field ``o(p)`` (absolute = map-frame + o; east, north in metres) on cells of
  ``map_offset_cell_m`` (keyed on the UTM grid, so any map frame of the same zone reads the same
  cells), bilinear between cell centres; a Gaussian-process prior, zero mean, sigma
  ``map_registration_sigma_m`` per axis (the orthophoto's stated accuracy), correlation
  ``exp(-distance / map_offset_corr_length_m)`` between cells. Cells are created where the
  vehicle drives, from the conditional prior given their neighbours (a smooth field: what one
  street learns, the next one inherits as its correlation says);
* the receiver's bias ``b(t)`` as one more state: Gauss-Markov with the receiver's correlation
  time and the stationary variance the filter uses (``gnss_bias_scale`` x the reported
  covariance). Because the bias is a state, 100 samples within a second measure ``o + b`` well
  and ``o`` hardly at all: only samples about a correlation time apart are independent, and the
  offset's sigma shrinks like ``sigma_bias / sqrt(driving time / (2 tau))``;
* one sample per ``map_offset_sample_interval_s``: the camera's own peak (map frame) moved by the
  odometry to the time of the nearest accepted fix, against that fix; white noise of the fix
  (``gnss_white_fraction``) plus ``map_offset_camera_sigma_m``; a chi-square gate (2 dof, 99.9 %)
  drops samples that do not fit (multipath, a wrong peak), counted.

How it is used (``pipeline.Localizer``): the filter keeps running in the orthophoto's frame (camera
matches unchanged); every GNSS fix is moved into that frame, ``z - o(z)``, its covariance plus the
offset's (``to_map``); the published absolute fix is the map-frame estimate + ``o``, its
covariance the filter's plus the offset's (``offset_at``).

Persistence: a sidecar JSON (``save`` / ``load``; manifest ``geoloc_map_offset`` v1) holding the
cells' means and joint covariance (the bias is the receiver's, not the map's: not saved), the
number of independent samples each cell rests on, and the orthophoto it belongs to (CRS, size,
bounds: ``check_ortho`` refuses another one). Written atomically (temporary file + rename).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Deque, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .config import param, validate_fields
from .errors import IncompatibleArtifact, InvalidArgument
from .manifest import check_manifest, write_json_atomic

MAPOFFSET_FORMAT = "geoloc_map_offset"
MAPOFFSET_VERSION = 1
REBUILD = "learn it again with `geoloc map calibrate BAG... --ortho TIF`, or delete it to start from the prior"
GATE_CHI2 = 13.8  # 2 dof, 99.9 %
_f = param


@dataclass(frozen=True)
class MapOffsetParams:
    """Settings of the map-offset estimator (``pipeline.LocalizerConfig`` extends this class; the
    prior sigma is ``map_registration_sigma_m``)."""

    _owner: ClassVar[str] = "localizer"
    _group: ClassVar[str] = "metric"

    map_offset_estimate: bool = _f(False, "learn the orthophoto's local offset from GNSS minus the trusted camera "
                                   "(core.mapoffset) and publish the absolute fix as map-frame estimate + offset, "
                                   "its covariance with the offset's; the prior sigma is map_registration_sigma_m. "
                                   "Off: the constant map_registration_sigma_m is added (fading without matches)")
    map_offset_file: str = _f("", "the offset's sidecar JSON: loaded at start when it exists (refused if made for "
                              "another orthophoto), rewritten atomically while driving; 'auto': "
                              "<orthophoto>.offset.json; empty: learn in memory only")
    map_offset_save: bool = _f(True, "write the learned offset back to map_offset_file while driving and at the end "
                               "(false: read it only, as `geoloc eval replay --map-offset` does)")
    map_offset_cell_m: float = _f(250.0, "cell size of the offset field (m)", 20.0, 10000.0)
    map_offset_corr_length_m: float = _f(1000.0, "correlation length of the offset between places (m): a smooth "
                                         "field, what one street learns its neighbours inherit", 10.0, 1e6)
    map_offset_gnss_tau_s: float = _f(60.0, "correlation time of the receiver's bias as the offset estimator models "
                                      "it (s): samples closer in time than this are not independent evidence of "
                                      "the offset (a receiver's, ~60 s; longer than the filter's gnss_bias_tau_s, "
                                      "which is short on purpose)", 1.0, 86400.0)
    map_offset_camera_sigma_m: float = _f(0.5, "sigma of the camera's own peak in one sample (m per axis)", 0.01, 10.0)
    map_offset_sample_interval_s: float = _f(2.0, "at most one sample per this time (consecutive keyframes share "
                                             "their mosaic, their errors are not independent) (s)", 0.0, 600.0)
    map_offset_save_every_s: float = _f(60.0, "rewrite the sidecar at most this often while driving (s)", 1.0, 86400.0)
    map_offset_max_cells: int = _f(1024, "most cells held (a drive beyond them publishes the prior there)", 1, 100000)

    def __post_init__(self):
        validate_fields(self, self._owner)


def _ident(d: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    if not d:
        return None
    out = {k: d[k] for k in ("kind", "crs", "shape", "bounds_latlon", "gsd_m") if k in d}
    return out or None


def ortho_identity(imagery) -> Dict[str, Any]:
    """What identifies an orthophoto for its sidecar (``index.imagery`` ``describe()`` without the
    path: a copied or moved file is the same orthophoto, a re-exported one is not)."""
    return _ident(imagery.describe() if hasattr(imagery, "describe") else dict(imagery)) or {}


def check_ortho(expected: Optional[Mapping[str, Any]], found: Optional[Mapping[str, Any]], source) -> None:
    """Refuse a sidecar made for another orthophoto (CRS, size, bounds to ~1 cm, GSD)."""
    a, b = _ident(expected), _ident(found)
    if a is None or b is None:
        return
    diffs = []
    for k in sorted(set(a) & set(b)):
        va, vb = a[k], b[k]
        if isinstance(va, (list, tuple)) and isinstance(vb, (list, tuple)):
            same = len(va) == len(vb) and all(abs(float(x) - float(y)) <= 1e-7 * max(1.0, abs(float(x)))
                                              for x, y in zip(va, vb))
        elif isinstance(va, (int, float)) and isinstance(vb, (int, float)):
            same = abs(float(va) - float(vb)) <= 1e-4
        else:
            same = va == vb
        if not same:
            diffs.append(f"{k} {vb!r} (this orthophoto: {va!r})")
    if diffs:
        raise IncompatibleArtifact(f"{source}: map offset made for another orthophoto: {'; '.join(diffs)}; {REBUILD}")


@dataclass
class OffsetSample:
    """One "GNSS minus camera-on-map" sample (metres, absolute - map)."""

    t: float
    x: float  # where (map frame)
    y: float
    d: np.ndarray  # [2]
    noise_var: float  # white part per axis (m^2)
    bias_var: float  # the receiver bias's stationary variance per axis (m^2)


class MapOffsetEstimator:
    """See the module docstring. ``frame``: the map frame (a ``core.geo.LocalFrame``; cells are keyed
    on its UTM grid); ``prior_sigma_m``: the orthophoto's stated accuracy (per axis);
    ``white_fraction`` / ``bias_scale``: the GNSS error split the filter uses."""

    def __init__(self, params: MapOffsetParams, prior_sigma_m: float, frame=None, *, white_fraction: float = 0.25,
                 bias_scale: float = 1.0, ortho: Optional[Mapping[str, Any]] = None):
        self.p = params
        self.sigma0 = float(prior_sigma_m)
        if not (self.sigma0 >= 0.0 and math.isfinite(self.sigma0)):
            raise InvalidArgument(f"map offset prior sigma must be >= 0, got {prior_sigma_m!r}")
        self.frame = frame
        self.white_fraction = float(white_fraction)
        self.bias_scale = float(bias_scale)
        self.ortho = _ident(ortho)
        self._e0 = float(getattr(frame, "origin_e", 0.0))
        self._n0 = float(getattr(frame, "origin_n", 0.0))
        self.epsg = int(getattr(frame, "epsg", 0) or 0)
        self.keys: List[Tuple[int, int]] = []
        self.index: Dict[Tuple[int, int], int] = {}
        self.M = np.zeros((1, 2))  # row 0: the receiver's bias; rows 1..: cells
        self.P = np.zeros((1, 1))
        self.n_eff = np.zeros(0)  # independent samples per cell (bilinear weights)
        self.bias_t: Optional[float] = None  # time of the bias state (None: at its stationary prior)
        self.bias_var = 0.0
        self.n_eff_total = 0.0
        self.counts: Dict[str, int] = {"samples": 0, "rejected_gate": 0, "skipped_cells": 0, "no_fix": 0,
                                       "no_odometry": 0, "inconsistent_peak": 0}
        self._last_sample_t: Optional[float] = None
        self._fixes: Deque[Tuple[float, np.ndarray, np.ndarray, Optional[Tuple[float, float, float]]]] = deque(maxlen=40)
        self._saved_at: Optional[float] = None
        self.path: Optional[Path] = None
        self.loaded_from: Optional[Path] = None

    # ------------------------------------------------------------------ the field
    def _kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
        return self.sigma0 ** 2 * np.exp(-d / self.p.map_offset_corr_length_m)

    def _centre(self, key: Tuple[int, int]) -> np.ndarray:
        c = self.p.map_offset_cell_m
        return np.array([(key[0] + 0.5) * c, (key[1] + 0.5) * c])  # absolute UTM grid

    def _centres(self) -> np.ndarray:
        return np.array([self._centre(k) for k in self.keys]).reshape(-1, 2)

    def _add_cell(self, key: Tuple[int, int]) -> Optional[int]:
        """Index (into M/P) of cell ``key``, created from its conditional prior given its nearest
        cells (exact for a Gaussian process when the neighbours hold the correlation)."""
        i = self.index.get(key)
        if i is not None:
            return i
        if len(self.keys) >= self.p.map_offset_max_cells:
            return None
        c = self._centre(key)[None]
        n = len(self.keys)
        m_new = np.zeros(2)
        row = np.zeros(n + 1)
        var = self.sigma0 ** 2
        if n and self.sigma0 > 0:
            cen = self._centres()
            dist = np.hypot(*(cen - c).T)
            near = np.argsort(dist)[:12]
            near = near[dist[near] <= 4.0 * self.p.map_offset_corr_length_m]
            if len(near):
                K = self._kernel(cen[near], cen[near]) + 1e-9 * self.sigma0 ** 2 * np.eye(len(near))
                k = self._kernel(c, cen[near])[0]
                A = np.linalg.solve(K, k)  # K symmetric
                idx = near + 1
                m_new = A @ self.M[idx]
                row = A @ self.P[idx, :]
                var = float(A @ self.P[np.ix_(idx, idx)] @ A) + max(self.sigma0 ** 2 - float(A @ k), 0.0)
        self.M = np.vstack([self.M, m_new[None]])
        P = np.zeros((n + 2, n + 2))
        P[:n + 1, :n + 1] = self.P
        P[n + 1, :n + 1] = row
        P[:n + 1, n + 1] = row
        P[n + 1, n + 1] = var
        self.P = P
        self.keys.append(key)
        self.index[key] = n + 1
        self.n_eff = np.append(self.n_eff, 0.0)
        return n + 1

    def _weights(self, x: float, y: float, create: bool) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """(state indices, bilinear weights) of the offset at map-frame (x, y); None outside the cells held."""
        c = self.p.map_offset_cell_m
        u = (x + self._e0) / c - 0.5
        v = (y + self._n0) / c - 0.5
        i0, j0 = math.floor(u), math.floor(v)
        fu, fv = u - i0, v - j0
        idx, w = [], []
        for di, dj, wt in ((0, 0, (1 - fu) * (1 - fv)), (1, 0, fu * (1 - fv)), (0, 1, (1 - fu) * fv), (1, 1, fu * fv)):
            key = (i0 + di, j0 + dj)
            k = self._add_cell(key) if create else self.index.get(key)
            if k is None:
                if wt > 1e-9:
                    return None
                continue
            idx.append(k)
            w.append(wt)
        return np.asarray(idx, int), np.asarray(w, float)

    def offset_at(self, x: float, y: float) -> Tuple[np.ndarray, float]:
        """(offset east/north [2], its variance per axis) at map-frame (x, y): absolute = map + offset.
        Where no cell is held yet, the cells are made from the prior (or the prior itself past the limit)."""
        got = self._weights(float(x), float(y), create=True)
        if got is None:
            return np.zeros(2), self.sigma0 ** 2
        idx, w = got
        return w @ self.M[idx], max(float(w @ self.P[np.ix_(idx, idx)] @ w), 0.0)

    def to_map(self, z: np.ndarray, R: Optional[np.ndarray]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """A GNSS fix (absolute, map-frame coordinates) moved into the orthophoto's frame: ``z - o(z)``,
        covariance ``R + var(o) I`` (R None stays None: the filter's default sigma)."""
        z = np.asarray(z, float)
        o, var = self.offset_at(float(z[0]), float(z[1]))
        return z - o, (None if R is None else np.asarray(R, float) + var * np.eye(2))

    # ------------------------------------------------------------------ samples
    def _bias_to(self, t: float, bias_var: float) -> None:
        """Gauss-Markov prediction of the receiver's bias state to ``t``."""
        if self.bias_t is None or not 0.0 <= t - self.bias_t <= 20.0 * self.p.map_offset_gnss_tau_s:
            phi = 0.0  # first sample (or a long gap): the bias from its stationary law
        else:
            phi = math.exp(-max(t - self.bias_t, 0.0) / self.p.map_offset_gnss_tau_s)
        self.M[0] *= phi
        self.P[0, :] *= phi
        self.P[:, 0] *= phi
        self.P[0, 0] += (1.0 - phi * phi) * bias_var
        self.bias_t = t
        self.bias_var = bias_var
        # effective independent samples of a Gauss-Markov mean: n (1 - phi) / (1 + phi) for n samples
        # with lag-one correlation phi (a burst adds ~nothing, samples far apart one each)
        self.n_eff_total += (1.0 - phi) / (1.0 + phi)

    def observe(self, s: OffsetSample) -> bool:
        """One sample: ``d = o(x, y) + b(t) + white``; gated (chi-square, 2 dof). True when used."""
        if not (np.all(np.isfinite(s.d)) and math.isfinite(s.x) and math.isfinite(s.y)):
            return False
        got = self._weights(s.x, s.y, create=True)
        if got is None:
            self.counts["skipped_cells"] += 1
            return False
        saved = (self.M.copy(), self.P.copy(), self.bias_t, self.n_eff_total)
        prev = self.n_eff_total
        self._bias_to(float(s.t), float(s.bias_var))
        idx, w = got
        h = np.zeros(len(self.M))
        h[0] = 1.0
        h[idx] += w
        Ph = self.P @ h
        S = float(h @ Ph) + float(s.noise_var)
        e = np.asarray(s.d, float) - h @ self.M
        if not S > 0 or float(e @ e) / S > GATE_CHI2:
            self.M, self.P, self.bias_t, self.n_eff_total = saved
            self.counts["rejected_gate"] += 1
            return False
        K = Ph / S
        self.M = self.M + np.outer(K, e)
        self.P = self.P - np.outer(K, Ph)
        self.P = 0.5 * (self.P + self.P.T)
        self.n_eff[idx - 1] += (self.n_eff_total - prev) * w
        self.counts["samples"] += 1
        return True

    def on_fix(self, t: float, z: np.ndarray, R: Optional[np.ndarray], odom: Optional[Sequence[float]]) -> None:
        """An accepted GNSS fix (absolute, map-frame coordinates; ``R`` grid covariance or None) and
        the odometry pose (x, y, yaw in the odom frame) at its time, kept for the next samples."""
        if R is None or not np.all(np.isfinite(R)):
            return
        self._fixes.append((float(t), np.asarray(z, float).copy(), np.asarray(R, float).copy(),
                            None if odom is None else (float(odom[0]), float(odom[1]), float(odom[2]))))

    def on_camera(self, t: float, peak_xy: Sequence[float], map_yaw: float, odom: Optional[Sequence[float]],
                  filter_xy: Sequence[float], filter_std_m: float, max_dt_s: float = 0.6) -> str:
        """The trusted camera's own peak (map frame) at keyframe time ``t``, used by the filter: a
        sample against the nearest earlier accepted fix (moved by the odometry in between). Returns
        what happened ('used', or why not)."""
        t = float(t)
        if self._last_sample_t is not None and 0.0 <= t - self._last_sample_t < self.p.map_offset_sample_interval_s:
            return "interval"
        peak = np.asarray(peak_xy[:2], float)
        # the peak must be where the (map-frame) filter is: a wrong peak that slipped through is not a sample
        if float(np.hypot(*(peak - np.asarray(filter_xy[:2], float)))) > 2.0 + 3.0 * float(filter_std_m):
            self.counts["inconsistent_peak"] += 1
            return "inconsistent peak"
        fix = next((f for f in reversed(self._fixes) if 0.0 <= t - f[0] <= max_dt_s), None)
        if fix is None:
            self.counts["no_fix"] += 1
            return "no fix"
        tf, z, R, odom_f = fix
        if t - tf > 0.02:
            if odom is None or odom_f is None:
                self.counts["no_odometry"] += 1
                return "no odometry"
            dx, dy = odom[0] - odom_f[0], odom[1] - odom_f[1]
            rot = float(map_yaw) - float(odom[2])
            c, s = math.cos(rot), math.sin(rot)
            peak = peak - np.array([c * dx - s * dy, s * dx + c * dy])
        r = 0.5 * float(np.trace(R))
        smp = OffsetSample(t=tf, x=float(peak[0]), y=float(peak[1]), d=z - peak,
                           noise_var=self.white_fraction ** 2 * r + self.p.map_offset_camera_sigma_m ** 2,
                           bias_var=self.bias_scale * r)
        self._last_sample_t = t
        return "used" if self.observe(smp) else "rejected"

    def forget_time(self) -> None:
        """Time restarted (a reset of the Localizer, a new bag): the receiver's bias and the recent
        fixes are forgotten; the field (the map's) is kept."""
        self._fixes.clear()
        self._last_sample_t = None
        self.bias_t = None

    # ------------------------------------------------------------------ output
    def diagnostics(self, x: float, y: float) -> Dict[str, Any]:
        """The local offset at map-frame (x, y): east/north (m), sigma (m per axis), the independent
        samples it rests on, and the estimator's counters."""
        o, var = self.offset_at(x, y)
        got = self._weights(float(x), float(y), create=False)
        n = float(got[1] @ self.n_eff[got[0] - 1]) if got is not None and len(got[0]) else 0.0
        return {"east_m": round(float(o[0]), 3), "north_m": round(float(o[1]), 3),
                "sigma_m": round(math.sqrt(var), 3), "independent_samples": round(n, 1),
                "independent_samples_total": round(self.n_eff_total, 1), "cells": len(self.keys),
                "prior_sigma_m": self.sigma0, "counts": dict(self.counts),
                "file": str(self.path or self.loaded_from or "")}

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> Dict[str, Any]:
        P = self.P[1:, 1:]
        return {"format": MAPOFFSET_FORMAT, "format_version": MAPOFFSET_VERSION,
                "orthophoto": self.ortho or {}, "epsg": self.epsg, "cell_m": self.p.map_offset_cell_m,
                "corr_length_m": self.p.map_offset_corr_length_m, "prior_sigma_m": self.sigma0,
                "convention": "absolute = orthophoto (map-frame) position + offset; cells keyed on the UTM grid "
                              "(centre = ((i + 0.5) * cell_m, (j + 0.5) * cell_m) easting/northing)",
                "independent_samples_total": self.n_eff_total,
                "cells": [{"i": int(k[0]), "j": int(k[1]), "east_m": float(self.M[n + 1, 0]),
                           "north_m": float(self.M[n + 1, 1]), "sigma_m": math.sqrt(max(float(P[n, n]), 0.0)),
                           "independent_samples": float(self.n_eff[n])} for n, k in enumerate(self.keys)],
                "covariance": [[float(v) for v in row] for row in P]}

    def load_dict(self, doc: Mapping[str, Any], source: Union[str, Path]) -> None:
        """Replace the field with a saved one (checked: format, orthophoto, UTM zone, cell size)."""
        check_manifest(doc, MAPOFFSET_FORMAT, MAPOFFSET_VERSION, source=source, what="map offset", rebuild=REBUILD)
        check_ortho(self.ortho, doc.get("orthophoto"), source)
        try:
            epsg = int(doc.get("epsg") or 0)
            cell = float(doc["cell_m"])
            cells = list(doc["cells"])
            keys = [(int(c["i"]), int(c["j"])) for c in cells]
            M = np.array([[float(c["east_m"]), float(c["north_m"])] for c in cells]).reshape(-1, 2)
            neff = np.array([float(c.get("independent_samples", 0.0)) for c in cells])
            P = np.asarray(doc["covariance"], float).reshape(len(keys), len(keys))
            total = float(doc.get("independent_samples_total", float(neff.sum())))
        except (KeyError, TypeError, ValueError) as exc:
            raise IncompatibleArtifact(f"{source}: map offset is malformed ({type(exc).__name__}: {exc}); "
                                       f"{REBUILD}") from exc
        if self.epsg and epsg and epsg != self.epsg:
            raise IncompatibleArtifact(f"{source}: map offset is on EPSG:{epsg}, the map frame on EPSG:{self.epsg}; "
                                       f"{REBUILD}")
        if abs(cell - self.p.map_offset_cell_m) > 1e-6:
            raise IncompatibleArtifact(f"{source}: map offset cells are {cell:g} m, map_offset_cell_m is "
                                       f"{self.p.map_offset_cell_m:g} m; set it to {cell:g} or {REBUILD}")
        if not (np.all(np.isfinite(M)) and np.all(np.isfinite(P)) and np.allclose(P, P.T, atol=1e-9)
                and (len(keys) == 0 or float(np.linalg.eigvalsh(P)[0]) > -1e-6)) or len(set(keys)) != len(keys):
            raise IncompatibleArtifact(f"{source}: map offset covariance or cells are not valid; {REBUILD}")
        n = len(keys)
        self.keys = keys
        self.index = {k: i + 1 for i, k in enumerate(keys)}
        self.M = np.vstack([np.zeros((1, 2)), M])
        self.P = np.zeros((n + 1, n + 1))
        self.P[1:, 1:] = P
        self.n_eff = neff
        self.n_eff_total = total
        self.bias_t = None

    def save(self, path: Union[str, Path]) -> Path:
        """Write the sidecar atomically (temporary file + rename: a reader, or a crash, never leaves
        half a file). A state that is not finite is refused (the file on disk stays as it was)."""
        if not (np.all(np.isfinite(self.M)) and np.all(np.isfinite(self.P))):
            raise InvalidArgument(f"map offset not saved to {path}: the estimate is not finite")
        return write_json_atomic(Path(path), self.to_dict())

    def load(self, path: Union[str, Path]) -> None:
        import json

        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise IncompatibleArtifact(f"{path}: map offset is not readable JSON ({exc}); {REBUILD}") from exc
        self.load_dict(doc, path)
        self.loaded_from = path

    def maybe_save(self, t: float, force: bool = False) -> Optional[Path]:
        """Rewrite ``self.path`` when due (``map_offset_save_every_s`` since the last write and a new
        sample since). An OSError is returned to the caller to log; the old file stays whole."""
        if self.path is None or not self.counts["samples"]:
            return None
        if not force and self._saved_at is not None and t - self._saved_at < self.p.map_offset_save_every_s:
            return None
        self._saved_at = float(t)
        return self.save(self.path)


def sidecar_path(setting: str, orthophoto: Optional[Union[str, Path]]) -> Optional[Path]:
    """The sidecar named by ``map_offset_file``: '' none, 'auto' beside the orthophoto."""
    if not setting:
        return None
    if setting == "auto":
        if orthophoto is None:
            raise InvalidArgument("map_offset_file=auto needs an orthophoto (the sidecar is <orthophoto>.offset.json)")
        op = Path(orthophoto)
        return op.with_name(op.name + ".offset.json")
    return Path(setting).expanduser()


def open_map_offset(config, frame, imagery=None) -> Optional[MapOffsetEstimator]:
    """The Localizer's estimator (None when ``map_offset_estimate`` is off): ``config`` a
    ``LocalizerConfig`` (these params, the prior ``map_registration_sigma_m`` and the filter's GNSS
    split), ``imagery`` the orthophoto (``index.imagery``: its identity and path). The sidecar
    (``map_offset_file``) is loaded when it exists; a sidecar of another orthophoto is refused."""
    if not getattr(config, "map_offset_estimate", False):
        return None
    est = MapOffsetEstimator(config, float(config.map_registration_sigma_m), frame,
                             white_fraction=float(config.gnss_white_fraction), bias_scale=float(config.gnss_bias_scale),
                             ortho=ortho_identity(imagery) if imagery is not None else None)
    path = sidecar_path(config.map_offset_file, getattr(imagery, "path", None))
    if path is not None:
        if path.is_file():
            est.load(path)
        est.path = path if config.map_offset_save else None
    return est


__all__ = ["open_map_offset",
           "MapOffsetParams", "MapOffsetEstimator", "OffsetSample", "ortho_identity", "check_ortho", "sidecar_path",
           "MAPOFFSET_FORMAT", "MAPOFFSET_VERSION"]
