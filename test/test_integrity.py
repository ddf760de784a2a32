"""The camera integrity monitor (core.integrity): each question it asks, on volumes and views made to answer it."""
import math
from types import SimpleNamespace

import numpy as np
import pytest

from geoloc_ros.core.integrity import (
    CameraIntegrity,
    GroundQuality,
    InnovationWindow,
    chi2_quantile,
    ground_quality,
    usable_cells,
    volume_ambiguity,
)
from geoloc_ros.core.measurement import PoseVolume

P = SimpleNamespace(integrity_window=5, integrity_alpha=0.01, integrity_min_usable_ground=0.15,
                    integrity_exclude_m=3.0, integrity_max_ambiguity=0.5, integrity_max_jump_m=2.0,
                    integrity_probation_keyframes=3,
                    integrity_hold_s=10.0)
OK = GroundQuality(0.6, 100.0, 30.0, "ok")


def volume(peaks, res=0.5, half=10.0, sharp=0.6, cx=0.0):
    """A (1, Ny, Nx) log-likelihood volume centred on x = ``cx`` with Gaussian bumps at ``peaks`` [(x, y, height)]."""
    xs = cx + np.arange(-half, half + 1e-9, res)
    ys = (xs - cx)[::-1].copy()
    X, Y = np.meshgrid(xs, ys)
    L = np.full(X.shape, -20.0)
    for x, y, h in peaks:
        L = np.maximum(L, h - ((X - x) ** 2 + (Y - y) ** 2) / (2 * sharp ** 2))
    return PoseVolume(xs, ys, np.array([0.0]), L[None])


@pytest.mark.parametrize("dof", [2, 10, 40])
def test_chi2_quantile_matches_known_values(dof):
    exact = {2: 9.2103, 10: 23.2093, 40: 63.6907}[dof]  # chi-square 0.99 quantiles
    assert chi2_quantile(0.99, dof) == pytest.approx(exact, rel=0.02)


def test_a_dark_or_flat_view_is_not_usable_and_says_why():
    rng = np.random.default_rng(0)
    lit = 90 + 40 * rng.random((80, 60, 1)) * np.ones(3)
    valid = np.ones((80, 60))
    good = ground_quality(lit, valid)
    dark = ground_quality(lit * 0.08, valid)
    fog = ground_quality(np.full((80, 60, 3), 120.0) + rng.normal(0, 0.3, (80, 60, 3)), valid)
    blind = ground_quality(lit, np.zeros((80, 60)))
    assert good.usable > 0.8 and good.why == "ok"
    assert dark.usable < 0.1 and dark.why == "dark"
    assert fog.usable <= 0.5 and fog.why == "low contrast"
    assert blind.usable == 0.0


def test_the_mask_marks_dark_saturated_and_flat_cells_where_they_are():
    """usable_cells (the mask the camera picture draws): a dark band, a saturated band (headlight
    glare) and a flat band in a textured view are marked where they are and nowhere else."""
    rng = np.random.default_rng(1)
    img = 90 + 40 * rng.random((60, 60, 1)) * np.ones(3)
    img[:, :15] *= 0.05  # dark
    img[:, 15:30] = 255.0  # saturated
    img[:, 45:] = 120.0  # flat lit asphalt
    _, lit, textured = usable_cells(img, np.ones((60, 60)))
    assert not lit[:, :30].any()
    assert lit[:, 31:].all()
    assert textured[1:-1, 31:44].mean() > 0.9 and not textured[:, 46:].any()


def test_ambiguity_is_the_runner_up_likelihood_ratio_outside_the_exclusion_radius():
    single = volume([(0.0, 0.0, 0.0)])
    twin = volume([(0.0, 0.0, 0.0), (6.0, 0.0, -0.1)])
    assert volume_ambiguity(single, 3.0) == 0.0  # a peak's own shoulder is no runner-up
    assert volume_ambiguity(volume([(0.0, 0.0, 0.0)], sharp=3.0), 3.0) == 0.0
    assert volume_ambiguity(twin, 3.0) == pytest.approx(math.exp(-0.1), rel=1e-6)
    assert volume_ambiguity(twin, 8.0) < 1e-6  # the twin lies inside the exclusion radius


def test_the_window_test_fails_on_a_persistent_offset_but_not_on_one_outlier():
    w = InnovationWindow(5, 0.01)
    for nis in (1, 2, 15, 1, 1):
        w.add(nis)
    assert not w.failing()  # one outlier of 15 among small ones (threshold ~23.2)
    for nis in (9, 9, 9, 9, 9):
        w.add(nis)
    assert w.failing()  # each below the single-sample gate (9.2), together far beyond


