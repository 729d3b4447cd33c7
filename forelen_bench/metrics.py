"""Scoring of length predictions (docs/DESIGN.md section 7). Predictors never score themselves."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OBSERVED_STEPS = (0, 1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class Metric:
    """One accuracy metric as every table shows it: the terminal, the page and the ranking."""

    key: str  # in a record's `metrics`
    label: str  # page header
    text: str  # terminal header (plain ASCII)
    digits: int
    better: str  # "lower" or "higher"
    ci: str | None  # the key of its confidence interval, where it has one
    tip: str


# Below this many test groups (prompts) a group bootstrap has too few distinct resamples to mean
# anything: no CI is reported and no difference is called significant.
MIN_GROUPS = 10

# The ranking metric is MAE over all test rows, a censored row counted at its cap (the same
# targets the paper scores); the censoring-aware MAE and the MAE over complete rows stand beside
# it, so that a reader sees when censoring changes the order.
RANKED_BY = "mae"
METRICS = (
    Metric("mae", "MAE", "MAE", 1, "lower", "mae_ci95",
           "mean absolute error in tokens (lower is better); ranks"),
    Metric("mae_censor_aware", "MAE cens.", "cens", 1, "lower", None,
           "censoring-aware MAE: a row cut at max_new_tokens counts only under-prediction, "
           "max(0, cap - prediction)"),
    Metric("mae_complete", "MAE compl.", "compl", 1, "lower", None,
           "MAE over the rows that ended by themselves (EOS)"),
    Metric("rmse", "RMSE", "RMSE", 1, "lower", None, "root mean squared error in tokens"),
    Metric("median_ae", "MedAE", "MedAE", 1, "lower", None, "median absolute error in tokens"),
    Metric("kendall_tau", "τ", "tau", 3, "higher", None,
           "Kendall tau between predicted and true lengths (higher is better)"),
    Metric("spearman_rho", "ρ", "rho", 3, "higher", None,
           "Spearman rho between predicted and true lengths"),
    Metric("acc_50", "±50", "±50", 2, "higher", None, "share of predictions within 50 tokens"),
    Metric("acc_100", "±100", "±100", 2, "higher", None, "share of predictions within 100 tokens"),
)


def length_metrics(y_true, y_pred, *, seed: int = 0, n_boot: int = 1000, groups=None,
                   censored=None) -> dict:
    """MAE (+ bootstrap 95% CI), RMSE, median AE, Kendall tau, Spearman rho, acc within +-50/100,
    and the censoring metrics.

    `groups` (one key per row): the bootstrap resamples groups (prompts), not rows, since the
    samples of one prompt are correlated; without it every row is its own group. `censored`
    (bool per row, `finish_reason == "length"`): those rows' targets are lower bounds (see
    `censoring_metrics`).
    """
    from scipy.stats import kendalltau, spearmanr
    from sklearn.metrics import mean_absolute_error, mean_squared_error, median_absolute_error

    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1 or len(y) == 0:
        raise ValueError(f"need two equal 1-d non-empty arrays, got {y.shape} and {p.shape}")
    err = np.abs(y - p)
    n_groups = int(len(np.unique(np.asarray(groups)))) if groups is not None else int(len(y))
    ci = bootstrap_ci(err, seed=seed, n_boot=n_boot, groups=groups) if n_groups >= MIN_GROUPS \
        else None
    constant = np.ptp(p) == 0 or np.ptp(y) == 0  # rank correlations are undefined
    return {
        "n": int(len(y)),
        "groups": n_groups,
        "mae": float(mean_absolute_error(y, p)),
        "mae_ci95": ci,  # None with fewer than MIN_GROUPS groups
        "ci_unit": "group" if groups is not None else "row",
        "rmse": float(np.sqrt(mean_squared_error(y, p))),
        "median_ae": float(median_absolute_error(y, p)),
        "kendall_tau": None if constant else float(kendalltau(y, p).statistic),
        "spearman_rho": None if constant else float(spearmanr(y, p).statistic),
        "acc_50": float(np.mean(err <= 50)),
        "acc_100": float(np.mean(err <= 100)),
        **censoring_metrics(y, p, censored),
    }


def censoring_metrics(y_true, y_pred, censored=None) -> dict:
    """A row cut at max_new_tokens gives a lower bound (the cap), not a length.

    - `censored_fraction`: the share of such rows;
    - `mae_complete`: MAE over the rows that ended by themselves (None if there are none);
    - `mae_censor_aware`: MAE in which a censored row's error counts only under-prediction,
      max(0, cap - prediction): predicting beyond the cap is not an error, since the true length
      is at least the cap.
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    cut = np.zeros(len(y), bool) if censored is None else np.asarray(censored, bool)
    err = np.where(cut, np.maximum(0.0, y - p), np.abs(y - p))
    return {"censored_fraction": float(cut.mean()),
            "mae_complete": float(np.abs(y - p)[~cut].mean()) if (~cut).any() else None,
            "mae_censor_aware": float(err.mean())}


