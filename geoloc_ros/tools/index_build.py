"""``geoloc index build``: cut an orthophoto into heading-up tiles, encode them, write a tile index."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import List, Optional

from .common import command_line, parse_with, positive

log = logging.getLogger(__name__)


def _latlon(text: str):
    parts = [p for p in text.replace(" ", "").split(",") if p]
    try:
        lat, lon = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LAT,LON, got {text!r}")
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise argparse.ArgumentTypeError(f"LAT,LON out of range: {text!r}")
    return lat, lon


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "build", help="build a searchable aerial tile index from an orthophoto or XYZ tiles",
        description="Cut heading-up tiles (TILE_M metres, the model's input size) on a SPACING grid in K heading "
                    "bins (bin b faces b*360/K deg true) from a georeferenced GeoTIFF (any CRS, read through "
                    "windows) or an XYZ tile folder (z/x/y.png, Web Mercator), optionally limited to a bbox, a "
                    "GeoJSON polygon or a corridor around GeoJSON road lines; encode them with the model's aerial "
                    "branch and write OUT/manifest.json, tiles.npz, shards/*.faiss (exact, per SHARD_M cell) and "
                    "global.faiss (approximate). Interrupted builds resume when the same command is rerun. "
                    "See docs/index.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--imagery", type=Path, required=True, help="orthophoto (GeoTIFF, any CRS) or XYZ tile folder")
    p.add_argument("--zoom", type=int, default=None, help="XYZ zoom level to use (None: the highest present)")
    p.add_argument("--checkpoint", required=True,
                   help="model: preset name (e.g. seqgeo_lite), checkpoint .pt, or export folder")
    p.add_argument("--backend", default="auto", choices=("auto", "tensorrt", "onnxruntime", "torch"),
                   help="inference backend for the aerial encoder")
    p.add_argument("--out", type=Path, required=True, help="index directory (must not exist or be empty, or hold "
                                                           "an interrupted build of the same command)")
    p.add_argument("--spacing", type=positive(float, 0, 10000, "--spacing"), default=5.0,
                   help="distance between tile centres (m)")
    p.add_argument("--tile-m", type=positive(float, 0, 10000, "--tile-m"), default=None,
                   help="tile side (m) (None: the model's tile_m)")
    p.add_argument("--headings-bins", type=positive(int, 0, 360, "--headings-bins"), default=8,
                   help="K heading bins (bin b centre = b*360/K deg)")
    p.add_argument("--headings", choices=("all", "road"), default="all",
                   help="all K bins at every position, or (with --corridor) only the bins near the road direction")
    area = p.add_mutually_exclusive_group()
    area.add_argument("--bbox", default=None, help="LAT_MIN,LON_MIN,LAT_MAX,LON_MAX (WGS84); write --bbox=-33.9,... "
                                                  "when it starts with a minus sign")
    area.add_argument("--polygon", type=Path, default=None, help="GeoJSON with (Multi)Polygons (WGS84)")
    area.add_argument("--corridor", type=Path, default=None, help="GeoJSON with road (Multi)LineStrings (WGS84)")
    p.add_argument("--corridor-width", type=positive(float, 0, 10000, "--corridor-width"), default=15.0,
                   help="corridor half-width (m) either side of the road lines")
    p.add_argument("--datum", type=_latlon, default=None,
                   help="LAT,LON of the index's local frame (the node's map frame) (None: the area centre); "
                        "write --datum=-33.9,151.2 when it starts with a minus sign")
    p.add_argument("--shard-m", type=positive(float, 0, 1e6, "--shard-m"), default=1000.0,
                   help="shard cell size (m)")
    p.add_argument("--batch", type=positive(int, 0, 4096, "--batch"), default=32, help="tiles per encoder batch")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local process, or Ray (one task per shard)")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local instance)")
    p.add_argument("--global-index", choices=("auto", "hnsw", "ivfpq", "flat"), default="auto",
                   help="global approximate index (auto: HNSW up to 2M tiles, else IVF-PQ)")
    p.add_argument("--max-nodata", type=float, default=0.01, help="skip tiles with more nodata than this fraction")
    p.add_argument("--force", action="store_true", help="replace an existing index in --out")
    p.set_defaults(func=run_index_build)
    return p


def run_index_build(args: argparse.Namespace) -> Path:
    from ..core.errors import InvalidArgument
    from ..index.build import build_index, check_output
    from ..index.imagery import open_imagery
    from ..index.tiling import Area, corridor_area, parse_bbox, polygon_area

    if args.headings == "road" and args.corridor is None:
        raise InvalidArgument("--headings road needs --corridor ROADS.geojson")
    if args.bbox is not None:
        area = Area(kind="bbox", bbox=parse_bbox(args.bbox))
    elif args.polygon is not None:
        area = polygon_area(args.polygon)
    elif args.corridor is not None:
        area = corridor_area(args.corridor, args.corridor_width)
    else:
        area = Area()
    if not (0.0 <= args.max_nodata < 1.0):
        raise InvalidArgument(f"--max-nodata must be in [0, 1), got {args.max_nodata}")
    check_output(args.out, args.force)
    imagery = open_imagery(args.imagery, zoom=args.zoom)  # bad imagery fails before the model loads
    try:
        res = build_index(imagery, args.checkpoint, args.out, backend=args.backend, tile_m=args.tile_m,
                          spacing_m=args.spacing, heading_bins=args.headings_bins, area=area, headings=args.headings,
                          shard_m=args.shard_m, batch_size=args.batch, executor=args.executor,
                          ray_address=args.ray_address, global_index=args.global_index, datum=args.datum,
                          max_nodata=args.max_nodata, force=args.force,
                          command=getattr(args, "command_line", None) or command_line())
    finally:
        imagery.close()
    return Path(res.out)


def main(argv: Optional[List[str]] = None) -> Path:
    import shlex

    argv = list(argv or [])
    args = parse_with(register, ["build"] + argv)
    args.command_line = " ".join(shlex.quote(a) for a in ["geoloc", "index", "build"] + argv)
    return run_index_build(args)
