"""The soft-label distribution regression head shared by EGTP, the pooling ablations and PLP.

Paper (ICLR 2026, section 3): K = 20 length bins; soft target p_j proportional to exp(-|j - i|)
around the true bin i; prediction = sum_j p_hat_j * c_j over bin centres c_j; loss =
0.95 * CE(p, p_hat) + 0.05 * MSE(y, y_hat). Head: Linear(d, d/2) -> LayerNorm -> ReLU ->
Dropout(0.1) -> Linear(d/2, K). Training: AdamW, lr 2e-5, up to 10 epochs, batch 16, seed 42.

Where the paper is silent, the choice is a parameter recorded with every result: the bin layout
(default equal-width between the 1% and 99% train quantiles, end bins absorbing outliers), the scale
of the MSE term (targets divided by the train standard deviation, so that the 0.05 weight is not
swamped by squared token counts), input standardisation, the output bias (initialised to the log of
the mean soft target, so an untrained head predicts about the train mean rather than the mean of the
centres), and early stopping on validation MAE.

Bin centres (`centres`): the paper says "bin centre" without defining it for open-ended or skewed
bins. The default, "mean", is the mean train target inside each bin (the end bins absorb the tails,
whose midpoints would be arbitrary); "midpoint" is the literal middle of each bin, the outer bins
bounded by the train minimum and maximum. Either is recorded in the head's config.

Decoding (`decode`): the paper decodes the expectation sum_j p_hat_j * c_j ("mean", the default),
which minimises squared error; on a two-humped target it lands between the humps. "median" is
where the predicted CDF crosses 0.5 (the point that minimises expected absolute error, the
leaderboard's primary metric), "quantile:Q" where it crosses Q; both are read from
`BinnedDistribution.quantile` (uniform within a bin), the same distribution the metrics score.
Early stopping scores the configured decoding, so the kept epoch is the one that is scored.

Censoring (`censoring`): a response cut at max_new_tokens is a lower bound. "as-exact" (the
paper's, default) trains on it as if the cap were its length. "survival" replaces that row's
soft-label cross-entropy by the right-censored likelihood of a discrete-time survival model
(Tutz & Schmid, "Modeling Discrete Time-to-Event Data", Springer Series in Statistics, 2016):
for a row censored at c, in bin b(c),

    loss_i = -log S_i(b(c)),   S_i(b) = sum_{j >= b} p_hat_ij,

the predicted probability that the length reaches the cap's bin or beyond. Its MSE term treats
the cap as a lower bound, max(0, c - y_hat)^2 (an over-prediction of a censored row is not an
error), and validation scores it the same way (a censored row counts only under-prediction, as
the censoring-aware MAE of docs/DESIGN.md section 7).
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np

from forelen.distribution import BinnedDistribution
from forelen.errors import ForelenError

LAYOUTS = ("uniform", "quantile", "log")
CENSORING = ("as-exact", "survival")


@dataclass(frozen=True)
class TrainPreset:
    """Optimisation settings; `paper` is the authors', `small` suits the few-thousand-row demo data."""

    lr: float = 2e-5
    epochs: int = 10
    batch_size: int = 16
    weight_decay: float = 0.01
    patience: int = 3  # epochs without validation improvement before stopping
    max_steps: int | None = None  # caps epochs x batches, so large tables do not train for hours


