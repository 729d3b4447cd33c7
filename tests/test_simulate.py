"""Scheduling simulator: hand-computed schedules, properties, the record section and the CLI."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from conftest import FORELEN, cli_env
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from forelen.errors import ForelenError
from forelen.simulator import (CostModel, SimSettings, Workload, fcfs, load_cost_model,
                               make_workload, oracle, simulate, sjf, srpt)
from forelen.simulator.cost import fit_cost_model
from forelen.simulator.endtoend import Scenario, auto_slots, auto_static_slots
from forelen.simulator.engine import steps_until
from forelen.simulator.naive import naive_continuous

UNIT = CostModel(decode_base_s=1.0, decode_per_seq_s=0.0, decode_per_context_token_s=0.0,
                 prefill_base_s=0.0, prefill_per_token_s=0.0)  # one second per decode step
STEPS = np.array([0, 1, 2, 4, 8, 16, 32, 64])


def workload(lengths, prompts=None, arrival=None, max_new=None) -> Workload:
    y = np.asarray(lengths, np.int64)
    p = np.asarray(prompts if prompts is not None else [1] * len(y), np.int64)
    a = np.asarray(arrival if arrival is not None else [0.0] * len(y), np.float64)
    return Workload(p, y, a, int(max_new or y.max()))


def run(w, plan, batching, slots, **kw):
    return simulate(w, plan, batching=batching, slots=slots, cost=kw.pop("cost", UNIT), **kw)


# Hand-computed: lengths [3, 1, 2, 4] arrive in this order at t=0, two slots, 1 s per decode step.

def test_static_fcfs_by_hand():
    r = run(workload([3, 1, 2, 4]), fcfs(4), "static", 2)
    # batches {0, 1} (runs 3 steps) then {2, 3} (4 steps); everyone leaves with the straggler.
    assert r.finish_s.tolist() == [3, 3, 7, 7] and r.decode_steps == 7
    assert r.padding == pytest.approx(((2 * 3 - 4) + (2 * 4 - 6)) / (6 + 8))  # 2/7


def test_static_oracle_sjf_by_hand():
    w = workload([3, 1, 2, 4])
    r = run(w, oracle(w.output_tokens), "static", 2)
    # batches {1, 2} (2 steps) then {0, 3} (4 steps).
    assert r.finish_s.tolist() == [6, 2, 2, 6] and r.finish_s.mean() == 4
    assert r.padding == pytest.approx(((4 - 3) + (8 - 7)) / (4 + 8))  # 1/6


def test_continuous_fcfs_by_hand():
    r = run(workload([3, 1, 2, 4]), fcfs(4), "continuous", 2)
    # t=1: request 1 ends, 2 takes its slot; t=3: 0 and 2 end, 3 starts; t=7: 3 ends.
    assert r.finish_s.tolist() == [3, 1, 3, 7] and r.decode_steps == 7
    assert r.padding == pytest.approx(1 - 10 / 14)


def test_continuous_oracle_sjf_by_hand():
    w = workload([3, 1, 2, 4])
    r = run(w, oracle(w.output_tokens), "continuous", 2)
    # 1 and 2 start; t=1: 0 starts; t=2: 3 starts; 0 ends at 1+3, 3 at 2+4.
    assert r.finish_s.tolist() == [4, 1, 2, 6] and r.finish_s.mean() == 3.25
    assert r.padding == pytest.approx(1 - 10 / 12)


def test_sjf_by_prediction_follows_the_prediction_not_the_truth():
    w = workload([3, 1, 2, 4])
    r = run(w, sjf([1.0, 9.0, 2.0, 3.0]), "continuous", 2)  # order 0, 2, 3, 1
    # 0 and 2 start; t=2: 3 takes 2's slot (ends 6); t=3: 1 takes 0's slot (ends 4).
    assert r.finish_s.tolist() == [3, 4, 2, 6]


def test_srpt_preempts_on_a_larger_re_prediction():
    # One slot. Request 0 (4 tokens) is predicted 1 at t=0 and 5 remaining at step 2;
    # request 1 (2 tokens) is predicted 3.
    w = workload([4, 2])
    plan = srpt([0, 2], [[1.0, 5.0], [3.0, np.nan]])
    r = run(w, plan, "continuous", 1, rerank_every=2)
    # 0 runs steps 1-2, is re-ranked (5 > 3) and preempted; 1 runs steps 3-4 (t=4); 0 resumes
    # with its 2 tokens kept and ends at t=6.
    assert r.finish_s.tolist() == [6, 4] and r.preemptions == 1 and r.decode_steps == 6
    r4 = run(w, plan, "continuous", 1, rerank_every=4)  # no re-rank before 0 ends
    assert r4.finish_s.tolist() == [4, 6] and r4.preemptions == 0
    o = run(w, oracle(w.output_tokens, "srpt"), "continuous", 1, rerank_every=2)
    assert o.finish_s.tolist() == [6, 2]


def test_srpt_resume_pays_a_recompute_prefill():
    w = workload([4, 2], prompts=[10, 10])
    cost = CostModel(1.0, 0.0, 0.0, 0.0, 0.5)  # prefill 0.5 s per token
    r = run(w, srpt([0, 2], [[1.0, 5.0], [3.0, np.nan]]), "continuous", 1, rerank_every=2,
            cost=cost)
    # prefill 10 tokens (5 s) + 2 steps; prefill 10 + 2 steps; resume: prefill 10 + 2 kept, 2 steps.
    assert r.finish_s.tolist() == [5 + 2 + 5 + 2 + 6 + 2, 5 + 2 + 5 + 2]


def test_cost_model_closed_form_by_hand():
    cost = CostModel(1.0, 0.5, 0.1, 2.0, 0.5)
    w = workload([3], prompts=[10])
    # prefill 2 + 0.5*10 = 7; steps over contexts 10, 11, 12: 2.5 + 2.6 + 2.7.
    for mode in ("static", "continuous"):
        assert run(w, fcfs(1), mode, 1, cost=cost).finish_s[0] == pytest.approx(14.8)


def test_poisson_idle_gap_and_late_arrival_by_hand():
    w = workload([2, 3], arrival=[0.0, 10.0])
    for mode in ("static", "continuous"):
        r = run(w, fcfs(2), mode, 1)
        assert r.finish_s.tolist() == [2, 13] and r.padding == 0


def test_arrival_mid_run_joins_at_the_next_step_boundary():
    w = workload([5, 1], arrival=[0.0, 2.5])
    assert run(w, fcfs(2), "continuous", 2).finish_s.tolist() == [5, 4]  # admitted at t=3
    assert run(w, fcfs(2), "static", 2).finish_s.tolist() == [5, 6]  # waits for the batch


def test_kv_budget_blocks_admission_by_hand():
    w = workload([1, 1, 1], prompts=[5, 5, 5], max_new=5)  # each reserves 10 tokens
    r = run(w, fcfs(3), "continuous", 3, kv_budget_tokens=25)
    assert r.finish_s.tolist() == [1, 1, 2] and r.padding == pytest.approx(0.5)
    s = run(w, fcfs(3), "static", 3, kv_budget_tokens=25)
    assert s.finish_s.tolist() == [1, 1, 2] and s.padding == 0
    assert run(w, fcfs(3), "continuous", 3, kv_budget_tokens=5).finish_s.tolist() == [1, 2, 3]


def test_aging_lets_an_old_long_request_overtake():
    # One slot: 0 (4 tokens) runs from t=0; 1 (3 tokens, key 3) arrives at 1, 2 (1 token, key 1)
    # at 3; at t=4 the slot frees.
    w = workload([4, 3, 1], arrival=[0.0, 1.0, 3.0])
    plan = sjf([4.0, 3.0, 1.0])
    for mode in ("static", "continuous"):
        assert run(w, plan, mode, 1).finish_s.tolist() == [4, 8, 5]  # shortest first
        # aging 2/s: keys 3 + 2*1 = 5 against 1 + 2*3 = 7, so the older request goes first.
        assert run(w, plan, mode, 1, aging=2.0).finish_s.tolist() == [4, 7, 8]


@pytest.mark.parametrize("gap, alpha, beta", [(0.5, 1, 0), (3, 1, 0), (3.0001, 1, 0), (10, 1, 0.5),
                                              (-1, 2, 1), (1e6, 0.01, 1e-5)])
def test_steps_until_is_the_smallest_step_count(gap, alpha, beta):
    m = steps_until(gap, alpha, beta)
    total = lambda k: alpha * k + beta * k * (k - 1) / 2  # noqa: E731
    assert m >= 1 and total(m) >= gap and (m == 1 or total(m - 1) < gap)


# Properties.

lengths = st.lists(st.integers(1, 60), min_size=1, max_size=40)


@st.composite
def cases(draw):
    y = draw(lengths)
    n = len(y)
    p = draw(st.lists(st.integers(1, 200), min_size=n, max_size=n))
    rate = draw(st.one_of(st.none(), st.floats(0.05, 20)))
    w, _ = make_workload(p, y, rate=rate, seed=draw(st.integers(0, 99)))
    cost = CostModel(draw(st.floats(0.01, 1)), draw(st.floats(0, 0.1)), draw(st.floats(0, 1e-3)),
                     draw(st.floats(0, 1)), draw(st.floats(0, 1e-2)))
    return w, cost, draw(st.integers(1, 6)), draw(st.sampled_from([None, 400, 1000])), \
        draw(st.integers(1, 9)), draw(st.sampled_from([0.0, 0.0, 2.0]))


def noisy_remaining(y, seed):
    rng = np.random.default_rng(seed)
    rem = np.maximum(y[:, None] - STEPS + rng.normal(0, 15, (len(y), len(STEPS))), 0)
    return np.where(y[:, None] > STEPS, rem, np.nan)


@settings(max_examples=60, deadline=None)
@given(lengths, st.integers(1, 8), st.sampled_from(["static", "continuous"]))
def test_oracle_sjf_never_worse_than_fcfs_on_mean_jct(y, slots, mode):
    """Continuous batching with equal steps is P||sum C_j, where SPT is optimal. Static batching only
    when every batch is full: with a partial last batch, sorted batches can lose (lengths 1,1,1,2,2
    in 4 slots: SJF {1,1,1,2},{2} sums completions to 12 steps, {2,2,1,1},{1} to 11)."""
    if mode == "static":
        assume(len(y) >= slots)
        y = y[: len(y) - len(y) % slots]
    w, _ = make_workload(np.ones(len(y)), y, seed=0)
    c = CostModel(0.02, 0.0, 0.0, 0.0, 0.0)  # identical steps: SPT is optimal on parallel slots
    o = run(w, oracle(w.output_tokens), mode, slots, cost=c).finish_s.mean()
    f = run(w, fcfs(w.n), mode, slots, cost=c).finish_s.mean()
    assert o <= f * (1 + 1e-12)


@settings(max_examples=60, deadline=None)
@given(cases(), st.sampled_from(["static", "continuous"]), st.integers(0, 9))
def test_padding_in_unit_interval_and_every_request_served_once(case, mode, seed):
    w, cost, slots, kv, k, aging = case
    for plan in (fcfs(w.n), sjf(w.output_tokens[::-1]), srpt(STEPS, noisy_remaining(w.output_tokens, seed))):
        r = run(w, plan, mode, slots, cost=cost, kv_budget_tokens=kv, rerank_every=k, aging=aging)
        assert 0 <= r.padding < 1
        assert np.isfinite(r.finish_s).all()
        min_step = cost.decode_base_s + cost.decode_per_seq_s
        assert (r.finish_s >= w.arrival_s + w.output_tokens * min_step * (1 - 1e-9)).all()
        if mode == "continuous":  # slot-steps used are exactly the tokens generated: none lost or twice
            assert (1 - r.padding) * slots * r.decode_steps == pytest.approx(w.output_tokens.sum())


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.integers(1, 30), st.integers(1, 8), st.integers(0, 9))
def test_padding_is_zero_when_all_lengths_are_equal(length, n, slots, seed):
    w, _ = make_workload(np.arange(1, n + 1), [length] * n, seed=seed)
    assert run(w, sjf(np.arange(n)[::-1]), "static", slots, cost=CostModel()).padding == 0
    if n % slots == 0:
        assert run(w, fcfs(n), "continuous", slots, cost=CostModel()).padding == 0


@settings(max_examples=60, deadline=None)
@given(cases(), st.sampled_from(["static", "continuous"]))
def test_perfect_predictions_reproduce_the_oracle_exactly(case, mode):
    w, cost, slots, kv, k, aging = case
    y = w.output_tokens
    kw = dict(cost=cost, kv_budget_tokens=kv, rerank_every=k, aging=aging)
    perfect_sjf = run(w, sjf(y.astype(float).copy()), mode, slots, **kw)
    assert perfect_sjf.finish_s.tolist() == run(w, oracle(y), mode, slots, **kw).finish_s.tolist()
    exact = np.where(y[:, None] > STEPS, y[:, None] - STEPS, np.nan).astype(float)
    perfect = run(w, srpt(STEPS, exact), mode, slots, **kw)
    ref = run(w, oracle(y, "srpt"), mode, slots, **kw)
    assert perfect.finish_s.tolist() == ref.finish_s.tolist() and perfect.padding == ref.padding


@settings(max_examples=60, deadline=None)
@given(cases(), st.integers(0, 9))
def test_event_engine_matches_the_per_step_simulator(case, seed):
    w, cost, slots, kv, k, aging = case
    for plan in (fcfs(w.n), sjf(-w.prompt_tokens.astype(float)), srpt(STEPS, noisy_remaining(w.output_tokens, seed))):
        r = run(w, plan, "continuous", slots, cost=cost, kv_budget_tokens=kv, rerank_every=k, aging=aging)
        f, pad = naive_continuous(w, plan, slots=slots, cost=cost, rerank_every=k,
                                  kv_budget_tokens=kv, aging=aging)
        np.testing.assert_allclose(r.finish_s, f, rtol=1e-9)
        assert r.padding == pytest.approx(pad, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 3000), min_size=1, max_size=80), st.integers(1, 20),
       st.sampled_from([0.0, 3.5]), st.integers(0, 9), st.booleans())
def test_static_batches_at_once_match_the_event_loop(y, slots, at, seed, ties):
    """Every request at once and no KV budget: static batching is computed without the loop,
    and must give the loop's schedule to the bit (same batches, same float operations)."""
    from forelen.simulator.engine import _static, _static_at_once

    rng = np.random.default_rng(seed)
    n = len(y)
    w = Workload(rng.integers(0, 300, n), np.asarray(y, np.int64), np.full(n, at), max(y))
    key = rng.integers(0, 4, n).astype(float) if ties else rng.normal(size=n)  # ties: by arrival
    cost = CostModel(*rng.uniform([0.01, 0, 0, 0, 0], [1, 0.1, 1e-3, 1, 1e-2]))
    loop, fast = _static(w, key, slots, cost, None), _static_at_once(w, key, slots, cost)
    assert fast.finish_s.tolist() == loop.finish_s.tolist() and fast.padding == loop.padding
    assert fast.decode_steps == loop.decode_steps and fast.batch.tolist() == loop.batch.tolist()


