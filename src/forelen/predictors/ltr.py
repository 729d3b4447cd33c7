"""LTR's ranking variant (Fu et al. 2024, "Efficient LLM Scheduling by Learning to Rank"): a score
head on the prompt trained with ListMLE over lists of 32 prompts (one mini-batch is one list);
lengths within the same bucket of width g are ties, ordered at random each step. Outputs a score
(higher = longer), so only ranking metrics apply. Defaults: lr 2e-5, 5 epochs (our choice where the
paper's code is not reproduced here); OPT-125m originally, the offline MiniLM by default.
"""

from __future__ import annotations

import numpy as np

from forelen.predictors import PREDICTORS, PredictorInfo
from forelen.predictors._text import DEFAULT_ENCODER, spearman
from forelen.predictors.ltr_c import PAPER, LTRBase


def list_mle(scores, labels):
    """ListMLE (Xia et al. 2008) of one list: -log P(permutation sorted by label, descending), ties
    broken at random (torch's seeded generator), averaged over the list's positions."""
    import torch

    key = labels.double() + 0.5 * torch.rand(labels.shape, dtype=torch.float64)
    s = scores[torch.argsort(key, descending=True)]
    tail = torch.logcumsumexp(s.flip(0), dim=0).flip(0)  # log sum_{j >= i} exp(s_j)
    return (tail - s).mean()


@PREDICTORS.register("ltr")
class LTRRank(LTRBase):
    """ListMLE ranking score; `batch_size` is the list size (32 in the paper). Batches are random
    (`group_by_length=False`): a list of prompts of similar length carries little ranking signal
    where prompt length and output length go together."""

    info = PredictorInfo(name="ltr", version="1", family="text-proxy", reference=PAPER,
                         requires=("prompt",), outputs="ranking")

    def __init__(self, encoder: str = DEFAULT_ENCODER, max_length: int = 512,
                 truncation_side: str = "left", pooling: str = "auto", g: int = 10,
                 epochs: int = 5, batch_size: int = 32, lr: float = 2e-5,
                 weight_decay: float = 0.01, patience: int | None = None, seed: int = 42,
                 precision: str = "auto", group_by_length: bool = False,
                 attention_dropout: float | None = 0.0):
        super().__init__(encoder=encoder, max_length=max_length, truncation_side=truncation_side,
                         pooling=pooling, g=g, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, patience=patience, seed=seed,
                         precision=precision, group_by_length=group_by_length,
                         attention_dropout=attention_dropout)

    def _setup(self, y: np.ndarray):
        import torch

        self.n_train_ = len(y)
        return torch.from_numpy(self._classes(y)).long()

    def _head(self, h: int):
        import torch.nn as nn

        return nn.Linear(h, 1)

    def _loss(self, out, t):
        return list_mle(out[:, 0], t)

    def _decode(self, out: np.ndarray) -> np.ndarray:
        return out[:, 0]

    def _score(self, pred: np.ndarray, y: np.ndarray) -> float:
        """Validation score, lower is better: minus Spearman's rho."""
        return -spearman(pred, y)
