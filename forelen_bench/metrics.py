"""Scoring of length predictions (DESIGN.md section 7). Predictors never score themselves."""

from __future__ import annotations

import numpy as np

OBSERVED_STEPS = (0, 1, 2, 4, 8, 16, 32, 64)


def length_metrics(y_true, y_pred, *, seed: int = 0, n_boot: int = 1000) -> dict:
    """MAE (+ bootstrap 95% CI), RMSE, median AE, Kendall tau, Spearman rho, acc within +-50/100."""
    from scipy.stats import kendalltau, spearmanr
    from sklearn.metrics import mean_absolute_error, mean_squared_error, median_absolute_error

    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1 or len(y) == 0:
        raise ValueError(f"need two equal 1-d non-empty arrays, got {y.shape} and {p.shape}")
    err = np.abs(y - p)
    lo, hi = bootstrap_ci(err, seed=seed, n_boot=n_boot)
    constant = np.ptp(p) == 0 or np.ptp(y) == 0  # rank correlations are undefined
    return {
        "n": int(len(y)),
        "mae": float(mean_absolute_error(y, p)),
        "mae_ci95": [lo, hi],
        "rmse": float(np.sqrt(mean_squared_error(y, p))),
        "median_ae": float(median_absolute_error(y, p)),
        "kendall_tau": None if constant else float(kendalltau(y, p).statistic),
        "spearman_rho": None if constant else float(spearmanr(y, p).statistic),
        "acc_50": float(np.mean(err <= 50)),
        "acc_100": float(np.mean(err <= 100)),
    }


def ranking_metrics(y_true, scores) -> dict:
    """For predictors that output a ranking score, not a length."""
    from scipy.stats import kendalltau, spearmanr

    y, s = np.asarray(y_true, float), np.asarray(scores, float)
    constant = np.ptp(s) == 0 or np.ptp(y) == 0
    return {"n": int(len(y)),
            "kendall_tau": None if constant else float(kendalltau(y, s).statistic),
            "spearman_rho": None if constant else float(spearmanr(y, s).statistic)}


def bootstrap_ci(abs_err, *, seed: int = 0, n_boot: int = 1000, level: float = 0.95) -> list[float]:
    """Percentile bootstrap CI of the mean absolute error (resampling test rows)."""
    err = np.asarray(abs_err, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = err[rng.integers(0, len(err), size=(n_boot, len(err)))].mean(axis=1)
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
