"""S3's output-length predictor (Jin et al. 2023, "S3: Increasing GPU Utilization during Generative
Inference for Higher Throughput"): a fine-tuned DistilBERT classifying the prompt into 10 equal-width
length buckets from 0 to the maximum length; a bucket predicts its midpoint.

The paper's maximum is the model's generation limit; here it is the train maximum. The head is the
one DistilBertForSequenceClassification adds (Linear(h,h) -> ReLU -> Dropout -> Linear(h,10)); lr,
epochs and batch size are not fixed by the paper: the defaults are HF Trainer's lr 5e-5 and 3 epochs,
with batch 16 as for SSJF. `class_weight="balanced"` (not the paper's) weighs the cross-entropy by
inverse bucket frequency: with the paper's plain loss and argmax, S3 predicted the majority bucket
for every prompt on v0.1.0's cot (src/forelen/cards/predictors/s3.md). The default stays the paper's.
"""

from __future__ import annotations

import numpy as np

from forelen.predictors import PREDICTORS, PredictorInfo
from forelen.predictors._text import DEFAULT_ENCODER, TextPredictor, class_weights, cross_entropy

PAPER = ("Jin et al. 2023, S3: Increasing GPU Utilization during Generative Inference for Higher "
         "Throughput")


@PREDICTORS.register("s3")
class S3(TextPredictor):
    """10-bucket classifier over [0, train max]; cross-entropy; bucket -> midpoint."""

    info = PredictorInfo(name="s3", version="1", family="text-proxy", reference=PAPER,
                         requires=("prompt",))

    def __init__(self, encoder: str = DEFAULT_ENCODER, max_length: int = 512,
                 truncation_side: str = "left", pooling: str = "auto", n_buckets: int = 10,
                 epochs: int = 3, batch_size: int = 16, lr: float = 5e-5,
                 weight_decay: float = 0.01, patience: int | None = None, seed: int = 42,
                 precision: str = "auto", group_by_length: bool = True,
                 attention_dropout: float | None = 0.0, class_weight: str | None = None):
        self.encoder = encoder
        self.max_length = max_length
        self.truncation_side = truncation_side
        self.pooling = pooling
        self.n_buckets = n_buckets
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.seed = seed
        self.precision = precision
        self.group_by_length = group_by_length
        self.attention_dropout = attention_dropout
        self.class_weight = class_weight

    def _setup(self, y: np.ndarray):
        import torch

        self.width_ = float(y.max()) / self.n_buckets if y.max() > 0 else 1.0
        self.values_ = (np.arange(self.n_buckets) + 0.5) * self.width_
        cls = self._bucket(y)
        self.class_weights_ = class_weights(cls, self.n_buckets, self.class_weight)
        return torch.from_numpy(cls).long()

    def _bucket(self, y: np.ndarray) -> np.ndarray:
        return np.clip((y // self.width_).astype(np.int64), 0, self.n_buckets - 1)

    def _head(self, h: int):
        import torch.nn as nn

        return nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Dropout(0.1),
                             nn.Linear(h, self.n_buckets))

    def _loss(self, out, t):
        return cross_entropy(out, t, self.class_weights_)

    def _decode(self, out: np.ndarray) -> np.ndarray:
        return self.values_[np.argmax(out, axis=1)]

    def _class_edges(self) -> np.ndarray:
        """The 10 equal-width buckets over [0, train max]."""
        return np.arange(self.n_buckets + 1) * self.width_
