"""Evaluation metrics on hand-made trajectories whose errors are known by construction."""
from __future__ import annotations

import math

import numpy as np
import pytest

from geoloc_ros.evaluation import metrics as M


def straight_truth(duration=100.0, hz=10.0, speed=10.0):
    t = np.arange(0.0, duration + 1e-9, 1.0 / hz)
    return M.Truth(t, speed * t, np.zeros_like(t))


def test_truth_is_interpolated_in_time_and_not_across_gaps_or_outside():
    truth = M.Truth([0.0, 1.0, 2.0, 10.0, 11.0], [0.0, 10.0, 20.0, 100.0, 110.0], [0.0, 0.0, 0.0, 5.0, 5.0])
    x, y, ok = truth.at([0.25, 1.5, 2.0, 5.0, 10.5, -0.1, 11.2], max_gap_s=1.5)
    assert ok.tolist() == [True, True, True, False, True, False, False]
    np.testing.assert_allclose(x[ok], [2.5, 15.0, 20.0, 105.0])
    np.testing.assert_allclose(y[ok], [0.0, 0.0, 0.0, 5.0])
    assert np.isnan(x[~ok]).all()


def test_error_stats_of_a_constant_offset_and_of_known_values():
    truth = straight_truth()
    t = np.arange(0.05, 99.0, 0.2)  # between truth samples: interpolation must be exact on a line
    tr = M.Track("offset", t, 10.0 * t + 3.0, np.full_like(t, 4.0))
    err, dx, dy = M.horizontal_errors(tr, truth)
    np.testing.assert_allclose(err, 5.0, atol=1e-9)
    s = M.error_stats([1.0, 2.0, 3.0, 4.0, 100.0, np.nan])
    assert s["n"] == 5 and s["mean"] == pytest.approx(22.0) and s["median"] == 3.0 and s["max"] == 100.0
    assert s["p95"] == pytest.approx(np.percentile([1, 2, 3, 4, 100], 95))
    assert s["rms"] == pytest.approx(math.sqrt((1 + 4 + 9 + 16 + 10000) / 5))
    assert M.error_stats([])["mean"] is None


def test_improvement_ratios():
    imp = M.improvement({"mean": 6.0, "median": 4.0, "p95": 12.0}, {"mean": 2.0, "median": 1.0, "p95": 6.0})
    assert imp == {"mean_ratio": 3.0, "median_ratio": 4.0, "p95_ratio": 2.0, "median_reduction_pct": 75.0}
    worse = M.improvement({"mean": 1.0, "median": 1.0, "p95": 1.0}, {"mean": 2.0, "median": 2.0, "p95": 4.0})
    assert worse["median_ratio"] == 0.5 and worse["median_reduction_pct"] == -100.0
    assert M.improvement({"mean": None, "median": None, "p95": None}, {"mean": 1.0})["mean_ratio"] is None


@pytest.mark.parametrize("scale,nees,in68,in95", [(1.0, 2.0, 68.0, 95.0), (3.0, 18.0, 12.0, 28.0)])
def test_nees_and_ellipse_shares_on_samples_from_a_known_gaussian(scale, nees, in68, in95):
    """Errors drawn from N(0, C_true); published C = C_true / scale^2. Honest (scale 1): NEES 2,
    68% / 95% inside. Over-confident by 3x in sigma: NEES 18, and P(chi2_2 <= q / 9)."""
    rng = np.random.default_rng(0)
    c_true = np.array([[4.0, 1.5], [1.5, 2.0]])
    e = rng.multivariate_normal([0.0, 0.0], c_true, size=200_000)
    cov = np.broadcast_to(c_true / scale ** 2, (len(e), 2, 2))
    h = M.covariance_honesty(e[:, 0], e[:, 1], cov)
    assert h["n"] == len(e)
    assert h["nees_mean"] == pytest.approx(nees, rel=0.02)
    if scale == 1.0:
        assert h["inside_68_pct"] == pytest.approx(in68, abs=0.5)
        assert h["inside_95_pct"] == pytest.approx(in95, abs=0.3)
    else:  # exact: P(d2 <= q/9) = 1 - exp(-q / 18)
        assert h["inside_68_pct"] == pytest.approx(100 * (1 - math.exp(-M.chi2_2_quantile(0.68) / 18)), abs=0.5)
        assert h["inside_95_pct"] == pytest.approx(100 * (1 - math.exp(-M.chi2_2_quantile(0.95) / 18)), abs=0.5)
        assert h["inside_95_pct"] == pytest.approx(in95, abs=1.0)


def test_nees_skips_missing_or_invalid_covariances():
    cov = np.array([np.eye(2), np.full((2, 2), np.nan), np.zeros((2, 2)), [[1.0, 2.0], [2.0, 1.0]]])
    d2 = M.nees_2d([1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], cov)
    assert d2[0] == pytest.approx(2.0) and np.isnan(d2[1:]).all()
    assert M.covariance_honesty([np.nan], [0.0], np.eye(2)[None])["nees_mean"] is None


