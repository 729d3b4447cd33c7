"""Reference predictors: the floors every learned predictor must clear, and the rl oracle.

None reads hidden states. `group-median-oracle` reads the true lengths of the evaluated rows, so it
is shown beside the ranking, never in it (docs/DESIGN.md section 7: the static floor of `rl`).
"""

from __future__ import annotations

import numpy as np

from forelen.predictors import PREDICTORS, Predictor, PredictorInfo


@PREDICTORS.register("constant-median")
class ConstantMedian(Predictor):
    """Predicts the median train length for every row (the MAE-optimal constant)."""

    # `prompt_tokens` is read only for the number of rows: a table without columns has none.
    info = PredictorInfo(name="constant-median", version="1", family="reference",
                         reference="MAE-optimal constant", requires=("prompt_tokens",))

    def __init__(self, seed: int = 42):
        self.seed = seed

    def fit(self, table, y, eval_set=None) -> "ConstantMedian":
        self.median_ = float(np.median(np.asarray(y, np.float64)))
        return self

    def predict(self, table) -> np.ndarray:
        self.check_fitted()
        return np.full(len(table["prompt_tokens"]), self.median_, dtype=np.float64)


@PREDICTORS.register("prompt-length")
class PromptLength(Predictor):
    """Least-squares line from prompt length to output length, clipped at 0."""

    info = PredictorInfo(name="prompt-length", version="1", family="reference",
                         reference="linear regression on prompt_tokens",
                         requires=("prompt_tokens",))

    def __init__(self, seed: int = 42):
        self.seed = seed

    def fit(self, table, y, eval_set=None) -> "PromptLength":
        from sklearn.linear_model import LinearRegression

        x = _prompt_tokens(table)
        self.model_ = LinearRegression().fit(x, np.asarray(y, np.float64))
        return self

    def predict(self, table) -> np.ndarray:
        self.check_fitted()
        return np.maximum(self.model_.predict(_prompt_tokens(table)), 0.0).astype(np.float64)


def _prompt_tokens(table) -> np.ndarray:
    return np.asarray(table["prompt_tokens"], np.float64)[:, None]  # (N, 1)


@PREDICTORS.register("group-median-oracle")
class GroupMedianOracle(Predictor):
    """Oracle: each row's own group's median TRUE length, read at predict time. Never ranked.

    In `rl` one prompt has many samples of different lengths; any predictor that sees only the
    prompt gives them one value, and the group median is the best such value for MAE. It bounds
    what a static predictor can reach; it is not a predictor a scheduler could run.
    """

    info = PredictorInfo(name="group-median-oracle", version="1", family="reference",
                         reference="static floor of the rl scenario (docs/DESIGN.md section 7)",
                         requires=("group_id", "output_tokens"), ranked=False)

    def __init__(self, seed: int = 42):
        self.seed = seed

    def fit(self, table, y, eval_set=None) -> "GroupMedianOracle":
        self.n_train_ = len(np.asarray(y))  # nothing to learn; marks the instance fitted
        return self

    def predict(self, table) -> np.ndarray:
        self.check_fitted()
        groups = np.asarray(table["group_id"])
        lengths = np.asarray(table["output_tokens"], np.float64)
        names, inverse = np.unique(groups, return_inverse=True)
        medians = np.array([np.median(lengths[inverse == g]) for g in range(len(names))])
        return medians[inverse.ravel()] if len(lengths) else np.zeros(0)
