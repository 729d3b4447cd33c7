"""Speed of the scheduling simulator: 100,000 requests under continuous batching, on one core.

Requests have log-normal output lengths (median 200 tokens, capped at 4096) and prompts of 20-2000
tokens, all arriving at t=0, served by 64 slots with the default (CPU-measured) cost model, once
with SJF on a noisy prediction and once with SRPT re-ranking every 8 decode steps on noisy
progressive predictions. The event engine jumps from finish to finish; the side-by-side baseline
is the per-step reference simulator (simulator/naive.py) on fewer requests, timed per request, and
the results of the two are checked to agree.

    OMP_NUM_THREADS=1 python benchmarks/bench_simulate.py [--requests 100000] [--naive 2000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from forelen.simulator import CostModel, fcfs, make_workload, simulate, sjf, srpt
from forelen.simulator.naive import naive_continuous

STEPS = np.array([0, 1, 2, 4, 8, 16, 32, 64])


def requests(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.minimum(np.ceil(rng.lognormal(np.log(200), 0.9, n)), 4096).astype(np.int64)
    p = rng.integers(20, 2000, n)
    w, _ = make_workload(p, y, seed=seed)
    y = w.output_tokens
    noisy = y * np.exp(rng.normal(0, 0.5, n))
    rem = np.maximum(y[:, None] - STEPS, 0) * np.exp(rng.normal(0, 0.5, (n, len(STEPS))) / (1 + STEPS))
    rem = np.where(y[:, None] > STEPS, rem, np.nan)
    return w, {"fcfs": fcfs(n), "sjf": sjf(noisy), "srpt": srpt(STEPS, rem)}


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--naive", type=int, default=2_000, help="requests for the per-step baseline")
    ap.add_argument("--slots", type=int, default=64)
    args = ap.parse_args()
    cost = CostModel()
    w, plans = requests(args.requests)
    print(f"{args.requests:,} requests, {int(w.output_tokens.sum()):,} output tokens, "
          f"{args.slots} slots, continuous batching, cost model {cost}")
    for name, plan in plans.items():
        res, s = timed(lambda: simulate(w, plan, batching="continuous", slots=args.slots, cost=cost))
        jct = (res.finish_s - w.arrival_s).mean()
        print(f"  {name:>5}: {s:6.2f} s wall ({s / args.requests * 1e6:5.1f} us/request), "
              f"{res.decode_steps:,} decode steps, {res.preemptions:,} preemptions, "
              f"mean JCT {jct:,.0f} simulated s")
    small, small_plans = requests(args.naive, seed=1)
    print(f"per-step baseline on {args.naive:,} requests (same slots and cost model):")
    for name in ("sjf", "srpt"):
        plan = small_plans[name]
        ev, te = timed(lambda: simulate(small, plan, batching="continuous", slots=args.slots, cost=cost))
        (fin, _), tn = timed(lambda: naive_continuous(small, plan, slots=args.slots, cost=cost))
        assert np.allclose(ev.finish_s, fin, rtol=1e-9), "the two simulators disagree"
        print(f"  {name:>5}: event engine {te * 1e3:7.1f} ms, per-step {tn * 1e3:8.1f} ms: "
              f"{tn / te:5.1f}x faster, identical schedules")


if __name__ == "__main__":
    main()
