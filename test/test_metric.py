"""geoloc_ros.metric: camera model and ground projection against rendered frames of a toy world,
FFT correlation at a known shift and rotation, heading conventions (REP-103 grid yaw, meridian
convergence), paged aerial windows from a GeoTIFF, the sequence mosaic, and the Localizer driving
a MetricMatcher. Tiny worlds; no mocks: the sim renders what the camera sees."""
from __future__ import annotations

import math

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from geoloc_ros.core.camera import PinholeCamera  # noqa: E402
from geoloc_ros.core.errors import InvalidArgument  # noqa: E402
from geoloc_ros.core.tiles import sample_bilinear  # noqa: E402
from geoloc_ros.metric.aerial import AerialMap  # noqa: E402
from geoloc_ros.metric.bev import BevGrid, CameraModel, GroundProjector  # noqa: E402
from geoloc_ros.metric.config import MetricParams  # noqa: E402
from geoloc_ros.metric.correlate import match_bev  # noqa: E402
from geoloc_ros.metric.features import GradientFeatures  # noqa: E402
from geoloc_ros.metric.matcher import MetricMatcher  # noqa: E402
from geoloc_ros.sim.render import Appearance, GroundRenderer  # noqa: E402
from geoloc_ros.sim.world import make_toy_world  # noqa: E402

# flat light: no shadows, no tint, no haze, no parked cars (the geometry is what is tested)
FLAT_LIGHT = Appearance(sun_elevation_deg=90.0, sun_rgb=(1.0, 1.0, 1.0), haze_m=1e6, parked_car_density=0.0)


def camera_model(cam: PinholeCamera, *, dcx: float = 0.0, dcy: float = 0.0, D=()) -> CameraModel:
    """The sim camera as camera_info publishes it (ROS convention: cx = (W - 1) / 2), mounted at
    the origin of base_link at the camera height, level."""
    K = [cam.fx, 0.0, (cam.width - 1) / 2.0 + dcx, 0.0, cam.fy, (cam.height - 1) / 2.0 + dcy, 0.0, 0.0, 1.0]
    R, t = CameraModel.mount_from_rpy(0.0, 0.0, cam.mount_height_m)
    return CameraModel.from_camera_info(cam.width, cam.height, K, D).with_mount(R, t)


def to_map(pose, X, Y):
    c, s = math.cos(pose[2]), math.sin(pose[2])
    return pose[0] + c * X - s * Y, pose[1] + s * X + c * Y


def to_vehicle(pose, x, y):
    c, s = math.cos(pose[2]), math.sin(pose[2])
    dx, dy = x - pose[0], y - pose[1]
    return c * dx + s * dy, -s * dx + c * dy


def bev_rc(grid: BevGrid, X, Y):
    """Continuous BEV (row, col) of the cell whose centre is vehicle (X, Y)."""
    return (grid.x_max_m - X) / grid.res_m - 0.5, (grid.y_half_m - Y) / grid.res_m - 0.5


def textured_toy_world(size_m=160.0, seed=0, **kw):
    """The toy world with smooth random texture on the ground (albedo = orthophoto), so that a
    BEV has a unique match (the toy road alone repeats every 6 m)."""
    w = make_toy_world(size_m=size_m, **kw)
    rng = np.random.default_rng(seed)
    n = w.albedo.shape[0]
    noise = cv2.GaussianBlur(rng.standard_normal((n, n)).astype(np.float32), (0, 0), 2.5)
    noise *= 45.0 / noise.std()
    alb = np.clip(w.albedo.astype(np.float32) + noise[..., None], 0, 255).astype(np.uint8)
    w.albedo[:] = alb
    w.ortho = alb.copy()
    return w


