"""Ground renderer: geometric consistency with the world layers, occlusion, appearance, determinism."""
from __future__ import annotations

import math

import numpy as np
import pytest

from geoloc_ros.core.camera import PinholeCamera
from geoloc_ros.core.errors import InvalidArgument
from geoloc_ros.sim.render import SKY, Appearance, GroundRenderer
from geoloc_ros.sim.world import Sem, make_toy_world

NO_CARS = Appearance(parked_car_density=0.0)


@pytest.fixture(scope="module")
def toy():
    return make_toy_world()


@pytest.fixture(scope="module")
def toy_renderer(toy):
    return GroundRenderer(toy, PinholeCamera(width=256, height=128, hfov_deg=90.0), NO_CARS)


def bearing_interval(corners: np.ndarray, x: float, y: float, yaw: float):
    ang = np.arctan2(corners[:, 1] - y, corners[:, 0] - x) - yaw
    ang = (ang + np.pi) % (2 * np.pi) - np.pi
    return ang.min(), ang.max()


@pytest.mark.parametrize("bid", [1, 2, 3, 4])
def test_building_appears_at_the_bearing_its_footprint_projects_to(toy, toy_renderer, bid):
    """From the crossing, looking at each toy building, its columns are exactly its footprint's bearings."""
    b = toy.buildings
    x, y = 0.0, 0.0
    yaw = math.atan2(b.cy[bid - 1] - y, b.cx[bid - 1] - x)
    lo, hi = bearing_interval(b.corners(bid - 1), x, y, yaw)
    lay = toy_renderer.render_layers(x, y, yaw)
    cam = toy_renderer.camera
    cols = np.nonzero((lay.object_id == bid).any(axis=0))[0]
    assert len(cols) > 10
    seen = cam.column_bearing(cols)
    step = math.atan(1.0 / cam.fx) * 1.5  # about a column
    assert seen.min() >= lo - step and seen.max() <= hi + step
    # and the whole predicted interval is covered (nothing occludes from the crossing)
    assert seen.min() <= lo + 2 * step and seen.max() >= hi - 2 * step


def test_wall_top_and_foot_rows_match_pinhole_projection(toy, toy_renderer):
    """Flat-roofed building 1 (12 m, west wall at x = 20): from (-10, 30) looking east its roof line is
    at row cy - fy (12 - 1.8) / 30 and its foot at cy + fy 1.8 / 30, within a pixel."""
    cam = toy_renderer.camera
    lay = toy_renderer.render_layers(-10.0, 30.0, 0.0)
    centre = cam.width // 2
    rows = np.nonzero(lay.object_id[:, centre] == 1)[0]
    d = 30.0
    # pixel centres at integer rows; the first row below the roof line, give or take the row quantisation
    # plus the 0.25 m ray-march step (a wall sampled 0.25 m late is 0.34 px lower at 30 m)
    assert -0.5 <= rows.min() - (cam.cy - cam.fy * (12.0 - cam.mount_height_m) / d) <= 1.4
    assert abs(rows.max() - (cam.cy + cam.fy * cam.mount_height_m / d)) <= 1.0
    assert np.allclose(lay.depth[rows, centre], d, atol=0.3)
    # below the wall foot is ground, above the roof line is sky
    assert lay.semantic[rows.max() + 2, centre] in (Sem.ROAD, Sem.MARKING, Sem.SIDEWALK, Sem.GRASS)
    assert lay.semantic[0, centre] == SKY


def test_gable_end_is_higher_at_the_ridge_than_at_the_eaves(toy, toy_renderer):
    """Gabled building 3 (eave 6 m, ridge 9 m) seen end-on from (0, -30) looking west: apex at
    cy - fy (9 - 1.8) / 18 (within the 0.5 m height raster's quantisation), corners lower."""
    cam = toy_renderer.camera
    lay = toy_renderer.render_layers(0.0, -30.0, math.pi)
    centre = cam.width // 2
    apex = np.nonzero(lay.object_id[:, centre] == 3)[0].min()
    # the ridge is sampled on the 0.5 m raster and the 0.25 m ray steps: never higher, at most ~3 rows lower
    assert -0.5 <= apex - (cam.cy - cam.fy * (9.0 - cam.mount_height_m) / 18.0) <= 3.0
    edge_col = centre + int(cam.fx * 4.0 / 18.0)  # 4 m off-axis, 1 m from the eaves
    edge_top = np.nonzero(lay.object_id[:, edge_col] == 3)[0].min()
    assert edge_top > apex + 3


