"""Tile index: build throughput and memory, and search latency vs index size.

    .venv/bin/python bench/bench_index.py [--sizes 10000 100000] [--full] [--out bench/results/index.json]

Part 1 (build): `build_index` on a generated 400 m town with the shipped seqgeo_lite weights
(torch CPU): tiles/s of the whole build vs the encoder alone on the same tiles (the baseline: the
build's overhead is cutting, checkpoints and FAISS writing), peak RSS, bytes on disk per tile.

Part 2 (search): synthetic indexes of N random unit descriptors (D=512) on a 5 m grid with K=8
heading bins, written with the same code as a real build and opened with `TileIndex`, for N in
--sizes (default 10k and 100k; --full adds 1M, ~2 GB RAM and several minutes). Per single query
(what the node does per keyframe), median and p95 over 200 queries:
  * near: exact search within 50 m of a prior and +-22.5 deg of a heading (k=10), and all tiles
    within 24 m, every heading (k=None, the similarity map);
  * global flat: exact brute force over all N (faiss IndexFlatIP), the baseline of the ratios;
  * global approx: the index's HNSW (efSearch 128, plus 32 and 512 for the trade-off) and IVF-PQ,
    with recall@10 against flat (overlap of the top-10 sets) and nn_in_top10 (the exact nearest
    neighbour is among the approximate top 10: what matters for relocalisation).
Part 3 (city, --city N, issue 26): the relocalisation's global search over every tile of a city
at N tiles (1M: the target) of synthetic descriptors with the model's dimension: the compressed
global index a build makes past 2M tiles (IVF-PQ, ``index.build.make_global_index``) vs the exact
flat baseline built in the same run: single-query latency (median, p95) and resident memory (RSS
growth while it is built and loaded, and its serialized size, plus the per-tile metadata the
TileIndex keeps beside it), both as ratios to flat, against the targets <= 20 ms and <= 1.5 GB.

Queries are noisy copies of stored descriptors (cosine ~0.7 to their source), so each has a
true neighbour; uniformly random 512-d vectors are the hardest case for graph/PQ search, so
the recall here is a lower bound for real descriptors, which cluster.
"""
from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write  # noqa: E402

