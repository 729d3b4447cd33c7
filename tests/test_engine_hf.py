"""Generation: per-sample seeded sampling, `finish`, and both `hf` engines on the tiny model.

The behaviour a build relies on is tested on the continuous `hf` engine and on `hf-static` alike;
what only the continuous engine does (slots, prefix sharing, fused features) is in
test_engine_continuous.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from forelen.builders.engines import (ENGINES, BatchSettings, Generation, GenerationRequest, HFSettings,
                                      finish)
from forelen.builders.engines.hf import HFEngine
from forelen.builders.engines.hf_static import HFStaticEngine, _SeededSampler
from forelen.builders.engines.sampling import eos_ids, sample_seeded

V = 50


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.fixture(scope="module")
def scores() -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.randn(4, V, generator=g) * 0.5  # flat enough that draws vary


# ---------------------------------------------------------------------------------------------
# sample_seeded


def _draws(scores, seeds, steps=25, temperature=1.0, top_p=1.0):
    generators = gens(*seeds)
    return torch.stack([sample_seeded(scores, generators, temperature, top_p)
                        for _ in range(steps)], dim=1)  # (B, steps)


def test_each_row_depends_only_on_its_own_seed_and_scores(scores):
    row = scores[0]
    alone = _draws(row[None], [11])[0]
    first = _draws(torch.stack([row, scores[1], scores[2]]), [11, 5, 6])[0]
    last = _draws(torch.stack([scores[3], scores[1], row]), [99, 98, 11])[2]
    big = _draws(torch.stack([scores[2]] * 6 + [row]), list(range(6)) + [11])[6]
    assert alone.tolist() == first.tolist() == last.tolist() == big.tolist()
    assert len(set(alone.tolist())) > 3  # it does sample


def test_different_seeds_give_different_draws(scores):
    d = _draws(torch.stack([scores[0]] * 2), [1, 2])
    assert d[0].tolist() != d[1].tolist()


def test_same_logits_same_seed_same_token_across_rows(scores):
    d = _draws(torch.stack([scores[0]] * 3), [4, 4, 4])
    assert d[0].tolist() == d[1].tolist() == d[2].tolist()


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_sampling_follows_softmax_over_temperature(temperature):
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    n = 6000
    drawn = sample_seeded(logits.repeat(n, 1), gens(*range(n)), temperature, 1.0)
    freq = np.bincount(drawn.numpy(), minlength=5) / n
    expected = torch.softmax(logits / temperature, dim=0).numpy()
    assert np.abs(freq - expected).max() < 0.025, (freq, expected)


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    n = 4000
    drawn = sample_seeded(probs.log().repeat(n, 1), gens(*range(n)), 1.0, 0.7).numpy()
    assert set(drawn.tolist()) == {0, 1}  # 0.5 < 0.7 needs token 1; 0.8 >= 0.7 stops there
    assert abs((drawn == 0).mean() - 0.5 / 0.8) < 0.03


def test_tiny_top_p_is_argmax(scores):
    d = _draws(scores, [1, 2, 3, 4], steps=10, top_p=1e-6)
    assert (d == scores.argmax(dim=-1)[:, None]).all()


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_temperature_zero_is_argmax(scores, temperature):
    d = _draws(scores, [1, 2, 3, 4], steps=5, temperature=temperature)
    assert (d == scores.argmax(dim=-1)[:, None]).all()


def test_sampler_leaves_exactly_one_finite_logit(scores):
    sampler = _SeededSampler([1, 2, 3, 4], 1.0, 1.0)
    out = sampler(None, scores.clone())
    assert torch.isfinite(out).sum(dim=-1).tolist() == [1, 1, 1, 1]
    expected = sample_seeded(scores, gens(1, 2, 3, 4), 1.0, 1.0)
    assert out.argmax(dim=-1).tolist() == expected.tolist()


def test_sampler_accepts_bfloat16_scores(scores):
    out = _SeededSampler([1, 2, 3, 4], 0.7, 0.9)(None, scores.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).sum() == 4


# ---------------------------------------------------------------------------------------------
# finish


def test_finish_cuts_at_first_eos():
    assert finish("u", [5, 6, 2, 7, 2], {2}, 10) == Generation("u", (5, 6), "stop")
    assert finish("u", [9, 3, 5], {2, 3}, 10) == Generation("u", (9,), "stop")


def test_finish_eos_first_gives_empty_stop():
    assert finish("u", [2, 5], {2}, 10) == Generation("u", (), "stop")


def test_finish_flags_length_at_the_budget():
    assert finish("u", [5, 6, 7], {2}, 3) == Generation("u", (5, 6, 7), "length")
    assert finish("u", [5, 6, 7, 8, 9], {2}, 3) == Generation("u", (5, 6, 7), "length")
    assert finish("u", [5, 6, 2], {2}, 3) == Generation("u", (5, 6), "stop")


def test_finish_short_response_without_eos_is_stop():
    assert finish("u", [5, 6], {2}, 3) == Generation("u", (5, 6), "stop")


def test_finish_returns_plain_ints():
    gen = finish("u", np.array([5, 6, 7]), {2}, 5)
    assert all(type(t) is int for t in gen.token_ids)


def test_finish_never_exceeds_the_budget():
    gen = finish("u", [5, 6, 7, 8, 9, 2], {2}, 3)
    assert gen == Generation("u", (5, 6, 7), "length")


# ---------------------------------------------------------------------------------------------
# both engines on the tiny model


def requests_for(tokenizer, texts, max_new=(6, 12, 20), temperature=1.0, top_p=1.0, seed0=100):
    reqs = []
    for i, text in enumerate(texts):
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                                 add_generation_prompt=True, tokenize=False)
        ids = tuple(tokenizer(rendered, add_special_tokens=False)["input_ids"])
        reqs.append(GenerationRequest(f"r{i}", ids, max_new[i % len(max_new)], temperature, top_p,
                                      seed0 + i))
    return reqs


TEXTS = ["Hi.", "Write a haiku about autumn leaves.", "What is 2 + 2?",
         "List five animals that live in the ocean and say one fact about each of them.",
         "Explain in two sentences why ice floats on water.", "Name a color."]
KINDS = ["hf", "hf-static"]


def make_engine(kind: str, model, tokenizer, width: int, record: bool = False):
    """`width`: slots of the continuous engine, batch size of the static one."""
    if kind == "hf":
        return HFEngine(model, tokenizer, HFSettings(slots=width, record=record))
    return HFStaticEngine(model, tokenizer, batch_size=width)


def test_engine_registry_and_eos_ids(tiny_model):
    model, tokenizer = tiny_model
    assert ENGINES.get("hf") is HFEngine and ENGINES.get("hf-static") is HFStaticEngine
    HFEngine.check("cpu")
    assert eos_ids(model, tokenizer) == {tokenizer.convert_tokens_to_ids("<|im_end|>")}
    static = HFStaticEngine.create(model, tokenizer, None, BatchSettings(batch_size=4))
    assert static.batch_size == 4 and static.pad_id == tokenizer.pad_token_id
    assert not static.records_features
    engine = HFEngine.create(model, tokenizer, None, HFSettings(slots=5))
    assert engine.records_features and engine.settings.slots == 5


def test_eos_ids_merges_model_list_and_tokenizer(tiny_model, monkeypatch):
    model, tokenizer = tiny_model
    monkeypatch.setattr(model.generation_config, "eos_token_id", [7, 8])
    assert eos_ids(model, tokenizer) == {7, 8, tokenizer.eos_token_id}


@pytest.mark.parametrize("kind", KINDS)
def test_engine_order_budget_and_finish_reasons(tiny_model, kind):
    model, tokenizer = tiny_model
    reqs = requests_for(tokenizer, TEXTS * 2)
    done = []
    assert make_engine(kind, model, tokenizer, 4).generate(reqs, on_done=done.append) is None
    out = make_engine(kind, model, tokenizer, 4).generate(reqs)
    assert [g.uid for g in out] == [r.uid for r in reqs]
    assert sorted(g.uid for g in done) == sorted(r.uid for r in reqs)
    eos = eos_ids(model, tokenizer)
    for r, g in zip(reqs, out):
        assert len(g.token_ids) <= r.max_new_tokens
        assert not eos & set(g.token_ids)
        assert g.finish_reason == ("length" if len(g.token_ids) == r.max_new_tokens else "stop")
    reasons = {g.finish_reason for g in out}
    assert reasons == {"stop", "length"}, [(len(g.token_ids), g.finish_reason) for g in out]


@pytest.mark.parametrize("kind", KINDS)
def test_engine_is_deterministic_across_runs_and_batchings(tiny_model, kind):
    model, tokenizer = tiny_model
    reqs = requests_for(tokenizer, TEXTS)
    a = make_engine(kind, model, tokenizer, 8).generate(reqs)
    b = make_engine(kind, model, tokenizer, 8).generate(reqs)
    assert a == b
    # Another batch composition (and order) gives every request the same tokens.
    c = make_engine(kind, model, tokenizer, 2).generate(reqs[::-1])[::-1]
    alone = [make_engine(kind, model, tokenizer, 1).generate([r])[0] for r in reqs[:3]]
    assert [g.token_ids for g in c] == [g.token_ids for g in a]
    assert [g.token_ids for g in alone] == [g.token_ids for g in a[:3]]


@pytest.mark.parametrize("kind", KINDS)
def test_engine_seed_changes_the_sample(tiny_model, kind):
    model, tokenizer = tiny_model
    base = requests_for(tokenizer, [TEXTS[3]] * 4, max_new=(20,), seed0=0)
    out = make_engine(kind, model, tokenizer, 8).generate(base)
    assert len({g.token_ids for g in out}) > 1


@pytest.mark.parametrize("kind", KINDS)
def test_engine_temperature_zero_is_greedy(tiny_model, kind):
    model, tokenizer = tiny_model
    reqs = requests_for(tokenizer, TEXTS[:3], max_new=(10,), temperature=0.0)
    out = make_engine(kind, model, tokenizer, 4).generate(reqs)
    for r, g in zip(reqs, out):
        ids = list(r.prompt_ids)
        expected = []
        with torch.no_grad():
            for _ in range(r.max_new_tokens):
                nxt = int(model(torch.tensor([ids])).logits[0, -1].argmax())
                if nxt in eos_ids(model, tokenizer):
                    break
                expected.append(nxt)
                ids.append(nxt)
        assert list(g.token_ids) == expected


@pytest.mark.parametrize("kind", KINDS)
def test_engine_mixed_settings_in_one_call(tiny_model, kind):
    model, tokenizer = tiny_model
    hot = requests_for(tokenizer, TEXTS[:3], temperature=1.0)
    cold = [GenerationRequest(f"c{i}", r.prompt_ids, r.max_new_tokens, 0.0, 1.0, r.seed)
            for i, r in enumerate(hot)]
    mixed = [x for pair in zip(hot, cold) for x in pair]
    engine = make_engine(kind, model, tokenizer, 8)
    out = engine.generate(mixed)
    assert [g.uid for g in out] == [r.uid for r in mixed]
    assert out[0::2] == engine.generate(hot)
    assert out[1::2] == engine.generate(cold)
