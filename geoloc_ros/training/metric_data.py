"""Training samples for the learned metric matcher (``models.bevmatch``), synthesised from sim worlds.

For each world and each of ``drives`` simulated drives (``sim.drive.simulate_drive``, truth only,
no bag), keyframes every ``keyframe_m`` metres are rendered by the ground renderer and pushed
through ``metric.matcher.MetricMatcher`` (its projection and its mosaic code, the same the node
runs) with odometry poses = truth + a small random walk. Each keyframe gives one sample per
sequence length in ``seq_lens`` (the fused BEV mosaic of the last T keyframes). A sample stores
the mosaic (uint8 RGB, valid mask, range map), its grid and the true pose; the aerial window is
cut from the world's orthophoto at training time around a randomly perturbed prior (so every
epoch sees new offsets), exactly as ``MetricMatcher.match`` cuts it.

Layout::

    OUT/<world name>/d<drive seed>/k<index>_t<T>.npz
    OUT/<world name>/d<drive seed>/done.json     (written last: the drive is complete)
    OUT/index.json                               (manifest: format, worlds, their paths, sample counts)

Rerunning skips complete drives (resumable); a drive interrupted half-way is redone.

Drive-time conditions (``SynthConfig.presets``, ``geoloc train-metric --presets``): drive i of each
world is driven under ``sim.conditions.PRESETS[presets[i % len(presets)]]`` and rendered as
``geoloc sim drive`` renders it: the sensor model (auto exposure, vignetting, noise), traffic at the
keyframe's time, light and weather, changed roads, the body's attitude (suspension, terrain, load
pitch), and the TRUE camera; the matcher that builds the mosaic is given the PUBLISHED camera (true +
the preset's calibration error: what /tf_static and camera_info would tell the node). The preset, the
conditions and what they drew go into the drive's done.json; OUT/index.json and OUT/synth.json carry
the presets, and a folder made with other presets is refused. Without presets (the default) the drives
are rendered exactly as before: daylit, empty, level, exact calibration, legacy sensor noise.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.errors import InvalidArgument
from ..core.manifest import read_manifest, write_json_atomic

SAMPLES_FORMAT = "geoloc-bevmatch-samples"  # OUT/index.json
SAMPLES_FORMAT_VERSION = 1  # index.json "config" may carry "presets" (absent on older folders: none)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthConfig:
    drives: int = 4  # drives per world
    drive_seed0: int = 1000  # drive seeds are drive_seed0 + i (the bench uses small seeds: no overlap)
    duration_s: float = 90.0
    keyframe_m: float = 5.0
    seq_lens: Tuple[int, ...] = (1, 4)
    odom_step_sigma_m: float = 0.05  # odometry random walk per keyframe (m)
    odom_step_sigma_deg: float = 0.1  # ... and heading (deg)
    width: int = 256
    height: int = 128
    hfov_deg: float = 90.0
    # drive i of each world is driven under sim.conditions.PRESETS[presets[i % len(presets)]]; () = today's
    # default drives (no conditions, legacy rendering)
    presets: Tuple[str, ...] = ()

    def __post_init__(self):
        from ..sim.conditions import preset

        names = (self.presets,) if isinstance(self.presets, str) else tuple(self.presets)
        for n in names:
            preset(n)  # an unknown name: InvalidArgument listing the valid ones
        object.__setattr__(self, "presets", names)

    def preset_of(self, i: int) -> Optional[str]:
        """The preset of drive ``i`` of a world (None: the default drive)."""
        return self.presets[i % len(self.presets)] if self.presets else None


def camera_model_for(camera, camera_x_m: float = 0.0):
    """The metric CameraModel of a sim PinholeCamera mounted at ``camera_x_m`` ahead of base_link
    (ROS principal point convention, cx = (W - 1) / 2)."""
    from ..metric.bev import CameraModel

    K = [camera.fx, 0.0, (camera.width - 1) / 2.0, 0.0, camera.fy, (camera.height - 1) / 2.0, 0.0, 0.0, 1.0]
    R, t = CameraModel.mount_from_rpy(camera_x_m, 0.0, camera.mount_height_m)
    return CameraModel.from_camera_info(camera.width, camera.height, K).with_mount(R, t)


def camera_model_of_mount(camera, mount):
    """The metric CameraModel a node is given for a sim ``camera`` mounted as ``mount``
    (``sim.sensors.CameraMount``: the published one is what /tf_static and camera_info carry, with
    camera_info's K = the mount's fx, fy and the ROS principal point, ``sim.bag.write_drive_bag``).
    For the true mount of a level camera ``camera_x_m`` ahead this is ``camera_model_for``."""
    from ..metric.bev import CameraModel

    K = [mount.fx, 0.0, (camera.width - 1) / 2.0, 0.0, mount.fy, (camera.height - 1) / 2.0, 0.0, 0.0, 1.0]
    R, t = CameraModel.mount_from_rpy(mount.x, mount.y, mount.z, *mount.rpy_rad)
    return CameraModel.from_camera_info(camera.width, camera.height, K).with_mount(R, t)


def keyframe_indices(x: np.ndarray, y: np.ndarray, spacing_m: float) -> List[int]:
    """Indices of the poses every ``spacing_m`` metres of driven distance."""
    dist = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    out, nxt = [], 0.0
    for k in range(len(x)):
        if dist[k] >= nxt:
            out.append(k)
            nxt = dist[k] + spacing_m
    return out


def _write_npz(path: Path, **arrays) -> None:
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _default_drive(world, camera, cm, seed: int, cfg: SynthConfig):
    """Today's training drive: no conditions, legacy renderer, level camera at the truth pose."""
    from ..sim.drive import DriveConfig, simulate_drive, stream_rng
    from ..sim.render import Appearance, GroundRenderer

    dcfg = DriveConfig(duration_s=cfg.duration_s, seed=seed)
    sim = simulate_drive(world, dcfg)
    app = Appearance.sample(stream_rng(seed, "appearance"))
    renderer = GroundRenderer(world, camera, app)

    def frame(k: int, x: float, y: float, yaw: float) -> np.ndarray:
        return renderer.render(x, y, yaw)

    return sim, frame, cm, {"appearance": app.to_dict()}


