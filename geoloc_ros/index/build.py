"""Building a tile index: plan tiles, cut and encode them in batches, write shards + a global index.

Layout of an index folder::

    manifest.json           format "geoloc-tile-index" v1: model identity, geometry, counts, shards,
                            file sizes + sha256, build command (written last: no manifest = not done)
    tiles.npz               metadata of every tile, row = global tile id (see TILE_FIELDS)
    positions.npz           the distinct tile centres (x, y), for ``TileIndex.covers``
    global.faiss            approximate index over all tiles (HNSW, or IVF-PQ at country scale)
    shards/<cell>.faiss     exact IndexFlatIP of one shard (shard_m x shard_m cell), local ids
    shards/<cell>.npz       that shard's metadata rows (+ ``ids``: their global ids)
    work/                   only while building: per-batch checkpoints (state.json + <cell>/bNNNNN.npz)

Resuming: the plan (and so every batch's contents) is a pure function of the build parameters;
a batch whose checkpoint exists is not recomputed, and the final files are assembled from the
checkpoints in order, so an interrupted-then-resumed build writes the same bytes as an
uninterrupted one. Parameters that differ from the interrupted build's are refused.

Executors: ``local`` (this process, one encoder) or ``ray`` (one task per shard; each task
opens the imagery and loads the encoder itself, 1 torch thread per task).

Global approximate index: HNSW (``HNSW32,Flat``, inner product) up to 2M tiles: no training,
recall@10 > 0.95 in bench/bench_index.py at efSearch 128, search well under a millisecond, and it
stays correct for any size (IVF-PQ cannot train on a small area). It stores the full vectors
(~2.2 KB per tile at D=512), so past 2M tiles ``auto`` switches to IVF-PQ (64 bytes per tile,
lower recall) to keep a country in memory. The HNSW graph is built single-threaded so that it is
deterministic (bit-identical rebuilds); that costs minutes only at millions of tiles, where the
encoding takes hours anyway.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..core.errors import GeolocError, IncompatibleArtifact, InvalidArgument, OutputExists
from ..core.geo import LocalFrame
from ..core.manifest import sha256_file, write_json_atomic
from . import INDEX_FORMAT, INDEX_FORMAT_VERSION
from .tiling import Area, TilePlan, bin_centres_deg, plan_tiles

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
GLOBAL_INDEX_TYPES = ("auto", "hnsw", "ivfpq", "flat")
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128
TILE_FIELDS = ("lat", "lon", "x", "y", "easting", "northing", "heading_bin", "heading_deg", "window", "shard")


class BuildInterrupted(GeolocError):
    """The build stopped on request (``max_batches``) after writing its checkpoints; rerun to resume."""


@dataclass
class BuildResult:
    out: Path
    manifest: Dict
    seconds: float
    new_batches: int = 0
    cached_batches: int = 0

    @property
    def num_tiles(self) -> int:
        return int(self.manifest["counts"]["tiles"])


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def save_npz_atomic(path: Path, **arrays) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)
    return path


def write_faiss_atomic(index, path: Path) -> Path:
    import faiss

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    faiss.write_index(index, str(tmp))
    os.replace(tmp, path)
    return path


# ---- cutting + encoding batches -------------------------------------------------------------

@dataclass
class _Job:
    """What a worker needs to compute the batches of one shard."""

    shard: str
    batches: List[Tuple[int, np.ndarray]]  # (batch number, plan tile indices)
    pos_x: np.ndarray  # positions of the whole plan (indexed by tile_pos)
    pos_y: np.ndarray
    tile_pos: np.ndarray
    tile_bin: np.ndarray
    frame: Dict
    tile_m: float
    tile_px: int
    heading_bins: int
    max_nodata: float
    work: str


def _encode_batches(job: _Job, imagery, encoder, on_batch: Optional[Callable[[int, bool], None]] = None,
                    budget: Optional[List[int]] = None) -> int:
    """Compute the missing batch checkpoints of one shard. ``budget`` = [batches still allowed]."""
    frame = LocalFrame.from_dict(job.frame)
    centres = bin_centres_deg(job.heading_bins)
    wdir = Path(job.work) / job.shard
    new = 0
    for j, idx in job.batches:
        f = wdir / f"b{j:05d}.npz"
        if f.is_file():
            if on_batch:
                on_batch(len(idx), True)
            continue
        if budget is not None:
            if budget[0] <= 0:
                raise BuildInterrupted("build stopped after the requested number of batches; run the same command "
                                       "again to resume")
            budget[0] -= 1
        tiles, keep, windows = [], [], []
        outside = nodata = 0
        pos = job.tile_pos[idx]
        for p in np.unique(pos):  # one window read per position serves all its bins in this batch
            sel = idx[pos == p]
            smp = imagery.sample(frame, float(job.pos_x[p]), float(job.pos_y[p]), centres[job.tile_bin[sel]],
                                 job.tile_m, job.tile_px, max_nodata=job.max_nodata)
            for t, ok, why in zip(sel, smp.valid, smp.reason):
                if ok:
                    keep.append(t)
                    windows.append(smp.window)
                elif why == "outside":
                    outside += 1
                else:
                    nodata += 1
            if smp.valid.any():
                tiles.append(smp.tiles[smp.valid])
        order = np.argsort(np.asarray(keep, np.int64), kind="stable")  # keep plan order
        keep_arr = np.asarray(keep, np.int64)[order]
        if len(keep_arr):
            desc = encoder.encode_aerial(np.concatenate(tiles)[order])
            desc = desc / np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
        else:
            desc = np.zeros((0, encoder.dim), np.float32)
        save_npz_atomic(f, idx=keep_arr, desc=np.ascontiguousarray(desc, np.float32),
                        window=np.asarray(windows, np.int64).reshape(-1, 4)[order],
                        skipped=np.array([outside, nodata], np.int64))
        new += 1
        if on_batch:
            on_batch(len(idx), False)
    return new


def _ray_shard_task(job: _Job, imagery_spec: Dict, model: str, backend: str) -> Tuple[str, int]:
    from ..inference import load_encoder
    from .imagery import open_spec

    imagery = open_spec(imagery_spec)
    try:
        enc = load_encoder(model, backend=backend, threads=1)
        return job.shard, _encode_batches(job, imagery, enc)
    finally:
        imagery.close()


# ---- the build --------------------------------------------------------------------------------

def check_output(out: Union[str, Path], force: bool) -> None:
    """Fail before any work when ``out`` holds a finished index or other files (without --force);
    an interrupted build there is fine (it resumes if the parameters match)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExists(f"{out} exists and is not a directory")
    if force or not out.is_dir() or not any(out.iterdir()):
        return
    if (out / "manifest.json").exists():
        raise OutputExists(f"{out} already holds a tile index; pass --force to replace it")
    if not (out / "work" / "state.json").is_file():
        raise OutputExists(f"{out} already exists and is not empty; pass --force to replace it")


