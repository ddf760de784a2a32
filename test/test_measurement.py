"""core.measurement: the camera-measurement interface the filter consumes (PoseVolume for metric
matching, TileSimilarity for retrieval), fed with synthetic volumes into PoseFilter / PoseTracker."""
from __future__ import annotations

import math

import numpy as np
import pytest

from geoloc_ros.core.filter import FilterParams
from geoloc_ros.core.measurement import PoseVolume, TileSimilarity, match_likelihood
from geoloc_ros.core.tracker import PoseTracker


def gauss_volume(cx, cy, cyaw, *, centre=(0.0, 0.0, 0.0), half_m=10.0, res=0.5, yaw_half_deg=6.0,
                 step_deg=1.0, sigma_m=0.5, sigma_yaw_deg=1.0, temperature=1.0):
    """A volume on the matcher's axes (xs ascending, ys descending, yaws ascending) around
    ``centre`` with a Gaussian log-likelihood peak at (cx, cy, cyaw)."""
    xs = centre[0] + np.arange(-half_m, half_m + 1e-9, res)
    ys = centre[1] + np.arange(half_m, -half_m - 1e-9, -res)
    yaws = centre[2] + np.radians(np.arange(-yaw_half_deg, yaw_half_deg + 1e-9, step_deg))
    K, Y, X = np.meshgrid(yaws, ys, xs, indexing="ij")
    dyaw = (K - cyaw + math.pi) % (2 * math.pi) - math.pi
    logl = -0.5 * (((X - cx) ** 2 + (Y - cy) ** 2) / sigma_m ** 2 + (dyaw / math.radians(sigma_yaw_deg)) ** 2)
    return PoseVolume(xs, ys, yaws, logl / temperature)


# ---- PoseVolume on its own ----------------------------------------------------------------------

def test_pose_volume_factor_is_neutral_outside_and_normalised_inside():
    v = gauss_volume(2.0, -3.0, 0.02, sigma_m=1.5, sigma_yaw_deg=3.0)
    v.uniform_floor = 0.05
    # outside in x, in y, in heading: 1 (no information)
    fac = v.factor(np.array([30.0, 0.0, 0.0, 0.0]), np.array([0.0, -30.0, 0.0, 0.0]),
                   np.array([0.0, 0.0, math.radians(40.0), math.radians(-40.0)]))
    np.testing.assert_array_equal(fac, 1.0)
    # at every cell centre the factor is (1 - floor) L / mean(L) + floor: its mean over the cells is 1
    K, Y, X = np.meshgrid(v.yaws, v.ys, v.xs, indexing="ij")
    cells = v.factor(X.ravel(), Y.ravel(), K.ravel())
    assert cells.mean() == pytest.approx(1.0, rel=1e-6)  # (edge cells are read at 1 - 1e-6)
    assert cells.min() >= 0.05 - 1e-12
    L = np.exp(v.logl - v.logl.max())
    np.testing.assert_allclose(cells, 0.95 * (L / L.mean()).ravel() + 0.05, rtol=1e-4)
    # the best cell is the peak
    assert X.ravel()[np.argmax(cells)] == pytest.approx(2.0) and Y.ravel()[np.argmax(cells)] == pytest.approx(-3.0)


def test_pose_volume_factor_is_trilinear_between_cells():
    xs, ys, yaws = np.array([0.0, 1.0]), np.array([1.0, 0.0]), np.array([0.0, 0.1])
    L = np.array([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]])  # [yaw, y(desc), x]
    v = PoseVolume(xs, ys, yaws, np.log(L), uniform_floor=0.0)
    Ln = L / L.mean()
    # a corner, the middle of an x edge, the middle of a y edge, the centre of the cube
    fac = v.factor(np.array([1.0, 0.5, 0.0, 0.5]), np.array([1.0, 1.0, 0.5, 0.5]), np.array([0.0, 0.0, 0.1, 0.05]))
    np.testing.assert_allclose(fac, [Ln[0, 0, 1], (Ln[0, 0, 0] + Ln[0, 0, 1]) / 2, (Ln[1, 0, 0] + Ln[1, 1, 0]) / 2,
                                     Ln.mean()], rtol=1e-5)
    # the heading axis wraps: a particle at yaw + 2 pi reads the same factor
    np.testing.assert_allclose(v.factor(np.array([0.3]), np.array([0.6]), np.array([0.04 + 2 * math.pi])),
                               v.factor(np.array([0.3]), np.array([0.6]), np.array([0.04])), rtol=1e-9)


