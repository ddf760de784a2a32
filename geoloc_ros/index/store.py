"""``TileIndex``: open a built tile index and search it (exact near a prior, approximate globally).

Shards load lazily on the first search that needs them and are evicted least-recently-used when
the loaded shards exceed ``memory_budget_mb`` (the shards a query needs are always kept for that
query, so a budget smaller than one query's shards is exceeded, with a warning, rather than
failing). Every file is checked against the manifest (size, sha256) when it is loaded: a missing,
truncated or altered file raises ``IncompatibleArtifact`` naming the rebuild command.

Search near a prior is exact: the tiles within ``radius_m`` of ``near`` (Euclidean distance in
the index's local UTM frame) and, when ``heading_deg`` is given, in the heading bins whose centre
lies within ``heading_tol_deg`` of it, are scored by inner product (= cosine similarity: the
descriptors and queries are L2-normalised) with faiss ``IndexFlatIP.search`` restricted by an
``IDSelectorBatch``. Without a prior, the global HNSW / IVF-PQ index answers approximately.
"""
from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..core.errors import IncompatibleArtifact, InvalidArgument
from ..core.geo import LocalFrame
from ..core.manifest import check_same_model, read_manifest, sha256_file
from . import INDEX_FORMAT, INDEX_FORMAT_VERSION
from .tiling import angle_diff_deg, bin_centres_deg

log = logging.getLogger(__name__)

# platform notes: with the default (128000) faiss uses its slow non-BLAS kernel for fewer queries
# than that; 20 makes batched queries 8x faster and leaves single queries unchanged.
BLAS_THRESHOLD = 20
_FAISS = None


def _faiss():
    global _FAISS
    if _FAISS is None:
        import faiss

        faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD
        _FAISS = faiss
    return _FAISS


@dataclass
class SearchResult:
    """Arrays of shape [Q, k'] (k' = k, or the most candidates of any query when k is None).
    Empty slots: ids -1, scores/lat/lon/x/y/heading_deg NaN, heading_bin -1."""

    ids: np.ndarray  # int64
    scores: np.ndarray  # float32 cosine similarity
    lat: np.ndarray
    lon: np.ndarray
    x: np.ndarray  # in TileIndex.frame
    y: np.ndarray
    heading_deg: np.ndarray  # bin centre (compass deg)
    heading_bin: np.ndarray  # int
    num_candidates: np.ndarray  # [Q] tiles that passed the filter (global search: all tiles)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def valid(self, q: int = 0) -> np.ndarray:
        return self.ids[q] >= 0


class _Shard:
    __slots__ = ("name", "index", "ids", "meta", "nbytes", "sel_cache")

    def __init__(self, name, index, ids, meta, nbytes):
        self.name, self.index, self.ids, self.meta, self.nbytes = name, index, ids, meta, nbytes


_META_KEYS = ("lat", "lon", "x", "y", "heading_bin", "heading_deg")