@pytest.mark.parametrize("seed", range(4))
def test_srpt_with_many_preemptions_matches_the_per_step_simulator(seed):
    """The event engine visits only the re-ranks that can preempt (alarms); on a workload where
    most requests are preempted, it must still follow the per-step simulator, which re-ranks
    every running request at every k-th step."""
    rng = np.random.default_rng(seed)
    y = rng.integers(1, 120, 200)
    w, _ = make_workload(rng.integers(1, 50, 200), y, seed=seed,
                         rate=None if seed % 2 else 40.0)
    plan = srpt(STEPS, np.where(w.output_tokens[:, None] > STEPS,
                                np.maximum(w.output_tokens[:, None] - STEPS, 0)
                                * np.exp(rng.normal(0, 0.4, (200, len(STEPS)))), np.nan))
    cost = CostModel(0.01, 1e-3, 1e-6, 0.02, 1e-5)
    r = run(w, plan, "continuous", 16, cost=cost, rerank_every=4, aging=0.5 * (seed > 1))
    f, pad = naive_continuous(w, plan, slots=16, cost=cost, rerank_every=4, aging=0.5 * (seed > 1))
    assert r.preemptions > 50
    np.testing.assert_allclose(r.finish_s, f, rtol=1e-9)
    assert r.padding == pytest.approx(pad, abs=1e-12)


