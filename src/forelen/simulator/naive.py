"""A straightforward per-step simulator of continuous batching: one loop iteration per decode step.

Same semantics as engine.py, written independently and without the event jumps, so the tests can
check the event engine against it and the benchmark can time the two side by side.
"""

from __future__ import annotations

import numpy as np

from forelen.simulator.cost import CostModel
from forelen.simulator.policies import Plan
from forelen.simulator.requests import Workload


def naive_continuous(w: Workload, plan: Plan, *, slots: int, cost: CostModel = CostModel(),
                     rerank_every: int = 8, kv_budget_tokens: int | None = None,
                     aging: float = 0.0) -> tuple[np.ndarray, float]:
    """(finish_s (N,), padding) of the workload under continuous batching."""
    n, B, kv = w.n, slots, kv_budget_tokens
    P, L, A = w.prompt_tokens.tolist(), w.output_tokens.tolist(), w.arrival_s.tolist()
    reserve = [p + w.max_new_tokens for p in P]
    key = (plan.key + aging * w.arrival_s).tolist()
    gen = [0] * n
    finish = np.full(n, np.nan)
    running: list[int] = []
    waiting: list[int] = []
    t, it, ap, busy, capacity, prefill = 0.0, 0, 0, 0, 0, 0

    def head():
        return min(waiting, key=lambda i: (key[i], i))

    while np.isnan(finish).any():
        while ap < n and A[ap] <= t:
            waiting.append(ap)
            ap += 1
        while waiting and len(running) < B and (
                not running or kv is None or sum(reserve[j] for j in running) + reserve[head()] <= kv):
            i = head()
            waiting.remove(i)
            running.append(i)
            prefill += P[i] + gen[i]
        if not running:
            t = A[ap]
            continue
        ctx = sum(P[i] + gen[i] for i in running)
        t += cost.prefill_s(prefill) + cost.decode_s(len(running), ctx)
        prefill = 0
        busy += len(running)
        capacity += B
        it += 1
        for i in running:
            gen[i] += 1
        for i in [i for i in running if gen[i] == L[i]]:
            finish[i] = t
            running.remove(i)
        if plan.name == "srpt" and waiting and running and it % rerank_every == 0:
            _swap(plan, w, aging, running, waiting, gen, key, reserve, kv)
    return finish, 1.0 - busy / capacity


def _swap(plan, w, aging, running, waiting, gen, key, reserve, kv):
    """Largest running keys out, smallest waiting keys in, pairwise while strictly smaller."""
    rk = {}
    for i in running:
        j = max(x for x in range(len(plan.steps)) if plan.steps[x] <= gen[i])
        rk[i] = max(plan.remaining[i, j] - (gen[i] - plan.steps[j]), 0.0) + aging * w.arrival_s[i]
    out = sorted(running, key=lambda i: (-rk[i], -i))
    inn = sorted(waiting, key=lambda i: (key[i], i))
    used = sum(reserve[j] for j in running)
    for r, c in zip(out, inn):
        if not key[c] < rk[r] or (kv is not None and used - reserve[r] + reserve[c] > kv):
            break
        used += reserve[c] - reserve[r]
        running.remove(r)
        key[r] = float(rk[r])
        waiting.append(r)
