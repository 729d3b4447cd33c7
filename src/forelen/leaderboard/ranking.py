"""How a config's predictors rank: which are flagged (constant, fallback), which are ranked,
and the significance behind each rank (a paired group bootstrap from `forelen.stats`, Holm over
every pair). The release manifest stores these for scripts, the page and `forelen leaderboard
report` show them; this module computes, the renderer only draws.
"""

from __future__ import annotations

from forelen.metrics import (CONSTANT_SPREAD, MIN_GROUPS, ORDER_METRIC, RANKED, RANKED_BY,
                             metric_value)
from forelen.stats import N_BOOT, SEED, pairwise_better


def kind(p: dict) -> str:
    """oracle: shown beside the ranking, never in it; ranking: scores only (tau, rho); else ranked."""
    if not p.get("ranked", True):
        return "oracle"
    return "ranking" if p.get("outputs") == "ranking" else "ranked"


# -- flags: what a rank alone would hide ---------------------------------------------------------

FALLBACK_RATE = 0.5  # above it, a predictor answers most test rows with its fallback
# diagnostics (`Predictor.diagnostics()`, in the record) that count rows given a fallback: what
FALLBACK_DIAGNOSTICS = {"parse_failure_rate": "the train median"}
MODAL_CONSTANT = 0.95  # records without `prediction_spread`: one class on this share of rows


def constant_reason(record: dict, taus_defined: bool = True) -> str | None:
    """Why a learned length predictor's test predictions are (nearly) constant, else None.

    References are constants by design: never flagged. A record with `metrics.prediction_spread`
    is judged by it (`metrics.CONSTANT_SPREAD`). Older records (v0.1.0) store neither predictions
    nor targets, so: one class on >= MODAL_CONSTANT of the rows (`modal_class_rate`, ltr-c), or a
    Kendall tau left null (evaluation nulls it when the predictions do not vary) while the config's
    other records have one (`taus_defined`: the targets vary).
    """
    p = record["predictor"]
    if p.get("family") == "reference" or kind(p) != "ranked" \
            or metric_value(record, RANKED_BY) is None:
        return None
    spread = metric_value(record, "prediction_spread")
    if spread is not None:
        if spread > CONSTANT_SPREAD:
            return None
        median = metric_value(record, "prediction_median")
        return (f"90% of its predictions lie within {CONSTANT_SPREAD:.0%} of the true lengths' "
                f"spread" + (f", around {median:,.0f}" if median is not None else ""))
    modal = metric_value({"metrics": record.get("diagnostics") or {}}, "modal_class_rate")
    if modal is not None and modal >= MODAL_CONSTANT:
        return f"one class for {modal:.0%} of the test rows"
    if taus_defined and metric_value(record, ORDER_METRIC) is None:
        return "the same prediction for every test row (Kendall tau undefined)"
    return None


def flags(records: list[dict]) -> dict[str, list[dict]]:
    """Per predictor of one config, its flags: `constant` (left out of the ranking) and
    `fallback` (above FALLBACK_RATE of the test rows); each with a short text and a title."""
    taus = any(metric_value(r, ORDER_METRIC) is not None for r in records)
    out: dict[str, list[dict]] = {}
    for r in records:
        got = []
        why = constant_reason(r, taus)
        if why:
            got.append({"flag": "constant", "text": "constant",
                        "title": f"(nearly) constant predictions: {why}; not ranked"})
        for key, fallback in FALLBACK_DIAGNOSTICS.items():
            rate = metric_value({"metrics": r.get("diagnostics") or {}}, key)
            if rate is not None and rate > FALLBACK_RATE:
                got.append({"flag": "fallback", "text": f"fallback {rate:.0%}", "rate": rate,
                            "to": fallback,
                            "title": f"falls back to {fallback} on {rate:.0%} of the test rows "
                                     f"({key.replace('_', ' ')})"})
        if got:
            out[r["predictor"]["name"]] = got
    return out


def constants(records: list[dict]) -> set[str]:
    return {name for name, fs in flags(records).items() if any(f["flag"] == "constant" for f in fs)}


def rankable(records: list[dict]) -> list[dict]:
    """The records a config ranks: length predictors with an MAE, not oracles, not constants."""
    out = constants(records)
    return [r for r in records if kind(r["predictor"]) == "ranked"
            and metric_value(r, RANKED_BY) is not None and r["predictor"]["name"] not in out]


STABILITY_SEEDS = 30
SIGNIFICANCE = {"level": 0.95, "n_boot": N_BOOT, "seed": SEED,
                "method": "BCa (basic where BCa is undefined), src/forelen/stats.py",
                "test": f"paired group bootstrap of the {RANKED.label} difference (groups = "
                        "partition units: prompts, a template's or an article's prompts "
                        "together)",
                "multiplicity": "Holm over every pair of ranked predictors within a config",
                "stability": f"ranks recomputed under bootstrap seeds 0-{STABILITY_SEEDS - 1}; "
                             "a rank that varies is shown as its range"}
_SIG_CACHE: dict = {}


def _pairwise_better(errors, groups, seed: int):
    """better[i, j]: predictor i has a significantly lower MAE than j (`stats.pairwise_better`
    at SIGNIFICANCE's level and replicates)."""
    return pairwise_better(errors, groups, seed=seed, n_boot=SIGNIFICANCE["n_boot"],
                           level=SIGNIFICANCE["level"])


