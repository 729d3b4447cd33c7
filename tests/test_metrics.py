"""Metrics agree with scipy/numpy on the same arrays; the references mean what they say."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import kendalltau, spearmanr

from forelen_bench.metrics import (bootstrap_ci, group_median_floor, length_metrics,
                                   paired_difference, per_step_mae, ranking_metrics)


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


# ---------------------------------------------------------------------------------------------
# group-aware statistics, censoring, significance (checked independently of the code under test)


def _grouped(prompts: int = 60, samples: int = 8, seed: int = 0):
    """Per-prompt error levels that differ a lot, small noise between a prompt's samples."""
    rng = np.random.default_rng(seed)
    level = rng.exponential(60.0, size=prompts)
    err = np.repeat(level, samples) + rng.normal(0, 5.0, size=prompts * samples).clip(-20, 20)
    return np.abs(err), np.repeat(np.arange(prompts), samples)


def test_group_bootstrap_is_wider_than_the_row_bootstrap_on_grouped_data():
    err, groups = _grouped()
    row = bootstrap_ci(err, seed=1)
    group = bootstrap_ci(err, seed=1, groups=groups)
    width_row, width_group = row[1] - row[0], group[1] - group[0]
    assert width_group > 2.0 * width_row  # 8 correlated samples: about sqrt(8) wider
    # with one row a group, the group bootstrap is the row bootstrap
    assert bootstrap_ci(err, seed=1, groups=np.arange(len(err))) == pytest.approx(row, rel=0.05)


def test_bootstrap_ci_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    hits = 0
    trials = 300
    for i in range(trials):
        sample = rng.exponential(50.0, size=80)  # true mean 50
        lo, hi = bootstrap_ci(sample, seed=i, n_boot=400)
        hits += lo <= 50.0 <= hi
    assert 0.90 <= hits / trials <= 0.98


def test_paired_difference_finds_a_planted_gap_and_not_a_null_one():
    err, groups = _grouped(seed=3)
    rng = np.random.default_rng(4)
    better = err * 0.8  # 20% lower MAE on every prompt
    found = paired_difference(better, err, groups, seed=0)
    assert found["significant"] and found["diff"] < 0 and found["ci95"][1] < 0
    same = err + rng.normal(0, 1.0, size=len(err))  # the same predictor, up to noise
    null = paired_difference(same, err, groups, seed=0)
    assert not null["significant"] and null["ci95"][0] < 0 < null["ci95"][1]


def test_censoring_metrics_by_hand():
    y = np.array([100, 256, 40, 256])  # rows 2 and 4 were cut at the cap of 256
    p = np.array([90, 300, 60, 200])
    cut = np.array([False, True, False, True])
    m = length_metrics(y, p, censored=cut)
    assert m["censored_fraction"] == 0.5
    assert m["mae_complete"] == pytest.approx((10 + 20) / 2)
    # censored: predicting 300 >= cap is no error; predicting 200 under-predicts by 56
    assert m["mae_censor_aware"] == pytest.approx((10 + 0 + 20 + 56) / 4)
    assert m["mae"] == pytest.approx((10 + 44 + 20 + 56) / 4)


def test_rank_correlations_against_brute_force():
    rng = np.random.default_rng(11)
    y = rng.permutation(40).astype(float) * 3 + 1  # no ties
    p = y + rng.normal(0, 25, size=40)
    m = length_metrics(y, p)
    pairs = [(i, j) for i in range(40) for j in range(i + 1, 40)]
    concordant = sum(np.sign(y[i] - y[j]) == np.sign(p[i] - p[j]) for i, j in pairs)
    assert m["kendall_tau"] == pytest.approx((2 * concordant - len(pairs)) / len(pairs))
    rank_y = np.empty(40)
    rank_y[np.argsort(y)] = np.arange(40)
    rank_p = np.empty(40)
    rank_p[np.argsort(p)] = np.arange(40)
    d2 = ((rank_y - rank_p) ** 2).sum()
    assert m["spearman_rho"] == pytest.approx(1 - 6 * d2 / (40 * (40 ** 2 - 1)))


def test_partitions_are_pinned():
    """Published partitions must never reshuffle: these values are fixed forever."""
    from forelen_bench.builders.build import partition_of

    assert [partition_of(g) for g in ("gsm8k:0", "math500:17", "ifeval:1000",
                                      "longbench:qasper:3", "file:p.jsonl:p00")] == [
        "validation", "train", "train", "train", "test"]
