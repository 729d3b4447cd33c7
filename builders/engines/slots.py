"""The slot KV cache and the attention kernels of the continuous `hf` engine.

The cache is handed to the model's own attention modules as their `cache` (transformers calls
`cache.update(k, v, layer_idx, ...)` and attends over what it returns), and the attention function is
registered in transformers' `AttentionInterface`, so the model's projections, rotary embeddings and
norms run unchanged; only where keys live and how one query token attends over them is ours.

Decode attention kernels (`attention=`), one generated token per slot over the slots' own caches:
- `grouped`: the query heads that share a KV head are one (G, d) matrix, so one batched matmul per
  layer attends over the cache as it lies: no `repeat_kv` copy, no concatenation.
- `sdpa`: `F.scaled_dot_product_attention(..., enable_gqa=True)` over the same views.
- `eager`: transformers' eager recipe (`repeat_kv`, then matmuls), for comparison.
Measured by `benchmarks/bench_build.py --attention-sweep`; figures in the README.
"""

from __future__ import annotations

from dataclasses import dataclass

ATTENTION_NAME = "forelen_slots"
KERNELS = ("grouped", "sdpa", "eager")


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

    @staticmethod
    def bytes_per_token(num_layers: int, kv_heads: int, head_dim: int, itemsize: int) -> int:
        return 2 * num_layers * kv_heads * head_dim * itemsize

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
    """What one forward pass writes and attends over; passed to attention as its `attention_mask`."""

    decode: bool
    kernel: str = "grouped"
    n: int = 1  # decode: active rows
    rows: object = None  # decode: (n,) row indices
    positions: object = None  # decode: (n,) position of the token each row feeds
    length: int = 0  # decode: longest cache length after this step
    bias: object = None  # decode: (n, 1, 1, length) additive mask, -inf past each row's length
    start: int = 0  # prefill: position of the first token of this piece

    @classmethod
    def for_decode(cls, positions, kernel: str, dtype) -> "Plan":
        import torch

        n = positions.shape[0]
        length = int(positions.max()) + 1
        keys = torch.arange(length, device=positions.device)
        bias = torch.zeros((n, 1, 1, length), dtype=dtype, device=positions.device)
        bias.masked_fill_(keys[None, None, None, :] > positions[:, None, None, None], float("-inf"))
        return cls(True, kernel, n, torch.arange(n, device=positions.device), positions, length,
                   bias)


def slot_attention(module, query, key, value, attention_mask, scaling: float, dropout: float = 0.0,
                   **kwargs):
    """The `AttentionInterface` entry: query (B, Hq, q, d), key/value (B, Hkv, L, d) from the cache.

    Returns (B, q, Hq, d) as transformers' attention functions do.
    """
    plan: Plan = attention_mask
    if not plan.decode:
        return _prefill(query, key, value, plan.start, scaling), None
    if plan.kernel == "grouped":
        return _grouped(query, key, value, plan.bias, scaling), None
    if plan.kernel == "sdpa":
        return _sdpa(query, key, value, plan.bias, scaling), None
    return _eager(query, key, value, plan.bias, scaling), None


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


def register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, slot_attention)
