"""The continuous `hf` engine on the tiny float32 model: exact tokens whatever the schedule, features
recorded in the generation pass equal to the teacher-forced recorder's, slots, prefix sharing,
chunked prefill, and the KV budget."""

from __future__ import annotations

import numpy as np
import pytest
from test_engine_hf import TEXTS, requests_for

from forelen.builders.engines import GenerationRequest, HFSettings
from forelen.builders.engines.hf import HFEngine
from forelen.builders.engines.hf_static import HFStaticEngine
from forelen.builders.recorder import Recorder
from forelen.errors import ForelenError

LAYERS = (0, 1, 3)
STEPS = 6


def rl_requests(tokenizer, samples: int = 3, max_new=(6, 12, 20)) -> list[GenerationRequest]:
    """Groups of `samples` requests sharing a prompt, consecutive as a build plans them."""
    base = requests_for(tokenizer, TEXTS, max_new=max_new)
    return [GenerationRequest(f"{r.uid}#{s}", r.prompt_ids, r.max_new_tokens, 1.0, 0.95,
                              r.seed * 100 + s) for r in base for s in range(samples)]


def engine(model, tokenizer, **kw) -> HFEngine:
    kw.setdefault("layers", LAYERS)
    kw.setdefault("steps", STEPS)
    return HFEngine(model, tokenizer, HFSettings(**kw))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def reference(tiny_model):
    """Requests and the static engine's generations: the tokens every schedule must reproduce."""
    model, tokenizer = tiny_model
    reqs = rl_requests(tokenizer)
    return reqs, HFStaticEngine(model, tokenizer, batch_size=8).generate(reqs)


@pytest.mark.parametrize("slots,attention,prefill_chunk", [
    (1, "sdpa", 512), (4, "grouped", 5), (7, "eager", 3), (64, "sdpa", 512)])
def test_tokens_do_not_depend_on_slots_kernel_or_prefill_pieces(tiny_model, reference, slots,
                                                               attention, prefill_chunk):
    model, tokenizer = tiny_model
    reqs, static = reference
    out = engine(model, tokenizer, slots=slots, attention=attention,
                 prefill_chunk=prefill_chunk).generate(reqs)
    assert [(g.uid, g.token_ids, g.finish_reason) for g in out] == \
        [(g.uid, g.token_ids, g.finish_reason) for g in static]
    assert {g.finish_reason for g in out} == {"stop", "length"}


def test_tokens_do_not_depend_on_refill_order(tiny_model, reference):
    model, tokenizer = tiny_model
    reqs, static = reference
    shuffled = [reqs[i] for i in np.random.default_rng(3).permutation(len(reqs))]
    out = {g.uid: g.token_ids for g in engine(model, tokenizer, slots=3).generate(shuffled)}
    assert [out[g.uid] for g in static] == [g.token_ids for g in static]


def test_fused_features_equal_the_teacher_forced_recorder(tiny_model, reference):
    model, tokenizer = tiny_model
    reqs, _ = reference
    out = engine(model, tokenizer, slots=5, first_k=4, prefill_chunk=7).generate(reqs)
    recorded = Recorder(model, list(LAYERS), steps=STEPS, first_k=4).record(
        [r.prompt_ids for r in reqs], [g.token_ids for g in out])
    assert any(len(g.token_ids) > STEPS for g in out)  # the step-state cut is exercised
    for gen, rec in zip(out, recorded):
        fused = gen.features
        assert sorted(fused.pooled) == sorted(rec.pooled) and len(rec.pooled) == 5 * len(LAYERS)
        for name, vec in rec.pooled.items():
            assert cosine(fused.pooled[name], vec) >= 0.9999, (gen.uid, name)
        for name, states in rec.step_states.items():
            assert fused.step_states[name].shape == states.shape == (
                min(STEPS, len(gen.token_ids)), model.config.hidden_size)
            for a, b in zip(fused.step_states[name], states):
                assert cosine(a, b) >= 0.9999, (gen.uid, name)
        assert fused.prompt_entropy.shape == rec.prompt_entropy.shape
        assert fused.response_entropy.shape == rec.response_entropy.shape == (len(gen.token_ids),)
        np.testing.assert_allclose(fused.prompt_entropy, rec.prompt_entropy, atol=1e-4)
        np.testing.assert_allclose(fused.response_entropy, rec.response_entropy, atol=1e-4)


