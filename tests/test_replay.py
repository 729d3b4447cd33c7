"""`forelen replay` (issue 33, parts 2-3): a config's test prompts served through the hf engine
under fcfs / sjf / srpt / oracle, with and without preemption; the simulator on the same trace
with a cost model profiled on the engine; arrivals from a Poisson process or a file.

The first half needs no model. The second serves the tiny built config of tests/test_evaluate.py:
it checks what a user relies on — every request is served, with the tokens the build recorded
(also across a preemption, whose KV is swapped out and back), in the order the policy says, and
the command's last line is the JSON the issue names.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from conftest import FORELEN, cli_env

from forelen import replay
from forelen.errors import ForelenError
from forelen.replay import ReplayOptions, Served

CONFIG = "tiny-llama-rl"


# ----------------------------------------------------------------------------- no model


def test_poisson_arrivals_are_seeded_and_open_at_zero():
    a = replay.poisson_arrivals(2000, 4.0, seed=3)
    assert a[0] == 0 and np.all(np.diff(a) >= 0)
    assert np.array_equal(a, replay.poisson_arrivals(2000, 4.0, seed=3))
    assert abs(np.diff(a).mean() - 0.25) < 0.02  # mean gap 1 / rate
    with pytest.raises(ForelenError, match="--rate"):
        replay.poisson_arrivals(3, 0.0, seed=0)


@pytest.mark.parametrize("text", ["[5.0, 2.5, 3]", "2.5\n# a comment\n3\n5.0\n",
                                  "2.5,a\n3,b\n5,c\n"])
def test_arrival_files_are_sorted_and_shifted(tmp_path, text):
    f = tmp_path / "arrivals.txt"
    f.write_text(text)
    assert replay.read_arrivals(str(f)).tolist() == [0.0, 0.5, 2.5]


def test_bad_arrival_files_are_one_line(tmp_path):
    with pytest.raises(ForelenError, match="not found"):
        replay.read_arrivals(str(tmp_path / "none.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_text("soon\n")
    with pytest.raises(ForelenError, match="expected numbers"):
        replay.read_arrivals(str(bad))


@pytest.mark.parametrize("options, message", [
    (dict(policies=("lifo",)), "unknown --policy lifo"),
    (dict(policies=("sjf",)), "ranks by a predictor"),
    (dict(policies=("fcfs",), rate=1.0, arrivals="a.txt"), "both set the arrivals"),
    (dict(policies=("fcfs",), utilisation=0.0), "--utilisation"),
    (dict(policies=("sjf",), predictor="egtp", saved="x"), "not both"),
    (dict(policies=("fcfs",), slots=0), "--slots"),
    (dict(policies=("fcfs",), rate=0.0), "--rate must be > 0"),
    (dict(policies=("fcfs:egtp",)), "only sjf and srpt take a predictor"),
    (dict(policies=("sjf", "sjf:constant-median")), "ranks by a predictor"),
    (dict(policies=("fcfs", "oracle"), source="prompts.jsonl"), "lengths are unknown|do not have"),
])
def test_options_are_refused_before_any_work(options, message):
    with pytest.raises(ForelenError, match=message):
        replay.check_options(ReplayOptions(config="c", **options))


def test_a_policy_may_name_its_own_predictor():
    assert replay.parse_policy("sjf:constant-median") == ("sjf", "constant-median")
    assert replay.parse_policy("fcfs") == ("fcfs", None)
    # sjf:NAME needs no --predictor: the name says what is fitted
    replay.check_options(ReplayOptions(config="c", policies=("fcfs", "sjf:constant-median")))


def test_the_measured_ratio_has_an_interval_over_requests():
    rng = np.random.default_rng(0)
    base = rng.exponential(10.0, 200)
    faster = base * 0.7 + rng.normal(0, 1.0, 200).clip(-1, 1)
    r = replay.ratio_interval(faster, base)
    lo, hi = r["measured_ci95"]
    assert lo < faster.mean() / base.mean() < hi < 1.0  # clearly faster: 1 is outside
    same = replay.ratio_interval(base + rng.normal(0, 2.0, 200), base)["measured_ci95"]
    assert same[0] < 1.0 < same[1]  # noise alone: 1 is inside


def test_the_simulator_is_checked_on_the_policies_ratio():
    policies = {"fcfs": {"measured": {"mean_jct_s": 10.0}, "simulated": {"mean_jct_s": 8.0}},
                "sjf": {"measured": {"mean_jct_s": 5.0}, "simulated": {"mean_jct_s": 6.0}}}
    r = replay.ratio_errors(policies)["sjf/fcfs"]
    assert r["measured"] == 0.5 and r["simulated"] == 0.75 and r["error"] == pytest.approx(0.5)


def test_a_run_on_a_slower_machine_is_priced_on_its_own_steps():
    """Two runs in the same order, the second on a machine 25% slower: the profile's prices
    simulate no difference, but each run priced on its own served steps reproduces the measured
    ratio, so the error left is the schedule's alone."""
    from forelen.simulator.cost import CostModel

    served = [Served(f"r{i}", 0.0, 10, tokens=t) for i, t in enumerate([40, 10, 30, 20])]
    trace = [replay.TraceRequest(s.uid, "", (1,) * 10, 64, 1.0, 1.0, 0, s.arrival_s, s.tokens)
             for s in served]
    fast, slow = CostModel(0.01, 0.001, 0.0, 0.0, 0.0), CostModel(0.0125, 0.00125, 0.0, 0.0, 0.0)
    order = np.arange(4.0)
    sim = {name: replay.simulated(served, trace, "fcfs", order, None, 2, c, 8, False)
           for name, c in (("fast", fast), ("slow", slow))}
    measured = sim["slow"]["mean_jct_s"] * 1.02  # what the slow run measured (2% unmodelled)
    policies = {"fcfs": {"measured": {"mean_jct_s": sim["fast"]["mean_jct_s"]},
                         "simulated": sim["fast"], "simulated_own_cost": sim["fast"]},
                "sjf:constant-median": {"measured": {"mean_jct_s": measured},
                                        "simulated": sim["fast"],
                                        "simulated_own_cost": sim["slow"]}}
    r = replay.ratio_errors(policies)["sjf:constant-median/fcfs"]
    assert r["measured"] == pytest.approx(1.25 * 1.02)
    assert r["error"] == pytest.approx(1 / 1.275 - 1)  # the profile: the drift is all error
    assert r["error_own_cost"] == pytest.approx(1 / 1.02 - 1)  # own prices: 2% left


