"""The step states that the progressive predictors (plp, trail, tpv) read: which (sample, step)
pairs train them, a row's state at a step, and the layer a predictor reads. Shared here, so no
predictor imports another's module."""

from __future__ import annotations

import numpy as np

from forelen.metrics import OBSERVED_STEPS
from forelen.predictors import Predictor
from forelen.schema import resolve_layer


def step_rows(y, states, steps=OBSERVED_STEPS, first: int = 0) -> tuple[np.ndarray, ...]:
    """(sample, t) training pairs: each t in `steps` (>= first) with t < T and t <= states held.

    One row per sample and step, so a loss averaged over rows is the paper's average over steps.
    """
    y = np.asarray(y)
    held = np.array([len(s) for s in states])
    rows, ts = [], []
    for t in sorted(set(steps)):
        if t < first:
            continue
        idx = np.flatnonzero((y > t) & (held >= t))
        rows.append(idx)
        ts.append(np.full(len(idx), t))
    return np.concatenate(rows).astype(np.int64), np.concatenate(ts).astype(np.int64)


def state_at(states, rows, t) -> np.ndarray:
    """(R, D) float32: each row's state at step t, or its last recorded one when t is beyond S."""
    t = np.broadcast_to(np.asarray(t), np.shape(rows))
    return np.stack([np.asarray(states[i][min(s, len(states[i])) - 1], np.float32)
                     for i, s in zip(rows, t)])


def layer_of(predictor: Predictor, table) -> int:
    return resolve_layer(getattr(predictor, "layer", "final"), table.layers())
