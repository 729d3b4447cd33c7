"""Scoring of length predictions (docs/DESIGN.md section 7). Predictors never score themselves."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# the bootstrap helpers live in `stats`; importable from here too, where 0.1 had them
from forelen.stats import N_BOOT, bootstrap_ci, group_resamples, paired_difference  # noqa: F401

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
    # what a predictor must output to have it: "length" (a point prediction), "distribution"
    # (`predict_distribution`), or "order" (lengths or a ranking score); without it, it is null
    needs: str = "length"


# Below this many test groups (prompts) a group bootstrap has too few distinct resamples to mean
# anything: no CI is reported and no difference is called significant.
MIN_GROUPS = 10

# The ranking metric is MAE over all test rows, a censored row counted at its cap (the same
# targets the paper scores). Beside it, MAE split by censoring: over the rows that ended by
# themselves and over the rows cut at the cap, MAE = (1 - f) * compl + f * capped with f the
# censored share, so that a reader sees which rows an order is won on. (v0.1.0 had a
# "censoring-aware" MAE counting only under-prediction on cut rows; every head's predictions lie
# at or below the cap, so it equalled MAE in all 43 records and was dropped.)
RANKED_BY = "mae"
# The paper reports MAE in tokens (its Tables 2-5 and the progressive figure): the paper
# comparison, the per-step curves and the validation score read this key, whatever ranks.
PAPER_METRIC = "mae"
# The order a scheduler uses: beside the ranked metric in every table, and the overview's mean.
ORDER_METRIC = "kendall_tau"
# What `forelen leaderboard compare` shows of each record beside the paired difference.
COMPARED = (RANKED_BY, "median_ae", ORDER_METRIC, "crps", "coverage_80")
METRICS = (
    Metric("mae", "MAE", "MAE", 1, "lower", "mae_ci95",
           "mean absolute error in tokens (lower is better); ranks"),
    Metric("mae_complete", "MAE compl.", "compl", 1, "lower", None,
           "MAE over the rows that ended by themselves (EOS)"),
    Metric("mae_capped", "MAE capped", "capped", 1, "lower", None,
           "MAE over the rows cut at max_new_tokens, each counted at the cap: a lower bound of "
           "the true error when the prediction is below the cap (the true length is at least "
           "the cap); MAE = (1 - f) x compl. + f x capped, f the censored share"),
    Metric("rmse", "RMSE", "RMSE", 1, "lower", None, "root mean squared error in tokens"),
    Metric("median_ae", "MedAE", "MedAE", 1, "lower", None, "median absolute error in tokens"),
    Metric("kendall_tau", "τ", "tau", 3, "higher", None,
           "Kendall tau between predicted and true lengths (higher is better)", "order"),
    Metric("spearman_rho", "ρ", "rho", 3, "higher", None,
           "Spearman rho between predicted and true lengths", "order"),
    Metric("acc_50", "±50", "±50", 2, "higher", None, "share of predictions within 50 tokens"),
    Metric("acc_100", "±100", "±100", 2, "higher", None, "share of predictions within 100 tokens"),
    Metric("crps", "CRPS", "CRPS", 1, "lower", None,
           "continuous ranked probability score of the predicted length distribution, in tokens "
           "(lower is better), restricted to lengths below the cap (threshold-weighted CRPS, "
           "Gneiting & Ranjan 2011): a row cut at max_new_tokens scores the integral of F(x)^2 "
           "below the cap, what its lower bound determines; complete rows are scored over the "
           "same range, which keeps the score proper", "distribution"),
    Metric("coverage_80", "cov. 80%", "cov80", 2, "higher", None,
           "share of test rows inside the predicted 10-90% interval (0.80 when calibrated); a row "
           "cut at max_new_tokens counts as covered when the interval's upper end reaches the cap",
           "distribution"),
    Metric("interval_width_80", "width 80%", "w80", 1, "lower", None,
           "mean width of the predicted 10-90% interval in tokens (sharpness; read it with the "
           "coverage)", "distribution"),
)

_BY_KEY = {m.key: m for m in METRICS}


def metric(key: str) -> Metric:
    """The metric of a record's `metrics` key (KeyError for any other)."""
    return _BY_KEY[key]