# Settings, cost model, record section.

def test_workload_arrivals_are_seeded_and_shuffled():
    a, order_a = make_workload([1] * 50, np.arange(1, 51), rate=2.0, seed=3)
    b, order_b = make_workload([1] * 50, np.arange(1, 51), rate=2.0, seed=3)
    assert (order_a == order_b).all() and (a.arrival_s == b.arrival_s).all()
    assert a.arrival_s[0] == 0 and (np.diff(a.arrival_s) >= 0).all()
    assert (a.output_tokens == np.arange(1, 51)[order_a]).all() and not (order_a == np.arange(50)).all()
    with pytest.raises(ForelenError, match="at least one token"):
        make_workload([1], [0])


def test_auto_slots_creates_queueing():
    assert [auto_slots(n) for n in (3, 8, 16, 1000, 10**6)] == [2, 2, 4, 64, 64]
    # static batching: batches of at most 16, at least 16 of them from 32 rows on
    assert [auto_static_slots(n) for n in (3, 40, 254, 352, 10**6)] == [2, 2, 15, 16, 16]


def test_scenario_block_has_the_record_shape():
    rng = np.random.default_rng(0)
    y = rng.integers(1, 200, 30)
    sc = Scenario(rng.integers(1, 100, 30), y, SimSettings(seed=1), max_new_tokens=256)
    block = sc.block(y + rng.normal(0, 40, 30), STEPS, noisy_remaining(y, 0))
    s = block["settings"]
    assert s["slots"] == 7 and s["static_slots"] == 2 and s["arrival"] == "simultaneous"
    assert s["rate"] is None
    assert set(s) == {"slots", "static_slots", "kv_budget_tokens", "arrival", "rate", "seed",
                      "aging", "rerank_every", "cost_model"} and s["cost_model"]["source"] == "default"
    # like for like: SJF on the static prediction in both batching modes for every predictor; a
    # progressive one also gets SRPT under continuous batching, as a mode of its own
    assert list(block["modes"]) == ["static", "continuous", "continuous-srpt"]
    assert [(b["batching"], b["policy"]) for b in block["modes"].values()] == [
        ("static", "sjf"), ("continuous", "sjf"), ("continuous", "srpt")]
    # the share of static batches holding a row at the cap: none here (every length < 256)
    assert block["modes"]["static"]["capped_batches"] == {"predictor": 0.0, "fcfs": 0.0, "oracle": 0.0}
    assert "capped_batches" not in block["modes"]["continuous"]
    for b in block["modes"].values():
        for m in (b["predictor"], b["fcfs"], b["oracle"]):
            assert set(m) == {"requests", "throughput_tok_s", "throughput_req_s", "jct_mean_s",
                              "jct_p90_s", "padding_ratio", "makespan_s"} and m["requests"] == 30
        for r in (b["vs_fcfs"], b["vs_oracle"]):
            assert set(r) == {"throughput_tok_s", "jct_mean_s", "jct_p90_s", "padding_ratio"}
        assert b["vs_fcfs"]["jct_mean_s"] == b["predictor"]["jct_mean_s"] / b["fcfs"]["jct_mean_s"]
    json.dumps(block)
    perfect = sc.block(y.astype(float))  # a static predictor that is exact equals the oracle
    assert list(perfect["modes"]) == ["static", "continuous"]
    assert perfect["modes"]["continuous"]["vs_oracle"]["jct_mean_s"] == 1.0


