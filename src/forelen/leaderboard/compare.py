"""Every record of a config against one baseline: paired group-bootstrap differences in MAE.

`forelen leaderboard compare RESULTS --baseline constant-median` answers "which of these variants
beats the baseline, and by how much, with what confidence": for each config, each record that
scored the same test rows as the baseline (same `per_row.rows_sha256`) gets the paired difference
MAE(record) - MAE(baseline) with its BCa interval and p (`forelen.stats`, 10,000 replicates
over partition units), and Holm's correction over the records compared within the config.
"""

from __future__ import annotations

import numpy as np

from forelen.errors import ForelenError
from forelen.metrics import COMPARED, ORDER_METRIC, RANKED_BY
from forelen.stats import N_BOOT, SEED, holm, paired_difference, settings


def label(body: dict) -> str:
    """A record's predictor, with the values of its non-default parameters: `egtp median,survival`."""
    p = body["predictor"]
    changed = p.get("non_default_params") or {}
    return p.get("key", p["name"]).split("@")[0] + (
        " " + ",".join(str(v) for v in changed.values()) if changed else "")


def compare(bodies: list[dict], baseline: str, *, n_boot: int = N_BOOT, seed: int = SEED) -> dict:
    """{config: {"baseline", "n", "units", "rows": [...]}} for every config holding `baseline`
    (its registered name or record key, default parameters)."""
    by_config: dict[str, list[dict]] = {}
    for b in bodies:
        by_config.setdefault(b["dataset"]["config"], []).append(b)
    out = {}
    for config, recs in sorted(by_config.items()):
        base = [r for r in recs if r["predictor"].get("key", r["predictor"]["name"]) == baseline]
        if not base:
            continue
        base = base[0]
        if not base.get("per_row"):
            raise ForelenError(f"{config}: the {baseline} record has no per-row errors to pair")
        b_err = np.asarray(base["per_row"]["abs_error"], np.float64)
        groups = np.asarray(base["per_row"]["group"])
        rows = []
        for r in recs:
            if r is base:
                continue
            row = {"predictor": r["predictor"].get("key", r["predictor"]["name"]),
                   "label": label(r), "params": r["predictor"].get("non_default_params") or {},
                   **{k: r["metrics"].get(k) for k in COMPARED}}
            pr = r.get("per_row")
            if r["metrics"].get(RANKED_BY) is None or not pr:
                row["skipped"] = ("no MAE" if r["metrics"].get(RANKED_BY) is None
                                  else "no per-row errors")
            elif pr.get("rows_sha256") != base["per_row"].get("rows_sha256"):
                row["skipped"] = "scored other test rows than the baseline"
            else:
                row.update(paired_difference(pr["abs_error"], b_err, groups, seed=seed,
                                             n_boot=n_boot))
            rows.append(row)
        tested = [i for i, r in enumerate(rows) if "p_value" in r]
        adjusted = holm([rows[i]["p_value"] for i in tested])
        for i, p in zip(tested, adjusted):
            r = rows[i]
            r["p_holm"] = float(p)
            r["verdict"] = ("n.s." if p >= 0.05 else "better" if r["diff"] < 0 else "worse")
        rows.sort(key=lambda r: (r.get(RANKED_BY) is None, r.get(RANKED_BY) or 0.0))
        out[config] = {"baseline": base["predictor"].get("key"),
                       "baseline_mae": base["metrics"][RANKED_BY],
                       "n": len(b_err), "units": int(len(np.unique(groups))),
                       "bootstrap": settings(n_boot, seed),
                       "multiplicity": f"Holm over the {len(tested)} records compared in this config",
                       "rows": rows}
    if not out:
        raise ForelenError(f"no config has a {baseline!r} record to compare against; "
                           f"evaluate it first (forelen evaluate --predictor {baseline})")
    return out


def _f(v, digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def format_table(result: dict) -> str:
    """80 columns: predictor, MAE, tau, the difference and its interval, Holm's p, the verdict."""
    lines = []
    for config, c in result.items():
        lines += [f"{config}: {c['n']} test rows in {c['units']} units; vs {c['baseline']} "
                  f"(MAE {c['baseline_mae']:.1f})",
                  f"{'predictor':<26}{'MAE':>6}{'tau':>7}{'diff':>7}  {'95% CI':<16}"
                  f"{'p Holm':>7} verdict"]
        for r in c["rows"]:
            head = f"{r['label'][:25]:<26}{_f(r[RANKED_BY]):>6}{_f(r[ORDER_METRIC], 3):>7}"
            if "diff" not in r:
                lines.append(f"{head}  ({r.get('skipped')})")
                continue
            ci = f"[{r['ci95'][0]:+.1f}, {r['ci95'][1]:+.1f}]"
            p = "<0.001" if r["p_holm"] < 0.001 else f"{r['p_holm']:.3f}"
            lines.append(f"{head}{r['diff']:>+7.1f}  {ci:<16}{p:>7} {r['verdict']}")
        b = next(iter(result.values()))["bootstrap"]
        lines.append("")
    lines += [f"paired group bootstrap over partition units: {b['method']},",
              f"{b['n_boot']:,} replicates, seed {b['seed']}; p adjusted by Holm within each config"]
    return "\n".join(lines)
