"""`pia`: the answer parser, and fit/predict with the tiny model as the generator."""

from __future__ import annotations

import numpy as np
import pytest

from forelen_bench.errors import ForelenError
from forelen_bench.predictors import PREDICTORS, NotFittedError
from forelen_bench.predictors.pia import (PIA, PIA_PROMPT, QUERY_PROMPT, first_line, group_max,
                                          parse_length, recover_user_text)

INSTRUCTION = PIA_PROMPT  # the default, zero-shot mode's
from forelen_bench.tables import FeatureTable

from conftest import PROMPTS


@pytest.mark.parametrize("text, expected", [
    ("250", 250), ("About 250 tokens", 250), ("1,200", 1200), ("1,200 tokens.", 1200),
    ("  42\n", 42), ("12.5", 12.5), ("tokens: 300", 300), ("300 words, maybe 400", 300),
])
def test_parse_digits(text, expected):
    assert parse_length(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("100-200", 150), ("100 - 200 tokens", 150), ("between 100 to 300", 200), ("50–70", 60),
])
def test_parse_ranges(text, expected):
    assert parse_length(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("fifty", 50), ("two hundred and fifty", 250), ("a thousand", 1000), ("Twenty-five.", 25),
    ("about one thousand two hundred tokens", 1200), ("ninety nine", 99), ("an hundred", 100),
])
def test_parse_words(text, expected):
    assert parse_length(text) == expected


@pytest.mark.parametrize("text", [
    "", "garbage", "I cannot predict that.", "-5", "- 20 tokens", "2000000", "a cat", "and",
    None,
])
def test_parse_garbage_negative_absurd(text):
    assert parse_length(text) is None


def test_registered_with_paper_instruction():
    assert PREDICTORS.get("pia") is PIA
    assert PIA.info.requires == ("prompt", "group_id") and PIA.info.family == "text-proxy"
    assert PIA().mode == "zero-shot" and PIA().instruction is None
    # the repository's two prompts, word for word (src/utils.py, src/construct.py)
    assert PIA_PROMPT == ("\nBefore responding to the above instruction, you have to predict the "
                          "length of your response. Print the estimated number of tokens in your "
                          "response in the first line. Then change to a new line to respond to "
                          "the instruction.")
    assert QUERY_PROMPT == ("\nDon't output the response for the above instruction. Instead, you "
                            "need to predict the number of tokens in your response. Output one "
                            "number only.")


def test_zero_shot_reads_the_first_line_and_lora_labels_the_group_max():
    assert parse_length(first_line("\n 120\nHere is a long answer of 3 parts")) == 120
    labels = group_max(np.array([10.0, 30.0, 5.0]), np.array(["a", "a", "b"], dtype=object))
    assert labels.tolist() == [30.0, 30.0, 5.0]


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _table(tokenizer, prompts, meta=None) -> FeatureTable:
    from forelen_bench.builders.build import render

    rendered = np.array([render(tokenizer, p) for p in prompts], dtype=object)
    groups = np.array([f"g{i}" for i in range(len(prompts))], dtype=object)
    return FeatureTable({"prompt": rendered, "group_id": groups},
                        meta or {"recorded_layers": [1, 2]})


def test_recover_user_text(tiny_tokenizer):
    from forelen_bench.builders.build import render

    for p in PROMPTS:
        assert recover_user_text(tiny_tokenizer, render(tiny_tokenizer, p)) == p
    assert recover_user_text(tiny_tokenizer, "no template here") is None


def test_query_appends_instruction_to_user_turn(tiny_model_dir, tiny_tokenizer):
    from forelen_bench.builders.build import render

    pred = PIA(model=str(tiny_model_dir))
    query, ok = pred._query(tiny_tokenizer, render(tiny_tokenizer, "Hi."), report=True)
    assert ok and query == render(tiny_tokenizer, "Hi." + INSTRUCTION)
    query, ok = pred._query(tiny_tokenizer, "raw text", report=True)  # not rendered: whole text
    assert not ok and query == render(tiny_tokenizer, "raw text" + INSTRUCTION)


def test_predict_before_fit(tiny_model_dir, tiny_tokenizer):
    with pytest.raises(NotFittedError):
        PIA(model=str(tiny_model_dir)).predict(_table(tiny_tokenizer, PROMPTS[:2]))


@pytest.fixture(scope="module")
def fitted(tiny_model_dir, tiny_tokenizer):
    train = _table(tiny_tokenizer, PROMPTS[:8])
    y = np.array([5, 10, 20, 40, 80, 160, 30, 60], dtype=np.float64)
    pred = PIA(model=str(tiny_model_dir), max_new_tokens=8, device="cpu", dtype="float32")
    return pred.fit(train, y)


