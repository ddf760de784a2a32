"""Retrieval metrics: ground sequence -> aerial tile, R@1/5/10/1% and localisation hits.

The gallery is every aerial tile of the evaluated split (one per sequence, at the sequence's
newest keyframe); the query's own tile is its true match. Search is exact inner product on
L2-normalised descriptors with FAISS, in query batches (memory stays O(batch x gallery) for
the scores that FAISS keeps internally, never a full query x gallery matrix in Python).
Because neighbouring keyframes (5 m apart) have near-identical tiles, ``hit@25m`` also counts a
top-1 tile within 25 m of the truth: what the localizer needs.
"""
from __future__ import annotations

import math
from typing import Dict, Sequence

import numpy as np


def recall_at_k(query: np.ndarray, gallery: np.ndarray, truth: np.ndarray, ks: Sequence[int] = (1, 5, 10),
                gallery_xy: np.ndarray | None = None, query_xy: np.ndarray | None = None,
                radius_m: float = 25.0, batch: int = 1024) -> Dict[str, float]:
    """R@K (percent) of ``truth[i]`` among the top K gallery items for query i, plus R@1%.

    ``query`` [Q, D] and ``gallery`` [G, D] must be L2-normalised float32.
    """
    import faiss

    query = np.ascontiguousarray(query, np.float32)
    gallery = np.ascontiguousarray(gallery, np.float32)
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(f"descriptor shapes {query.shape} and {gallery.shape} do not match")
    if len(truth) != len(query):
        raise ValueError("one true gallery index per query is needed")
    G = len(gallery)
    one_pct = max(1, int(math.ceil(G * 0.01)))
    kmax = min(G, max(max(ks), one_pct))
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(gallery)
    ranks = np.empty(len(query), np.int64)
    top1 = np.empty(len(query), np.int64)
    for i in range(0, len(query), batch):
        _, idx = index.search(query[i:i + batch], kmax)
        hit = idx == truth[i:i + batch, None]
        ranks[i:i + batch] = np.where(hit.any(1), hit.argmax(1), kmax)
        top1[i:i + batch] = idx[:, 0]
    out = {f"R@{k}": float(100.0 * np.mean(ranks < k)) for k in ks if k <= G}
    out["R@1%"] = float(100.0 * np.mean(ranks < one_pct))
    if gallery_xy is not None and query_xy is not None:
        err = np.hypot(*(gallery_xy[top1] - query_xy).T)
        out[f"hit@{radius_m:g}m"] = float(100.0 * np.mean(err <= radius_m))
        out["median_err_m"] = float(np.median(err))
    out["queries"] = int(len(query))
    out["gallery"] = int(G)
    return out