def test_settings_are_checked():
    for kw, needle in [({"slots": 0}, "--slots"), ({"static_slots": 0}, "--static-slots"),
                       ({"rate": 0.0}, "--rate"),
                       ({"rerank_every": 0}, "--rerank-every"), ({"aging": -1.0}, "--aging")]:
        with pytest.raises(ForelenError, match=needle):
            SimSettings(**kw)
    with pytest.raises(ForelenError, match="free"):
        CostModel(0.0, 0.0, 0.0, 0.0, 0.0)


def test_cost_model_fit_and_load(tmp_path):
    truth = CostModel(0.01, 0.002, 1e-5, 0.05, 1e-4)
    decode = [(b, ctx, truth.decode_s(b, ctx)) for b in (1, 4, 16) for ctx in (64, 1000, 4000)]
    prefill = [(tok, truth.prefill_s(tok)) for tok in (32, 512, 4096)]
    fitted = fit_cost_model(decode, prefill)
    for name, v in truth.coefficients().items():
        assert getattr(fitted, name) == pytest.approx(v, rel=1e-6)
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps({"coefficients": truth.coefficients(), "device": "cuda:0"}))
    assert load_cost_model(path) == truth
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ForelenError, match="needs the keys"):
        load_cost_model(tmp_path / "bad.json")


