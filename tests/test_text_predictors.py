"""Text-proxy predictors (SSJF, S3, LTR) on a synthetic task where the wording sets the length."""

from __future__ import annotations

import numpy as np
import pytest

from forelen.errors import ForelenError
from forelen.predictors import PREDICTORS, _text
from forelen.tables import FeatureTable

FILLER = "the a of some and with data on topic river table city music history".split()
# Short runs: full fine-tuning costs ~0.2 s per optimiser step on 2 cores (AdamW over 22M weights),
# so the SSJF recipe freezes after one epoch and trains the head on cached features.
FAST = {
    "ssjf-reg": dict(epochs=30, freeze_after=1, lr=1e-4, lr_after=3e-3),
    "ssjf-mc": dict(epochs=30, freeze_after=1, lr=1e-4, lr_after=3e-3),
    "s3": dict(epochs=6, lr=1e-4),  # length-grouped batches (the default) learn slower here
    "ltr-c": dict(epochs=10, lr=5e-4, batch_size=16),  # 820 classes: needs larger steps
    "ltr": dict(epochs=3, lr=1e-4, batch_size=16),
}


def texts(n: int, seed: int) -> tuple[FeatureTable, np.ndarray]:
    """"briefly" -> ~20 tokens, "in great detail" -> ~300, amid 2-20 random filler words: the
    prompts' token counts overlap between the two kinds, so length-grouped batches still mix them."""
    rng = np.random.default_rng(seed)
    prompts, y = [], []
    for i in range(n):
        words = " ".join(rng.choice(FILLER, rng.integers(2, 21)))
        if i % 2:
            prompts.append(f"Tell me about {words}, briefly.")
            y.append(20 + rng.integers(-5, 6))
        else:
            prompts.append(f"Tell me about {words}, in great detail.")
            y.append(300 + rng.integers(-30, 31))
    return FeatureTable({"prompt": np.array(prompts, dtype=object)}), np.asarray(y, np.float64)


@pytest.fixture(scope="module")
def data():
    return texts(48, 0), texts(24, 1)


def make(name: str, **kw):
    return PREDICTORS.get(name)(**{"max_length": 32, "seed": 3, **FAST[name], **kw})


@pytest.mark.parametrize("name", list(FAST))
def test_learns_the_wording(name, data):
    (train, y), (test, y_test) = data
    pred = make(name).fit(train, y, eval_set=(test, y_test))
    out = pred.predict(test)
    assert out.shape == (test.n,) and out.dtype == np.float64
    if pred.info.outputs == "ranking":
        assert _text.spearman(out, y_test) > 0.5
    else:
        baseline = np.mean(np.abs(np.median(y) - y_test))
        assert np.mean(np.abs(out - y_test)) < baseline


def test_same_seed_same_predictions(data):
    (train, y), (test, _) = data
    runs = [make("ssjf-reg", epochs=3).fit(train, y).predict(test) for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("side", ["left", "right"])
def test_truncation_side(side, data):
    """With 6 tokens kept, texts sharing their end (left) or their start (right) look the same."""
    (train, y), _ = data
    pred = make("s3", epochs=1, truncation_side=side, max_length=6).fit(train, y)
    head, tail = "Tell me briefly", "of the history of music in great detail."
    a = f"{head} about rivers and cities, {tail}"
    b = f"Describe everything about {tail}" if side == "left" else f"{head} about nothing else."
    ids = _text.tokenize(pred.tokenizer_, [a, b], 6, side)
    assert ids[0] == ids[1]
    out = pred.predict(FeatureTable({"prompt": np.array([a, b], dtype=object)}))
    assert out[0] == out[1]


def test_unknown_encoder_is_one_line_error(monkeypatch, data):
    (train, y), _ = data
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ForelenError) as err:
        make("ssjf-reg", encoder="no-such-org/no-such-encoder").fit(train, y)
    msg = str(err.value)
    assert "\n" not in msg and _text.DEFAULT_ENCODER in msg and "no-such-encoder" in msg


def test_bad_truncation_side_is_an_error(data):
    (train, y), _ = data
    with pytest.raises(ForelenError, match="truncation_side"):
        make("s3", truncation_side="middle").fit(train, y)


def test_ssjf_mc_thresholds(data):
    (train, y), _ = data
    pred = PREDICTORS.get("ssjf-mc")(thresholds="fixed")
    pred._setup(y)  # targets only: no training
    np.testing.assert_array_equal(pred.edges_, [42, 141, 294, 503])
    assert pred.values_[0] == np.median(y[y < 42]) and pred.class_weights_[3] > 0


def test_ssjf_mc_distribution_is_its_class_probabilities(data):
    """The 5 classes as bins (the open last one closed at the train max); `predict` stays the
    paper's argmax class."""
    (train, y), (test, _) = data
    pred = make("ssjf-mc", epochs=2).fit(train, y)
    dist = pred.predict_distribution(test)
    np.testing.assert_array_equal(dist.edges, np.concatenate([[0], pred.edges_, [y.max()]]))
    assert dist.probs.shape == (test.n, 5) and np.allclose(dist.probs.sum(1), 1.0)
    np.testing.assert_array_equal(pred.predict(test), pred.values_[dist.probs.argmax(1)])


