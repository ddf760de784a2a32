"""The drive-time world in the camera (sim.conditions -> sim.render): traffic, time of day, weather and
road changes render into the camera frames only; the world's rasters (and so the orthophoto) never change,
and a drive without conditions the camera sees renders today's bytes."""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from geoloc_ros.core.camera import PinholeCamera
from geoloc_ros.sim.conditions import PRESETS, Conditions
from geoloc_ros.sim.drive import plan_route, simulate_truth, stream_rng
from geoloc_ros.sim.render import SKY, Appearance, GroundRenderer, SensorModel
from geoloc_ros.sim.world import Sem

CAM = PinholeCamera(width=256, height=128, hfov_deg=90.0)
APP = Appearance(seed=3, sun_azimuth_deg=200.0, sun_elevation_deg=40.0, parked_car_density=0.2)
ROADLIKE = (Sem.ROAD, Sem.MARKING, Sem.MARKING_YELLOW)


@pytest.fixture(scope="module")
def ego(small_world):
    """A 20 s truth trajectory through the small town (the drive the conditions are realised for)."""
    w = small_world
    route = plan_route(w, stream_rng(5, "route"), 260.0)
    return simulate_truth(route, stream_rng(5, "truth"), 20.0, kinds=[w.roads.edge_kind[e] for e, _ in route.steps])


@pytest.fixture(scope="module")
def plain(small_world):
    return GroundRenderer(small_world, CAM, APP)


def _poses(ego, times):
    st = ego.at(np.asarray(times, float))
    return [(float(st.x[k]), float(st.y[k]), float(st.yaw[k]), float(t)) for k, t in enumerate(times)]


def _digest(world) -> str:
    h = hashlib.sha256()
    for a in (world.ortho, world.albedo, world.height, world.semantic, world.object_id):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _bearing_grid(cam):
    return np.broadcast_to(cam.column_bearing(np.arange(cam.width))[None, :], (cam.height, cam.width))


def test_conditions_the_camera_does_not_see_render_todays_bytes(small_world, ego):
    """None, the default Conditions(), the `clear` and `miscalibrated` presets (sensor-side fields only)
    give the bytes of a renderer built without the argument, with and without the sensor model."""
    for sensor in (None, SensorModel()):
        ref = GroundRenderer(small_world, CAM, APP, sensor=sensor)
        frames = [ref.render(x, y, yaw) for x, y, yaw, _ in _poses(ego, [2.0, 9.0])]
        for cond in (None, Conditions(), PRESETS["clear"], PRESETS["miscalibrated"], PRESETS["urban-gnss"]):
            r = GroundRenderer(small_world, CAM, APP, sensor=sensor, conditions=cond, ego=ego)
            assert r.realisation() == {}
            for (x, y, yaw, t), want in zip(_poses(ego, [2.0, 9.0]), frames):
                assert np.array_equal(r.render(x, y, yaw, t=t), want)


