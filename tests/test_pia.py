"""`pia`: the answer parser, and fit/predict with the tiny model as the generator."""

from __future__ import annotations

import numpy as np
import pytest

from forelen.errors import ForelenError
from forelen.predictors import PREDICTORS, NotFittedError
from forelen.predictors.pia import (PIA, PIA_PROMPT, QUERY_PROMPT, buckit, group_labels,
                                    parse_length, recover_user_text)

INSTRUCTION = PIA_PROMPT  # the default, zero-shot mode's
from conftest import PROMPTS

from forelen.tables import FeatureTable

# The repository's `extract_all_numbers` (src/utils.py): every run of digits is a number; one is
# the answer, two or more give the mean of the first two, none gives 0 (here None: the caller falls
# back to the train median and counts it).

@pytest.mark.parametrize("text, expected", [
    ("250", 250), ("About 250 tokens", 250), ("  42\n", 42), ("tokens: 300", 300),
    ("150\n\nSure! Here", 150), ("007", 7),
])
def test_parse_one_number(text, expected):
    assert parse_length(text) == expected


@pytest.mark.parametrize("text", [
    "- 150 tokens", "Estimated length - 150 tokens", "-150", "Length: -150", "tokens-150",
    "\n- 150\n", "\u2212150",
])
def test_parse_a_dash_is_not_a_minus_sign(text):
    """The issue's cases: a dash before the number, after a space or not, reads the number."""
    assert parse_length(text) == 150


@pytest.mark.parametrize("text, expected", [
    ("100-200", 150), ("100 - 200 tokens", 150), ("between 100 to 300", 200), ("50–70", 60),
    ("300 words, maybe 400", 350), ("100 200 300", 150),
    ("150\nHere are 3 tips", 76.5),  # the whole answer, not its first line
    ("1,200", 100.5), ("1,200 tokens.", 100.5), ("12.5", 8.5),  # separators split numbers there
])
def test_parse_two_or_more_numbers_give_the_mean_of_the_first_two(text, expected):
    assert parse_length(text) == expected


@pytest.mark.parametrize("text", [
    "", "garbage", "I cannot predict that.", "fifty", "two hundred and fifty", "a cat", None,
    "2000000", "1 " + "9" * 5000,  # absurd (the repository keeps it), or too long for int()
])
def test_parse_no_number_or_absurd_is_none(text):
    assert parse_length(text) is None


def test_buckit_is_the_repositorys():
    """src/utils.py `buckit`: truncate, then round up to a multiple of 50; 0 stays 0."""
    cases = {0: 0, 1: 50, 49.9: 50, 50: 50, 50.7: 50, 51: 100, 149.9: 150, 1000: 1000}
    assert {x: buckit(x) for x in cases} == cases


def test_group_labels_one_per_prompt():
    rows, labels = group_labels(np.array([10.0, 30.0, 5.0, 70.0, 0.0]),
                                np.array(["a", "a", "b", "a", "c"], dtype=object))
    assert rows.tolist() == [0, 2, 4] and labels.tolist() == [100, 50, 0]


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


def test_lora_trains_one_example_per_prompt(monkeypatch):
    """An rl table of 2 groups x 8 samples is 2 training examples, each labelled with `buckit` of
    its group's longest sample (src/construct.py), not 16. No model is loaded: the loading,
    the query rendering and the training are stood in for."""
    import forelen.predictors.pia as pia

    seen = {}

    def fake_train(model, tokenizer, queries, labels, seed):
        seen.update(queries=list(queries), labels=np.asarray(labels).tolist(), seed=seed)
        return {}

    monkeypatch.setattr(pia, "_require_peft", lambda: None)
    monkeypatch.setattr(pia, "_train_lora", fake_train)
    monkeypatch.setattr(PIA, "_load", lambda self: ("model", "tokenizer"))
    monkeypatch.setattr(PIA, "_query", lambda self, tokenizer, prompt, *a, **k: f"Q[{prompt}]")
    groups = np.array(["rl:7"] * 8 + ["rl:3"] * 8, dtype=object)
    prompts = np.array(["first prompt"] * 8 + ["second prompt"] * 8, dtype=object)
    y = np.array([12, 40, 260, 7, 99, 130, 251, 3] + [50, 20, 33, 48, 1, 9, 2, 50], np.float64)
    table = FeatureTable({"prompt": prompts, "group_id": groups}, {"recorded_layers": [1, 2]})
    pred = PIA(model="smollm2-135m", mode="lora", seed=3).fit(table, y)
    assert seen == {"queries": ["Q[first prompt]", "Q[second prompt]"], "labels": [300, 50],
                    "seed": 3}
    assert pred.median_ == float(np.median(y)) and pred.lora_state_ == {}


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _table(tokenizer, prompts, meta=None) -> FeatureTable:
    from forelen.builders.template import render

    rendered = np.array([render(tokenizer, p) for p in prompts], dtype=object)
    groups = np.array([f"g{i}" for i in range(len(prompts))], dtype=object)
    return FeatureTable({"prompt": rendered, "group_id": groups},
                        meta or {"recorded_layers": [1, 2]})


def test_recover_user_text(tiny_tokenizer):
    from forelen.builders.template import render

    for p in PROMPTS:
        assert recover_user_text(tiny_tokenizer, render(tiny_tokenizer, p)) == p
    assert recover_user_text(tiny_tokenizer, "no template here") is None


def test_query_appends_instruction_to_user_turn(tiny_model_dir, tiny_tokenizer):
    from forelen.builders.template import render

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
    import forelen.predictors.pia as pia

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
    # the adapted weights are this instance's: the model every pia shares is left as loaded
    import torch

    import forelen.predictors.pia as pia

    shared, _ = pia.MODELS.get(pred.resolved_, "cpu", "float32")
    name = next(iter(pred.lora_state_))
    base = dict(shared.named_parameters())[name]
    assert not torch.equal(base.float(), pred.lora_state_[name].float())