@pytest.mark.parametrize("name,kw,n_bins", [("s3", {}, 10), ("ltr-c", {"g": 100}, 82)])
def test_bucket_classifiers_give_their_class_probabilities(data, name, kw, n_bins):
    """s3's and ltr-c's buckets as bins, so their distribution metrics are scored; `predict` stays
    their argmax bucket. A regressor (ssjf-reg) predicts no distribution."""
    (train, y), (test, _) = data
    pred = make(name, epochs=1, **kw).fit(train, y)
    dist = pred.predict_distribution(test)
    assert dist.probs.shape == (test.n, n_bins) and np.allclose(dist.probs.sum(1), 1.0)
    np.testing.assert_array_equal(pred.predict(test), pred.values_[dist.probs.argmax(1)])
    assert np.all((pred.values_ >= dist.edges[:-1]) & (pred.values_ <= dist.edges[1:]))
    with pytest.raises(NotImplementedError):
        make("ssjf-reg", epochs=1).fit(train, y).predict_distribution(test)


def test_attention_dropout_parameter():
    """0.0 (the default) switches off only the attention-probability dropout; None keeps it."""
    _, off = _text.load_encoder(_text.DEFAULT_ENCODER, 0.0)
    _, own = _text.load_encoder(_text.DEFAULT_ENCODER, None)
    assert off.config.attention_probs_dropout_prob == 0.0
    assert own.config.attention_probs_dropout_prob == 0.1
    assert off.config.hidden_dropout_prob == own.config.hidden_dropout_prob == 0.1


def test_length_grouped_batches_cover_every_row_once():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 500, size=1000)
    out = _text.batches(rng, lengths, 16, group_by_length=True)
    rows = np.concatenate(out)
    assert sorted(rows.tolist()) == list(range(1000)) and len(out) == -(-1000 // 16)
    # Inside a batch lengths are close: far less padding than random batches.
    pad = lambda bs: sum(len(b) * lengths[b].max() - lengths[b].sum() for b in bs)
    assert pad(out) < 0.2 * pad(_text.batches(rng, lengths, 16, group_by_length=False))


def test_training_config_is_recorded(data):
    (train, y), _ = data
    pred = make("ssjf-reg", epochs=1, precision="fp32").fit(train, y)
    cfg = pred.training_config()
    assert cfg["precision"] == "fp32" and cfg["group_by_length"] is True and cfg["epochs_run"] == 1
    assert _text.resolve_precision("auto") in ("bf16", "fp32")
    with pytest.raises(ForelenError, match="precision"):
        _text.resolve_precision("fp8")


def test_ltr_c_reports_when_it_predicts_one_class(data):
    """A head that learnt little predicts the commonest bucket: here the budget's, as when many train
    rows are censored; the record's diagnostic then reads 100%. A head that learnt the wording does
    not."""
    (train, y), (test, y_test) = data
    censored = np.where(np.arange(len(y)) % 3 == 0, 768.0, y)  # a third stop at a 768 budget
    flat = make("ltr-c", epochs=1, lr=1e-9).fit(train, censored)
    assert set(flat.predict(test)) == {765.0} and flat.modal_class_rate_ == 1.0
    learnt = make("ltr-c").fit(train, y, eval_set=(test, y_test))
    learnt.predict(test)
    assert learnt.modal_class_rate_ < 0.9


def imbalanced(n: int, seed: int) -> tuple[FeatureTable, np.ndarray]:
    """texts() with every "briefly" row and a third of the "in great detail" ones: 3 in 4 rows in
    the shortest bucket, as most rows of a real config sit in one bucket."""
    table, y = texts(n, seed)
    keep = (y < 100) | (np.arange(len(y)) % 6 == 0)
    return FeatureTable({"prompt": table["prompt"][keep]}), y[keep]


@pytest.mark.parametrize("name,kw", [("s3", {}), ("ltr-c", {"g": 100})])
def test_balanced_class_weight_does_not_collapse(name, kw):
    """Plain cross-entropy (the papers') under argmax can predict the majority bucket for every
    prompt (s3 here, as on v0.1.0's cot); class_weight="balanced" predicts more than one class and
    ranks the wording's lengths."""
    (train, y), (test, y_test) = imbalanced(72, 0), texts(24, 1)
    assert np.mean(y > 100) == 0.25
    # (plain s3 predicts one bucket for every prompt here on the AVX2 machine it was written on;
    # not asserted, since bf16 kernels elsewhere may break the near-tie differently)
    pred = make(name, class_weight="balanced", **kw).fit(train, y)
    out = pred.predict(test)
    assert len(set(out)) > 1
    from scipy.stats import kendalltau
    assert kendalltau(y_test, out).statistic > 0.3


def test_balanced_class_weights():
    """Inverse frequency over the classes present; absent classes weigh 0; None: plain."""
    w = _text.class_weights(np.array([0, 0, 0, 2]), 4, "balanced")
    np.testing.assert_allclose(w, [4 / 6, 0.0, 2.0, 0.0])
    assert _text.class_weights(np.array([0, 1]), 2, None) is None
    with pytest.raises(ForelenError, match="class_weight"):
        _text.class_weights(np.array([0]), 1, "inverse")
    s3 = PREDICTORS.get("s3")(class_weight="balanced")
    s3._setup(np.array([10.0, 20.0, 30.0, 1000.0]))
    assert s3.class_weights_[0] == 4 / 6 and s3.class_weights_[9] == 2.0
    ltr_c = PREDICTORS.get("ltr-c")(class_weight="balanced")
    ltr_c._setup(np.array([5.0, 5.0, 5.0, 9000.0]))  # 9000 is capped at 8192: the last class
    assert ltr_c.class_weights_[0] == 4 / 6 and ltr_c.class_weights_[-1] == 2.0
    assert PREDICTORS.get("ltr-c")().get_params()["class_weight"] is None
