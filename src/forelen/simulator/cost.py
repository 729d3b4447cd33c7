"""Cost model of the serving engine: seconds per decode step and per prefill, from a few coefficients.

    decode step  = decode_base_s + decode_per_seq_s * batch + decode_per_context_token_s * context
    prefill      = prefill_base_s + prefill_per_token_s * prompt tokens prefilled in that step

`context` is the number of tokens every running sequence attends over (prompt + generated so far),
summed over the batch. `forelen profile` fits the coefficients by timing the `hf` engine's own
prefill and decode steps (`simulator/profile.py`); the defaults are its fit for SmolLM2-135M in bfloat16
on the 2 CPU threads of the development machine. `forelen profile --out FILE` measures them on
another machine (a GPU profile) and `forelen simulate --cost-model FILE` loads them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from forelen.errors import ForelenError


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