def test_simulated_sjf_on_the_same_trace_serves_short_requests_first():
    from forelen.simulator.cost import CostModel

    # four requests at t=0 on one slot: sjf by the true lengths finishes them shortest first
    served = [Served(f"r{i}", 0.0, 10, tokens=t) for i, t in enumerate([40, 10, 30, 20])]
    trace = [replay.TraceRequest(s.uid, "", (1,) * 10, 64, 1.0, 1.0, 0, 0.0, s.tokens)
             for s in served]
    cost = CostModel(0.01, 0.0, 0.0, 0.0, 0.0)
    keys = np.array([40.0, 10, 30, 20])
    fcfs = replay.simulated(served, trace, "fcfs", np.arange(4.0), None, 1, cost, 8, False)
    sjf = replay.simulated(served, trace, "sjf", keys, None, 1, cost, 8, False)
    # fcfs: 0.4, 0.5, 0.8, 1.0 s; sjf: 0.1, 0.3, 0.6, 1.0 s (one decode step = 10 ms)
    assert fcfs["mean_jct_s"] == pytest.approx(0.675)
    assert sjf["mean_jct_s"] == pytest.approx(0.5)


def test_the_simulator_charges_the_decode_steps_the_engine_ran():
    """The prefill samples the first token: a request cut at its budget of L tokens ran L - 1
    decode steps, one that stopped ran L (the last sampled its EOS)."""
    from forelen.simulator.cost import CostModel

    cost = CostModel(0.01, 0.0, 0.0, 0.0, 0.0)
    trace = [replay.TraceRequest("r", "", (1,) * 10, 8, 1.0, 1.0, 0, 0.0, 8)]
    cut = replay.simulated([Served("r", 0.0, 10, tokens=8, finish_reason="length")], trace,
                           "fcfs", np.zeros(1), None, 1, cost, 8, False)
    stopped = replay.simulated([Served("r", 0.0, 10, tokens=8, finish_reason="stop")], trace,
                               "fcfs", np.zeros(1), None, 1, cost, 8, False)
    assert cut["mean_jct_s"] == pytest.approx(0.07) and stopped["mean_jct_s"] == pytest.approx(0.08)