def test_traffic_occludes_road_pixels_in_the_camera_and_never_reaches_the_world(small_world, ego, plain):
    """With 40 vehicles, frames along the drive show vehicles (class CAR, nearer depth) where the plain
    renderer sees road; the lead vehicle is ahead in the ego lane; after rendering the world's rasters
    (orthophoto included) and the renderer's own copies are as before."""
    before = _digest(small_world)
    busy = GroundRenderer(small_world, CAM, APP, conditions=Conditions(traffic=40), ego=ego)
    own = (busy.height.copy(), busy.sem.copy(), busy.albedo.copy(), busy.shadow.copy())
    occluded, ahead = 0, 0
    centre = slice(CAM.width // 2 - 8, CAM.width // 2 + 8)
    for x, y, yaw, t in _poses(ego, np.arange(1.0, 20.0, 1.5)):
        a, b = plain.render_layers(x, y, yaw), busy.render_layers(x, y, yaw, t=t)
        hid = np.isin(a.semantic, ROADLIKE) & (b.semantic == Sem.CAR)
        occluded += int(hid.sum())
        assert np.all(b.depth[hid] < a.depth[hid] * 1.015 + 0.3)  # ray samples: 0.25 m steps to 40 m, then 1.2 %
        ahead += int(((b.semantic[:, centre] == Sem.CAR) & (a.semantic[:, centre] != Sem.CAR)).any())
    assert occluded > 500
    assert ahead >= 8  # the lead vehicle is in the ego lane in most frames
    assert _digest(small_world) == before
    for mine, kept in zip((busy.height, busy.sem, busy.albedo, busy.shadow), own):
        assert np.array_equal(mine, kept)
    real = busy.realisation()["traffic"]
    assert real["vehicles"] == 40 and real["lead"] >= 1 and real["oncoming"] >= 1
    assert all(4.0 <= v["speed_mps"] <= 14.0 for v in real["list"] if v["kind"] == "network")


def test_traffic_lead_gap_oncoming_direction_and_queue_speeds(small_world, ego):
    """Lead vehicles stay 8-56 m from the ego car, oncoming ones head against it as they pass, network vehicles
    never exceed 14 m/s and slow down somewhere (junctions, queues)."""
    busy = GroundRenderer(small_world, CAM, APP, conditions=Conditions(traffic=30), ego=ego)
    tr = busy._scene.traffic
    st = ego.at(tr.t)
    for i, kind in enumerate(tr.kind):
        if kind == "lead":
            d = np.hypot(tr.x[i] - st.x, tr.y[i] - st.y)
            assert d.min() > 8.0 and d.max() < 56.0
        elif kind == "oncoming":  # heading against the ego car when they pass each other
            d = np.hypot(tr.x[i] - st.x, tr.y[i] - st.y)
            k = int(np.argmin(d))
            assert d[k] < 8.0 and math.cos(tr.yaw[i][k] - st.yaw[k]) < -0.8
    net = np.array([k == "network" for k in tr.kind])
    v = np.hypot(np.diff(tr.x[net], axis=1), np.diff(tr.y[net], axis=1)) / np.diff(tr.t)
    assert v.max() <= 14.0 + 0.1
    assert (v < 5.0).any()


def test_night_is_dark_and_the_headlights_light_the_road_ahead(small_world, ego, plain):
    """Night frames are far darker than day; road 5-20 m ahead (+-12 deg) is much brighter than ground at
    the same distance to the side (> 30 deg) and than the ground beyond the beams (> 60 m)."""
    night = GroundRenderer(small_world, CAM, APP, conditions=Conditions(time_of_day="night"), ego=ego)
    bearing = np.abs(_bearing_grid(CAM))
    ratios_day, ahead, side, far = [], [], [], []
    for x, y, yaw, t in _poses(ego, [2.0, 7.0, 12.0, 17.0]):
        d, n = plain.render_layers(x, y, yaw), night.render_layers(x, y, yaw, t=t)
        lum = n.image.astype(float).mean(axis=2)
        ratios_day.append(lum.mean() / d.image.astype(float).mean())
        ground = n.semantic != SKY
        band = ground & (n.depth > 5) & (n.depth < 20)
        ahead.append(lum[band & np.isin(n.semantic, ROADLIKE) & (bearing < math.radians(12))].mean())
        side.append(lum[band & (bearing > math.radians(30))].mean())
        far.append(lum[ground & (n.depth > 60)].mean())
    assert max(ratios_day) < 0.5
    assert np.mean(ahead) > 2.0 * np.mean(side)
    assert np.mean(ahead) > 4.0 * np.mean(far)
    real = night.realisation()["lighting"]
    assert real["time_of_day"] == "night" and real["street_lights"]["count"] > 10


def test_dusk_sun_is_low_and_casts_longer_shadows(small_world, plain):
    dusk = GroundRenderer(small_world, CAM, APP, conditions=Conditions(time_of_day="dusk"))
    el = dusk.realisation()["lighting"]["sun_elevation_deg"]
    assert 3.0 <= el <= 8.0 and dusk.appearance.sun_elevation_deg == pytest.approx(el, abs=1e-3)
    assert dusk.shadow.mean() > 2.0 * plain.shadow.mean()


def test_fog_contrast_falls_with_distance(small_world, ego, plain):
    """Luminance spread of the scene in fog relative to clear weather: lower far away than near."""
    fog = GroundRenderer(small_world, CAM, APP, conditions=Conditions(weather="fog"), ego=ego)
    vis = fog.realisation()["weather"]["visibility_m"]
    assert 60.0 <= vis <= 200.0
    near, far = [], []
    for x, y, yaw, t in _poses(ego, [3.0, 10.0, 16.0]):
        c, f = plain.render_layers(x, y, yaw), fog.render_layers(x, y, yaw, t=t)
        lc, lf = c.image.astype(float).mean(axis=2), f.image.astype(float).mean(axis=2)
        for lo, hi, out in ((2.0, 12.0, near), (60.0, 400.0, far)):
            m = (c.depth > lo) & (c.depth < hi)
            if m.sum() > 50:
                out.append(lf[m].std() / max(lc[m].std(), 1e-6))
    assert np.mean(far) < 0.6 * np.mean(near)
    assert np.mean(near) > 0.5


def test_rain_darkens_the_asphalt(small_world, ego, plain):
    rain = GroundRenderer(small_world, CAM, APP, conditions=Conditions(weather="rain"), ego=ego)
    dry, wet = [], []
    for x, y, yaw, t in _poses(ego, [3.0, 10.0, 16.0]):
        c, r = plain.render_layers(x, y, yaw), rain.render_layers(x, y, yaw, t=t)
        m = (c.semantic == Sem.ROAD) & (r.semantic == Sem.ROAD) & (c.depth > 3) & (c.depth < 15)
        dry.append(c.image[m].astype(float).mean())
        wet.append(r.image[m].astype(float).mean())
    assert np.mean(wet) < 0.8 * np.mean(dry)
    assert (rain.albedo[small_world.semantic == Sem.ROAD].mean() <
            0.7 * plain.albedo[small_world.semantic == Sem.ROAD].mean())


def test_road_changes_alter_markings_in_the_camera_not_in_the_orthophoto(small_world, ego, plain):
    before = _digest(small_world)
    ch = GroundRenderer(small_world, CAM, APP, conditions=Conditions(road_changes=0.3), ego=ego)
    assert _digest(small_world) == before
    real = ch.realisation()["road_changes"]
    assert real["segments_changed"] == round(0.3 * real["segments_total"]) > 5
    assert real["removed"] + real["shifted"] + real["new"] == real["segments_changed"]
    assert real["construction_zone"]["cones"] > 5 and real["new_asphalt"]
    paint = (Sem.MARKING, Sem.MARKING_YELLOW)
    changed = np.isin(ch.sem, paint) != np.isin(small_world.semantic, paint)
    assert changed.sum() > 100
    seen = 0
    for x, y, yaw, t in _poses(ego, np.arange(1.0, 20.0, 2.0)):
        a, b = plain.render_layers(x, y, yaw), ch.render_layers(x, y, yaw, t=t)
        seen += int((np.isin(a.semantic, paint) != np.isin(b.semantic, paint)).sum())
    assert seen > 50


def test_realisation_is_json_and_deterministic(small_world, ego):
    """The worst preset twice: the same realisation and the same frame bytes; another seed draws other."""
    a = GroundRenderer(small_world, CAM, APP, conditions=PRESETS["worst"], ego=ego)
    b = GroundRenderer(small_world, CAM, APP, conditions=PRESETS["worst"], ego=ego)
    ja = json.dumps(a.realisation(), sort_keys=True)
    assert ja == json.dumps(b.realisation(), sort_keys=True)
    assert set(a.realisation()) >= {"lighting", "weather", "traffic", "road_changes"}
    x, y, yaw, t = _poses(ego, [8.0])[0]
    assert np.array_equal(a.render(x, y, yaw, t=t), b.render(x, y, yaw, t=t))
    other = GroundRenderer(small_world, CAM, Appearance(seed=4), conditions=PRESETS["worst"], ego=ego)
    assert json.dumps(other.realisation(), sort_keys=True) != ja


def test_tilted_distorted_camera_renders_the_conditions_too(small_world, ego):
    """The tilted / distorted path (ray cast over a level window, then remapped) carries the conditions:
    vehicles in the semantic layer, a dark night frame, the right shape."""
    cam = PinholeCamera(width=192, height=108, hfov_deg=90.0, distortion=(-0.28, 0.07, 0.0, 0.0, 0.0))
    plain = GroundRenderer(small_world, cam, APP)
    worst = GroundRenderer(small_world, cam, APP, conditions=PRESETS["worst"], ego=ego)
    cars, dark = 0, []
    for x, y, yaw, t in _poses(ego, [3.0, 9.0, 15.0]):
        a = plain.render_layers(x, y, yaw, pitch=0.02, roll=-0.01)
        b = worst.render_layers(x, y, yaw, pitch=0.02, roll=-0.01, t=t)
        assert b.image.shape == (108, 192, 3) and b.image.dtype == np.uint8
        cars += int(((b.semantic == Sem.CAR) & (a.semantic != Sem.CAR)).sum())
        dark.append(b.image.mean() / a.image.mean())
    assert cars > 50 and max(dark) < 0.6