def test_pose_volume_wraps_heading_across_pi():
    """A volume whose headings straddle +-pi (vehicle facing west) reads particles at -179 deg."""
    v = gauss_volume(0.0, 0.0, math.pi, centre=(0.0, 0.0, math.pi), sigma_yaw_deg=1.0)
    f = v.factor(np.zeros(3), np.zeros(3), np.radians([-179.5, 179.5, 170.0]))
    assert f[0] > 1.0 and f[1] > 1.0 and f[0] == pytest.approx(f[1], rel=1e-6)
    assert f[2] < f[0]


def test_pose_volume_nan_cells_get_the_floor_and_peak_mass_measures_sharpness():
    v = gauss_volume(1.0, 1.0, 0.0, sigma_m=0.4, sigma_yaw_deg=0.7)
    v2 = gauss_volume(1.0, 1.0, 0.0, sigma_m=4.0, sigma_yaw_deg=5.0)
    assert v.peak() == pytest.approx((1.0, 1.0, 0.0))
    sharp, wide = v.mass_near_peak(2.0, math.radians(2.0)), v2.mass_near_peak(2.0, math.radians(2.0))
    assert sharp > 0.99 and wide < 0.3, (sharp, wide)
    assert v.mass_near_peak(100.0, math.pi) == pytest.approx(1.0)
    # unscored (NaN) cells become the lowest score, not NaN factors
    logl = v.logl.copy()
    logl[:, :5, :] = np.nan
    w = PoseVolume(v.xs, v.ys, v.yaws, logl)
    f = w.factor(np.full(2, v.xs[3]), np.array([v.ys[2], v.ys[10]]), np.zeros(2))
    assert np.all(np.isfinite(f)) and f[0] <= f[1]
    with pytest.raises(ValueError, match="does not match its axes"):
        PoseVolume(v.xs, v.ys, v.yaws[:2], v.logl)


def test_pose_volume_gate():
    p = FilterParams(volume_min_peak_mass=0.5)
    ev = gauss_volume(1.0, 1.0, 0.0, sigma_m=0.4).evaluate(p)
    assert ev.ok and ev.reason == "used" and ev.peak == pytest.approx((1.0, 1.0, 0.0))
    ev = gauss_volume(1.0, 1.0, 0.0, sigma_m=6.0, sigma_yaw_deg=10.0).evaluate(p)
    assert not ev.ok and ev.reason == "flat likelihood volume"


# ---- TileSimilarity: the old PoseFilter.grid_factor ---------------------------------------------

def _old_grid_factor(px, py, tile_xy, lik, spacing):
    """PoseFilter.grid_factor as it was before core.measurement (commit a70d888), verbatim but for
    the particle arrays passed in."""
    n = len(px)
    tile_xy = np.asarray(tile_xy, float).reshape(-1, 2)
    lik = np.asarray(lik, float).reshape(-1)
    out = np.ones(n)
    if len(tile_xy) == 0:
        return out
    x0, y0 = tile_xy[:, 0].min(), tile_xy[:, 1].min()
    ti = np.rint((tile_xy[:, 0] - x0) / spacing).astype(np.int64)
    tj = np.rint((tile_xy[:, 1] - y0) / spacing).astype(np.int64)
    nx, ny = int(ti.max()) + 2, int(tj.max()) + 2
    if nx * ny > 4_000_000:
        d2 = (px[:, None] - tile_xy[None, :, 0]) ** 2 + (py[:, None] - tile_xy[None, :, 1]) ** 2
        k = np.argmin(d2, axis=1)
        near = d2[np.arange(n), k] <= spacing * spacing
        out[near] = lik[k[near]]
        return out
    grid = np.ones((nx, ny))
    order = np.argsort(lik)
    grid[ti[order], tj[order]] = lik[order]
    u = (px - x0) / spacing
    v = (py - y0) / spacing
    inside = (u >= -0.5) & (u <= nx - 1.5) & (v >= -0.5) & (v <= ny - 1.5)
    u = np.clip(u[inside], 0.0, nx - 1.000001)
    v = np.clip(v[inside], 0.0, ny - 1.000001)
    i0, j0 = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    fu, fv = u - i0, v - j0
    i1, j1 = np.minimum(i0 + 1, nx - 1), np.minimum(j0 + 1, ny - 1)
    out[inside] = ((1 - fu) * (1 - fv) * grid[i0, j0] + fu * (1 - fv) * grid[i1, j0]
                   + (1 - fu) * fv * grid[i0, j1] + fu * fv * grid[i1, j1])
    return out


