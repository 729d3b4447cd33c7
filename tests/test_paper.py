"""The paper comparison: verdicts computed from records alone, each number traceable to a record."""

from __future__ import annotations

import copy
import json
import sys

import numpy as np
import pytest

from forelen import cli
from forelen.leaderboard import release as rel
from forelen.leaderboard.freeze import make_release
from forelen.leaderboard.paper import (format_side_by_side, hypothesis, paper_comparison,
                                      side_by_side, verdict)
from forelen.metrics import OBSERVED_STEPS
from forelen.simulator.endtoend import Scenario, SimSettings, series

GROUPS = 30  # prompts in the synthetic test partitions
PER_GROUP = 4


def _targets(seed: int = 0):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(GROUPS), PER_GROUP)
    y = np.maximum(1, (rng.gamma(2.0, 120.0, GROUPS)[groups] + rng.normal(0, 30, len(groups))))
    return np.round(y), groups


def record(config: str, split: str, name: str, errors, groups, y, *, family="hidden-state",
           prediction=None, **extra) -> dict:
    errors = np.asarray(errors, np.float64)
    r = {"record_version": 1,
         "predictor": {"name": name, "key": name, "version": "1", "family": family,
                       "outputs": "length", "ranked": True},
         "dataset": {"config": config, "split": split, "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
                     "sources": ["mmath-pkg"], "source_mix": "packaged (offline fallback)",
                     "fingerprint": "f" * 64},
         "metrics": {"mae": float(errors.mean()), "groups": int(len(set(groups)))},
         "references": {"test_rows": len(y), "test_truncation_rate": 0.12},
         "per_row": {"abs_error": errors.round(3).tolist(), "group": list(map(int, groups)),
                     "rows_sha256": f"rows-{config}"}}
    r.update(extra)
    return r


def _row(block, claim, scope, what=""):
    for c in block["claims"]:
        if c["id"] == claim:
            rows = [r for r in c["rows"] if r["scope"] == scope and what in r["what"]]
            assert rows, [r["what"] for r in c["rows"]]
            return rows[0]
    raise AssertionError(f"no claim {claim}")


def test_verdicts_follow_sign_and_interval():
    assert verdict(-0.2, [-0.3, -0.1]) == "reproduced"
    assert verdict(-0.2, [-0.4, 0.05]) == "same direction, not significant"
    assert verdict(0.2, [0.1, 0.3]) == "reversed"
    assert verdict(0.2, [-0.1, 0.3]) == "reversed, not significant"
    assert verdict(-0.01, [0.01, 0.2]) == "reversed"  # the interval decides, not the point
    assert verdict(-0.2, None) == "not tested"
    assert verdict(None, [0, 1]) == "not tested"


def test_pooling_ablation_and_best_baseline():
    y, groups = _targets()
    rng = np.random.default_rng(1)
    base = np.abs(rng.normal(0, 60, len(y)))
    errors = {"egtp": base * 0.5,  # clearly better than max: reproduced
              "pool-max": base,
              "pool-last": base * 1.0 + rng.normal(0, 3, len(y)).clip(-base),  # ~ max: not sig.
              "pool-mean": base * 0.7,  # below last: the paper's order reversed
              "trail": base * 0.8, "s3": base * 1.5, "constant-median": base * 0.1}
    recs = [record("m-cot", "cot", n, e, groups, y,
                   family="reference" if n == "constant-median" else
                   "text-proxy" if n == "s3" else "hidden-state") for n, e in errors.items()]
    block = paper_comparison(recs)
    assert _row(block, "a", "m-cot", "EGTP vs max")["verdict"] == "reproduced"
    assert _row(block, "a", "m-cot", "max vs last")["verdict"].endswith("not significant")
    assert _row(block, "a", "m-cot", "last token vs mean")["verdict"] == "reversed"
    # the reversed row says why it might be, labelled as a guess, from facts in the records
    hyp = _row(block, "a", "m-cot", "last token vs mean")["hypothesis"]
    assert hyp.startswith("Hypothesis (untested)") and "SmolLM2-135M-Instruct" in hyp
    assert "12% of test rows are cut" in hyp
    # paper figures of the reasoning column, ours = the records' MAE; the records are named
    row = _row(block, "a", "m-cot", "EGTP vs max")
    assert row["paper"] == [133.57, 137.88]
    assert row["ours"][0]["value"] == pytest.approx(recs[0]["metrics"]["mae"])
    assert row["records"] == ["records/m-cot/egtp.json", "records/m-cot/pool-max.json"]
    assert [side["from"] for side in row["ours"]] == row["records"]
    lo, hi = row["ours"][0]["ci95"]
    assert lo < row["ours"][0]["value"] < hi
    # (b): the best baseline is trail (references and ablations are not baselines)
    b = _row(block, "b", "m-cot")
    assert "(trail)" in b["what"] and b["verdict"] == "reproduced"
    assert b["effect"]["value"] == pytest.approx(0.5 / 0.8 - 1, rel=1e-3)