def test_the_utilisation_rate_matches_the_cost_model():
    from forelen.simulator.cost import CostModel

    cost = CostModel(0.02, 0.0, 0.0, 0.0, 0.0)  # 20 ms a step whatever the batch
    # 4 slots, 100 tokens per request: 4 requests per 2 s, so full use is 2 requests/s
    assert replay.utilisation_rate(1.0, cost, 4, 10, 100) == pytest.approx(2.0)
    assert replay.utilisation_rate(0.5, cost, 4, 10, 100) == pytest.approx(1.0)


def test_the_served_steps_fit_the_cost_model_they_were_priced_by():
    """The cost model fitted to a run's served steps recovers the prices that made them, and
    the miss against another model is measured over priced."""
    from types import SimpleNamespace

    from forelen.simulator.cost import CostModel

    true = CostModel(0.05, 0.002, 4e-6, 0.06, 0.0015)
    rng = np.random.default_rng(0)
    steps = [(int(b), int(c), true.decode_s(int(b), int(c)))
             for b, c in zip(rng.integers(1, 17, 200), rng.integers(50, 6000, 200))]
    arrivals = [(int(t), true.prefill_s(int(t))) for t in rng.integers(20, 400, 50)]
    server = SimpleNamespace(step_log=steps, arrival_log=arrivals)
    fitted = replay.served_cost_model(server)
    for name, value in true.coefficients().items():
        assert getattr(fitted, name) == pytest.approx(value, rel=1e-6), name
    half = CostModel(*(v / 2 for v in true.coefficients().values()))
    miss = replay.step_miss(server, half)
    assert miss["decode_total"] == pytest.approx(2.0) and miss["prefill_total"] == pytest.approx(2.0)
    with pytest.raises(ForelenError, match="too few served steps"):
        replay.served_cost_model(SimpleNamespace(step_log=steps[:2], arrival_log=arrivals))


def test_rounds_average_each_request_over_the_runs():
    a = [Served("r0", 0.0, 5, first_token_s=1.0, admitted_s=1.0, finish_s=3.0, tokens=4),
         Served("r1", 1.0, 5, first_token_s=2.0, admitted_s=3.0, finish_s=7.0, tokens=2)]
    b = [Served("r0", 0.0, 5, first_token_s=1.0, admitted_s=2.0, finish_s=5.0, tokens=4),
         Served("r1", 1.0, 5, first_token_s=2.0, admitted_s=2.0, finish_s=5.0, tokens=2)]
    mean = replay.mean_of_rounds([a, b])
    assert [m.finish_s for m in mean] == [4.0, 6.0]
    assert [m.admitted_s for m in mean] == [1.5, 2.5]
    assert [m.tokens for m in mean] == [4, 2] and a[0].finish_s == 3.0  # the rounds untouched
    assert replay.mean_of_rounds([a]) is a


@pytest.mark.parametrize("options, message", [
    (dict(policies=("fcfs",), rounds=0), "--rounds"),
    (dict(policies=("fcfs",), calibrate=-1), "--calibrate"),
    (dict(policies=("fcfs",), calibrate=8, engine="vllm", rate=1.0), "--calibrate"),
])
def test_rounds_and_calibration_are_checked(options, message):
    with pytest.raises(ForelenError, match=message):
        replay.check_options(ReplayOptions(config="c", **options))