def test_nearer_building_occludes_farther_one(toy, toy_renderer):
    """From (60, 30) looking west, building 1 (x 20..40) hides building 2 (x -43..-27) behind it."""
    lay = toy_renderer.render_layers(60.0, 30.0, math.pi)
    centre = toy_renderer.camera.width // 2
    ids = set(np.unique(lay.object_id[:, centre]).tolist())
    assert 1 in ids and 2 not in ids
    assert np.nanmin(np.where(lay.object_id[:, centre] == 1, lay.depth[:, centre], np.nan)) == pytest.approx(20.0, abs=0.3)


def test_every_rendered_surface_lies_on_the_same_surface_of_the_orthophoto_layers(small_world):
    """On a generated town, for random poses on the roads, each building pixel's 3D point lies on that
    building's footprint edge in object_id.tif and each ground pixel's class matches semantic.tif."""
    rng = np.random.default_rng(3)
    cam = PinholeCamera(width=128, height=64)
    r = GroundRenderer(small_world, cam, Appearance(parked_car_density=0.0))
    checked = 0
    for e in rng.choice(small_world.roads.num_edges, 8, replace=False):
        p = small_world.roads.edge_points[e]
        d = p[1] - p[0]
        x, y, yaw = p[0][0] + 0.5 * d[0], p[0][1] + 0.5 * d[1], math.atan2(d[1], d[0]) + rng.uniform(-1, 1)
        lay = r.render_layers(x, y, yaw)
        rows, cols = np.nonzero(lay.object_id > 0)
        if len(rows) == 0:
            continue
        th = yaw + cam.column_bearing(cols)
        px = x + np.cos(th) * (lay.depth[rows, cols] + 0.3)  # just inside the wall
        py = y + np.sin(th) * (lay.depth[rows, cols] + 0.3)
        rr, cc = small_world.xy_to_rc(px, py)
        ri = np.clip(rr.astype(int), 0, small_world.meta.shape[0] - 1)
        ci = np.clip(cc.astype(int), 0, small_world.meta.shape[1] - 1)
        # allow one pixel of rasterisation slack around the footprint
        hits = np.zeros(len(rows), bool)
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                rrc = np.clip(ri + dr, 0, small_world.meta.shape[0] - 1)
                ccc = np.clip(ci + dc, 0, small_world.meta.shape[1] - 1)
                hits |= small_world.object_id[rrc, ccc] == lay.object_id[rows, cols]
        assert hits.mean() > 0.97, hits.mean()
        ground = np.isin(lay.semantic, (Sem.ROAD, Sem.GRASS, Sem.SIDEWALK, Sem.PARKING, Sem.FIELD))
        gr, gc = np.nonzero(ground)
        th = yaw + cam.column_bearing(gc)
        gx, gy = x + np.cos(th) * lay.depth[gr, gc], y + np.sin(th) * lay.depth[gr, gc]
        inside = small_world.contains(gx, gy, margin_m=0.5)
        grr, gcc = small_world.xy_to_rc(gx[inside], gy[inside])
        sem = small_world.semantic[grr.astype(int), gcc.astype(int)]
        assert (sem == lay.semantic[gr, gc][inside]).mean() > 0.999
        checked += 1
    assert checked >= 4


def test_same_appearance_same_bytes_and_appearance_changes_the_image(toy):
    cam = PinholeCamera(width=128, height=64)
    pose = (-2.5, -60.0, math.pi / 2)
    a = GroundRenderer(toy, cam, Appearance(seed=5)).render(*pose)
    b = GroundRenderer(toy, cam, Appearance(seed=5)).render(*pose)
    assert a.dtype == np.uint8 and a.shape == (64, 128, 3)
    assert np.array_equal(a, b)
    for other in (Appearance(seed=5, sun_azimuth_deg=100.0, sun_elevation_deg=15.0), Appearance(seed=5, brightness=0.7),
                  Appearance(seed=5, haze_m=60.0)):
        c = GroundRenderer(toy, cam, other).render(*pose)
        assert np.abs(c.astype(int) - a.astype(int)).mean() > 3.0


def test_season_tints_vegetation_not_roads(toy):
    cam = PinholeCamera(width=128, height=64)
    pose = (-2.5, -60.0, math.pi / 2)
    layers = GroundRenderer(toy, cam, NO_CARS).render_layers(*pose)
    autumn = GroundRenderer(toy, cam, Appearance(season="autumn", parked_car_density=0.0)).render(*pose)
    grass = layers.semantic == Sem.GRASS
    road = layers.semantic == Sem.ROAD
    red_gain = autumn[..., 0][grass].mean() / layers.image[..., 0][grass].mean()
    assert red_gain > 1.2
    assert abs(autumn[road].astype(float).mean() - layers.image[road].astype(float).mean()) < 2.0


