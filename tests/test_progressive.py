"""Progressive predictors (PLP, TRAIL, TPV) learn from synthetic feature tables: the step states
encode the remaining length and the progress t/T, the prompt vectors only a weak hint of T."""

from __future__ import annotations

import numpy as np
import pytest

from forelen.metrics import per_step_mae
from forelen.predictors import PREDICTORS, NotFittedError, _head
from forelen.tables import FeatureTable

S, D = 64, 16
# The head's presets assume thousands of rows and minutes of training; a short one keeps this fast.
FAST = _head.TrainPreset(lr=5e-3, epochs=30, batch_size=64, weight_decay=0.01, patience=6)


def _states(rng, basis, T, noise):
    """(min(S, T), D) float16: remaining (T - s)/100 on basis[0], progress s/T on basis[1]."""
    s = np.arange(1, min(S, T) + 1)[:, None]
    h = (T - s) / 100 * basis[0] + 3 * s / T * basis[1] + noise * rng.normal(size=(len(s), D))
    return h.astype(np.float16)


def _ragged(rows) -> np.ndarray:
    out = np.empty(len(rows), dtype=object)
    for i, row in enumerate(rows):
        out[i] = row
    return out


def synthetic_table(n: int, seed: int) -> tuple[FeatureTable, np.ndarray]:
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(np.random.default_rng(0).normal(size=(D, D)))[0].T  # fixed directions
    y = rng.integers(10, 400, size=n)
    hint = (y - 200) / 115 + rng.normal(scale=1.5, size=n)  # the prompt's weak view of T
    cols = {}
    for layer, pooled_name in ((1, "mean_l1"), (2, "egtp_l2")):  # TRAIL's mid layer, PLP's final
        pooled = hint[:, None] * basis[2] + rng.normal(size=(n, D))
        cols[pooled_name] = pooled.astype(np.float16)
        cols[f"step_states_l{layer}"] = _ragged([_states(rng, basis, T, 0.05) for T in y])
    cols["response_entropy"] = _ragged([rng.gamma(2.0, 1.0, size=T).astype(np.float16) for T in y])
    return FeatureTable(cols, {"recorded_layers": [1, 2]}), y.astype(np.float64)


@pytest.fixture(scope="module")
def data():
    import torch

    threads = torch.get_num_threads()
    # Tiny MLPs gain nothing from threads, and on a busy 2-core machine the idle threads' spinning
    # made each backward pass ~100x slower.
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(_head.PRESETS, "fast", FAST)
        yield tuple(synthetic_table(n, seed) for n, seed in ((400, 1), (120, 2), (200, 3)))
    torch.set_num_threads(threads)


def _fit(name, data, **params):
    (train, y), val, _ = data
    model = PREDICTORS.get(name)(**params)
    cols = model.columns(train.layers())
    return model.fit(train.select(cols), y, eval_set=(val[0].select(cols), val[1])), cols


def _step_mae(model, table, y, cols):
    table = table.select(cols)
    return {int(t): v["mae"] for t, v in per_step_mae(
        y, lambda t, mask: model.predict_remaining(table.take(np.flatnonzero(mask)), t)).items()}


def test_plp_error_falls_as_steps_are_observed(data):
    model, cols = _fit("plp", data, preset="fast")
    test, y = data[2]
    mae = _step_mae(model, test, y, cols)
    assert mae[16] < 0.5 * mae[0] and mae[32] < 0.5 * mae[0], mae
    np.testing.assert_array_equal(model.predict(test.select(cols)),
                                  model.predict_remaining(test.select(cols), 0))


@pytest.mark.parametrize("aggregator", ["last", "entropy"])
def test_plp_aggregators(data, aggregator):
    model, cols = _fit("plp", data, preset="fast", aggregator=aggregator)
    assert ("response_entropy" in cols) == (aggregator == "entropy")
    test, y = data[2]
    mae = _step_mae(model, test, y, cols)
    assert mae[16] < mae[0], mae


def test_trail_posterior_is_a_distribution_and_never_negative(data):
    model, cols = _fit("trail", data, hidden=64)
    assert cols == ["mean_l1", "step_states_l1"]
    test, y = data[2]
    table = test.select(cols)
    for t in range(0, 520, 13):  # every row, also long past its own end and past S
        q = model.posterior(table, t)
        assert np.all(q >= 0) and np.allclose(q.sum(1), 1.0)
        pred = model.predict_remaining(table, t)
        assert np.all(np.isfinite(pred)) and np.all(pred >= 0)
    mae = _step_mae(model, test, y, cols)
    assert mae[16] < mae[0], mae


def test_tpv_beats_the_constant_once_tokens_are_seen(data):
    model, cols = _fit("tpv", data)
    (train, y_train), _, (test, y) = data
    mae = _step_mae(model, test, y, cols)
    for t in (8, 16, 32, 64):
        const = np.mean(y_train[y_train > t] - t)
        assert mae[t] < np.mean(np.abs(y[y > t] - t - const)), (t, mae[t])
    assert np.all(model.predict(test.select(cols)) >= 0)


@pytest.mark.parametrize("name,params", [("plp", {"preset": "fast"}), ("trail", {"hidden": 64}),
                                         ("tpv", {})])
def test_same_seed_same_predictions(data, name, params):
    small = ((data[0][0].take(np.arange(120)), data[0][1][:120]), data[1], data[2])
    model = PREDICTORS.get(name)(**params)
    with pytest.raises(NotFittedError):
        model.predict_remaining(data[2][0], 8)
    a, cols = _fit(name, small, **params)
    b, _ = _fit(name, small, **params)
    test = data[2][0].select(cols)
    for t in (0, 8, 64):
        np.testing.assert_array_equal(a.predict_remaining(test, t), b.predict_remaining(test, t))


@pytest.mark.parametrize("name,params", [("plp", {"preset": "fast"}), ("trail", {"hidden": 64})])
def test_predict_distribution_is_what_predict_decodes(data, name, params):
    """At t = 0 the distribution is that of the total length; `predict` decodes it (median), and
    the default (mean) decoding is unchanged: TRAIL's expected bin midpoint."""
    model, cols = _fit(name, data, decode="median", **params)
    test = data[2][0].select(cols)
    for t in (0, 8):
        dist = model.predict_distribution(test, t) if t else model.predict_distribution(test)
        assert dist.probs.shape[0] == test.n and np.all(np.isfinite(dist.edges))
        assert dist.edges[0] >= 0 and dist.edges[-1] >= data[0][1].max() - 64
        np.testing.assert_allclose(model.predict_remaining(test, t),
                                   np.maximum(dist.quantile(0.5), 0.0))
    np.testing.assert_allclose(model.predict(test), model.predict_remaining(test, 0))
    if name == "trail":
        mean_model, _ = _fit(name, data, **params)
        np.testing.assert_allclose(mean_model.predict(test),
                                   mean_model.predict_distribution(test).probs @ mean_model.mids_)