# ----------------------------------------------------------------------------- the engine


@pytest.fixture(scope="module")
def built(tiny_model_dir, prompts_file, tmp_path_factory):
    from forelen.builders.build import BuildOptions, run_build

    out = tmp_path_factory.mktemp("replay") / "ds"
    run_build(BuildOptions(split="rl", model=str(tiny_model_dir), sources=(str(prompts_file),),
                           samples_per_prompt=3, max_new_tokens=16, batch_size=8, steps=16,
                           dtype="float32", device="cpu", out=str(out)))
    return out


def serve(built, **kw):
    options = dict(data=str(built), config=CONFIG, slots=1, rate=1000.0,
                   cost_model=None, seed=1)
    options.update(kw)
    return replay.run(ReplayOptions(**options), say=lambda *a: None)


def test_every_request_is_served_with_the_tokens_the_build_recorded(built):
    result = serve(built, policies=("fcfs", "oracle"), slots=2)
    for name, p in result["policies"].items():
        rows = result["per_request"][name]
        assert len(rows) == result["requests"] > 0
        assert all(r["finish_s"] >= r["first_token_s"] >= r["arrival_s"] for r in rows)
        assert p["lengths_as_recorded"] == 1.0 and p["tokens_as_recorded"] == 1.0, name
        assert p["measured"]["tokens"] == sum(r["tokens"] for r in rows)
        assert p["simulated"]["mean_jct_s"] > 0
    assert set(result["ratios"]) == {"oracle/fcfs"}
    assert result["cost_model"]["profile"]["method"].startswith("non-negative least squares")


def test_one_slot_admits_by_the_policy_key(built):
    """All requests arrive at once (rate 1000/s) on one slot: fcfs admits them in arrival order,
    oracle by the recorded length."""
    result = serve(built, policies=("fcfs", "oracle"))
    for name in ("fcfs", "oracle"):
        rows = result["per_request"][name]
        started = sorted(rows, key=lambda r: r["admitted_s"])
        keys = [r["key"] for r in started]
        # the first arrival may start before the rest have arrived; the others by key
        assert keys[1:] == sorted(keys[1:]), name


class Descending:
    """A stand-in predictor: each request it sees is predicted shorter than the one before, so
    every arrival outranks the request running."""

    class info:
        name, progressive, outputs, table = "descending", False, "length", "prompt"

    def __init__(self):
        self.calls = 0

    def predict(self, table):
        self.calls += 1
        return np.array([1000.0 - 10 * self.calls])


def test_preempted_requests_resume_with_their_own_tokens(built, tiny_model):
    """sjf with preemption on one slot, on a clock that advances 1 ms per reading (so the
    schedule is the same on every machine): each request arriving 5 ms after the last is
    predicted shorter and swaps the running one out; every request still generates exactly the
    response tokens the build recorded, its KV copied out and back."""
    from forelen.dataset import DatasetFolder
    from forelen.leaderboard.evaluate import load_config

    model, tokenizer = tiny_model
    folder = DatasetFolder(str(built))
    test = load_config(folder, CONFIG, ["prompt", "uid", "seed", "temperature", "top_p",
                                        "response_token_ids"]).test
    trace, _ = replay.trace_from_config(test, folder.config(CONFIG), tokenizer,
                                        np.arange(test.n) * 0.005, seed=1)
    engine = replay.serving_engine(model, tokenizer, slots=1, kv_budget_gib=0.1, max_prompt=64,
                                   max_new=16)
    ticks = iter(np.arange(10**7) * 0.001)
    server = replay.Server(engine, "sjf", Descending(), preempt=True, rerank_every=1)
    served = server.run(trace, clock=lambda: next(ticks))
    assert server.preemptions >= test.n - 1
    assert sum(s.preemptions for s in served) == server.preemptions
    assert [s.token_ids for s in served] == [r.recorded_ids for r in trace]
    # the last arrival, predicted shortest, finishes first of those that were waiting
    assert min(s.finish_s for s in served[1:]) == served[-1].finish_s


