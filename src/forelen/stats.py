"""One bootstrap for every interval and test forelen publishes.

Every interval on a record, the page and the paper comparison comes from here, with one seed, one
replicate count and one method, which each output states:

- **Resampling:** partition units (prompts; a GSM-Symbolic template's variants; an rl prompt's
  samples) are drawn with replacement, the whole unit at once, and a statistic is recomputed on each
  draw. Paired comparisons reuse the same draws for both sides.
- **Replicates:** `N_BOOT` = 10,000 for anything published (`n_boot` in every output).
- **Interval:** BCa, the bias-corrected and accelerated percentile interval (Efron 1987, "Better
  bootstrap confidence intervals", JASA 82:171-185; Efron & Tibshirani 1993, ch. 14). The plain
  percentile interval assumes the bootstrap distribution is centred on the estimate; for the skewed,
  capped statistics here it is not (the v0.1.0 audit found a padding effect at the 95th percentile
  of its own replicates, where the percentile interval called a significant reversal "not
  significant"). BCa corrects the median bias (z0) and the skew of the estimate's standard error
  (the acceleration a, from the leave-one-unit-out jackknife), is transformation-respecting, and is
  second-order accurate. Where BCa is undefined (every replicate on one side of the estimate, a
  constant jackknife, or an adjusted level outside (0, 1)), the basic interval
  [2*theta - q(1-alpha/2), 2*theta - q(alpha/2)] is used, and the output says so.
- **p-values** invert the same interval: p is the smallest level at which the two-sided BCa (or
  basic) interval excludes the null value, so p < 0.05 exactly when the 95% interval excludes it.
- **Multiplicity:** `holm` (Holm 1979) controls the family-wise error rate over a family of tests
  (a config's rank table; the paper comparison's verdicts).

What callers use: `group_means` and `interval`/`p_value` for any smooth statistic of means;
`bootstrap_ci` (an MAE's interval), `paired_difference` (one pair of predictors on the same rows),
`pairwise_better` (every pair of a config, Holm-adjusted: the ranks), `group_resamples` (the row
indices of each draw, for statistics that are not means: the end-to-end simulation) and `holm`.
No other module draws a bootstrap.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

_NORMAL = NormalDist()  # scalar ppf/cdf: no scipy import on the engine's path (metrics imports this)

N_BOOT = 10_000
SEED = 0
LEVEL = 0.95
METHOD = "bca"
FALLBACK = "basic"
_CHUNK = 500  # replicates drawn at a time: bounds memory at _CHUNK x units


def settings(n_boot: int = N_BOOT, seed: int = SEED, level: float = LEVEL) -> dict:
    """What every output says about its intervals."""
    return {"method": f"{METHOD} ({FALLBACK} where BCa is undefined)", "n_boot": int(n_boot),
            "seed": int(seed), "level": float(level), "resampled": "partition units"}


def _units(groups, n: int) -> tuple[np.ndarray, int]:
    if groups is None:
        return np.arange(n), n
    _, index = np.unique(np.asarray(groups), return_inverse=True)
    return index.ravel(), int(index.max()) + 1


@dataclass(frozen=True)
class GroupMeans:
    """Column means of the full sample, of every bootstrap draw, and of every leave-one-unit-out
    sample: what any smooth function of the means needs for a BCa interval."""

    theta: np.ndarray  # (k,)
    reps: np.ndarray  # (n_boot, k)
    jack: np.ndarray  # (units, k)
    n_boot: int
    seed: int

    def column(self, j: int) -> tuple[float, np.ndarray, np.ndarray]:
        return float(self.theta[j]), self.reps[:, j], self.jack[:, j]


def unit_weights(groups, n: int, *, seed: int = SEED, n_boot: int = N_BOOT):
    """Yield (start, counts) blocks: counts[b, u] = how often unit u is drawn in replicate b.
    The draws depend only on (seed, number of units, n_boot), so every statistic over the same
    units shares the same replicates."""
    _, g = _units(groups, n)
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, _CHUNK):
        size = min(_CHUNK, n_boot - start)
        draws = rng.integers(0, g, size=(size, g))
        flat = (np.arange(size)[:, None] * g + draws).ravel()
        yield start, np.bincount(flat, minlength=size * g).reshape(size, g).astype(np.float64)


def group_means(values, groups=None, *, seed: int = SEED, n_boot: int = N_BOOT) -> GroupMeans:
    """Bootstrap and jackknife of the row means of `values` ((n,) or (n, k)), resampling units."""
    v = np.asarray(values, np.float64)
    v = v[:, None] if v.ndim == 1 else v
    index, g = _units(groups, v.shape[0])
    sums = np.zeros((g, v.shape[1]))
    np.add.at(sums, index, v)
    counts = np.bincount(index, minlength=g).astype(np.float64)
    reps = np.empty((n_boot, v.shape[1]))
    for start, w in unit_weights(groups, v.shape[0], seed=seed, n_boot=n_boot):
        reps[start:start + len(w)] = (w @ sums) / (w @ counts)[:, None]
    total, n = sums.sum(0), counts.sum()
    jack = ((total[None] - sums) / (n - counts)[:, None]) if g > 1 else np.full((1, v.shape[1]), np.nan)
    return GroupMeans(total / n, reps, jack, n_boot, seed)


def _acceleration(jack) -> float | None:
    if jack is None:
        return None
    jack = np.atleast_1d(np.asarray(jack, np.float64))
    if len(jack) < 2 or not np.all(np.isfinite(jack)):
        return None
    d = jack.mean() - jack
    ss = float(np.sum(d ** 2))
    return None if ss == 0 else float(np.sum(d ** 3) / (6 * ss ** 1.5))


def _bias(theta: float, reps: np.ndarray) -> float | None:
    share = (np.sum(reps < theta) + 0.5 * np.sum(reps == theta)) / len(reps)
    return None if share <= 0 or share >= 1 else float(_NORMAL.inv_cdf(share))


def _bca_levels(z0: float, a: float, level: float) -> tuple[float, float] | None:
    out = []
    for z in (_NORMAL.inv_cdf((1 - level) / 2), _NORMAL.inv_cdf(1 - (1 - level) / 2)):
        denom = 1 - a * (z0 + z)
        if denom <= 0:
            return None
        out.append(float(_NORMAL.cdf(z0 + (z0 + z) / denom)))
    return None if not 0 < out[0] < out[1] < 1 else (out[0], out[1])


def interval(theta: float, reps, jack, level: float = LEVEL) -> tuple[list[float], str]:
    """([lo, hi], method) of `theta` from its bootstrap replicates and jackknife values."""
    reps = np.asarray(reps, np.float64)
    reps = reps[np.isfinite(reps)]
    if len(reps) == 0:
        return [float("nan"), float("nan")], "none"
    if np.ptp(reps) == 0:
        return [float(reps[0]), float(reps[0])], "degenerate"
    z0, a = _bias(theta, reps), _acceleration(jack)
    levels = _bca_levels(z0, a, level) if z0 is not None and a is not None else None
    if levels is not None:
        lo, hi = np.quantile(reps, levels)
        return [float(lo), float(hi)], METHOD
    tail = (1 - level) / 2
    q_lo, q_hi = np.quantile(reps, [tail, 1 - tail])
    return [float(2 * theta - q_hi), float(2 * theta - q_lo)], FALLBACK


def p_value(theta: float, reps, jack, null: float = 0.0) -> float:
    """Two-sided p of `theta` = `null`: the smallest 1 - level whose interval (same method as
    `interval`) excludes `null`. Bounded below by the replicate count (1 / n_boot)."""
    reps = np.asarray(reps, np.float64)
    reps = reps[np.isfinite(reps)]
    if len(reps) == 0:
        return float("nan")
    if np.ptp(reps) == 0:
        return 1.0 if reps[0] == null else 0.0
    floor = 1.0 / len(reps)
    z0, a = _bias(theta, reps), _acceleration(jack)
    share = (np.sum(reps < null) + 0.5 * np.sum(reps == null)) / len(reps)
    if z0 is not None and a is not None and 0 < share < 1:
        dz = float(_NORMAL.inv_cdf(share)) - z0
        if 1 + a * dz > 0:
            z_alpha = dz / (1 + a * dz) - z0
            tail = float(_NORMAL.cdf(z_alpha))
            return float(min(1.0, max(floor, 2 * min(tail, 1 - tail))))
    basic = 2 * theta - reps  # the basic interval's distribution
    tail = min(np.mean(basic <= null), np.mean(basic >= null))
    return float(min(1.0, max(floor, 2 * tail)))


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979, Scand. J. Statist. 6:65-70): reject where
    adjusted p < alpha keeps the family-wise error rate at alpha. NaN stays NaN, outside the family."""
    p = np.asarray(pvalues, np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


# -- the helpers every caller uses ------------------------------------------------------------

def group_resamples(groups, *, seed: int | None = None, n_boot: int = N_BOOT):
    """Yield the row indices of `n_boot` group bootstrap resamples, one at a time: whole groups
    drawn with replacement, each row listed as often as its group was drawn, rows in their order.

    The draws are those of `unit_weights` (seed `stats.SEED` unless given): the same groups
    (units in sorted order), seed and count give the same draws, so resample b here is replicate b
    of every interval here over the same rows (an MAE's, the end-to-end bootstrap of
    `simulator.endtoend`), and two predictors' records over the same rows pair replicate by
    replicate. A generator: 10,000 resamples are never held at once."""
    index, _ = _units(groups, len(np.asarray(groups)))
    rows = np.arange(len(index))
    for _, counts in unit_weights(groups, len(index), seed=SEED if seed is None else seed,
                                  n_boot=n_boot):
        for drawn in counts.astype(np.int64):
            yield np.repeat(rows, drawn[index])


def paired_difference(err_a, err_b, groups=None, *, seed: int = 0, n_boot: int = N_BOOT,
                      level: float = 0.95) -> dict:
    """Paired group bootstrap of MAE(a) - MAE(b) over the same test rows (BCa interval,
    basic where BCa is undefined; p inverts the same interval).

    `significant` when the interval of the difference excludes 0: then `a` is significantly
    better (diff < 0) or worse (diff > 0) than `b` at `level`."""
    a, b = np.asarray(err_a, np.float64), np.asarray(err_b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired errors need the same rows, got {a.shape} and {b.shape}")
    gm = group_means(a - b, groups, seed=seed, n_boot=n_boot)
    theta, reps, jack = gm.column(0)
    (lo, hi), method = interval(theta, reps, jack, level)
    return {"diff": theta, "ci95": [lo, hi], "significant": bool(lo > 0 or hi < 0),
            "p_value": p_value(theta, reps, jack), "method": method, "n_boot": int(n_boot),
            "seed": int(seed)}


def bootstrap_ci(abs_err, *, seed: int = 0, n_boot: int = N_BOOT, level: float = 0.95,
                 groups=None, method: bool = False):
    """BCa bootstrap CI of the mean absolute error, resampling groups (prompts) when
    `groups` is given, else rows. With `method`: ([lo, hi], "bca" | "basic" | ...)."""
    gm = group_means(abs_err, groups, seed=seed, n_boot=n_boot)
    ci, used = interval(*gm.column(0), level)
    return (ci, used) if method else ci


def pairwise_better(errors, groups, *, seed: int = SEED, n_boot: int = N_BOOT,
                    level: float = LEVEL) -> np.ndarray:
    """better[i, j]: column i of `errors` (rows x k per-row losses, e.g. absolute errors) has a
    significantly lower mean than column j, by the paired BCa test of every pair at `level` on
    one set of draws, Holm-adjusted over all k(k-1)/2 pairs."""
    errors = np.asarray(errors, np.float64)
    gm = group_means(errors, groups, seed=seed, n_boot=n_boot)
    k = errors.shape[1]
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    diffs = [gm.theta[i] - gm.theta[j] for i, j in pairs]
    ps = [p_value(d, gm.reps[:, i] - gm.reps[:, j], gm.jack[:, i] - gm.jack[:, j])
          for d, (i, j) in zip(diffs, pairs)]
    better = np.zeros((k, k), bool)
    for (i, j), d, q in zip(pairs, diffs, holm(ps)):
        if q < 1 - level:
            better[(i, j) if d < 0 else (j, i)] = True
    return better