# The ranked metric is a mean of per-row losses: the paired significance tests resample the
# per-row absolute errors a record stores (`per_row.abs_error`), whose mean is MAE.
RANKED = metric(RANKED_BY)


# A predictor is (nearly) constant when at least 90% of its test predictions lie in a band 1% as
# wide as the true lengths' spread: (P95 - P5) of the predictions <= CONSTANT_SPREAD x (P95 - P5)
# of the targets. Such a predictor is a constant in disguise (v0.1.0: ltr-c, s3 on cot): the page
# flags it and leaves it out of the ranking, where the constant-median reference already stands.
CONSTANT_SPREAD = 0.01


def prediction_spread(y_true, y_pred) -> dict:
    """How much the predictions vary, relative to the targets: `prediction_spread` (the ratio
    above; 0 for a constant) and `prediction_median`, stored with every length record so that a
    constant predictor can be told from its record (the predictions themselves are only hashed)."""
    y = np.asarray(y_true, np.float64)
    p = np.asarray(y_pred, np.float64)
    width = lambda v: float(np.subtract(*np.percentile(v, [95, 5])))  # noqa: E731
    return {"prediction_spread": width(p) / max(width(y), 1.0),  # >= 1 token: constant targets
            "prediction_median": float(np.median(p))}


def length_metrics(y_true, y_pred, *, seed: int = 0, n_boot: int = N_BOOT, groups=None,
                   censored=None, distribution=None, cap: float | None = None) -> dict:
    """MAE (+ its 95% BCa group-bootstrap CI, `stats`), RMSE, median AE, Kendall tau, Spearman rho, acc within +-50/100,
    the censoring metrics, the distribution metrics (null without `distribution`) and the
    prediction spread (`prediction_spread`).

    `groups` (one key per row): the bootstrap resamples groups (prompts), not rows, since the
    samples of one prompt are correlated; without it every row is its own group. `censored`
    (bool per row, `finish_reason == "length"`): those rows' targets are lower bounds (see
    `censoring_metrics`). `distribution` (`BinnedDistribution` over the same rows) and `cap`
    (the config's max_new_tokens): see `distribution_metrics`.
    """
    from scipy.stats import kendalltau, spearmanr
    from sklearn.metrics import mean_absolute_error, mean_squared_error, median_absolute_error

    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1 or len(y) == 0:
        raise ValueError(f"need two equal 1-d non-empty arrays, got {y.shape} and {p.shape}")
    err = np.abs(y - p)
    n_groups = int(len(np.unique(np.asarray(groups)))) if groups is not None else int(len(y))
    ci, method = (bootstrap_ci(err, seed=seed, n_boot=n_boot, groups=groups, method=True)
                  if n_groups >= MIN_GROUPS else (None, None))
    constant = np.ptp(p) == 0 or np.ptp(y) == 0  # rank correlations are undefined
    return {
        "n": int(len(y)),
        "groups": n_groups,
        "mae": float(mean_absolute_error(y, p)),
        "mae_ci95": ci,  # None with fewer than MIN_GROUPS groups
        "ci_unit": "group" if groups is not None else "row",
        "ci_method": method, "ci_n_boot": int(n_boot) if ci is not None else None,
        "ci_seed": int(seed) if ci is not None else None,
        "rmse": float(np.sqrt(mean_squared_error(y, p))),
        "median_ae": float(median_absolute_error(y, p)),
        "kendall_tau": None if constant else float(kendalltau(y, p).statistic),
        "spearman_rho": None if constant else float(spearmanr(y, p).statistic),
        "acc_50": float(np.mean(err <= 50)),
        "acc_100": float(np.mean(err <= 100)),
        **censoring_metrics(y, p, censored),
        **distribution_metrics(distribution, y, censored, cap),
        **prediction_spread(y, p),
    }