D, K, SPACING = 512, 8, 5.0


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 1e6


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def bench_build(tmp: Path, n_side: int):
    from geoloc_ros.index import build_index
    from geoloc_ros.index.imagery import open_imagery
    from geoloc_ros.index.tiling import Area
    from geoloc_ros.inference import load_encoder
    from geoloc_ros.sim.generate import generate_world

    world = generate_world(seed=11, size_m=400.0, gsd_m=0.5)
    world.save(tmp / "world")
    enc = load_encoder("seqgeo_lite", backend="torch")
    enc.encode_aerial(np.zeros((8, 192, 192, 3), np.uint8))  # warm up torch (first call allocates) for both
    half = (n_side - 1) * 10.0 / 2.0
    fr = world.frame
    lat0, lon0 = fr.to_latlon(-half - 2, -half - 2)
    lat1, lon1 = fr.to_latlon(half + 2, half + 2)
    area = Area(kind="bbox", bbox=(float(lat0), float(lon0), float(lat1), float(lon1)))
    rss0 = rss_mb()
    res = build_index(tmp / "world" / "orthophoto.tif", enc, tmp / "idx", spacing_m=10.0, heading_bins=K, area=area,
                      shard_m=1000.0, batch_size=32, datum=(world.meta.origin_lat, world.meta.origin_lon),
                      progress=False, command="bench")
    n = res.num_tiles
    # baseline: the encoder alone on the same number of tiles (cut once, outside the timing)
    img = open_imagery(tmp / "world" / "orthophoto.tif")
    tiles = np.concatenate([img.sample(fr, 0.0, 0.0, np.arange(K) * 360.0 / K, 96.0, 192).tiles] * (n // K))
    t0 = time.perf_counter()
    for i in range(0, len(tiles), 32):
        enc.encode_aerial(tiles[i:i + 32])
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(n // K):
        img.sample(fr, 3.0, -4.0, np.arange(K) * 360.0 / K, 96.0, 192)
    t_cut = time.perf_counter() - t0
    disk = sum(f.stat().st_size for f in (tmp / "idx").rglob("*") if f.is_file())
    row = {"part": "build", "tiles": n, "build_tiles_per_s": round(n / res.seconds, 1),
           "encode_only_tiles_per_s": round(n / t_enc, 1), "cut_only_tiles_per_s": round(n / t_cut, 1),
           "build_vs_encode": round((n / res.seconds) / (n / t_enc), 2),
           "rss_growth_MB": round(rss_mb() - rss0, 1), "disk_bytes_per_tile": int(disk / n)}
    img.close()
    return row


def synthetic_index(out: Path, N: int, rng, global_index: str):
    from geoloc_ros.core.geo import LocalFrame
    from geoloc_ros.core.manifest import write_json_atomic
    from geoloc_ros.index.build import write_index_files

    frame = LocalFrame.at(44.4759, -73.2121)
    P = N // K
    side = int(np.ceil(np.sqrt(P)))
    ii = np.arange(P)
    x = (ii % side - side // 2) * SPACING
    y = (ii // side - side // 2) * SPACING
    x, y = np.repeat(x, K), np.repeat(y, K)
    b = np.tile(np.arange(K), P)
    X = rng.standard_normal((P * K, D), dtype=np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    shard_m = 1000.0
    cx, cy = np.floor(x / shard_m).astype(int), np.floor(y / shard_m).astype(int)
    cells = sorted(set(zip(cx.tolist(), cy.tolist())))
    cid = {c: i for i, c in enumerate(cells)}
    sid = np.array([cid[c] for c in zip(cx.tolist(), cy.tolist())])
    order = np.argsort(sid, kind="stable")
    X, x, y, b, sid = X[order], x[order], y[order], b[order], sid[order]
    descs, metas, names = [], [], []
    for s, c in enumerate(cells):
        m = sid == s
        descs.append(X[m])
        metas.append({"x": x[m], "y": y[m], "heading_bin": b[m]})
        names.append(f"x{c[0]:+05d}_y{c[1]:+05d}")
    t0 = time.perf_counter()
    man = write_index_files(out, frame, K, names, cells, descs, metas, global_index, deterministic=False)
    t_write = time.perf_counter() - t0
    man.update({"model": {"preset": "synthetic", "fingerprint": "0" * 64, "dim": D}, "tile_m": 96.0,
                "spacing_m": SPACING, "shard_m": shard_m, "build": {"command": "bench"}})
    write_json_atomic(out / "manifest.json", man)
    return X, x, y, t_write


def timed(fn, n):
    ts = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        ts.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(ts)), float(np.percentile(ts, 95))


def bench_search(tmp: Path, N: int, rng, nq: int = 200):
    import faiss

    from geoloc_ros.index import TileIndex
    from geoloc_ros.index.build import make_global_index

    rows = []
    out = tmp / f"syn{N}"
    rss0 = rss_mb()
    X, x, y, t_write = synthetic_index(out, N, rng, "hnsw")
    idx = TileIndex.open(out, memory_budget_mb=4096)
    qi = rng.choice(len(X), nq, replace=False)
    Q = X[qi] + 0.6 * rng.standard_normal((nq, D), dtype=np.float32) / np.sqrt(D)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    fr = idx.frame
    lat, lon = fr.to_latlon(x[qi] + rng.uniform(-5, 5, nq), y[qi] + rng.uniform(-5, 5, nq))
    heading = (np.arange(K)[qi % K] * 360.0 / K + rng.uniform(-10, 10, nq)) % 360
    idx.search(Q[0], k=10, near=(lat[0], lon[0]), radius_m=50.0)  # warm: load the shards

    # baseline: global flat (exact brute force)
    flat = faiss.IndexFlatIP(D)
    flat.add(X)
    f_med, f_p95 = timed(lambda i: flat.search(Q[i:i + 1], 10), nq)
    _, I_flat = flat.search(Q, 10)
    t0 = time.perf_counter()
    flat.search(Q[:100], 10)
    f_batch = (time.perf_counter() - t0) * 1e3 / 100
    base = {"N": N, "baseline_flat_ms": round(f_med, 3)}

    def add(method, med, p95, **kw):
        rows.append({"part": "search", **base, "method": method, "median_ms": round(med, 3), "p95_ms": round(p95, 3),
                     "speedup_vs_flat": round(f_med / med, 1), **kw})

    add("global flat (exact), 1 query", f_med, f_p95, recall_at_10=1.0, nn_in_top10=1.0,
        batch100_ms_per_query=round(f_batch, 3))
    ncand = []
    med, p95 = timed(lambda i: ncand.append(idx.search(Q[i], k=10, near=(lat[i], lon[i]), radius_m=50.0,
                                                       heading_deg=heading[i]).num_candidates[0]), nq)
    hit = np.mean([idx.search(Q[i], k=1, near=(lat[i], lon[i]), radius_m=50.0, heading_deg=heading[i]).ids[0, 0]
                   == qi[i] for i in range(50)])
    add("near 50 m + heading, k=10 (exact)", med, p95, candidates=int(np.median(ncand)), true_tile_top1=round(hit, 2))
    ncand = []
    med, p95 = timed(lambda i: ncand.append(idx.search(Q[i], k=None, near=(lat[i], lon[i]),
                                                       radius_m=24.0).num_candidates[0]), nq)
    add("near 24 m, all headings, k=None", med, p95, candidates=int(np.median(ncand)))
    def recalls(I):
        overlap = np.mean([len(set(I[i]) & set(I_flat[i])) / 10 for i in range(nq)])
        nn = np.mean([I_flat[i, 0] in set(I[i]) for i in range(nq)])
        return round(float(overlap), 3), round(float(nn), 3)

    idx.search(Q[0], k=10)  # load the global index
    med, p95 = timed(lambda i: idx.search(Q[i], k=10), nq)
    rec, nn = recalls(idx.search(Q, k=10).ids)
    g = idx.manifest["global_index"]
    ef0 = g["params"]["efSearch"]
    add(f"global HNSW{g['params']['M']} ef{ef0} (TileIndex)", med, p95, recall_at_10=rec, nn_in_top10=nn,
        build_s=round(t_write, 1), index_MB=round(g["bytes"] / 1e6, 1))
    hnsw = idx._global
    for ef in (32, 512):
        hnsw.hnsw.efSearch = ef
        med, p95 = timed(lambda i: hnsw.search(Q[i:i + 1], 10), nq)
        rec, nn = recalls(hnsw.search(Q, 10)[1])
        add(f"global HNSW{g['params']['M']} ef{ef}", med, p95, recall_at_10=rec, nn_in_top10=nn)
    hnsw.hnsw.efSearch = ef0
    if N >= 10_000:  # IVF-PQ needs >= 39 x nlist (= 2 sqrt N) training points
        t0 = time.perf_counter()
        ivf, params = make_global_index(X, "ivfpq", deterministic=False)
        t_ivf = time.perf_counter() - t0
        if params.get("type") == "ivfpq":
            med, p95 = timed(lambda i: ivf.search(Q[i:i + 1], 10), nq)
            rec, nn = recalls(ivf.search(Q, 10)[1])
            add(f"global IVF{params['nlist']},PQ{params['m']} nprobe{params['nprobe']}", med, p95,
                recall_at_10=rec, nn_in_top10=nn, build_s=round(t_ivf, 1),
                index_MB=round(faiss.serialize_index(ivf).nbytes / 1e6, 1))
        del ivf
    st = idx.stats()
    rows.append({"part": "memory", "N": N, "method": "TileIndex loaded (all shards + global)",
                 "rss_growth_MB": round(rss_mb() - rss0, 1), "shards_MB": st["memory_mb"],
                 "global_MB": st["global_memory_mb"]})
    idx = flat = X = None  # free them (a `del` would leave the timing lambdas above a deleted name)
    gc.collect()
    shutil.rmtree(out, ignore_errors=True)
    return rows


CITY_TARGET_MS, CITY_TARGET_MB = 20.0, 1500.0
META_BYTES_PER_TILE = 5 * 8 + 8  # lat, lon, x, y, heading_deg (float64) + heading_bin (int64) in TileIndex


def bench_city(N: int, rng, nq: int = 200):
    """Part 3: the compressed global index vs exact flat at ``N`` tiles (see the module doc)."""
    from geoloc_ros.index.build import make_global_index
    from geoloc_ros.index.store import _faiss

    faiss = _faiss()  # as TileIndex sets it up (BLAS threshold for single queries)

    X = rng.standard_normal((N, D), dtype=np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    qi = rng.choice(N, nq, replace=False)
    Q = X[qi] + 0.6 * rng.standard_normal((nq, D), dtype=np.float32) / np.sqrt(D)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    meta_mb = N * META_BYTES_PER_TILE / 1e6
    rows = []
    gc.collect()
    r0 = rss_mb()
    t0 = time.perf_counter()
    flat = faiss.IndexFlatIP(D)
    flat.add(X)
    t_flat = time.perf_counter() - t0
    flat_rss = rss_mb() - r0
    f_med, f_p95 = timed(lambda i: flat.search(Q[i:i + 1], 10), nq)
    _, I_flat = flat.search(Q, 10)
    flat_mb = N * D * 4 / 1e6 + meta_mb
    rows.append({"part": "city", "N": N, "method": "global flat (exact): the baseline", "median_ms": round(f_med, 2),
                 "p95_ms": round(f_p95, 2), "latency_ratio": 1.0, "resident_MB": round(flat_mb, 1),
                 "rss_growth_MB": round(flat_rss, 1), "memory_ratio": 1.0, "nn_in_top10": 1.0,
                 "build_s": round(t_flat, 1)})
    flat = None
    gc.collect()
    r0 = rss_mb()
    t0 = time.perf_counter()
    ivf, params = make_global_index(X, "ivfpq", deterministic=False)
    t_ivf = time.perf_counter() - t0
    ivf_rss = rss_mb() - r0
    for nprobe in sorted({params.get("nprobe", 32), 8, 64}):
        ivf.nprobe = nprobe
        med, p95 = timed(lambda i: ivf.search(Q[i:i + 1], 10), nq)
        _, I = ivf.search(Q, 10)
        nn = float(np.mean([I_flat[i, 0] in set(I[i]) for i in range(nq)]))
        mb = faiss.serialize_index(ivf).nbytes / 1e6 + meta_mb
        rows.append({"part": "city", "N": N, "method": f"global IVF{params['nlist']},PQ{params['m']} nprobe{nprobe}"
                     + (" (the build's default)" if nprobe == params.get("nprobe") else ""),
                     "median_ms": round(med, 2), "p95_ms": round(p95, 2), "latency_ratio": round(med / f_med, 3),
                     "resident_MB": round(mb, 1), "rss_growth_MB": round(ivf_rss, 1),
                     "memory_ratio": round(mb / flat_mb, 3), "nn_in_top10": round(nn, 3), "build_s": round(t_ivf, 1),
                     "meets_20ms": med <= CITY_TARGET_MS, "meets_1_5GB": mb <= CITY_TARGET_MB})
    ivf = X = None
    gc.collect()
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--full", action="store_true", help="also 1M tiles (~2 GB RAM, several minutes)")
    ap.add_argument("--build-side", type=int, default=3, help="build part: n x n positions x 8 bins (3 -> 72 tiles)")
    ap.add_argument("--city", type=int, default=0, help="part 3: the city-scale global index at this many tiles "
                    "(1000000: the issue's target; ~3 GB RAM, minutes)")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--skip-search", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    sizes = [] if args.skip_search else sorted(set(args.sizes + ([1_000_000] if args.full else [])))
    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp(prefix="bench_index_"))
    rows = []
    try:
        if not args.skip_build:
            rows.append(bench_build(tmp, args.build_side))
            print(table(rows[:1], list(rows[0])), flush=True)
        for N in sizes:
            new = bench_search(tmp, N, rng)
            print(f"N={N}: " + "; ".join(f"{r['method']} {r.get('median_ms', '')} ms" for r in new
                                         if r["part"] == "search"), flush=True)
            rows += new
        if args.city:
            new = bench_city(args.city, rng)
            print(table(new, ["N", "method", "median_ms", "p95_ms", "latency_ratio", "resident_MB", "rss_growth_MB",
                              "memory_ratio", "nn_in_top10", "build_s", "meets_20ms", "meets_1_5GB"]), flush=True)
            rows += new
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    srch = [r for r in rows if r["part"] == "search"]
    if srch:
        print(table(srch, ["N", "method", "median_ms", "p95_ms", "speedup_vs_flat", "recall_at_10", "nn_in_top10",
                           "candidates", "true_tile_top1", "build_s", "index_MB", "batch100_ms_per_query"]))
    mem = [r for r in rows if r["part"] == "memory"]
    if mem:
        print(table(mem, list(mem[0])))
    print(f"peak RSS {peak_rss_mb():.0f} MB")
    print(f"wrote {write('index', rows, args.out, peak_rss_MB=round(peak_rss_mb(), 1))}")


if __name__ == "__main__":
    main()
