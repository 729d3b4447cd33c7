"""EGTP and the paper's pooling ablation: the soft-label head on one pooled prompt vector per sample.

EGTP (ICLR 2026, "Predicting LLM Output Length via Entropy-Guided Representations", section 3)
pools the prompt's hidden states as sum_i softmax(H)_i * h_i, H_i the next-token entropy at prompt
token i; the recorder stores that vector (src/forelen/builders/recorder.py). The ablation swaps in mean, max and
last-token pooling under the same head, loss and training.

`decode` (mean | median | quantile:Q) and `censoring` (as-exact | survival) are the head's
(src/forelen/predictors/_head.py); the defaults, mean and as-exact, are the paper's.
"""

from __future__ import annotations

import numpy as np

from forelen.errors import ForelenError
from forelen.predictors import PREDICTORS, Predictor, PredictorInfo
from forelen.predictors._head import (DEFAULT_PRESET, HeadState, SoftLabelHead, check_censoring,
                                      is_censored, parse_decode)

PAPER = "Predicting LLM Output Length via Entropy-Guided Representations (ICLR 2026)"


class PooledHead(HeadState, Predictor):
    """The shared soft-label head (src/forelen/predictors/_head.py) on the single pooled column in `requires`."""

    def __init__(self, layer: int | str = "final", n_bins: int = 20, layout: str = "uniform",
                 ce_weight: float = 0.95, preset: str = DEFAULT_PRESET, seed: int = 42,
                 centres: str = "mean", decode: str = "mean", censoring: str = "as-exact"):
        self.layer = layer
        self.centres = centres
        self.decode = decode
        self.censoring = censoring
        self.n_bins = n_bins
        self.layout = layout
        self.ce_weight = ce_weight
        self.preset = preset
        self.seed = seed

    def columns(self, layers: list[int]) -> list[str]:
        """The pooled column; under censoring="survival" also `finish_reason` (cut rows)."""
        parse_decode(self.decode)  # a bad value fails before any data is read
        survival = check_censoring(self.censoring) == "survival"
        return super().columns(layers) + (["finish_reason"] if survival else [])

    def fit(self, table, y, eval_set=None) -> "PooledHead":
        column = self.columns(table.layers())[0]
        self._check_column(table, column)
        y = np.asarray(y, np.float64)
        val, cens_val = (None, None), None
        if eval_set is not None:
            val = (_matrix(eval_set[0], column), np.asarray(eval_set[1], np.float64))
            cens_val = is_censored(eval_set[0], len(val[1]), self.censoring)
        head = SoftLabelHead(n_bins=self.n_bins, layout=self.layout, ce_weight=self.ce_weight,
                             preset=self.preset, seed=self.seed, centres=self.centres,
                             decode=self.decode, censoring=self.censoring)
        self.head_ = head.fit(_matrix(table, column), y, *val,
                              censored=is_censored(table, len(y), self.censoring),
                              censored_val=cens_val)
        self.column_ = column
        return self

    def predict(self, table) -> np.ndarray:
        """The configured decoding (`decode`) of the head's bin distribution."""
        self.check_fitted()
        return self.head_.predict(_matrix(table, self.column_)).astype(np.float64)

    def predict_distribution(self, table):
        """The head's bins and probabilities (forelen.distribution.BinnedDistribution), the
        outer bins closed at the train min and max; `predict` decodes this (or its centres)."""
        self.check_fitted()
        return self.head_.distribution(_matrix(table, self.column_))

    def _check_column(self, table, column: str) -> None:
        if column not in table:
            raise ForelenError(f"{self.info.name} needs column {column!r}; the table has "
                               f"{', '.join(table) or 'no columns'}")


def _matrix(table, column: str) -> np.ndarray:
    return np.asarray(table[column], dtype=np.float32)  # (N, D); stored float16


@PREDICTORS.register("egtp")
class EGTP(PooledHead):
    """Entropy-guided token pooling + soft-label head: the paper's main predictor.

    `first_k` follows the official script's variant that pools only the first k prompt tokens.
    It reads the column `egtp_first{k}_l{layer}` that `forelen build --egtp-first-k K` records.
    """

    info = PredictorInfo(name="egtp", version="1", family="hidden-state", reference=PAPER,
                         requires=("egtp_l{layer}",))

    def __init__(self, layer: int | str = "final", n_bins: int = 20, layout: str = "uniform",
                 ce_weight: float = 0.95, preset: str = DEFAULT_PRESET, seed: int = 42,
                 first_k: int | None = None, centres: str = "mean", decode: str = "mean",
                 censoring: str = "as-exact"):
        super().__init__(layer=layer, n_bins=n_bins, layout=layout, ce_weight=ce_weight,
                         preset=preset, seed=seed, centres=centres, decode=decode,
                         censoring=censoring)
        self.first_k = first_k

    def columns(self, layers: list[int]) -> list[str]:
        cols = super().columns(layers)
        if self.first_k is None:
            return cols
        return [c.replace("egtp_", f"egtp_first{int(self.first_k)}_", 1) for c in cols]

    def _check_column(self, table, column: str) -> None:
        if self.first_k is not None and column not in table:
            raise ForelenError(
                f"egtp with first_k={self.first_k} needs column {column!r}: pooling the first k "
                "prompt tokens needs that column recorded at build time: rebuild the config with "
                f"`forelen build ... --egtp-first-k {self.first_k}`, or leave first_k unset")
        super()._check_column(table, column)


ABLATION = f"{PAPER}, pooling ablation"


@PREDICTORS.register("pool-mean")
class PoolMean(PooledHead):
    """Pooling ablation: mean of the prompt states, same head and training."""

    info = PredictorInfo(name="pool-mean", version="1", family="hidden-state", reference=ABLATION,
                         requires=("mean_l{layer}",))


@PREDICTORS.register("pool-max")
class PoolMax(PooledHead):
    """Pooling ablation: element-wise max over the prompt states, same head and training."""

    info = PredictorInfo(name="pool-max", version="1", family="hidden-state", reference=ABLATION,
                         requires=("max_l{layer}",))


@PREDICTORS.register("pool-last")
class PoolLast(PooledHead):
    """Pooling ablation: the last prompt token's state, same head and training."""

    info = PredictorInfo(name="pool-last", version="1", family="hidden-state", reference=ABLATION,
                         requires=("last_l{layer}",))