def test_sjf_predicts_inside_the_engine_and_measures_its_overhead(built):
    result = serve(built, policies=("fcfs", "sjf", "sjf:constant-median"), predictor="egtp",
                   slots=2)
    sjf = result["policies"]["sjf"]
    assert sjf["feature_ms_per_request"] > 0 and sjf["predict_ms_per_request"] > 0
    assert result["overhead_ms_per_request"] == pytest.approx(
        sjf["feature_ms_per_request"] + sjf["predict_ms_per_request"])
    assert sjf["tokens_as_recorded"] == 1.0
    assert result["policies"]["fcfs"]["feature_ms_per_request"] == 0.0
    # a second predictor on the same trace: its own fit, no hidden states recorded for it
    constant = result["policies"]["sjf:constant-median"]
    assert constant["predictor"] == "constant-median" and sjf["predictor"] == "egtp"
    assert constant["feature_ms_per_request"] == 0.0 and constant["tokens_as_recorded"] == 1.0
    assert result["predictor"] == "egtp"
    assert set(result["ratios"]) == {"sjf/fcfs", "sjf:constant-median/fcfs"}
    for r in result["ratios"].values():
        assert r["measured_ci95"][0] <= r["measured"] <= r["measured_ci95"][1]


def test_rounds_rotate_the_order_and_serve_the_same_tokens(built):
    said = []
    result = replay.run(ReplayOptions(data=str(built), config=CONFIG, slots=2, rate=1000.0,
                                      seed=1, policies=("fcfs", "oracle"), rounds=2),
                        say=said.append)
    served = [m for m in said if m.startswith("serving under")]
    assert [m.split()[2] for m in served] == ["fcfs", "oracle", "oracle", "fcfs"]
    for name, p in result["policies"].items():
        assert len(p["measured"]["rounds_mean_jct_s"]) == 2
        assert p["measured"]["mean_jct_s"] == pytest.approx(
            np.mean(p["measured"]["rounds_mean_jct_s"]))
        assert p["same_tokens_every_round"] and p["tokens_as_recorded"] == 1.0, name
    # the simulator checked on FCFS's own served prices too
    assert result["cost_model"]["served"]["served_over_profile"]["steps"] > 0
    assert result["ratios"]["oracle/fcfs"]["error_served_cost"] is not None
    # and each policy on its own runs' served prices, with their speed against FCFS's runs
    assert result["ratios"]["oracle/fcfs"]["error_own_cost"] is not None
    for p in result["policies"].values():
        assert len(p["served_over_fcfs"]) == 2 and all(
            x["decode_total"] > 0 and x["steps"] > 0 for x in p["served_over_fcfs"])
    assert result["settings"]["rounds"] == 2


def test_calibration_prices_the_load_on_served_steps(built):
    from forelen.simulator.cost import CostModel

    result = serve(built, policies=("fcfs",), rate=None, utilisation=0.8, calibrate=4,
                   limit=6)
    calibration = result["settings"]["calibration"]
    arrivals = result["settings"]["arrivals"]
    assert calibration["requests"] == 4 and arrivals["priced_by"] == "served FCFS probe"
    cost = CostModel(**calibration["coefficients"])
    s = result["settings"]
    assert arrivals["poisson_rate"] == pytest.approx(replay.utilisation_rate(
        0.8, cost, 1, s["mean_prompt_tokens"], s["mean_output_tokens"]))


def test_srpt_re_predicts_from_the_engine_step_states(built):
    result = serve(built, policies=("srpt",), predictor="plp", slots=2, rate=20.0)
    srpt = result["policies"]["srpt"]
    assert srpt["tokens_as_recorded"] == 1.0
    assert srpt["predict_ms_per_request"] > 0


