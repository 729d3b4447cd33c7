"""`forelen simulate` settings and the `forelen profile` front end (the simulate command, which
runs the evaluation protocol, lives in src/forelen/leaderboard/simulate.py: the simulator never imports
leaderboard code)."""

from __future__ import annotations

import json
from pathlib import Path

from forelen.dataset import atomic_write_bytes
from forelen.simulator.cost import CostModel, load_cost_model
from forelen.simulator.endtoend import SimSettings
from forelen.simulator.profile import profile_hf


def settings_from_options(slots, kv_budget, rate, seed, aging, rerank_every, cost_model,
                          static_slots=None) -> SimSettings:
    """The command's options as SimSettings: an option left out (None) takes the field's own
    default, so the CLI never copies one."""
    given = {"seed": seed, "aging": aging, "rerank_every": rerank_every}
    cost = load_cost_model(cost_model) if cost_model else CostModel()
    return SimSettings(slots=slots, kv_budget_tokens=kv_budget, rate=rate, cost=cost,
                       cost_source=str(cost_model) if cost_model else "default",
                       static_slots=static_slots,
                       **{k: v for k, v in given.items() if v is not None})


def profile_command(model: str, device: str, dtype: str, out: str, console) -> dict:
    """Time the hf engine on this machine, fit the cost model, write it as JSON."""
    console.print(f"profiling {model} on {device} (prefill and decode steps at a few batch sizes "
                  "and context lengths)")
    result = profile_hf(model, device=device, dtype=dtype, on_progress=lambda b, c: console.print(
        f"  batch {b:>3}, context {c:>4}: done"))
    atomic_write_bytes(Path(out), (json.dumps(result, indent=2) + "\n").encode())
    c = result["coefficients"]
    console.print(f"decode step = {c['decode_base_s'] * 1e3:.3f} ms + {c['decode_per_seq_s'] * 1e3:.4f}"
                  f" ms x batch + {c['decode_per_context_token_s'] * 1e6:.4f} us x context tokens; "
                  f"prefill = {c['prefill_base_s'] * 1e3:.3f} ms + "
                  f"{c['prefill_per_token_s'] * 1e3:.4f} ms x tokens")
    console.print(f"wrote {out}; use it with `forelen simulate --cost-model {out}`")
    return result
