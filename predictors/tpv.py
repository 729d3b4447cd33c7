"""TPV, a thinking-progress probe (Eisenstadt et al. 2025, "Overclocking LLM Reasoning: Monitoring
and Controlling Thinking Path Lengths in LLMs"): a linear regression from the current token's
hidden state to the relative position p = t / T, read as a remaining length t (1 - p) / p.

The paper probes the thinking phase of reasoning models; here the whole response is the path. At
t = 0 nothing is generated and p is undefined, so a ridge regression of the total length on the
prompt's EGTP vector stands in.
"""

from __future__ import annotations

import numpy as np

from forelen_bench.metrics import OBSERVED_STEPS
from forelen_bench.predictors import PREDICTORS, Predictor, PredictorInfo
from forelen_bench.predictors.plp import layer_of, state_at, step_rows

REFERENCE = ("Eisenstadt et al., Overclocking LLM Reasoning: Monitoring and Controlling Thinking "
             "Path Lengths in LLMs (2025), thinking progress vector")


ALPHAS = np.logspace(-2, 5, 15)


def ridge(alpha: float | None):
    """Standardised ridge; `alpha=None` picks it by efficient leave-one-out among 10^-2..10^5.

    With hundreds of hidden dimensions and few rows a fixed small alpha extrapolates wildly (on the
    demo rl config alpha=1 put the static fallback at MAE 188 against the constant's 4).
    """
    from sklearn.linear_model import Ridge, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = RidgeCV(alphas=ALPHAS) if alpha is None else Ridge(alpha=alpha)
    # Centred, not scaled per dimension: with few distinct prompts some hidden dimensions barely
    # vary in train, and dividing by their tiny spread turns a new prompt into an outlier (the demo
    # rl config's test prompt was predicted at 0 tokens that way).
    return make_pipeline(StandardScaler(with_std=False), model)


@PREDICTORS.register("tpv")
class TPV(Predictor):
    """Ridge probe of progress t/T on h'_t; remaining = t (1 - p) / p with p in [eps, 1 - eps].

    The implied total t / p is capped at the longest train output: near p = eps the formula alone
    would answer t / eps. `eval_set` is accepted and unused (closed-form fit, nothing to stop).
    """

    info = PredictorInfo(name="tpv", version="1", family="hidden-state", reference=REFERENCE,
                         requires=("egtp_l{layer}", "step_states_l{layer}"), table="step",
                         progressive=True)

    def __init__(self, layer: int | str = "final", alpha: float | None = None, eps: float = 0.01,
                 steps: tuple[int, ...] = OBSERVED_STEPS, seed: int = 42):
        self.layer = layer
        self.alpha = alpha
        self.eps = eps
        self.steps = steps
        self.seed = seed

    def fit(self, table, y, eval_set=None) -> "TPV":
        y = np.asarray(y, np.float64)
        self.layer_ = layer_of(self, table)
        states = table[f"step_states_l{self.layer_}"]
        self.max_len_ = float(y.max())
        self.static_ = self._static(table, y, eval_set)
        rows, ts = step_rows(y, states, self.steps, first=1)
        self.probe_ = ridge(self.alpha).fit(state_at(states, rows, ts), ts / y[rows])
        return self

    def _static(self, table, y, eval_set):
        """The prompt-only fallback. Samples of one prompt share its vector, so leave-one-out
        leaks across an `rl` group: with a validation set (other prompts), alpha is chosen there."""
        X = self._prompt(table)
        if self.alpha is not None or eval_set is None:
            return ridge(self.alpha).fit(X, y)
        X_val, y_val = self._prompt(eval_set[0]), np.asarray(eval_set[1], np.float64)

        def val_mae(model):
            return np.mean(np.abs(np.clip(model.predict(X_val), 0, self.max_len_) - y_val))
        return min((ridge(a).fit(X, y) for a in ALPHAS), key=val_mae)

    def _prompt(self, table) -> np.ndarray:
        return np.asarray(table[f"egtp_l{self.layer_}"], np.float32)

    def progress(self, table, t: int) -> np.ndarray:
        """(N,) predicted p from each row's state at step t (t >= 1), clipped to [eps, 1 - eps];
        NaN for a row with no recorded state."""
        self.check_fitted()
        states = table[f"step_states_l{self.layer_}"]
        rows = np.flatnonzero([len(s) > 0 for s in states])
        p = np.full(table.n, np.nan)
        if len(rows):
            p[rows] = self.probe_.predict(state_at(states, rows, int(t)))
        return np.clip(p, self.eps, 1 - self.eps)

    def predict_remaining(self, table, t: int) -> np.ndarray:
        """Past S the last recorded state h'_m reads as total m / p; remaining is that minus t."""
        if t == 0:
            return self.predict(table)
        p = self.progress(table, t)
        held = np.array([len(s) for s in table[f"step_states_l{self.layer_}"]])
        total = np.minimum(np.minimum(int(t), held) / p, self.max_len_)
        total = np.where(np.isnan(p), self.predict(table), total)  # no state: the prompt fallback
        return np.maximum(total - t, 0.0).astype(np.float64)

    def predict(self, table) -> np.ndarray:
        self.check_fitted()
        total = self.static_.predict(self._prompt(table))
        return np.clip(total, 0.0, self.max_len_).astype(np.float64)
