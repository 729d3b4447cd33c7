"""Cost model of the serving engine: seconds per decode step and per prefill, from a few coefficients.

    decode step  = decode_base_s + decode_per_seq_s * batch + decode_per_context_token_s * context
    prefill      = prefill_base_s + prefill_per_token_s * prompt tokens prefilled in that step

`context` is the number of tokens every running sequence attends over (prompt + generated so far),
summed over the batch. `forelen profile` fits the coefficients by timing the `hf` engine's own
prefill and decode steps (`profile_engine`); the defaults are its fit for SmolLM2-135M in bfloat16
on the 2 CPU threads of the development machine. `forelen profile --out FILE` measures them on
another machine (a GPU profile) and `forelen simulate --cost-model FILE` loads them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from forelen.builders.engines import EngineSettings, GenerationRequest
from forelen.builders.engines.hf import HFEngine, Row
from forelen.errors import ForelenError
from forelen.models import load_model, resolve_model


@dataclass(frozen=True)
class CostModel:
    # Defaults: `forelen profile` on the development machine, 2026-11-29, with nothing else running
    # (SmolLM2-135M, dtype auto = bfloat16 on its AMX CPU, 2 torch threads, the 2 cores that
    # `forelen build` uses; decode points B in {1, 4, 8} x context {32, 256}). A decode step is
    # mostly its fixed cost on this CPU; a GPU profile will differ.
    decode_base_s: float = 0.0390
    decode_per_seq_s: float = 7.34e-04
    decode_per_context_token_s: float = 6.26e-06
    prefill_base_s: float = 0.0527
    prefill_per_token_s: float = 3.34e-04

    def __post_init__(self):
        values = [getattr(self, f.name) for f in fields(self)]
        if any(not np.isfinite(v) or v < 0 for v in values):
            raise ForelenError(f"cost model coefficients must be finite and >= 0, got {values}")
        if self.decode_base_s + self.decode_per_seq_s <= 0:
            raise ForelenError("cost model: decode_base_s + decode_per_seq_s must be > 0 "
                               "(a decode step cannot be free)")

    def decode_s(self, batch: int, context: float) -> float:
        return (self.decode_base_s + self.decode_per_seq_s * batch
                + self.decode_per_context_token_s * context)

    def prefill_s(self, tokens: float) -> float:
        return self.prefill_base_s + self.prefill_per_token_s * tokens if tokens > 0 else 0.0

    def coefficients(self) -> dict:
        return asdict(self)


def load_cost_model(path: str | Path) -> CostModel:
    """Coefficients from a `forelen profile` JSON (extra keys, such as provenance, are ignored)."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ForelenError(f"cost model file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise ForelenError(f"cannot read cost model {path}: {str(exc).splitlines()[0]}") from None
    coeffs = raw.get("coefficients", raw) if isinstance(raw, dict) else None
    names = [f.name for f in fields(CostModel)]
    if not isinstance(coeffs, dict) or any(n not in coeffs for n in names):
        raise ForelenError(f"cost model {path} needs the keys {', '.join(names)}")
    try:
        return CostModel(**{n: float(coeffs[n]) for n in names})
    except (TypeError, ValueError):
        raise ForelenError(f"cost model {path}: coefficients must be numbers") from None


def fit_cost_model(decode: list[tuple[int, int, float]], prefill: list[tuple[int, float]]) -> CostModel:
    """Non-negative least squares over timings: decode (batch, context, s), prefill (tokens, s)."""
    from scipy.optimize import nnls

    d = np.asarray(decode, np.float64)  # (K, 3)
    a, _ = nnls(np.column_stack([np.ones(len(d)), d[:, 0], d[:, 1]]), d[:, 2])
    p = np.asarray(prefill, np.float64)  # (K, 2)
    b, _ = nnls(np.column_stack([np.ones(len(p)), p[:, 0]]), p[:, 1])
    if a[0] + a[1] <= 0:  # a degenerate fit on a very fast device: keep one step from being free
        a[0] = float(d[:, 2].min())
    return CostModel(*(float(x) for x in (a[0], a[1], a[2], b[0], b[1])))


def profile_hf(model: str = "smollm2-135m", device: str = "cpu", dtype: str = "auto",
               batches=(1, 4, 8, 16), contexts=(32, 256), steps: int = 5,
               on_progress=None) -> dict:
    """Load a model and time the `hf` engine's own prefill and decode steps (`profile_engine`)."""
    resolved = resolve_model(model)
    lm, tokenizer, revision = load_model(resolved, device=device, dtype=dtype)
    engine = HFEngine(lm, tokenizer, EngineSettings(record=False, slots=max(batches),
                                                     kv_budget_gib=64.0))
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