def test_availability_status_shares_and_ttff_on_a_track_with_a_gap():
    """Estimates at 5 Hz from t=10 s to 60 s and from 80 s to 100 s, error 3 m until 40 s then 8 m;
    status initialising before 15 s, lost from 50 s to 60 s."""
    truth = straight_truth()
    t = np.round(np.concatenate([np.arange(10.0, 60.0, 0.2), np.arange(80.0, 100.0, 0.2)]), 6)
    off = np.where(t < 40.0, 3.0, 8.0)
    status = np.where(t < 15.0, "initialising", np.where((t >= 50.0) & (t < 60.0), "lost", "tracking"))
    tr = M.Track("gap", t, 10.0 * t, off, status=status)
    err, _, _ = M.horizontal_errors(tr, truth)
    grid = M.time_grid(0.0, 100.0, 0.1)
    av = M.availability(tr, err, grid, max_age_s=0.5)
    # usable: [15, 50) and [80, 100) (+ each held up to 0.2 s): 35 + 20 = 55 s of 100
    assert av["available_pct"] == pytest.approx(55.0, abs=0.6)
    assert av["within_5m_pct"] == pytest.approx(25.0, abs=0.6)  # [15, 40)
    assert av["within_10m_pct"] == pytest.approx(55.0, abs=0.6)
    assert av["within_25m_pct"] == av["within_10m_pct"]
    sh = M.status_shares(tr, grid, max_age_s=0.5)
    assert sh["initialising"] == pytest.approx(5.0, abs=0.6)
    assert sh["lost"] == pytest.approx(10.0, abs=0.6)
    assert sh["tracking"] == pytest.approx(55.0, abs=0.6)
    assert sh["none"] == pytest.approx(30.0, abs=0.6)
    assert sum(sh.values()) == pytest.approx(100.0)
    assert M.time_to_first_fix(tr, 0.0) == pytest.approx(15.0)
    assert M.time_to_first_fix(M.Track("never", [1.0], [0.0], [0.0], status=["lost"]), 0.0) is None


def test_latest_index_respects_the_age_limit():
    idx = M.latest_index([1.0, 2.0, 5.0], [0.5, 1.0, 1.5, 2.9, 3.5, 5.0, 9.0], max_age_s=1.0)
    assert idx.tolist() == [-1, 0, 0, 1, -1, 2, -1]


def test_recall_at_k_ranks_the_first_candidate_near_the_truth():
    truth_x, truth_y = [0.0, 0.0, 0.0, np.nan], [0.0, 0.0, 0.0, 0.0]
    cx = [np.array([1.0, 50.0]), np.array([50.0, 40.0, 30.0, 20.0, 2.0, 0.0]), np.array([50.0] * 12),
          np.array([0.0])]
    cy = [np.zeros(2), np.zeros(6), np.zeros(12), np.zeros(1)]
    r = M.recall_at_k(cx, cy, truth_x, truth_y, radius_m=3.0, ks=(1, 5, 10))
    assert r["n"] == 3  # the query without truth is skipped
    assert r["r@1"] == pytest.approx(100 / 3) and r["r@5"] == pytest.approx(200 / 3)
    assert r["r@10"] == pytest.approx(200 / 3)


def test_evaluate_track_with_and_without_truth():
    truth = straight_truth(duration=20.0)
    t = np.arange(2.0, 20.0, 0.2)
    cov = np.broadcast_to(np.eye(2) * 4.0, (len(t), 2, 2))
    kf = np.arange(len(t)) % 5 == 0
    ms = np.where(kf, 40.0, np.nan)
    tr = M.Track("c", t, 10.0 * t + 2.0, np.zeros_like(t), cov=cov, status=["tracking"] * len(t), keyframe=kf,
                 compute_ms=ms)
    out = M.evaluate_track(tr, truth, t_start=0.0, t_end=20.0)
    assert out["error_m"]["median"] == pytest.approx(2.0)
    assert out["covariance"]["nees_mean"] == pytest.approx(1.0)  # (2 m)^2 / 4 m^2
    assert out["covariance"]["inside_68_pct"] == 100.0
    assert out["ttff_s"] == pytest.approx(2.0)
    assert out["compute_ms"]["n"] == kf.sum() and out["compute_ms"]["median"] == 40.0
    assert out["availability"]["available_pct"] == pytest.approx(90.0, abs=0.6)
    no_gt = M.evaluate_track(tr, None, t_start=0.0, t_end=20.0)
    assert "error_m" not in no_gt and "covariance" not in no_gt
    assert no_gt["availability"]["available_pct"] == pytest.approx(90.0, abs=0.6)
