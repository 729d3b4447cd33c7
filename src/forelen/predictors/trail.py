"""TRAIL (Shahout et al., "Don't Stop Me Now: Embedding Based Scheduling for LLMs", ICLR 2025):
an MLP classifier over remaining-length bins reads an intermediate layer's embedding, and a Bayesian
filter with a count-down prior smooths its predictions over decode steps.

Paper and released predictor (harvard-cns/TRAIL-llm-scheduling): layer 11 of 32 (about a third of
the depth), Linear(d, 512) -> ReLU -> Linear(512, 10), 10 equal-width bins over 0-512 tokens,
cross-entropy, lr 0.01 with cosine annealing over 30 epochs (the released training history),
checkpoint chosen by validation MAE; the MLP reruns every 8 decode steps and the estimate counts
down in between. Neither the optimizer nor the batch size is stated there: AdamW with torch's
defaults, and batch 256 (a third-party re-implementation used 32, which took 111 s of the 173 s
that all hidden-state predictors needed on a 10,000-row table on 2 cores; 256 cuts it eightfold).
"""

from __future__ import annotations

import numpy as np

from forelen.distribution import BinnedDistribution
from forelen.metrics import OBSERVED_STEPS
from forelen.predictors import PREDICTORS, Predictor, PredictorInfo
from forelen.predictors._head import parse_decode
from forelen.predictors._steps import layer_of, state_at, step_rows

REFERENCE = "Shahout et al., Don't Stop Me Now: Embedding Based Scheduling for LLMs (ICLR 2025)"
FLOOR = 1e-9  # likelihood floor: a confident wrong classifier must not zero the whole posterior


def countdown_matrix(n_bins: int, width: float) -> np.ndarray:
    """(K, K) one-step transition: the remaining length drops by one token, so mass leaves bin i for
    bin i-1 with probability 1/width; bin 0 holds it (TRAIL section 3.2)."""
    p = min(1.0, 1.0 / max(width, 1e-9))
    m = np.eye(n_bins) * (1 - p)
    m[np.arange(1, n_bins), np.arange(n_bins - 1)] = p
    m[0, 0] = 1.0
    return m