# The record section and the command line, on a tiny built config.

CONFIG = "tiny-llama-long"


@pytest.fixture(scope="module")
def built(tiny_model_dir, prompts_file, tmp_path_factory):
    from forelen.builders.build import BuildOptions, run_build

    out = tmp_path_factory.mktemp("simulate") / "ds"
    run_build(BuildOptions(split="long", model=str(tiny_model_dir), sources=(str(prompts_file),),
                           samples_per_prompt=3, max_new_tokens=16, batch_size=8, steps=16,
                           dtype="float32", device="cpu", out=str(out)))
    return out


def forelen(*args):
    return subprocess.run([FORELEN, *args], capture_output=True, text=True, env=cli_env(),
                          timeout=600)


def test_evaluate_records_carry_end_to_end(built, tmp_path):
    from forelen.dataset import DatasetFolder
    from forelen.leaderboard.evaluate import run_evaluation

    records = run_evaluation(DatasetFolder(built), [CONFIG], ["constant-median", "plp"], 42,
                             str(tmp_path))
    for rec in records:
        on_disk = json.loads(open(rec["path"]).read())
        e2e = on_disk["end_to_end"]
        n = rec["references"]["test_rows"]
        assert e2e["settings"]["slots"] == auto_slots(n) and e2e["settings"]["seed"] == 42
        assert e2e["settings"]["static_slots"] == auto_static_slots(n)
        for mode in ("static", "continuous"):
            assert e2e["modes"][mode]["predictor"]["requests"] == n
            assert 0 <= e2e["modes"][mode]["predictor"]["padding_ratio"] < 1
        # max_new_tokens is known: the static mode says how many batches a capped row costs
        assert set(e2e["modes"]["static"]["capped_batches"]) == {"predictor", "fcfs", "oracle"}
    by_name = {r["predictor"]["name"]: r["end_to_end"]["modes"] for r in records}
    assert by_name["plp"]["continuous"]["policy"] == "sjf" and by_name["plp"]["static"]["policy"] == "sjf"
    assert by_name["plp"]["continuous-srpt"]["policy"] == "srpt"
    assert by_name["constant-median"]["continuous"]["policy"] == "sjf"
    assert "continuous-srpt" not in by_name["constant-median"]
    # FCFS is the same schedule whichever predictor the record is for.
    assert by_name["plp"]["static"]["fcfs"] == by_name["constant-median"]["static"]["fcfs"]


