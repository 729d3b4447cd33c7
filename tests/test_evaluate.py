"""`forelen evaluate` end to end on a tiny built config: records, provenance, errors."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import FORELEN, cli_env

from forelen.builders.build import BuildOptions, run_build

CONFIG = "tiny-llama-rl"


@pytest.fixture(scope="module")
def built(tiny_model_dir, prompts_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate") / "ds"
    run_build(BuildOptions(split="rl", model=str(tiny_model_dir), sources=(str(prompts_file),),
                           samples_per_prompt=3, max_new_tokens=16, batch_size=8, steps=16,
                           dtype="float32", device="cpu", out=str(out)))
    return out


def run(*args):
    return subprocess.run([FORELEN, *args], capture_output=True, text=True, env=cli_env(),
                          timeout=600)


DISTRIBUTIONS = {"egtp", "pool-mean", "pool-max", "pool-last", "plp", "trail", "ssjf-mc", "s3",
                 "ltr-c"}


def test_evaluate_all_writes_a_record_per_predictor(built, tmp_path):
    from forelen.predictors import PREDICTORS

    results = tmp_path / "results"
    proc = run("evaluate", "--predictor", "all", "--data", str(built), "--results", str(results))
    assert proc.returncode == 0, proc.stderr
    records = {p.stem: json.loads(p.read_text()) for p in (results / CONFIG).glob("*.json")}
    assert set(records) == set(PREDICTORS.names())
    for name, rec in records.items():
        assert rec["predictor"]["name"] == name and rec["predictor"]["version"]
        assert rec["dataset"]["config"] == CONFIG and len(rec["dataset"]["fingerprint"]) == 64
        assert rec["protocol"] == {"fit": "train", "select": "validation", "score": "test",
                                   "seed": 42}
        assert rec["library_versions"]["torch"] and rec["forelen_version"]
        assert len(rec["predictions_sha256"]) == 64 and rec["timing"]["per_request_ms"] > 0
        assert "static_floor_mae" in rec["references"]  # an rl config
        if rec["predictor"]["outputs"] == "ranking":  # ltr: no length metric, never 0.0
            assert rec["metrics"]["mae"] is None and rec["metrics"]["rmse"] is None
        if rec["predictor"]["outputs"] == "length":
            m = rec["metrics"]
            assert m["mae"] >= 0 and m["ci_unit"] == "partition unit"
            assert m["ci_unit_by_source"] == {"file:prompts.jsonl": "prompt"}
            # a tiny config: fewer test prompts than a group bootstrap needs, so no interval
            assert (m["mae_ci95"] is None) == (m["groups"] < 10)
            # distribution metrics where the predictor predicts a distribution, else null
            # (a text regressor inherits predict_distribution and says NotImplementedError)
            has = name in DISTRIBUTIONS
            assert (m["crps"] is not None) == (m["coverage_80"] is not None) == has, name
        e2e = rec["end_to_end"]  # the scheduling simulator's section (tests/test_simulate.py)
        progressive = rec["predictor"]["progressive"]
        assert set(e2e["modes"]) == {"static", "continuous"} | (
            {"continuous-srpt"} if progressive else set()) and e2e["settings"]["seed"] == 42
        # SJF for every predictor in both modes (like for like); SRPT besides, where progressive
        assert e2e["modes"]["static"]["policy"] == e2e["modes"]["continuous"]["policy"] == "sjf"
        if progressive:
            assert e2e["modes"]["continuous-srpt"]["policy"] == "srpt"
        if rec["metrics"].get("mae") is not None:
            # scored on validation too (a baseline is chosen by it), where the config has one
            assert rec["validation"] is None or (rec["validation"]["mae"] > 0
                                                 and rec["validation"]["n"] > 0)
            assert len(rec["per_row"]["unit_names"]) == len(set(rec["per_row"]["group"]))
        # the group bootstrap of the schedule needs as many prompts as the MAE's interval
        groups = rec["metrics"].get("groups") or len(set(rec["per_row"]["group"])) \
            if rec.get("per_row") else 0
        assert ("bootstrap" in e2e) == (groups >= 10)
    assert records["plp"]["per_step"]["0"]["n"] > 0
    # each row's remaining-length error per observed step: the per-step MAE is a column's mean
    step_err = records["plp"]["per_row"]["step_abs_error"]
    for t, v in records["plp"]["per_step"].items():
        col = [e for e in step_err[t] if e is not None]
        assert len(col) == v["n"] and sum(col) / len(col) == pytest.approx(v["mae"], abs=1e-3)
    assert "step_abs_error" not in records["egtp"]["per_row"]
    # Choices the paper leaves open are recorded with the result, not only named by a preset.
    head = records["egtp"]["predictor"]["head"]
    assert head["n_bins"] == 20 and head["ce_weight"] == 0.95 and head["train"]["lr"] > 0
    assert head["mse_scale"] and head["epochs_run"] >= 1
    assert "egtp" in proc.stderr and "MAE" in proc.stderr


def test_evaluate_is_reproducible(built, tmp_path):
    hashes = []
    for k in range(2):
        out = tmp_path / f"r{k}"
        assert run("evaluate", "--predictor", "egtp", "--data", str(built),
                   "--results", str(out)).returncode == 0
        hashes.append(json.loads((out / CONFIG / "egtp.json").read_text())["predictions_sha256"])
    assert hashes[0] == hashes[1]


@pytest.mark.parametrize("args, needle", [
    (["--predictor", "egpt"], "did you mean 'egtp'"),
    (["--predictor", "egtp", "--config", "tiny-llama-rll"], "did you mean 'tiny-llama-rl'"),
])
def test_evaluate_errors_are_one_line(built, args, needle):
    proc = run("evaluate", "--data", str(built), *args)
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error:")


def test_evaluate_without_dataset_is_one_line(tmp_path):
    proc = run("evaluate", "--predictor", "egtp", "--data", str(tmp_path / "none"))
    assert proc.returncode == 2 and "no dataset folder" in proc.stderr


def test_family_filter(built, tmp_path):
    from forelen.predictors import PREDICTORS

    results = tmp_path / "results"
    proc = run("evaluate", "--predictor", "all", "--family", "reference", "--data", str(built),
               "--results", str(results))
    assert proc.returncode == 0, proc.stderr
    expected = {n for n, c in PREDICTORS.items() if c.info.family == "reference"}
    assert {p.stem for p in (results / CONFIG).glob("*.json")} == expected
    bad = run("evaluate", "--predictor", "all", "--family", "hidden", "--data", str(built))
    assert bad.returncode == 2 and "unknown predictor family 'hidden'" in bad.stderr


def test_a_spy_sees_only_its_partition_and_the_record_recomputes(built):
    """fit sees train rows only, eval_set validation rows only, predict the test rows; the
    record's metrics are recomputed here from the stored test rows and the predictions; a rate the
    predictor reports about its test predictions survives the latency measurement."""
    import numpy as np

    from forelen.dataset import DatasetFolder
    from forelen.leaderboard.evaluate import evaluate_one, load_config
    from forelen.predictors import Predictor, PredictorInfo

    folder = DatasetFolder(built)
    data = load_config(folder, "tiny-llama-rl", ["output_tokens", "group_id", "prompt_tokens",
                                                 "finish_reason"])
    table = folder.read("tiny-llama-rl", columns=["group_id", "partition", "output_tokens",
                                                  "prompt_tokens", "finish_reason"])
    parts = dict(zip(table["group_id"].to_pylist(), table["partition"].to_pylist()))

    class Spy(Predictor):
        info = PredictorInfo(name="spy", version="1", family="reference", reference="test",
                             requires=("prompt_tokens", "group_id"))
        seen: dict = {}

        def fit(self, table, y, eval_set=None):
            self.seen["fit"] = {parts[g] for g in table["group_id"]}
            self.seen["eval"] = {parts[g] for g in eval_set[0]["group_id"]} if eval_set else set()
            self.slope_ = float(np.mean(y) / np.mean(table["prompt_tokens"]))
            return self

        def predict(self, table):
            self.seen.setdefault("predict", []).append({parts[g] for g in table["group_id"]})
            self.made_up_rate_ = 0.25 if len(table) > 1 else 0.0  # one-row calls: latency
            return self.slope_ * np.asarray(table["prompt_tokens"], float)

    spy = Spy()
    result = evaluate_one(spy, data, seed=0)
    assert spy.seen["fit"] == {"train"} and spy.seen["eval"] <= {"validation"}
    assert spy.seen["predict"][0] == {"test"} and len(spy.seen["predict"]) > 1  # then latency
    assert result["diagnostics"] == {"made_up_rate": 0.25}
    y = np.asarray(data.test["output_tokens"], float)
    p = spy.slope_ * np.asarray(data.test["prompt_tokens"], float)
    m = result["metrics"]
    assert m["n"] == len(y) and m["mae"] == pytest.approx(np.mean(np.abs(y - p)))
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((y - p) ** 2)))
    assert m["acc_50"] == pytest.approx(np.mean(np.abs(y - p) <= 50))
    assert m["ci_unit"] == "partition unit" and m["groups"] == len(set(data.test["group_id"]))
    cut = np.asarray(data.test["finish_reason"]) == "length"
    assert m["censored_fraction"] == pytest.approx(cut.mean())

    class Declared(Spy):
        """A predictor that reports a diagnostic by the declared method, not by a name."""

        def diagnostics(self):
            return {"abstain_rate": 0.5}

    assert evaluate_one(Declared(), data, seed=0)["diagnostics"] == {"abstain_rate": 0.5}


def test_evaluate_and_simulate_print_json(built, tmp_path):
    for command in ("evaluate", "simulate"):
        done = run(command, "--data", str(built), "--predictor", "constant-median",
                   "--results", str(tmp_path / command), "--json")
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert [r["predictor"] for r in out] == ["constant-median"]
        assert out[0]["metrics"]["ci_unit"] == "partition unit"
        assert ("end_to_end" in out[0]) == (command == "simulate")


def test_ls_json_and_whole_names_in_a_pipe():
    done = run("ls", "predictors", "--json")
    names = [p["name"] for p in json.loads(done.stdout)]
    assert "pool-mean" in names and "egtp" in names
    narrow = subprocess.run([FORELEN, "ls", "predictors"], capture_output=True, text=True,
                            env=cli_env(COLUMNS="80"), timeout=300)
    assert any("pool-mean" in line for line in narrow.stdout.splitlines())


def test_records_and_page_carry_no_absolute_local_path(built, tmp_path):
    results = tmp_path / "results"
    done = subprocess.run([FORELEN, "evaluate", "--data", built.name, "--predictor",
                           "constant-median", "--results", str(results)], cwd=built.parent,
                          capture_output=True, text=True, env=cli_env(), timeout=600)
    assert done.returncode == 0, done.stderr
    record = json.loads((results / "tiny-llama-rl" / "constant-median.json").read_text())
    assert record["dataset"]["path"] == built.name and record["dataset"]["fingerprint"]
    page = run("leaderboard", "render", "--results", str(results))
    assert page.returncode == 0, page.stderr
    html = (results / "index.html").read_text()
    assert str(built) not in html and str(built.parent) not in html


def test_a_release_shows_the_length_distribution_without_the_dataset(built, tmp_path):
    """The record carries its config's output-length histogram, so records released elsewhere
    (the dataset folder not beside them) still show the distribution on the page."""
    results = tmp_path / "results"
    done = subprocess.run([FORELEN, "evaluate", "--data", built.name, "--predictor",
                           "constant-median", "--results", str(results)], cwd=built.parent,
                          capture_output=True, text=True, env=cli_env(), timeout=600)
    assert done.returncode == 0, done.stderr
    hist = json.loads((results / CONFIG / "constant-median.json").read_text())["dataset"][
        "length_histogram"]
    manifest = json.loads((built / "manifest.json").read_text())["configs"][CONFIG]
    rows = sum(s["rows"] for s in manifest["shards"].values())
    assert sum(hist["counts"]) == hist["rows"] == rows and hist["max_new_tokens"] == 16
    # released from another folder: the record's relative dataset path resolves to nothing there
    rel = run("leaderboard", "release", "v1.0", "--results", str(results), "--out",
              str(tmp_path / "releases"), "--allow-dirty")  # made in this (maybe edited) tree
    assert rel.returncode == 0, rel.stderr
    block = json.loads((tmp_path / "releases" / "v1.0" / "manifest.json").read_text())["configs"]
    assert block[CONFIG]["length_histogram"] == hist


def test_the_pia_record_keeps_its_parse_failure_rate(built, tmp_path):
    """Measured on the test predictions, not on the one-row latency runs, and shown on the page."""
    from forelen.dataset import DatasetFolder
    from forelen.leaderboard.evaluate import run_evaluation
    from forelen.leaderboard.render import render_command

    (record,) = run_evaluation(DatasetFolder(built), ["tiny-llama-rl"], ["pia"], 42,
                               str(tmp_path / "results"))
    diag = record["diagnostics"]
    assert set(diag) == {"parse_failure_rate", "prompt_recovery_rate"}
    assert 0.0 <= diag["parse_failure_rate"] <= 1.0 and diag["prompt_recovery_rate"] == 1.0
    assert record["predictor"]["params"]["mode"] == "zero-shot"
    html = render_command(None, str(tmp_path / "results"), None).read_text()
    assert "parse failure rate" in html


def test_bootstrap_resamples_whole_templates():
    """Rows of one GSM-Symbolic template are one bootstrap unit (they share a partition, and their
    lengths are correlated); other sources' prompts are their own units, and a source this install
    does not know falls back to its prompts, said in the record."""
    import numpy as np

    pytest.importorskip("reasoning_gym")
    from forelen.builders.sources import SOURCES
    from forelen.leaderboard.evaluate import bootstrap_units
    from forelen.tables import FeatureTable

    gsm = SOURCES.get("gsm-symbolic").load(120, 0)
    rows = [("gsm-symbolic", p.source_id) for p in gsm] + [("mmath-pkg", "AIME-3"),
                                                            ("mine", "x")]
    table = FeatureTable({"source": np.array([s for s, _ in rows], dtype=object),
                          "source_id": np.array([i for _, i in rows], dtype=object),
                          "group_id": np.array([f"{s}:{i}" for s, i in rows], dtype=object)})
    units, by_source = bootstrap_units(table)
    assert by_source == {"gsm-symbolic": "template", "mmath-pkg": "prompt",
                         "mine": "prompt (source not registered here)"}
    assert list(units[:120]) == [p.partition_unit for p in gsm]
    assert len(set(units[:120])) <= 100  # 120 instances of ~85 templates: 63 here
    assert list(units[120:]) == ["mmath-pkg:AIME-3", "mine:x"]


def test_a_distribution_predictor_has_distribution_metrics_and_a_point_one_none(built):
    """A predictor with `predict_distribution` gets crps, coverage_80 and interval_width_80,
    recomputed here from its distribution and the test rows (censored ones at the cap); one
    without gets null for all three."""
    import numpy as np

    from forelen.dataset import DatasetFolder
    from forelen.distribution import BinnedDistribution
    from forelen.leaderboard.evaluate import evaluate_one, load_config
    from forelen.metrics import distribution_metrics
    from forelen.predictors import Predictor, PredictorInfo

    class Point(Predictor):
        info = PredictorInfo(name="point", version="1", family="reference", reference="test",
                             requires=("prompt_tokens",))

        def fit(self, table, y, eval_set=None):
            self.median_ = float(np.median(y))
            return self

        def predict(self, table):
            return np.full(table.n, self.median_)

    class Histogram(Point):
        """The train lengths' histogram for every row, over 4 bins up to the cap."""

        info = PredictorInfo(name="histogram", version="1", family="reference",
                             reference="test", requires=("prompt_tokens",))

        def fit(self, table, y, eval_set=None):
            self.edges_ = np.linspace(0.0, 16.0, 5)
            self.probs_ = np.histogram(np.clip(y, 0, 15.99), self.edges_)[0] + 1.0
            return super().fit(table, y)

        def predict_distribution(self, table):
            return BinnedDistribution(self.edges_, np.tile(self.probs_, (table.n, 1)))

    data = load_config(DatasetFolder(built), CONFIG, ["output_tokens", "group_id",
                                                      "prompt_tokens", "finish_reason"])
    y = np.asarray(data.test["output_tokens"], float)
    cut = np.asarray(data.test["finish_reason"]) == "length"
    got = evaluate_one(Histogram(), data, seed=0)["metrics"]
    pred = Histogram().fit(None, np.asarray(data.train["output_tokens"], float))
    want = distribution_metrics(pred.predict_distribution(data.test), y, cut, cap=16)
    for key in ("crps", "coverage_80", "interval_width_80"):
        assert got[key] == pytest.approx(want[key]) and got[key] >= 0
    assert got["mae"] is not None and 0 <= got["coverage_80"] <= 1
    point = evaluate_one(Point(), data, seed=0)["metrics"]
    assert point["crps"] is point["coverage_80"] is point["interval_width_80"] is None


