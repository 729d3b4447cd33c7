"""`hf-static` engine: static batches through transformers `generate`, features recorded afterwards.

The engine forelen used before the continuous `hf` engine; kept runnable as the baseline of
`benchmarks/bench_build.py` and for decoder models the continuous engine does not drive. Batches
group requests of similar prompt length and run until their longest row ends.
"""

from __future__ import annotations

from typing import Callable, Sequence

from forelen.builders.engines import (ENGINES, Engine, EngineInfo, Generation, GenerationRequest,
                                      finish)
from forelen.builders.engines.sampling import eos_ids, sample_seeded


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


@ENGINES.register("hf-static")
class HFStaticEngine(Engine):
    info = EngineInfo("hf-static", "static generate batches, then a teacher-forced "
                      "recorder pass (the vllm engine's feature path, on CPU)",
                      devices="cpu, cuda", requires="transformers, torch")

    @classmethod
    def create(cls, model, tokenizer, resolved_model, settings) -> "HFStaticEngine":
        return cls(model, tokenizer, settings.batch_size)

    def __init__(self, model, tokenizer, batch_size: int = 32, max_batch_tokens: int = 32768):
        """`max_batch_tokens` bounds B x longest prompt, so long-prompt prefill stays in memory."""
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.max_batch_tokens = max_batch_tokens
        self.eos_ids = eos_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else min(self.eos_ids))

    def generate(self, requests: Sequence[GenerationRequest],
                 on_done: Callable[[Generation], None] | None = None) -> list[Generation] | None:
        """Batches group requests of similar prompt length and equal sampling settings; with
        `on_done`, results go there and none is kept (see `Engine.generate`)."""
        order = sorted(range(len(requests)), key=lambda i: (
            requests[i].temperature, requests[i].top_p, len(requests[i].prompt_ids), i))
        results: dict[int, Generation] = {}
        batch: list[int] = []
        for i in order + [None]:
            if batch and (i is None or len(batch) == self.batch_size
                          or (len(batch) + 1) * len(requests[i].prompt_ids) > self.max_batch_tokens
                          or _settings(requests[i]) != _settings(requests[batch[0]])):
                for j, gen in zip(batch, self._generate_batch([requests[j] for j in batch])):
                    if on_done:
                        on_done(gen)
                    else:
                        results[j] = gen
                batch = []
            if i is not None:
                batch.append(i)
        return None if on_done else [results[i] for i in range(len(requests))]

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


def _settings(r: GenerationRequest) -> tuple:
    return (r.temperature, r.top_p)
