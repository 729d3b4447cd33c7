"""Cost model of the serving engine: seconds per decode step and per prefill, from a few coefficients.

    decode step  = decode_base_s + decode_per_seq_s * batch + decode_per_context_token_s * context
    prefill      = prefill_base_s + prefill_per_token_s * prompt tokens prefilled in that step

`context` is the number of tokens every running sequence attends over (prompt + generated so far),
summed over the batch. The defaults were measured with `forelen profile` (SmolLM2-135M, the `hf`
engine's transformers forward with a KV cache, bfloat16, the 2 CPU threads of the development machine);
`forelen profile --out FILE` measures them on another machine (a GPU profile) and
`forelen simulate --cost-model FILE` loads them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from forelen_bench.errors import ForelenError


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
               batches=(1, 4, 8), contexts=(32, 256), steps: int = 5, on_progress=None) -> dict:
    """Time the `hf` engine's forward passes (prefill, then cached decode steps) and fit the model.

    A handful of (batch, context) points and a few steps each keep it under a minute on two CPU
    cores; the fit is linear, so more points sharpen it without changing its form.
    """
    import warnings

    import torch

    from forelen_bench.models import load_model, resolve_model

    resolved = resolve_model(model)
    lm, _, revision = load_model(resolved, device=device, dtype=dtype)
    vocab = lm.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    decode, prefill = [], []
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm(torch.randint(0, vocab, (1, 8), generator=gen).to(lm.device), use_cache=True)  # warm-up
        for b in batches:
            for ctx in contexts:
                ids = torch.randint(0, vocab, (b, ctx), generator=gen).to(lm.device)  # (B, T)
                t0 = _now(lm)
                out = lm(ids, use_cache=True)
                prefill.append((b * ctx, _now(lm) - t0))
                cache, nxt = out.past_key_values, ids[:, -1:]
                times = []
                for _ in range(steps):
                    t0 = _now(lm)
                    out = lm(nxt, past_key_values=cache, use_cache=True)
                    times.append(_now(lm) - t0)
                    cache = out.past_key_values
                # The median step of a point: robust to other processes sharing the cores.
                decode.append((b, b * (ctx + steps // 2), float(np.median(times))))
                if on_progress:
                    on_progress(b, ctx)
    fitted = fit_cost_model(decode, prefill)
    return {"coefficients": fitted.coefficients(), "model": resolved.spec, "model_revision": revision,
            "device": str(lm.device), "dtype": str(lm.dtype).replace("torch.", ""),
            "torch_threads": torch.get_num_threads(),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "points": {"decode": [list(x) for x in decode], "prefill": [list(x) for x in prefill]},
            "method": "non-negative least squares over timed forward passes of the hf engine's model"}


def _now(lm) -> float:
    if lm.device.type == "cuda":
        import torch

        torch.cuda.synchronize()
    return time.perf_counter()
