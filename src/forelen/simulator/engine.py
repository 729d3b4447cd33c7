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

Speed (the end-to-end bootstrap replays every schedule 10,000 times): static batching with every
request at t=0 and no KV budget is a handful of array operations (`_static_at_once`, the loop's
result to the bit); SRPT visits only the re-ranks that can preempt (`_Alarms`), with the same
schedule as re-ranking every running request every k steps (the per-step simulator in naive.py
checks both).
"""

from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import dataclass

import numpy as np

from forelen.simulator.cost import CostModel
from forelen.simulator.policies import Plan
from forelen.simulator.requests import Workload


@dataclass
class SimResult:
    finish_s: np.ndarray  # (N,) completion time of each workload request
    padding: float  # slot-steps that generated no token / slot-steps of capacity
    decode_steps: int
    preemptions: int = 0
    batch: np.ndarray | None = None  # (N,) static batching: the batch each request ran in, by start


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


PREFILL_AT = ("admission", "arrival")
RESUME = ("recompute", "swap")


def simulate(workload: Workload, plan: Plan, *, batching: str = "continuous", slots: int = 4,
             cost: CostModel = CostModel(), kv_budget_tokens: int | None = None,
             rerank_every: int = 8, aging: float = 0.0, prefill_at: str = "admission",
             resume: str = "recompute") -> SimResult:
    """`prefill_at` (continuous batching): `admission`, vLLM's schedule, where the requests
    admitted at a step boundary are prefilled together (one base cost per step); or `arrival`,
    where each request is prefilled alone as soon as it arrives, at the next step boundary and
    before the next decode step, whether or not a slot is free: what a scheduler needs that ranks
    by the prefill's own hidden states (EGTP, PLP), as `forelen replay`'s engine does.
    `resume`: a preempted request comes back by recomputing its context (`recompute`, charged as
    a prefill of prompt + generated tokens) or from its KV swapped to host memory (`swap`,
    charged nothing: the copy is a memory move, not a forward)."""
    if slots < 1:
        raise ValueError("slots must be >= 1")
    if prefill_at not in PREFILL_AT or resume not in RESUME:
        raise ValueError(f"prefill_at must be one of {PREFILL_AT}, resume one of {RESUME}")
    if batching == "static" and (prefill_at, resume) != ("admission", "recompute"):
        raise ValueError("prefill_at and resume apply to continuous batching")
    key = plan.key + aging * workload.arrival_s if aging else plan.key
    if batching == "static":
        if kv_budget_tokens is None and workload.arrival_s[-1] <= workload.arrival_s[0]:
            return _static_at_once(workload, key, slots, cost)
        return _static(workload, key, slots, cost, kv_budget_tokens)
    if batching == "continuous":
        return _continuous(workload, plan, key, slots, cost, kv_budget_tokens, max(1, rerank_every),
                           aging, prefill_at == "arrival", resume == "swap")
    raise ValueError(f"unknown batching {batching!r}")


def _static(w: Workload, key: np.ndarray, B: int, cost: CostModel, kv: int | None) -> SimResult:
    n = w.n
    P, L, A = w.prompt_tokens.tolist(), w.output_tokens.tolist(), w.arrival_s.tolist()
    reserve = [p + w.max_new_tokens for p in P]
    keys = key.tolist()
    finish = np.empty(n)
    batch_of = np.empty(n, np.int64)
    heap: list = []
    t, ap, done, pad, cap, steps, nb = 0.0, 0, 0, 0, 0, 0, 0
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
        batch_of[batch] = nb
        nb += 1
        done += b
    return SimResult(finish, pad / cap, steps, batch=batch_of)


def _static_at_once(w: Workload, key: np.ndarray, B: int, cost: CostModel) -> SimResult:
    """`_static` when every request arrives at once and no KV budget binds, without the loop: the
    batches are consecutive runs of B requests in key order (ties by arrival rank, as the heap
    pops them), and every quantity is the same float operation in the same order as there."""
    n = w.n
    order = np.argsort(key, kind="stable")
    L, P = w.output_tokens[order], w.prompt_tokens[order]
    starts = np.arange(0, n, B)
    b = np.diff(np.append(starts, n))
    lmax = np.maximum.reduceat(L, starts)
    prompts = np.add.reduceat(P, starts)
    useful = np.add.reduceat(L, starts)
    prefill = np.where(prompts > 0, cost.prefill_base_s + cost.prefill_per_token_s * prompts, 0.0)
    decode = (cost.decode_base_s + cost.decode_per_seq_s * b
              + cost.decode_per_context_token_s * prompts)
    run = prefill + lmax * decode + cost.decode_per_context_token_s * b * lmax * (lmax - 1) / 2
    end = np.cumsum(np.concatenate([w.arrival_s[:1], run]))[1:]  # t += run, batch by batch
    finish = np.empty(n)
    finish[order] = np.repeat(end, b)
    batch_of = np.empty(n, np.int64)
    batch_of[order] = np.repeat(np.arange(len(b)), b)
    capacity = int((b * lmax).sum())
    return SimResult(finish, int(capacity - useful.sum()) / capacity, int(lmax.sum()),
                     batch=batch_of)


def _continuous(w: Workload, plan: Plan, key: np.ndarray, B: int, cost: CostModel, kv: int | None,
                k: int, aging: float, at_arrival: bool = False, swap: bool = False) -> SimResult:
    n = w.n
    P, L, A = w.prompt_tokens.tolist(), w.output_tokens.tolist(), w.arrival_s.tolist()
    reserve = [p + w.max_new_tokens for p in P]
    keys = key.tolist()
    srpt = plan.name == "srpt"
    alarms = _Alarms(plan, aging, w) if srpt else None
    a, bq, c = cost.decode_base_s, cost.decode_per_seq_s, cost.decode_per_context_token_s
    pa, pb = cost.prefill_base_s, cost.prefill_per_token_s  # cost.prefill_s, inlined
    push, pop = heapq.heappush, heapq.heappop
    finish = [0.0] * n
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
            if at_arrival:  # prefilled alone now; later arrivals may fall due meanwhile
                t += pa + pb * P[ap]
            push(waiting, (keys[ap], ap))
            ap += 1
            if srpt:
                alarms.dirty = True  # the queue's head may have dropped below a running key
        while waiting and len(running) < B and (
                not running or kv is None or used + reserve[waiting[0][1]] <= kv):
            i = pop(waiting)[1]
            running.add(i)
            started[i] = it
            push(ends, (it + L[i] - progress[i], i, epoch[i]))
            ctx += P[i] + progress[i]
            used += reserve[i]
            if progress[i] and not swap:  # resumed: its context is computed again
                prefill_tokens += P[i] + progress[i]
            elif not progress[i] and not at_arrival:
                prefill_tokens += P[i]
            if srpt:
                alarms.set(i, progress[i], it, waiting[0][0] if waiting else math.inf)
        if not running:
            t = A[ap]
            continue
        nr = len(running)
        while ends[0][2] != epoch[ends[0][1]]:
            pop(ends)
        m = ends[0][0] - it
        if srpt and waiting:
            m = min(m, alarms.next_rerank(it, k, running) - it)
        pre = pa + pb * prefill_tokens if prefill_tokens > 0 else 0.0
        alpha, beta = a + bq * nr + c * ctx, c * nr
        # an arrival stops the run if it can be admitted, may preempt (srpt, at the next
        # re-rank) or is prefilled at once (at_arrival)
        if ap < n and (nr < B or srpt or at_arrival):
            m = min(m, steps_until(A[ap] - t - pre, alpha, beta))
        t += pre + alpha * m + beta * m * (m - 1) / 2
        it += m
        ctx += nr * m
        busy += nr * m
        capacity += B * m
        prefill_tokens = 0
        while ends and ends[0][0] == it:
            _, i, e = pop(ends)
            if e != epoch[i]:
                continue
            running.discard(i)
            finish[i] = t
            done += 1
            ctx -= P[i] + L[i]
            used -= reserve[i]
        if srpt and waiting and it % k == 0 and running:
            n_pre, ctx, used = _rerank(alarms, running, waiting, progress, started, epoch, it, ctx,
                                       used, reserve, P, kv)
            preemptions += n_pre
    return SimResult(np.array(finish), 1.0 - busy / capacity, it, preemptions)


class _Alarms:
    """When a re-rank can preempt, so that the engine visits only those re-ranks.

    A running request's SRPT key falls by one per decode step between two observed steps and jumps
    to a fresh prediction at each; within a segment its largest key is the one at the segment's
    start. A re-rank preempts only a running request whose key exceeds the queue's head, and
    without new arrivals the head never falls (admission pops the smallest key; a preemption swaps
    the head for a larger key). So each running request gets an alarm: the first step at which its
    key may exceed the head as it was when the alarm was set (now, or the start of a later segment
    whose key does). A re-rank before every alarm is a no-op; at a re-rank only the requests whose
    alarm is due are candidates, in the same order and with the same keys (the same float
    operations as `Plan.running_keys`) as a re-rank over every running request. An arrival makes
    every running request a candidate at the next re-rank.
    """

    def __init__(self, plan: Plan, aging: float, w: Workload):
        rem = plan.remaining  # (N, T), no NaN (srpt fills forward)
        self.steps = plan.steps.tolist()
        self.T = T = rem.shape[1]
        self.rem = rem.ravel().tolist()  # flat lists, row i at i * T: far cheaper to build
        age = aging * w.arrival_s if aging else None
        self.age = age.tolist() if aging else None
        start = np.maximum(rem, 0.0)  # the key at the start of each segment
        if aging:
            start = start + age[:, None]
        self.start = start.ravel().tolist()
        # later[i * (T + 1) + j]: the largest key request i can jump to at an observed step >= j
        later = np.full((len(rem), T + 1), -np.inf)
        later[:, :T] = np.maximum.accumulate(start[:, ::-1], axis=1)[:, ::-1]
        self.later = later.ravel().tolist()
        self.heap: list = []  # (alarm step, rank, version)
        self.version = [0] * w.n
        self.dirty = False

    def key(self, i: int, g: int) -> float:
        """The SRPT key of request i after g generated tokens (`Plan.running_keys`)."""
        j = bisect.bisect_right(self.steps, g) - 1
        v = max(self.rem[i * self.T + j] - (g - self.steps[j]), 0.0)
        return v + self.age[i] if self.age is not None else v

    def set(self, i: int, g: int, it: int, head: float, now: float | None = None) -> None:
        """Alarm of running request i (g tokens generated at step it) against the queue head."""
        self.version[i] += 1
        steps = self.steps
        j = bisect.bisect_right(steps, g)  # the next observed step
        if now is None:
            now = max(self.rem[i * self.T + j - 1] - (g - steps[j - 1]), 0.0)
            if self.age is not None:
                now = now + self.age[i]
        if head < now:
            heapq.heappush(self.heap, (it, i, self.version[i]))
        elif head < self.later[i * (self.T + 1) + j]:  # else no later prediction exceeds it
            start, base = self.start, i * self.T
            while not head < start[base + j]:
                j += 1
            heapq.heappush(self.heap, (it + steps[j] - g, i, self.version[i]))

    def _clean(self, running) -> None:
        h, version = self.heap, self.version
        while h and (h[0][2] != version[h[0][1]] or h[0][1] not in running):
            heapq.heappop(h)

    def next_rerank(self, it: int, k: int, running) -> int:
        """The first re-rank step after `it` that may preempt (a multiple of k)."""
        if self.dirty:
            return it - it % k + k
        self._clean(running)
        if not self.heap:
            return 1 << 62
        due = max(self.heap[0][0], it + 1)
        return -(-due // k) * k

    def candidates(self, it: int, running) -> list[int]:
        """Running requests that may be preempted at step it; all of them after an arrival."""
        if self.dirty:
            self.dirty = False
            self.heap.clear()
            return list(running)
        out = []
        h = self.heap
        while True:
            self._clean(running)
            if not h or h[0][0] > it:
                return out
            out.append(heapq.heappop(h)[1])


def _rerank(alarms: _Alarms, running, waiting, progress, started, epoch, it, ctx, used, reserve, P,
            kv):
    """Preempt the running requests with the largest keys for waiting ones with strictly smaller
    keys; the preempted go back to the queue with their tokens kept."""
    ids = alarms.candidates(it, running)
    if not ids:
        return 0, ctx, used
    gen = [progress[i] + it - started[i] for i in ids]
    # Largest key first, ties: the earlier arrival. The j-th largest running key against the j-th
    # smallest waiting one: every candidate is then smaller than every preempted request, so the
    # admission loop refills the slots with them.
    order = sorted([(-alarms.key(i, g), i, g) for i, g in zip(ids, gen)])
    taken = []
    for neg, i, g in order:
        if not waiting or not waiting[0][0] < -neg:
            break
        if kv is not None and used - reserve[i] + reserve[waiting[0][1]] > kv:
            break
        taken.append(heapq.heappop(waiting))
        running.discard(i)
        progress[i] = g
        epoch[i] += 1
        ctx -= P[i] + g
        used += reserve[taken[-1][1]] - reserve[i]
        heapq.heappush(waiting, (-neg, i))
    for item in taken:
        used -= reserve[item[1]]  # admission adds them back
        heapq.heappush(waiting, item)
    head = waiting[0][0] if waiting else math.inf
    for neg, i, g in order:
        if i in running:
            alarms.set(i, g, it, head, -neg)
    return len(taken), ctx, used
