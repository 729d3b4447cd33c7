"""The slot KV cache and the attention kernels of the continuous `hf` engine.

The cache is handed to the model's own attention modules as their `cache` (transformers calls
`cache.update(k, v, layer_idx, ...)` and attends over what it returns), and the attention function
is registered in transformers' `AttentionInterface`, so the model's projections, rotary embeddings and
norms run unchanged; only where keys live and how one query token attends over them is ours.

Decode attention kernels (`attention=`), one generated token per slot over the slots' own caches:
- `grouped`: the query heads that share a KV head are one (G, d) matrix, so one batched matmul per
  layer attends over the cache as it lies: no `repeat_kv` copy, no concatenation.
- `sdpa`: `F.scaled_dot_product_attention(..., enable_gqa=True)` over the same views.
- `eager`: transformers' eager recipe (`repeat_kv`, then matmuls), for comparison.
`benchmarks/bench_build.py --attention-sweep`, one decode step over SmolLM2-135M's 30 layers, 128
rows, 722-token context, bf16, 2 cores of an AMX Xeon: sdpa 151.6 ms, grouped 535.8 ms, eager
2,101 ms, grouped under torch.compile 535.5 ms (after 5.3 s of compiling: it does not pay). Here
bf16 batched matmuls copy strided cache views before multiplying; the SDPA kernel reads them in
place. Hence `sdpa` is the default.

Decode attention reads every active row's keys up to the longest row's length, and on CPU it is
bound by those reads: with a long prompt among short ones most of them are padding. So a step's
rows are split into up to four contiguous slot ranges, each attended up to its own longest length
(`split_ranges`, views of the cache, no copy), and the engine re-sorts its slots by length when
their order has drifted so far that ranges no longer help (new rows land in freed slots).
"""

from __future__ import annotations

from dataclasses import dataclass

from forelen.errors import ForelenError
from forelen.requirements import check_versions

ATTENTION_NAME = "forelen_slots"
KERNELS = ("sdpa", "grouped", "eager")