def test_average_rows_need_two_configs_and_use_the_paper_average():
    y, groups = _targets()
    recs = []
    for config, split in (("m-cot", "cot"), ("m-long", "long")):
        base = np.abs(np.random.default_rng(len(config)).normal(0, 60, len(y))) + 1
        for i, n in enumerate(("egtp", "pool-max", "pool-last", "pool-mean", "trail")):
            recs.append(record(config, split, n, base * (1 + 0.3 * i), groups, y))
    block = paper_comparison(recs)
    row = _row(block, "a", "average of 2 configs", "EGTP vs max")
    assert row["paper"] == [103.47, 119.69] and row["verdict"] == "reproduced"
    # (b) averaged both ways: the paper's averages give -25.0%, the -29.16% it states cannot be
    # traced, so the ratio of averages stands beside the mean of per-config effects
    ratio = _row(block, "b", "average of 2 configs", "ratio of average MAEs")
    assert ratio["paper"] == [103.47, 137.96]
    assert ratio["paper_effect"] == pytest.approx(103.47 / 137.96 - 1)
    assert len(ratio["records"]) == 4
    mean = _row(block, "b", "average of 2 configs", "mean of per-config effects")
    assert mean["paper_effect"] == pytest.approx(-0.2916)


def test_each_generator_is_compared_on_its_own_configs():
    """Two generators in one release: each gets its own rows and its own averages (an average
    never mixes them), side by side under each claim, so a verdict that moves with the
    generator shows."""
    y, groups = _targets()
    recs = []
    for gen, egtp_best in (("small-1m", False), ("big-9b", True)):
        for split in ("cot", "long"):
            base = np.abs(np.random.default_rng(len(split)).normal(0, 60, len(y))) + 1
            for i, n in enumerate(("egtp", "pool-max", "pool-last", "pool-mean", "trail")):
                rank = i if egtp_best else 4 - i  # big-9b: egtp the best; small-1m: the worst
                recs.append(record(f"{gen}-{split}", split, n, base * (1 + 0.3 * rank), groups,
                                   y))
    block = paper_comparison(recs)
    pooling = next(c for c in block["claims"] if c["id"] == "a")
    assert {r["generator"] for r in pooling["rows"]} == {"small-1m", "big-9b"}
    assert not any(r["scope"].startswith("average") for r in pooling["rows"])
    small = _row(block, "a", "small-1m: average of 2 configs", "EGTP vs max")
    big = _row(block, "a", "big-9b: average of 2 configs", "EGTP vs max")
    assert small["generator"] == "small-1m" and big["generator"] == "big-9b"
    assert all(path.startswith("records/small-1m-") for path in small["records"])
    assert all(path.startswith("records/big-9b-") for path in big["records"])
    assert big["verdict"] == "reproduced" and small["verdict"] == "reversed"
    assert _row(block, "a", "big-9b-cot", "EGTP vs max")["generator"] == "big-9b"


def _two_generators():
    y, groups = _targets()
    recs = []
    for gen, egtp_best in (("small-1m", False), ("big-9b", True)):
        for split in ("cot", "long"):
            base = np.abs(np.random.default_rng(len(split)).normal(0, 60, len(y))) + 1
            for i, n in enumerate(("egtp", "pool-max", "pool-last", "pool-mean", "trail")):
                rank = i if egtp_best else 4 - i  # big-9b: egtp the best; small-1m: the worst
                recs.append(record(f"{gen}-{split}", split, n, base * (1 + 0.3 * rank), groups,
                                   y))
    return recs


