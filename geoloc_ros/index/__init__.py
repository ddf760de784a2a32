"""Aerial tile index: heading-up tiles cut from an orthophoto, encoded, searchable near a prior.

    from geoloc_ros.index import TileIndex, build_index
    idx = TileIndex.open("index/", expect_model=encoder.identity)
    res = idx.search(desc, k=10, near=(lat, lon), radius_m=50, heading_deg=90)

Modules: ``imagery`` (GeoTIFF in any CRS, XYZ tile folders), ``tiling`` (tile grid, area limits,
heading bins, shards), ``build`` (batched, resumable, sharded encoding; local or Ray executor),
``store`` (``TileIndex``: lazy shards with an LRU memory budget, exact search near a prior,
approximate global search). Importing this package is cheap: faiss, rasterio and torch are
imported inside the functions that use them.
"""
from __future__ import annotations

from typing import Any

__all__ = ["TileIndex", "SearchResult", "build_index", "INDEX_FORMAT", "INDEX_FORMAT_VERSION"]

INDEX_FORMAT = "geoloc-tile-index"
INDEX_FORMAT_VERSION = 1

_LAZY = {"TileIndex": ".store", "SearchResult": ".store", "build_index": ".build"}


def __getattr__(name: str) -> Any:  # PEP 562: import store/build only when first used
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
