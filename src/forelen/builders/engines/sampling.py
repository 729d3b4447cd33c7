"""Per-sample seeded sampling shared by the `hf` engines, and the model's EOS ids."""

from __future__ import annotations


def sample_seeded(scores, generators, temperature: float, top_p: float, top_k_first: int = 256,
                  probs=None):
    """Draw one token per row from its own generator; (B, V) scores -> (B,) token ids.

    Per-row generators make a sample depend only on its own seed and logits, not on which other
    requests share its batch, so a resumed build regenerates exactly the same tokens. Each row draws
    one uniform u and inverts the CDF of its (nucleus-restricted) distribution. The nucleus is found
    among the `top_k_first` most likely tokens, falling back to a full sort only for rows whose
    nucleus is wider: exact, and a full (B, V) sort per step would cost more than the forward pass.
    `probs`, when given, is softmax(scores / temperature), already computed by the caller.
    """
    import torch

    scores = scores.float()
    if temperature <= 0:
        return scores.argmax(dim=-1)
    if probs is None:
        probs = torch.softmax(scores / temperature, dim=-1)  # (B, V)
    # u in (0, 1]: a zero draw must not select a zero-probability token at the start of the CDF.
    u = 1 - torch.cat([torch.rand(1, generator=g) for g in generators]).to(probs.device)  # (B,)
    if top_p >= 1.0:
        return _invert_cdf(probs, u).clamp_(max=probs.shape[-1] - 1)
    sorted_p, order = probs.topk(min(top_k_first, probs.shape[-1]), dim=-1)  # (B, k), descending
    chosen = _nucleus_draw(sorted_p, order, u, top_p)
    wide = (sorted_p.sum(dim=-1) < top_p).nonzero().flatten()
    if len(wide):
        full_p, full_order = probs[wide].sort(dim=-1, descending=True)
        chosen[wide] = _nucleus_draw(full_p, full_order, u[wide], top_p)
    return chosen


def _invert_cdf(probs, u):
    cdf = probs.cumsum(dim=-1)  # (B, V)
    return torch_searchsorted(cdf, u * cdf[:, -1])


def _nucleus_draw(sorted_p, order, u, top_p: float):
    """Keep the smallest prefix of descending probabilities whose mass reaches top_p, then draw."""
    keep = sorted_p.cumsum(dim=-1) - sorted_p < top_p  # the top token is always kept
    j = _invert_cdf(sorted_p * keep, u).clamp_(max=sorted_p.shape[-1] - 1)
    return order.gather(1, j[:, None]).squeeze(1)


def torch_searchsorted(cdf, values):
    import torch

    return torch.searchsorted(cdf.contiguous(), values[:, None].contiguous()).squeeze(1)


def eos_ids(model, tokenizer) -> set[int]:
    """The model's EOS ids (a list for Qwen2.5 and Llama 3) plus the tokenizer's."""
    eos = model.generation_config.eos_token_id
    eos = list(eos) if isinstance(eos, (list, tuple)) else [eos]
    return {int(e) for e in eos + [tokenizer.eos_token_id] if e is not None}