PRESETS = {
    "paper": TrainPreset(),
    # The paper's lr and epoch budget assume ~10^4-10^5 training rows; on a few hundred rows they
    # barely move the head off its initialisation. Larger steps and more epochs, same head and loss.
    "small": TrainPreset(lr=1e-3, epochs=200, batch_size=16, weight_decay=0.01, patience=20,
                         max_steps=3000),
}
# Evidence for the default (test MAE in tokens, early stopping on 300 validation rows; the synthetic
# task of tests/test_egtp.py, length signal in the high-entropy tokens; constant median ~110-116):
#   d=32,  600 train:   egtp paper 109.9, small 48.8;  mean pooling paper 111.0, small 98.6
#   d=32,  3000 train:  egtp paper 110.2, small 46.1;  mean pooling paper 116.2, small 108.3
#   d=32,  20000 train: egtp paper 65.1 (it starts to learn only at this scale)
#   d=576, 600 train:   egtp paper 103.8, small 62.5;  d=576, 3000 train: paper 74.1, small 51.8
#   real, a 16-row smollm2-135m rl build (8 train rows, lengths mostly capped at 48; constant
#   median 0.5): egtp paper 4.1-4.5, small 1.1-2.5 over layers 10/30. Too small to rank anything.
#   demo/forelen long (partial build: fit on 7 train rows, scored on 2 validation rows): egtp paper
#   67-79, small 117-142; paper stays near the prior (train mean 139), which 2 rows happen to favour.
# `paper` underfits every data set of demo size, so predictors default to `small`; `paper` stays
# one parameter away (preset="paper") for paper-scale splits.
DEFAULT_PRESET = "small"


def bin_edges(y: np.ndarray, k: int, layout: str = "uniform") -> np.ndarray:
    """K+1 edges; the outer edges are -inf/+inf so the end bins absorb outliers."""
    y = np.asarray(y, dtype=np.float64)
    if layout == "uniform":
        lo, hi = np.percentile(y, [1, 99])
        inner = np.linspace(lo, hi, k + 1)[1:-1]
    elif layout == "quantile":
        inner = np.percentile(y, np.linspace(0, 100, k + 1)[1:-1])
    elif layout == "log":
        lo, hi = np.percentile(np.log1p(np.maximum(y, 0)), [1, 99])
        inner = np.expm1(np.linspace(lo, hi, k + 1)[1:-1])
    else:
        raise ValueError(f"unknown bin layout {layout!r}; one of {LAYOUTS}")
    inner = np.maximum.accumulate(inner)  # ties in quantiles keep the edges ordered
    return np.concatenate([[-np.inf], inner, [np.inf]])


CENTRES = ("mean", "midpoint")


def bin_centres(y: np.ndarray, edges: np.ndarray, kind: str = "mean") -> np.ndarray:
    """Centre of each bin: "mean", the mean train target inside it (the bin midpoint when it is
    empty); or "midpoint", the middle of the bin (outer bins bounded by the train min and max)."""
    if kind not in CENTRES:
        raise ValueError(f"unknown bin centres {kind!r}; one of {CENTRES}")
    y = np.asarray(y, dtype=np.float64)
    idx = assign_bins(y, edges)
    finite = edges[1:-1]
    k = len(edges) - 1
    mids = np.empty(k)
    for j in range(k):
        lo = finite[j - 1] if j > 0 else (finite[0] if len(finite) else y.min())
        hi = finite[j] if j < k - 1 else (finite[-1] if len(finite) else y.max())
        if kind == "midpoint":
            lo = finite[j - 1] if j > 0 else min(y.min(), finite[0] if len(finite) else y.min())
            hi = finite[j] if j < k - 1 else max(y.max(), finite[-1] if len(finite) else y.max())
        mids[j] = y[idx == j].mean() if kind == "mean" and np.any(idx == j) else (lo + hi) / 2
    return mids


def closed_edges(edges: np.ndarray, y: np.ndarray) -> np.ndarray:
    """`edges` with the open outer edges (-inf/+inf) closed at the train minimum and maximum (our
    choice: the end bins absorb the tails, and the train range is where lengths were seen; lengths
    are >= 0, so the minimum is, and under censoring the maximum is the cap)."""
    y = np.asarray(y, dtype=np.float64)
    finite = edges[1:-1]
    lo = min(y.min(), finite[0]) if len(finite) else y.min()
    hi = max(y.max(), finite[-1]) if len(finite) else y.max()
    return np.concatenate([[lo], finite, [hi]])


