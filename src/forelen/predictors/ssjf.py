"""SSJF's proxy predictors (Qiu et al. 2024, "Efficient Interactive LLM Serving with Proxy
Model-based Sequence Length Prediction"): a fine-tuned BERT on the prompt, regression or 5-class.

Paper recipe: [CLS] -> Linear(h,128) -> ReLU -> Linear(128,128) -> ReLU -> Linear(128,out);
6 epochs, batch 16, AdamW lr 1e-5 with linear decay; after epoch 3 the encoder is frozen and the head
trains on at lr 1e-4. The encoder defaults to the offline MiniLM stand-in (src/forelen/predictors/_text.py).
"""

from __future__ import annotations

import numpy as np

from forelen.errors import ForelenError
from forelen.predictors import PREDICTORS, PredictorInfo
from forelen.predictors._text import DEFAULT_ENCODER, TextPredictor, classify, cross_entropy

PAPER = ("Qiu et al. 2024, Efficient Interactive LLM Serving with Proxy Model-based Sequence "
         "Length Prediction (SSJF)")
FIXED_THRESHOLDS = (42.0, 141.0, 294.0, 503.0)  # the paper's first-round classes [0,42), ..., [503,inf)
PERCENTILES = (25, 50, 75, 99)
THRESHOLDS = ("percentile", "fixed")


def ssjf_head(h: int, k: int):
    import torch.nn as nn

    return nn.Sequential(nn.Linear(h, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                         nn.Linear(128, k))


class _SSJF(TextPredictor):
    def __init__(self, encoder: str = DEFAULT_ENCODER, max_length: int = 512,
                 truncation_side: str = "left", pooling: str = "auto", epochs: int = 6,
                 batch_size: int = 16, lr: float = 1e-5, freeze_after: int | None = 3,
                 lr_after: float = 1e-4, weight_decay: float = 0.01, patience: int | None = None,
                 seed: int = 42, precision: str = "auto", group_by_length: bool = True,
                 attention_dropout: float | None = 0.0):
        self.encoder = encoder
        self.max_length = max_length
        self.truncation_side = truncation_side
        self.pooling = pooling
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.freeze_after = freeze_after
        self.lr_after = lr_after
        self.weight_decay = weight_decay
        self.patience = patience
        self.seed = seed
        self.precision = precision
        self.group_by_length = group_by_length
        self.attention_dropout = attention_dropout


@PREDICTORS.register("ssjf-reg")
class SSJFRegression(_SSJF):
    """Regression on token counts with MSE. Targets are standardised with the train mean and std
    (an affine change, so the MSE minimiser is unchanged) to keep lr 1e-5 in a sensible range."""

    info = PredictorInfo(name="ssjf-reg", version="1", family="text-proxy", reference=PAPER,
                         requires=("prompt",))

    def _setup(self, y: np.ndarray):
        import torch

        self.mean_, self.scale_ = float(y.mean()), float(y.std()) or 1.0
        return torch.from_numpy((y - self.mean_) / self.scale_).float()

    def _head(self, h: int):
        return ssjf_head(h, 1)

    def _loss(self, out, t):
        return ((out[:, 0] - t) ** 2).mean()

    def _decode(self, out: np.ndarray) -> np.ndarray:
        return np.maximum(out[:, 0] * self.scale_ + self.mean_, 0.0)


@PREDICTORS.register("ssjf-mc")
class SSJFMultiClass(_SSJF):
    """5 length classes, inverse-frequency class-weighted NLL; a class predicts the median train
    length inside it. `thresholds`: "percentile" (p25/p50/p75/p99 of train lengths, default: the
    paper's fixed bounds suit its model's lengths, not every config) or "fixed" (the paper's)."""

    info = PredictorInfo(name="ssjf-mc", version="1", family="text-proxy", reference=PAPER,
                         requires=("prompt",))

    def __init__(self, encoder: str = DEFAULT_ENCODER, max_length: int = 512,
                 truncation_side: str = "left", pooling: str = "auto", epochs: int = 6,
                 batch_size: int = 16, lr: float = 1e-5, freeze_after: int | None = 3,
                 lr_after: float = 1e-4, weight_decay: float = 0.01, patience: int | None = None,
                 seed: int = 42, precision: str = "auto", group_by_length: bool = True,
                 attention_dropout: float | None = 0.0,
                 thresholds: str = "percentile"):
        super().__init__(encoder=encoder, max_length=max_length, truncation_side=truncation_side,
                         pooling=pooling, epochs=epochs, batch_size=batch_size, lr=lr,
                         freeze_after=freeze_after, lr_after=lr_after, weight_decay=weight_decay,
                         patience=patience, seed=seed, precision=precision,
                         group_by_length=group_by_length,
                         attention_dropout=attention_dropout)
        self.thresholds = thresholds

    def _setup(self, y: np.ndarray):
        import torch

        if self.thresholds not in THRESHOLDS:
            raise ForelenError(f"thresholds must be one of {THRESHOLDS}, not {self.thresholds!r}")
        edges = (np.percentile(y, PERCENTILES) if self.thresholds == "percentile"
                 else np.array(FIXED_THRESHOLDS))
        self.edges_ = np.maximum.accumulate(edges)
        # as a distribution the classes span [0, first threshold), ..., [last, train max]
        self.dist_edges_ = np.concatenate([[0.0], self.edges_, [max(y.max(), self.edges_[-1])]])
        cls = classify(y, self.edges_)
        counts = np.bincount(cls, minlength=len(self.edges_) + 1).astype(np.float64)
        # Inverse frequency, normalised so a balanced split has weight 1; empty classes weigh 0.
        w = np.where(counts > 0, len(y) / (len(counts) * np.maximum(counts, 1)), 0.0)
        self.class_weights_ = w
        self.values_ = self._class_values(y, cls)
        return torch.from_numpy(cls).long()

    def _class_values(self, y: np.ndarray, cls: np.ndarray) -> np.ndarray:
        """Median train length per class; an empty class takes its nearest finite threshold."""
        bounds = np.concatenate([[0.0], self.edges_, [self.edges_[-1]]])
        return np.array([np.median(y[cls == j]) if np.any(cls == j)
                         else (bounds[j] + bounds[j + 1]) / 2 for j in range(len(bounds) - 1)])

    def _head(self, h: int):
        return ssjf_head(h, len(self.edges_) + 1)

    def _loss(self, out, t):
        return cross_entropy(out, t, self.class_weights_)

    def _decode(self, out: np.ndarray) -> np.ndarray:
        """The argmax class, as the paper schedules by the predicted class: no other decoding."""
        return self.values_[np.argmax(out, axis=1)]

    def _class_edges(self) -> np.ndarray:
        """The 5 classes' length ranges, the open last class closed at the train maximum."""
        return self.dist_edges_