def null_metrics(keep: tuple[str, ...] = ()) -> dict:
    """Every metric of METRICS (and its interval) as null, except `keep`: what a record stores
    for the metrics its predictor does not produce, so that no reader takes an absent MAE for 0."""
    out = {}
    for m in METRICS:
        if m.key not in keep:
            out[m.key] = None
            if m.ci:
                out[m.ci] = None
    return out


def metric_value(record: dict, key: str) -> float | None:
    """A record's metric as tables and ranks read it: a finite number, else None (absent in an
    older record, null, NaN). A ranking predictor has only the order metrics, whatever a record
    says, so that no length metric of one is ever shown or ranked."""
    import math

    metric = next((m for m in METRICS if m.key == key), None)
    if (record.get("predictor") or {}).get("outputs") == "ranking" and metric is not None \
            and metric.needs != "order":
        return None
    metrics = record.get("metrics") or {}
    v = metrics.get(key)
    if key == "mae_capped" and v is None and "mae_capped" not in metrics:
        v = _capped_from_split(metrics)  # a record from before the column
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _capped_from_split(metrics: dict) -> float | None:
    """MAE over the capped rows of a record written before `mae_capped` existed, from its MAE,
    its MAE over complete rows and its censored share: mae = (1 - f) compl + f capped."""
    mae, compl, f = (metrics.get(k) for k in ("mae", "mae_complete", "censored_fraction"))
    if not all(isinstance(v, (int, float)) for v in (mae, f)) or not f > 0:
        return None
    if f < 1 and not isinstance(compl, (int, float)):
        return None
    return float((mae - (1 - f) * (compl or 0.0)) / f)


# -- distribution metrics ----------------------------------------------------------------------

def _row_caps(y: np.ndarray, censored, cap: float | None) -> np.ndarray:
    """Each row's cap c: a censored row's own length (its lower bound); for the other rows the
    config's `cap`, else the largest censored length, else none (inf: the plain CRPS)."""
    cut = np.zeros(len(y), bool) if censored is None else np.asarray(censored, bool)
    if cap is None:
        cap = float(y[cut].max()) if cut.any() else np.inf
    return np.where(cut, y, float(cap))


def _bin_integrals(edges: np.ndarray, f: np.ndarray, t: np.ndarray):
    """For each row, I = integral of F(x)^2 and J = integral of (1 - F(x))^2 over [e_0, t]
    (t clipped to [e_0, e_K]), exactly: F is linear within a bin, and a linear function from u
    to v over a width w integrates in square to w (u^2 + uv + v^2) / 3.

    edges (K+1,), f (N, K+1) the CDF at the edges, t (N,)."""
    w = np.diff(edges)  # (K,)
    g = 1.0 - f
    full_i = w * (f[:, :-1] ** 2 + f[:, :-1] * f[:, 1:] + f[:, 1:] ** 2) / 3  # (N, K)
    full_j = w * (g[:, :-1] ** 2 + g[:, :-1] * g[:, 1:] + g[:, 1:] ** 2) / 3
    cum_i = np.concatenate([np.zeros((len(f), 1)), np.cumsum(full_i, 1)], 1)  # (N, K+1)
    cum_j = np.concatenate([np.zeros((len(f), 1)), np.cumsum(full_j, 1)], 1)
    z = np.clip(t, edges[0], edges[-1])
    k = np.clip(np.searchsorted(edges, z, side="right") - 1, 0, len(w) - 1)  # bin holding z
    rows = np.arange(len(f))
    lo, fk, gk = edges[k], f[rows, k], g[rows, k]
    part = z - lo
    slope = np.divide(f[rows, k + 1] - fk, w[k], out=np.zeros(len(z)), where=w[k] > 0)
    fz = fk + slope * part
    gz = 1.0 - fz
    i = cum_i[rows, k] + part * (fk ** 2 + fk * fz + fz ** 2) / 3
    j = cum_j[rows, k] + part * (gk ** 2 + gk * gz + gz ** 2) / 3
    return i, j