def test_the_command_prints_the_json_line_last(built, tmp_path):
    out = tmp_path / "replay.json"
    proc = subprocess.run([FORELEN, "replay", "--data", str(built), "--config", CONFIG,
                           "--policy", "fcfs,oracle", "--slots", "2", "--limit", "6",
                           "--out", str(out)], capture_output=True, text=True, env=cli_env(),
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["requests"] == 6
    for name in ("fcfs", "oracle"):
        assert set(line["policies"][name]["measured"]) >= {"mean_jct_s", "p90_jct_s", "ttft_s",
                                                           "tok_s"}
        assert set(line["policies"][name]["simulated"]) == {"mean_jct_s", "p90_jct_s"}
    saved = json.loads(out.read_text())
    assert len(saved["per_request"]["fcfs"]) == 6 and saved["settings"]["config"] == CONFIG
    assert max(len(x) for x in proc.stderr.splitlines()) <= 80


def test_a_source_of_prompts_is_served_as_the_config_renders_its_own(built, prompts_file,
                                                                    tmp_path):
    """The config's own prompt file as --source: each prompt rendered exactly as the build
    rendered it, sampled with the seed the build gave its sample 0, so it generates that
    sample's length."""
    from forelen.dataset import DatasetFolder
    from forelen.leaderboard.evaluate import load_config
    from forelen.models import load_tokenizer, resolve_model

    out = tmp_path / "replay.json"
    proc = subprocess.run([FORELEN, "replay", "--data", str(built), "--config", CONFIG,
                           "--source", str(prompts_file), "--policy", "fcfs,sjf:constant-median",
                           "--slots", "2", "--rate", "50", "--out", str(out)],
                          capture_output=True, text=True, env=cli_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["settings"]["trace"]["source"] == str(prompts_file)
    folder = DatasetFolder(built)
    rows = {}
    for part in ("train", "validation", "test"):
        t = getattr(load_config(folder, CONFIG, ["prompt", "uid"]), part)
        rows.update({str(u): (str(p), int(n)) for u, p, n in
                     zip(t["uid"], t["prompt"], t["output_tokens"])})
    entry = folder.config(CONFIG)
    tokenizer = load_tokenizer(resolve_model(entry["build"]["model"]))[0]
    trace = replay.trace_from_source(str(prompts_file), "prompt", entry, tokenizer,
                                     np.zeros(64), seed=0)
    assert result["requests"] == len(trace) > 0
    assert [r.prompt for r in trace] == [rows[r.uid][0] for r in trace]
    for p in result["policies"].values():
        assert p["tokens_as_recorded"] is None
    served = {s["uid"]: s["tokens"] for s in result["per_request"]["fcfs"]}
    assert served == {r.uid: rows[r.uid][1] for r in trace}


@pytest.fixture(scope="module")
def elsewhere(built, tmp_path_factory):
    """A constant-median saved by `forelen fit` on `built`, then marked as fitted on another
    generator's lengths (as if fitted on a config of another model)."""
    out = tmp_path_factory.mktemp("saved") / "constant"
    done = subprocess.run([FORELEN, "fit", "--predictor", "constant-median", "--data",
                           str(built), "--config", CONFIG, "--out", str(out)],
                          capture_output=True, text=True, env=cli_env(), timeout=600)
    assert done.returncode == 0, done.stderr
    meta = json.loads((out / "predictor.json").read_text())
    generator = meta["fitted_on"]["generator"]
    for key in [k for k in generator if k.startswith("model")]:
        generator[key] = "another/model"
    (out / "predictor.json").write_text(json.dumps(meta, indent=1))
    return out


@pytest.mark.parametrize("args, message", [
    (["--policy", "srpt", "--predictor", "egtp"], "not progressive"),
    (["--policy", "sjf"], "ranks by a predictor"),
    (["--config", "nope", "--policy", "fcfs"], "unknown config"),
    (["--policy", "fcfs", "--rate", "0"], "--rate must be > 0"),
    (["--policy", "fcfs", "--rate", "-1"], "--rate must be > 0"),
    (["--policy", "lifo"], "unknown --policy lifo"),
    (["--policy", "fcfs", "--arrivals", "{stamps}"], "expected numbers"),
    (["--policy", "fcfs", "--arrivals", "{empty}"], "no finite timestamps"),
    (["--policy", "fcfs,sjf", "--from", "{saved}"], "fitted on lengths generated by"),
])
def test_bad_input_is_one_line_and_writes_nothing(built, elsewhere, tmp_path, args, message):
    (tmp_path / "stamps.txt").write_text("start\nlater\n")
    (tmp_path / "empty.txt").write_text("# no timestamps\n")
    args = [a.format(stamps=tmp_path / "stamps.txt", empty=tmp_path / "empty.txt",
                     saved=elsewhere) for a in args]
    out = tmp_path / "replay.json"
    base = ["replay", "--data", str(built), "--out", str(out)] + (
        [] if "--config" in args else ["--config", CONFIG])
    proc = subprocess.run([FORELEN, *base, *args], capture_output=True, text=True,
                          env=cli_env(), timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()


# ----------------------------------------------------------------------------- vLLM (no GPU)


def test_vllm_priorities_keep_the_order_of_the_keys():
    from forelen.replay_vllm import priorities

    assert priorities([120.0, 7.0, 300.0]) == [120, 7, 300]  # lengths stay lengths
    assert priorities([0.52, -1.3, 0.51]) == [2, 0, 1]  # ranking scores become ranks


def test_vllm_refuses_what_it_cannot_do():
    from forelen.predictors import PREDICTORS
    from forelen.replay_vllm import check_predictor

    with pytest.raises(ForelenError, match="hidden states, which vLLM does not return"):
        check_predictor(PREDICTORS.get("egtp")())
    check_predictor(PREDICTORS.get("prompt-length")())  # a reference reads the prompt only
    with pytest.raises(ForelenError, match="vLLM preempts by its own rule"):
        replay.check_options(ReplayOptions(config="c", engine="vllm", policies=("fcfs",),
                                           preempt=True))


def test_the_vllm_path_builds_its_trace_and_ranks_before_submission(built, monkeypatch):
    """Everything --engine vllm does before vLLM itself (tokenizer, trace, the text proxy's
    keys, EOS), with vLLM's serve() replaced by one that records what it was given."""
    from forelen import replay_vllm

    given = {}

    def fake_serve(location, dtype, trace, policy, keys, slots, eos, served, seed=0):
        given[policy] = (len(trace), list(keys), eos)
        for i, (r, k, s) in enumerate(zip(trace, keys, served)):
            assert isinstance(s, Served) and (s.uid, s.arrival_s) == (r.uid, r.arrival_s)
            s.first_token_s = s.admitted_s = r.arrival_s + 0.1
            s.finish_s, s.tokens, s.key = r.arrival_s + 1.0 + i, r.recorded_tokens, float(k)
        return served

    monkeypatch.setattr(replay_vllm, "serve", fake_serve)
    result = serve(built, policies=("fcfs", "sjf:prompt-length", "oracle"), engine="vllm",
                   rate=5.0, limit=6)
    assert result["requests"] == 6 and set(given) == {"fcfs", "sjf", "oracle"}
    n, keys, eos = given["sjf"]
    assert n == 6 and len(set(keys)) > 1 and eos  # predicted per request, before submission
    assert given["oracle"][1] == [float(r) for r in given["oracle"][1]]
    assert result["policies"]["sjf:prompt-length"]["predict_ms_per_request"] > 0


def test_the_serving_engine_overrides_only_methods_the_runner_has():
    """A renamed runner method would leave the serving override silently unused."""
    from forelen.builders.engines.hf import HFEngine
    from forelen.replay import ServingEngine

    own = {n for n, v in vars(ServingEngine).items() if callable(v) and not n.startswith("__")}
    assert own and own <= {n for n in dir(HFEngine) if callable(getattr(HFEngine, n))}
