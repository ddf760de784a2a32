"""``geoloc sim world``: generate a procedural town and write its georeferenced layers."""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import List, Optional

from ..core.outputs import check_output_dir
from .common import command_line, parse_with, positive, seed_type

log = logging.getLogger(__name__)


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "world", help="generate a synthetic town (GeoTIFF orthophoto + layers + GeoJSON)",
        description="Generate a procedural town at a real location (UTM CRS) and write a tiled, georeferenced "
                    "RGB orthophoto GeoTIFF, the height/semantic/albedo layers the camera renderer needs, and the "
                    "road network and buildings as GeoJSON (WGS84). The same arguments give the same bytes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="output directory (must not exist or be empty)")
    p.add_argument("--seed", type=seed_type, default=7, help="random seed of the town")
    p.add_argument("--size-m", type=positive(float, name="--size-m"), default=2000.0,
                   help="side of the square world in metres (200..20000)")
    p.add_argument("--gsd-m", type=positive(float, name="--gsd-m"), default=0.5,
                   help="ground sample distance of the rasters, metres per pixel (0.1..5)")
    p.add_argument("--origin-lat", type=float, default=44.4759, help="latitude of the world centre (deg, WGS84)")
    p.add_argument("--origin-lon", type=float, default=-73.2121, help="longitude of the world centre (deg, WGS84)")
    add_survey_arguments(p)
    p.add_argument("--force", action="store_true", help="replace an existing, non-empty output directory")
    p.set_defaults(func=run_sim_world)
    return p


def add_survey_arguments(p: argparse.ArgumentParser) -> None:
    # no sim import here: building the parser must not need numpy (PARTs are checked by SurveyGap.without)
    g = p.add_argument_group("aerial survey gap (on by default; recorded in world.json 'survey', docs/data.md)")
    g.add_argument("--no-survey-gap", action="store_true",
                   help="orthophoto = the world at drive time under the legacy survey sun (the bytes of earlier "
                        "versions for the same seed)")
    p.add_argument("--no-terrain", action="store_true",
                   help="flat ground (no elevation raster): the car drives level, as in earlier versions")
    g.add_argument("--survey-without", nargs="+", default=[], metavar="PART",
                   help="switch single parts of the survey gap off: sun, season, cars, photometric, blur, jpeg, "
                        "misregistration")
    g.add_argument("--survey-shift-m", nargs=2, type=float, default=None, metavar=("MIN", "MAX"),
                   help="range of the orthophoto's global misregistration shift, drawn per world (m; default "
                        "0.3 1.5, DOP-like; e.g. 2 5 for NAIP-like imagery)")


def survey_from_args(args: argparse.Namespace):
    from dataclasses import replace

    from ..sim.survey import SurveyGap

    if args.no_survey_gap:
        return SurveyGap.off()
    gap = SurveyGap()
    shift = getattr(args, "survey_shift_m", None)
    if shift is not None:
        gap = replace(gap, shift_m=(float(shift[0]), float(shift[1])))  # range checked by SurveyGap
    return gap.without(args.survey_without)


def run_sim_world(args: argparse.Namespace) -> Path:
    from ..sim.generate import generate_world, validate_world_args
    from ..sim.terrain import TerrainParams

    validate_world_args(args.seed, args.size_m, args.gsd_m, args.origin_lat, args.origin_lon)
    survey = survey_from_args(args)
    check_output_dir(args.out, args.force)
    t0 = time.perf_counter()
    world = generate_world(seed=args.seed, size_m=args.size_m, gsd_m=args.gsd_m, origin_lat=args.origin_lat,
                           origin_lon=args.origin_lon, progress=True, survey=survey,
                           terrain=None if args.no_terrain else TerrainParams())
    t_gen = time.perf_counter() - t0
    world.save(args.out, force=args.force, extra_manifest={"command": command_line()})
    dt = time.perf_counter() - t0
    n = world.meta.shape[0]
    print(f"world seed={args.seed}: {args.size_m:.0f} m at {args.gsd_m} m/px ({n}x{n} px, {world.frame.crs}), "
          f"{len(world.buildings)} buildings, {world.roads.num_edges} road edges; survey gap: "
          f"{', '.join((world.survey or {}).get('parts', [])) or 'off'}; generated in {t_gen:.1f} s, "
          f"written to {args.out} in {dt:.1f} s total")
    return Path(args.out)


def main(argv: Optional[List[str]] = None) -> Path:
    return run_sim_world(parse_with(register, ["world"] + list(argv or [])))
