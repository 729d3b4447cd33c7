"""EGTP, the pooling ablation and the reference predictors on synthetic tables with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from forelen.errors import ForelenError
from forelen.predictors import PREDICTORS, NotFittedError
from forelen.tables import FeatureTable

D = 32  # hidden size of the synthetic "model"
LAYER = 2


def entropy_task(n: int, seed: int = 0) -> tuple[FeatureTable, np.ndarray]:
    """Prompts whose length signal sits only in their one or two high-entropy tokens.

    Each prompt has 20-80 low-entropy tokens of pure noise and 1-2 high-entropy tokens whose state
    carries `a * u` (u a fixed direction); the length is linear in `a`. Pooled as the recorder
    pools: egtp = sum_i softmax(H)_i h_i, mean = the plain average, both stored float16.
    """
    rng = np.random.default_rng(seed)
    u = np.random.default_rng(12345).standard_normal(D)
    u /= np.linalg.norm(u)
    a = rng.uniform(0, 1, n)
    egtp, mean = np.empty((n, D)), np.empty((n, D))
    for s in range(n):
        low, high = rng.integers(20, 81), rng.integers(1, 3)
        h = rng.standard_normal((low + high, D))  # (P, D)
        h[low:] += 6.0 * a[s] * u
        ent = np.concatenate([rng.uniform(0.0, 0.5, low), rng.uniform(6.0, 7.0, high)])
        order = rng.permutation(low + high)  # high-entropy tokens anywhere in the prompt
        h, ent = h[order], ent[order]
        w = np.exp(ent - ent.max())
        egtp[s] = (w / w.sum()) @ h
        mean[s] = h.mean(0)
    y = np.round(50 + 450 * a + rng.normal(0, 10, n)).clip(1)
    cols = {f"egtp_l{LAYER}": egtp.astype(np.float16), f"mean_l{LAYER}": mean.astype(np.float16)}
    return FeatureTable(cols, meta={"recorded_layers": [LAYER]}), y


@pytest.fixture(scope="module")
def task():
    table, y = entropy_task(900)
    idx = np.arange(900)
    return [(table.take(i), y[i]) for i in (idx[:600], idx[600:750], idx[750:])]


def fit_score(name: str, task, **params) -> float:
    (train, y_train), val, (test, y_test) = task
    pred = PREDICTORS.get(name)(layer=LAYER, **params)
    cols = pred.columns(train.layers())
    pred.fit(train.select(cols), y_train, eval_set=(val[0].select(cols), val[1]))
    out = pred.predict(test.select(cols))
    assert out.shape == y_test.shape and out.dtype == np.float64 and np.isfinite(out).all()
    return float(np.mean(np.abs(out - y_test)))


@pytest.mark.slow
def test_egtp_beats_mean_pooling_when_the_signal_is_in_high_entropy_tokens(task):
    egtp, mean = fit_score("egtp", task), fit_score("pool-mean", task)
    baseline = float(np.mean(np.abs(task[2][1] - np.median(task[0][1]))))
    assert egtp < 0.5 * baseline, (egtp, baseline)
    assert egtp < 0.6 * mean, (egtp, mean)


def test_pooling_predictors_read_their_own_column():
    layers = [10, 30]
    assert PREDICTORS.get("egtp")().columns(layers) == ["egtp_l30"]
    assert PREDICTORS.get("egtp")(layer=10).columns(layers) == ["egtp_l10"]
    for kind in ("mean", "max", "last"):
        assert PREDICTORS.get(f"pool-{kind}")().columns(layers) == [f"{kind}_l30"]


def test_egtp_is_deterministic_under_seed_and_refuses_before_fit(task):
    (train, y), _, (test, _) = task
    cols = ["egtp_l2"]
    with pytest.raises(NotFittedError):
        PREDICTORS.get("egtp")().predict(test.select(cols))
    runs = [PREDICTORS.get("egtp")(preset="paper", seed=3).fit(train.select(cols), y)
            .predict(test.select(cols)) for _ in range(2)]
    np.testing.assert_array_equal(*runs)


def test_first_k_needs_its_own_column(task):
    (train, y), _, _ = task
    pred = PREDICTORS.get("egtp")(first_k=64)
    assert pred.columns([LAYER]) == ["egtp_first64_l2"]
    with pytest.raises(ForelenError, match="--egtp-first-k 64"):
        pred.fit(train, y)


def test_constant_median_predicts_the_train_median():
    table = FeatureTable({"prompt_tokens": np.arange(7)})
    y = np.array([5, 1, 9, 3, 100, 7, 2])
    pred = PREDICTORS.get("constant-median")().fit(table, y)
    np.testing.assert_array_equal(pred.predict(table.take([0, 1, 2])), [5.0, 5.0, 5.0])


def test_prompt_length_learns_a_linear_relation_and_never_goes_negative():
    x = np.arange(10, 200, dtype=np.int32)
    pred = PREDICTORS.get("prompt-length")().fit(FeatureTable({"prompt_tokens": x}), 3 * x + 20)
    out = pred.predict(FeatureTable({"prompt_tokens": np.array([50, 100, -1000])}))
    np.testing.assert_allclose(out[:2], [170, 320], rtol=1e-6)
    assert out[2] == 0.0


def test_group_median_oracle_equals_each_groups_median_and_is_not_ranked():
    cls = PREDICTORS.get("group-median-oracle")
    assert cls.info.ranked is False
    table = FeatureTable({"group_id": np.array(["a", "b", "a", "a", "b"], dtype=object),
                          "output_tokens": np.array([10, 100, 30, 20, 300])})
    out = cls().fit(table, table["output_tokens"]).predict(table)
    np.testing.assert_array_equal(out, [20, 200, 20, 20, 200])


# ------------------------------------------------------------------ decoding and censoring


@pytest.mark.parametrize("name", ["egtp", "pool-mean"])
def test_decode_median_reads_the_predicted_distribution_and_gets_its_own_record_key(task, name):
    from forelen.predictors._plugins import params_key

    (train, y), val, (test, _) = task
    pred = PREDICTORS.get(name)(layer=LAYER, decode="median")
    cols = pred.columns(train.layers())
    pred.fit(train.select(cols), y, eval_set=(val[0].select(cols), val[1]))
    dist = pred.predict_distribution(test.select(cols))
    assert dist.probs.shape == (test.n, 20) and np.all(np.isfinite(dist.edges))
    assert dist.edges[0] == y.min() and dist.edges[-1] == y.max()
    np.testing.assert_allclose(pred.predict(test.select(cols)), dist.quantile(0.5))
    assert pred.training_config()["decode"] == "median"
    key, changed = params_key(pred)
    assert key.startswith(f"{name}@") and changed == {"layer": LAYER, "decode": "median"}
    assert params_key(PREDICTORS.get(name)())[0] == name  # defaults: mean, as-exact


def test_survival_reads_finish_reason_and_bad_values_fail_before_any_data(task):
    (train, y), _, (test, _) = task
    pred = PREDICTORS.get("egtp")(layer=LAYER, censoring="survival")
    assert pred.columns([LAYER]) == [f"egtp_l{LAYER}", "finish_reason"]
    assert PREDICTORS.get("egtp")(layer=LAYER).columns([LAYER]) == [f"egtp_l{LAYER}"]
    cut = y >= np.percentile(y, 80)
    table = FeatureTable(dict(train.select([f"egtp_l{LAYER}"]).items())
                         | {"finish_reason": np.where(cut, "length", "stop").astype(object)},
                         meta=train.meta)
    pred.fit(table, y)
    assert pred.training_config()["censored_rate"] == pytest.approx(cut.mean())
    assert np.isfinite(pred.predict(test.select([f"egtp_l{LAYER}"]))).all()
    with pytest.raises(ForelenError, match=r"decode must be mean, median or quantile:Q with "
                                           r"0<Q<1, got 'foo'"):
        PREDICTORS.get("pool-max")(decode="foo").columns([LAYER])
    with pytest.raises(ForelenError, match="censoring must be as-exact or survival"):
        PREDICTORS.get("egtp")(censoring="km").columns([LAYER])
