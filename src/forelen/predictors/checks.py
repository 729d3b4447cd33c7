"""The predictor contract as named checks, one set for the project's test suite and for plug-in
authors (scikit-learn's `parametrize_with_checks`, in small).

    from forelen.predictors.checks import predictor_checks
    @pytest.mark.parametrize("check", predictor_checks(MyPredictor), ids=lambda c: c.name)
    def test_contract(check):
        check()

`check_predictor(cls)` runs them all and raises AssertionError naming the first broken rule. Each
check reads a `Case`: a factory of fresh configured instances and a synthetic table holding every
schema column a predictor may read (`synthetic`). The fitted instance is made once per case and
shared by the checks that only read it, so a case costs one fit, plus two for the seed check.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from forelen.metrics import OBSERVED_STEPS
from forelen.predictors.base import NotFittedError, Predictor
from forelen.tables import FeatureTable


def synthetic(n: int = 48, seed: int = 0) -> tuple[FeatureTable, np.ndarray]:
    """(FeatureTable, y): every schema column a predictor may read, lengths weakly tied to the
    vectors; layers 1 and 2 of width 8."""
    layers, d = [1, 2], 8
    rng = np.random.default_rng(seed)
    y = rng.integers(5, 120, size=n)
    cols = {"output_tokens": y, "prompt_tokens": rng.integers(10, 200, size=n),
            "group_id": np.array([f"g{i // 4}" for i in range(n)], dtype=object),
            "finish_reason": np.array(["stop"] * n, dtype=object),
            "prompt": np.array([("briefly " if y[i] < 60 else "in detail ") + f"question {i}: name "
                                f"{i % 5 + 1} colours." for i in range(n)], dtype=object)}
    for layer in layers:
        base = rng.normal(size=(n, d)) + (y[:, None] / 60.0)
        for kind in ("egtp", "mean", "max", "last"):
            cols[f"{kind}_l{layer}"] = (base + rng.normal(scale=0.1, size=(n, d))).astype(np.float16)
        steps = np.empty(n, dtype=object)
        for i in range(n):
            s = min(64, int(y[i]))
            remaining = (y[i] - np.arange(1, s + 1))[:, None] / 60.0
            steps[i] = (rng.normal(size=(s, d)) + remaining).astype(np.float16)
        cols[f"step_states_l{layer}"] = steps
    for name, lengths in (("prompt_entropy", cols["prompt_tokens"]), ("response_entropy", y)):
        arr = np.empty(n, dtype=object)
        for i, m in enumerate(lengths):
            arr[i] = rng.uniform(0, 5, size=int(m)).astype(np.float16)
        cols[name] = arr
    return FeatureTable(cols, {"recorded_layers": layers}), y.astype(np.float64)


@dataclass
class Case:
    """What every check reads: the class, a factory of fresh configured instances (`make(seed)`),
    the train and test tables. `fitted()` is one instance fitted on the train rows, made once."""

    cls: type
    make: Callable[..., Predictor]
    train: FeatureTable
    y: np.ndarray
    test: FeatureTable
    y_test: np.ndarray
    _fitted: Predictor | None = field(default=None, repr=False)

    @property
    def layers(self) -> list[int]:
        return self.train.layers()

    def columns(self, pred: Predictor) -> list[str]:
        return pred.columns(self.layers)

    def fitted(self) -> Predictor:
        if self._fitted is None:
            pred = self.make()
            cols = self.columns(pred)
            # select() hands over only the declared columns: reading any other raises KeyError
            out = pred.fit(self.train.select(cols), self.y,
                           eval_set=(self.test.select(cols), self.y_test))
            assert out is pred, "fit must return self"
            self._fitted = pred
        return self._fitted


def _defaults(cls) -> dict:
    sig = inspect.signature(cls.__init__)
    return {k: p.default for k, p in sig.parameters.items() if k != "self"}


def check_info(case: Case) -> None:
    """The class subclasses Predictor and declares its name and version."""
    assert issubclass(case.cls, Predictor), f"{case.cls.__name__} does not subclass Predictor"
    info = getattr(case.cls, "info", None)
    assert info is not None and info.name and info.version, \
        f"{case.cls.__name__} lacks info metadata (name, version)"


def check_init_stores_parameters(case: Case) -> None:
    """`__init__` stores each argument under its own name, and nothing learned."""
    pred = case.cls()
    assert pred.get_params() == _defaults(case.cls), \
        "__init__ must store each argument under its own name"
    assert not [k for k in vars(pred) if k.endswith("_")], "__init__ must not set learned state"


def check_predict_before_fit_raises(case: Case) -> None:
    """predict before fit raises NotFittedError."""
    pred = case.make()
    try:
        pred.predict(case.test.select(case.columns(pred)))
    except NotFittedError:
        return
    raise AssertionError("predict before fit must raise NotFittedError")


def check_fit_returns_self(case: Case) -> None:
    """fit, given only the declared columns, returns the instance."""
    case.fitted()


def check_predict_shape(case: Case) -> None:
    """predict gives an (N,) array of finite values; lengths are >= 0."""
    pred = case.fitted()
    out = pred.predict(case.test.select(case.columns(pred)))
    assert isinstance(out, np.ndarray) and out.shape == (case.test.n,), \
        "predict must return (N,)"
    assert np.all(np.isfinite(out)), "predictions must be finite"
    if pred.info.outputs == "length":
        assert np.all(out >= 0), "predicted lengths must be >= 0"


def check_predict_remaining(case: Case) -> None:
    """A progressive predictor gives (N,) finite remaining lengths >= 0 at every observed step,
    over the rows still running there; the others pass."""
    pred = case.fitted()
    if not pred.info.progressive:
        return
    table = case.test.select(case.columns(pred))
    for t in OBSERVED_STEPS:
        rows = np.flatnonzero(case.y_test > t)
        if len(rows):
            rem = pred.predict_remaining(table.take(rows), t)
            assert rem.shape == (len(rows),) and np.all(np.isfinite(rem)) \
                and np.all(rem >= 0), f"predict_remaining at t={t} is not (N,) finite >= 0"


def check_same_seed_same_predictions(case: Case) -> None:
    """Two instances with the same seed, fitted on the same rows, predict the same."""
    runs = []
    for _ in range(2):
        pred = case.make(seed=7)
        cols = case.columns(pred)
        runs.append(pred.fit(case.train.select(cols), case.y).predict(case.test.select(cols)))
    assert np.array_equal(runs[0], runs[1]), "the same seed must give the same predictions"


CHECKS = (check_info, check_init_stores_parameters, check_predict_before_fit_raises,
          check_fit_returns_self, check_predict_shape, check_predict_remaining,
          check_same_seed_same_predictions)


@dataclass(frozen=True)
class NamedCheck:
    """One check bound to one case: `name` is `<predictor>:<check>`, calling it runs the check."""

    name: str
    check: Callable[[Case], None]
    case: Case

    def __call__(self) -> None:
        self.check(self.case)


def default_factory(cls_or_instance) -> Callable[..., Predictor]:
    """Fresh instances: the class's defaults, or a configured instance's parameters; `seed`, where
    the class has one, set when given."""
    cls = cls_or_instance if inspect.isclass(cls_or_instance) else type(cls_or_instance)
    params = {} if inspect.isclass(cls_or_instance) else cls_or_instance.get_params()

    def make(seed: int | None = None) -> Predictor:
        pred = cls(**params)
        if seed is not None and "seed" in pred.get_params():
            pred.set_params(seed=seed)
        return pred

    return make


def predictor_checks(cls_or_instance, *, make: Callable[..., Predictor] | None = None,
                     data=None, n: int = 48) -> list[NamedCheck]:
    """Every contract check bound to one predictor (a class, or a configured instance). `make`
    replaces the default factory (a test suite's shorter training); `data` is
    ((train, y), (test, y_test)), by default `synthetic(n)` and `synthetic(16, seed=1)`."""
    cls = cls_or_instance if inspect.isclass(cls_or_instance) else type(cls_or_instance)
    (train, y), (test, y_test) = data or (synthetic(n), synthetic(16, seed=1))
    case = Case(cls, make or default_factory(cls_or_instance), train, y, test, y_test)
    label = getattr(getattr(cls, "info", None), "name", None) or cls.__name__
    return [NamedCheck(f"{label}:{c.__name__.removeprefix('check_')}", c, case) for c in CHECKS]


def check_predictor(cls_or_instance, n: int = 48) -> None:
    """Run every contract check on a predictor class (or a configured instance); raises
    AssertionError naming the first broken rule."""
    for check in predictor_checks(cls_or_instance, n=n):
        check()