def test_simulate_prints_tables_and_writes_records(built, tmp_path):
    cost = tmp_path / "gpu.json"
    cost.write_text(json.dumps({"coefficients": CostModel(0.01, 0.001, 1e-6, 0.02, 1e-5).coefficients()}))
    proc = forelen("simulate", "--predictor", "all", "--family", "reference", "--data", str(built),
                   "--slots", "3", "--static-slots", "2", "--rate", "5", "--batching", "continuous",
                   "--cost-model", str(cost),
                   "--results", str(tmp_path / "res"))
    assert proc.returncode == 0, proc.stderr
    assert "continuous batching, 3 slots, Poisson 5 req/s" in proc.stderr
    assert "FCFS" in proc.stderr and "oracle SJF" in proc.stderr and "prompt-length" in proc.stderr
    assert "static batching" not in proc.stderr
    # simulate's records live apart: evaluate's are never overwritten, and a release ignores them
    (path,) = (tmp_path / "res" / "simulate").glob(f"*/{CONFIG}/constant-median.json")
    assert not (tmp_path / "res" / CONFIG).exists()
    rec = json.loads(path.read_text())
    s = rec["end_to_end"]["settings"]
    assert s["slots"] == 3 and s["static_slots"] == 2 and s["arrival"] == "poisson" and s["rate"] == 5
    assert s["cost_model"]["source"] == str(cost) and s["cost_model"]["decode_base_s"] == 0.01


@pytest.mark.parametrize("args, needle", [
    (["--predictor", "egpt"], "did you mean 'egtp'"),
    (["--predictor", "egtp", "--slots", "0"], "--slots must be >= 1"),
    (["--predictor", "egtp", "--static-slots", "0"], "--static-slots must be >= 1"),
    (["--predictor", "egtp", "--rate", "-1"], "--rate must be > 0"),
    (["--predictor", "egtp", "--cost-model", "/nonexistent/cost.json"], "cost model file not found"),
    (["--predictor", "egtp", "--batching", "dynamic"], "dynamic"),
    (["--predictor", "egtp", "--config", "tiny-llama-lon"], "did you mean 'tiny-llama-long'"),
])
def test_simulate_errors_are_one_line(built, args, needle):
    proc = forelen("simulate", "--data", str(built), *args)
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error:")