def test_fit_predict_tiny_model(fitted, tiny_tokenizer):
    assert fitted.median_ == 35.0
    out = fitted.predict(_table(tiny_tokenizer, PROMPTS))
    assert out.shape == (len(PROMPTS),) and out.dtype == np.float64
    assert np.all(np.isfinite(out)) and np.all(out >= 0)
    assert 0.0 <= fitted.parse_failure_rate_ <= 1.0
    assert fitted.prompt_recovery_rate_ == 1.0
    parsed = [parse_length(a) for a in fitted.last_answers_]
    for value, p in zip(out, parsed):
        assert value == (fitted.median_ if p is None else p)
    assert fitted.parse_failure_rate_ == np.mean([p is None for p in parsed])


def test_unparsable_answers_fall_back_to_median(fitted, tiny_tokenizer, monkeypatch):
    """A random tiny model answers gibberish; force it by making every answer unparsable."""
    import forelen_bench.predictors.pia as pia

    monkeypatch.setattr(pia, "parse_length", lambda text: None)
    out = fitted.predict(_table(tiny_tokenizer, PROMPTS[:5]))
    np.testing.assert_array_equal(out, np.full(5, fitted.median_))
    assert fitted.parse_failure_rate_ == 1.0


def test_model_from_table_meta(tiny_model_dir, tiny_tokenizer):
    meta = {"recorded_layers": [1, 2], "model": str(tiny_model_dir)}
    pred = PIA(max_new_tokens=4, device="cpu", dtype="float32")
    pred.fit(_table(tiny_tokenizer, PROMPTS[:4], meta), np.array([1.0, 2, 3, 4]))
    assert pred.model_spec_ == str(tiny_model_dir) and pred.median_ == 2.5
    assert pred.predict(_table(tiny_tokenizer, PROMPTS[:3], meta)).shape == (3,)


def test_auto_dtype_is_the_dtype_the_config_was_built_in(tiny_model_dir, tiny_tokenizer):
    """The generator answers in the numerics it built the config with, so a record does not
    depend on whether the evaluating machine has bf16 units; an explicit dtype, or another
    model than the generator, keeps its own."""
    meta = {"recorded_layers": [1, 2], "model": str(tiny_model_dir), "dtype": "float32"}
    table = _table(tiny_tokenizer, PROMPTS[:4], meta)
    y = np.array([1.0, 2, 3, 4])
    auto = PIA(max_new_tokens=2, device="cpu").fit(table, y)
    assert auto.dtype_ == "float32" and auto.get_params()["dtype"] == "auto"
    assert PIA(max_new_tokens=2, device="cpu", dtype="bfloat16").fit(table, y).dtype_ == "bfloat16"
    other = PIA(model=str(tiny_model_dir), max_new_tokens=2, device="cpu").fit(table, y)
    assert other.dtype_ == "auto"


def test_deterministic(tiny_model_dir, tiny_tokenizer):
    train, test = _table(tiny_tokenizer, PROMPTS[:6]), _table(tiny_tokenizer, PROMPTS[6:])
    y = np.arange(6, dtype=np.float64) * 10
    runs = [PIA(model=str(tiny_model_dir), max_new_tokens=8, seed=7, device="cpu",
                dtype="float32").fit(train, y).predict(test) for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])


def test_empty_table(fitted, tiny_tokenizer):
    out = fitted.predict(FeatureTable({"prompt": np.array([], dtype=object)}, {}))
    assert out.shape == (0,) and fitted.parse_failure_rate_ == 0.0


def test_lora_without_peft_is_one_line_error(tiny_model_dir, tiny_tokenizer, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_peft(name, *args, **kwargs):
        if name == "peft" or name.startswith("peft."):
            raise ImportError("No module named 'peft'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_peft)
    pred = PIA(model=str(tiny_model_dir), mode="lora")
    with pytest.raises(ForelenError) as err:
        pred.fit(_table(tiny_tokenizer, PROMPTS[:2]), np.array([1.0, 2.0]))
    assert "pip install peft" in str(err.value) and "\n" not in str(err.value)
    assert not [k for k in vars(pred) if k.endswith("_")]


def test_lora_mode_tunes_adapters_with_the_repository_schedule(tiny_model_dir, tiny_tokenizer):
    """Where peft is installed: the LoRA predictor trains (3 epochs, accumulation, warmup and
    cosine), keeps the merged q/v projection weights, and predicts with them."""
    pytest.importorskip("peft", reason="pia mode='lora' needs peft (not a forelen dependency)")
    train = _table(tiny_tokenizer, PROMPTS[:12])
    y = np.array([50.0, 100.0] * 6)
    pred = PIA(model=str(tiny_model_dir), mode="lora", device="cpu", dtype="float32")
    pred.fit(train, y)
    assert pred.lora_state_ and all(k.endswith(("q_proj.weight", "v_proj.weight"))
                                    for k in pred.lora_state_)
    out = pred.predict(_table(tiny_tokenizer, PROMPTS[:4]))
    assert out.shape == (4,) and np.all(np.isfinite(out))
    assert 0.0 <= pred.parse_failure_rate_ <= 1.0