def parse_decode(decode) -> float | None:
    """None for "mean" (the expectation), else the quantile decoded: 0.5 for "median", Q for
    "quantile:Q"; anything else is one ForelenError line."""
    if decode == "mean":
        return None
    if decode == "median":
        return 0.5
    if isinstance(decode, str) and decode.startswith("quantile:"):
        try:
            q = float(decode.split(":", 1)[1])
        except ValueError:
            q = float("nan")
        if 0 < q < 1:
            return q
    raise ForelenError(f"decode must be mean, median or quantile:Q with 0<Q<1, got {decode!r}")


def check_censoring(censoring) -> str:
    if censoring not in CENSORING:
        raise ForelenError(f"censoring must be as-exact or survival, got {censoring!r}")
    return censoring


def is_censored(table, n: int, censoring: str) -> np.ndarray | None:
    """(n,) bool, rows cut at the cap (finish_reason == "length"), read only under "survival"."""
    if check_censoring(censoring) == "as-exact":
        return None
    return np.asarray(table["finish_reason"]).astype(str)[:n] == "length"


def assign_bins(y: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.clip(np.searchsorted(edges, y, side="right") - 1, 0, len(edges) - 2)


def soft_labels(bins: np.ndarray, k: int) -> np.ndarray:
    """(N,) true bins -> (N, K) soft targets proportional to exp(-|j - i|), rows summing to 1."""
    j = np.arange(k)[None, :]
    w = np.exp(-np.abs(j - np.asarray(bins)[:, None]).astype(np.float64))
    return w / w.sum(axis=1, keepdims=True)


def make_mlp(d: int, k: int, dropout: float = 0.1):
    import torch.nn as nn

    h = max(1, d // 2)
    return nn.Sequential(nn.Linear(d, h), nn.LayerNorm(h), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(h, k))


def train_preset(name: str) -> TrainPreset:
    if name not in PRESETS:
        raise ForelenError(f"unknown training preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


def _moments(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std; a feature constant on train gets std 1, so test values stay finite."""
    mu, sd = X.mean(0, dtype=np.float64), X.std(0, dtype=np.float64)
    sd[sd < 1e-6] = 1.0
    return mu.astype(np.float32), sd.astype(np.float32)


@contextmanager
def _one_thread():
    """Mini-batch steps this small lose more to thread hand-offs than they gain: 1.0 ms/step on one
    thread vs 52 ms/step on two busy cores (d=32, batch 16), so training runs single-threaded."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def epochs_for(cfg: TrainPreset, n_rows: int) -> int:
    """The preset's epochs, fewer where `max_steps` would be passed first."""
    if cfg.max_steps is None:
        return cfg.epochs
    batches = max(1, n_rows // cfg.batch_size)
    return max(1, min(cfg.epochs, -(-cfg.max_steps // batches)))


class SoftLabelHead:
    """Fit/predict the head on a float matrix X (N, d) and targets y (N,), in tokens."""

    def __init__(self, n_bins: int = 20, layout: str = "uniform", ce_weight: float = 0.95,
                 preset: str = "paper", seed: int = 42, standardize: bool = True,
                 dropout: float = 0.1, centres: str = "mean", decode: str = "mean",
                 censoring: str = "as-exact"):
        self.n_bins, self.layout, self.ce_weight, self.centres = n_bins, layout, ce_weight, centres
        self.preset, self.seed, self.standardize, self.dropout = preset, seed, standardize, dropout
        self.decode, self.censoring = decode, censoring

    def fit(self, X, y, X_val=None, y_val=None, censored=None,
            censored_val=None) -> "SoftLabelHead":
        """Train on (X, y); keep the epoch with the lowest validation MAE (train loss without one).
        `censored` (N,) bool marks rows cut at the cap; read only under censoring="survival"."""
        import torch

        cfg = train_preset(self.preset)
        self.q_ = parse_decode(self.decode)
        survival = check_censoring(self.censoring) == "survival"
        X, y = np.asarray(X, np.float32), np.asarray(y, np.float64)
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.edges_ = bin_edges(y, self.n_bins, self.layout)
        self.closed_edges_ = closed_edges(self.edges_, y)
        self.centres_ = bin_centres(y, self.edges_, self.centres)
        ones = np.ones(X.shape[1], np.float32)
        self.mu_, self.sd_ = _moments(X) if self.standardize else (0 * ones, ones)
        self.scale_ = float(np.std(y)) or 1.0
        self.net_ = make_mlp(X.shape[1], self.n_bins, self.dropout)
        opt = torch.optim.AdamW(self.net_.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        data = (torch.from_numpy(self._norm(X)),
                torch.from_numpy(soft_labels(assign_bins(y, self.edges_), self.n_bins)).float(),
                torch.from_numpy(y / self.scale_).float())
        if survival:
            cens = np.zeros(len(y), bool) if censored is None else np.asarray(censored, bool)
            data = data + (torch.from_numpy(cens), torch.from_numpy(assign_bins(y, self.edges_)))
            self.censored_rate_ = float(cens.mean()) if len(cens) else 0.0
        with torch.no_grad():  # start from the CE-optimal constant, not the mean of the centres
            self.net_[-1].bias.copy_(data[1].mean(0).log())
        best, best_state, stale, self.history_ = np.inf, None, 0, []
        with _one_thread():
            for _epoch in range(epochs_for(cfg, len(y))):
                loss = self._epoch(opt, data, rng, cfg.batch_size)
                score = (self._val_mae(X_val, y_val, censored_val if survival else None)
                         if X_val is not None else loss)
                self.history_.append(score)
                if score < best - 1e-9:
                    best, stale = score, 0
                    best_state = {k: v.detach().clone() for k, v in self.net_.state_dict().items()}
                elif (stale := stale + 1) >= cfg.patience:
                    break
        if best_state is not None:  # None only if every score was NaN
            self.net_.load_state_dict(best_state)
        self.net_.eval()
        self.epochs_run_ = len(self.history_)
        return self

    def _epoch(self, opt, data, rng, batch_size: int) -> float:
        """One pass in shuffled mini-batches; returns the mean training loss."""
        import torch

        xs, targets, ys = data[:3]
        centres = torch.from_numpy(self.centres_ / self.scale_).float()  # (K,)
        self.net_.train()
        losses = []
        for batch in np.array_split(rng.permutation(len(ys)), max(1, len(ys) // batch_size)):
            batch = torch.from_numpy(batch)
            logp = torch.log_softmax(self.net_(xs[batch]), dim=-1)  # (B, K)
            if len(data) > 3:
                cens, bins = data[3][batch], data[4][batch]
                ce, mse = self._survival_terms(logp, centres, ys[batch], cens, bins, targets[batch])
            else:
                ce = -(targets[batch] * logp).sum(-1).mean()
                mse = (((logp.exp() * centres).sum(-1) - ys[batch]) ** 2).mean()
            loss = self.ce_weight * ce + (1 - self.ce_weight) * mse
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return float(np.mean(losses))

    @staticmethod
    def _survival_terms(logp, centres, ys, cens, bins, targets):
        """(CE, MSE) with censored rows as right-censored: -log sum_{j >= b(c)} p_hat_j and
        max(0, c - y_hat)^2; complete rows keep the soft-label CE and the squared error."""
        import torch

        k = logp.shape[1]
        at_or_above = torch.arange(k)[None, :] >= bins[:, None]  # (B, K)
        masked = torch.where(at_or_above, logp, torch.full_like(logp, float("-inf")))
        log_surv = masked.logsumexp(-1)  # (B,) log S(b(c))
        ce = torch.where(cens, -log_surv, -(targets * logp).sum(-1)).mean()
        err = (logp.exp() * centres).sum(-1) - ys
        mse = torch.where(cens, torch.clamp(-err, min=0), err).pow(2).mean()
        return ce, mse

    def _norm(self, X) -> np.ndarray:
        return ((np.asarray(X, np.float32) - self.mu_) / self.sd_).astype(np.float32)

    def _val_mae(self, X_val, y_val, censored=None) -> float:
        """MAE of the configured decoding; a censored row (survival only) counts only
        under-prediction."""
        err = self.predict(X_val) - np.asarray(y_val, np.float64)
        if censored is not None:
            err = np.where(np.asarray(censored, bool), np.minimum(err, 0.0), err)
        return float(np.mean(np.abs(err)))

    def predict_proba(self, X) -> np.ndarray:
        import torch

        self.net_.eval()
        with torch.inference_mode():
            return torch.softmax(self.net_(torch.from_numpy(self._norm(X))), -1).double().numpy()

    def distribution(self, X):
        """p_hat over the bins; the open end bins closed at the train min and max."""
        return BinnedDistribution(self.closed_edges_, self.predict_proba(X))

    def predict(self, X) -> np.ndarray:
        """The configured decoding: the expected centre under p_hat ("mean", clipped so float
        rounding never leaves the centres' range), else the distribution's quantile."""
        q = getattr(self, "q_", None)
        if q is not None:
            return self.distribution(X).quantile(q)
        pred = self.predict_proba(X) @ self.centres_
        return np.clip(pred, self.centres_.min(), self.centres_.max())

    def params(self) -> dict:
        return {k: getattr(self, k) for k in inspect.signature(SoftLabelHead.__init__).parameters
                if k != "self"}

    def get_state(self) -> dict:
        """Hyper-parameters, learned arrays and the network's weights, for a saved predictor."""
        return {"params": self.params(), "net": self.net_.state_dict(),
                "state": {k: v for k, v in vars(self).items() if k.endswith("_") and k != "net_"}}

    @classmethod
    def from_state(cls, saved: dict) -> "SoftLabelHead":
        """The head `get_state` describes: the network rebuilt at its input width (that of the
        standardisation moments) and given the saved weights, in eval mode."""
        head = cls(**saved["params"])
        vars(head).update(saved["state"])
        head.net_ = make_mlp(len(head.mu_), head.n_bins, head.dropout)
        head.net_.load_state_dict(saved["net"])
        head.net_.eval()
        return head

    def config(self) -> dict:
        return {"n_bins": self.n_bins, "layout": self.layout, "ce_weight": self.ce_weight,
                "centres": self.centres, "decode": self.decode, "censoring": self.censoring,
                "distribution_edges": "outer bins closed at the train min and max",
                **({"censored_loss": "-log sum_{j>=b(cap)} p_j (Tutz & Schmid 2016)",
                    "censored_mse": "max(0, cap - y_hat)^2",
                    "censored_val": "under-prediction only",
                    "censored_rate": getattr(self, "censored_rate_", None)}
                   if self.censoring == "survival" else {}),
                "preset": self.preset, "train": asdict(train_preset(self.preset)),
                "seed": self.seed, "standardize": self.standardize, "dropout": self.dropout,
                "mse_scale": "train std of y", "output_bias_init": "log of mean soft label",
                "epochs_run": getattr(self, "epochs_run_", None)}


class HeadState:
    """`get_state`/`set_state` of a predictor whose `head_` is a SoftLabelHead (EGTP, the pooling
    ablations, PLP): the head goes as its parameters, arrays and weights."""

    def get_state(self, folder) -> dict:
        state = super().get_state(folder)
        state["head_"] = state["head_"].get_state()
        return state

    def set_state(self, state: dict, folder):
        return super().set_state(dict(state, head_=SoftLabelHead.from_state(state["head_"])),
                                 folder)
