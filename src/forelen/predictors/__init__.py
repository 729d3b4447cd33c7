"""Length predictors: one file per family, registered by name, scikit-learn-style contract.

Contract (docs/DESIGN.md section 6): `__init__` only stores hyper-parameters under their own names;
`fit(table, y) -> self`; `predict(table) -> (N,) float lengths in tokens`; learned state in
attributes ending in `_`; `predict` before `fit` raises `NotFittedError`. Progressive predictors also
implement `predict_remaining(table, t)`: the remaining length after t generated tokens.
torch is imported inside `fit`/`predict`, so listing predictors stays instant.
"""

from __future__ import annotations

from forelen.predictors._plugins import check_predictor as check
from forelen.predictors._plugins import load as load_spec
from forelen.predictors._saved import load, save
from forelen.predictors.base import PREDICTORS, NotFittedError, Predictor, PredictorInfo
from forelen.schema import resolve_layer

__all__ = ["PREDICTORS", "NotFittedError", "Predictor", "PredictorInfo", "check_predictor", "load",
           "load_predictor", "resolve_layer", "save"]


def load_predictor(spec: str) -> tuple[type, dict]:
    """(class, origin) of a registered name, a `forelen.predictors` entry point, or a plugin
    given as `path/to/file.py:Class` or `package.module:Class`."""
    return load_spec(spec)


def check_predictor(cls_or_instance) -> None:
    """The project's contract checks, for plugin authors (see src/forelen/predictors/_plugins.py)."""
    check(cls_or_instance)
