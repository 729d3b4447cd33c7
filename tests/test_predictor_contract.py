"""The contract over every registered predictor: the named checks of `forelen.predictors.checks`,
the very ones `check_predictor` runs for a plug-in author (scikit-learn's
`parametrize_with_checks`, in small)."""

from __future__ import annotations

import pytest

from forelen.predictors import PREDICTORS
from forelen.predictors.checks import CHECKS, predictor_checks, synthetic

NAMES = PREDICTORS.names()


def _factory(name: str):
    """Defaults, except short training: the contract is about behaviour, not accuracy."""
    def make(seed: int = 0):
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

    return make


DATA = (synthetic(), synthetic(n=16, seed=1))
# one case per predictor, shared by its checks: the fitted instance is made once
ALL = [check for name in NAMES
       for check in predictor_checks(PREDICTORS.get(name), make=_factory(name), data=DATA)]


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


def test_registry_is_not_empty():
    assert {"egtp", "pool-mean", "pool-max", "pool-last", "plp", "trail", "tpv",
            "constant-median", "prompt-length", "group-median-oracle"} <= set(NAMES)


def test_every_predictor_gets_every_check():
    assert len(ALL) == len(NAMES) * len(CHECKS)


@pytest.mark.parametrize("name", NAMES)
def test_registered_under_its_own_name(name):
    cls = PREDICTORS.get(name)
    assert cls.info.name == name and cls.info.version


@pytest.mark.parametrize("check", ALL, ids=lambda c: c.name)
def test_contract(check):
    check()