def test_static_sjf_can_lose_with_a_partial_batch():
    """The counter-example above, worked out: mean JCT 2.4 steps for SJF against 2.2 for the order
    that batches the two long requests together."""
    c = CostModel(1.0, 0.0, 0.0, 0.0, 0.0)
    y = np.array([2, 2, 1, 1, 1])
    w, _ = make_workload(np.ones(5), y, seed=0)
    sjf_mean = run(w, oracle(w.output_tokens), "static", 4, cost=c).finish_s.mean()
    long_first = run(w, sjf(-w.output_tokens.astype(float)), "static", 4, cost=c).finish_s.mean()
    assert sjf_mean == pytest.approx(2.4) and long_first == pytest.approx(2.2)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(0, 200), st.sampled_from([0.0, 1.5]), st.integers(0, 9))
def test_engine_srpt_keys_are_the_plans_running_keys(n, g, aging, seed):
    """The engine computes SRPT keys one request at a time; they must be the plan's
    `running_keys` (plus aging) to the bit, or a re-rank could order requests differently."""
    from forelen.simulator.engine import _Alarms

    rng = np.random.default_rng(seed)
    y = rng.integers(1, 300, n)
    w, _ = make_workload(np.ones(n), y, rate=3.0, seed=seed)
    plan = srpt(STEPS, noisy_remaining(w.output_tokens, seed))
    alarms = _Alarms(plan, aging, w)
    ids = np.arange(n)
    want = plan.running_keys(ids, np.full(n, g)) + (aging * w.arrival_s if aging else 0)
    assert [alarms.key(i, g) for i in range(n)] == want.tolist()


def test_prefill_at_arrival_charges_each_request_as_it_arrives():
    """One slot; r0 (10 prompt tokens, 3 new) at t=0, r1 the same at t=0.05. Prefill of 10
    tokens = 0.1 + 10 x 0.01 = 0.2 s, a decode step 0.1 s."""
    from forelen.simulator.cost import CostModel
    from forelen.simulator.engine import simulate
    from forelen.simulator.policies import fcfs
    from forelen.simulator.requests import Workload

    cost = CostModel(decode_base_s=0.1, decode_per_seq_s=0.0, decode_per_context_token_s=0.0,
                     prefill_base_s=0.1, prefill_per_token_s=0.01)
    w = Workload(np.array([10, 10]), np.array([3, 3]), np.array([0.0, 0.05]), 3)
    # at admission: r0 prefilled and decoded (0.2 + 0.3), then r1 the same
    admitted = simulate(w, fcfs(2), slots=1, cost=cost)
    assert admitted.finish_s == pytest.approx([0.5, 1.0])
    # at arrival: r0's prefill (0.2) and one step (0.3); r1 arrived meanwhile, so its prefill
    # runs before r0's next step (0.5); r0's last two steps (0.7); r1 needs no prefill (1.0)
    arrived = simulate(w, fcfs(2), slots=1, cost=cost, prefill_at="arrival")
    assert arrived.finish_s == pytest.approx([0.7, 1.0])
    with pytest.raises(ValueError, match="prefill_at"):
        simulate(w, fcfs(2), slots=1, cost=cost, prefill_at="later")


def test_a_swapped_request_resumes_without_a_prefill():
    """srpt on one slot: the long r0 is preempted by the short r1 and resumes; recompute charges
    its prompt and generated tokens again, swap charges nothing."""
    from forelen.simulator.cost import CostModel
    from forelen.simulator.engine import simulate
    from forelen.simulator.policies import srpt
    from forelen.simulator.requests import Workload

    cost = CostModel(decode_base_s=0.1, decode_per_seq_s=0.0, decode_per_context_token_s=0.0,
                     prefill_base_s=0.1, prefill_per_token_s=0.01)
    w = Workload(np.array([10, 10]), np.array([20, 2]), np.array([0.0, 0.05]), 20)
    plan = srpt([0], np.array([[20.0], [2.0]]))
    recompute = simulate(w, plan, slots=1, cost=cost, rerank_every=1)
    swap = simulate(w, plan, slots=1, cost=cost, rerank_every=1, resume="swap")
    assert recompute.preemptions == swap.preemptions == 1
    # r0: prefill and one step (0.3); r1 queued there, ranked at the next boundary (0.4); r1's
    # prefill and two steps (0.8); r0 resumes after 2 tokens: recompute adds a prefill of
    # 10 + 2 tokens (0.22)
    assert swap.finish_s[1] == pytest.approx(0.8)
    assert recompute.finish_s[0] - swap.finish_s[0] == pytest.approx(0.22)