class SlotCache:
    """Pre-allocated keys and values: per layer (slots + 1, kv_heads, capacity, head_dim).

    Slot index `slots` is the scratch slot a prompt is prefilled into before its KV is copied into
    the slots of its samples (an `rl` group prefills once). Rows `0..n-1` are the active slots, kept
    contiguous by the engine so attention reads plain views.
    """

    def __init__(self, num_layers: int, slots: int, kv_heads: int, capacity: int, head_dim: int,
                 dtype, device):
        import torch

        shape = (slots + 1, kv_heads, capacity, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.scratch, self.capacity = slots, capacity
        self.plan: Plan | None = None

    def update(self, key, value, layer_idx: int, *args, **kwargs):
        """Write this forward's keys/values where the plan says; return what attention reads."""
        plan = self.plan
        k, v = self.k[layer_idx], self.v[layer_idx]
        if plan.decode:  # key: (n, Hkv, 1, d) at each row's own position
            k[plan.rows, :, plan.positions] = key[:, :, 0]
            v[plan.rows, :, plan.positions] = value[:, :, 0]
            return k[: plan.n, :, : plan.length], v[: plan.n, :, : plan.length]
        s, start, end = self.scratch, plan.start, plan.start + key.shape[2]  # key: (1, Hkv, c, d)
        k[s, :, start:end] = key[0]
        v[s, :, start:end] = value[0]
        return k[s: s + 1, :, :end], v[s: s + 1, :, :end]

    def copy_slot(self, src: int, dst: int, length: int) -> None:
        for k, v in zip(self.k, self.v):
            k[dst, :, :length] = k[src, :, :length]
            v[dst, :, :length] = v[src, :, :length]


@dataclass
class Plan:
    """What one forward writes and attends over; handed to attention as its `attention_mask`."""

    decode: bool
    kernel: str = "grouped"
    n: int = 1  # decode: active rows
    rows: object = None  # decode: (n,) row indices
    positions: object = None  # decode: (n,) position of the token each row feeds
    length: int = 0  # decode: longest cache length after this step
    bias: object = None  # decode: (n, 1, 1, length) additive mask, -inf past each row's length
    start: int = 0  # prefill: position of the first token of this piece
    buckets: list | None = None  # decode: [(start, stop, length)] slot ranges; None: one batch

    @classmethod
    def for_decode(cls, positions, kernel: str, dtype, ranges=None) -> "Plan":
        """`ranges`: [(start, stop, length)] of `split_ranges`; None: one padded batch."""
        import torch

        n = positions.shape[0]
        length = int(positions.max()) + 1
        keys = torch.arange(length, device=positions.device)
        bias = torch.zeros((n, 1, 1, length), dtype=dtype, device=positions.device)
        bias.masked_fill_(keys[None, None, None, :] > positions[:, None, None, None], float("-inf"))
        if ranges is not None and len(ranges) < 2:
            ranges = None
        return cls(True, kernel, n, torch.arange(n, device=positions.device), positions, length,
                   bias, buckets=ranges)


MAX_BUCKETS = 4
CUT_POINTS = 16  # candidate range boundaries: the dynamic programme stays ~1k operations a step
# A bucket costs ~4 extra kernel launches per layer, ~1.5 ms a step here: about 1k keys' reads.
BUCKET_OVERHEAD_KEYS = 1024


def split_ranges(lengths: list[int]) -> tuple[float, list[tuple[int, int, int]]]:
    """Cheapest split of rows, in slot order, into up to MAX_BUCKETS contiguous ranges.

    Cost = keys read: a range of r rows whose longest has length L reads r * L keys (views of the
    cache, no copy), plus BUCKET_OVERHEAD_KEYS per range. Returns (cost, [(start, stop, L)]).
    """
    n = len(lengths)
    cuts = sorted({round(n * q / CUT_POINTS) for q in range(CUT_POINTS + 1)})
    m = len(cuts) - 1
    longest = [[0] * (m + 1) for _ in range(m + 1)]  # longest[i][j]: max over cuts[i]:cuts[j]
    for i in range(m):
        run = 0
        for j in range(i + 1, m + 1):
            run = max(run, max(lengths[cuts[j - 1]: cuts[j]]))
            longest[i][j] = run
    inf = float("inf")
    best = [[inf] * (m + 1) for _ in range(MAX_BUCKETS + 1)]
    back = [[0] * (m + 1) for _ in range(MAX_BUCKETS + 1)]
    best[0][0] = 0.0
    for k in range(1, MAX_BUCKETS + 1):
        for j in range(1, m + 1):
            for i in range(k - 1, j):
                cost = (best[k - 1][i] + (cuts[j] - cuts[i]) * longest[i][j]
                        + BUCKET_OVERHEAD_KEYS)
                if cost < best[k][j]:
                    best[k][j], back[k][j] = cost, i
    k = min(range(1, MAX_BUCKETS + 1), key=lambda kk: best[kk][m])
    ranges, j = [], m
    for kk in range(k, 0, -1):
        i = back[kk][j]
        ranges.append((cuts[i], cuts[j], longest[i][j]))
        j = i
    return best[k][m], ranges[::-1]


def slot_attention(module, query, key, value, attention_mask, scaling: float, dropout: float = 0.0,
                   **kwargs):
    """The `AttentionInterface` entry: query (B, Hq, q, d), key/value (B, Hkv, L, d) from the cache.

    Returns (B, q, Hq, d) as transformers' attention functions do.
    """
    plan: Plan = attention_mask
    if not plan.decode:
        return _prefill(query, key, value, plan.start, scaling), None
    kernel = DECODE[plan.kernel]
    if plan.buckets is None:
        return kernel(query, key, value, plan.bias, scaling), None
    out = query.new_empty((query.shape[0], 1, query.shape[1], query.shape[3]))  # (n, 1, Hq, d)
    for a, b, size in plan.buckets:  # views of the cache: no copy
        out[a:b] = kernel(query[a:b], key[a:b, :, :size], value[a:b, :, :size],
                          plan.bias[a:b, :, :, :size], scaling)
    return out, None


def _grouped(query, key, value, bias, scaling: float):
    import torch

    n, hq, _, d = query.shape
    hkv = key.shape[1]
    q = query.reshape(n, hkv, hq // hkv, d)  # (n, Hkv, G, d): query head h reads KV head h // G
    scores = torch.matmul(q, key.transpose(-1, -2)) * scaling  # (n, Hkv, G, L)
    probs = torch.softmax(scores + bias, dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.matmul(probs, value)  # (n, Hkv, G, d)
    return out.reshape(n, 1, hq, d)


def _sdpa(query, key, value, bias, scaling: float):
    import torch.nn.functional as F

    out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, scale=scaling,
                                         enable_gqa=True)  # (n, Hq, 1, d)
    return out.transpose(1, 2)


def _eager(query, key, value, bias, scaling: float):
    import torch

    groups = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(groups, dim=1)  # the copy `repeat_kv` makes, every step
    value = value.repeat_interleave(groups, dim=1)
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling  # (n, Hq, 1, L)
    probs = torch.softmax(scores + bias, dim=-1, dtype=torch.float32).to(query.dtype)
    return torch.matmul(probs, value).transpose(1, 2)


def _prefill(query, key, value, start: int, scaling: float):
    """A piece of `c` prompt tokens at positions start.. over the cache 0..start+c (causal)."""
    import torch
    import torch.nn.functional as F

    c, total = query.shape[2], key.shape[2]
    if start == 0:
        out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling,
                                             enable_gqa=True)
    else:
        allowed = (torch.arange(total, device=query.device)[None, :]
                   <= start + torch.arange(c, device=query.device)[:, None])  # (c, total)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=allowed, scale=scaling,
                                             enable_gqa=True)
    return out.transpose(1, 2)  # (1, c, Hq, d)


DECODE = {"grouped": _grouped, "sdpa": _sdpa, "eager": _eager}


def register() -> None:
    check_versions()  # one line, rather than an ImportError here or a crash in the first forward
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, slot_attention)


def slot_bytes_per_token(model, kv_heads: int, head_dim: int) -> int:
    itemsize = next(model.parameters()).element_size()
    return 2 * model.config.num_hidden_layers * kv_heads * head_dim * itemsize


def decoder_parts(model):
    """(embeddings, decoder layers, final norm, rotary embedding, cache keyword) of a decoder model.

    Llama-style families (Llama, Qwen2/2.5/3, Mistral, SmolLM) have them all; others get one line
    pointing at `--engine hf-static`, which drives any model through `generate`.
    """
    import inspect

    base = model.base_model
    names = ("embed_tokens", "layers", "norm", "rotary_emb")
    missing = [n for n in names if not hasattr(base, n)]
    if missing or getattr(model.config, "use_sliding_window", False):
        why = "no " + ", ".join(missing) if missing else "sliding-window attention"
        raise ForelenError(f"engine 'hf' cannot drive {type(model).__name__} ({why}); "
                           "use --engine hf-static")
    params = inspect.signature(type(base.layers[0]).forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    return base.embed_tokens, base.layers, base.norm, base.rotary_emb, cache_kw
