"""`geoloc train-metric --presets`: the learned metric pair's training samples under the simulator's
drive-time condition presets. A default run still makes today's samples (compared with the unchanged
code path, restated here), preset drives are rendered with their conditions and recorded, a
miscalibrated preset's mosaics come from the published camera, caches of other presets are refused,
and the checkpoint says which presets it was trained on. A 300 m town and 8 s drives: ~20 s."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from geoloc_ros.core.errors import InvalidArgument
from geoloc_ros.training.metric_data import SynthConfig, list_samples, load_sample, synthesize

DRIVE_S = 8.0


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    """Training town 7 as the protocol makes its towns (survey gap and terrain on), 300 m."""
    from geoloc_ros.tools.sim_world import main

    out = tmp_path_factory.mktemp("presets") / "world_s7_300m"
    main(["--out", str(out), "--seed", "7", "--size-m", "300"])
    return out


@pytest.fixture(scope="module")
def caches(world_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("caches")
    synthesize([world_dir], root / "default", SynthConfig(drives=1, duration_s=DRIVE_S), progress=False)
    synthesize([world_dir], root / "presets", SynthConfig(drives=2, duration_s=DRIVE_S, presets=("night", "busy")),
               progress=False)
    return root


def _drive(cache, world_dir, seed):
    return cache / world_dir.name / f"d{seed}"


def _unchanged_path_samples(world_dir, cfg: SynthConfig, seed: int):
    """The samples of drive ``seed`` as synthesize_world made them before presets existed (its loop,
    restated): legacy renderer, level camera at the truth pose, the exact camera model."""
    from geoloc_ros.core.camera import PinholeCamera
    from geoloc_ros.metric.aerial import AerialMap
    from geoloc_ros.metric.config import MetricParams
    from geoloc_ros.metric.features import GradientFeatures
    from geoloc_ros.metric.matcher import MetricMatcher
    from geoloc_ros.sim.drive import DriveConfig, simulate_drive, stream_rng
    from geoloc_ros.sim.render import Appearance, GroundRenderer
    from geoloc_ros.sim.world import World
    from geoloc_ros.training.metric_data import camera_model_for, keyframe_indices

    world = World.load(world_dir)
    camera = PinholeCamera(width=cfg.width, height=cfg.height, hfov_deg=cfg.hfov_deg)
    aerial = AerialMap(world_dir / "orthophoto.tif", world.frame, 0.5)
    sim = simulate_drive(world, DriveConfig(duration_s=cfg.duration_s, seed=seed))
    renderer = GroundRenderer(world, camera, Appearance.sample(stream_rng(seed, "appearance")))
    st = sim.truth.at(sim.camera_t)
    xs, ys, yaws = np.asarray(st.x), np.asarray(st.y), np.asarray(st.yaw)
    rng = np.random.default_rng(seed + 7)
    matchers = {T: MetricMatcher(aerial, GradientFeatures(), MetricParams(metric_seq_len=T), camera_model_for(camera))
                for T in cfg.seq_lens}
    ox = oy = oyaw = 0.0
    out = {}
    for j, k in enumerate(keyframe_indices(xs, ys, cfg.keyframe_m)):
        x, y, yaw = float(xs[k]), float(ys[k]), float(yaws[k])
        img = renderer.render(x, y, yaw)
        ox += rng.normal(0, cfg.odom_step_sigma_m)
        oy += rng.normal(0, cfg.odom_step_sigma_m)
        oyaw += math.radians(rng.normal(0, cfg.odom_step_sigma_deg))
        for T, m in matchers.items():
            m.add_keyframe(float(sim.camera_t[k]), img, (x + ox, y + oy, yaw + oyaw))
            if len(m.views) >= T:
                rgb, valid, rngm, _, _ = m.mosaic(0.0)
                out[f"k{j:04d}_t{T}.npz"] = (np.clip(rgb + 0.5, 0, 255).astype(np.uint8), valid,
                                             np.minimum(rngm, 1e3).astype(np.float16))
    return out


def _luminance(drive_dir):
    lum = []
    for f in sorted(drive_dir.glob("k*_t*.npz")):
        s = load_sample(f, "w")
        lum.append(s.rgb.astype(np.float32).mean(-1)[s.valid])
    return np.concatenate(lum)


def test_default_run_makes_the_samples_of_the_unchanged_path(world_dir, caches):
    d = _drive(caches / "default", world_dir, 1000)
    ref = _unchanged_path_samples(world_dir, SynthConfig(drives=1, duration_s=DRIVE_S), 1000)
    files = sorted(p.name for p in d.glob("k*_t*.npz"))
    assert len(ref) > 10 and files == sorted(ref)
    for name, (rgb, valid, rngm) in ref.items():
        with np.load(d / name) as z:
            assert np.array_equal(z["rgb"], rgb) and np.array_equal(z["valid"], valid), name
            assert np.array_equal(z["range_m"], rngm), name
    done = json.loads((d / "done.json").read_text())
    assert done["preset"] is None and "conditions" not in done
    assert json.loads((caches / "default" / "index.json").read_text())["config"]["presets"] == []


def test_presets_cycle_over_the_drives_and_are_recorded(world_dir, caches):
    from geoloc_ros.sim.conditions import PRESETS

    c = caches / "presets"
    for seed, name in ((1000, "night"), (1001, "busy")):
        d = _drive(c, world_dir, seed)
        done = json.loads((d / "done.json").read_text())
        assert done["preset"] == name and done["conditions"] == json.loads(json.dumps(PRESETS[name].to_dict()))
        assert done["samples"] == len(list(d.glob("k*_t*.npz"))) > 10
        assert done["sensor"] is not None  # rendered with the sensor model, as `geoloc sim drive` does
    busy = json.loads((_drive(c, world_dir, 1001) / "done.json").read_text())
    assert busy["realisation"]["renderer"]["traffic"]  # the vehicles were placed
    index = json.loads((c / "index.json").read_text())
    assert index["config"]["presets"] == ["night", "busy"]
    assert json.loads((c / "synth.json").read_text())["presets"] == ["night", "busy"]
    assert {p.parent.name for fs in list_samples(c).values() for p in fs} == {"d1000", "d1001"}


def test_night_samples_are_darker_than_the_same_route_by_day(world_dir, caches):
    """Drive 1000 follows the same route with and without a preset. The mosaic (3-33 m ahead) lies in
    the low beams and the auto exposure lifts it, so its MEAN stays day-like; what night does is leave
    the cells outside the beams and the street lights dark: many more dark cells, a much lower 10th
    percentile."""
    day = _luminance(_drive(caches / "default", world_dir, 1000))
    night = _luminance(_drive(caches / "presets", world_dir, 1000))
    dark_day, dark_night = float(np.mean(day < 40)), float(np.mean(night < 40))
    assert dark_night > max(0.08, 2.5 * dark_day), (dark_day, dark_night)
    assert np.percentile(night, 10) < np.percentile(day, 10) - 10


def test_unknown_preset_is_a_clear_error(world_dir, tmp_path, capsys):
    with pytest.raises(InvalidArgument, match="unknown conditions preset 'nigth'; valid: clear, busy"):
        SynthConfig(presets=("night", "nigth"))
    from geoloc_ros.cli import main

    out = tmp_path / "run"
    assert main(["train-metric", "--world", str(world_dir), "--out", str(out), "--presets", "nigth"]) == 2
    assert "unknown conditions preset 'nigth'" in capsys.readouterr().err
    assert not out.exists()


def test_a_cache_of_other_presets_is_refused(world_dir, caches, tmp_path):
    cfg = SynthConfig(drives=2, duration_s=DRIVE_S)
    with pytest.raises(InvalidArgument, match=r"presets \['night', 'busy'\], this run asks for none"):
        synthesize([world_dir], caches / "presets", cfg, progress=False)
    with pytest.raises(InvalidArgument, match="presets none, this run asks for"):
        synthesize([world_dir], caches / "default", SynthConfig(drives=1, duration_s=DRIVE_S, presets=("night",)),
                   progress=False)
    # a folder made before presets existed (no "presets" in synth.json) is a default one and still resumes
    old = tmp_path / "old"
    shutil.copytree(caches / "default", old)
    s = json.loads((old / "synth.json").read_text())
    del s["presets"]
    (old / "synth.json").write_text(json.dumps(s))
    assert synthesize([world_dir], old, SynthConfig(drives=1, duration_s=DRIVE_S), progress=False)["worlds"][0]["samples"]
    # a drive whose done.json names another preset than the folder's: refused on resume and on listing
    mixed = tmp_path / "mixed"
    shutil.copytree(caches / "presets", mixed)
    p = _drive(mixed, world_dir, 1001) / "done.json"
    p.write_text(json.dumps(dict(json.loads(p.read_text()), preset="fog")))
    with pytest.raises(InvalidArgument, match="made with preset 'fog'"):
        list_samples(mixed)
    with pytest.raises(InvalidArgument, match="made with preset 'fog'"):
        synthesize([world_dir], mixed, SynthConfig(drives=2, duration_s=DRIVE_S, presets=("night", "busy")),
                   progress=False)


def test_miscalibrated_mosaics_come_from_the_published_camera(world_dir, tmp_path):
    """clear and miscalibrated differ only in the published calibration: same route, same frames (the
    renderer sees the true camera), so their mosaics differ only if the matcher got the published one."""
    from geoloc_ros.core.camera import PinholeCamera
    from geoloc_ros.sim.conditions import MISCALIBRATION
    from geoloc_ros.sim.sensors import published_mount, true_mount
    from geoloc_ros.training.metric_data import camera_model_for, camera_model_of_mount

    cam = PinholeCamera(width=256, height=128, hfov_deg=90.0)
    assert camera_model_of_mount(cam, true_mount(cam, 0.0)) == camera_model_for(cam)
    assert camera_model_of_mount(cam, published_mount(true_mount(cam, 0.0), MISCALIBRATION)) != camera_model_for(cam)
    dirs = {}
    for name in ("clear", "miscalibrated", "clear"):
        out = tmp_path / f"{name}_{len(dirs)}"
        synthesize([world_dir], out, SynthConfig(drives=1, duration_s=DRIVE_S, presets=(name,)), progress=False)
        dirs.setdefault(name, []).append(_drive(out, world_dir, 1000))
    cam_rec = json.loads((dirs["miscalibrated"][0] / "done.json").read_text())["realisation"]["camera"]
    assert cam_rec["published"]["pitch_deg"] == cam_rec["true"]["pitch_deg"] + MISCALIBRATION.pitch_deg
    assert cam_rec["published"]["fx"] == pytest.approx(cam_rec["true"]["fx"] * (1 + MISCALIBRATION.fx_pct / 100))
    names = sorted(p.name for p in dirs["clear"][0].glob("k*_t1.npz"))
    assert names == sorted(p.name for p in dirs["miscalibrated"][0].glob("k*_t1.npz"))
    differ = 0
    for n in names:
        a, b, c = (load_sample(d / n, "w") for d in (dirs["clear"][0], dirs["clear"][1], dirs["miscalibrated"][0]))
        assert np.array_equal(a.rgb, b.rgb)  # deterministic: the difference below is the camera model's
        differ += int(not (np.array_equal(a.rgb, c.rgb) and np.array_equal(a.valid, c.valid)))
    assert differ == len(names)


def test_the_checkpoint_says_which_presets_it_was_trained_on(caches, tmp_path):
    from geoloc_ros.models.bevmatch import load_bevmatch
    from geoloc_ros.training.metric_trainer import MetricTrainConfig, MetricTrainer

    cfg = MetricTrainConfig(steps=2, batch=1, val_samples=2, val_every=2, warmup_steps=1,
                            model={"channels": 4, "width": 4, "width_low": 4})
    res = MetricTrainer(caches / "presets", tmp_path / "run", cfg).run(progress=False)
    assert res["step"] == 2
    assert json.loads((tmp_path / "run" / "run.json").read_text())["presets"] == ["night", "busy"]
    assert json.loads((tmp_path / "run" / "history.json").read_text())["presets"] == ["night", "busy"]
    assert load_bevmatch(tmp_path / "run" / "last.pt")[1]["training"]["presets"] == ["night", "busy"]


def test_training_targets_are_where_the_orthophoto_shows_the_vehicle(world_dir, caches):
    """The pair is trained to find the vehicle where the survey shows it (truth + the world's recorded
    misregistration), not at the absolute truth it cannot see: otherwise it learns the training towns'
    survey offsets."""
    import numpy as np

    from geoloc_ros.sim.survey import misregistration_displacement
    from geoloc_ros.training.metric_data import load_sample
    from geoloc_ros.training.metric_trainer import AerialSource

    src = AerialSource({world_dir.name: str(world_dir)})
    path = sorted(_drive(caches / "default", world_dir, 1000).glob("*.npz"))[0]
    raw, moved = load_sample(path, world_dir.name), src.sample(path, world_dir.name)
    dx, dy = misregistration_displacement(world_dir, np.array([raw.pose[0]]), np.array([raw.pose[1]]))
    assert np.hypot(dx[0], dy[0]) > 0.05  # the protocol's worlds carry a misregistration
    assert moved.pose == pytest.approx((raw.pose[0] + dx[0], raw.pose[1] + dy[0], raw.pose[2]), abs=1e-9)
    assert np.array_equal(moved.rgb, raw.rgb) and moved.world == raw.world