def _group_index(groups, n: int) -> tuple[np.ndarray, int]:
    """(group index per row, number of groups); every row its own group without `groups`."""
    if groups is None:
        return np.arange(n), n
    _, index = np.unique(np.asarray(groups), return_inverse=True)
    return index.ravel(), int(index.max()) + 1


def group_resamples(groups, *, seed: int = 0, n_boot: int = 200) -> list[np.ndarray]:
    """Row indices of `n_boot` group bootstrap resamples: whole groups drawn with replacement,
    each drawn group's rows in their order. The same `groups` and `seed` give the same resamples,
    so statistics computed from two predictors' records over the same rows pair replicate by
    replicate (the end-to-end bootstrap of `simulator.endtoend`)."""
    index, g = _group_index(groups, len(np.asarray(groups)))
    rows_of = [np.flatnonzero(index == k) for k in range(g)]
    rng = np.random.default_rng(seed)
    return [np.concatenate([rows_of[k] for k in draw]) for draw in rng.integers(0, g, size=(n_boot, g))]


def percentile_ci(values, level: float = 0.95) -> list[float]:
    tail = (1 - level) / 2 * 100
    v = np.asarray(values, np.float64)
    return [float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))]


def group_bootstrap_means(values, groups=None, *, seed: int = 0, n_boot: int = 1000) -> np.ndarray:
    """Bootstrap replicates of the mean of per-row `values` (1-d, or 2-d rows x series: one
    replicate set shared by every series, as a paired test needs), resampling whole groups with
    replacement: each replicate is sum(values of the drawn groups) / rows of the drawn groups."""
    v = np.asarray(values, dtype=np.float64)
    flat = v.ndim == 1
    v = v[:, None] if flat else v
    index, g = _group_index(groups, v.shape[0])
    sums = np.zeros((g, v.shape[1]))
    np.add.at(sums, index, v)
    counts = np.bincount(index, minlength=g).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, g, size=(n_boot, g))
    weight = np.zeros((n_boot, g))
    np.add.at(weight, (np.repeat(np.arange(n_boot), g), draws.ravel()), 1.0)
    means = (weight @ sums) / (weight @ counts)[:, None]
    return means[:, 0] if flat else means


def paired_difference(err_a, err_b, groups=None, *, seed: int = 0, n_boot: int = 2000,
                      level: float = 0.95) -> dict:
    """Paired group bootstrap of MAE(a) - MAE(b) over the same test rows.

    `significant` when the percentile interval of the difference excludes 0: then `a` is
    significantly better (diff < 0) or worse (diff > 0) than `b` at `level`."""
    a, b = np.asarray(err_a, np.float64), np.asarray(err_b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired errors need the same rows, got {a.shape} and {b.shape}")
    reps = group_bootstrap_means(a - b, groups, seed=seed, n_boot=n_boot)
    tail = (1 - level) / 2 * 100
    lo, hi = float(np.percentile(reps, tail)), float(np.percentile(reps, 100 - tail))
    return {"diff": float(np.mean(a - b)), "ci95": [lo, hi], "significant": bool(lo > 0 or hi < 0),
            "p_value": float(min(1.0, 2 * min(np.mean(reps <= 0), np.mean(reps >= 0))))}


def ranking_metrics(y_true, scores) -> dict:
    """For predictors that output a ranking score, not a length."""
    from scipy.stats import kendalltau, spearmanr

    y, s = np.asarray(y_true, float), np.asarray(scores, float)
    constant = np.ptp(s) == 0 or np.ptp(y) == 0
    return {"n": int(len(y)),
            "kendall_tau": None if constant else float(kendalltau(y, s).statistic),
            "spearman_rho": None if constant else float(spearmanr(y, s).statistic)}


def bootstrap_ci(abs_err, *, seed: int = 0, n_boot: int = 1000, level: float = 0.95,
                 groups=None) -> list[float]:
    """Percentile bootstrap CI of the mean absolute error, resampling groups (prompts) when
    `groups` is given, else rows."""
    means = group_bootstrap_means(abs_err, groups, seed=seed, n_boot=n_boot)
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))]


def group_median_floor(y_true, groups) -> float:
    """MAE of predicting each sample by its own group's median: no static predictor beats it on
    `rl`, where one prompt's samples differ only by sampling noise."""
    y = np.asarray(y_true, dtype=np.float64)
    g = np.asarray(groups)
    pred = np.empty_like(y)
    for key in np.unique(g):
        mask = g == key
        pred[mask] = np.median(y[mask])
    return float(np.mean(np.abs(y - pred)))


def per_step_mae(y_true, predict_remaining, steps=OBSERVED_STEPS) -> dict:
    """MAE of the remaining length at each observed step t, over samples still running at t
    (output_tokens > t). `predict_remaining(t, mask)` returns remaining-length predictions."""
    y = np.asarray(y_true, dtype=np.float64)
    out = {}
    for t in steps:
        mask = y > t
        if not mask.any():
            continue
        pred = np.asarray(predict_remaining(t, mask), dtype=np.float64)
        out[str(t)] = {"n": int(mask.sum()), "mae": float(np.mean(np.abs((y[mask] - t) - pred)))}
    return out
