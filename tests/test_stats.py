"""The one bootstrap (src/forelen/stats.py), Holm's correction and `forelen leaderboard compare`."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from forelen import cli
from forelen.stats import group_means, holm, interval, p_value


def test_bca_covers_a_skewed_statistic_at_the_stated_rate_where_percentile_does_not():
    """The plug-in variance of 15 normal draws (true value 1) is skewed and median-biased: its
    sampling distribution is sigma^2 chi2_14 / 15. Bootstrap replicates drawn from that law (the
    parametric bootstrap, so the answer is known) and the data's jackknife: BCa covers at ~95%,
    the percentile interval at ~86% (Efron & Tibshirani 1993, ch. 14)."""
    rng = np.random.default_rng(0)
    trials, n = 1000, 15
    bca = pct = 0
    for _ in range(trials):
        x = rng.normal(size=n)
        theta = x.var()
        reps = theta * rng.chisquare(n - 1, size=2000) / n
        jack = np.array([np.delete(x, i).var() for i in range(n)])
        (lo, hi), method = interval(theta, reps, jack)
        assert method == "bca"
        bca += lo <= 1.0 <= hi
        p_lo, p_hi = np.quantile(reps, [0.025, 0.975])
        pct += p_lo <= 1.0 <= p_hi
    assert 0.92 <= bca / trials <= 0.97
    assert pct / trials < 0.89


def test_basic_interval_where_bca_is_undefined():
    # every replicate above the estimate: the bias correction z0 is infinite
    (lo, hi), method = interval(1.0, np.linspace(1.5, 3.0, 1000), np.array([0.9, 1.0, 1.1]))
    assert method == "basic"
    assert lo == pytest.approx(2 * 1.0 - np.quantile(np.linspace(1.5, 3.0, 1000), 0.975))
    assert hi == pytest.approx(2 * 1.0 - np.quantile(np.linspace(1.5, 3.0, 1000), 0.025))
    assert interval(2.0, np.full(50, 2.0), np.ones(3)) == ([2.0, 2.0], "degenerate")


def test_p_value_inverts_the_interval():
    """p < 0.05 exactly when the 95% interval excludes 0, across effects from null to clear."""
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(60), 3)
    for shift in (0.0, 0.1, 0.2, 0.3, 0.5):
        d = rng.normal(shift, 1.0, size=len(groups))
        gm = group_means(d, groups, seed=0, n_boot=4000)
        theta, reps, jack = gm.column(0)
        (lo, hi), _ = interval(theta, reps, jack)
        p = p_value(theta, reps, jack)
        assert (p < 0.05) == (lo > 0 or hi < 0), (shift, p, lo, hi)


def test_group_means_resample_whole_units_and_jackknife_leaves_one_out():
    values = np.array([1.0, 1.0, 5.0, 9.0])
    groups = np.array(["a", "a", "b", "c"])
    gm = group_means(values, groups, seed=0, n_boot=500)
    assert gm.theta[0] == pytest.approx(4.0)
    # any replicate is a mean over whole units: with unit a drawn, both its rows come along
    assert set(np.round(gm.reps[:, 0] * 12).astype(int)) <= {
        round(12 * s / c) for s, c in _unit_sums([2.0, 5.0, 9.0], [2, 1, 1])}
    assert gm.jack[:, 0] == pytest.approx([(5 + 9) / 2, (1 + 1 + 9) / 3, (1 + 1 + 5) / 3])
    again = group_means(values, groups, seed=0, n_boot=500)
    assert np.array_equal(gm.reps, again.reps)  # one seed, the same draws


def _unit_sums(sums, counts):
    from itertools import combinations_with_replacement

    for draw in combinations_with_replacement(range(3), 3):
        yield sum(sums[i] for i in draw), sum(counts[i] for i in draw)


def test_holm_by_hand():
    # sorted p: 0.01, 0.02, 0.04 -> 3*0.01, max(0.03, 2*0.02), max(0.04, 1*0.04)
    assert holm([0.04, 0.01, 0.02]).tolist() == pytest.approx([0.04, 0.03, 0.04])
    adjusted = holm([0.5, np.nan, 0.001])
    assert np.isnan(adjusted[1]) and adjusted.tolist()[::2] == pytest.approx([0.5, 0.002])


def _main() -> int:
    try:
        cli.main()
    except SystemExit as exc:
        return exc.code or 0
    return 0


def _record(config, key, errors, groups, params=None, mae=True):
    return {"record_version": 1,
            "predictor": {"name": key.split("@")[0], "key": key, "version": "1",
                          "non_default_params": params or {}},
            "dataset": {"config": config},
            "metrics": {"mae": float(np.mean(errors)) if mae else None, "median_ae": 1.0,
                        "kendall_tau": 0.2, "crps": None, "coverage_80": None},
            "per_row": {"abs_error": list(map(float, errors)), "group": list(groups),
                        "rows_sha256": "rows-" + config}}


def test_compare_cli_pairs_every_variant_with_the_baseline(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(2)
    groups = [f"u{i // 2}" for i in range(200)]
    base = rng.exponential(100, size=200)
    recs = {
        "constant-median": base,
        "egtp": base * 0.8,  # 20% lower on every row: better
        "egtp@aa": base + rng.normal(0, 5, size=200),  # the same, up to noise: n.s.
        "plp": base * 1.3,  # worse
    }
    for key, err in recs.items():
        path = tmp_path / "res" / "cfg-cot" / f"{key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        params = {"decode": "median"} if key == "egtp@aa" else None
        path.write_text(json.dumps(_record("cfg-cot", key, err, groups, params)))
    ltr = _record("cfg-cot", "ltr", base, groups, mae=False)
    (tmp_path / "res" / "cfg-cot" / "ltr.json").write_text(json.dumps(ltr))
    monkeypatch.setattr(sys, "argv", ["forelen", "leaderboard", "compare", str(tmp_path / "res"),
                                      "--json"])
    assert _main() == 0
    out, err = capsys.readouterr()
    result = json.loads(out)["cfg-cot"]
    rows = {r["label"]: r for r in result["rows"]}
    assert rows["egtp"]["verdict"] == "better" and rows["egtp"]["ci95"][1] < 0
    assert rows["plp"]["verdict"] == "worse"
    assert rows["egtp median"]["verdict"] == "n.s."
    assert rows["ltr"]["skipped"] == "no MAE" and "p_holm" not in rows["ltr"]
    assert result["bootstrap"]["n_boot"] == 10_000 and result["bootstrap"]["method"].startswith("bca")
    # Holm: each adjusted p is at least the raw one, over the 3 records compared
    assert all(r["p_holm"] >= r["p_value"] for r in result["rows"] if "p_holm" in r)
    assert "Holm over the 3 records" in result["multiplicity"]
    assert max(len(line) for line in err.splitlines()) <= 80  # the table, on stderr with --json


def test_compare_without_the_baseline_is_one_line(tmp_path, monkeypatch, capsys):
    path = tmp_path / "res" / "c" / "egtp.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(_record("c", "egtp", [1.0, 2.0], ["a", "b"])))
    monkeypatch.setattr(sys, "argv", ["forelen", "leaderboard", "compare", str(tmp_path / "res")])
    code = _main()
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [
        "error: no config has a 'constant-median' record to compare against; evaluate it first "
        "(forelen evaluate --predictor constant-median)"]