def _preset_drive(world, camera, seed: int, name: str, cfg: SynthConfig):
    """A drive under the preset ``name``, rendered as ``geoloc sim drive`` renders it (``sim_drive``,
    ``sim.bag.write_drive_bag``): the sensor model, the conditions at the frame's time, the true camera
    pose with the body's attitude; the matcher gets the published camera model."""
    from ..sim.bag import _jsonable, camera_poses, drive_realisation, published_camera
    from ..sim.conditions import preset
    from ..sim.drive import DriveConfig, simulate_drive, stream_rng
    from ..sim.render import Appearance, GroundRenderer, SensorModel

    cond = preset(name)
    dcfg = DriveConfig(duration_s=cfg.duration_s, seed=seed)
    sim = simulate_drive(world, dcfg, cond)
    app = Appearance.sample(stream_rng(seed, "appearance"))
    sensor = SensorModel()
    renderer = GroundRenderer(world, camera, app, sensor=sensor, conditions=cond, ego=sim.truth)
    cx, cy, cyaw, cz, cpitch, croll = camera_poses(sim, camera.mount_height_m)
    level = not (np.any(cpitch) or np.any(croll) or np.any(cz != camera.mount_height_m))
    t_cam = sim.camera_t

    def frame(k: int, x: float, y: float, yaw: float) -> np.ndarray:
        t = float(t_cam[k])
        if level:
            return renderer.render(float(cx[k]), float(cy[k]), float(cyaw[k]), t=t)
        return renderer.render(float(cx[k]), float(cy[k]), float(cyaw[k]), z=float(cz[k]), pitch=float(cpitch[k]),
                               roll=float(croll[k]), t=t)

    pub = published_camera(sim, camera)
    info = {"appearance": app.to_dict(), "lit_appearance": renderer.appearance.to_dict(),
            "conditions": cond.to_dict(), "sensor": sensor.to_dict(), "level": bool(level),
            "realisation": _jsonable(drive_realisation(sim, camera, renderer.realisation))}
    return sim, frame, camera_model_of_mount(camera, pub), info


