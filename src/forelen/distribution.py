"""Predicted length distributions over bins: what a distribution-scoring metric and a decoding
rule (mean, median, quantile) read.

A head with K bins predicts, per row, the probability of each bin; within a bin the length is
taken as uniform, so the CDF is piecewise linear between the bin edges and a quantile is
interpolated within its bin. The outer edges are finite (a head's open end bins are closed at
the train minimum and maximum, or at the generation cap), so every quantile is a length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BinnedDistribution:
    """`probs` (N, K) over the K bins between `edges` (K+1,), increasing and finite, in tokens."""

    edges: np.ndarray
    probs: np.ndarray

    def __post_init__(self):
        edges = np.asarray(self.edges, np.float64)
        probs = np.asarray(self.probs, np.float64)
        if edges.ndim != 1 or probs.ndim != 2 or probs.shape[1] != len(edges) - 1:
            raise ValueError(f"edges {edges.shape} and probs {probs.shape} do not match")
        if not np.all(np.isfinite(edges)) or np.any(np.diff(edges) < 0):
            raise ValueError("edges must be finite and non-decreasing")
        probs = np.clip(probs, 0.0, None)
        total = probs.sum(1, keepdims=True)
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "probs", probs / np.where(total > 0, total, 1.0))

    def __len__(self) -> int:
        return self.probs.shape[0]

    def cdf_at_edges(self) -> np.ndarray:
        """(N, K+1): F at every edge, from 0 at the first to 1 at the last."""
        return np.concatenate([np.zeros((len(self), 1)), np.cumsum(self.probs, 1)], 1)

    def cdf(self, x) -> np.ndarray:
        """(N,): each row's F at its own x (linear within a bin)."""
        x = np.broadcast_to(np.asarray(x, np.float64), (len(self),))
        return np.array([np.interp(v, self.edges, f) for v, f in zip(x, self.cdf_at_edges())])

    def quantile(self, q: float) -> np.ndarray:
        """(N,): where each row's CDF reaches q, interpolated within the bin (q=0.5: the median,
        the point estimate that minimises expected absolute error)."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"a quantile lies in [0, 1], got {q}")
        out = np.empty(len(self))
        for i, f in enumerate(self.cdf_at_edges()):
            j = int(np.clip(np.searchsorted(f, q, side="left"), 1, len(self.edges) - 1))
            lo, hi = f[j - 1], f[j]
            t = 0.0 if hi <= lo else (q - lo) / (hi - lo)
            out[i] = self.edges[j - 1] + t * (self.edges[j] - self.edges[j - 1])
        return out

    def take(self, index) -> "BinnedDistribution":
        return BinnedDistribution(self.edges, self.probs[index])
