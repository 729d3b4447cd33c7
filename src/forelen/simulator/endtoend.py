"""End-to-end metrics of one predictor: its schedules against FCFS and the oracle.

What the paper measured (vLLM, SJF scheduler, long-sequence scenario): padding ratio 0.18 with EGTP
against 0.51 with TRAIL, average JCT 4.20 against 9.45. forelen replays that comparison in a
deterministic simulator over each config's test rows, for every predictor.

Modes (the keys of a record's `end_to_end.modes`): every predictor is scheduled by SJF on its static
prediction under static batching (`static`) and under continuous batching (`continuous`), so any two
predictors compare like for like; a progressive predictor also gets `continuous-srpt`: continuous
batching with SRPT re-ranking on its re-predictions. Static batching runs batches of
`static_slots` requests (default `auto_static_slots`: many batches, so that an ordering can keep
rows cut at the cap out of some of them); continuous batching has `slots` slots.

Metrics of a run: throughput (output tokens/s and requests/s over the makespan, from the first
arrival to the last completion), mean and p90 job completion time (completion - arrival) and the
padding ratio. Static batching: sum over batches (b * L_max - sum L_i) / sum over batches
(b * L_max), b the batch's size (docs/DESIGN.md section 7). Continuous batching has no padding rows, so
the same quantity (slot-steps that generate no token / slot-steps of capacity) counts slots left
empty, summed over decode steps with B slots: the batch draining behind stragglers, or starved
(no request waiting, or none fits the KV budget). Both lie in [0, 1).

Intervals (`Scenario.bootstrap`): the schedules replayed on `stats.N_BOOT` group resamples of the
test rows, drawn as `stats.unit_weights` draws them (seed `stats.SEED`), so schedule replicate b
pairs with replicate b of the MAE's interval and of every other record over the same rows; and on
the leave-one-unit-out samples (the jackknife), so that `stats.interval` gives a BCa interval. A
record stores each series as base64 of little-endian float32 (`series` decodes it).
"""

from __future__ import annotations

import base64
import itertools
import os
from dataclasses import dataclass, field, replace

import numpy as np

from forelen import stats
from forelen.errors import ForelenError
from forelen.simulator.cost import CostModel
from forelen.simulator.engine import simulate
from forelen.simulator.policies import Plan, fcfs, oracle, sjf, srpt
from forelen.simulator.requests import Workload, make_workload
from forelen.stats import group_resamples

# Mode key -> (batching, policy). SJF on the static prediction in both batching modes for every
# predictor; SRPT on the re-predictions only for a progressive one, as a mode of its own.
SJF_MODES = {"static": ("static", "sjf"), "continuous": ("continuous", "sjf")}
SRPT_MODES = {"continuous-srpt": ("continuous", "srpt")}
MODES = (*SJF_MODES, *SRPT_MODES)  # every mode key a record may hold, in display order
BATCHING = ("static", "continuous")
RATIO_KEYS = ("throughput_tok_s", "jct_mean_s", "jct_p90_s", "padding_ratio")
BOOT_KEYS = ("padding_ratio", "jct_mean_s", "throughput_tok_s")  # the bootstrapped metrics
ENCODING = "base64 float32 little-endian"


def modes_for(progressive: bool) -> dict[str, tuple[str, str]]:
    """The modes a predictor is scheduled in: (batching, policy) by mode key."""
    return SJF_MODES | SRPT_MODES if progressive else dict(SJF_MODES)


