"""LTR's classification variant (Fu et al. 2024, "Efficient LLM Scheduling by Learning to Rank"):
the prompt classified into length buckets of width g (class = min(length, 8192) // g, the paper's
cap), cross-entropy; a class predicts its centre. The paper's proxy is OPT-125m (last-token
pooling, which `pooling="auto"` picks for decoders); the default encoder is the offline MiniLM.
lr, epochs and batch size follow ltr.py's defaults.

On censored, imbalanced targets the paper's plain cross-entropy + argmax predicts one class (the
budget's) for every prompt (v0.1.0 cot and rl); `class_weight="balanced"` with `g=100` avoids it
(src/forelen/cards/predictors/ltr-c.md). The default stays the paper's.
"""

from __future__ import annotations

import numpy as np

from forelen.predictors import PREDICTORS, PredictorInfo
from forelen.predictors._text import DEFAULT_ENCODER, TextPredictor, class_weights, cross_entropy

PAPER = "Fu et al. 2024, Efficient LLM Scheduling by Learning to Rank"
CAP = 8192  # the paper's maximum length
PRIOR_FLOOR = 1e-3  # pseudo-count of a class never seen in train, for the head's starting bias


class LTRBase(TextPredictor):
    """What LTR-C and its ranking variant LTR share: the encoder, its fine-tuning schedule and
    the text it reads."""

    def __init__(self, encoder: str = DEFAULT_ENCODER, max_length: int = 512,
                 truncation_side: str = "left", pooling: str = "auto", g: int = 10,
                 epochs: int = 5, batch_size: int = 32, lr: float = 2e-5,
                 weight_decay: float = 0.01, patience: int | None = None, seed: int = 42,
                 precision: str = "auto", group_by_length: bool = True,
                 attention_dropout: float | None = 0.0):
        self.encoder = encoder
        self.max_length = max_length
        self.truncation_side = truncation_side
        self.pooling = pooling
        self.g = g
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.seed = seed
        self.precision = precision
        self.group_by_length = group_by_length
        self.attention_dropout = attention_dropout

    def _classes(self, y: np.ndarray) -> np.ndarray:
        return (np.minimum(y, CAP) // self.g).astype(np.int64)


@PREDICTORS.register("ltr-c")
class LTRClassifier(LTRBase):
    """Classes of width g up to 8192 tokens; cross-entropy; class -> centre c*g + g/2."""

    info = PredictorInfo(name="ltr-c", version="1", family="text-proxy", reference=PAPER,
                         requires=("prompt",))

    def __init__(self, encoder: str = DEFAULT_ENCODER, max_length: int = 512,
                 truncation_side: str = "left", pooling: str = "auto", g: int = 10,
                 epochs: int = 5, batch_size: int = 32, lr: float = 2e-5,
                 weight_decay: float = 0.01, patience: int | None = None, seed: int = 42,
                 precision: str = "auto", group_by_length: bool = True,
                 attention_dropout: float | None = 0.0, class_weight: str | None = None):
        super().__init__(encoder=encoder, max_length=max_length, truncation_side=truncation_side,
                         pooling=pooling, g=g, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, patience=patience, seed=seed,
                         precision=precision, group_by_length=group_by_length,
                         attention_dropout=attention_dropout)
        self.class_weight = class_weight  # None: the paper's plain cross-entropy

    def _setup(self, y: np.ndarray):
        import torch

        self.n_classes_ = CAP // self.g + 1
        self.values_ = np.arange(self.n_classes_) * float(self.g) + self.g / 2
        cls = self._classes(y)
        self.class_counts_ = np.bincount(cls, minlength=self.n_classes_)
        self.class_weights_ = class_weights(cls, self.n_classes_, self.class_weight)
        return torch.from_numpy(cls).long()

    def _head(self, h: int):
        """Linear(h, classes) whose bias starts at the log train frequency of each class (our choice:
        with 820 classes and a small train set, a zero bias makes an untrained head's argmax a random
        class, on average ~4,000 tokens; the prior start predicts the commonest class instead)."""
        import torch
        import torch.nn as nn

        head = nn.Linear(h, self.n_classes_)
        counts = self.class_counts_.astype(np.float64)
        if self.class_weights_ is not None:  # the prior the weighted loss fits: uniform over seen
            counts = counts * self.class_weights_
        counts = counts + PRIOR_FLOOR
        prior = counts / counts.sum()
        with torch.no_grad():
            head.bias.copy_(torch.from_numpy(np.log(prior)).float())
        return head

    def _loss(self, out, t):
        return cross_entropy(out, t, self.class_weights_)

    def _decode(self, out: np.ndarray) -> np.ndarray:
        """Argmax class -> its centre, as the LTR code decodes (`outputs.argmax`). Argmax predicts
        the mode of the bucket distribution: where many train rows stop at the budget, the cap's
        bucket is the mode, and a head that learnt little predicts it for every prompt. The share
        of predictions in the most frequent class is reported (`modal_class_rate`) so a record
        shows when that happened."""
        cls = np.argmax(out, axis=1)
        if len(cls):
            self.modal_class_rate_ = float(np.bincount(cls).max() / len(cls))
        return self.values_[cls]

    def _class_edges(self) -> np.ndarray:
        """Classes of width g from 0; the last holds the lengths capped at 8192."""
        return np.arange(self.n_classes_ + 1) * float(self.g)