def write_geotiff(path, rgb, frame, x_left, y_top, res):
    import rasterio
    from rasterio.transform import Affine

    H, W = rgb.shape[:2]
    tf = Affine(res, 0.0, frame.origin_e + x_left, 0.0, -res, frame.origin_n + y_top)
    with rasterio.open(path, "w", driver="GTiff", width=W, height=H, count=3, dtype="uint8", crs=frame.crs,
                       transform=tf) as ds:
        ds.write(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
    return path


def write_world_ortho(world, path):
    m = world.meta
    return write_geotiff(path, world.ortho, world.frame, m.x_min, m.y_max, m.gsd_m)


@pytest.fixture(scope="module")
def tex_world():
    return textured_toy_world()


@pytest.fixture(scope="module")
def tex_aerial(tex_world, tmp_path_factory):
    p = write_world_ortho(tex_world, tmp_path_factory.mktemp("ortho") / "ortho.tif")
    return AerialMap(p, tex_world.frame, 0.5)


# ---- 1. projection geometry ---------------------------------------------------------------------

MARKS_V = [(6.0, 2.0), (10.0, -4.0), (14.0, 5.0), (18.0, -2.0), (24.0, 6.0), (28.0, -6.0)]


@pytest.fixture(scope="module")
def marked_scene():
    """Six 2 x 2 m white squares painted on the ground of the toy world ahead of a camera at a
    known pose (yaw 20 deg, on open ground), rendered with and without them; the squares'
    centres are on the 0.5 m albedo grid, so their true map positions are exact."""
    w = make_toy_world(size_m=160.0)
    pose = (-60.0, -5.0, 0.35)
    cam = PinholeCamera(512, 256, 90.0, 1.8)
    plain = GroundRenderer(w, cam, FLAT_LIGHT, max_range_m=60.0).render(*pose)
    alb0 = w.albedo.copy()
    marks = []
    for X, Y in MARKS_V:
        mx, my = (round(v * 2.0) / 2.0 for v in to_map(pose, X, Y))
        r, c = w.xy_to_rc(mx, my)
        r0, c0 = int(round(float(r))) - 2, int(round(float(c))) - 2
        w.albedo[r0:r0 + 4, c0:c0 + 4] = 250
        marks.append((mx, my))
    marked = GroundRenderer(w, cam, FLAT_LIGHT, max_range_m=60.0).render(*pose)
    return dict(world=w, albedo0=alb0, pose=pose, cam=cam, plain=plain, marked=marked, marks=marks)


def _mark_centroids(diff, grid, pose, marks):
    """Centroid (row, col) of each mark's blob in a difference image, minus where the mark's
    true centre falls in the BEV."""
    out = []
    for mx, my in marks:
        er, ec = bev_rc(grid, *to_vehicle(pose, mx, my))
        r0, c0 = int(round(er)), int(round(ec))
        win = np.clip(diff[r0 - 6:r0 + 7, c0 - 6:c0 + 7], 0, None)
        R, C = np.mgrid[r0 - 6:r0 + 7, c0 - 6:c0 + 7]
        assert win.sum() > 50, f"mark at ({mx}, {my}) not seen"
        out.append(((win * R).sum() / win.sum() - er, (win * C).sum() / win.sum() - ec))
    return np.array(out)


def test_a_rendered_ground_pattern_lands_in_the_bev_where_the_map_has_it(marked_scene):
    s = marked_scene
    grid = BevGrid(0.5, 3.0, 33.0, 15.0)
    pj = GroundProjector(camera_model(s["cam"]), grid, max_range_m=35.0)
    bev1, valid = pj.project(s["marked"])
    bev0, _ = pj.project(s["plain"])
    assert valid.mean() > 0.6
    err = _mark_centroids(bev1.mean(axis=2) - bev0.mean(axis=2), grid, s["pose"], s["marks"])
    assert np.abs(err).max() < 1.0, err  # within 1 px at 0.5 m, out to 28 m ahead
    assert np.hypot(*err.T).mean() < 0.5, err
    # the reference itself: the albedo sampled at the BEV cell centres puts the marks there too
    X, Y = grid.centres()
    rr, cc = s["world"].xy_to_rc(*to_map(s["pose"], X, Y))
    ref = (sample_bilinear(s["world"].albedo, rr, cc) - sample_bilinear(s["albedo0"], rr, cc)).mean(axis=2)
    assert np.abs(_mark_centroids(ref, grid, s["pose"], s["marks"])).max() < 0.5
    # and the whole BEV equals the map under it (flat light: the renderer keeps the albedo)
    bev_grey, ref_grey = bev1.mean(axis=2), sample_bilinear(s["world"].albedo, rr, cc).mean(axis=2)
    near = valid & (X < 15.0)
    assert np.median(np.abs(bev_grey - ref_grey)[near]) < 4.0


def test_the_projection_test_can_fail_half_a_pixel_of_principal_point(marked_scene):
    """The same check with cy = H / 2 (pixel-edge convention, half a pixel off): the far marks
    move by more than a BEV cell. The geometry test above resolves the convention."""
    s = marked_scene
    grid = BevGrid(0.5, 3.0, 33.0, 15.0)
    pj = GroundProjector(camera_model(s["cam"], dcy=0.5), grid, max_range_m=35.0)
    d = pj.project(s["marked"])[0].mean(axis=2) - pj.project(s["plain"])[0].mean(axis=2)
    err = _mark_centroids(d, grid, s["pose"], s["marks"])
    assert np.abs(err[:, 0]).max() > 1.0, err


# ---- 2. CameraModel -----------------------------------------------------------------------------

def _hand_project(P, fx, fy, cx, cy, mount_xyz, pitch, D=None):
    """Pinhole + plumb_bob by hand for a camera at mount_xyz pitched down by ``pitch``."""
    X, Y, Z = (np.asarray(P, float) - np.asarray(mount_xyz, float)).T
    c, s = math.cos(pitch), math.sin(pitch)
    # camera_link: R_base_link = Ry(pitch); optical: z = link x, x = -link y, y = -link z
    lx, ly, lz = c * X - s * Z, Y, s * X + c * Z
    xn, yn = -ly / lx, -lz / lx
    if D is not None:
        k1, k2, p1, p2, k3 = D
        r2 = xn * xn + yn * yn
        radial = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 ** 3
        xn, yn = (xn * radial + 2 * p1 * xn * yn + p2 * (r2 + 2 * xn * xn),
                  yn * radial + p1 * (r2 + 2 * yn * yn) + 2 * p2 * xn * yn)
    return np.stack([fx * xn + cx, fy * yn + cy], axis=1)


@pytest.mark.parametrize("D", [None, (-0.28, 0.09, 0.001, -0.0015, -0.012)])
def test_camera_model_projects_like_a_hand_computation(D):
    fx, fy, cx, cy = 410.0, 405.0, 319.5, 241.0
    mount = (1.2, 0.3, 1.55)
    pitch = math.radians(4.0)
    R, t = CameraModel.mount_from_rpy(*mount, pitch=pitch)
    K = [fx, 0, cx, 0, fy, cy, 0, 0, 1]
    cm = CameraModel.from_camera_info(640, 480, K, () if D is None else D).with_mount(R, t)
    P = np.array([[10.0, 0.0, 0.0], [6.0, 2.5, 0.0], [25.0, -4.0, 0.0], [8.0, -1.0, 1.0], [3.0, 1.0, 0.2]])
    uv, front = cm.project(P)
    assert front.all()
    np.testing.assert_allclose(uv, _hand_project(P, fx, fy, cx, cy, mount, pitch, D), atol=1e-6)
    # a point on the optical axis lands on the principal point, in the ROS convention
    ahead = np.array([[mount[0] + 20.0 * math.cos(pitch), mount[1], mount[2] - 20.0 * math.sin(pitch)]])
    np.testing.assert_allclose(cm.project(ahead)[0], [[cx, cy]], atol=1e-6)
    # left of the car is left in the image, behind the camera is not projected
    uv2, front2 = cm.project(np.array([[10.0, 3.0, 0.0], [10.0, -3.0, 0.0], [-5.0, 0.0, 0.0]]))
    assert uv2[0, 0] < cx < uv2[1, 0]
    assert not front2[2] and np.isnan(uv2[2]).all()


def test_a_distorted_frame_projects_to_the_same_bev_through_its_plumb_bob_model(tex_world):
    """The rendered (pinhole) frame, distorted with a plumb_bob D the way a real lens would,
    projected with K and D gives the BEV of the undistorted frame; ignoring D does not."""
    cam = PinholeCamera(256, 128, 90.0, 1.8)
    img = GroundRenderer(tex_world, cam, FLAT_LIGHT, max_range_m=60.0).render(-40.0, -1.75, 0.1)
    D = (-0.12, 0.02, 0.0008, -0.0005, 0.0)
    pin, dist = camera_model(cam), camera_model(cam, D=D)
    # distorted pixel -> the undistorted pixel it shows (cv2.undistortPoints, P = K), then resample
    v, u = np.mgrid[0:cam.height, 0:cam.width].astype(np.float32)
    pts = np.stack([u.ravel(), v.ravel()], 1).reshape(-1, 1, 2)
    und = cv2.undistortPoints(pts, pin.Kmat, np.asarray(D), P=pin.Kmat).reshape(cam.height, cam.width, 2)
    distorted = cv2.remap(img, und[..., 0].astype(np.float32), und[..., 1].astype(np.float32), cv2.INTER_LINEAR)
    grid = BevGrid(0.5, 3.0, 25.0, 12.0)
    ref, vr = GroundProjector(pin, grid, max_range_m=30.0).project(img)
    got, vg = GroundProjector(dist, grid, max_range_m=30.0).project(distorted)
    naive, vn = GroundProjector(pin, grid, max_range_m=30.0).project(distorted)
    both = vr & vg & vn
    assert both.sum() > 0.5 * vr.sum()
    err = np.abs(got - ref).mean(axis=2)[both]
    err_naive = np.abs(naive - ref).mean(axis=2)[both]
    # measured 0.74 and 2.8 grey levels
    assert np.median(err) < 2.0 and np.median(err_naive) > 2.5 * np.median(err), \
        (np.median(err), np.median(err_naive))


def test_pitched_moves_the_horizon_the_right_way():
    cam = PinholeCamera(256, 128, 90.0, 1.8)
    cm = camera_model(cam)
    far = np.array([[1e5, 0.0, 0.0]])  # the road plane's horizon straight ahead
    v0 = cm.project(far)[0][0, 1]
    assert v0 == pytest.approx(cm.Kmat[1, 2], abs=0.01)
    d = math.radians(2.0)
    up = cm.pitched(d)  # the road ahead rises: the camera sees it as if pitched down
    v_up = up.project(far)[0][0, 1]
    assert v_up == pytest.approx(v0 - cam.fy * math.tan(d), abs=0.05)  # horizon moves up the image
    v_down = cm.pitched(-d).project(far)[0][0, 1]
    assert v_down == pytest.approx(v0 + cam.fy * math.tan(d), abs=0.05)
    assert cm.pitched(0.0) is cm
    # on a rising road a ground cell 15 m ahead is higher, so it appears higher in the image
    # (smaller v); a falling road, lower
    P = np.array([[15.0, 0.0, 0.0]])
    assert up.project(P)[0][0, 1] < cm.project(P)[0][0, 1] < cm.pitched(-d).project(P)[0][0, 1]
    # a mounting with pitch > 0 looks down: the horizon is above the principal point
    R, t = CameraModel.mount_from_rpy(0.0, 0.0, 1.8, pitch=d)
    assert cm.with_mount(R, t).project(far)[0][0, 1] < cm.Kmat[1, 2]


@pytest.mark.parametrize("kw", [
    dict(K=[0, 0, 10, 0, 100, 10, 0, 0, 1]),
    dict(K=[100, 0, 10, 0, -100, 10, 0, 0, 1]),
    dict(K=[100, 0, 10, 0, 100, 10, 0, 0]),
    dict(K=[100, 0, float("nan"), 0, 100, 10, 0, 0, 1]),
    dict(D=[0.1, 0.0, 0.0]),
    dict(D=[0.1, float("inf"), 0.0, 0.0, 0.0]),
    dict(width=4),
    dict(K=[100, 0, 0, 0, 100, 0, 31.5, 23.5, 1]),  # column-major (transposed) K
    dict(K=[100, 0, 31.5, 0, 100, 23.5, 0, 0, 0]),
])
def test_camera_model_refuses_invalid_intrinsics(kw):
    args = dict(width=64, height=48, K=[100, 0, 31.5, 0, 100, 23.5, 0, 0, 1], D=())
    args.update(kw)
    with pytest.raises(InvalidArgument):
        CameraModel.from_camera_info(args["width"], args["height"], args["K"], args["D"])


def test_camera_model_refuses_invalid_mounting():
    cm = CameraModel.from_camera_info(64, 48, [100, 0, 31.5, 0, 100, 23.5, 0, 0, 1])
    with pytest.raises(InvalidArgument, match="orthonormal"):
        cm.with_mount(2.0 * np.eye(3), (0, 0, 1.5))
    with pytest.raises(InvalidArgument, match="not finite"):
        cm.with_mount(np.eye(3), (0, float("nan"), 1.5))
    # a reflection is orthonormal but not a rotation: a left-handed optical frame would mirror the BEV
    R, t = CameraModel.mount_from_rpy(0.0, 0.0, 1.5)
    with pytest.raises(InvalidArgument, match="rotation"):
        cm.with_mount(R @ np.diag([-1.0, 1.0, 1.0]), t)
    from geoloc_ros.metric.bev import quat_to_matrix

    with pytest.raises(InvalidArgument):
        quat_to_matrix((0, 0, 0, 0))
    # a quaternion mounting equals the rpy one
    q = (math.sin(0.05) * 0, math.sin(0.05), 0.0, math.cos(0.05))  # pitch 0.1 rad about y
    from geoloc_ros.metric.bev import rpy_to_matrix

    np.testing.assert_allclose(quat_to_matrix(q), rpy_to_matrix(0.0, 0.1, 0.0), atol=1e-12)


# ---- 3. correlation at a known shift and rotation -------------------------------------------------

def _smooth_texture(n, seed, sigma=2.0):
    rng = np.random.default_rng(seed)
    g = cv2.GaussianBlur(rng.standard_normal((n, n)).astype(np.float32), (0, 0), sigma)
    g = 128 + 50 * g / g.std()
    return np.clip(np.repeat(g[..., None], 3, axis=2), 0, 255).astype(np.uint8)


def _bev_from_aerial(rgb, x_left, y_top, res, grid, pose):
    """What a BEV at ``pose`` sees of a north-up raster: the raster sampled at the BEV cell
    centres rotated into the map frame."""
    X, Y = grid.centres()
    mx, my = to_map(pose, X, Y)
    rr, cc = (y_top - my) / res, (mx - x_left) / res
    bev = sample_bilinear(rgb, rr, cc)
    valid = np.ones(X.shape, bool)
    return bev, valid, np.hypot(X, Y).astype(np.float32)


@pytest.mark.parametrize("yaw_true", [0.6, math.pi / 2 + 0.05, -2.9])
def test_match_bev_finds_a_known_shift_and_rotation(yaw_true):
    res = 0.5
    rgb = _smooth_texture(200, 1)
    x_left, y_top = 100.0, 50.0  # the window's corner in the map frame
    grid = BevGrid(res, 3.0, 21.0, 8.0)
    pose = (x_left + 47.3, y_top - 52.1, yaw_true)
    fx = GradientFeatures()
    bev, valid, rng = _bev_from_aerial(rgb, x_left, y_top, res, grid, pose)
    feats, weight = fx.bev(bev, valid, rng)
    step = math.radians(1.0)
    yaw_prior = yaw_true - 2.3 * step  # the truth lies between grid headings: 2.3 steps from the prior
    yaws = yaw_prior + step * np.arange(-6, 7)
    vol = match_bev(feats, weight, grid, yaws, fx.aerial(rgb), None, x_left, y_top,
                    rotate_channels=fx.rotate_channels)
    assert vol.scores.shape == (13, len(vol.ys), len(vol.xs))
    assert np.all(np.diff(vol.xs) > 0) and np.all(np.diff(vol.ys) < 0)
    assert vol.xs[0] < pose[0] < vol.xs[-1] and vol.ys[-1] < pose[1] < vol.ys[0]
    s = np.where(np.isfinite(vol.scores), vol.scores, -9.0)
    k, i, j = np.unravel_index(np.argmax(s), s.shape)
    assert abs(vol.xs[j] - pose[0]) <= res + 1e-9 and abs(vol.ys[i] - pose[1]) <= res + 1e-9, \
        (vol.xs[j] - pose[0], vol.ys[i] - pose[1])
    assert abs(vol.yaws[k] - yaw_true) <= step + 1e-9, math.degrees(vol.yaws[k] - yaw_true)
    assert s[k, i, j] > 0.8
    # the mirrored heading (prior reflected about the truth) is clearly worse
    k_m = int(np.argmin(np.abs(vol.yaws - (2 * yaw_true - vol.yaws[k]))))
    if k_m != k:
        assert s[k_m].max() < s[k, i, j]
    # gradient channels turned the wrong way (mirrored heading: off by 2 yaw) do not match
    bad = match_bev(feats, weight, grid, yaws, fx.aerial(rgb), None, x_left, y_top,
                    rotate_channels=lambda f, yaw: fx.rotate_channels(f, -yaw))
    drop = 0.15 * (1 - math.cos(2 * yaw_true))  # measured drops 0.56, 0.43, 0.12 for the three headings
    assert np.nanmax(bad.scores) < s[k, i, j] - drop, (np.nanmax(bad.scores), s[k, i, j])


def test_match_bev_overlap_and_nan_outside_valid_imagery():
    res = 0.5
    rgb = _smooth_texture(160, 2)
    valid = np.ones((160, 160), bool)
    valid[:, 100:] = False  # no imagery east of x_left + 50 m
    x_left, y_top = 0.0, 0.0
    grid = BevGrid(res, 3.0, 21.0, 8.0)
    pose = (30.25, -40.25, 0.0)  # facing east, towards the hole (on a cell centre of the volume)
    fx = GradientFeatures()
    bev, v, rng = _bev_from_aerial(rgb, x_left, y_top, res, grid, pose)
    feats, weight = fx.bev(bev, v, rng)
    yaws = np.radians([-1.0, 0.0, 1.0])
    vol = match_bev(feats, weight, grid, yaws, fx.aerial(rgb), valid, x_left, y_top,
                    rotate_channels=fx.rotate_channels, min_overlap=0.6)
    assert vol.overlap.min() >= -1e-3 and vol.overlap.max() <= 1.0 + 1e-3
    X = np.broadcast_to(vol.xs[None, None, :], vol.scores.shape)
    nan = ~np.isfinite(vol.scores)
    assert nan.any() and (~nan).any()
    np.testing.assert_array_equal(nan, vol.overlap < 0.6)
    # far east (the BEV entirely on the hole): unscored; far west: scored
    assert nan[X > 50.0 - 3.0].all() and not nan[X < 20.0].any()
    s = np.where(nan, -9.0, vol.scores)
    k, i, j = np.unravel_index(np.argmax(s), s.shape)
    assert abs(vol.xs[j] - pose[0]) <= res and abs(vol.ys[i] - pose[1]) <= res
    assert abs(vol.yaws[k]) <= math.radians(1.0) + 1e-9


def test_a_bev_partly_over_missing_imagery_scores_on_the_part_that_has_imagery():
    """An exact cut of the aerial whose far part lies over missing imagery: at the true pose the
    cosine over the imaged part is 1, whatever the overlap (normalising the BEV over all of its
    cells instead caps it at sqrt(overlap) and biases the peak away from coverage edges)."""
    res = 0.5
    rgb = _smooth_texture(160, 2)
    valid = np.ones((160, 160), bool)
    valid[:, 100:] = False  # imagery ends at x = 50 m
    grid = BevGrid(res, 3.0, 21.0, 8.0)
    fx = GradientFeatures()
    for ahead, ov in [(16.0, 0.77), (12.0, 0.57), (8.0, 0.33)]:
        pose = (50.0 - ahead + 0.25, -40.25, 0.0)
        bev, v, rng = _bev_from_aerial(rgb, 0.0, 0.0, res, grid, pose)
        feats, weight = fx.bev(bev, v, rng)
        vol = match_bev(feats, weight, grid, [0.0], fx.aerial(rgb), valid, 0.0, 0.0,
                        rotate_channels=fx.rotate_channels, min_overlap=0.2)
        i, j = int(np.argmin(np.abs(vol.ys - pose[1]))), int(np.argmin(np.abs(vol.xs - pose[0])))
        assert vol.overlap[0, i, j] == pytest.approx(ov, abs=0.02)
        assert vol.scores[0, i, j] > 0.93, (ahead, vol.scores[0, i, j])  # was 0.87, 0.73, 0.57
        assert np.nanargmax(vol.scores[0]) == i * len(vol.xs) + j


def test_a_rendered_bev_near_the_end_of_the_imagery_peaks_at_the_truth(tex_world, tmp_path):
    """The orthophoto ends 13-15 m ahead of the car (about half of the BEV's weight on imagery):
    the peak stays on the true cell (before the fix above it slid 0.5 m back, and 7 m back at
    10 m from the edge)."""
    w = tex_world
    c0 = int((-20.0 - w.meta.x_min) / 0.5)
    aerial = AerialMap(write_geotiff(tmp_path / "cut.tif", w.ortho[:, :c0], w.frame, w.meta.x_min, w.meta.y_max, 0.5),
                       w.frame, 0.5)
    cam = PinholeCamera(256, 128, 90.0, 1.8)
    m = _matcher_at(w, aerial, cam, metric_seq_len=1, metric_min_overlap=0.2)
    for ahead in (15.25, 14.25, 13.25):
        truth = (-20.0 - ahead, -1.75, 0.0)
        m.clear()
        m.add_keyframe(0.0, GroundRenderer(w, cam, FLAT_LIGHT, max_range_m=60.0).render(*truth), truth)
        v = m.match(truth[0] + 2.0, truth[1] + 1.0, 0.0, 3.0, math.radians(1.0)).volume
        s = np.where(np.isfinite(v.scores), v.scores, -9.0)
        k, i, j = np.unravel_index(np.argmax(s), s.shape)
        assert abs(v.xs[j] - truth[0]) < 0.1 and abs(v.ys[i] - truth[1]) < 0.1, (ahead, v.xs[j] - truth[0])


# ---- 4. heading conventions -----------------------------------------------------------------------

def test_rotate_channels_turns_gradients_into_the_map_frame():
    """A BEV whose brightness grows to the vehicle's left (+Y): its gradient points left. Facing
    east (yaw 0) left is north: on the north-up canvas d/drow < 0 (rows go south). Facing north
    (yaw pi/2) left is west: d/dcol < 0."""
    fx = GradientFeatures(sigmas=(1.0,))
    grid = BevGrid(0.5, 3.0, 13.0, 5.0)
    _, Y = grid.centres()
    f = fx._grad((100.0 + 5.0 * Y).astype(np.float32))[4:-4, 4:-4]
    assert (f[..., 0] < 0).all() and np.allclose(f[..., 1], 0.0, atol=1e-4)  # brighter towards column 0
    east = fx.rotate_channels(f, 0.0)
    assert (east[..., 1] < 0).all() and np.allclose(east[..., 0], 0.0, atol=1e-4)
    north = fx.rotate_channels(f, math.pi / 2)
    assert (north[..., 0] < 0).all() and np.allclose(north[..., 1], 0.0, atol=1e-4)
    south = fx.rotate_channels(f, -math.pi / 2)
    assert (south[..., 0] > 0).all()
    # a rotation keeps the gradient's length
    np.testing.assert_allclose(np.hypot(north[..., 0], north[..., 1]), np.hypot(f[..., 0], f[..., 1]), rtol=1e-5)


def test_a_vehicle_facing_north_sees_map_plus_y_as_bev_up(marked_scene):
    """Rendered at yaw = pi/2 (REP-103: north), a mark 20 m north of the car is straight up the
    BEV and a mark to the west is on the BEV's left."""
    s = marked_scene
    w = s["world"]
    pose = (-50.0, -40.0, math.pi / 2)
    grid = BevGrid(0.5, 3.0, 33.0, 15.0)
    cam = s["cam"]
    pj = GroundProjector(camera_model(cam), grid, max_range_m=35.0)
    alb = w.albedo.copy()
    try:
        marks = [(pose[0], pose[1] + 20.0), (pose[0] - 6.0, pose[1] + 12.0)]
        plain = GroundRenderer(w, cam, FLAT_LIGHT, max_range_m=60.0).render(*pose)
        for mx, my in marks:
            r, c = w.xy_to_rc(mx, my)
            r0, c0 = int(round(float(r))) - 2, int(round(float(c))) - 2
            w.albedo[r0:r0 + 4, c0:c0 + 4] = 250
        marked = GroundRenderer(w, cam, FLAT_LIGHT, max_range_m=60.0).render(*pose)
    finally:
        w.albedo[:] = alb
    d = pj.project(marked)[0].mean(axis=2) - pj.project(plain)[0].mean(axis=2)
    centre_col = grid.shape[1] / 2.0 - 0.5
    r20, c20 = bev_rc(grid, 20.0, 0.0)
    r12, cleft = bev_rc(grid, 12.0, 6.0)
    assert cleft < centre_col - 10  # (the expectation: west is the vehicle's left, Y = +6)
    err = _mark_centroids(d, grid, pose, marks)
    assert np.abs(err).max() < 1.0, err
    rows, cols = np.nonzero(d > 60)
    assert ((np.abs(rows - r20) < 3) & (np.abs(cols - c20) < 3)).any()
    assert ((np.abs(rows - r12) < 3) & (np.abs(cols - cleft) < 3)).any()


def _matcher_at(world, aerial, cam, **params):
    p = MetricParams(**{"metric_bev_x_max_m": 25.0, "metric_bev_y_half_m": 12.0, "metric_max_range_m": 30.0,
                        **params})
    return MetricMatcher(aerial, GradientFeatures(), p, camera_model(cam))


@pytest.mark.parametrize("lat,lon", [(44.4759, -73.2121), (62.0, -72.05)])
def test_the_camera_volume_is_in_grid_yaw_whatever_the_meridian_convergence(lat, lon, tmp_path):
    """At 62 N, 2.95 deg east of the UTM zone's central meridian, grid north is 2.6 deg off true
    north. The renderer, the orthophoto and the filter all live in the map frame (UTM grid axes):
    the volume's peak is at the true *grid* yaw, unshifted by the convergence, and not mirrored."""
    w = textured_toy_world(size_m=120.0, seed=3, lat=lat, lon=lon)
    conv = w.frame.grid_convergence_deg(0.0, 0.0)
    if lon > -72.5:
        assert abs(conv) > 2.0  # the case this test is about
    aerial = AerialMap(write_world_ortho(w, tmp_path / "o.tif"), w.frame, 0.5)
    cam = PinholeCamera(256, 128, 90.0, 1.8)
    m = _matcher_at(w, aerial, cam, metric_seq_len=1, metric_yaw_step_deg=0.5, metric_yaw_min_deg=5.0,
                    metric_window_min_m=4.0)
    truth = (-11.75, -19.75, math.radians(63.0))  # on a cell centre of the volume's grid
    img = GroundRenderer(w, cam, FLAT_LIGHT, max_range_m=60.0).render(*truth)
    m.add_keyframe(0.0, img, truth[:3])
    # the prior heading is off by +1.5 deg: the truth, the mirror (+3 deg) and truth +- convergence
    # are distinct heading cells
    res = m.match(truth[0] + 1.2, truth[1] - 0.8, truth[2] + math.radians(1.5), 1.0, math.radians(1.0))
    v = res.volume
    s = np.where(np.isfinite(v.scores), v.scores, -9.0)
    k, i, j = np.unravel_index(np.argmax(s), s.shape)
    assert abs(v.xs[j] - truth[0]) <= 0.5 and abs(v.ys[i] - truth[1]) <= 0.5
    assert abs(math.degrees(v.yaws[k] - truth[2])) <= 0.5 + 1e-6, math.degrees(v.yaws[k] - truth[2])


def test_pitch_search_undoes_a_pitch_error_of_the_mounting(tex_world, tex_aerial):
    """The camera is level but camera_info / tf say it looks 1 deg down (or up): the flat-road BEV
    is stretched along the track and the peak slides 1.5 m; with metric_pitch_search_deg = 1 the
    matcher picks the correction that undoes it (pitched(-1 deg) for +1 deg) and the peak is back
    on the truth."""
    cam = PinholeCamera(256, 128, 90.0, 1.8)
    truth = (-30.25, -1.75, 0.0)
    img = GroundRenderer(tex_world, cam, FLAT_LIGHT, max_range_m=60.0).render(*truth)
    for mount_deg in (1.0, -1.0):
        R, t = CameraModel.mount_from_rpy(0.0, 0.0, cam.mount_height_m, pitch=math.radians(mount_deg))
        out = {}
        for search in (0.0, 1.0):
            p = MetricParams(metric_bev_x_max_m=25.0, metric_bev_y_half_m=12.0, metric_max_range_m=30.0,
                             metric_seq_len=1, metric_pitch_search_deg=search)
            m = MetricMatcher(tex_aerial, GradientFeatures(), p, camera_model(cam).with_mount(R, t))
            m.add_keyframe(0.0, img, truth)
            res = m.match(truth[0] + 1.0, truth[1] + 0.5, 0.0, 2.0, math.radians(1.0))
            v = res.volume
            s = np.where(np.isfinite(v.scores), v.scores, -9.0)
            k, i, j = np.unravel_index(np.argmax(s), s.shape)
            out[search] = (res.pitch_deg, float(s.max()), v.xs[j] - truth[0], v.ys[i] - truth[1])
        assert out[0.0][0] == 0.0 and abs(out[0.0][2]) >= 1.0, out  # the wrong pitch costs metres
        assert out[1.0][0] == pytest.approx(-mount_deg), out
        assert abs(out[1.0][2]) < 0.1 and abs(out[1.0][3]) < 0.1 and out[1.0][1] > out[0.0][1] + 0.1, out


# ---- 5. AerialMap -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_geotiff(tmp_path_factory):
    """A 300 x 200 px GeoTIFF at 0.5 m whose corner is on the global grid: raster pixel (r, c)
    is global pixel (R0 + r, C0 + c)."""
    from geoloc_ros.core.geo import LocalFrame

    frame = LocalFrame.at(44.4759, -73.2121)
    rng = np.random.default_rng(7)
    rgb = rng.integers(1, 256, (200, 300, 3)).astype(np.uint8)
    x_left, y_top = -40.0, 30.0  # global pixel C0 = -80, R0 = -60
    p = write_geotiff(tmp_path_factory.mktemp("aerial") / "a.tif", rgb, frame, x_left, y_top, 0.5)
    return dict(path=p, frame=frame, rgb=rgb, R0=-60, C0=-80)


def test_aerial_windows_are_on_the_global_grid_and_equal_a_direct_read(small_geotiff):
    g = small_geotiff
    am = AerialMap(g["path"], g["frame"], 0.5, block_px=32)
    for x, y, half in [(0.1, 0.1, 10), (15.3, -20.7, 25), (-30.0, 20.0, 7), (60.0, -60.0, 12)]:
        w = am.window(x, y, half)
        n = 2 * half + 1
        C, R = math.floor(x / 0.5), math.floor(-y / 0.5)
        assert w.rgb.shape == (n, n, 3) and w.valid.shape == (n, n)
        assert w.x_left == pytest.approx((C - half) * 0.5) and w.y_top == pytest.approx(-(R - half) * 0.5)
        # the centre pixel contains (x, y)
        assert w.x_left + half * 0.5 <= x < w.x_left + (half + 1) * 0.5
        assert w.y_top - (half + 1) * 0.5 < y <= w.y_top - half * 0.5
        r = np.arange(n) + R - half - g["R0"]
        c = np.arange(n) + C - half - g["C0"]
        rin = (r >= 0) & (r < g["rgb"].shape[0])
        cin = (c >= 0) & (c < g["rgb"].shape[1])
        inside = rin[:, None] & cin[None, :]
        np.testing.assert_array_equal(w.valid, inside)
        direct = g["rgb"][np.clip(r, 0, 199)][:, np.clip(c, 0, 299)]
        np.testing.assert_array_equal(w.rgb[inside], direct[inside])  # spans several 32 px blocks
        assert (w.rgb[~inside] == 0).all()  # outside the raster: invalid and zero, not edge pixels
    # two overlapping windows agree to the bit where they overlap
    a, b = am.window(3.2, -4.4, 20), am.window(7.9, 1.1, 20)
    dc, dr = round((b.x_left - a.x_left) / 0.5), round((a.y_top - b.y_top) / 0.5)
    assert dc == 9 and dr == -11  # b starts 9 columns east and 11 rows north of a
    np.testing.assert_array_equal(a.rgb[:41 + dr, dc:], b.rgb[-dr:, :41 - dc])
    assert am.covers(0.0, 0.0) and not am.covers(200.0, 0.0)
    with pytest.raises(InvalidArgument):
        am.window(float("nan"), 0.0, 3)


def test_aerial_blocks_are_paged_lru_under_the_memory_budget(small_geotiff):
    g = small_geotiff
    block_bytes = 32 * 32 * 4  # rgb + valid
    am = AerialMap(g["path"], g["frame"], 0.5, block_px=32, memory_budget_mb=3.5 * block_bytes / 1e6)
    # four single-block windows, one block each (blocks (row, col) of the global grid)
    centres = [(1.0 + 16.0 * k, -1.0) for k in range(4)]
    first = am.window(*centres[0], 0).rgb.copy()
    for c in centres[1:]:
        am.window(*c, 0)
    assert am.block_reads == 4
    assert len(am._blocks) == 3 and am.cached_mb * 1e6 <= 3.5 * block_bytes  # the oldest was evicted
    am.window(*centres[3], 0)  # most recent: cached
    assert am.block_reads == 4
    again = am.window(*centres[0], 0).rgb  # evicted: read again, same pixels
    assert am.block_reads == 5
    np.testing.assert_array_equal(again, first)
    am.window(*centres[2], 0)  # still cached (LRU order 2, 3, 0 -> 1 was evicted)
    assert am.block_reads == 5
    am.window(*centres[1], 0)
    assert am.block_reads == 6
    # a window larger than the budget is still assembled correctly
    big = am.window(20.0, -20.0, 40)
    ref = AerialMap(g["path"], g["frame"], 0.5, block_px=256).window(20.0, -20.0, 40)
    np.testing.assert_array_equal(big.rgb, ref.rgb)
    np.testing.assert_array_equal(big.valid, ref.valid)
    assert am.cached_mb * 1e6 <= 3.5 * block_bytes


# ---- 8. the sequence mosaic -----------------------------------------------------------------------

def _two_keyframes(world, cam, dist=5.0, dyaw=0.08):
    a = (-45.0, -22.0, 0.15)
    b = (a[0] + dist * math.cos(a[2] + dyaw / 2), a[1] + dist * math.sin(a[2] + dyaw / 2), a[2] + dyaw)
    r = GroundRenderer(world, cam, FLAT_LIGHT, max_range_m=60.0)
    return a, b, r.render(*a), r.render(*b)


def test_the_mosaic_of_two_keyframes_agrees_with_the_newer_view(tex_world, tex_aerial):
    cam = PinholeCamera(256, 128, 90.0, 1.8)
    a, b, img_a, img_b = _two_keyframes(tex_world, cam)
    odom = lambda p: (p[0] + 1000.0, p[1] - 500.0, p[2])  # noqa: E731  (odometry lives in its own frame...)
    # ... rotated too: the odom frame is the map frame turned by 40 deg about a far point
    th = math.radians(40.0)

    def odom_rot(p):
        x, y, yaw = odom(p)
        return (math.cos(th) * x - math.sin(th) * y, math.sin(th) * x + math.cos(th) * y, yaw + th)

    def mosaic_error(pose_a):
        m = _matcher_at(tex_world, tex_aerial, cam, metric_seq_len=2, metric_fusion="mean")
        m.add_keyframe(0.0, img_a, odom_rot(pose_a))
        m.add_keyframe(0.5, img_b, odom_rot(b))
        rgb, valid, _, gm, n = m.mosaic()
        assert n == 2
        single = _matcher_at(tex_world, tex_aerial, cam, metric_seq_len=1)
        single.add_keyframe(0.5, img_b, odom_rot(b))
        rgb1, valid1, _, g1, _ = single.mosaic()
        assert gm.x_max_m == g1.x_max_m and gm.x_min_m < g1.x_min_m and gm.y_half_m == g1.y_half_m
        # rows of the mosaic that the single grid also covers
        rows = gm.shape[0] - g1.shape[0]
        mo, mv = rgb[:g1.shape[0]].mean(axis=2), valid[:g1.shape[0]]
        # where view A contributed too: the mean mosaic is (A' + B) / 2, so A' = 2 mosaic - B
        both = mv & valid1
        a_warped = 2.0 * mo - rgb1.mean(axis=2)
        assert both.sum() > 300 and rows > 0
        return float(np.median(np.abs(a_warped - rgb1.mean(axis=2))[both]))

    good = mosaic_error(a)
    wrong = mosaic_error((a[0] - 1.0, a[1] + 0.5, a[2]))  # odometry off by 1.1 m
    assert good < 2.0 and wrong > 3.0 * good, (good, wrong)  # measured 0.8 and 4.7 grey levels


def test_metric_fusions_all_run_and_give_the_same_volume_shape(tex_world, tex_aerial):
    cam = PinholeCamera(256, 128, 90.0, 1.8)
    a, b, img_a, img_b = _two_keyframes(tex_world, cam)
    shapes, peaks = {}, {}
    for fusion in ("single", "mean", "attention"):
        m = _matcher_at(tex_world, tex_aerial, cam, metric_seq_len=3, metric_fusion=fusion)
        m.add_keyframe(0.0, img_a, a)
        m.add_keyframe(0.5, img_b, b)
        res = m.match(b[0] + 1.0, b[1] - 1.0, b[2], 2.0, math.radians(1.0))
        assert res.views == (1 if fusion == "single" else 2)
        assert res.mosaic.shape[:2] == res.weight.shape == res.grid.shape
        shapes[fusion] = res.volume.scores.shape
        s = np.where(np.isfinite(res.volume.scores), res.volume.scores, -9.0)
        k, i, j = np.unravel_index(np.argmax(s), s.shape)
        peaks[fusion] = (res.volume.xs[j] - b[0], res.volume.ys[i] - b[1])
    assert len(set(shapes.values())) == 1, shapes
    for f, (dx, dy) in peaks.items():
        assert math.hypot(dx, dy) <= 0.75, (f, dx, dy)
    # without odometry the sequence restarts at each keyframe
    m = _matcher_at(tex_world, tex_aerial, cam, metric_seq_len=3)
    m.add_keyframe(0.0, img_a, a)
    m.add_keyframe(0.5, img_b, None)
    assert len(m.views) == 1
    with pytest.raises(InvalidArgument, match="no camera model"):
        MetricMatcher(tex_aerial, GradientFeatures(), MetricParams()).add_keyframe(0.0, img_a, a)
    with pytest.raises(InvalidArgument, match="resolution"):
        MetricMatcher(tex_aerial, GradientFeatures(), MetricParams(metric_res_m=0.25))


# ---- 7. the Localizer with a MetricMatcher ------------------------------------------------------

def _drive(loc, world, cam, *, t_end=10.5, bias=(2.1, -2.1), with_images=True, image_every_s=0.5, t_start=0.0,
           image=None, fix_sigma=3.0):
    """Drive east along the toy road's right lane at 10 m/s: exact odometry (20 Hz, in its own
    rotated frame), GNSS at 5 Hz with a constant ``bias`` (3 m) and a reported sigma of 3 m,
    rendered frames every ``image_every_s`` (or ``image``). Returns [(t, truth, estimate)] at keyframes.
    ``fix_sigma``: the reported sigma (m)."""
    rend = GroundRenderer(world, cam, FLAT_LIGHT, max_range_m=60.0)
    fr = world.frame
    th = math.radians(-30.0)
    out = []
    for k in range(int(round(t_start * 20)), int(round(t_end * 20)) + 1):
        t = k / 20.0
        truth = (-60.0 + 10.0 * t, -1.75, 0.0)
        xo = 300.0 + math.cos(th) * truth[0] - math.sin(th) * truth[1]
        yo = math.sin(th) * truth[0] + math.cos(th) * truth[1]
        loc.on_odom(t, xo, yo, truth[2] + th, 10.0, 0.0)
        if k % 4 == 0:
            lat, lon = fr.to_latlon(truth[0] + bias[0], truth[1] + bias[1])
            loc.on_fix(t, float(lat), float(lon), np.eye(2) * fix_sigma ** 2, True)
        if with_images and k % int(round(image_every_s * 20)) == 0 and k > 0:
            est = loc.on_image(t, rend.render(*truth) if image is None else image)
            if est is not None:
                out.append((t, truth, est))
    return out


def _localizer(world, aerial, cam, matcher_camera=True, **cfg):
    from geoloc_ros.pipeline import Localizer, LocalizerConfig

    m = _matcher_at(world, aerial, cam, metric_seq_len=2)
    if not matcher_camera:
        m = MetricMatcher(aerial, GradientFeatures(), m.p)
    c = LocalizerConfig(**{"keyframe_spacing_m": 5.0, "num_particles": 1000, **cfg})
    return Localizer(None, None, c, matcher=m)


def test_localizer_with_metric_matching_beats_a_biased_gnss(tex_world, tex_aerial):
    cam = PinholeCamera(256, 128, 90.0, 1.8)
    loc = _localizer(tex_world, tex_aerial, cam)
    assert loc.metric_matching and loc.frame == tex_world.frame
    rows = _drive(loc, tex_world, cam)
    st = loc.stats()
    assert st["matches_used"] >= 5, st
    errs = np.array([math.hypot(e.x - tr[0], e.y - tr[1]) for _, tr, e in rows])
    used = [e.match_used for _, _, e in rows]
    assert errs[-4:].max() < 1.0 and errs[-4:].mean() < 0.6, (errs, used, st)  # GNSS is 3 m off
    last = rows[-1][2]
    assert last.metric is not None and last.camera_peak is not None
    px, py, pyaw = last.camera_peak
    assert math.hypot(px - rows[-1][1][0], py - rows[-1][1][1]) < 1.0 and abs(pyaw) < math.radians(1.5)
    # Estimate.heading_deg is the true (compass) heading: grid yaw plus the meridian convergence
    from geoloc_ros.core.geo import yaw_to_heading_deg

    conv = tex_world.frame.grid_convergence_deg(last.x, last.y)
    assert last.heading_deg == pytest.approx((yaw_to_heading_deg(last.yaw) + conv) % 360.0, abs=0.05)
    # the same drive without the camera stays at the GNSS bias
    from geoloc_ros.pipeline import Localizer, LocalizerConfig

    base = Localizer(None, None, LocalizerConfig(use_camera=False, keyframe_spacing_m=5.0, num_particles=1000),
                     frame=tex_world.frame)
    brows = _drive(base, tex_world, cam, with_images=False)
    bt, btruth = 10.5, (-60.0 + 105.0, -1.75)
    be = base.estimate(bt)
    assert math.hypot(be.x - btruth[0], be.y - btruth[1]) > 2.0 > errs[-1]
    assert brows == []


def test_a_receiver_that_lies_about_its_bias_gets_a_covariance_that_covers_the_camera(tex_world, tex_aerial):
    """GNSS 6 m off claiming 0.5 m: the filter cannot be moved by the camera (its prior rules the truth
    out), the camera keeps seeing the road 6 m away; the published covariance then covers both
    positions, with the reason, instead of claiming half a metre."""
    cam = PinholeCamera(256, 128, 90.0, 1.8)
    rows = _drive(_localizer(tex_world, tex_aerial, cam), tex_world, cam, bias=(6.0, 0.0), fix_sigma=0.5)
    wide = [(tr, e) for _, tr, e in rows if any("disagree" in r for r in e.reasons)]
    assert len(wide) >= 3, [e.reasons for _, _, e in rows]
    for tr, e in wide:
        d = np.array([e.x - tr[0], e.y - tr[1]])
        assert np.hypot(*d) > 3.0  # the estimate itself was not moved ...
        assert d @ np.linalg.solve(np.asarray(e.cov)[:2, :2], d) < 5.99  # ... its claim now covers the truth
        assert np.asarray(e.ortho_cov)[0, 0] > 20.0  # the orthophoto-frame claim widened as well
    narrow = [(tr, e) for _, tr, e in rows if not any("disagree" in r for r in e.reasons) and e.match_used is False]
    d0 = [np.array([e.x - tr[0], e.y - tr[1]]) for tr, e in narrow[:2]]
    assert all(d @ np.linalg.solve(np.asarray(e.cov)[:2, :2], d) > 5.99 for d, (_, e) in zip(d0, narrow[:2]))


def test_localizer_metric_mode_needs_a_matcher_and_a_camera_model(tex_world, tex_aerial):
    from geoloc_ros.pipeline import Localizer, LocalizerConfig

    with pytest.raises(InvalidArgument, match="needs a metric matcher"):
        Localizer(None, None, LocalizerConfig(camera_measurement="metric"), frame=tex_world.frame)
    cam = PinholeCamera(256, 128, 90.0, 1.8)
    loc = _localizer(tex_world, tex_aerial, cam, matcher_camera=False)
    rows = _drive(loc, tex_world, cam, t_end=2.0)
    assert rows and all(e.match_reason.startswith("no camera model") for _, _, e in rows)
    st = loc.stats()
    assert st["match_skipped"] == {"no camera model": len(rows)} and st["matches_attempted"] == 0
    # camera_info arrives; a frame of another size is a counted drop, not a crash
    loc.set_camera(camera_model(cam))
    rows = _drive(loc, tex_world, cam, t_start=2.05, t_end=3.0, image=np.zeros((64, 128, 3), np.uint8))
    assert rows and all(e.match_reason == "image size differs from camera_info" for _, _, e in rows)
    st = loc.stats()
    assert st["drops"] == {"image.size_mismatch": len(rows)} and st["matches_attempted"] == 0, st
    # and the right size is matched
    rows = _drive(loc, tex_world, cam, t_start=3.05, t_end=4.0)
    assert loc.stats()["matches_attempted"] >= 1 and rows[-1][2].metric is not None
