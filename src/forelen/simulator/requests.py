"""The simulated workload: the test rows' prompt and true output lengths, with seeded arrivals."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forelen.errors import ForelenError


@dataclass(frozen=True)
class Workload:
    """Requests in arrival order (index = arrival rank; ties in time keep this order)."""

    prompt_tokens: np.ndarray  # (N,) int
    output_tokens: np.ndarray  # (N,) int, the true lengths the engine generates
    arrival_s: np.ndarray  # (N,) float, non-decreasing
    max_new_tokens: int  # the generation budget, which a KV reservation must cover

    @property
    def n(self) -> int:
        return len(self.output_tokens)


def make_workload(prompt_tokens, output_tokens, *, rate: float | None = None, seed: int = 0,
                  max_new_tokens: int | None = None) -> tuple[Workload, np.ndarray]:
    """Shuffle the rows into a seeded arrival order; all at t=0, or Poisson at `rate` requests/s.

    Returns the workload and `order`: workload request j is input row order[j]. The shuffle keeps
    FCFS from inheriting the partition's row order (rl rows come grouped by prompt).
    """
    p = np.asarray(prompt_tokens, np.int64)
    y = np.asarray(output_tokens, np.int64)
    if p.shape != y.shape or p.ndim != 1 or len(y) == 0:
        raise ForelenError("a workload needs one prompt and one output length per request")
    if (y < 1).any():
        raise ForelenError("every simulated request must generate at least one token")
    if rate is not None and not rate > 0:
        raise ForelenError(f"--rate must be > 0 requests/s, got {rate}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    if rate is None:
        arrival = np.zeros(len(y))
    else:
        gaps = rng.exponential(1.0 / rate, size=len(y))
        arrival = np.concatenate([[0.0], np.cumsum(gaps[:-1])])  # the first request opens the run
    budget = int(max_new_tokens if max_new_tokens is not None else y.max())
    return Workload(p[order], y[order], arrival, max(budget, int(y.max()))), order