def test_parked_cars_follow_density_and_stay_off_buildings(small_world):
    cam = PinholeCamera(width=64, height=32)
    none = GroundRenderer(small_world, cam, Appearance(parked_car_density=0.0))
    many = GroundRenderer(small_world, cam, Appearance(parked_car_density=0.8, seed=1))
    assert none.parked_cars == 0 and many.parked_cars > 50
    added = (many.sem == Sem.CAR) & (small_world.semantic != Sem.CAR)
    assert added.any()
    assert not (added & (small_world.semantic == Sem.BUILDING)).any()
    assert np.all(many.height[added] == pytest.approx(1.5))
    # the world itself is untouched
    assert not (small_world.semantic[added] == Sem.CAR).any()


def test_appearance_validation_and_round_trip():
    a = Appearance.sample(np.random.default_rng(0))
    assert Appearance.from_dict(a.to_dict()) == a
    with pytest.raises(InvalidArgument, match="unknown appearance key"):
        Appearance.from_dict({**a.to_dict(), "sun_azimut_deg": 3})
    with pytest.raises(InvalidArgument, match="season"):
        Appearance(season="monsoon")
    with pytest.raises(InvalidArgument, match="sun_elevation_deg"):
        Appearance(sun_elevation_deg=-3)
    samples = [Appearance.sample(np.random.default_rng(i)) for i in range(30)]
    assert len({s.season for s in samples}) >= 3
    assert np.ptp([s.sun_azimuth_deg for s in samples]) > 90


def test_non_finite_pose_is_refused(toy_renderer):
    with pytest.raises(InvalidArgument, match="not finite"):
        toy_renderer.render(float("nan"), 0.0, 0.0)


def test_sensor_model_auto_exposure_vignetting_and_signal_dependent_noise(toy):
    """With SensorModel, a dark capture is brought up by auto exposure, corners are darker than the centre,
    and noise grows with the signal (shot noise); without it, the legacy fixed exposure stays."""
    from geoloc_ros.sim.render import SensorModel

    cam = PinholeCamera(width=128, height=64)
    pose = (-2.5, -60.0, math.pi / 2)
    dark = Appearance(brightness=0.5, parked_car_density=0.0)
    legacy = GroundRenderer(toy, cam, dark).render(*pose).astype(float)
    exposed = GroundRenderer(toy, cam, dark, sensor=SensorModel(vignetting=0.0)).render(*pose).astype(float)
    assert exposed.mean() > 1.3 * legacy.mean()
    flat = np.full((64, 128, 3), 120.0, np.float32)
    s = SensorModel(exposure_strength=0.0, exposure_jitter=0.0, vignetting=0.3)
    v = s.apply(flat, np.random.default_rng(0))
    assert v[28:36, 60:68].mean() > 1.2 * v[:6, :6].mean()
    quiet = SensorModel(exposure_strength=0.0, exposure_jitter=0.0, vignetting=0.0)
    lo = quiet.apply(np.full((64, 128, 3), 20.0, np.float32), np.random.default_rng(1)).std()
    hi = quiet.apply(np.full((64, 128, 3), 200.0, np.float32), np.random.default_rng(1)).std()
    assert hi > 2.0 * lo
    assert SensorModel.from_dict(SensorModel().to_dict()) == SensorModel()
    with pytest.raises(InvalidArgument, match="unknown sensor key"):
        SensorModel.from_dict({"iso": 100})


def test_plumb_bob_distortion_round_trips_and_bends_straight_lines():
    cam = PinholeCamera(width=256, height=128, distortion=(-0.28, 0.07, 0.001, -0.001, 0.0))
    x, y = np.meshgrid(np.linspace(-1.0, 1.0, 9), np.linspace(-0.5, 0.5, 5))
    xd, yd = cam.distort(x, y)
    xu, yu = cam.undistort(xd, yd)
    np.testing.assert_allclose(xu, x, atol=1e-9)
    np.testing.assert_allclose(yu, y, atol=1e-9)
    assert abs(xd[0, 0]) < abs(x[0, 0])  # barrel: corners pulled in
    assert PinholeCamera.from_dict(cam.to_dict()) == cam
    with pytest.raises(InvalidArgument, match="plumb_bob"):
        PinholeCamera(distortion=(0.1, 0.0))