def test_tile_similarity_factors_equal_the_old_grid_factor():
    rng = np.random.default_rng(3)
    p = FilterParams()
    g = np.arange(-24.0, 24.01, 4.0)
    X, Y = np.meshgrid(100.0 + g, -50.0 + g)
    xy = np.stack([X.ravel(), Y.ravel()], 1)
    xy = np.concatenate([xy, xy[:20]])  # heading bins: several tiles at one position
    sc = 0.5 + 0.01 * rng.standard_normal(len(xy))
    sc[40] += 0.3
    ts = TileSimilarity(xy, sc, 4.0)
    with pytest.raises(RuntimeError):
        ts.factor(np.zeros(1), np.zeros(1), np.zeros(1))
    ev = ts.evaluate(p)
    ref_ev = match_likelihood(xy, sc, p)
    np.testing.assert_array_equal(ev.lik, ref_ev.lik)
    px = 100.0 + rng.uniform(-35, 35, 3000)
    py = -50.0 + rng.uniform(-35, 35, 3000)
    fac = ts.factor(px, py, rng.uniform(-math.pi, math.pi, 3000))
    np.testing.assert_allclose(fac, _old_grid_factor(px, py, xy, ev.lik, 4.0), rtol=0, atol=1e-12)
    assert (fac == 1.0).any() and (fac != 1.0).any()  # both inside and outside were exercised


# ---- the filter: synthetic volumes through PoseTracker.on_camera ---------------------------------

def tracker(pos_sigma_m, yaw0=0.3, yaw_sigma_deg=1.0, n=2000, floor=0.05):
    """A tracker initialised at (0, 0) by a GNSS fix of sigma ``pos_sigma_m``, heading yaw0."""
    tr = PoseTracker(FilterParams(num_particles=n, seed=5, volume_uniform_floor=floor))
    tr.on_odom(0.0, 0.0, 0.0, 0.0)  # fresh odometry: the reported covariance is the particles' own
    tr.on_fix(0.0, np.zeros(2), np.eye(2) * pos_sigma_m ** 2, True)
    rng = np.random.default_rng(1)
    tr.f.yaw = yaw0 + math.radians(yaw_sigma_deg) * rng.standard_normal(n)
    return tr


def test_a_sharp_correct_volume_moves_the_cloud_to_it_and_shrinks_the_covariance():
    tr = tracker(3.0)
    st0 = tr.state(0.0)
    truth = np.array([2.0, -1.5])
    vol = gauss_volume(2.0, -1.5, 0.3, centre=(float(st0.mean[0]), float(st0.mean[1]), 0.3), sigma_m=0.5)
    ev = tr.on_camera(0.0, vol)
    assert ev.ok and ev.reason == "used"
    st1 = tr.state(0.0)
    e0 = float(np.hypot(*(st0.mean[:2] - truth)))
    e1 = float(np.hypot(*(st1.mean[:2] - truth)))
    assert e1 < 0.5 and e1 < 0.3 * e0, (e0, e1)
    assert st1.pos_std_m < 0.4 * st0.pos_std_m, (st0.pos_std_m, st1.pos_std_m)
    assert tr.counters["matches_used"] == 1


def test_a_flat_volume_leaves_the_estimate_unchanged():
    tr = tracker(3.0)
    st0 = tr.state(0.0)
    x0, y0, w0 = tr.f.x.copy(), tr.f.y.copy(), tr.f.w.copy()
    flat = gauss_volume(0.0, 0.0, 0.3, centre=(0.0, 0.0, 0.3), sigma_m=1e6, sigma_yaw_deg=1e6)
    ev = tr.on_camera(0.0, flat)
    st1 = tr.state(0.0)
    np.testing.assert_allclose(tr.f.w, w0, rtol=1e-9)
    # (the zero odometry increment jitters particles by ~1e-4 m: not the measurement)
    np.testing.assert_allclose(tr.f.x, x0, atol=2e-3)
    np.testing.assert_allclose(tr.f.y, y0, atol=2e-3)
    np.testing.assert_allclose(st1.mean, st0.mean, atol=1e-3)
    np.testing.assert_allclose(st1.cov, st0.cov, rtol=1e-2, atol=1e-6)
    # and the default gate (no peak mass required) does not call it a used fix that moved anything
    assert ev.reason in ("used", "flat likelihood volume")


