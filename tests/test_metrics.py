"""Metrics agree with scipy/numpy on the same arrays; the references mean what they say."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import kendalltau, spearmanr

from forelen.metrics import (bootstrap_ci, group_median_floor, length_metrics, metric_value,
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
    assert m["mae_capped"] == pytest.approx((44 + 56) / 2)
    assert m["mae"] == pytest.approx((10 + 44 + 20 + 56) / 4)
    # MAE splits by censoring, so a record from before the column gets it back exactly
    old = {"metrics": {k: m[k] for k in ("mae", "mae_complete", "censored_fraction")}}
    assert metric_value(old, "mae_capped") == pytest.approx(m["mae_capped"])
    assert metric_value({"metrics": {"mae": 3.0, "censored_fraction": 0.0}}, "mae_capped") is None


def test_capped_mae_can_reverse_an_order_that_mae_gives():
    """The split columns must be able to disagree with MAE (the v0.1.0 "censoring-aware" MAE
    equalled MAE whenever predictions stay below the cap, which every head's do): a predictor
    that predicts long is worse overall and on complete rows, better on the capped rows."""
    y = np.array([100.0, 120, 90, 110, 512, 512])
    cut = y == 512
    short, long_ = np.full(6, 110.0), np.full(6, 300.0)
    a, b = length_metrics(y, short, censored=cut), length_metrics(y, long_, censored=cut)
    assert a["mae"] < b["mae"] and a["mae_complete"] < b["mae_complete"]
    assert a["mae_capped"] > b["mae_capped"]


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
    from forelen.builders.plan import partition_of

    assert [partition_of(g) for g in ("gsm8k:0", "math500:17", "ifeval:1000",
                                      "longbench:qasper:3", "file:p.jsonl:p00")] == [
        "validation", "train", "train", "train", "test"]


# ---------------------------------------------------------------------------------------------
# distribution metrics: CRPS, 80% interval coverage and width (checked by brute force)


def _brute_crps(dist, y, cap):
    """The integral of (F(x) - 1{x >= y})^2 over x < cap on a fine grid (cap: per row)."""
    lo = min(dist.edges[0], y.min()) - 10
    x = np.linspace(lo, max(dist.edges[-1], y.max()) + 10, 400_001)
    dx = x[1] - x[0]
    out = []
    for f, v, c in zip(dist.cdf_at_edges(), y, cap):
        big_f = np.interp(x, dist.edges, f)  # 0 before the first edge, 1 after the last
        out.append(np.sum(((big_f - (x >= v)) ** 2)[x < c]) * dx)
    return np.array(out)


def _sampled(n: int, seed: int):
    """n rows, each with its own distribution over 20 bins of 50 tokens, and a length drawn from
    that very distribution: a calibrated predictor."""
    from forelen.distribution import BinnedDistribution

    rng = np.random.default_rng(seed)
    edges = np.linspace(0.0, 1000.0, 21)
    dist = BinnedDistribution(edges, rng.dirichlet(np.full(20, 0.3), size=n))
    k = np.array([rng.choice(20, p=p) for p in dist.probs])
    return dist, edges[k] + rng.uniform(0.0, 50.0, n)


def test_crps_matches_brute_force_integration():
    """Random edges and probabilities, lengths inside, below and beyond the edges, some rows
    censored at the cap; with and without a cap."""
    from forelen.distribution import BinnedDistribution
    from forelen.metrics import crps_binned

    rng = np.random.default_rng(7)
    for trial in range(4):
        edges = np.unique(np.round(rng.uniform(0, 600, 9)))
        dist = BinnedDistribution(edges, rng.dirichlet(np.full(len(edges) - 1, 0.5), size=25))
        y = rng.uniform(-40, 700, 25)
        y[:3] = edges[[0, 3, -1]]  # on edges
        cap = 450.0 if trial % 2 else None
        cut = np.zeros(25, bool)
        if cap is not None:
            cut = y >= cap
            y[cut] = cap
        got = crps_binned(dist, y, cut, cap)
        want = _brute_crps(dist, y, np.where(cut, y, cap if cap is not None else np.inf))
        np.testing.assert_allclose(got, want, atol=5e-3)


def test_crps_of_a_censored_row_by_hand():
    """One bin [0, 100], uniform: F(x) = x / 100. Censored at 50: the integral of F^2 below the
    cap, 50^3 / (3 * 100^2); a complete row at 50 with cap 100 adds the integral of (1 - F)^2 from
    50 to 100, the same again; without a cap the plain CRPS (also 2 * 4.1667 here)."""
    from forelen.distribution import BinnedDistribution
    from forelen.metrics import crps_binned

    dist = BinnedDistribution([0.0, 100.0], [[1.0], [1.0], [1.0]])
    got = crps_binned(dist, [50.0, 50.0, 150.0], [True, False, False], cap=100.0)
    assert got[0] == pytest.approx(125000 / 30000)
    assert got[1] == pytest.approx(2 * 125000 / 30000)
    # a length beyond the cap that is not flagged: scored like a censored row at the cap
    assert got[2] == pytest.approx(100 / 3)
    assert crps_binned(dist.take([0]), [50.0], cap=None)[0] == pytest.approx(2 * 125000 / 30000)


def test_a_sharp_correct_predictor_has_crps_near_zero():
    from forelen.distribution import BinnedDistribution
    from forelen.metrics import distribution_metrics

    y = np.array([12.0, 80.0, 255.0, 256.0, 600.0])
    edges = np.unique(np.concatenate([y - 0.005, y + 0.005]))
    probs = np.zeros((len(y), len(edges) - 1))
    probs[np.arange(len(y)), np.searchsorted(edges, y) - 1] = 1.0  # the bin around each length
    m = distribution_metrics(BinnedDistribution(edges, probs), y, censored=[0, 0, 0, 1, 0],
                             cap=256.0)
    assert m["crps"] == pytest.approx(0.0, abs=1e-3)
    assert m["coverage_80"] == 1.0 and m["interval_width_80"] == pytest.approx(0.008)


def test_a_calibrated_predictor_covers_80_percent():
    from forelen.distribution import BinnedDistribution
    from forelen.metrics import distribution_metrics

    dist, y = _sampled(4000, seed=0)
    m = distribution_metrics(dist, y)
    assert 0.75 <= m["coverage_80"] <= 0.85
    assert m["interval_width_80"] == pytest.approx(np.mean(dist.quantile(0.9) - dist.quantile(0.1)))
    # overconfident: every row's mass squeezed towards its median bin covers less
    sharp = dist.probs ** 3
    assert distribution_metrics(BinnedDistribution(dist.edges, sharp), y)["coverage_80"] < 0.7


def test_censored_coverage_needs_the_upper_end_at_the_cap():
    from forelen.distribution import BinnedDistribution
    from forelen.metrics import distribution_metrics

    dist = BinnedDistribution([0.0, 100.0, 200.0], [[1.0, 0.0], [0.5, 0.5], [0.5, 0.5]])
    # q10/q90: row 0 10/90, rows 1 and 2 20/180; rows 0 and 1 censored at 100, row 2 at 190
    m = distribution_metrics(dist, [100.0, 100.0, 190.0], censored=[True, True, True], cap=None)
    assert m["coverage_80"] == pytest.approx(1 / 3)  # row 0: 90 < 100; row 2: 180 < 190
    assert m["interval_width_80"] == pytest.approx((80 + 160 + 160) / 3)


def test_censored_crps_is_proper():
    """With a fifth of the rows censored, the true distributions score better than the same ones
    with their mass beyond the cap moved just below it. Scoring complete rows beyond the cap but
    censored ones not (the plain CRPS for complete rows) would prefer the moved ones."""
    from forelen.distribution import BinnedDistribution
    from forelen.metrics import crps_binned

    dist, y = _sampled(4000, seed=0)
    cap = 800.0
    cut = y >= cap
    y = np.where(cut, cap, y)
    moved = dist.probs.copy()
    moved[:, 15] += moved[:, 16:].sum(1)  # bin 15 is [750, 800)
    moved[:, 16:] = 0.0
    moved = BinnedDistribution(dist.edges, moved)
    assert 0.1 < cut.mean() < 0.3
    assert crps_binned(dist, y, cut, cap).mean() < crps_binned(moved, y, cut, cap).mean()

    def mixed(d):  # the improper rule
        return np.where(cut, crps_binned(d, y, cut, cap), crps_binned(d, y)).mean()

    assert mixed(moved) < mixed(dist)


def test_a_ranking_score_has_no_length_or_distribution_metric():
    from forelen.metrics import METRICS, metric_value

    m = ranking_metrics([1, 2, 3, 4], [0.1, 0.3, 0.2, 0.9])
    assert m["kendall_tau"] is not None and m["spearman_rho"] is not None
    for key in ("mae", "mae_ci95", "rmse", "acc_50", "mae_capped", "crps", "coverage_80"):
        assert key in m and m[key] is None
    assert {k.key for k in METRICS} <= set(m)
    # an older or foreign record that stored an MAE of 0 for a ranking predictor: read as none
    rec = {"predictor": {"outputs": "ranking"}, "metrics": {"mae": 0.0, "kendall_tau": 0.2}}
    assert metric_value(rec, "mae") is None and metric_value(rec, "kendall_tau") == 0.2
    assert metric_value({"metrics": {"mae": float("nan")}}, "mae") is None
    assert metric_value({"metrics": {}}, "crps") is None  # a record from before the metric
    point = length_metrics([1, 2, 3], [1, 2, 2])
    assert point["crps"] is None and point["coverage_80"] is None
    assert point["interval_width_80"] is None