def test_verdicts_line_up_generator_by_generator():
    """The side-by-side view: one line per comparison and generator, each generator's average
    over its configs, so a verdict that turns with the generator reads off one block."""
    block = paper_comparison(_two_generators())
    table = side_by_side(block)
    assert table["generators"] == ["small-1m", "big-9b"]  # by the size in the name
    rows = {(r["claim"], r["label"]): r for r in table["rows"]}
    egtp_max = rows[("a", "EGTP vs max")]["cells"]
    assert egtp_max["big-9b"]["verdict"] == "reproduced"
    assert egtp_max["small-1m"]["verdict"] == "reversed"
    assert egtp_max["big-9b"]["scope"] == "big-9b: average of 2 configs"
    # the cell is the claim row's own figures, not a recomputation
    own = _row(block, "a", "small-1m: average of 2 configs", "EGTP vs max")
    assert egtp_max["small-1m"]["effect"] == own["effect"]["value"]
    assert egtp_max["small-1m"]["p_holm"] == own["p_holm"]
    # claim b's two averages line up although each generator's baseline is named in its row
    assert {k[1] for k in rows if k[0] == "b"} == {"EGTP vs one baseline, ratio of averages",
                                                  "EGTP vs each config's best, mean effect"}
    assert all(set(r["cells"]) == {"big-9b", "small-1m"} for r in table["rows"])
    text = format_side_by_side(table)
    assert max(len(line) for line in text.splitlines()) <= 80
    block_a = text.split("(b)")[0]
    assert "big-9b" in block_a and "reproduced" in block_a and "reversed" in block_a


def test_paper_cli_prints_the_verdicts_and_json(tmp_path, monkeypatch, capsys):
    for r in _two_generators():
        path = tmp_path / "res" / r["dataset"]["config"] / f"{r['predictor']['name']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r))
    monkeypatch.setattr(sys, "argv", ["forelen", "leaderboard", "paper", str(tmp_path / "res"),
                                      "--json"])
    assert _main() == 0
    out, err = capsys.readouterr()
    got = json.loads(out)
    assert got["side_by_side"]["generators"] == ["small-1m", "big-9b"]
    assert {c["id"] for c in got["claims"]} == {"a", "b"}
    assert "(a) Pooling ablation" in err  # the table, on stderr with --json
    # a folder whose records no claim compares: one line, exit 2
    for path in (tmp_path / "res").glob("*/*.json"):
        if path.stem != "trail":
            path.unlink()
    monkeypatch.setattr(sys, "argv", ["forelen", "leaderboard", "paper", str(tmp_path / "res")])
    assert _main() == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "no record" in err


def test_release_page_lines_up_two_generators(tmp_path):
    results = tmp_path / "results"
    for r in _two_generators():
        r.update({"protocol": {"seed": 0}})
        r["dataset"].update({"path": "forelen", "schema_version": 1,
                             "model": f"org/{r['dataset']['config'].rsplit('-', 1)[0]}"})
        path = results / r["dataset"]["config"] / f"{r['predictor']['name']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r))
    dest = make_release("v0.2.0", results, tmp_path / "releases")
    page = (dest / "index.html").read_text()
    table = page.split('id="by-generator"')[1].split("</table>")[0]
    assert "big-9b" in table and "small-1m" in table
    assert "EGTP vs max" in table and "reproduced" in table and "reversed" in table


def _main() -> int:
    try:
        cli.main()
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_the_two_averages_of_claim_b_differ_where_configs_differ_in_scale():
    y, groups = _targets()
    recs = []
    # a large config where EGTP is 10% worse, a small one where it is 50% better
    for config, split, scale, ratio in (("m-long", "long", 10.0, 1.1), ("m-cot", "cot", 1.0, 0.5)):
        base = (np.abs(np.random.default_rng(3).normal(0, 60, len(y))) + 1) * scale
        recs += [record(config, split, "egtp", base * ratio, groups, y),
                 record(config, split, "trail", base, groups, y)]
    block = paper_comparison(recs)
    ratio = _row(block, "b", "average of 2 configs", "ratio of average MAEs")
    mean = _row(block, "b", "average of 2 configs", "mean of per-config effects")
    assert ratio["effect"]["value"] == pytest.approx((10 * 1.1 + 0.5) / 11 - 1, rel=1e-4)
    assert mean["effect"]["value"] == pytest.approx((0.1 - 0.5) / 2, rel=1e-4)
    assert ratio["effect"]["value"] > 0 > mean["effect"]["value"]


