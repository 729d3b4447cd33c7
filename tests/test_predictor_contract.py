"""One contract test over every registered predictor (scikit-learn's check_estimator, in small)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from forelen.metrics import OBSERVED_STEPS
from forelen.predictors import PREDICTORS, NotFittedError
from forelen.tables import FeatureTable

LAYERS = [1, 2]
D = 8


def synthetic_table(n: int = 48, seed: int = 0) -> tuple[FeatureTable, np.ndarray]:
    """Every schema column a predictor may read (the table `check_predictor` uses too)."""
    from forelen.predictors._plugins import synthetic

    return synthetic(n, seed)


NAMES = PREDICTORS.names()


def _fresh(name: str, seed: int = 0):
    """Defaults, except short training: the contract is about behaviour, not accuracy."""
    pred = PREDICTORS.get(name)()
    params = pred.get_params()
    if "seed" in params:
        pred.seed = seed
    if "preset" in params:
        pred.preset = "contract"
    if "epochs" in params:
        pred.epochs = 3
    if pred.info.family == "text-proxy":  # one optimiser step per epoch on short sequences
        pred.max_length, pred.batch_size = 32, 48
    return pred


@pytest.fixture(scope="module", autouse=True)
def short_training():
    import torch

    from forelen.predictors import _head

    mp = pytest.MonkeyPatch()
    mp.setitem(_head.PRESETS, "contract", _head.TrainPreset(lr=5e-3, epochs=3, batch_size=16,
                                                             patience=2))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny MLPs: thread hand-offs cost more than they save
    yield
    torch.set_num_threads(threads)
    mp.undo()


@pytest.fixture(scope="module")
def data():
    return synthetic_table(), synthetic_table(n=16, seed=1)


def test_registry_is_not_empty():
    assert {"egtp", "pool-mean", "pool-max", "pool-last", "plp", "trail", "tpv",
            "constant-median", "prompt-length", "group-median-oracle"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_init_only_stores_parameters(name):
    cls = PREDICTORS.get(name)
    pred = cls()
    sig = inspect.signature(cls.__init__)
    defaults = {k: p.default for k, p in sig.parameters.items() if k != "self"}
    assert pred.get_params() == defaults
    assert not [k for k in vars(pred) if k.endswith("_")], "learned state set in __init__"
    assert cls.info.name == name and cls.info.version


@pytest.mark.parametrize("name", NAMES)
def test_predict_before_fit_raises(name, data):
    (train, _), _ = data
    pred = _fresh(name)
    with pytest.raises(NotFittedError):
        pred.predict(train.select(pred.columns(LAYERS)))


@pytest.mark.parametrize("name", NAMES)
def test_fit_predict_contract(name, data):
    (train, y), (test, y_test) = data
    pred = _fresh(name)
    cols = pred.columns(LAYERS)
    # select() hands over only the declared columns: reading any other raises KeyError.
    assert pred.fit(train.select(cols), y, eval_set=(test.select(cols), y_test)) is pred
    out = pred.predict(test.select(cols))
    assert isinstance(out, np.ndarray) and out.shape == (test.n,)
    assert np.all(np.isfinite(out))
    if pred.info.outputs == "length":
        assert np.all(out >= 0)
    if pred.info.progressive:
        for t in OBSERVED_STEPS:
            rows = np.flatnonzero(y_test > t)
            if len(rows):
                rem = pred.predict_remaining(test.select(cols).take(rows), t)
                assert rem.shape == (len(rows),) and np.all(np.isfinite(rem)) and np.all(rem >= 0)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_predictions(name, data):
    (train, y), (test, _) = data
    runs = []
    for _ in range(2):
        pred = _fresh(name, seed=7)
        cols = pred.columns(LAYERS)
        runs.append(pred.fit(train.select(cols), y).predict(test.select(cols)))
    np.testing.assert_array_equal(runs[0], runs[1])
