"""End-to-end metrics of one predictor: its schedule against FCFS and the oracle, both batching modes.

What the paper measured (vLLM, SJF scheduler, long-sequence scenario): padding ratio 0.18 with EGTP
against 0.51 with TRAIL, average JCT 4.20 against 9.45. forelen replays that comparison in a
deterministic simulator over each config's test rows, for every predictor.

Metrics of a run: throughput (output tokens/s and requests/s over the makespan, from the first
arrival to the last completion), mean and p90 job completion time (completion - arrival) and the
padding ratio. Static batching: sum over batches (b * L_max - sum L_i) / sum over batches
(b * L_max), b the batch's size (docs/DESIGN.md section 7). Continuous batching has no padding rows, so
the same quantity (slot-steps that generate no token / slot-steps of capacity) counts slots left
empty, summed over decode steps with B slots: the batch draining behind stragglers, or starved
(no request waiting, or none fits the KV budget). Both lie in [0, 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from forelen_bench.errors import ForelenError
from forelen_bench.simulator.cost import CostModel
from forelen_bench.simulator.engine import simulate
from forelen_bench.simulator.policies import Plan, fcfs, oracle, sjf, srpt
from forelen_bench.simulator.requests import Workload, make_workload

MODES = ("static", "continuous")
RATIO_KEYS = ("throughput_tok_s", "jct_mean_s", "jct_p90_s", "padding_ratio")
# The group bootstrap of a record's schedule (Scenario.bootstrap): 200 replicates, so each end of
# a 95% percentile interval rests on 5 of them; enough for a verdict that is not borderline, and
# the record keeps every replicate, so a reader can recompute any interval from it.
BOOT_N = 200
BOOT_KEYS = ("padding_ratio", "jct_mean_s", "throughput_tok_s")


def auto_slots(n: int) -> int:
    """Default slots: a quarter of the requests, between 2 and 64, so requests always queue
    (with B >= n every request starts at once and no ordering can change anything)."""
    return int(min(64, max(2, n // 4)))


@dataclass(frozen=True)
class SimSettings:
    """Simulator settings; `slots=None` resolves to auto_slots(test rows) per config."""

    slots: int | None = None
    kv_budget_tokens: int | None = None
    rate: float | None = None  # requests/s of Poisson arrivals; None: all arrive at t=0
    seed: int = 42
    aging: float = 0.0
    rerank_every: int = 8
    cost: CostModel = field(default_factory=CostModel)
    cost_source: str = "default"

    def __post_init__(self):
        if self.slots is not None and self.slots < 1:
            raise ForelenError(f"--slots must be >= 1, got {self.slots}")
        if self.kv_budget_tokens is not None and self.kv_budget_tokens < 1:
            raise ForelenError(f"--kv-budget must be >= 1 token, got {self.kv_budget_tokens}")
        if self.rate is not None and not self.rate > 0:
            raise ForelenError(f"--rate must be > 0 requests/s, got {self.rate}")
        if self.rerank_every < 1:
            raise ForelenError(f"--rerank-every must be >= 1 decode step, got {self.rerank_every}")
        if self.aging < 0:
            raise ForelenError(f"--aging must be >= 0, got {self.aging}")

    def resolved(self, n: int) -> "SimSettings":
        return replace(self, slots=self.slots or auto_slots(n))

    def record(self) -> dict:
        return {"slots": self.slots, "kv_budget_tokens": self.kv_budget_tokens,
                "arrival": "simultaneous" if self.rate is None else "poisson", "rate": self.rate,
                "seed": self.seed, "aging": self.aging, "rerank_every": self.rerank_every,
                "cost_model": self.cost.coefficients() | {"source": self.cost_source}}


def summarize(w: Workload, finish_s: np.ndarray, padding: float) -> dict:
    jct = finish_s - w.arrival_s
    makespan = float(finish_s.max() - w.arrival_s.min())
    return {"requests": int(w.n), "throughput_tok_s": float(w.output_tokens.sum() / makespan),
            "throughput_req_s": float(w.n / makespan), "jct_mean_s": float(jct.mean()),
            "jct_p90_s": float(np.percentile(jct, 90)), "padding_ratio": float(padding),
            "makespan_s": makespan}


def ratios(pred: dict, ref: dict) -> dict:
    return {k: (pred[k] / ref[k] if ref[k] else None) for k in RATIO_KEYS}


def run(w: Workload, plan: Plan, mode: str, s: SimSettings) -> dict:
    res = simulate(w, plan, batching=mode, slots=s.slots, cost=s.cost,
                   kv_budget_tokens=s.kv_budget_tokens, rerank_every=s.rerank_every, aging=s.aging)
    return summarize(w, res.finish_s, res.padding)


class Scenario:
    """One config's workload and settings; FCFS and oracle runs are computed once and shared."""

    def __init__(self, prompt_tokens, output_tokens, settings: SimSettings = SimSettings(),
                 max_new_tokens: int | None = None):
        s = settings.resolved(len(output_tokens))
        self.settings = s
        self.prompt_tokens = np.asarray(prompt_tokens, np.int64)
        self.output_tokens = np.asarray(output_tokens, np.int64)
        self.max_new_tokens = max_new_tokens
        self.workload, self.order = make_workload(prompt_tokens, output_tokens, rate=s.rate,
                                                  seed=s.seed, max_new_tokens=max_new_tokens)
        self._cache: dict = {}

    def reference(self, mode: str, name: str) -> dict:
        if (mode, name) not in self._cache:
            w = self.workload
            plan = fcfs(w.n) if name == "fcfs" else oracle(w.output_tokens, name.split("-")[1])
            self._cache[mode, name] = run(w, plan, mode, self.settings)
        return self._cache[mode, name]

    def plan(self, predictions, steps=None, remaining=None, mode: str = "continuous") -> Plan:
        """SRPT for progressive predictors under continuous batching, else SJF on the prediction.
        Arguments are in the input row order; static batching cannot re-rank a running batch."""
        if remaining is not None and mode == "continuous":
            return srpt(steps, np.asarray(remaining, np.float64)[self.order])
        return sjf(np.asarray(predictions, np.float64)[self.order])

    def block(self, predictions, steps=None, remaining=None) -> dict:
        """The record's `end_to_end` section for one predictor."""
        modes = {}
        for mode in MODES:
            plan = self.plan(predictions, steps, remaining, mode)
            got = run(self.workload, plan, mode, self.settings)
            f, o = self.reference(mode, "fcfs"), self.reference(mode, f"oracle-{plan.name}")
            modes[mode] = {"policy": plan.name, "predictor": got, "fcfs": f, "oracle": o,
                           "vs_fcfs": ratios(got, f), "vs_oracle": ratios(got, o)}
        return {"settings": self.settings.record(), "modes": modes}

    def bootstrap(self, predictions, groups, steps=None, remaining=None, *, n_boot: int = BOOT_N,
                  seed: int | None = None) -> dict:
        """The predictor's schedule replayed on `n_boot` group resamples of the test rows (whole
        prompts drawn with replacement; `metrics.group_resamples`), at the settings of the full
        run (its slots too). Two records of one config hold the same resamples in the same order
        (same rows, same seed), so their replicates pair: a paired interval of a difference in
        padding ratio or JCT comes from the records alone."""
        from forelen_bench.metrics import group_resamples

        s = self.settings
        seed = s.seed if seed is None else seed
        pred = np.asarray(predictions, np.float64)
        rem = None if remaining is None else np.asarray(remaining, np.float64)
        out: dict = {"unit": "group", "n_boot": n_boot, "seed": seed, "metrics": list(BOOT_KEYS),
                     "modes": {m: {k: [] for k in BOOT_KEYS} for m in MODES}}
        for rows in group_resamples(groups, seed=seed, n_boot=n_boot):
            w, order = make_workload(self.prompt_tokens[rows], self.output_tokens[rows],
                                     rate=s.rate, seed=s.seed, max_new_tokens=self.max_new_tokens)
            picked = rows[order]
            for mode in MODES:
                if rem is not None and mode == "continuous":
                    plan = srpt(steps, rem[picked])
                else:
                    plan = sjf(pred[picked])
                got = run(w, plan, mode, s)
                for k in BOOT_KEYS:
                    out["modes"][mode][k].append(round(got[k], 6))
        for mode in MODES:
            out["modes"][mode]["policy"] = self.plan(pred, steps, rem, mode).name
        return out
