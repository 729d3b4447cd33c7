"""Discrete-event simulation of a serving engine under static or continuous batching.

The clock jumps from event to event (a request finishes, a request arrives while a slot is free,
a re-rank is due) instead of ticking per decode step; between two events the running set is fixed,
so the time of m decode steps has a closed form: each step costs a + b*n + c*context, and the
context of the n running requests grows by n tokens per step.

Static batching (transformers `generate`): when the engine is idle it takes up to B waiting
requests by priority and runs them until the longest ends; all of them return then, and finished
rows keep occupying the batch (padding). Continuous batching (vLLM): B slots, refilled by priority
at every step boundary; a request of L tokens holds a slot for L decode steps. Admissions in a step
add one prefill of their prompts to that step's time. SRPT re-ranks running and waiting requests
every k decode steps and preempts a running request for a waiting one with a strictly smaller key;
the preempted request keeps its tokens and is resumed by recomputing its context (vLLM's default
recompute preemption), charged as a prefill of prompt + generated tokens.

KV budget: a running request reserves prompt + max_new_tokens tokens (the budget it may grow to);
a request is admitted only while the reservations fit (always at least one request), and the
queue's head blocks the rest, as in vLLM.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from forelen_bench.simulator.cost import CostModel
from forelen_bench.simulator.policies import Plan
from forelen_bench.simulator.requests import Workload


@dataclass
class SimResult:
    finish_s: np.ndarray  # (N,) completion time of each workload request
    padding: float  # slot-steps that generated no token / slot-steps of capacity
    decode_steps: int
    preemptions: int = 0


def steps_until(gap: float, alpha: float, beta: float) -> int:
    """Smallest m >= 1 with alpha*m + beta*m*(m-1)/2 >= gap (alpha > 0, beta >= 0)."""
    if gap <= alpha:
        return 1
    if beta <= 0:
        m = math.ceil(gap / alpha)
    else:
        h = alpha - beta / 2
        m = math.ceil((-h + math.sqrt(h * h + 2 * beta * gap)) / beta)
    m = max(m, 1)
    while m > 1 and alpha * (m - 1) + beta * (m - 1) * (m - 2) / 2 >= gap:
        m -= 1
    while alpha * m + beta * m * (m - 1) / 2 < gap:
        m += 1
    return m


def simulate(workload: Workload, plan: Plan, *, batching: str = "continuous", slots: int = 4,
             cost: CostModel = CostModel(), kv_budget_tokens: int | None = None,
             rerank_every: int = 8, aging: float = 0.0) -> SimResult:
    if slots < 1:
        raise ValueError("slots must be >= 1")
    key = plan.key + aging * workload.arrival_s if aging else plan.key
    if batching == "static":
        return _static(workload, key, slots, cost, kv_budget_tokens)
    if batching == "continuous":
        return _continuous(workload, plan, key, slots, cost, kv_budget_tokens, max(1, rerank_every),
                           aging)
    raise ValueError(f"unknown batching {batching!r}")


def _static(w: Workload, key: np.ndarray, B: int, cost: CostModel, kv: int | None) -> SimResult:
    n = w.n
    P, L, A = w.prompt_tokens.tolist(), w.output_tokens.tolist(), w.arrival_s.tolist()
    reserve = [p + w.max_new_tokens for p in P]
    keys = key.tolist()
    finish = np.empty(n)
    heap: list = []
    t, ap, done, pad, cap, steps = 0.0, 0, 0, 0, 0, 0
    while done < n:
        while ap < n and A[ap] <= t:
            heapq.heappush(heap, (keys[ap], ap))
            ap += 1
        if not heap:
            t = A[ap]
            continue
        batch, used = [], 0
        while heap and len(batch) < B and (not batch or kv is None or used + reserve[heap[0][1]] <= kv):
            i = heapq.heappop(heap)[1]
            batch.append(i)
            used += reserve[i]
        b = len(batch)
        lmax = max(L[i] for i in batch)
        prompts = sum(P[i] for i in batch)
        # Every row of the batch decodes until the longest ends: context grows by b per step.
        t += (cost.prefill_s(prompts) + lmax * cost.decode_s(b, prompts)
              + cost.decode_per_context_token_s * b * lmax * (lmax - 1) / 2)
        useful = sum(L[i] for i in batch)
        pad += b * lmax - useful
        cap += b * lmax
        steps += lmax
        finish[batch] = t
        done += b
    return SimResult(finish, pad / cap, steps)


def _continuous(w: Workload, plan: Plan, key: np.ndarray, B: int, cost: CostModel, kv: int | None,
                k: int, aging: float) -> SimResult:
    n = w.n
    P, L, A = w.prompt_tokens.tolist(), w.output_tokens.tolist(), w.arrival_s.tolist()
    reserve = [p + w.max_new_tokens for p in P]
    keys = key.tolist()
    srpt = plan.name == "srpt"
    a, bq, c = cost.decode_base_s, cost.decode_per_seq_s, cost.decode_per_context_token_s
    finish = np.empty(n)
    progress = [0] * n  # tokens generated before the current run began
    started = [0] * n  # global step at which the current run began
    epoch = [0] * n  # invalidates finish events of preempted runs
    running: set[int] = set()
    waiting: list = []  # (key, arrival rank)
    ends: list = []  # (global step of the last token, rank, epoch)
    t, it, ap, done, ctx, used, pre = 0.0, 0, 0, 0, 0, 0, 0
    busy = capacity = preemptions = 0
    prefill_tokens = 0
    while done < n:
        while ap < n and A[ap] <= t:
            heapq.heappush(waiting, (keys[ap], ap))
            ap += 1
        while waiting and len(running) < B and (
                not running or kv is None or used + reserve[waiting[0][1]] <= kv):
            i = heapq.heappop(waiting)[1]
            running.add(i)
            started[i] = it
            heapq.heappush(ends, (it + L[i] - progress[i], i, epoch[i]))
            ctx += P[i] + progress[i]
            used += reserve[i]
            prefill_tokens += P[i] + progress[i]
        if not running:
            t = A[ap]
            continue
        nr = len(running)
        while ends[0][2] != epoch[ends[0][1]]:
            heapq.heappop(ends)
        m = ends[0][0] - it
        if srpt and waiting:
            m = min(m, k - it % k)
        pre = cost.prefill_s(prefill_tokens)
        alpha, beta = a + bq * nr + c * ctx, c * nr
        if ap < n and (nr < B or srpt):  # srpt: a new arrival may preempt at the next re-rank
            m = min(m, steps_until(A[ap] - t - pre, alpha, beta))
        t += pre + alpha * m + beta * m * (m - 1) / 2
        it += m
        ctx += nr * m
        busy += nr * m
        capacity += B * m
        prefill_tokens = 0
        while ends and ends[0][0] == it:
            _, i, e = heapq.heappop(ends)
            if e != epoch[i]:
                continue
            running.discard(i)
            finish[i] = t
            done += 1
            ctx -= P[i] + L[i]
            used -= reserve[i]
        if srpt and waiting and it % k == 0 and running:
            n_pre, ctx, used = _rerank(plan, aging, w, running, waiting, progress, started, epoch,
                                       it, ctx, used, reserve, kv)
            preemptions += n_pre
    return SimResult(finish, 1.0 - busy / capacity, it, preemptions)


def _rerank(plan, aging, w, running, waiting, progress, started, epoch, it, ctx, used, reserve, kv):
    """Preempt the running requests with the largest keys for waiting ones with strictly smaller
    keys; the preempted go back to the queue with their tokens kept."""
    ids = np.fromiter(running, np.int64, len(running))
    gen = np.array([progress[i] + it - started[i] for i in ids], np.int64)
    keys = plan.running_keys(ids, gen)
    if aging:
        keys = keys + aging * w.arrival_s[ids]
    order = np.lexsort((ids, -keys))  # largest key first, then the later arrival
    # The j-th largest running key against the j-th smallest waiting one: every candidate is then
    # smaller than every preempted request, so the admission loop refills the slots with them.
    taken = []
    for r in order.tolist():
        if not waiting or not waiting[0][0] < keys[r]:
            break
        i, g = int(ids[r]), int(gen[r])
        if kv is not None and used - reserve[i] + reserve[waiting[0][1]] > kv:
            break
        taken.append(heapq.heappop(waiting))
        running.discard(i)
        progress[i] = g
        epoch[i] += 1
        ctx -= int(w.prompt_tokens[i]) + g
        used += reserve[taken[-1][1]] - reserve[i]
        heapq.heappush(waiting, (float(keys[r]), i))
    for item in taken:
        used -= reserve[item[1]]  # admission adds them back
        heapq.heappush(waiting, item)
    return len(taken), ctx, used