def _prepare_out(out: Path, params: Dict, force: bool) -> bool:
    """Create/validate ``out``; True when an interrupted build with the same parameters resumes."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExists(f"{out} exists and is not a directory")
    state = out / "work" / "state.json"
    if out.is_dir() and any(out.iterdir()):
        if force:
            shutil.rmtree(out)
        elif (out / "manifest.json").exists():
            raise OutputExists(f"{out} already holds a tile index; pass --force to replace it")
        elif state.is_file():
            try:
                old = json.loads(state.read_text())
            except ValueError:
                old = None
            if old != params:
                diff = sorted(k for k in set(params) | set(old or {}) if (old or {}).get(k) != params.get(k))
                raise OutputExists(f"{out} holds an interrupted build with other parameters ({', '.join(diff)}); "
                                   f"rerun it with the same options to resume, or pass --force to start over")
            return True
        else:
            raise OutputExists(f"{out} already exists and is not empty; pass --force to replace it")
    try:
        (out / "work").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidArgument(f"cannot write to {out}: {exc.strerror or exc}") from exc
    write_json_atomic(state, params)
    return False


def _batches(plan: TilePlan, shard: int, batch_size: int) -> List[Tuple[int, np.ndarray]]:
    idx = np.nonzero(plan.tile_shard == shard)[0]
    return [(j, idx[s:s + batch_size]) for j, s in enumerate(range(0, len(idx), batch_size))]


def build_index(imagery: Union[str, Path, "object"], encoder: Union[str, Path, "object"], out: Union[str, Path], *,
                backend: str = "auto", tile_m: Optional[float] = None, spacing_m: float = 5.0,
                heading_bins: int = 8, area: Optional[Area] = None, headings: str = "all",
                shard_m: float = 1000.0, batch_size: int = 32, executor: str = "local",
                ray_address: Optional[str] = None, global_index: str = "auto",
                datum: Optional[Tuple[float, float]] = None, max_nodata: float = 0.01, force: bool = False,
                progress: bool = True, command: Optional[str] = None,
                max_batches: Optional[int] = None) -> BuildResult:
    """Build (or resume) a tile index in ``out``.

    ``imagery``: GeoTIFF path, XYZ folder or an ``imagery.Imagery``; ``encoder``: an ``Encoder`` or
    a model for ``load_encoder`` (preset name, checkpoint, export folder). ``tile_m`` defaults to
    the model's ``tile_m``; ``datum`` (lat, lon) fixes the local frame (default: area centre).
    ``max_batches`` stops (``BuildInterrupted``) after computing that many new batches (tests,
    time-boxed builds). Returns a ``BuildResult``; the manifest is in ``out/manifest.json``.
    """
    from .imagery import Imagery, open_imagery

    t0 = time.perf_counter()
    if executor not in EXECUTORS:
        raise InvalidArgument(f"executor {executor!r} is not one of {', '.join(EXECUTORS)}")
    if global_index not in GLOBAL_INDEX_TYPES:
        raise InvalidArgument(f"global index {global_index!r} is not one of {', '.join(GLOBAL_INDEX_TYPES)}")
    if int(batch_size) < 1:
        raise InvalidArgument(f"batch size must be >= 1, got {batch_size}")
    out = Path(out)
    check_output(out, force)
    if isinstance(encoder, (str, Path)):
        from ..inference import load_encoder

        spec = Path(encoder)
        model_spec = str(spec.absolute()) if spec.exists() else str(encoder)
        enc = load_encoder(encoder, backend=backend)
    else:
        enc = encoder
        model_spec = str(getattr(enc, "checkpoint", "") or enc.identity["preset"])
    backend_used = getattr(enc, "backend", backend)
    tile_m = float(tile_m if tile_m is not None else enc.config.tile_m)
    if not (tile_m > 0):
        raise InvalidArgument(f"tile size must be > 0 m, got {tile_m}")
    h, w = enc.aerial_size
    if h != w:
        raise InvalidArgument(f"the model's aerial input {enc.aerial_size} is not square")
    tile_px = int(h)
    img = imagery if isinstance(imagery, Imagery) else open_imagery(imagery)
    try:
        bounds = img.bounds_latlon()
        area = area or Area()
        if datum is None:
            if area.kind == "bbox":
                b = area.bbox
            elif area.kind in ("polygon", "corridor"):
                pts = np.concatenate([p[0] for p in area.polygons] if area.kind == "polygon" else area.lines)
                b = (pts[:, 1].min(), pts[:, 0].min(), pts[:, 1].max(), pts[:, 0].max())
            else:
                b = bounds
            datum = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0)
        frame = LocalFrame.at(float(datum[0]), float(datum[1]))
        plan = plan_tiles(frame, area, bounds, spacing_m=spacing_m, heading_bins=heading_bins, shard_m=shard_m,
                          headings=headings)
        params = {"imagery": img.describe(), "model": enc.identity, "backend": backend_used,
                  "tile_m": tile_m, "tile_px": tile_px,
                  "spacing_m": float(spacing_m), "heading_bins": int(heading_bins), "headings": headings,
                  "area": area.describe(), "shard_m": float(shard_m), "batch_size": int(batch_size),
                  "datum": [float(datum[0]), float(datum[1])], "frame": frame.to_dict(),
                  "max_nodata": float(max_nodata), "global_index": global_index, "planned_tiles": plan.num_tiles}
        resumed = _prepare_out(out, params, force)
        work = out.absolute() / "work"
        shard_names = [TilePlan.shard_name(c) for c in plan.shards]
        jobs = [_Job(shard=name, batches=_batches(plan, s, int(batch_size)), pos_x=plan.pos_x, pos_y=plan.pos_y,
                     tile_pos=plan.tile_pos, tile_bin=plan.tile_bin, frame=frame.to_dict(), tile_m=tile_m,
                     tile_px=tile_px, heading_bins=int(heading_bins), max_nodata=float(max_nodata), work=str(work))
                for s, name in enumerate(shard_names)]
        log.info("index build: %d tiles (%d positions x bins) in %d shard(s), %s executor%s", plan.num_tiles,
                 len(plan.pos_x), len(jobs), executor, " (resuming)" if resumed else "")
        counters = {"new": 0, "cached": 0}
        if executor == "local":
            _run_local(jobs, img, enc, plan.num_tiles, progress, counters, max_batches)
        else:
            _run_ray(jobs, img.spec(), model_spec, backend_used, plan.num_tiles, progress, counters, ray_address)
        manifest = _assemble(out, plan, jobs, enc, img, frame, params, global_index, command, executor)
    finally:
        if not isinstance(imagery, Imagery):
            img.close()
    dt = time.perf_counter() - t0
    manifest["build"].update({"seconds": round(dt, 2), "new_batches": counters["new"],
                              "resumed_batches": counters["cached"],
                              "tiles_per_s": round(manifest["counts"]["planned"] / max(dt, 1e-9), 2)})
    write_json_atomic(out / "manifest.json", manifest)  # last: its presence marks a complete index
    shutil.rmtree(work, ignore_errors=True)
    c = manifest["counts"]
    if progress:
        print(f"index: {c['tiles']} tiles ({c['positions']} positions, K={heading_bins}, {len(jobs)} shard(s)) "
              f"from {c['planned']} planned; skipped {c['skipped_outside']} outside + {c['skipped_nodata']} nodata; "
              f"{counters['new']} batches encoded, {counters['cached']} resumed; {dt:.1f} s "
              f"({c['planned'] / max(dt, 1e-9):.1f} tiles/s) -> {out}")
    return BuildResult(out=out, manifest=manifest, seconds=dt, new_batches=counters["new"],
                       cached_batches=counters["cached"])


def _run_local(jobs, img, enc, total, progress, counters, max_batches):
    from tqdm import tqdm

    bar = tqdm(total=total, desc="tiles", unit="tile", disable=not progress, smoothing=0.1)

    def on_batch(n, cached):
        counters["cached" if cached else "new"] += 1
        bar.update(n)

    budget = None if max_batches is None else [int(max_batches)]
    try:
        for job in jobs:
            _encode_batches(job, img, enc, on_batch, budget)
    finally:
        bar.close()


def _run_ray(jobs, imagery_spec, model_spec, backend, total, progress, counters, address):
    import ray
    from tqdm import tqdm

    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        task = ray.remote(num_cpus=1)(_ray_shard_task)
        done_before = {j.shard: sum(1 for b, _ in j.batches if (Path(j.work) / j.shard / f"b{b:05d}.npz").is_file())
                       for j in jobs}
        futures = {task.remote(j, imagery_spec, model_spec, backend): j for j in jobs}
        bar = tqdm(total=total, desc="tiles", unit="tile", disable=not progress)
        pending = list(futures)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for r in ready:
                    job = futures[r]
                    try:
                        _, new = ray.get(r)
                    except ray.exceptions.RayTaskError as exc:
                        cause = exc.as_instanceof_cause() if hasattr(exc, "as_instanceof_cause") else exc
                        if isinstance(cause, GeolocError):
                            raise cause
                        raise
                    counters["new"] += new
                    counters["cached"] += done_before[job.shard]
                    bar.update(sum(len(i) for _, i in job.batches))
        finally:
            bar.close()
    finally:
        if started:
            ray.shutdown()


def _assemble(out: Path, plan: TilePlan, jobs: List[_Job], enc, img, frame: LocalFrame, params: Dict,
              global_index: str, command: Optional[str], executor: str) -> Dict:
    """Read the batch checkpoints in plan order and write the index files + manifest dict."""
    D = int(enc.dim)
    centres = bin_centres_deg(plan.heading_bins)
    metas, descs, names = [], [], []
    skipped = np.zeros(2, np.int64)
    planned_per_shard = []
    for s, job in enumerate(jobs):
        idx, desc, win = [], [], []
        for j, _ in job.batches:
            f = out / "work" / job.shard / f"b{j:05d}.npz"
            try:
                with np.load(f) as z:
                    idx.append(z["idx"])
                    desc.append(z["desc"])
                    win.append(z["window"])
                    skipped += z["skipped"]
            except (OSError, ValueError, KeyError) as exc:
                raise IncompatibleArtifact(f"build checkpoint {f} is unreadable ({exc}); delete it and rerun the "
                                           f"same command to recompute that batch") from exc
        idx = np.concatenate(idx) if idx else np.zeros(0, np.int64)
        desc = np.concatenate(desc).astype(np.float32) if desc else np.zeros((0, D), np.float32)
        win = np.concatenate(win) if win else np.zeros((0, 4), np.int64)
        pos = plan.tile_pos[idx]
        b = plan.tile_bin[idx]
        metas.append({"x": plan.pos_x[pos].astype(np.float64), "y": plan.pos_y[pos].astype(np.float64),
                      "heading_bin": b, "window": win})
        descs.append(desc)
        names.append(job.shard)
        planned_per_shard.append(int(sum(len(i) for _, i in job.batches)))
    total = sum(len(d) for d in descs)
    if total == 0:
        raise InvalidArgument(f"all {plan.num_tiles} planned tiles were skipped ({skipped[0]} outside the raster, "
                              f"{skipped[1]} nodata); the area does not overlap valid imagery by a whole tile "
                              f"({params['tile_m']:g} m)")
    m = write_index_files(out, frame, plan.heading_bins, names, [list(c) for c in plan.shards], descs, metas,
                          global_index)
    for e, n in zip(m["shards"], planned_per_shard):
        e["planned"] = n
    m.update({
        "model": dict(enc.identity), "dim": D,
        "tile_m": params["tile_m"], "tile_px": params["tile_px"], "tile_gsd_m": params["tile_m"] / params["tile_px"],
        "spacing_m": plan.spacing_m, "heading_bins": plan.heading_bins,
        "heading_bin_centres_deg": [float(c) for c in centres],
        "headings": params["headings"], "gsd_m": img.gsd_m, "imagery": img.describe(), "crs": img.crs_string,
        "datum": {"lat": params["datum"][0], "lon": params["datum"][1], "frame": frame.to_dict(),
                  "note": "LocalFrame: UTM grid axes, x/y = easting/northing minus the frame origin (m)"},
        "area": params["area"], "shard_m": params["shard_m"],
        "build": {"command": command or "", "executor": executor, "batch_size": params["batch_size"],
                  "backend": getattr(enc, "backend", "?"), "max_nodata": params["max_nodata"]},
    })
    m["counts"].update({"planned": int(plan.num_tiles), "skipped_outside": int(skipped[0]),
                        "skipped_nodata": int(skipped[1]),
                        "positions_outside_imagery": int(plan.positions_outside_imagery)})
    return m


def write_index_files(out: Path, frame: LocalFrame, heading_bins: int, shard_names: Sequence[str],
                      shard_cells: Sequence[Sequence[int]], descs: Sequence[np.ndarray], metas: Sequence[Dict],
                      global_index: str = "auto", deterministic: bool = True) -> Dict:
    """Write shards/*.faiss + shards/*.npz, tiles.npz and global.faiss for tiles given per shard
    (``descs[s]`` [n_s, D] L2-normalised, ``metas[s]`` with x, y (local), heading_bin and optional
    window [n_s, 4]); global ids follow the shard order. Returns the manifest's file/count/shard part
    (the caller adds model, geometry and build facts, then writes manifest.json last)."""
    import faiss

    out = Path(out)
    centres = bin_centres_deg(heading_bins)
    D = int(next(d.shape[1] for d in descs))
    shards_dir = out / "shards"
    shards_dir.mkdir(parents=True, exist_ok=True)
    all_meta: Dict[str, List[np.ndarray]] = {k: [] for k in TILE_FIELDS}
    shard_entries = []
    offset = 0
    for s, (name, desc, mm) in enumerate(zip(shard_names, descs, metas)):
        n = int(len(desc))
        entry = {"name": name, "cell": [int(v) for v in shard_cells[s]], "tiles": n, "id_offset": int(offset)}
        if n:
            x, y = np.asarray(mm["x"], np.float64), np.asarray(mm["y"], np.float64)
            lat, lon = frame.to_latlon(x, y)
            e, nn = frame.to_utm(x, y)
            b = np.asarray(mm["heading_bin"], np.int64)
            meta = {"lat": np.asarray(lat, np.float64), "lon": np.asarray(lon, np.float64), "x": x, "y": y,
                    "easting": np.asarray(e, np.float64), "northing": np.asarray(nn, np.float64),
                    "heading_bin": b.astype(np.int16), "heading_deg": centres[b].astype(np.float32),
                    "window": np.asarray(mm.get("window", np.full((n, 4), -1)), np.int64).reshape(n, 4),
                    "shard": np.full(n, s, np.int32)}
            fi = faiss.IndexFlatIP(D)
            fi.add(np.ascontiguousarray(desc, np.float32))
            p_index = write_faiss_atomic(fi, shards_dir / f"{name}.faiss")
            p_meta = save_npz_atomic(shards_dir / f"{name}.npz", ids=np.arange(offset, offset + n, dtype=np.int64),
                                     **meta)
            entry["bounds_xy"] = [float(x.min()), float(y.min()), float(x.max()), float(y.max())]
            entry["files"] = {key: _file_entry(out, p) for key, p in (("index", p_index), ("meta", p_meta))}
            for k in TILE_FIELDS:
                all_meta[k].append(meta[k])
        shard_entries.append(entry)
        offset += n
    total = offset
    meta_all = {k: np.concatenate(v) for k, v in all_meta.items()}
    p_tiles = save_npz_atomic(out / "tiles.npz", ids=np.arange(total, dtype=np.int64), **meta_all)
    X = np.concatenate([d for d in descs if len(d)])
    gtype = global_index if global_index != "auto" else ("hnsw" if total <= 2_000_000 else "ivfpq")
    gi, gparams = make_global_index(X, gtype, deterministic=deterministic)
    gtype = gparams.pop("type", gtype)
    p_global = write_faiss_atomic(gi, out / "global.faiss")
    del X
    pos_xy = np.unique(np.stack([meta_all["x"], meta_all["y"]], axis=1), axis=0)
    positions = int(len(pos_xy))
    p_pos = save_npz_atomic(out / "positions.npz", x=pos_xy[:, 0], y=pos_xy[:, 1])  # for TileIndex.covers
    lat, lon = meta_all["lat"], meta_all["lon"]
    return {
        "format": INDEX_FORMAT, "format_version": INDEX_FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dim": D, "heading_bins": int(heading_bins),
        "datum": {"frame": frame.to_dict()},
        "bounds_latlon": [float(lat.min()), float(lon.min()), float(lat.max()), float(lon.max())],
        "bounds_xy": [float(meta_all["x"].min()), float(meta_all["y"].min()), float(meta_all["x"].max()),
                      float(meta_all["y"].max())],
        "counts": {"tiles": int(total), "positions": positions,
                   "shards": sum(1 for e in shard_entries if e["tiles"] > 0)},
        "shards": shard_entries,
        "metadata": {**_file_entry(out, p_tiles), "fields": list(TILE_FIELDS)},
        "positions": _file_entry(out, p_pos),
        "global_index": {"type": gtype, "params": gparams, "metric": "inner_product", **_file_entry(out, p_global)},
    }


def _file_entry(out: Path, p: Path) -> Dict:
    return {"path": str(Path(p).relative_to(out)), "bytes": Path(p).stat().st_size, "sha256": sha256_file(p)}


def make_global_index(X: np.ndarray, kind: str, *, deterministic: bool = True):
    """An approximate inner-product index over ``X`` [N, D] (rows = global ids). Returns (index, params)."""
    import faiss

    X = np.ascontiguousarray(X, np.float32)
    N, D = X.shape
    if kind == "ivfpq":
        nlist = int(min(65536, max(16, 2 * math.sqrt(N))))
        m = next(mm for mm in (64, 32, 16, 8, 4, 2, 1) if D % mm == 0 and mm <= D)
        if N < max(39 * nlist, 256):
            log.warning("%d tiles are too few to train IVF-PQ (nlist %d); using HNSW", N, nlist)
            kind = "hnsw"  # too few tiles to train IVF-PQ
        else:
            q = faiss.IndexFlatIP(D)
            gi = faiss.IndexIVFPQ(q, D, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(0)
            train = X if N <= 64 * nlist else X[np.sort(rng.choice(N, 64 * nlist, replace=False))]
            gi.train(train)
            gi.add(X)
            gi.nprobe = min(nlist, 32)
            return gi, {"type": "ivfpq", "nlist": nlist, "m": m, "nbits": 8, "nprobe": gi.nprobe}
    if kind == "flat":
        gi = faiss.IndexFlatIP(D)
        gi.add(X)
        return gi, {"type": "flat"}
    if kind != "hnsw":
        raise InvalidArgument(f"unknown global index type {kind!r}")
    gi = faiss.IndexHNSWFlat(D, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    gi.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    gi.hnsw.efSearch = HNSW_EF_SEARCH
    threads = faiss.omp_get_max_threads()
    if deterministic:
        faiss.omp_set_num_threads(1)
    try:
        gi.add(X)
    finally:
        faiss.omp_set_num_threads(threads)
    return gi, {"type": "hnsw", "M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION, "efSearch": HNSW_EF_SEARCH}