def test_best_baseline_is_chosen_on_validation_when_records_have_it():
    y, groups = _targets()
    base = np.abs(np.random.default_rng(4).normal(0, 60, len(y))) + 1
    recs = [record("m-cot", "cot", "egtp", base * 0.9, groups, y, validation={"mae": 50.0}),
            # trail is best on test, s3 on validation: the comparison may not peek at test
            record("m-cot", "cot", "trail", base * 0.8, groups, y, validation={"mae": 60.0}),
            record("m-cot", "cot", "s3", base * 1.2, groups, y, validation={"mae": 55.0})]
    row = _row(paper_comparison(recs), "b", "m-cot")
    assert "(s3)" in row["what"] and "chosen by validation MAE" in row["note"]
    assert row["effect"]["value"] == pytest.approx(0.9 / 1.2 - 1, rel=1e-6)
    # without validation MAE in every record, test MAE chooses, and the note says it favours
    del recs[2]["validation"]
    row = _row(paper_comparison(recs), "b", "m-cot")
    assert "(trail)" in row["what"] and "favours the baseline" in row["note"]


def test_a_unit_carrying_most_of_an_effect_is_named():
    y, groups = _targets()
    base = np.abs(np.random.default_rng(5).normal(0, 20, len(y))) + 50
    egtp = base * 1.05  # EGTP 5% worse than trail on every row...
    egtp[groups == 7] += 100  # ...and one unit's rows double that
    names = [f"gsm-symbolic:template-{k}" for k in range(GROUPS)]
    recs = [record("m-cot", "cot", n, e, groups, y) for n, e in (("egtp", egtp), ("trail", base))]
    for r in recs:
        r["per_row"]["unit_names"] = names
    row = _row(paper_comparison(recs), "b", "m-cot")
    assert row["effect"]["ci95"][0] > 0  # a significant reversal, half of it from one unit
    found = row["influence"]
    assert [d["unit"] for d in found] == ["gsm-symbolic:template-7"]
    assert found[0]["rows"] == PER_GROUP
    assert found[0]["effect_without"] == pytest.approx(0.05, abs=0.005)
    assert "gsm-symbolic:template-7 (4 rows" in row["note"]


def test_too_few_prompts_are_not_tested():
    y, groups = _targets()
    few = groups % 5  # 5 prompts
    recs = [record("m-cot", "cot", n, np.full(len(y), 10.0 * (i + 1)), few, y)
            for i, n in enumerate(("egtp", "pool-max", "pool-last", "pool-mean"))]
    row = _row(paper_comparison(recs), "a", "m-cot", "EGTP vs max")
    assert row["verdict"] == "not tested" and row["effect"]["ci95"] is None
    assert row["hypothesis"] is None


def test_plp_steps_from_per_row_errors():
    y, groups = _targets()
    rng = np.random.default_rng(2)
    steps = {}
    for t in OBSERVED_STEPS:
        running = y > t
        # the remaining-length error shrinks as more tokens are observed
        err = np.abs(rng.normal(0, 100 * (1 - t / 80), len(y)))
        steps[str(t)] = [round(float(e), 3) if r else None for e, r in zip(err, running)]
    per_step = {t: {"n": sum(v is not None for v in col),
                    "mae": float(np.mean([v for v in col if v is not None]))}
                for t, col in steps.items()}
    r = record("m-rl", "rl", "plp", np.array([v for v in steps["0"]]), groups, y,
               per_step=per_step)
    r["per_row"]["step_abs_error"] = steps
    row = _row(paper_comparison([r]), "c", "m-rl")
    assert row["ours"][0]["value"] == pytest.approx(per_step["32"]["mae"])
    assert row["ours"][1]["value"] == pytest.approx(per_step["0"]["mae"])
    assert row["verdict"] == "reproduced" and row["paper"] == [80.86, 95.24]
    assert row["effect"]["value"] == pytest.approx(per_step["32"]["mae"] / per_step["0"]["mae"] - 1)


