"""PLP, progressive length prediction (ICLR 2026, "Predicting LLM Output Length via Entropy-Guided
Representations", section 3): at decode step t the soft-label head reads Aggregate(h_prompt,
h'_1..h'_t) and predicts the remaining length T - t; the loss is averaged over steps.

Also home of the (sample, step) row helpers that TRAIL and TPV share.
"""

from __future__ import annotations

import numpy as np

from forelen.compact import prefix_mean
from forelen.errors import ForelenError
from forelen.metrics import OBSERVED_STEPS
from forelen.predictors import PREDICTORS, Predictor, PredictorInfo
from forelen.predictors._head import (DEFAULT_PRESET, HeadState, SoftLabelHead, check_censoring,
                                      is_censored, parse_decode)
from forelen.predictors._steps import layer_of, step_rows

PAPER = "Predicting LLM Output Length via Entropy-Guided Representations (ICLR 2026)"
AGGREGATORS = ("mean", "last", "entropy")


def prefix_aggregate(states, t: int, aggregator: str, entropy=None) -> np.ndarray:
    """(D,) float32 aggregate of a row's first min(t, S) step states. `states` is the row's
    (held, D) float16 array, or its `StepSummary` in a compact config. The mean is rounded to
    float16, the precision the states are stored in, so both forms give the same features."""
    m = min(int(t), len(states))
    if aggregator == "last":
        return np.asarray(states[m - 1], np.float32)
    if aggregator == "mean":
        if isinstance(states, np.ndarray):
            return prefix_mean(states, m)
        return states.prefix_mean(m)
    if not isinstance(states, np.ndarray):
        raise ForelenError("plp aggregator=entropy reads every step state; the compact form "
                           "keeps only their means (evaluate it on the full config)")
    h = np.asarray(states[:m], np.float32)
    e = np.asarray(entropy[:m], np.float64)
    w = np.exp(e - e.max())
    return (w / w.sum()) @ h[: len(w)]


@PREDICTORS.register("plp")
class PLP(HeadState, Predictor):
    """Soft-label head on [h_prompt; Aggregate(h'_1..h'_t)] (+ log1p(t)), trained over steps.

    `aggregator`: `mean` (default) averages the step states; `last` takes h'_t; `entropy` weights
    them by softmax of the response entropies, EGTP's pooling applied to generated tokens. The paper
    names the aggregation without fixing it, hence the parameter. `step_feature` appends log1p(t):
    a mean of t states does not say how large t is, and the target T - t depends on it.
    `decode` and `censoring` are the head's (src/forelen/predictors/_head.py; defaults mean and as-exact, the
    paper's); under "survival" every step row of a response cut at the cap is censored, its
    remaining length cap - t a lower bound.

    Version 2 rounds the mean of the step states to float16, the precision they are stored in,
    so a config's compact form (src/forelen/compact.py) gives the very same features.
    """

    info = PredictorInfo(name="plp", version="2", family="hidden-state", reference=PAPER,
                         requires=("egtp_l{layer}", "step_states_l{layer}"), table="step",
                         progressive=True)

    def __init__(self, layer: int | str = "final", aggregator: str = "mean",
                 step_feature: bool = True, n_bins: int = 20, layout: str = "uniform",
                 ce_weight: float = 0.95, preset: str = DEFAULT_PRESET, dropout: float = 0.1,
                 steps: tuple[int, ...] = OBSERVED_STEPS, seed: int = 42, centres: str = "mean",
                 decode: str = "mean", censoring: str = "as-exact"):
        self.layer = layer
        self.aggregator = aggregator
        self.step_feature = step_feature
        self.n_bins = n_bins
        self.layout = layout
        self.ce_weight = ce_weight
        self.preset = preset
        self.dropout = dropout
        self.steps = steps
        self.seed = seed
        self.centres = centres
        self.decode = decode
        self.censoring = censoring

    def columns(self, layers: list[int]) -> list[str]:
        parse_decode(self.decode)  # a bad value fails before any data is read
        cols = super().columns(layers)
        cols = cols + ["response_entropy"] if self.aggregator == "entropy" else cols
        return cols + ["finish_reason"] if check_censoring(self.censoring) == "survival" else cols

    def fit(self, table, y, eval_set=None) -> "PLP":
        if self.aggregator not in AGGREGATORS:
            raise ValueError(f"unknown aggregator {self.aggregator!r}; one of {AGGREGATORS}")
        self.layer_ = layer_of(self, table)
        X, target, cens = self._training_rows(table, y)
        val, cens_val = (None, None), None
        if eval_set is not None:
            *val, cens_val = self._training_rows(*eval_set)
        head = SoftLabelHead(n_bins=self.n_bins, layout=self.layout, ce_weight=self.ce_weight,
                             preset=self.preset, seed=self.seed, dropout=self.dropout,
                             centres=self.centres, decode=self.decode, censoring=self.censoring)
        self.head_ = head.fit(X, target, *val, censored=cens, censored_val=cens_val)
        return self

    def predict(self, table) -> np.ndarray:
        return self.predict_remaining(table, 0)

    def predict_remaining(self, table, t: int) -> np.ndarray:
        """Remaining length after t generated tokens (the configured decoding of the head's
        distribution); steps beyond S aggregate the S states held."""
        self.check_fitted()
        return np.maximum(self.head_.predict(self._step_features(table, t)), 0.0).astype(np.float64)

    def predict_distribution(self, table, t: int = 0):
        """BinnedDistribution of the remaining length after t tokens; at t = 0 (the default) that
        of the total length, which `predict` decodes. Outer bins closed at the train min and max."""
        self.check_fitted()
        return self.head_.distribution(self._step_features(table, t))

    def _step_features(self, table, t: int) -> np.ndarray:
        return self._features(table, np.arange(table.n), np.full(table.n, int(t)))

    def _training_rows(self, table, y) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(features, remaining length, censored or None) of every (sample, step) row."""
        y = np.asarray(y, np.float64)
        rows, ts = step_rows(y, table[f"step_states_l{self.layer_}"], self.steps)
        cens = is_censored(table, len(y), self.censoring)
        return self._features(table, rows, ts), y[rows] - ts, None if cens is None else cens[rows]

    def _features(self, table, rows, ts) -> np.ndarray:
        """(R, 2D [+1]): h_prompt, the aggregate of the first t step states, log1p(t)."""
        prompt = np.asarray(table[f"egtp_l{self.layer_}"], np.float32)[rows]  # (R, D)
        states = table[f"step_states_l{self.layer_}"]
        entropy = table["response_entropy"] if self.aggregator == "entropy" else None
        agg = np.zeros_like(prompt)  # zeros at t = 0: nothing generated yet
        for r, (i, t) in enumerate(zip(rows, ts)):
            if t > 0 and len(states[i]):
                agg[r] = prefix_aggregate(states[i], t, self.aggregator,
                                          None if entropy is None else entropy[i])
        parts = [prompt, agg]
        if self.step_feature:
            parts.append(np.log1p(np.asarray(ts, np.float32))[:, None])
        return np.concatenate(parts, axis=1)

