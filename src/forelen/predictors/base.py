"""The predictor contract: `Predictor` (the base class of every length predictor, the project's
and third parties'), its `PredictorInfo`, `NotFittedError`, and the `PREDICTORS` registry.
`forelen.predictors` re-exports them."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from forelen.errors import ForelenError
from forelen.registry import Registry
from forelen.schema import resolve_layer


@dataclass(frozen=True)
class PredictorInfo:
    name: str
    version: str  # bump when predictions change
    family: str  # hidden-state | text-proxy | reference
    reference: str  # the paper it comes from
    requires: tuple[str, ...]  # column templates; `{layer}` is filled from the `layer` parameter
    table: str = "prompt"  # prompt: one row per sample; step: also reads decode-step states
    outputs: str = "length"  # length | ranking
    progressive: bool = False  # predicts remaining length at observed decode steps
    ranked: bool = True  # False for oracle references: shown, never ranked


class NotFittedError(RuntimeError):
    pass


class Predictor:
    """The whole contract of a length predictor, the project's and third parties' alike.

    - `info`: a `PredictorInfo` (name, version, family, reference, the columns it reads, ...).
    - `__init__(**params)`: stores each hyper-parameter under its own name, nothing else.
    - `fit(table, y, eval_set=None) -> self`: `table` holds only the declared columns of the train
      rows, `y` their lengths; `eval_set` is (validation table, validation lengths) or None.
      Learned state goes in attributes ending in `_`.
    - `predict(table) -> (N,) float`: lengths in tokens (>= 0), or ranking scores when
      `info.outputs == "ranking"`; before `fit` it raises `NotFittedError`.
    - `predict_remaining(table, t) -> (N,) float`: progressive predictors only (`info.progressive`),
      the remaining length after t generated tokens.
    - `get_state(folder)` / `set_state(state, folder)`: the learned state that `save` writes and
      `load` restores (src/forelen/predictors/_saved.py); the defaults cover arrays, numbers, strings, lists,
      dicts and scikit-learn linear models, and a predictor holding anything else (a torch module,
      a tokenizer) overrides both.
    `check_predictor(cls)` runs these checks on a class.
    """

    info: ClassVar[PredictorInfo]

    def get_params(self) -> dict:
        """Hyper-parameters, read back from the attributes named like `__init__`'s arguments."""
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self"}

    def set_params(self, **params) -> "Predictor":
        """Set hyper-parameters by name (scikit-learn style); an unknown name is one clear error."""
        known = self.get_params()
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ForelenError(f"{self.info.name} has no parameter {unknown[0]!r}; its "
                               f"parameters: {', '.join(sorted(known))}")
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def columns(self, layers: list[int]) -> list[str]:
        """The columns this instance reads, given the layers a config recorded."""
        if not any("{" in c for c in self.info.requires):  # no per-layer column (text, references)
            return list(self.info.requires)
        layer = resolve_layer(getattr(self, "layer", "final"), layers)
        return [c.format(layer=layer, mid=resolve_layer("mid", layers)) for c in self.info.requires]

    def check_fitted(self) -> None:
        if not any(k.endswith("_") and not k.startswith("_") for k in vars(self)):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit first")

    def training_config(self) -> dict | None:
        """The resolved training set-up recorded with every result: the head's by default."""
        head = getattr(self, "head_", None)
        return head.config() if hasattr(head, "config") else None

    def diagnostics(self) -> dict[str, float]:
        """Rates this instance reports about its fit or its last `predict` (PiA's share of answers
        it could not parse, LTR-C's modal-class share), kept in the result record's `diagnostics`
        and read by the page's flags (`leaderboard/ranking.py`). The default names every numeric
        fitted attribute ending in `_rate_` without its trailing underscore; override it to
        report others."""
        return {k[:-1]: float(v) for k, v in vars(self).items()
                if k.endswith("_rate_") and isinstance(v, (int, float)) and not isinstance(v, bool)}

    def get_state(self, folder) -> dict:
        """The learned state to save: every attribute ending in `_`. `folder` (the saved
        predictor's folder, still being written) takes state a library writes as files of its
        own; an override converts what the encoding cannot hold (a torch module to its state
        dict) and returns the rest."""
        return {k: v for k, v in vars(self).items() if k.endswith("_") and not k.startswith("_")}

    def set_state(self, state: dict, folder) -> "Predictor":
        """The inverse of `get_state`, on an instance holding the saved hyper-parameters."""
        for key, value in state.items():
            setattr(self, key, value)
        return self

    def save(self, path, overwrite: bool = False, meta: dict | None = None):
        """Write this fitted predictor to the folder `path`, atomically: tensors as safetensors,
        hyper-parameters and provenance as JSON, no pickle (src/forelen/predictors/_saved.py). `forelen fit`
        adds what it was fitted on (`meta`), which `forelen evaluate --from` checks."""
        from forelen.predictors._saved import save  # deferred: it reads PREDICTORS

        return save(self, path, meta, overwrite)

    @classmethod
    def load(cls, path) -> "Predictor":
        """A saved predictor, fitted, predicting as it did when saved. On a subclass
        (`EGTP.load`), a folder holding another predictor is refused."""
        from forelen.predictors._saved import load  # deferred: it reads PREDICTORS

        return load(path, expect=cls)[0]

    def fit(self, table, y) -> "Predictor":
        raise NotImplementedError

    def predict(self, table) -> np.ndarray:
        raise NotImplementedError


PREDICTORS: Registry[type] = Registry("predictor", package="forelen.predictors")