@pytest.mark.parametrize("offset_m", [3.0, 8.0])
def test_an_inconsistent_peak_outside_a_tight_prior_is_rejected(offset_m):
    """A sharp peak several sigmas away from a tight, credible prior: the measurement contradicts
    the prior; it must be rejected ('inconsistent with the prior') and leave the cloud alone,
    whether the peak sits on the cloud's far tail (3 m) or clear of it (8 m)."""
    tr = tracker(0.5)
    st0 = tr.state(0.0)
    assert st0.status in ("tracking", "initialising") and st0.pos_std_m < 1.0
    w0, x0 = tr.f.w.copy(), tr.f.x.copy()
    vol = gauss_volume(offset_m, 0.0, 0.3, centre=(0.0, 0.0, 0.3), sigma_m=0.3)
    ev = tr.on_camera(0.0, vol)
    assert not ev.ok and ev.reason == "inconsistent with the prior", ev.reason
    np.testing.assert_array_equal(tr.f.w, w0)
    np.testing.assert_allclose(tr.f.x, x0, atol=2e-3)
    assert tr.counters["matches_used"] == 0
    assert tr.counters["matches_rejected"] == {"inconsistent with the prior": 1}


def test_a_peak_inside_a_wide_prior_is_not_called_inconsistent():
    """The consistency check must not reject a good measurement of a wide prior."""
    tr = tracker(8.0)
    vol = gauss_volume(9.0, 4.0, 0.3, centre=(0.0, 0.0, 0.3), half_m=24.0, sigma_m=0.5)
    ev = tr.on_camera(0.0, vol)
    assert ev.ok, ev.reason
    m = tr.state(0.0).mean
    assert math.hypot(m[0] - 9.0, m[1] - 4.0) < 1.0


def test_the_camera_heading_is_measured_too():
    """A volume that is sharp in heading pulls a particle cloud with a wrong heading to it."""
    tr = tracker(1.0, yaw0=0.3, yaw_sigma_deg=4.0)
    vol = gauss_volume(0.0, 0.0, 0.3 + math.radians(3.0), centre=(0.0, 0.0, 0.3), sigma_m=2.0,
                       yaw_half_deg=10.0, sigma_yaw_deg=0.5)
    assert tr.on_camera(0.0, vol).ok
    st = tr.state(0.0)
    assert abs(math.degrees(st.mean[2] - 0.3) - 3.0) < 0.7
    assert st.yaw_std_deg < 2.0


def test_an_update_that_would_not_go_to_the_volumes_peak_is_refused_when_gated():
    """The integrity monitor judges the volume's PEAK; with a wrong prior the product prior x volume
    can put the posterior on a weak second mode near the prior instead (held-out urban-gnss: the
    estimate moved 2-3 m away from a correct peak). With ``min_posterior_at_peak`` the update is
    refused with its own reason and the cloud is left alone; without it, it is used and the posterior
    mean lands away from the peak."""
    peak = (7.0, 0.0)
    base = gauss_volume(*peak, 0.3, centre=(0.0, 0.0, 0.3), half_m=12.0, sigma_m=0.4)
    bump = gauss_volume(0.5, 0.0, 0.3, centre=(0.0, 0.0, 0.3), half_m=12.0, sigma_m=2.0)
    logl = np.logaddexp(base.logl, bump.logl - 3.0)  # a broad mode near the prior, e^-3 of the peak
    assert PoseVolume(base.xs, base.ys, base.yaws, logl).peak()[:2] == pytest.approx(peak)

    tr = tracker(2.5)
    assert tr.on_camera(0.0, PoseVolume(base.xs, base.ys, base.yaws, logl)).ok  # ungated: used ...
    m = tr.state(0.0).mean
    assert math.hypot(m[0] - peak[0], m[1] - peak[1]) > 3.0  # ... and the estimate is not at the peak

    tr = tracker(2.5)
    x0, w0 = tr.f.x.copy(), tr.f.w.copy()
    ev = tr.on_camera(0.0, PoseVolume(base.xs, base.ys, base.yaws, logl, min_posterior_at_peak=0.25))
    assert not ev.ok and ev.reason == "the prior favours another place than the camera's peak"
    np.testing.assert_array_equal(tr.f.w, w0)
    np.testing.assert_allclose(tr.f.x, x0, atol=2e-3)
    assert tr.counters["matches_rejected"] == {"the prior favours another place than the camera's peak": 1}
    # the gate does not refuse a volume whose peak the prior admits: the sharp-correct case still moves
    tr = tracker(3.0)
    ok = gauss_volume(2.0, -1.5, 0.3, centre=(0.0, 0.0, 0.3), sigma_m=0.5)
    ok.min_posterior_at_peak = 0.25
    assert tr.on_camera(0.0, ok).ok
