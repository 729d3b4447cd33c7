"""The teacher-forced recorder against a plain forward pass of the same (float32) model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from forelen.builders.recorder import FP16_MAX, Recorder, default_layers, fp16_safe

ATOL = 2e-5


def _ids(seed: int, n: int, vocab: int = 300) -> list[int]:
    g = np.random.default_rng(seed)
    return [int(x) for x in g.integers(3, vocab, size=n)]  # 0..2 are special tokens


def reference(model, prompt: list[int], response: list[int]):
    """(hidden_states per layer (T, D), entropies (T,)) straight from `model(...)`."""
    ids = torch.tensor([list(prompt) + list(response)])
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    logp = torch.log_softmax(out.logits[0].double(), dim=-1)
    entropy = -(logp.exp() * logp).sum(dim=-1)
    return [h[0].double() for h in out.hidden_states], entropy


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model[0]


@pytest.fixture(scope="module")
def samples():
    """(prompt, response) pairs of varied lengths, including an empty response."""
    spec = [(7, 5), (23, 11), (4, 0), (41, 3), (15, 17), (1, 9), (30, 30)]
    return [(_ids(2 * k, p), _ids(2 * k + 1, t)) for k, (p, t) in enumerate(spec)]


def test_default_layers():
    assert default_layers(3) == [1, 3]
    assert default_layers(30) == [10, 30]  # SmolLM2-135M
    assert default_layers(28) == [9, 28]  # Qwen2.5-7B
    assert default_layers(36) == [12, 36]  # Qwen2.5-3B
    assert default_layers(1) == [1]
    assert default_layers(2) == [1, 2]


def test_recorder_uses_default_layers_and_rejects_out_of_range(model):
    assert Recorder(model).layers == [1, 3]
    assert Recorder(model, layers=[0, 2]).layers == [0, 2]
    with pytest.raises(ValueError, match="out of range"):
        Recorder(model, layers=[4])
    with pytest.raises(ValueError, match="out of range"):
        Recorder(model, layers=[-1])


@pytest.mark.parametrize("layer", [0, 1, 2, 3])
def test_states_and_pooling_match_output_hidden_states(model, samples, layer):
    recorder = Recorder(model, layers=[layer], steps=64)
    for prompt, response in samples:
        rec = recorder.record([prompt], [response])[0]
        hs, _ = reference(model, prompt, response)
        h = hs[layer]
        p, t = len(prompt), len(response)
        prompt_h = h[:p]
        np.testing.assert_allclose(rec.pooled[f"last_l{layer}"], prompt_h[-1], atol=ATOL)
        np.testing.assert_allclose(rec.pooled[f"mean_l{layer}"], prompt_h.mean(0), atol=ATOL)
        np.testing.assert_allclose(rec.pooled[f"max_l{layer}"], prompt_h.max(0).values, atol=ATOL)
        steps = rec.step_states[f"step_states_l{layer}"]
        assert steps.shape == (t, h.shape[1])
        np.testing.assert_allclose(steps, h[p: p + t], atol=ATOL)
        assert set(rec.pooled) == {f"{k}_l{layer}" for k in ("egtp", "mean", "max", "last")}
        assert set(rec.step_states) == {f"step_states_l{layer}"}


def test_final_layer_is_the_normed_state_feeding_the_lm_head(model, samples):
    prompt, response = samples[1]
    rec = Recorder(model, layers=[3]).record([prompt], [response])[0]
    with torch.no_grad():
        last_hidden = model.model(torch.tensor([prompt + response])).last_hidden_state[0]
    np.testing.assert_allclose(rec.step_states["step_states_l3"], last_hidden[len(prompt):],
                               atol=ATOL)


def test_entropies_match_full_softmax(model, samples):
    recorder = Recorder(model, layers=[3])
    for prompt, response in samples:
        rec = recorder.record([prompt], [response])[0]
        _, entropy = reference(model, prompt, response)
        p = len(prompt)
        assert rec.prompt_entropy.shape == (p,)
        assert rec.response_entropy.shape == (len(response),)
        np.testing.assert_allclose(rec.prompt_entropy, entropy[:p], atol=1e-4)
        np.testing.assert_allclose(rec.response_entropy, entropy[p:], atol=1e-4)
    # Sanity: a random model is far from uniform and far from deterministic.
    assert 0.5 < float(rec.prompt_entropy.mean()) < np.log(300)


def test_egtp_is_entropy_softmax_weighted_sum_of_prompt_states(model, samples):
    recorder = Recorder(model, layers=[1, 3])
    for prompt, response in samples:
        rec = recorder.record([prompt], [response])[0]
        hs, entropy = reference(model, prompt, response)
        p = len(prompt)
        weights = torch.softmax(entropy[:p], dim=0)
        for layer in (1, 3):
            expected = (weights[:, None] * hs[layer][:p]).sum(0)
            np.testing.assert_allclose(rec.pooled[f"egtp_l{layer}"], expected, atol=ATOL)
        # EGTP is not just the mean: the weights are not uniform for a multi-token prompt.
        if p > 3:
            assert not np.allclose(rec.pooled["egtp_l3"], rec.pooled["mean_l3"], atol=1e-4)


def test_egtp_first_k_pools_only_the_first_k_prompt_tokens(model, samples):
    recorder = Recorder(model, layers=[3], first_k=5)
    for prompt, response in samples:
        rec = recorder.record([prompt], [response])[0]
        hs, entropy = reference(model, prompt, response)
        k = min(5, len(prompt))
        weights = torch.softmax(entropy[:k], dim=0)
        expected = (weights[:, None] * hs[3][:k]).sum(0)
        np.testing.assert_allclose(rec.pooled["egtp_first5_l3"], expected, atol=ATOL)


def test_batched_with_padding_equals_one_by_one(model, samples, monkeypatch):
    layers = [0, 1, 3]
    single = Recorder(model, layers=layers, steps=8)
    one_by_one = [single.record([p], [r])[0] for p, r in samples]

    batched = Recorder(model, layers=layers, steps=8, chunk_tokens=7, batch_tokens=100)
    sizes = []
    original = batched._record_batch

    def spy(prompts, responses):
        sizes.append(len(prompts))
        return original(prompts, responses)

    monkeypatch.setattr(batched, "_record_batch", spy)
    together = batched.record([p for p, _ in samples], [r for _, r in samples])
    assert len(sizes) > 1 and max(sizes) > 1, sizes  # several batches, some of them padded
    assert sum(sizes) == len(samples)

    assert len(together) == len(samples)
    for a, b in zip(one_by_one, together):
        np.testing.assert_allclose(a.prompt_entropy, b.prompt_entropy, atol=1e-4)
        np.testing.assert_allclose(a.response_entropy, b.response_entropy, atol=1e-4)
        assert a.pooled.keys() == b.pooled.keys() and a.step_states.keys() == b.step_states.keys()
        for k in a.pooled:
            np.testing.assert_allclose(a.pooled[k], b.pooled[k], atol=ATOL, err_msg=k)
        for k in a.step_states:
            assert a.step_states[k].shape == b.step_states[k].shape
            np.testing.assert_allclose(a.step_states[k], b.step_states[k], atol=ATOL, err_msg=k)


def test_results_come_back_in_input_order(model, samples):
    rev = samples[::-1]
    recorder = Recorder(model, layers=[3], batch_tokens=64)
    out = recorder.record([p for p, _ in rev], [r for _, r in rev])
    for (p, r), rec in zip(rev, out):
        assert rec.prompt_entropy.shape == (len(p),)
        assert rec.response_entropy.shape == (len(r),)


@pytest.mark.parametrize("steps", [0, 1, 3, 64])
def test_steps_caps_step_states_at_min_s_t(model, samples, steps):
    recorder = Recorder(model, layers=[1, 3], steps=steps)
    recs = recorder.record([p for p, _ in samples], [r for _, r in samples])
    for (prompt, response), rec in zip(samples, recs):
        hs, _ = reference(model, prompt, response)
        n = min(steps, len(response))
        for layer in (1, 3):
            got = rec.step_states[f"step_states_l{layer}"]
            assert got.shape == (n, 32)
            np.testing.assert_allclose(got, hs[layer][len(prompt): len(prompt) + n], atol=ATOL)
        assert rec.response_entropy.shape == (len(response),)  # never capped


def test_features_are_float32_numpy(model, samples):
    rec = Recorder(model, layers=[3]).record([samples[0][0]], [samples[0][1]])[0]
    for arr in [rec.prompt_entropy, rec.response_entropy, *rec.pooled.values(),
                *rec.step_states.values()]:
        assert isinstance(arr, np.ndarray) and arr.dtype == np.float32


def testfp16_safe_clamps_outliers():
    t = torch.tensor([1e6, -1e6, 3.0])
    out = fp16_safe(t)
    assert out.tolist() == [FP16_MAX, -FP16_MAX, 3.0]
    assert np.isfinite(out.astype(np.float16)).all()


def test_bfloat16_model_records_float32_features(tiny_model_dir, samples):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).eval()
    prompt, response = samples[1]
    rec = Recorder(model, layers=[1, 3], steps=4).record([prompt], [response])[0]
    assert rec.pooled["egtp_l3"].dtype == np.float32
    assert rec.step_states["step_states_l1"].shape == (4, 32)
    assert np.isfinite(rec.prompt_entropy).all()
