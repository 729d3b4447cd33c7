"""The compact form of a config (src/forelen/compact.py): the step predictors give the same
predictions on it as on the full config, `forelen compact` writes it, `forelen evaluate` scores it
into the same records, and it refuses what it cannot serve in one line."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from conftest import FORELEN, cli_env
from test_progressive import FAST, synthetic_table

from forelen.compact import (MEAN_STEPS, READS, STATE_STEPS, TRAIL_REFRESH, StepSummary,
                             layer_steps, summarise)
from forelen.errors import ForelenError
from forelen.metrics import OBSERVED_STEPS
from forelen.predictors import PREDICTORS, _head
from forelen.tables import FeatureTable


def compacted(table: FeatureTable) -> FeatureTable:
    """The table as the compact form reads it back: each layer keeps its readers' steps."""
    cols = {}
    for name in table:
        col = table[name]
        if name.startswith("step_states_l"):
            steps = layer_steps(int(name.rsplit("_l", 1)[1]), table.layers())
            out = np.empty(len(col), dtype=object)
            for i, states in enumerate(col):
                out[i] = StepSummary(*summarise(states, *steps))
            col = out
        cols[name] = col
    return FeatureTable(cols, table.meta)


@pytest.fixture(scope="module")
def tables():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(_head.PRESETS, "fast", FAST)
        yield tuple(synthetic_table(n, seed) for n, seed in ((300, 1), (100, 2), (150, 3)))
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name,params", [("plp", {"preset": "fast"}),
                                         ("plp", {"preset": "fast", "aggregator": "last"}),
                                         ("trail", {"epochs": 5}), ("tpv", {})])
def test_step_predictors_predict_the_same_on_the_compact_form(tables, name, params):
    (train, y), (val, y_val), (test, y_test) = tables
    cls = PREDICTORS.get(name)
    full = cls(**params).fit(train, y, eval_set=(val, y_val))
    small = cls(**params).fit(compacted(train), y, eval_set=(compacted(val), y_val))
    small_test = compacted(test)
    for t in OBSERVED_STEPS:
        a = full.predict_remaining(test, t)
        b = small.predict_remaining(small_test, t)
        np.testing.assert_array_equal(a, b, err_msg=f"{name} at t={t}")
        # the saved form is what is scored: the full-fit model on the compact table agrees too
        np.testing.assert_array_equal(a, full.predict_remaining(small_test, t))


def test_each_layer_keeps_what_its_default_readers_read():
    """READS names the registered step predictors' default layers and steps: a new step predictor,
    or a changed default, fails here before it gives a compact form that cannot serve it."""
    readers = {name for name in PREDICTORS.names()
               if any(r.startswith("step_states_l") for r in PREDICTORS.get(name).info.requires)}
    assert readers == {"plp", "tpv", "trail"}
    roles = {name: PREDICTORS.get(name)().layer for name in readers}
    assert roles == {"plp": "final", "tpv": "final", "trail": "mid"}
    assert PREDICTORS.get("trail")().refresh == TRAIL_REFRESH
    assert PREDICTORS.get("plp")().aggregator == "mean"
    assert READS["mid"] == (STATE_STEPS, ()) and READS["final"] == (MEAN_STEPS, MEAN_STEPS)
    assert layer_steps(24, [8, 24]) == READS["final"] and layer_steps(8, [8, 24]) == READS["mid"]
    # one recorded layer is both; a third is neither: each keeps the union
    assert layer_steps(3, [3]) == layer_steps(5, [3, 5, 9]) == (STATE_STEPS, MEAN_STEPS)


def test_a_summary_serves_the_reads_it_keeps_and_names_the_ones_it_does_not():
    rng = np.random.default_rng(0)
    states = rng.normal(size=(37, 8)).astype(np.float16)
    row = StepSummary(*summarise(states))
    assert len(row) == 37
    for t in [t for t in STATE_STEPS if t <= 37] + [37]:
        np.testing.assert_array_equal(row[t - 1], states[t - 1])
    for t in [t for t in MEAN_STEPS if t <= 37] + [37, 64]:
        want = states[:t].astype(np.float32).mean(0).astype(np.float16).astype(np.float32)
        np.testing.assert_array_equal(row.prefix_mean(t), want)
    with pytest.raises(ForelenError, match="step 3 was read"):
        row[2]
    with pytest.raises(ForelenError, match="first 3 were read"):
        row.prefix_mean(3)
    col, ent = np.empty(1, dtype=object), np.empty(1, dtype=object)
    col[0], ent[0] = states, np.ones(37, np.float16)
    table = compacted(FeatureTable({"egtp_l2": np.zeros((1, 8), np.float16),
                                    "step_states_l2": col, "response_entropy": ent},
                                   {"recorded_layers": [2]}))
    plp = PREDICTORS.get("plp")(aggregator="entropy")
    plp.layer_ = 2
    with pytest.raises(ForelenError, match="aggregator=entropy"):
        plp._features(table, np.array([0]), np.array([4]))