class TileIndex:
    """A tile index folder (see ``index.build``). Use ``TileIndex.open``."""

    def __init__(self, path: Path, manifest: Dict, memory_budget_mb: float, verify: bool):
        self.path = Path(path)
        self.manifest = manifest
        self.memory_budget_mb = float(memory_budget_mb)
        self.verify = bool(verify)
        self.dim = int(manifest["dim"])
        self.heading_bins = int(manifest["heading_bins"])
        self.tile_m = float(manifest["tile_m"])
        self.spacing_m = float(manifest["spacing_m"])
        self.frame = LocalFrame.from_dict(manifest["datum"]["frame"])
        self.bounds_latlon = tuple(float(v) for v in manifest["bounds_latlon"])
        self.num_tiles = int(manifest["counts"]["tiles"])
        self._shards_meta = [s for s in manifest["shards"] if int(s.get("tiles", 0)) > 0]
        self._shard_boxes = np.array([s["bounds_xy"] for s in self._shards_meta], float).reshape(-1, 4)
        self._loaded: "OrderedDict[str, _Shard]" = OrderedDict()
        self._global = None
        self._global_meta: Optional[Dict[str, np.ndarray]] = None
        self._positions = None  # (keys, x, y) of the tile centres, or False when the index has none
        self._lock = threading.RLock()
        self._counters = {"shard_loads": 0, "shard_evictions": 0, "searches_near": 0, "searches_global": 0,
                          "over_budget": 0}
        self._centres = bin_centres_deg(self.heading_bins)

    # ---- opening ----------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Union[str, Path], expect_model: Optional[Dict[str, Any]] = None,
             memory_budget_mb: float = 512, verify: bool = True) -> "TileIndex":
        """Open the index in ``path``; with ``expect_model`` (``encoder.identity``) refuse an index
        made by another model. ``verify`` checks each file's sha256 when it is loaded."""
        path = Path(path)
        what = f"tile index {path}"
        if not path.is_dir():
            raise IncompatibleArtifact(f"{what} does not exist; build one with `geoloc index build --imagery ORTHO "
                                       f"--checkpoint MODEL --out {path}`")
        if not (path / "manifest.json").is_file() and (path / "work" / "state.json").is_file():
            raise IncompatibleArtifact(f"{what} is an unfinished build (no manifest.json, work/ present); rerun the "
                                       f"same `geoloc index build ... --out {path}` command to resume it")
        m = read_manifest(path / "manifest.json", INDEX_FORMAT, INDEX_FORMAT_VERSION, what=what,
                          rebuild=f"rebuild it with `geoloc index build --imagery ORTHO --checkpoint MODEL "
                                  f"--out {path} --force`")
        try:
            for key in ("model", "dim", "heading_bins", "tile_m", "spacing_m", "datum", "bounds_latlon", "counts",
                        "shards", "metadata", "global_index"):
                if key not in m:
                    raise KeyError(key)
            LocalFrame.from_dict(m["datum"]["frame"])
            for s in m["shards"]:
                if int(s.get("tiles", 0)) > 0:
                    _ = (s["bounds_xy"], s["files"]["index"]["path"], s["files"]["meta"]["path"], s["id_offset"])
        except (KeyError, TypeError, ValueError) as exc:
            raise IncompatibleArtifact(f"{what}: manifest.json is incomplete (missing {exc}); rebuild the index "
                                       f"with --force") from exc
        idx = cls(path, m, memory_budget_mb, verify)
        if expect_model is not None:
            check_same_model(expect_model, m, what=what, rebuild=idx.rebuild_command(expect_model))
        for s in idx._shards_meta:  # cheap existence + size check of every file now; contents on load
            for f in s["files"].values():
                idx._check_file(f, check_hash=False)
        idx._check_file(m["metadata"], check_hash=False)
        if "positions" in m:
            idx._check_file(m["positions"], check_hash=False)
        idx._check_file(m["global_index"], check_hash=False)
        _faiss()
        return idx

    def rebuild_command(self, model: Optional[Dict[str, Any]] = None) -> str:
        m = self.manifest
        preset = (model or m["model"]).get("preset", "MODEL")
        img = m.get("imagery", {}).get("path", "ORTHO")
        return (f"geoloc index build --imagery {img} --checkpoint {preset} --out {self.path} --force "
                f"(same area/spacing options as: {m.get('build', {}).get('command') or 'the original build'})")

    def _check_file(self, entry: Dict, check_hash: bool) -> Path:
        p = self.path / entry["path"]
        if not p.is_file():
            raise IncompatibleArtifact(f"tile index {self.path}: {entry['path']} is missing; rebuild with "
                                       f"{self.rebuild_command()}")
        if p.stat().st_size != int(entry["bytes"]):
            raise IncompatibleArtifact(f"tile index {self.path}: {entry['path']} has {p.stat().st_size} bytes, the "
                                       f"manifest says {entry['bytes']} (truncated or replaced); rebuild with "
                                       f"{self.rebuild_command()}")
        if check_hash and self.verify:

            if sha256_file(p) != entry["sha256"]:
                raise IncompatibleArtifact(f"tile index {self.path}: {entry['path']} is corrupted (sha256 differs "
                                           f"from the manifest); rebuild with {self.rebuild_command()}")
        return p

    def _read_faiss(self, entry: Dict, n: int):
        faiss = _faiss()
        p = self._check_file(entry, check_hash=True)
        try:
            index = faiss.read_index(str(p))
        except RuntimeError as exc:
            raise IncompatibleArtifact(f"tile index {self.path}: {entry['path']} is not a readable FAISS index "
                                       f"({str(exc).splitlines()[0] if str(exc) else exc}); rebuild with "
                                       f"{self.rebuild_command()}") from exc
        if index.d != self.dim or index.ntotal != n:
            raise IncompatibleArtifact(f"tile index {self.path}: {entry['path']} holds {index.ntotal} x {index.d}, "
                                       f"the manifest says {n} x {self.dim}; rebuild with {self.rebuild_command()}")
        return index

    def _read_npz(self, entry: Dict, n: int, keys: Sequence[str]) -> Dict[str, np.ndarray]:
        p = self._check_file(entry, check_hash=True)
        try:
            with np.load(p) as z:
                out = {k: np.asarray(z[k]) for k in keys}
        except (OSError, ValueError, KeyError) as exc:
            raise IncompatibleArtifact(f"tile index {self.path}: {entry['path']} is unreadable ({exc}); rebuild with "
                                       f"{self.rebuild_command()}") from exc
        if any(len(v) != n for v in out.values()):
            raise IncompatibleArtifact(f"tile index {self.path}: {entry['path']} does not hold {n} rows")
        return out

    # ---- shards ------------------------------------------------------------------------------
    def _shard(self, i: int) -> _Shard:
        s = self._shards_meta[i]
        name = s["name"]
        sh = self._loaded.get(name)
        if sh is not None:
            self._loaded.move_to_end(name)
            return sh
        n = int(s["tiles"])
        index = self._read_faiss(s["files"]["index"], n)
        meta = self._read_npz(s["files"]["meta"], n, ("ids",) + _META_KEYS)
        ids = meta.pop("ids")
        if n and (ids[0] != int(s["id_offset"]) or ids[-1] != int(s["id_offset"]) + n - 1):
            raise IncompatibleArtifact(f"tile index {self.path}: shard {name} ids do not match the manifest")
        nbytes = n * self.dim * 4 + sum(v.nbytes for v in meta.values()) + ids.nbytes
        sh = _Shard(name, index, ids, meta, nbytes)
        self._loaded[name] = sh
        self._counters["shard_loads"] += 1
        return sh

    def _evict(self, keep: Sequence[str]) -> None:
        budget = self.memory_budget_mb * 1e6
        total = sum(s.nbytes for s in self._loaded.values())
        for name in list(self._loaded):
            if total <= budget:
                break
            if name in keep:
                continue
            total -= self._loaded.pop(name).nbytes
            self._counters["shard_evictions"] += 1
        if total > budget:
            self._counters["over_budget"] += 1
            if self._counters["over_budget"] == 1:
                log.warning("tile index %s: the shards one query needs (%.0f MB) exceed memory_budget_mb=%g",
                            self.path, total / 1e6, self.memory_budget_mb)

    def shards_near(self, x: float, y: float, radius_m: float) -> List[int]:
        b = self._shard_boxes
        if not len(b):
            return []
        dx = np.maximum(0.0, np.maximum(b[:, 0] - x, x - b[:, 2]))
        dy = np.maximum(0.0, np.maximum(b[:, 1] - y, y - b[:, 3]))
        return [int(i) for i in np.nonzero(np.hypot(dx, dy) <= radius_m)[0]]

    def covers(self, lat: float, lon: float) -> bool:
        """True when a tile centre lies within one grid step (``spacing_m``) of (lat, lon): inside an
        indexed area, or on an indexed corridor. (Indexes without positions.npz: within the
        bounding box of some shard's tile centres, grown by half a step.)"""
        if not (np.isfinite(lat) and np.isfinite(lon)):
            return False
        x, y = (float(v) for v in self.frame.from_latlon(lat, lon))
        s = self.spacing_m
        with self._lock:
            if not self.shards_near(x, y, s + 1e-6):
                return False
            grid = self._position_grid()
        if grid is None:
            return bool(self.shards_near(x, y, s * 0.5 + 1e-6))
        keys, px, py = grid
        ix, iy = int(np.floor(x / s)), int(np.floor(y / s))
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                k = (ix + dx) * (1 << 32) + (iy + dy)
                a, b = np.searchsorted(keys, [k, k + 1])
                if b > a and np.any(np.hypot(px[a:b] - x, py[a:b] - y) <= s + 1e-6):
                    return True
        return False

    def distance_to_tiles(self, x: np.ndarray, y: np.ndarray, max_m: float) -> Optional[np.ndarray]:
        """Distance (m) from each local-frame point (``x``, ``y``) to the nearest tile centre, inf where
        none lies within ``max_m``: how far a path strays from the indexed roads (the relocalisation
        verifier's road test). None for an index without positions.npz."""
        x, y = np.asarray(x, float).reshape(-1), np.asarray(y, float).reshape(-1)
        if not (max_m >= 0):
            raise InvalidArgument(f"max_m must be >= 0, got {max_m}")
        with self._lock:
            grid = self._position_grid()
        if grid is None:
            return None
        keys, px, py = grid
        best = np.full(len(x), np.inf)
        if not len(keys):
            return best
        s = self.spacing_m
        r = int(math.ceil(max_m / s))
        ix, iy = np.floor(x / s).astype(np.int64), np.floor(y / s).astype(np.int64)
        for dx in range(-r, r + 1):
            for dy in range(-r, r + 1):
                k = (ix + dx) * (1 << 32) + (iy + dy)
                a = np.minimum(np.searchsorted(keys, k), len(keys) - 1)
                hit = keys[a] == k  # centres sit at whole multiples of spacing_m: one per cell
                d = np.hypot(px[a] - x, py[a] - y)
                best = np.where(hit & (d < best), d, best)
        return np.where(best <= max_m, best, np.inf)

    def _position_grid(self):
        """Tile centres hashed by grid cell (sorted int64 keys), loaded once from positions.npz."""
        if self._positions is None:
            entry = self.manifest.get("positions")
            if entry is None:  # an index written before positions.npz existed
                self._positions = False
            else:
                n = int(self.manifest["counts"]["positions"])
                pos = self._read_npz(entry, n, ("x", "y"))
                s = self.spacing_m
                keys = np.floor(pos["x"] / s).astype(np.int64) * (1 << 32) + np.floor(pos["y"] / s).astype(np.int64)
                order = np.argsort(keys, kind="stable")
                self._positions = (keys[order], pos["x"][order], pos["y"][order])
        return self._positions or None

    # ---- search ------------------------------------------------------------------------------
    def search(self, desc: np.ndarray, k: Optional[int] = 10, near: Optional[Tuple[float, float]] = None,
               radius_m: Optional[float] = None, heading_deg: Optional[float] = None,
               heading_tol_deg: Optional[float] = None) -> SearchResult:
        """See the module docstring. ``desc`` [D] or [Q, D]; ``k=None`` returns every candidate
        (near search only). ``radius_m`` defaults to 3 x spacing_m. Queries are L2-normalised."""
        q = np.asarray(desc, np.float32)
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise InvalidArgument(f"descriptor must be [{self.dim}] or [Q, {self.dim}], got {tuple(np.shape(desc))}")
        if not np.all(np.isfinite(q)):
            raise InvalidArgument("descriptor contains NaN/inf")
        q = np.ascontiguousarray(q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12))
        if k is not None and int(k) < 1:
            raise InvalidArgument(f"k must be >= 1 or None, got {k}")
        with self._lock:
            if near is None:
                if k is None:
                    raise InvalidArgument("k=None (all candidates) needs near=(lat, lon)")
                return self._search_global(q, int(k))
            return self._search_near(q, k, near, radius_m, heading_deg, heading_tol_deg)

    def _empty(self, Q: int, k: int) -> SearchResult:
        f = np.full((Q, k), np.nan)
        return SearchResult(ids=np.full((Q, k), -1, np.int64), scores=np.full((Q, k), np.nan, np.float32),
                            lat=f.copy(), lon=f.copy(), x=f.copy(), y=f.copy(),
                            heading_deg=np.full((Q, k), np.nan, np.float32),
                            heading_bin=np.full((Q, k), -1, np.int64), num_candidates=np.zeros(Q, np.int64))

    def _search_near(self, q, k, near, radius_m, heading_deg, heading_tol_deg) -> SearchResult:
        faiss = _faiss()
        self._counters["searches_near"] += 1
        Q = len(q)
        radius = float(radius_m) if radius_m is not None else 3.0 * self.spacing_m
        if not (radius >= 0):
            raise InvalidArgument(f"radius_m must be >= 0, got {radius_m}")
        lat, lon = near
        if not (np.isfinite(lat) and np.isfinite(lon)):
            raise InvalidArgument(f"near must be a finite (lat, lon), got {near}")
        x0, y0 = (float(v) for v in self.frame.from_latlon(lat, lon))
        bins = None
        if heading_deg is not None:
            tol = float(heading_tol_deg) if heading_tol_deg is not None else 180.0 / self.heading_bins
            bins = np.nonzero(angle_diff_deg(self._centres, float(heading_deg)) <= tol + 1e-9)[0]
        hit_ids, hit_scores, hit_meta = [], [], []
        shard_ids = self.shards_near(x0, y0, radius)
        names = [self._shards_meta[i]["name"] for i in shard_ids]
        n_cand = 0
        for i in shard_ids:
            sh = self._shard(i)
            m = sh.meta
            keep = np.hypot(m["x"] - x0, m["y"] - y0) <= radius
            if bins is not None:
                keep &= np.isin(m["heading_bin"], bins)
            local = np.nonzero(keep)[0]
            if not len(local):
                continue
            n_cand += len(local)
            kk = len(local) if k is None else min(int(k), len(local))
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(local.astype(np.int64)))
            D, I = sh.index.search(q, kk, params=params)
            hit_ids.append(I)
            hit_scores.append(D)
            hit_meta.append(sh)
        self._evict(keep=names)
        if not hit_ids:
            return self._empty(Q, 0 if k is None else int(k))
        kout = n_cand if k is None else int(k)
        res = self._empty(Q, kout)
        res.num_candidates[:] = n_cand
        # merge the per-shard top lists: score descending, then global id ascending (deterministic ties)
        cat = {key: np.concatenate([sh.meta[key][np.maximum(I, 0)] for I, sh in zip(hit_ids, hit_meta)], axis=1)
               for key in _META_KEYS}
        gids = np.concatenate([np.where(I >= 0, sh.ids[np.maximum(I, 0)], -1) for I, sh in zip(hit_ids, hit_meta)],
                              axis=1)
        scores = np.concatenate(hit_scores, axis=1)
        sort_scores = np.where(gids >= 0, scores, -np.inf)
        for r in range(Q):
            order = np.lexsort((gids[r], -sort_scores[r]))[:kout]
            order = order[gids[r, order] >= 0]
            n = len(order)
            res.ids[r, :n] = gids[r, order]
            res.scores[r, :n] = scores[r, order]
            for key, dst in (("lat", res.lat), ("lon", res.lon), ("x", res.x), ("y", res.y),
                             ("heading_deg", res.heading_deg), ("heading_bin", res.heading_bin)):
                dst[r, :n] = cat[key][r, order]
        return res

    def _load_global(self):
        if self._global is None:
            g = self.manifest["global_index"]
            index = self._read_faiss(g, self.num_tiles)
            gp = g.get("params", {})
            if g.get("type") == "hnsw" and "efSearch" in gp:
                index.hnsw.efSearch = int(gp["efSearch"])
            if g.get("type") == "ivfpq" and "nprobe" in gp:
                index.nprobe = int(gp["nprobe"])
            self._global = index
            self._global_meta = self._read_npz(self.manifest["metadata"], self.num_tiles, _META_KEYS)
        return self._global, self._global_meta

    def _search_global(self, q, k) -> SearchResult:
        self._counters["searches_global"] += 1
        index, meta = self._load_global()
        D, I = index.search(q, k)
        res = self._empty(len(q), k)
        res.num_candidates[:] = self.num_tiles
        ok = I >= 0
        Ic = np.maximum(I, 0)
        res.ids[:] = np.where(ok, I, -1)
        res.scores[:] = np.where(ok, D, np.nan)
        for key, dst in (("lat", res.lat), ("lon", res.lon), ("x", res.x), ("y", res.y),
                         ("heading_deg", res.heading_deg)):
            dst[:] = np.where(ok, meta[key][Ic], np.nan)
        res.heading_bin[:] = np.where(ok, meta["heading_bin"][Ic], -1)
        return res

    # ---- introspection -----------------------------------------------------------------------
    def tile_metadata(self) -> Dict[str, np.ndarray]:
        """Every tile's metadata (row = global id); loads tiles.npz."""
        from .build import TILE_FIELDS

        with self._lock:
            return self._read_npz(self.manifest["metadata"], self.num_tiles, ("ids",) + TILE_FIELDS)

    def descriptors(self, ids: np.ndarray) -> np.ndarray:
        """Stored descriptors of global ``ids`` (from their shards)."""
        ids = np.asarray(ids, np.int64)
        out = np.zeros((len(ids), self.dim), np.float32)
        offs = np.array([s["id_offset"] for s in self._shards_meta])
        with self._lock:
            for j, g in enumerate(ids):
                i = int(np.searchsorted(offs, g, side="right") - 1)
                sh = self._shard(i)
                out[j] = sh.index.reconstruct(int(g - self._shards_meta[i]["id_offset"]))
            self._evict(keep=[])
        return out

    def stats(self) -> Dict[str, Any]:
        with self._lock:
            mem = sum(s.nbytes for s in self._loaded.values())
            gmem = 0
            if self._global is not None:
                gmem = self.manifest["global_index"]["bytes"] + sum(v.nbytes for v in self._global_meta.values())
            return {"shards_total": len(self._shards_meta), "shards_loaded": len(self._loaded),
                    "tiles_loaded": int(sum(len(s.ids) for s in self._loaded.values())),
                    "memory_mb": round(mem / 1e6, 3), "global_loaded": self._global is not None,
                    "global_memory_mb": round(gmem / 1e6, 3), "memory_budget_mb": self.memory_budget_mb,
                    "num_tiles": self.num_tiles, **self._counters}

    def __repr__(self) -> str:
        return (f"TileIndex({self.path}, {self.num_tiles} tiles, {len(self._shards_meta)} shards, "
                f"model {self.manifest['model'].get('preset')})")
