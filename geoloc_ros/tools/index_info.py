"""``geoloc index info``: what a tile index holds (model, area, counts, shards, sizes), optionally verified."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List, Optional

from .common import parse_with


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "info", help="describe a tile index (model, area, counts, shards, sizes)",
        description="Print a summary of a tile index built by `geoloc index build`; with --verify, check every "
                    "file's size and sha256 against the manifest and load every shard; with --json print the "
                    "manifest.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("index", type=Path, help="index directory")
    p.add_argument("--verify", action="store_true", help="check sha256 of every file and load every shard")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=run_index_info)
    return p


def run_index_info(args: argparse.Namespace) -> Path:
    from ..index.store import TileIndex

    idx = TileIndex.open(args.index, memory_budget_mb=64)
    m = idx.manifest
    if args.json:
        print(json.dumps(m, indent=2))
    else:
        c = m["counts"]
        size = sum(f.stat().st_size for f in Path(args.index).rglob("*") if f.is_file())
        lat0, lon0, lat1, lon1 = idx.bounds_latlon
        print(f"tile index {args.index}\n"
              f"  model      {m['model']['preset']} ({m['model']['fingerprint'][:12]}), dim {m['dim']}\n"
              f"  tiles      {c['tiles']} ({c['positions']} positions x K={m['heading_bins']} bins, "
              f"{m.get('headings', 'all')}); planned {c['planned']}, skipped {c['skipped_outside']} outside + "
              f"{c['skipped_nodata']} nodata\n"
              f"  geometry   tile {m['tile_m']:g} m at {m['tile_px']} px ({m['tile_gsd_m']:.3f} m/px), spacing "
              f"{m['spacing_m']:g} m; imagery {m['imagery']['kind']} {m['crs']} {m['gsd_m']:.3f} m/px\n"
              f"  area       {m['area']['kind']}; lat {lat0:.6f}..{lat1:.6f}, lon {lon0:.6f}..{lon1:.6f}\n"
              f"  frame      EPSG:{idx.frame.epsg} origin ({idx.frame.origin_e:.0f}, {idx.frame.origin_n:.0f}) "
              f"(datum {m['datum']['lat']:.6f}, {m['datum']['lon']:.6f})\n"
              f"  shards     {c['shards']} x {m['shard_m']:g} m; global index {m['global_index']['type']} "
              f"{m['global_index'].get('params', {})}\n"
              f"  disk       {size / 1e6:.1f} MB; built by: {m['build'].get('command', '')}")
    if args.verify:
        for i in range(len(idx._shards_meta)):
            idx._shard(i)
            idx._evict(keep=[])
        idx._load_global()
        print(f"  verified   {len(idx._shards_meta)} shards, metadata and global index match the manifest")
    return Path(args.index)


def main(argv: Optional[List[str]] = None) -> Path:
    return run_index_info(parse_with(register, ["info"] + list(argv or [])))