CONFIG = "tiny-llama-rl"


@pytest.fixture(scope="module")
def built(tiny_model_dir, prompts_file, tmp_path_factory):
    from forelen.builders.build import BuildOptions, run_build

    out = tmp_path_factory.mktemp("compact") / "ds"
    run_build(BuildOptions(split="rl", model=str(tiny_model_dir), sources=(str(prompts_file),),
                           samples_per_prompt=3, max_new_tokens=40, batch_size=8, steps=24,
                           dtype="float32", device="cpu", out=str(out)))
    return out


def run(*args):
    return subprocess.run([FORELEN, *args], capture_output=True, text=True, env=cli_env(),
                          timeout=600)


def test_forelen_compact_is_smaller_and_scores_into_the_same_records(built, tmp_path):
    small = tmp_path / "small"
    proc = run("compact", str(built), "--config", CONFIG, "--out", str(small), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    manifest = json.loads((small / "manifest.json").read_text())
    full = json.loads((built / "manifest.json").read_text())["configs"][CONFIG]
    entry = manifest["configs"][CONFIG]
    assert entry["form"]["name"] == "compact"
    assert out["form"] == {k: v for k, v in entry["form"].items() if k != "source_shards"}
    assert entry["form"]["step_layers"] == full["build"]["recorded_layers"]
    assert out["bytes"] < entry["form"]["source_bytes"]
    assert set(entry["shards"]) == set(full["shards"])
    records = {}
    for name, folder in (("full", built), ("compact", small)):
        res = tmp_path / f"results-{name}"
        proc = run("evaluate", "--predictor", "egtp,plp,trail,tpv,constant-median", "--data",
                   str(folder), "--config", CONFIG, "--results", str(res))
        assert proc.returncode == 0, proc.stderr
        records[name] = {p.stem: json.loads(p.read_text()) for p in (res / CONFIG).glob("*.json")}
    assert set(records["full"]) == set(records["compact"]) == {
        "egtp", "plp", "trail", "tpv", "constant-median"}
    for pred, rec in records["full"].items():
        other = records["compact"][pred]
        assert rec["predictions_sha256"] == other["predictions_sha256"], pred
        assert rec["metrics"]["mae"] == other["metrics"]["mae"], pred
        assert rec.get("per_step") == other.get("per_step"), pred
        assert other["dataset"]["form"]["source_fingerprint"] == rec["dataset"]["fingerprint"]


def test_compact_refuses_bad_input_in_one_line(built, tmp_path):
    cases = [
        (["compact", str(tmp_path / "nowhere"), "--config", CONFIG, "--out", str(tmp_path / "o")],
         "not a forelen dataset folder"),
        (["compact", str(built), "--config", "nope", "--out", str(tmp_path / "o")], "no config"),
        (["compact", str(built), "--config", CONFIG, "--out", str(tmp_path / "o"),
          "--step-layer", "99"], "not recorded"),
    ]
    for args, message in cases:
        proc = run(*args)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
        assert not (tmp_path / "o").exists()
    small = tmp_path / "small"
    assert run("compact", str(built), "--config", CONFIG, "--out", str(small)).returncode == 0
    again = run("compact", str(built), "--config", CONFIG, "--out", str(small))
    assert again.returncode == 2 and "--overwrite" in again.stderr
    twice = run("compact", str(small), "--config", CONFIG, "--out", str(tmp_path / "o2"))
    assert twice.returncode == 2 and "already in the compact form" in twice.stderr
    # a predictor reading a layer whose step states were not kept
    layers = json.loads((built / "manifest.json").read_text())["configs"][CONFIG]["build"][
        "recorded_layers"]
    one = tmp_path / "one"
    assert run("compact", str(built), "--config", CONFIG, "--out", str(one),
               "--step-layer", str(max(layers))).returncode == 0
    proc = run("evaluate", "--predictor", "trail", "--data", str(one), "--config", CONFIG,
               "--results", str(tmp_path / "r"))
    assert proc.returncode == 2 and "keeps step states of layer" in proc.stderr, proc.stderr