def test_the_ltr_record_has_no_mae_and_no_mae_rank(built, tmp_path):
    """ltr outputs a ranking score: its record stores every length and distribution metric as
    null (never 0.0), keeps tau and rho, has no per-row errors, and takes no MAE rank; the page
    and the terminal show "–"."""
    from forelen.dataset import DatasetFolder
    from forelen.leaderboard.evaluate import run_evaluation
    from forelen.leaderboard.ranking import metric_ranks, significance
    from forelen.leaderboard.render import config_table
    from forelen.metrics import METRICS

    results = tmp_path / "results"
    records = run_evaluation(DatasetFolder(built), [CONFIG], ["ltr", "constant-median"], 42,
                             str(results))
    ltr = json.loads((results / CONFIG / "ltr.json").read_text())
    m = ltr["metrics"]
    assert ltr["predictor"]["outputs"] == "ranking" and ltr["per_row"] is None
    for metric in METRICS:  # stored, as null where ltr does not produce it
        assert metric.key in m and (metric.needs == "order" or m[metric.key] is None)
    assert m["mae"] is None and m["mae_ci95"] is None and m["crps"] is None
    assert "ltr" not in metric_ranks(records) and "ltr" not in significance(records)
    row = next(r for r in config_table(records) if r["name"] == "ltr")
    assert row["cols"][0]["text"] == row["cols"][1]["text"] == "–"
    done = run("evaluate", "--predictor", "constant-median", "--data", str(built), "--results",
               str(tmp_path / "r2"), "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)[0]["metrics"]
    assert out["mae"] >= 0 and out["crps"] is None and "crps" in out  # null in --json


def test_the_record_stores_its_prediction_spread_and_a_constant_is_flagged(built):
    """Predictions are only hashed in a record, so its metrics keep how much they vary
    (`prediction_spread`, relative to the true lengths); a learned predictor at or below
    CONSTANT_SPREAD is flagged constant and not ranked, a reference never is."""
    import numpy as np

    from forelen.dataset import DatasetFolder
    from forelen.leaderboard.evaluate import evaluate_one, load_config
    from forelen.leaderboard.ranking import constants
    from forelen.metrics import CONSTANT_SPREAD
    from forelen.predictors import Predictor, PredictorInfo

    class Flat(Predictor):
        info = PredictorInfo(name="flat", version="1", family="text-proxy", reference="test",
                             requires=("prompt_tokens",))

        def fit(self, table, y, eval_set=None):
            self.median_ = float(np.median(y))
            return self

        def predict(self, table):  # a constant up to float noise
            return self.median_ + 1e-6 * np.arange(table.n)

    class Prompt(Flat):
        info = PredictorInfo(name="prompt", version="1", family="text-proxy", reference="test",
                             requires=("prompt_tokens",))

        def predict(self, table):
            return np.asarray(table["prompt_tokens"], float)

    data = load_config(DatasetFolder(built), CONFIG, ["output_tokens", "group_id",
                                                      "prompt_tokens", "finish_reason"])
    flat = evaluate_one(Flat(), data, seed=0)["metrics"]
    assert 0 < flat["prediction_spread"] <= CONSTANT_SPREAD  # float noise is no variation
    assert flat["prediction_median"] == pytest.approx(np.median(data.train["output_tokens"]))
    prompt = evaluate_one(Prompt(), data, seed=0)["metrics"]
    y, p = (np.asarray(data.test[c], float) for c in ("output_tokens", "prompt_tokens"))
    width = lambda v: np.percentile(v, 95) - np.percentile(v, 5)  # noqa: E731
    assert prompt["prediction_spread"] == pytest.approx(width(p) / max(width(y), 1.0))
    records = [{"predictor": {"name": n, "family": f, "outputs": "length", "ranked": True},
                "metrics": m} for n, f, m in (("flat", "text-proxy", flat),
                                             ("prompt", "text-proxy", prompt),
                                             ("median", "reference", flat))]
    assert constants(records) == ({"flat"} if prompt["prediction_spread"] > CONSTANT_SPREAD
                                  else {"flat", "prompt"})