def significance(records: list[dict]) -> dict[str, dict]:
    """Per ranked predictor of one config: its rank = 1 + the number of predictors whose MAE is
    significantly lower (a paired group bootstrap over the same test rows, BCa, Holm over all
    pairs of the config), whether it is significantly better than the best reference and than
    the best predictor, and how stable its rank is: the share of STABILITY_SEEDS bootstrap seeds
    that give the published rank, and the range of ranks they give.

    Ties are honest: predictors no test separates share a rank, as on Chatbot-Arena-style boards.
    Records without per-row errors (older ones) fall back to their MAE order. Constant predictors
    (`flags`) are not ranked and count in no other predictor's rank.
    """
    import numpy as np

    ranked = rankable(records)
    rows = {(r.get("per_row") or {}).get("rows_sha256") for r in ranked}
    if not ranked or None in rows or len(rows) != 1:
        return {name: {"rank": rank, "tested": False} for name, rank in metric_ranks(records).items()}
    if len(set(ranked[0]["per_row"]["group"])) < MIN_GROUPS:  # too few units to test anything
        return {r["predictor"]["name"]: {"rank": 1, "tested": False, "too_few_groups": True}
                for r in ranked}
    names = [r["predictor"]["name"] for r in ranked]
    errors = np.array([r["per_row"]["abs_error"] for r in ranked]).T  # rows x predictors
    groups = ranked[0]["per_row"]["group"]
    key = (tuple(names), rows.pop(), errors.tobytes())
    if key in _SIG_CACHE:
        return _SIG_CACHE[key]
    seeds = [SIGNIFICANCE["seed"]] + [s for s in range(STABILITY_SEEDS) if s != SIGNIFICANCE["seed"]]
    by_seed = [_pairwise_better(errors, groups, s) for s in seeds[:STABILITY_SEEDS]]
    ranks = np.array([1 + b.sum(axis=0) for b in by_seed])  # seeds x predictors
    better = by_seed[0]
    mae = errors.mean(axis=0)
    refs = [i for i, r in enumerate(ranked) if r["predictor"].get("family") == "reference"]
    best_ref = min(refs, key=lambda i: mae[i]) if refs else None
    best = int(np.argmin(mae))
    out = {}
    for i, name in enumerate(names):
        out[name] = {
            "rank": int(ranks[0, i]), "tested": True,
            "rank_interval": [int(ranks[:, i].min()), int(ranks[:, i].max())],
            "rank_stability": float(np.mean(ranks[:, i] == ranks[0, i])),
            "vs_ref": None if best_ref is None or i == best_ref else
            "better" if better[i, best_ref] else "worse" if better[best_ref, i] else "n.s.",
            "best_ref": names[best_ref] if best_ref is not None else None,
            "vs_best": "best" if i == best else "worse" if better[best, i] else "n.s.",
            "best": names[best]}
    _SIG_CACHE[key] = out
    return out


def metric_ranks(records: list[dict]) -> dict[str, float]:
    """Rank (1 = lowest MAE, ties share the mean rank) of the ranked length predictors of a config
    (`rankable`: constants left out)."""
    scored = sorted((metric_value(r, RANKED_BY), r["predictor"]["name"]) for r in rankable(records))
    ranks, i = {}, 0
    while i < len(scored):
        j = i
        while j + 1 < len(scored) and scored[j + 1][0] == scored[i][0]:
            j += 1
        for _, name in scored[i:j + 1]:
            ranks[name] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def summary(records: list[dict], sig: dict | None = None) -> str:
    """One config's plain reading: does any learned predictor beat the best reference (the
    lowest-MAE non-oracle reference) significantly (`significance`), and which predictors are
    constants left out of the ranking."""
    sig = significance(records) if sig is None else sig
    by_name = {r["predictor"]["name"]: r for r in records}
    mae = {n: metric_value(by_name[n], RANKED_BY) for n in sig}
    refs = sorted((n for n in sig if by_name[n]["predictor"].get("family") == "reference"),
                  key=lambda n: (mae[n], n))
    learned = sorted((n for n in sig if n not in refs), key=lambda n: (mae[n], n))
    if not refs:
        text = "No reference predictor here: nothing to compare with."
    elif not learned:
        text = (f"No learned length predictor is ranked here; {refs[0]} scores MAE "
                f"{mae[refs[0]]:,.1f}.")
    else:
        ref, best = refs[0], learned[0]
        against = f"{ref} (MAE {mae[ref]:,.1f})"
        wins = [n for n in learned if sig[n].get("vs_ref") == "better"]
        if not sig[best].get("tested"):
            why = ("too few test prompts" if sig[best].get("too_few_groups")
                   else "records without per-row errors")
            text = (f"Not tested ({why}): the lowest learned MAE is {best}'s "
                    f"({mae[best]:,.1f}), against {against}.")
        elif wins:
            text = (f"{len(wins)} learned predictor{'s beat' if len(wins) > 1 else ' beats'} "
                    f"{against} significantly; the best is {wins[0]} (MAE {mae[wins[0]]:,.1f}).")
        else:
            text = (f"No learned predictor beats {against} significantly; the closest is {best} "
                    f"(MAE {mae[best]:,.1f}).")
    flat = sorted(constants(records))
    if flat:
        text += (f" {_names(flat)} predict{'s' if len(flat) == 1 else ''} a constant and "
                 f"{'is' if len(flat) == 1 else 'are'} not ranked.")
    return text


def keyed(record: dict) -> dict:
    """The record as the tables see it: a predictor run with non-default parameters is its own
    row, named by its key (`egtp@1a2b3c4d`); cards stay per predictor."""
    p = record["predictor"]
    key = p.get("key") or p["name"]
    return record if key == p["name"] else {**record, "predictor": {**p, "name": key}}