def test_a_group_prefills_its_prompt_once(tiny_model, reference, monkeypatch):
    model, tokenizer = tiny_model
    reqs, static = reference
    eng = engine(model, tokenizer, slots=2)  # fewer slots than a group: the prefix must wait
    calls = []
    original = eng.prefill
    monkeypatch.setattr(eng, "prefill", lambda ids: calls.append(ids) or original(ids))
    out = eng.generate(reqs)
    assert len(calls) == len(TEXTS)
    assert [g.token_ids for g in out] == [g.token_ids for g in static]


def test_results_arrive_as_rows_end(tiny_model, reference):
    model, tokenizer = tiny_model
    reqs, _ = reference
    order, lengths = [], {}

    def done(g):
        order.append(g.uid)
        lengths[g.uid] = len(g.token_ids)
    assert engine(model, tokenizer, slots=4).generate(reqs, on_done=done) is None
    assert sorted(order) == sorted(r.uid for r in reqs) and len(order) == len(reqs)
    # With 4 slots, short rows of later requests finish before long rows of earlier ones.
    assert order != [r.uid for r in reqs]
    assert lengths[order[0]] <= min(lengths[r.uid] for r in reqs[:4])


def test_a_streamed_generation_is_not_kept(tiny_model, reference):
    """With on_done, the engine keeps no Generation (step states included) after handing it
    over: a work unit's results would otherwise stay in memory until the unit ends."""
    import gc
    import weakref

    model, tokenizer = tiny_model
    reqs, _ = reference
    handed, alive_at_end = [], []

    def done(g):
        gc.collect()
        alive_at_end.append(sum(ref() is not None for ref in handed))
        handed.append(weakref.ref(g))
    engine(model, tokenizer, slots=4).generate(reqs, on_done=done)
    assert len(handed) == len(reqs)
    assert max(alive_at_end) == 0, f"the engine still held {max(alive_at_end)} handed-over rows"


def test_eos_first_and_budget_of_one(tiny_model):
    model, tokenizer = tiny_model
    reqs = requests_for(tokenizer, TEXTS, max_new=(1,))
    out = engine(model, tokenizer, slots=2).generate(reqs)
    static = HFStaticEngine(model, tokenizer, batch_size=8).generate(reqs)
    assert [(g.token_ids, g.finish_reason) for g in out] == \
        [(g.token_ids, g.finish_reason) for g in static]
    for g in out:
        assert len(g.features.response_entropy) == len(g.token_ids) <= 1


def test_without_recording_no_features(tiny_model, reference):
    model, tokenizer = tiny_model
    reqs, static = reference
    out = engine(model, tokenizer, slots=4, record=False).generate(reqs)
    assert all(g.features is None for g in out)
    assert [g.token_ids for g in out] == [g.token_ids for g in static]


def test_kv_budget_bounds_the_slots(tiny_model):
    model, tokenizer = tiny_model
    eng = engine(model, tokenizer, slots=64)
    # tiny: 3 layers x 2 KV heads x 8 dims x 2 (K, V) x 4 bytes = 384 bytes a token
    per_slot = 384 * (100 + 20)
    eng.settings = HFSettings(slots=64, kv_budget_gib=per_slot * 6 / 2**30)
    assert eng.slot_count(100, 20) == 5  # one slot is the prefill scratch
    eng.settings = HFSettings(slots=3, kv_budget_gib=1.0)
    assert eng.slot_count(100, 20) == 3
    eng.settings = HFSettings(kv_budget_gib=per_slot * 1.5 / 2**30)
    with pytest.raises(ForelenError, match="cannot hold one prompt of 100 tokens plus 20"):
        eng.slot_count(100, 20)


def test_unknown_attention_kernel_is_refused(tiny_model):
    model, tokenizer = tiny_model
    with pytest.raises(ForelenError, match="unknown attention kernel 'flash'"):
        engine(model, tokenizer, attention="flash")


