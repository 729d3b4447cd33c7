"""Scheduling policies as priority plans: a lower key is served first, ties by arrival order.

- `fcfs`: arrival order.
- `sjf`: a static key per request (a predicted length, an `ltr` score, or the true length for the
  oracle), fixed at arrival.
- `srpt`: progressive re-prediction. Remaining-length predictions are precomputed at the observed
  steps t (metrics.OBSERVED_STEPS) for the requests still running at t. When the engine re-ranks
  (every k decode steps) a request that has generated g tokens is keyed by the newest observed
  t <= g: remaining = max(pred_remaining(t) - (g - t), 0). Past the last observed step (64) the
  step-64 prediction keeps counting down. With `remaining[:, j] = y - t_j` this is exactly the
  true remaining length, so the oracle SRPT is the same plan built from the true lengths.

Aging (as the serving engines bound starvation): key + aging * arrival_s. A request that has waited
w seconds longer than another thereby gains aging * w on it; the shift is the same for everyone at
any instant, so keys stay fixed while requests wait. Units: key units (tokens) per second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forelen.errors import ForelenError


@dataclass(frozen=True)
class Plan:
    name: str  # fcfs | sjf | srpt
    key: np.ndarray  # (N,) key of a request that has generated nothing yet
    steps: np.ndarray | None = None  # (T,) observed steps, srpt only, starting at 0
    remaining: np.ndarray | None = None  # (N, T) predicted remaining at each step; NaN: not running

    def running_keys(self, ids: np.ndarray, generated: np.ndarray) -> np.ndarray:
        """srpt keys of requests `ids` that have generated `generated` tokens so far."""
        j = np.searchsorted(self.steps, generated, side="right") - 1  # newest observed t <= g
        rem = self.remaining[ids, j]
        return np.maximum(rem - (generated - self.steps[j]), 0.0)


def fcfs(n: int) -> Plan:
    return Plan("fcfs", np.arange(n, dtype=np.float64))


def sjf(key) -> Plan:
    key = np.asarray(key, np.float64)
    if not np.isfinite(key).all():
        raise ForelenError("SJF needs a finite prediction for every request")
    return Plan("sjf", key)


def srpt(steps, remaining) -> Plan:
    """`remaining[i, j]`: predicted remaining length of request i after steps[j] tokens."""
    steps = np.asarray(steps, np.int64)
    rem = np.array(remaining, np.float64)  # (N, T)
    if steps[0] != 0 or (np.diff(steps) <= 0).any() or rem.shape[1:] != steps.shape:
        raise ForelenError("SRPT needs increasing observed steps starting at 0, one column each")
    # A request observed at t but not at t' > t (it finished first) never needs the t' column;
    # fill it forward so a lookup is always defined.
    for j in range(1, rem.shape[1]):
        gap = np.isnan(rem[:, j])
        rem[gap, j] = np.maximum(rem[gap, j - 1] - (steps[j] - steps[j - 1]), 0.0)
    if np.isnan(rem[:, 0]).any():
        raise ForelenError("SRPT needs a step-0 prediction for every request")
    return Plan("srpt", rem[:, 0].copy(), steps, rem)


def oracle(output_tokens, name: str = "sjf") -> Plan:
    """True lengths: SJF on the total, or SRPT on the true remaining length."""
    y = np.asarray(output_tokens, np.float64)
    return sjf(y) if name == "sjf" else srpt([0], y[:, None])