def crps_binned(distribution, y_true, censored=None, cap: float | None = None) -> np.ndarray:
    """(N,) threshold-weighted CRPS (Gneiting & Ranjan 2011, weight 1{x < c}) of a binned
    distribution, in tokens: S = integral over x < c of (F(x) - 1{x >= y})^2 dx, exactly.

    c is each row's cap (`_row_caps`). A censored row (y = c, the true length at least c) scores
    the integral of F(x)^2 below c, all that its observation determines; a complete row is scored
    over the same range, so that the rule stays proper (scoring complete rows beyond the cap, and
    censored ones not, would reward a forecast for moving mass away from above the cap). It is the
    CRPS of the forecast of min(length, cap), and the plain CRPS when no mass lies beyond c.
    """
    edges = np.asarray(distribution.edges, np.float64)
    f = distribution.cdf_at_edges()  # (N, K+1)
    y = np.asarray(y_true, np.float64)
    if y.shape != (len(f),):
        raise ValueError(f"{len(f)} distributions for {y.shape} lengths")
    c = _row_caps(y, censored, cap)
    y = np.minimum(y, c)  # at or beyond the cap, 1{x >= y} is 0 for every x < c
    i_y, j_y = _bin_integrals(edges, f, y)
    _, j_c = _bin_integrals(edges, f, c)  # c = inf: up to e_K, beyond which F = 1
    # outside [e_0, e_K], F is 0 below and 1 beyond: x in (e_K, y) adds (1 - 0)^2 per token,
    # x in (y, min(c, e_0)) adds (0 - 1)^2
    outside = np.maximum(0.0, y - edges[-1]) + np.maximum(0.0, np.minimum(c, edges[0]) - y)
    return i_y + (j_c - j_y) + outside


def distribution_metrics(distribution, y_true, censored=None, cap: float | None = None) -> dict:
    """CRPS (`crps_binned`), coverage and width of the central 80% interval [q10, q90]; all null
    without a distribution. A censored row (its length at least its cap) counts as covered when
    q90 reaches the cap: it may lie inside, so censored rows can only raise the coverage."""
    if distribution is None:
        return {"crps": None, "coverage_80": None, "interval_width_80": None}
    y = np.asarray(y_true, np.float64)
    cut = np.zeros(len(y), bool) if censored is None else np.asarray(censored, bool)
    q10, q90 = distribution.quantile(0.1), distribution.quantile(0.9)
    covered = np.where(cut, q90 >= y, (q10 <= y) & (y <= q90))
    return {"crps": float(crps_binned(distribution, y, cut, cap).mean()),
            "coverage_80": float(covered.mean()),
            "interval_width_80": float(np.mean(q90 - q10))}


def censoring_metrics(y_true, y_pred, censored=None) -> dict:
    """A row cut at max_new_tokens gives a lower bound (the cap), not a length.

    - `censored_fraction`: the share of such rows;
    - `mae_complete`: MAE over the rows that ended by themselves (None if there are none);
    - `mae_capped`: MAE over the censored rows, each counted at its cap (None if there are
      none). Where the prediction is below the cap this is a lower bound of the true error.
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    cut = np.zeros(len(y), bool) if censored is None else np.asarray(censored, bool)
    err = np.abs(y - p)
    return {"censored_fraction": float(cut.mean()),
            "mae_complete": float(err[~cut].mean()) if (~cut).any() else None,
            "mae_capped": float(err[cut].mean()) if cut.any() else None}


def ranking_metrics(y_true, scores) -> dict:
    """For predictors that output a ranking score, not a length: only the order metrics; every
    length and distribution metric is null (a score has no error in tokens)."""
    from scipy.stats import kendalltau, spearmanr

    y, s = np.asarray(y_true, float), np.asarray(scores, float)
    constant = np.ptp(s) == 0 or np.ptp(y) == 0
    return {"n": int(len(y)),
            **null_metrics(keep=tuple(m.key for m in METRICS if m.needs == "order")),
            "kendall_tau": None if constant else float(kendalltau(y, s).statistic),
            "spearman_rho": None if constant else float(spearmanr(y, s).statistic)}


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
        out[str(t)] = {"n": int(mask.sum()),
                       PAPER_METRIC: float(np.mean(np.abs((y[mask] - t) - pred)))}
    return out