def synthesize_world(world_dir: Path, out: Path, cfg: SynthConfig, *, progress: bool = True, bar=None) -> Dict:
    """Samples of one world (see the module doc); returns {"name", "path", "samples"}. ``bar``: a tqdm
    over all drives, advanced per drive."""
    from tqdm import tqdm

    from ..core.camera import PinholeCamera
    from ..metric.aerial import AerialMap
    from ..metric.config import MetricParams
    from ..metric.features import GradientFeatures
    from ..metric.matcher import MetricMatcher
    from ..sim.world import World

    world_dir = Path(world_dir)
    world = World.load(world_dir)
    name = world_dir.name
    camera = PinholeCamera(width=cfg.width, height=cfg.height, hfov_deg=cfg.hfov_deg)
    cm = camera_model_for(camera)
    aerial = AerialMap(world_dir / "orthophoto.tif", world.frame, 0.5)  # only to satisfy the matcher
    total = 0
    for i in range(cfg.drives):
        seed = cfg.drive_seed0 + i
        pname = cfg.preset_of(i)
        ddir = out / name / f"d{seed}"
        done = ddir / "done.json"
        if done.is_file():
            d = json.loads(done.read_text())
            if d.get("preset") != pname:  # older folders: no "preset" = the default drive
                raise InvalidArgument(f"{ddir} was made with preset {d.get('preset')!r}, this run wants {pname!r} "
                                      f"for drive {i}; use another --cache folder (or delete this one)")
            total += int(d["samples"])
            if bar is not None:
                bar.update(1)
            continue
        ddir.mkdir(parents=True, exist_ok=True)
        for stale in ddir.glob("*.npz"):
            stale.unlink()
        if pname is None:
            sim, frame, cm_drive, info = _default_drive(world, camera, cm, seed, cfg)
        else:
            sim, frame, cm_drive, info = _preset_drive(world, camera, seed, pname, cfg)
        tr = sim.truth
        t_cam = sim.camera_t
        st = tr.at(t_cam)
        xs, ys, yaws = np.asarray(st.x), np.asarray(st.y), np.asarray(st.yaw)
        keys = keyframe_indices(xs, ys, cfg.keyframe_m)
        rng = np.random.default_rng(seed + 7)
        matchers = {T: MetricMatcher(aerial, GradientFeatures(), MetricParams(metric_seq_len=T), cm_drive)
                    for T in cfg.seq_lens}
        ox, oy, oyaw = 0.0, 0.0, 0.0  # odometry error (random walk)
        n = 0
        desc = f"{name} d{seed}" + (f" {pname}" if pname else "")
        for j, k in enumerate(tqdm(keys, desc=desc, unit="kf", disable=not progress, leave=False)):
            x, y, yaw = float(xs[k]), float(ys[k]), float(yaws[k])
            img = frame(k, x, y, yaw)
            ox += rng.normal(0, cfg.odom_step_sigma_m)
            oy += rng.normal(0, cfg.odom_step_sigma_m)
            oyaw += math.radians(rng.normal(0, cfg.odom_step_sigma_deg))
            for T, m in matchers.items():
                m.add_keyframe(float(t_cam[k]), img, (x + ox, y + oy, yaw + oyaw))
                if len(m.views) < T:
                    continue
                rgb, valid, rngm, gm, nviews = m.mosaic(0.0)
                _write_npz(ddir / f"k{j:04d}_t{T}.npz", rgb=np.clip(rgb + 0.5, 0, 255).astype(np.uint8),
                           valid=valid, range_m=np.minimum(rngm, 1e3).astype(np.float16),
                           grid=np.array([gm.res_m, gm.x_min_m, gm.x_max_m, gm.y_half_m]),
                           pose=np.array([x, y, yaw]), views=np.array(nviews))
                n += 1
        done.write_text(json.dumps({"samples": n, "keyframes": len(keys), "drive_seed": seed, "preset": pname,
                                    **info}) + "\n")
        total += n
        log.info("%s drive %d%s: %d samples", name, seed, f" ({pname})" if pname else "", n)
        if bar is not None:
            bar.update(1)
    return {"name": name, "path": str(world_dir.resolve()), "samples": total}


