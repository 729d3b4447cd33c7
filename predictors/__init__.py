"""Length predictors: one file per family, registered by name, scikit-learn-style contract.

Contract (docs/DESIGN.md section 6): `__init__` only stores hyper-parameters under their own names;
`fit(table, y) -> self`; `predict(table) -> (N,) float lengths in tokens`; learned state in
attributes ending in `_`; `predict` before `fit` raises `NotFittedError`. Progressive predictors also
implement `predict_remaining(table, t)`: the remaining length after t generated tokens.
torch is imported inside `fit`/`predict`, so listing predictors stays instant.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from forelen_bench.registry import Registry


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
    info: ClassVar[PredictorInfo]

    def get_params(self) -> dict:
        """Hyper-parameters, read back from the attributes named like `__init__`'s arguments."""
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self"}

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

    def fit(self, table, y) -> "Predictor":
        raise NotImplementedError

    def predict(self, table) -> np.ndarray:
        raise NotImplementedError


def resolve_layer(layer, layers: list[int]) -> int:
    """`final`: the deepest recorded layer; `mid`: the shallowest (about a third of the depth)."""
    if layer == "final":
        return max(layers)
    if layer == "mid":
        return min(layers)
    if int(layer) not in layers:
        from forelen_bench.errors import ForelenError

        raise ForelenError(f"layer {layer} was not recorded; recorded layers: {layers}")
    return int(layer)


PREDICTORS: Registry[type] = Registry("predictor", package="forelen_bench.predictors")
