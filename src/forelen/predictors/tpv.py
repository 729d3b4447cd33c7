"""TPV, a thinking-progress probe (Eisenstadt et al. 2025, "Overclocking LLM Reasoning: Monitoring
and Controlling Thinking Path Lengths in LLMs"): a linear regression from the current token's
hidden state to the relative position p = t / T, read as a remaining length t (1 - p) / p.

The paper probes the thinking phase of reasoning models; here the whole response is the path. At
t = 0 nothing is generated and p is undefined, so a ridge regression of the total length on the
prompt's EGTP vector stands in.

The read-out t (1 - p) / p is unstable while p is small: an error of 0.01 in p at p = 0.02 halves or
doubles the total. (On a 240-prompt cot build at a 512 cap the unbounded version scored a
remaining-length MAE of 102.7 at t = 0 and 214.5 at t = 1.) So the total is shrunk towards the
prompt-level prediction while p is small: total = w * t / p + (1 - w) * static, w = p / (p + tau),
and `shrink` = tau is chosen on the validation set (among SHRINKS, where inf keeps the prompt-level
total) so that every observed step does at least about as well as the static prediction. This
bound is forelen's, not the TPV paper's.
"""

from __future__ import annotations

import numpy as np

from forelen.metrics import OBSERVED_STEPS
from forelen.predictors import PREDICTORS, Predictor, PredictorInfo
from forelen.predictors._steps import layer_of, state_at, step_rows

REFERENCE = ("Eisenstadt et al., Overclocking LLM Reasoning: Monitoring and Controlling Thinking "
             "Path Lengths in LLMs (2025), thinking progress vector")


ALPHAS = np.logspace(-2, 5, 15)
SHRINKS = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, float("inf"))
DEFAULT_SHRINK = 0.2  # without a validation set


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

    info = PredictorInfo(name="tpv", version="2", family="hidden-state", reference=REFERENCE,
                         requires=("egtp_l{layer}", "step_states_l{layer}"), table="step",
                         progressive=True)

    def __init__(self, layer: int | str = "final", alpha: float | None = None, eps: float = 0.01,
                 steps: tuple[int, ...] = OBSERVED_STEPS, seed: int = 42,
                 shrink: float | None = None):
        self.layer = layer
        self.shrink = shrink
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
        self.shrink_ = self._choose_shrink(eval_set)
        return self

    def training_config(self) -> dict:
        """Recorded with every result: the shrinkage chosen and how."""
        return {"shrink": getattr(self, "shrink_", None),
                "shrink_chosen_by": "given" if self.shrink is not None else "validation, among "
                                    + ", ".join(map(str, SHRINKS))}

    def _choose_shrink(self, eval_set) -> float:
        """tau with the lowest mean remaining-length MAE over the observed steps on validation."""
        if self.shrink is not None:
            return float(self.shrink)
        if eval_set is None:
            return DEFAULT_SHRINK
        table, y = eval_set[0], np.asarray(eval_set[1], np.float64)

        def score(tau: float) -> float:
            self.shrink_ = tau
            maes = [np.mean(np.abs(self.predict_remaining(table.take(np.flatnonzero(y > t)), t)
                                   - (y[y > t] - t)))
                    for t in self.steps if t > 0 and np.any(y > t)]
            return float(np.mean(maes)) if maes else 0.0
        return min(SHRINKS, key=score)

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
        progress_total = np.minimum(np.minimum(int(t), held) / p, self.max_len_)
        static = self.predict(table)
        tau = self.shrink_
        w = np.zeros_like(p) if np.isinf(tau) else p / (p + tau)  # tau 0: the paper's read-out
        total = w * progress_total + (1 - w) * np.maximum(static, t)
        total = np.where(np.isnan(p), static, total)  # no state: the prompt fallback
        return np.maximum(total - t, 0.0).astype(np.float64)

    def predict(self, table) -> np.ndarray:
        self.check_fitted()
        total = self.static_.predict(self._prompt(table))
        return np.clip(total, 0.0, self.max_len_).astype(np.float64)
