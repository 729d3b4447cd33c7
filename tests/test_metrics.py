"""Metrics agree with scipy/numpy on the same arrays; the references mean what they say."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import kendalltau, spearmanr

from forelen_bench.metrics import (bootstrap_ci, group_median_floor, length_metrics,
                                   per_step_mae, ranking_metrics)


def test_length_metrics_match_scipy_and_numpy():
    rng = np.random.default_rng(0)
    y = rng.integers(1, 500, size=200).astype(float)
    p = y + rng.normal(scale=60, size=200)
    m = length_metrics(y, p, seed=0)
    err = np.abs(y - p)
    assert m["mae"] == pytest.approx(err.mean())
    assert m["rmse"] == pytest.approx(np.sqrt(((y - p) ** 2).mean()))
    assert m["median_ae"] == pytest.approx(np.median(err))
    assert m["kendall_tau"] == pytest.approx(kendalltau(y, p).statistic)
    assert m["spearman_rho"] == pytest.approx(spearmanr(y, p).statistic)
    assert m["acc_50"] == pytest.approx(np.mean(err <= 50))
    assert m["acc_100"] == pytest.approx(np.mean(err <= 100))
    lo, hi = m["mae_ci95"]
    assert lo < m["mae"] < hi


def test_constant_prediction_has_no_rank_correlation():
    m = length_metrics([1, 2, 3, 4], [2, 2, 2, 2])
    assert m["kendall_tau"] is None and m["spearman_rho"] is None
    assert ranking_metrics([1, 2, 3], [3, 2, 1])["kendall_tau"] == pytest.approx(-1.0)


def test_bootstrap_ci_is_seeded_and_narrows_with_more_rows():
    rng = np.random.default_rng(1)
    small, large = rng.exponential(50, 50), rng.exponential(50, 5000)
    assert bootstrap_ci(small, seed=3) == bootstrap_ci(small, seed=3)
    assert np.diff(bootstrap_ci(large))[0] < np.diff(bootstrap_ci(small))[0]


def test_group_median_floor():
    y = np.array([10, 20, 30, 100, 100, 400])
    groups = np.array(["a", "a", "a", "b", "b", "b"])
    # a: median 20 -> errors 10, 0, 10; b: median 100 -> 0, 0, 300
    assert group_median_floor(y, groups) == pytest.approx(320 / 6)


def test_per_step_mae_uses_running_rows_only():
    y = np.array([3.0, 10.0, 40.0])
    seen = {}

    def remaining(t, mask):
        seen[t] = mask.copy()
        return np.full(mask.sum(), 5.0)

    out = per_step_mae(y, remaining, steps=(0, 4, 16, 64))
    assert out["0"]["n"] == 3 and out["4"]["n"] == 2 and out["16"]["n"] == 1 and "64" not in out
    assert out["16"]["mae"] == pytest.approx(abs((40 - 16) - 5))
    assert seen[4].tolist() == [False, True, True]


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError):
        length_metrics([1, 2], [1, 2, 3])