def test_end_to_end_claim_pairs_the_records_bootstrap():
    y, groups = _targets()
    prompt = np.full(len(y), 100)
    scenario = Scenario(prompt, y, SimSettings(seed=0), int(y.max()))
    rng = np.random.default_rng(3)
    good = y + rng.normal(0, 20, len(y))  # EGTP: close to the truth
    bad = rng.permutation(y)  # TRAIL here: no information
    recs = []
    for name, pred in (("egtp", good), ("trail", bad)):
        e2e = scenario.block(pred)
        e2e["bootstrap"] = scenario.bootstrap(pred, groups)
        recs.append(record("m-long", "long", name, np.abs(y - pred), groups, y, end_to_end=e2e))
    block = paper_comparison(recs)
    pad = _row(block, "d", "m-long", "padding ratio, EGTP (SJF) vs TRAIL (SJF), static")
    jct = _row(block, "d", "m-long", "mean JCT (s), EGTP (SJF) vs TRAIL (SJF), static")
    assert pad["paper"] == [0.18, 0.51] and jct["paper"] == [4.20, 9.45]
    assert pad["ours"][0]["value"] == recs[0]["end_to_end"]["modes"]["static"]["predictor"]["padding_ratio"]
    assert jct["verdict"] == "reproduced" and pad["effect"]["value"] < 0
    # the bootstrap replays the same resamples for both records, so the replicates pair
    b0, b1 = (r["end_to_end"]["bootstrap"] for r in recs)
    assert b0["n_boot"] == b1["n_boot"] == len(series(b0["modes"]["static"]["jct_mean_s"]))
    again = scenario.bootstrap(good, groups)
    assert again == b0


def test_release_page_shows_the_comparison(tmp_path):
    y, groups = _targets()
    base = np.abs(np.random.default_rng(5).normal(0, 60, len(y))) + 1
    results = tmp_path / "results"
    recs = []
    for i, n in enumerate(("egtp", "pool-max", "pool-last", "pool-mean", "trail")):
        r = record("m-cot", "cot", n, base * (1 + 0.3 * i), groups, y)
        r.update({"record_version": 1, "protocol": {"seed": 0}})
        r["dataset"]["path"] = "forelen"
        r["dataset"]["schema_version"] = 1
        recs.append(r)
        path = results / "m-cot" / f"{n}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r))
    dest = make_release("v0.1.0", results, tmp_path / "releases",
                            notes="# Notes\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    manifest = json.loads((dest / "manifest.json").read_text())
    claims = {c["id"]: c for c in manifest["paper_comparison"]["claims"]}
    assert set(claims) == {"a", "b"}  # no plp on rl, no long config: (c) and (d) are absent
    page = (dest / "index.html").read_text()
    assert 'id="paper"' in page and "Paper comparison" in page and "reproduced" in page
    # each row's figures are the named records' own
    for row in claims["a"]["rows"]:
        for side in row["ours"]:
            body = json.loads((dest / side["from"]).read_text())
            assert side["value"] == pytest.approx(body["metrics"]["mae"])
            assert f"{side['value']:,.1f}" in page
    assert "<table>" in page.split('id="notes"')[1]  # notes render as Markdown
    # the block recomputes from the frozen records alone
    frozen = [{**r.body, "rel": f"records/{r.rel}"} for r in rel.load_records(dest / "records")]
    assert paper_comparison(frozen) == manifest["paper_comparison"]
    assert str(tmp_path) not in page
    assert 'id="by-generator"' not in page  # one generator: the claims' tables say it all


def test_hypothesis_mentions_size_only_when_not_significant():
    recs = [record("m-cot", "cot", "egtp", [1.0], [0], [1.0])]
    assert "too few" in hypothesis("same direction, not significant", recs, "a")
    assert "too few" not in hypothesis("reversed", recs, "a")
    assert hypothesis("not tested", recs, "a") is None
    recs2 = copy.deepcopy(recs)
    recs2[0]["dataset"]["source_mix"] = "paper (hub)"
    assert "packaged" not in hypothesis("reversed", recs2, "a")


def test_evaluate_end_to_end_adds_the_bootstrap_from_ten_prompts():
    from forelen.leaderboard.evaluate import end_to_end

    y, groups = _targets()
    scenario = Scenario(np.full(len(y), 50), y, SimSettings(seed=0), int(y.max()))
    steps = np.asarray(OBSERVED_STEPS)
    remaining = np.where(y[:, None] > steps, np.maximum(y[:, None] - steps, 0), np.nan)
    result = {"predictions": y.astype(float), "remaining": remaining}
    block = end_to_end(scenario, result, groups)
    boot = block["bootstrap"]
    # every predictor under SJF in both modes (like for like); a progressive one also under SRPT
    assert boot["modes"]["continuous"]["policy"] == boot["modes"]["static"]["policy"] == "sjf"
    assert boot["modes"]["continuous-srpt"]["policy"] == "srpt"
    assert len(series(boot["modes"]["continuous"]["padding_ratio"])) == boot["n_boot"]
    assert "bootstrap" not in end_to_end(scenario, result, groups % 9)  # 9 prompts: none
