"""`hf` engine: batched transformers generation with per-sample seeds, batches formed by length."""

from __future__ import annotations

from typing import Callable, Sequence

from forelen_bench.builders.engines import (ENGINES, EngineInfo, Generation, GenerationRequest,
                                            finish)


def sample_seeded(scores, generators, temperature: float, top_p: float, top_k_first: int = 256):
    """Draw one token per row from its own generator; (B, V) scores -> (B,) token ids.

    Per-row generators make a sample depend only on its own seed and logits, not on which other
    requests share its batch, so a resumed build regenerates exactly the same tokens. Each row draws
    one uniform u and inverts the CDF of its (nucleus-restricted) distribution. The nucleus is found
    among the `top_k_first` most likely tokens, falling back to a full sort only for rows whose
    nucleus is wider: exact, and a full (B, V) sort per step would cost more than the forward pass.
    """
    import torch

    scores = scores.float()
    if temperature <= 0:
        return scores.argmax(dim=-1)
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


class _SeededSampler:
    """A logits processor that samples with per-row generators and leaves one finite logit per row,
    so greedy decoding inside `generate` returns exactly the drawn token."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float):
        import torch

        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids, scores):
        import torch

        chosen = sample_seeded(scores, self.generators, self.temperature, self.top_p)  # (B,)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, chosen.to(scores.device)[:, None], 0.0)
        return out


@ENGINES.register("hf")
class HFEngine:
    info = EngineInfo("hf", "transformers generate, batched by prompt length, per-sample seeds",
                      devices="cpu, cuda", requires="transformers, torch")

    @classmethod
    def check(cls, device: str) -> None:
        """transformers runs on any device torch has."""

    @classmethod
    def create(cls, model, tokenizer, resolved_model, batch_size: int) -> "HFEngine":
        return cls(model, tokenizer, batch_size)

    def __init__(self, model, tokenizer, batch_size: int = 32, max_batch_tokens: int = 32768):
        """`max_batch_tokens` bounds B x longest prompt, so long-prompt prefill stays in memory."""
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.max_batch_tokens = max_batch_tokens
        self.eos_ids = eos_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else min(self.eos_ids))

    def generate(self, requests: Sequence[GenerationRequest],
                 on_done: Callable[[Generation], None] | None = None) -> list[Generation]:
        """Batches group requests of similar prompt length and equal sampling settings."""
        order = sorted(range(len(requests)), key=lambda i: (
            requests[i].temperature, requests[i].top_p, len(requests[i].prompt_ids), i))
        results: dict[int, Generation] = {}
        batch: list[int] = []
        for i in order + [None]:
            if batch and (i is None or len(batch) == self.batch_size
                          or (len(batch) + 1) * len(requests[i].prompt_ids) > self.max_batch_tokens
                          or _settings(requests[i]) != _settings(requests[batch[0]])):
                for j, gen in zip(batch, self._generate_batch([requests[j] for j in batch])):
                    results[j] = gen
                    if on_done:
                        on_done(gen)
                batch = []
            if i is not None:
                batch.append(i)
        return [results[i] for i in range(len(requests))]

    def _generate_batch(self, reqs: list[GenerationRequest]) -> list[Generation]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        width = max(len(r.prompt_ids) for r in reqs)
        ids = torch.full((len(reqs), width), self.pad_id, dtype=torch.long)  # (B, P) left-padded
        mask = torch.zeros_like(ids)
        for row, r in enumerate(reqs):
            ids[row, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
            mask[row, width - len(r.prompt_ids):] = 1
        budget = max(r.max_new_tokens for r in reqs)
        config = GenerationConfig(do_sample=False, max_new_tokens=budget, pad_token_id=self.pad_id,
                                  eos_token_id=sorted(self.eos_ids), num_beams=1)
        sampler = _SeededSampler([r.seed for r in reqs], reqs[0].temperature, reqs[0].top_p)
        device = self.model.device
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                      generation_config=config,
                                      logits_processor=LogitsProcessorList([sampler]))
        new = out[:, width:].tolist()  # (B, <=budget)
        return [finish(r.uid, toks[: r.max_new_tokens], self.eos_ids, r.max_new_tokens)
                for r, toks in zip(reqs, new)]


def eos_ids(model, tokenizer) -> set[int]:
    """The model's EOS ids (a list for Qwen2.5 and Llama 3) plus the tokenizer's."""
    eos = model.generation_config.eos_token_id
    eos = list(eos) if isinstance(eos, (list, tuple)) else [eos]
    return {int(e) for e in eos + [tokenizer.eos_token_id] if e is not None}


def _settings(r: GenerationRequest) -> tuple:
    return (r.temperature, r.top_p)
