"""Profiling the `hf` engine for the cost model (`forelen profile`): time its own prefill and decode
steps and fit `simulator.cost.CostModel` to them. Apart from the model itself, so that simulating
(and so making a record) never loads the engine or a model."""

from __future__ import annotations

import time

import numpy as np

from forelen.builders.engines import GenerationRequest, HFSettings
from forelen.builders.engines.hf import HFEngine, Row
from forelen.errors import ForelenError
from forelen.models import load_model, resolve_model
from forelen.simulator.cost import fit_cost_model


def profile_hf(model: str = "smollm2-135m", device: str = "cpu", dtype: str = "auto",
               batches=(1, 4, 8, 16), contexts=(32, 256), steps: int = 5,
               on_progress=None) -> dict:
    """Load a model and time the `hf` engine's own prefill and decode steps (`profile_engine`)."""
    resolved = resolve_model(model)
    lm, tokenizer, revision = load_model(resolved, device=device, dtype=dtype)
    engine = HFEngine(lm, tokenizer, HFSettings(record=False, slots=max(batches), kv_budget_gib=64.0))
    result = profile_engine(engine, batches, contexts, steps, on_progress)
    result.update(model=resolved.spec, model_revision=revision)
    return result


def profile_engine(engine, batches=(1, 4, 8, 16), contexts=(32, 256), steps: int = 5,
                   on_progress=None, prefill_lengths=(32, 128, 512)) -> dict:
    """Time the engine's own work and fit the cost model: a prefill is `prefill` of one prompt
    (chunked forward, the first token's logits) plus the copy into its slot; a decode step is
    `step` of B slots (the slot-cache forward with its attention kernel, the LM head, sampling)
    at a context of about `ctx` tokens each. What the simulator charges is what the engine runs.

    A handful of points and a few steps each keep it near a minute on two CPU cores; the fit is
    linear, so more points sharpen it without changing its form."""
    import torch

    lm = engine.model
    vocab = lm.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    max_b, max_ctx = max(batches), max(max(contexts), max(prefill_lengths))
    request = GenerationRequest("profile", tuple(range(max_ctx)), 10 * steps + 2, 1.0, 1.0, 0)
    saved = engine.settings
    from dataclasses import replace

    engine.settings = replace(saved, slots=max_b, max_prompt_tokens=max_ctx,
                              max_new_tokens=10 * steps + 2)
    engine.setup([request])
    engine.settings = saved
    if engine.n_slots < max_b:
        raise ForelenError(f"profile: the KV budget holds {engine.n_slots} slots of {max_ctx} "
                           f"tokens, fewer than the largest batch {max_b}")
    decode, prefill = [], []

    def prompt(length: int) -> tuple[int, ...]:
        return tuple(torch.randint(0, vocab, (length,), generator=gen).tolist())

    with engine.slot_attention(), torch.inference_mode():
        engine.prefill(prompt(8))  # warm-up
        for length in prefill_lengths:
            times = []
            for _ in range(3):
                t0 = _now(lm)
                engine.prefill(prompt(length))
                engine.cache.copy_slot(engine.cache.scratch, 0, length)
                times.append(_now(lm) - t0)
            prefill.append((length, float(np.median(times))))
        for b in batches:
            for ctx in contexts:
                ids = prompt(ctx)
                prefix = engine.prefill(ids)
                for s in range(b):
                    engine.cache.copy_slot(engine.cache.scratch, s, ctx)
                    g = torch.Generator().manual_seed(s)
                    engine.rows[s] = Row(s, request, g, prefix, [int(ids[-1])], ctx)
                engine.step(b)  # warm-up at this shape
                times = []
                for _ in range(steps):
                    t0 = _now(lm)
                    engine.step(b)
                    times.append(_now(lm) - t0)
                    for s in range(b):
                        engine.rows[s].done = None  # a sampled EOS must not end the timing
                # The median step of a point: robust to other processes sharing the cores.
                decode.append((b, b * (ctx + 1 + steps // 2), float(np.median(times))))
                engine.rows[:b] = [None] * b
                if on_progress:
                    on_progress(b, ctx)
    fitted = fit_cost_model(decode, prefill)
    return {"coefficients": fitted.coefficients(),
            "device": str(lm.device), "dtype": str(lm.dtype).replace("torch.", ""),
            "torch_threads": torch.get_num_threads(),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "points": {"decode": [list(x) for x in decode], "prefill": [list(x) for x in prefill]},
            "method": "non-negative least squares over the hf engine's timed prefill (plus the "
                      "slot copy) and step calls (slot-cache forward, LM head, sampling)"}


def _now(lm) -> float:
    if lm.device.type == "cuda":
        import torch

        torch.cuda.synchronize()
    return time.perf_counter()