def test_model_attention_setting_is_restored(tiny_model, reference):
    model, tokenizer = tiny_model
    before = model.config._attn_implementation
    engine(model, tokenizer, slots=2).generate(reference[0][:3])
    assert model.config._attn_implementation == before


def test_split_ranges_reads_fewer_keys_and_covers_every_row():
    from forelen.builders.engines.slots import BUCKET_OVERHEAD_KEYS, split_ranges

    lengths = [100] * 60 + [2000] * 4 + [120] * 60
    cost, ranges = split_ranges(lengths)
    assert [r for a, b, _ in ranges for r in range(a, b)] == list(range(len(lengths)))
    for a, b, size in ranges:
        assert size == max(lengths[a:b])
    assert cost < len(lengths) * 2000 / 4
    assert split_ranges([50] * 10) == (10 * 50 + BUCKET_OVERHEAD_KEYS, [(0, 10, 50)])


@pytest.mark.parametrize("kernel", ["sdpa", "grouped", "eager"])
def test_ranged_attention_equals_one_padded_batch(kernel):
    import torch

    from forelen.builders.engines.slots import Plan, slot_attention

    g = torch.Generator().manual_seed(0)
    n, hq, hkv, d = 12, 4, 2, 8
    positions = torch.tensor([3, 40, 5, 7, 60, 2, 9, 11, 50, 4, 6, 8])
    key = torch.randn(n, hkv, 61, d, generator=g)
    value = torch.randn(n, hkv, 61, d, generator=g)
    query = torch.randn(n, hq, 1, d, generator=g)
    padded = Plan.for_decode(positions, kernel, torch.float32)
    ranged = Plan.for_decode(positions, kernel, torch.float32, [(0, 4, 41), (4, 9, 61), (9, 12, 9)])
    a, _ = slot_attention(None, query, key, value, padded, 0.3)
    b, _ = slot_attention(None, query, key, value, ranged, 0.3)
    torch.testing.assert_close(a, b)


def test_slots_are_resorted_by_length_without_changing_tokens(tiny_model, reference, monkeypatch):
    import forelen.builders.engines.scheduler as scheduler
    import forelen.builders.engines.slots as slots

    model, tokenizer = tiny_model
    reqs, static = reference
    # Tiny prompts: make ranges pay and re-sort whenever the slot order is not the ideal one.
    monkeypatch.setattr(slots, "BUCKET_OVERHEAD_KEYS", 0)
    monkeypatch.setattr(scheduler, "RESORT_RATIO", 1.0)
    shuffled = [reqs[i] for i in np.random.default_rng(5).permutation(len(reqs))]
    eng = engine(model, tokenizer, slots=9)
    out = eng.generate(shuffled)
    assert eng.timing.get("resorts", 0) > 0
    expected = {g.uid: g.token_ids for g in static}
    assert [g.token_ids for g in out] == [expected[g.uid] for g in out]
    recorded = Recorder(model, list(LAYERS), steps=STEPS).record(
        [r.prompt_ids for r in shuffled], [g.token_ids for g in out])
    for gen, rec in zip(out, recorded):
        np.testing.assert_allclose(gen.features.response_entropy, rec.response_entropy, atol=1e-4)
        for name, states in rec.step_states.items():
            np.testing.assert_allclose(gen.features.step_states[name], states, atol=1e-3)


def test_compiled_entropy_agrees_with_eager(monkeypatch):
    import torch

    from forelen.builders.engines import entropy as hf

    logits = torch.randn(5, 20000, generator=torch.Generator().manual_seed(0)) * 6
    fn, name = hf.entropy_kernel(20000)
    assert name == "compiled" or name.startswith("eager (")  # a toolchain may be missing
    torch.testing.assert_close(fn(logits), hf.entropy(logits), atol=1e-4, rtol=0)
    monkeypatch.setenv("FORELEN_COMPILE", "0")
    assert hf.entropy_kernel(20000) == (hf.entropy, "eager")
    assert hf.entropy_kernel(300)[1] == "eager"  # small vocabularies are not worth compiling
    monkeypatch.delenv("FORELEN_COMPILE")
    assert hf.entropy_kernel(20000, "cuda") == (hf.entropy, "eager")