@PREDICTORS.register("trail")
class TRAIL(Predictor):
    """Remaining-length bins from one layer's embeddings, smoothed by a count-down Bayesian filter.

    The bins span 0 to the `max_len_percentile` of the train lengths (TRAIL's 0-512 refitted to the
    data; the last bin takes the overflow). The prompt's mean embedding gives the t = 0 prior via
    the same MLP, as in the released runtime; TRAIL's DistilBERT prompt model is another baseline.
    `standardize` (not in the paper) z-scores inputs so lr 0.01 survives massive-activation dims.
    `decode`: "mean" (default, this implementation's decoding since version 1: the expected bin
    midpoint under the posterior), "median" or "quantile:Q" of the posterior, read from the bins
    with the last one closed at the train maximum (`predict_distribution`); validation selection
    scores the configured decoding.
    """

    info = PredictorInfo(name="trail", version="1", family="hidden-state", reference=REFERENCE,
                         requires=("mean_l{layer}", "step_states_l{layer}"), table="step",
                         progressive=True)

    def __init__(self, layer: int | str = "mid", n_bins: int = 10, hidden: int = 512,
                 max_len_percentile: float = 99.0, refresh: int = 8, lr: float = 0.01,
                 epochs: int = 30, batch_size: int = 256, patience: int = 5,
                 standardize: bool = True, steps: tuple[int, ...] = OBSERVED_STEPS,
                 seed: int = 42, decode: str = "mean"):
        self.layer = layer
        self.n_bins = n_bins
        self.hidden = hidden
        self.max_len_percentile = max_len_percentile
        self.refresh = refresh
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.patience = patience
        self.standardize = standardize
        self.steps = steps
        self.seed = seed
        self.decode = decode

    def columns(self, layers: list[int]) -> list[str]:
        parse_decode(self.decode)  # a bad value fails before any data is read
        return super().columns(layers)

    def fit(self, table, y, eval_set=None) -> "TRAIL":
        y = np.asarray(y, np.float64)
        self.q_ = parse_decode(self.decode)
        self.layer_ = layer_of(self, table)
        self.max_len_ = max(float(np.percentile(y, self.max_len_percentile)), 1.0)
        self.edges_ = np.linspace(0.0, self.max_len_, self.n_bins + 1)
        # the last bin takes the overflow past max_len_: as a distribution it ends at the train max
        self.dist_edges_ = np.append(self.edges_[:-1], max(self.max_len_, float(y.max())))
        self.mids_ = (self.edges_[:-1] + self.edges_[1:]) / 2
        self.transition_ = countdown_matrix(self.n_bins, self.max_len_ / self.n_bins)
        X, target = self._rows(table, y)
        self.mu_ = X.mean(0) if self.standardize else np.zeros(X.shape[1], np.float32)
        self.sd_ = X.std(0) + 1e-6 if self.standardize else np.ones(X.shape[1], np.float32)
        val = self._rows(*eval_set) if eval_set is not None else None
        self.net_, self.history_ = self._train(X, target, val)
        return self

    def _rows(self, table, y) -> tuple[np.ndarray, np.ndarray]:
        """(sample, t) rows: the prompt's mean embedding at t = 0, h'_t after; target T - t."""
        y = np.asarray(y, np.float64)
        states = table[f"step_states_l{self.layer_}"]
        rows, ts = step_rows(y, states, self.steps)
        X = np.asarray(table[f"mean_l{self.layer_}"], np.float32)[rows]
        step = ts > 0
        if step.any():
            X[step] = state_at(states, rows[step], ts[step])
        return X, y[rows] - ts

    def _bins(self, remaining) -> np.ndarray:
        idx = np.searchsorted(self.edges_, remaining, side="right") - 1
        return np.clip(idx, 0, self.n_bins - 1)

    def _train(self, X, target, val):
        """Cross-entropy, AdamW with cosine annealing; keeps the epoch with the best val MAE."""
        import torch
        import torch.nn as nn

        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        net = self._net(X.shape[1])
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.epochs)
        xs = torch.from_numpy(self._norm(X))
        labels = torch.from_numpy(self._bins(target))
        best, best_state, stale, history = np.inf, None, 0, []
        for _epoch in range(self.epochs):
            net.train()
            n_batches = max(1, len(labels) // self.batch_size)
            for batch in np.array_split(rng.permutation(len(labels)), n_batches):
                loss = nn.functional.cross_entropy(net(xs[batch]), labels[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
            if val is None:
                continue
            self.net_ = net
            score = float(np.mean(np.abs(self._decode(self._proba(val[0])) - val[1])))
            history.append(score)
            if score < best - 1e-9:
                best, stale = score, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            elif (stale := stale + 1) >= self.patience:
                break
        if best_state is not None:
            net.load_state_dict(best_state)
        return net.eval(), history

    def _net(self, d: int):
        """Linear(d, hidden) -> ReLU -> Linear(hidden, K), the released predictor's MLP."""
        import torch.nn as nn

        return nn.Sequential(nn.Linear(d, self.hidden), nn.ReLU(),
                             nn.Linear(self.hidden, self.n_bins))

    def get_state(self, folder) -> dict:
        """The MLP as its weights (rebuilt on load at the width of the saved moments)."""
        state = super().get_state(folder)
        state["net_"] = state["net_"].state_dict()
        return state

    def set_state(self, state: dict, folder) -> "TRAIL":
        state = dict(state)
        weights = state.pop("net_")
        super().set_state(state, folder)
        self.net_ = self._net(len(self.mu_))
        self.net_.load_state_dict(weights)
        self.net_.eval()
        return self

    def _norm(self, X) -> np.ndarray:
        return ((np.asarray(X, np.float32) - self.mu_) / self.sd_).astype(np.float32)

    def _proba(self, X) -> np.ndarray:
        """(R, K) classifier probabilities, floored and renormalised."""
        import torch

        self.net_.eval()
        with torch.inference_mode():
            p = torch.softmax(self.net_(torch.from_numpy(self._norm(X))), -1).double().numpy()
        p = np.maximum(p, FLOOR)
        return p / p.sum(1, keepdims=True)

    def posterior(self, table, t: int) -> np.ndarray:
        """(N, K) belief over remaining-length bins after t tokens: count-down prior every step,
        times the classifier's likelihood every `refresh` steps while a state is recorded."""
        self.check_fitted()
        states = table[f"step_states_l{self.layer_}"]
        q = self._proba(np.asarray(table[f"mean_l{self.layer_}"], np.float32))  # (N, K)
        held = np.array([len(s) for s in states])
        last = 0
        for s in range(self.refresh, int(t) + 1, self.refresh):
            q = q @ np.linalg.matrix_power(self.transition_, s - last)
            last = s
            rows = np.flatnonzero(held >= s)  # past S (or a row's end) only the prior moves
            if len(rows):
                q[rows] *= self._proba(state_at(states, rows, s))
                q[rows] /= q[rows].sum(1, keepdims=True)
        return q @ np.linalg.matrix_power(self.transition_, int(t) - last)

    def _decode(self, probs: np.ndarray) -> np.ndarray:
        """(R, K) bin probabilities -> lengths: expected midpoint, or the configured quantile."""
        if self.q_ is None:
            return probs @ self.mids_

        return BinnedDistribution(self.dist_edges_, probs).quantile(self.q_)

    def predict_distribution(self, table, t: int = 0):
        """BinnedDistribution of the remaining length after t tokens (the posterior over the bins,
        0 to the train max); at t = 0 that of the total length, which `predict` decodes."""
        return BinnedDistribution(self.dist_edges_, self.posterior(table, t))

    def predict_remaining(self, table, t: int) -> np.ndarray:
        """The configured decoding of the posterior; bins start at 0, so never negative."""
        return np.maximum(self._decode(self.posterior(table, t)), 0.0)

    def predict(self, table) -> np.ndarray:
        return self.predict_remaining(table, 0)
