"""Export cross-view training data from synthetic worlds (layout: ``geoloc_ros.core.dataset``).

For each world, random drives (``sim.drive`` routes, one ``Appearance`` per drive) are
sampled every ``spacing_m`` metres of travel into ground keyframes. Every run of ``seq_len``
consecutive keyframes is a sequence; its aerial tile is a heading-up crop of the
orthophoto centred on the newest keyframe, rotated to the true heading plus a jitter
within one heading bin (+-180/K deg).

Splits:

* by AREA within the training worlds: the world is cut into ``cell_m`` squares, each cell
  is train, val or test (seeded shuffle with ``fractions``); a sequence is kept only if
  all its keyframes and its whole aerial tile (a circle of the tile's half-diagonal) lie
  in cells of one split, so no ground or aerial pixel is shared across splits;
* by WORLD: every sequence from a held-out world (another seed) is ``test_world``.

Drive-time conditions (``conditions``: [(name, ``sim.conditions.Conditions``)], cycled over all
drives in order, so a run with at least as many drives as names covers every one): the renderer gets
the drive's conditions and the time of each keyframe along an ego trajectory driven over the route,
the body carries the drawn load pitch, and ``dataset.json`` -> ``drives`` plus ``drives.csv`` record
each drive's conditions (the sensors' conditions are recorded but have nothing to act on here: no
GNSS, odometry or camera_info is exported). Without ``conditions`` the export is as before.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.camera import PinholeCamera
from ..core.dataset import (
    DATASET_FORMAT,
    DATASET_FORMAT_VERSION,
    KEYFRAME_COLUMNS,
    SPLITS,
    SequenceRecord,
    write_rows,
    write_split,
)
from ..core.errors import InvalidArgument
from ..core.geo import wrap_angle, yaw_to_heading_deg
from ..core.outputs import prepare_output_dir
from ..core.tiles import sample_bilinear, tile_grid
from .world import World

log = logging.getLogger(__name__)
AREA_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetConfig:
    seq_len: int = 7
    spacing_m: float = 5.0
    drives_per_world: int = 8
    drive_length_m: float = 1500.0
    tile_m: float = 96.0
    tile_px: int = 192
    heading_bins: int = 8
    cell_m: float = 500.0
    fractions: Tuple[float, float, float] = (0.7, 0.15, 0.15)
    width: int = 256
    height: int = 128
    hfov_deg: float = 90.0
    seed: int = 0
    camera_effects: bool = True  # SensorModel (auto exposure, vignetting, shot/read noise); False: legacy noise

    def __post_init__(self):
        checks = [
            (1 <= self.seq_len <= 64, f"seq_len {self.seq_len} is outside 1..64"),
            (0.5 <= self.spacing_m <= 100, f"spacing_m {self.spacing_m} is outside 0.5..100"),
            (1 <= self.drives_per_world <= 10000, f"drives_per_world {self.drives_per_world} is outside 1..10000"),
            (self.drive_length_m >= self.seq_len * self.spacing_m,
             f"drive_length_m {self.drive_length_m} is shorter than one sequence ({self.seq_len} x {self.spacing_m} m)"),
            (10 <= self.tile_m <= 1000, f"tile_m {self.tile_m} is outside 10..1000"),
            (16 <= self.tile_px <= 2048, f"tile_px {self.tile_px} is outside 16..2048"),
            (1 <= self.heading_bins <= 360, f"heading_bins {self.heading_bins} is outside 1..360"),
            (self.cell_m >= 2 * self.tile_m, f"cell_m {self.cell_m} must be at least twice tile_m ({self.tile_m})"),
            (len(self.fractions) == 3 and min(self.fractions) >= 0 and abs(sum(self.fractions) - 1) < 1e-6,
             f"fractions {self.fractions} must be three non-negative numbers summing to 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise InvalidArgument(msg)
        PinholeCamera(self.width, self.height, self.hfov_deg)  # validates the camera

    @property
    def camera(self) -> PinholeCamera:
        return PinholeCamera(self.width, self.height, self.hfov_deg)


def area_split_cells(world: World, cell_m: float, fractions: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """[n, n] array of split indices (into AREA_SPLITS) for the world's ``cell_m`` cells."""
    n = max(1, int(math.ceil(world.meta.size_m / cell_m)))
    cells = n * n
    counts = np.floor(np.asarray(fractions) * cells).astype(int)
    # every split with a non-zero fraction gets at least one cell when there are enough cells
    for i in range(3):
        if fractions[i] > 0 and counts[i] == 0 and cells >= 3:
            counts[i] = 1
    counts[0] = cells - counts[1:].sum()
    labels = np.repeat(np.arange(3), counts)
    rng.shuffle(labels)
    return labels.reshape(n, n)