def test_probation_then_trust_then_suspect_and_the_camera_holds_only_while_trusted_and_recent():
    ci = CameraIntegrity(P)
    prior = np.array([0.0, 0.0]), np.eye(2) * 1.0
    v = [ci.assess(t, OK, volume([(0.2, 0.1, 0.0)]), *prior) for t in range(3)]
    assert [x.use for x in v] == [False, False, True] and "probation" in v[0].reason
    assert ci.camera_holds(3.0) and not ci.camera_holds(20.0)  # recent agreement only
    # trusted at t = 2: it holds against a GNSS that began to disagree later, not against one that
    # already disagreed while the camera was earning its trust
    assert ci.camera_holds(3.0, disagree_since=2.5) and not ci.camera_holds(3.0, disagree_since=1.0)
    # the camera now sits 4 m off the prior, keyframe after keyframe
    verdicts = [ci.assess(3 + k, OK, volume([(4.0, 0.0, 0.0)]), *prior) for k in range(5)]
    assert not verdicts[-1].use and "inconsistent" in verdicts[-1].reason
    assert ci.state.trust == "suspect" and not ci.camera_holds(8.0)
    ci.reset()
    assert ci.state.trust == "probation" and not ci.assess(9, OK, volume([(0.0, 0.0, 0.0)]), *prior).use


def test_cannot_see_and_ambiguous_are_dropped_with_their_reason():
    ci = CameraIntegrity(P)
    prior = np.array([0.0, 0.0]), np.eye(2)
    night = ci.assess(0.0, GroundQuality(0.05, 10.0, 3.0, "dark"), volume([(0, 0, 0)]), *prior)
    assert not night.use and night.reason == "cannot see (dark, 5 % usable ground)"
    amb = ci.assess(1.0, OK, volume([(0, 0, 0), (6, 0, 0)]), *prior)
    assert not amb.use and amb.reason.startswith("ambiguous (runner-up 1.00")
    assert ci.describe().startswith("camera: degraded (ambiguous")
    assert ci.state.counts == {"cannot see": 1, "ambiguous": 1}


def test_peaks_that_hop_are_dropped_while_peaks_that_follow_the_odometry_pass():
    """Each keyframe the filter moves 5 m east; a camera that sees the road follows, one that matches
    lights or traffic lands somewhere else each time (here: +-3 m across), within the wide prior's gate."""
    prior_cov = np.eye(2) * 16.0  # a wide prior: every single peak agrees with it
    for hop, expect in ((0.0, True), (3.0, False)):
        ci = CameraIntegrity(P)
        verdicts = []
        for k in range(8):
            mean = np.array([5.0 * k, 0.0])
            y = hop * (1 if k % 2 else -1)
            verdicts.append(ci.assess(float(k), OK, volume([(mean[0] + 0.3, y, 0.0)], cx=mean[0]), mean, prior_cov))
            ci.after_update(mean)
        assert verdicts[-1].use is expect, [v.reason for v in verdicts]
        assert any(v.key == "peaks hop" for v in verdicts) is not expect


def test_a_camera_that_keeps_seeing_elsewhere_widens_nothing_until_it_persists_then_gives_the_gap():
    """Clean peaks 8 m east of a tight prior, keyframe after keyframe: the monitor reports the median
    offset once half its window agrees (the Localizer covers both positions with it); a small offset,
    ambiguous keyframes or old ones give nothing."""
    prior = np.array([0.0, 0.0]), np.eye(2) * 0.5
    ci = CameraIntegrity(P)
    far = volume([(8.0, 0.0, 0.0)], half=12.0)
    ci.assess(0.0, OK, far, *prior)
    assert ci.disagreement(0.0) is None  # one keyframe is no persistent disagreement
    for t in (1.0, 2.0):
        ci.assess(t, OK, far, *prior)
    gap = ci.disagreement(2.0)
    assert gap is not None and gap == pytest.approx([8.0, 0.0], abs=0.3)
    assert ci.disagreement(2.0 + P.integrity_hold_s + 1.5) is None  # too old
    ci.reset()
    assert ci.disagreement(2.0) is None
    near = volume([(1.5, 0.0, 0.0)])  # outside a tight ellipse, but within integrity_exclude_m
    for t in range(4):
        ci.assess(float(t), OK, near, *prior)
    assert ci.disagreement(3.0) is None
    ci.reset()
    twin = volume([(8.0, 0.0, 0.0), (-8.0, 0.0, 0.0)], half=12.0)  # ambiguous: not a clean peak
    for t in range(4):
        ci.assess(float(t), OK, twin, *prior)
    assert ci.disagreement(3.0) is None
    wide = np.array([0.0, 0.0]), np.eye(2) * 25.0  # the filter's own ellipse admits 8 m
    ci.reset()
    for t in range(4):
        ci.assess(float(t), OK, far, *wide)
    assert ci.disagreement(3.0) is None