def auto_slots(n: int) -> int:
    """Default slots of continuous batching: a quarter of the requests, between 2 and 64, so
    requests always queue (with B >= n every request starts at once and no ordering can change
    anything)."""
    return int(min(64, max(2, n // 4)))


def auto_static_slots(n: int) -> int:
    """Default batch size of static batching: n // 16 between 2 and 16, so there are at least 16
    batches (n >= 32) and an ordering shows in how many of them hold a row cut at the cap.

    A batch runs until its longest row ends, so one capped row costs the whole batch the cap. With
    a capped share c, a batch of b rows in an uninformative order holds no capped row with
    probability (1 - c)^b, while an ordering that puts the capped rows last leaves about
    n (1 - c) / b batches capped-free. On a config like v0.1.0's long split (254 rows, 45.6% at
    the cap), b = 63 (the old default, n // 4) gives 5 batches: (1 - c)^63 ~ 2e-17 and at most
    2 capped-free batches even for the oracle, and any ranking that lets one capped row into each
    of them scores the same padding as FCFS (1 - mean length / cap = 0.5146 for every predictor).
    b = 15 gives 17 batches, 9 of them capped-free for the oracle, so a predictor's padding moves
    in steps of about 1/17 with how well it keeps capped rows out of the short batches; an
    uninformative order still finds a capped-free batch with probability (1 - c)^15 ~ 1e-4 each,
    so it sits at the floor, as it should. Batches of at most 16 are also the sizes static
    batching (transformers `generate`) is run at."""
    return int(min(16, max(2, n // 16)))


@dataclass(frozen=True)
class SimSettings:
    """Simulator settings; `slots=None` resolves to auto_slots(test rows) and `static_slots=None`
    to auto_static_slots(test rows) per config. `seed` seeds the arrival order (and Poisson
    arrivals), not the bootstrap, which uses `stats.SEED`."""

    slots: int | None = None
    kv_budget_tokens: int | None = None
    rate: float | None = None  # requests/s of Poisson arrivals; None: all arrive at t=0
    seed: int = 42
    aging: float = 0.0
    rerank_every: int = 8
    cost: CostModel = field(default_factory=CostModel)
    cost_source: str = "default"
    static_slots: int | None = None  # batch size of static batching

    def __post_init__(self):
        if self.slots is not None and self.slots < 1:
            raise ForelenError(f"--slots must be >= 1, got {self.slots}")
        if self.static_slots is not None and self.static_slots < 1:
            raise ForelenError(f"--static-slots must be >= 1, got {self.static_slots}")
        if self.kv_budget_tokens is not None and self.kv_budget_tokens < 1:
            raise ForelenError(f"--kv-budget-tokens must be >= 1 token, got {self.kv_budget_tokens}")
        if self.rate is not None and not self.rate > 0:
            raise ForelenError(f"--rate must be > 0 requests/s, got {self.rate}")
        if self.rerank_every < 1:
            raise ForelenError(f"--rerank-every must be >= 1 decode step, got {self.rerank_every}")
        if self.aging < 0:
            raise ForelenError(f"--aging must be >= 0, got {self.aging}")

    def resolved(self, n: int) -> "SimSettings":
        return replace(self, slots=self.slots or auto_slots(n),
                       static_slots=self.static_slots or auto_static_slots(n))

    def batch_slots(self, batching: str) -> int:
        return self.static_slots if batching == "static" else self.slots

    def record(self) -> dict:
        return {"slots": self.slots, "static_slots": self.static_slots,
                "kv_budget_tokens": self.kv_budget_tokens,
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


def _simulate(w: Workload, plan: Plan, batching: str, s: SimSettings):
    return simulate(w, plan, batching=batching, slots=s.batch_slots(batching), cost=s.cost,
                    kv_budget_tokens=s.kv_budget_tokens, rerank_every=s.rerank_every, aging=s.aging)


def run(w: Workload, plan: Plan, mode: str, s: SimSettings) -> dict:
    """Summary of one schedule; `mode` is a batching mode (static or continuous)."""
    res = _simulate(w, plan, mode, s)
    return summarize(w, res.finish_s, res.padding)


def capped_share(w: Workload, batch: np.ndarray, cap: int) -> float:
    """Share of static batches holding at least one row at the cap (each costs its batch the cap)."""
    capped = np.bincount(batch, weights=(w.output_tokens >= cap).astype(np.float64))
    return float(np.mean(capped > 0))


def encode(values) -> str:
    """A series as a record stores it: base64 of its little-endian float32 values."""
    return base64.b64encode(np.asarray(values, "<f4").tobytes()).decode("ascii")


def series(value) -> np.ndarray:
    """A stored replicate or jackknife series as float64: the base64 float32 little-endian string
    of current records, or the plain list of records from v0.1.0 (200 replicates)."""
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value), "<f4").astype(np.float64)
    return np.asarray(value, np.float64)


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

    def reference(self, batching: str, name: str) -> tuple[dict, float | None]:
        """(summary, capped batch share) of FCFS (`fcfs`) or the oracle (`oracle-sjf`,
        `oracle-srpt`) under `batching`."""
        if (batching, name) not in self._cache:
            w = self.workload
            plan = fcfs(w.n) if name == "fcfs" else oracle(w.output_tokens, name.split("-")[1])
            self._cache[batching, name] = self._run(w, plan, batching)
        return self._cache[batching, name]

    def _run(self, w: Workload, plan: Plan, batching: str) -> tuple[dict, float | None]:
        res = _simulate(w, plan, batching, self.settings)
        capped = (capped_share(w, res.batch, self.max_new_tokens)
                  if res.batch is not None and self.max_new_tokens is not None else None)
        return summarize(w, res.finish_s, res.padding), capped

    def plan(self, predictions, steps=None, remaining=None, mode: str = "continuous") -> Plan:
        """The plan of mode key `mode`: SRPT on the re-predictions for `continuous-srpt`, else SJF
        on the prediction. Arguments are in the input row order."""
        if modes_for(True)[mode][1] == "srpt":
            if remaining is None:
                raise ForelenError(f"mode {mode!r} needs progressive predictions")
            return srpt(steps, np.asarray(remaining, np.float64)[self.order])
        return sjf(np.asarray(predictions, np.float64)[self.order])

    def block(self, predictions, steps=None, remaining=None) -> dict:
        """The record's `end_to_end` section for one predictor: a block per mode."""
        modes = {}
        for mode, (batching, policy) in modes_for(remaining is not None).items():
            got, capped = self._run(self.workload, self.plan(predictions, steps, remaining, mode),
                                    batching)
            (f, f_cap), (o, o_cap) = (self.reference(batching, "fcfs"),
                                      self.reference(batching, f"oracle-{policy}"))
            modes[mode] = {"batching": batching, "policy": policy, "predictor": got, "fcfs": f,
                           "oracle": o, "vs_fcfs": ratios(got, f), "vs_oracle": ratios(got, o)}
            if capped is not None:
                modes[mode]["capped_batches"] = {"predictor": capped, "fcfs": f_cap,
                                                 "oracle": o_cap}
        return {"settings": self.settings.record(), "modes": modes}

    def bootstrap(self, predictions, groups, steps=None, remaining=None, *,
                  n_boot: int = stats.N_BOOT, seed: int = stats.SEED,
                  workers: int | None = None) -> dict:
        """The predictor's schedules, in every mode of `block`, replayed on `n_boot` group
        resamples of the test rows and on every leave-one-unit-out sample, at the settings of the
        full run (its slots too).

        Resample b is replicate b of `stats.unit_weights` with the same seed over the same units
        (`stats.group_resamples`), so two records of one config hold the same resamples in the
        same order and pair with each other and with the MAE's replicates; the jackknife lists
        the units in sorted order, as `stats` does. `stats.interval(value, series(modes[m][k]),
        series(jackknife[m][k]))` is a metric's BCa interval; the same call on the differences of
        two records' series is the paired interval of a difference.

        `workers` processes share the replicates (default: every core this process may use, for
        a bootstrap large enough to pay for starting them); the result does not depend on it."""
        pred = np.asarray(predictions, np.float64)
        rem = None if remaining is None else np.asarray(remaining, np.float64)
        job = _Replay(self, pred, steps, rem, groups, seed, n_boot)
        index, units = stats._units(groups, len(pred))
        reps = _run_replicates(job, _workers(workers, n_boot, len(pred)))
        jack = np.full((units, len(job.modes), len(BOOT_KEYS)), np.nan)
        if units > 1:
            for u in range(units):
                jack[u] = job.replay(np.flatnonzero(index != u))
        settings = stats.settings(n_boot, seed)
        return {"unit": "group", "units": int(units), "n_boot": int(n_boot), "seed": int(seed),
                "method": settings["method"], "level": settings["level"], "encoding": ENCODING,
                "metrics": list(BOOT_KEYS),
                "modes": {m: {"policy": policy} | {k: encode(reps[:, i, j])
                                                   for j, k in enumerate(BOOT_KEYS)}
                          for i, (m, (_, policy)) in enumerate(job.modes.items())},
                "jackknife": {m: {k: encode(jack[:, i, j]) for j, k in enumerate(BOOT_KEYS)}
                              for i, m in enumerate(job.modes)}}


class _Replay:
    """One predictor's schedules on resampled rows: what a bootstrap worker process runs."""

    def __init__(self, scenario: Scenario, pred, steps, rem, groups, seed: int, n_boot: int):
        self.scenario, self.pred, self.steps, self.rem = scenario, pred, steps, rem
        self.groups, self.seed, self.n_boot = np.asarray(groups), seed, n_boot
        self.modes = modes_for(rem is not None)

    def replay(self, rows) -> np.ndarray:
        """(modes, BOOT_KEYS) of each mode's schedule over input rows `rows` (repeats allowed)."""
        sc, s = self.scenario, self.scenario.settings
        w, order = make_workload(sc.prompt_tokens[rows], sc.output_tokens[rows], rate=s.rate,
                                 seed=s.seed, max_new_tokens=sc.max_new_tokens)
        picked = rows[order]
        tokens, first = float(w.output_tokens.sum()), float(w.arrival_s.min())
        out = np.empty((len(self.modes), len(BOOT_KEYS)))
        for i, (batching, policy) in enumerate(self.modes.values()):
            plan = srpt(self.steps, self.rem[picked]) if policy == "srpt" else sjf(self.pred[picked])
            res = _simulate(w, plan, batching, s)
            out[i] = (res.padding, float(np.mean(res.finish_s - w.arrival_s)),
                      tokens / (float(res.finish_s.max()) - first))
        return out

    def __call__(self, span: tuple[int, int]) -> np.ndarray:
        """Replicates start..stop-1: (stop - start, modes, BOOT_KEYS)."""
        start, stop = span
        out = np.empty((stop - start, len(self.modes), len(BOOT_KEYS)))
        draws = group_resamples(self.groups, seed=self.seed, n_boot=self.n_boot)
        for b, rows in enumerate(itertools.islice(draws, start, stop)):
            out[b] = self.replay(rows)
        return out


# Below this many replicate-rows a bootstrap runs in this process: starting workers costs more.
_PARALLEL_FROM = 500_000


def _workers(requested: int | None, n_boot: int, rows: int) -> int:
    if requested is not None:
        return max(1, int(requested))
    if n_boot * rows < _PARALLEL_FROM:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, n_boot // 500))


def _run_replicates(job: _Replay, workers: int) -> np.ndarray:
    """Every replicate of `job`, split into contiguous spans over `workers` processes (spawned:
    nothing of the caller's state, threads or locks is inherited). Where worker processes cannot
    start (a caller's main module that is not import-safe, a sandbox), the replicates run here."""
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        edges = np.linspace(0, job.n_boot, workers + 1).astype(int)
        spans = list(zip(edges[:-1].tolist(), edges[1:].tolist()))
        try:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                return np.concatenate(list(pool.map(job, spans)))
        except Exception:  # noqa: BLE001  a worker that cannot start (a daemon's child, a broken
            pass  # pool); an error of the replay itself comes back from the run here
    return job((0, job.n_boot))