def cell_of(world: World, x, y, cell_m: float, n: int) -> Tuple[np.ndarray, np.ndarray]:
    col = np.clip(((np.asarray(x) - world.meta.x_min) // cell_m).astype(int), 0, n - 1)
    row = np.clip(((world.meta.y_max - np.asarray(y)) // cell_m).astype(int), 0, n - 1)
    return row, col


def aerial_tile(world: World, x: float, y: float, yaw: float, tile_m: float, tile_px: int) -> np.ndarray:
    """Heading-up crop of the orthophoto: ``yaw`` points to the top of the tile."""
    gx, gy = tile_grid(x, y, yaw, tile_m, tile_px)
    rr, cc = world.xy_to_rc(gx, gy)
    return np.clip(sample_bilinear(world.ortho, rr, cc) + 0.5, 0, 255).astype(np.uint8)


DRIVE_COLUMNS = ["drive", "world", "conditions", "load_pitch_deg"]


def _ego_trajectory(world: World, route, rng: np.random.Generator):
    """The car along the whole of ``route`` (``drive.speed_profile``, 10 Hz): the ego a renderer with
    traffic needs, and the time at each keyframe."""
    from .drive import Trajectory, speed_profile

    kinds = [world.roads.edge_kind[e] for e, _ in route.steps]
    v_s = speed_profile(route, rng, kinds=kinds)
    t_of_s = np.concatenate([[0.0], np.cumsum(np.diff(route.s) / (0.5 * (v_s[1:] + v_s[:-1])))])
    t = np.arange(0.0, t_of_s[-1], 0.1)
    s = np.interp(t, t_of_s, route.s)
    x, y, yaw = route.at(s)
    yaw_rate = np.gradient(yaw, t) if len(t) > 1 else np.zeros_like(t)
    return Trajectory(t=t, x=x, y=y, yaw=yaw, speed=np.interp(s, route.s, v_s), yaw_rate=yaw_rate, s=s), t_of_s


def export_dataset(out: Path, worlds: List[Tuple[str, World]], heldout: List[Tuple[str, World]],
                   cfg: DatasetConfig, *, force: bool = False, progress: bool = True,
                   extra_manifest: Dict | None = None, conditions: Optional[Sequence[Tuple[str, Any]]] = None) -> Dict:
    """Write a dataset under ``out``; returns the manifest (also written to ``out/dataset.json``).

    ``conditions``: [(name, ``Conditions``)] cycled over the drives (see the module docstring)."""
    from PIL import Image
    from tqdm import tqdm

    from .drive import plan_route, rotation_rpy, terrain_attitude
    from .render import Appearance, GroundRenderer, SensorModel
    from .sensors import draw_load_pitch
    from .terrain import Terrain

    if not worlds and not heldout:
        raise InvalidArgument("no worlds given")
    names = [n for n, _ in worlds + heldout]
    if len(set(names)) != len(names):
        raise InvalidArgument(f"world names must be unique, got {names}")
    out = Path(out)
    prepare_output_dir(out, force=force)
    cam = cfg.camera
    half_diag = cfg.tile_m / math.sqrt(2.0)
    jitter_max = 180.0 / cfg.heading_bins
    ring = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    records: Dict[str, List[SequenceRecord]] = {s: [] for s in SPLITS}
    keyframes: List[Dict] = []
    dropped = {"border": 0, "outside": 0}
    world_info = []
    drives: Dict[str, Dict[str, Any]] = {}
    n_drive = 0
    total = (len(worlds) + len(heldout)) * cfg.drives_per_world
    bar = tqdm(total=total, desc="drives", unit="drive", disable=not progress)
    for wi, (wname, world) in enumerate(worlds + heldout):
        held = wi >= len(worlds)
        rng = np.random.default_rng([cfg.seed, world.meta.seed, wi])
        n_cells = max(1, int(math.ceil(world.meta.size_m / cfg.cell_m)))
        cells = None if held else area_split_cells(world, cfg.cell_m, cfg.fractions, rng)
        world_info.append({"name": wname, "seed": world.meta.seed, "size_m": world.meta.size_m,
                           "gsd_m": world.meta.gsd_m, "heldout": held, "frame": world.frame.to_dict(),
                           "cells": None if held else cells.tolist(),
                           "survey_parts": (world.survey or {}).get("parts", []), "terrain": world.terrain is not None})
        for d in range(cfg.drives_per_world):
            drive = f"{wname}_d{d:03d}"
            route = plan_route(world, rng, cfg.drive_length_m)
            s = np.arange(0.0, route.length, cfg.spacing_m)
            px, py, pyaw = route.at(s)
            pyaw = wrap_angle(pyaw)
            appearance = Appearance.sample(rng)
            cname, cond = conditions[n_drive % len(conditions)] if conditions else (None, None)
            n_drive += 1
            load_deg, times = 0.0, None
            sensor = SensorModel() if cfg.camera_effects else None
            if cond is None or cond.is_default:
                renderer = GroundRenderer(world, cam, appearance, sensor=sensor)
            else:  # its own generator: the main one (routes, appearance, jitter) draws as without conditions
                crng = np.random.default_rng([cfg.seed, world.meta.seed, wi, d, 21])
                load_deg = draw_load_pitch(crng, cond.load_pitch_max_deg)
                ego, t_of_s = _ego_trajectory(world, route, crng)
                times = np.interp(s, route.s, t_of_s)
                renderer = GroundRenderer(world, cam, appearance, sensor=sensor, conditions=cond, ego=ego)
            if cname is not None:
                drives[drive] = {"world": wname, "conditions": cname, "load_pitch_deg": round(load_deg, 4),
                                 "config": cond.to_dict(),
                                 "renderer": renderer.realisation() if times is not None else None}
            # on terrain the camera stands on the slope (level car on flat ground, as before)
            relief = Terrain.from_dict(world.terrain) if world.terrain else None
            pz, ppitch, proll = terrain_attitude(relief, px, py, pyaw)
            ppitch = ppitch - math.radians(load_deg)  # a loaded car sits nose up (REP-103 pitch: nose down)
            lat, lon = world.frame.to_latlon(px, py)
            conv = world.frame.grid_convergence_deg()
            heading = (yaw_to_heading_deg(pyaw) + conv) % 360.0
            (out / "ground" / drive).mkdir(parents=True, exist_ok=True)
            for k in range(len(s)):
                rel = f"ground/{drive}/{k:05d}.png"
                kw = {} if times is None else {"t": float(times[k])}
                if relief is None and load_deg == 0.0:
                    frame = renderer.render(px[k], py[k], pyaw[k], **kw)
                else:  # the camera sits mount_height_m up the tilted body's z axis
                    up = rotation_rpy(proll[k], ppitch[k], pyaw[k])[:, 2] * cam.mount_height_m
                    frame = renderer.render(px[k] + up[0], py[k] + up[1], pyaw[k], pitch=float(ppitch[k]),
                                            roll=float(proll[k]), z=float(pz[k] + up[2]), **kw)
                Image.fromarray(frame).save(out / rel)
                keyframes.append({"drive": drive, "k": k, "x": round(px[k], 3),
                                  "y": round(py[k], 3), "yaw": round(pyaw[k], 6), "lat": f"{lat[k]:.8f}",
                                  "lon": f"{lon[k]:.8f}", "heading_deg": round(heading[k], 4),
                                  "distance_m": round(s[k], 3), "image": rel})
            for k in range(cfg.seq_len - 1, len(s)):
                sl = slice(k - cfg.seq_len + 1, k + 1)
                x, y, yaw = float(px[k]), float(py[k]), float(pyaw[k])
                if not bool(world.contains(x, y, margin_m=half_diag)):
                    dropped["outside"] += 1
                    continue
                if held:
                    split = "test_world"
                else:
                    qx = np.concatenate([px[sl], x + half_diag * np.cos(ring)])
                    qy = np.concatenate([py[sl], y + half_diag * np.sin(ring)])
                    labels = np.unique(cells[cell_of(world, qx, qy, cfg.cell_m, n_cells)])
                    if len(labels) != 1:
                        dropped["border"] += 1
                        continue
                    split = AREA_SPLITS[int(labels[0])]
                jitter = float(rng.uniform(-jitter_max, jitter_max))
                seq = f"{drive}_{k:05d}"
                rel = f"aerial/{split}/{seq}.jpg"
                (out / "aerial" / split).mkdir(parents=True, exist_ok=True)
                tile = aerial_tile(world, x, y, yaw - math.radians(jitter), cfg.tile_m, cfg.tile_px)
                Image.fromarray(tile).save(out / rel, quality=92)
                records[split].append(SequenceRecord(
                    seq=seq, split=split, world=wname, drive=drive,
                    frames=";".join(f"ground/{drive}/{j:05d}.png" for j in range(sl.start, sl.stop)), aerial=rel,
                    x=round(x, 3), y=round(y, 3), yaw=round(yaw, 6), lat=round(float(lat[k]), 8),
                    lon=round(float(lon[k]), 8), heading_deg=round(float(heading[k]), 4),
                    tile_heading_deg=round(float((heading[k] + jitter) % 360.0), 4), jitter_deg=round(jitter, 4)))
            bar.update(1)
    bar.close()
    write_rows(out / "keyframes.csv", KEYFRAME_COLUMNS, keyframes)
    if drives:
        write_rows(out / "drives.csv", DRIVE_COLUMNS, [{"drive": k, **{c: v[c] for c in DRIVE_COLUMNS[1:]}}
                                                       for k, v in drives.items()])
    counts = {}
    for split in SPLITS:
        if records[split]:
            counts[split] = write_split(out, split, records[split])
    manifest = {
        "format": DATASET_FORMAT, "format_version": DATASET_FORMAT_VERSION, "source": "geoloc_ros.sim",
        "seq_len": cfg.seq_len, "spacing_m": cfg.spacing_m,
        "ground": {"width": cam.width, "height": cam.height, "hfov_deg": cam.hfov_deg,
                   "mount_height_m": cam.mount_height_m, "format": "png"},
        "aerial": {"tile_m": cfg.tile_m, "tile_px": cfg.tile_px, "heading_bins": cfg.heading_bins,
                   "jitter_max_deg": jitter_max, "heading_up": True, "format": "jpg"},
        "split_by": {"area": {"cell_m": cfg.cell_m, "fractions": list(cfg.fractions)}, "world": "test_world"},
        "splits": counts, "keyframes": len(keyframes), "dropped": dropped,
        "config": asdict(cfg), "worlds": world_info,
        "gap": {"camera_effects": cfg.camera_effects,
                "survey": {w["name"]: w["survey_parts"] for w in world_info},
                "terrain": {w["name"]: w["terrain"] for w in world_info}},
        **({"conditions": {"cycle": [n for n, _ in conditions], "drives": drives}} if conditions else {}),
        **(extra_manifest or {}),
    }
    (out / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