def synthesize(worlds: Sequence[Path], out: Path, cfg: Optional[SynthConfig] = None, *,
               progress: bool = True) -> Dict:
    """All worlds; writes OUT/index.json and returns it. Refuses a folder made with other settings."""
    cfg = cfg or SynthConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = [Path(w).name for w in worlds]
    if len(set(names)) != len(names):
        raise InvalidArgument(f"world folder names must differ (they name the sample folders): {names}")
    settings = out / "synth.json"
    want = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
    if settings.is_file():
        have = json.loads(settings.read_text())
        have.setdefault("presets", [])  # folders made before presets existed: default drives only
        if have["presets"] != want["presets"]:
            raise InvalidArgument(f"{out} holds samples made with presets {have['presets'] or 'none'}, this run "
                                  f"asks for {want['presets'] or 'none'}; use another --cache folder (or delete it)")
        if have != want:
            raise InvalidArgument(f"{out} holds samples made with other settings ({have}); use another --cache "
                                  f"folder or delete it")
    else:
        settings.write_text(json.dumps(want, indent=2) + "\n")
    from tqdm import tqdm

    with tqdm(total=len(worlds) * cfg.drives, desc="samples", unit="drive", disable=not progress) as bar:
        worlds_out = [synthesize_world(Path(w), out, cfg, progress=progress, bar=bar) for w in worlds]
    index = {"format": SAMPLES_FORMAT, "format_version": SAMPLES_FORMAT_VERSION, "worlds": worlds_out, "config": want}
    write_json_atomic(out / "index.json", index)
    return index


def read_sample_index(out: Path) -> Dict:
    """OUT/index.json of a sample folder, checked for format and version (``core.manifest``)."""
    return read_manifest(Path(out) / "index.json", SAMPLES_FORMAT, SAMPLES_FORMAT_VERSION,
                         what="bevmatch sample folder", rebuild=f"make the samples again into an empty --cache "
                                                                f"folder with `geoloc train-metric` (not {out})")


@dataclass
class Sample:
    rgb: np.ndarray
    valid: np.ndarray
    range_m: np.ndarray
    grid: Tuple[float, float, float, float]
    pose: Tuple[float, float, float]
    world: str
    views: int


def load_sample(path: Path, world: str) -> Sample:
    with np.load(path) as z:
        g = z["grid"]
        return Sample(z["rgb"], z["valid"].astype(bool), z["range_m"].astype(np.float32),
                      (float(g[0]), float(g[1]), float(g[2]), float(g[3])), tuple(float(v) for v in z["pose"]),
                      world, int(z["views"]))


def list_samples(out: Path) -> Dict[str, List[Path]]:
    """world name -> sample files of its complete drives."""
    res: Dict[str, List[Path]] = {}
    index = read_sample_index(out)
    conf = index.get("config", {})
    presets, seed0 = list(conf.get("presets") or []), conf.get("drive_seed0")
    for w in index["worlds"]:
        files = []
        for d in sorted((Path(out) / w["name"]).glob("d*")):
            if (d / "done.json").is_file():
                if seed0 is not None and d.name[1:].isdigit():  # the drive's preset is the one index.json says
                    i = int(d.name[1:]) - int(seed0)
                    want = presets[i % len(presets)] if presets else None
                    have = json.loads((d / "done.json").read_text()).get("preset")
                    if have != want:
                        raise InvalidArgument(f"{d} was made with preset {have!r} but {out}/index.json says "
                                              f"{want!r} (presets {presets or 'none'}): a mixed sample folder; "
                                              f"make the samples again into an empty --cache folder")
                files += sorted(d.glob("k*_t*.npz"))
        res[w["name"]] = files
    return res


def sample_presets(out: Path) -> List[str]:
    """The presets a sample folder was made with ([]: default drives only)."""
    return list(read_sample_index(out).get("config", {}).get("presets") or [])
