"""`forelen replay`: a config's test prompts served through the real `hf` engine under each
scheduling policy, measured per request; the simulator on the same requests and arrivals, with a
cost model profiled on the same engine in the same run.

What the engine does (one process, the cores the build uses):

- **Arrival.** Requests arrive at their trace times (Poisson at `rate`, or the timestamps of a
  real trace). On arrival a request is prefilled at once (prefill before decode, as vLLM schedules
  waiting prefills first): one forward over its prompt, which samples its first token and, for a
  hidden-state predictor, yields the prompt's recorded features (entropy-weighted states) in the
  same pass. The prediction is made there, from those features: no extra forward. Its KV is copied
  out of the prefill slot and the request waits, prefilled, for a decode slot.
- **Admission** (what every policy controls): a free decode slot takes the waiting request with
  the smallest key: fcfs the arrival order, sjf the predicted length, oracle the row's recorded
  length, srpt the predicted remaining length (a progressive predictor, re-predicted at the
  observed steps from the step states gathered in the engine).
- **Preemption** (`preempt=True` only; srpt always preempts): every `rerank_every` decode steps,
  while a waiting request's key is strictly smaller than the largest key running, the running one
  is swapped out: its KV (prompt and generated tokens) is copied to host memory and copied back
  when it is admitted again, so nothing is recomputed. A running request's key is its remaining
  length: the static prediction minus the tokens generated (sjf, oracle) or the progressive
  prediction (srpt).
- **The clock.** Wall time, except that a gap in which nothing runs or waits is skipped rather
  than slept: nothing is computed in it, so no request's times change.

Each request samples with its row's seed, so it generates the tokens the build recorded (up to
floating-point blocking): the measured lengths are checked against the recorded ones.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from forelen import replay_vllm
from forelen.builders.engines import GenerationRequest, HFSettings
from forelen.builders.engines.hf import HFEngine
from forelen.builders.engines.sampling import eos_ids
from forelen.builders.engines.scheduler import WaitQueue, preemption_victim
from forelen.builders.plan import sample_seed, uid_of
from forelen.builders.planning import load_prompts, plan_prompts
from forelen.builders.splits import SPLITS
from forelen.dataset import atomic_write_bytes
from forelen.errors import ForelenError
from forelen.leaderboard.evaluate import fit_on, load_config, make_predictor, runnable_on
from forelen.leaderboard.records import stamp
from forelen.leaderboard.report import resolve_names
from forelen.models import load_model, load_tokenizer, model_dir, resolve_model
from forelen.predictors import load_predictor
from forelen.predictors._saved import layers_read, load, mismatch
from forelen.provenance import machine
from forelen.replay_options import ReplayOptions
from forelen.simulator import policies
from forelen.simulator.cost import CostModel, fit_cost_model, load_cost_model
from forelen.simulator.engine import simulate
from forelen.simulator.profile import profile_engine
from forelen.simulator.requests import Workload
from forelen.stats import SEED, group_means, interval
from forelen.stats import settings as stats_settings
from forelen.tables import FeatureTable

POLICIES = ("fcfs", "sjf", "srpt", "oracle")
# the leaderboard's simulated schedule (vLLM's): prefill on admission, batched per step; a
# preempted request recomputes its context. The hf engine here prefills on arrival and swaps.
VLLM_SCHEDULE = {"prefill_at": "admission", "resume": "recompute"}
RANKED = ("sjf", "srpt")  # the policies that rank by a predictor


def parse_policy(spec: str) -> tuple[str, str | None]:
    """`sjf` (the run's --predictor or --from) or `sjf:NAME` (predictor NAME, fitted here), so
    one run compares several predictors against one FCFS on the same trace."""
    base, _, name = spec.partition(":")
    return base, (name or None)


@dataclass(frozen=True)
class TraceRequest:
    uid: str
    prompt: str  # as the generator saw it (chat template applied)
    prompt_ids: tuple[int, ...]
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int
    arrival_s: float
    recorded_tokens: int | None  # the row's output length in the dataset (oracle, and a check)
    group_id: str = ""
    recorded_ids: tuple[int, ...] | None = None  # its response tokens, up to the budget


@dataclass
class Served:
    """One request as the engine served it; times in seconds from the trace's start."""

    uid: str
    arrival_s: float
    prompt_tokens: int
    first_token_s: float = float("nan")  # the prefill sampled it
    admitted_s: float = float("nan")  # first entry into a decode slot
    finish_s: float = float("nan")
    tokens: int = 0
    finish_reason: str = ""
    key: float = float("nan")  # the admission key at arrival
    prefill_ms: float = 0.0  # the prompt's forward and first-token logits
    feature_ms: float = 0.0  # prompt features for the predictor (entropy, pooling)
    predict_ms: float = 0.0  # the predictor's own calls, all of this request's
    preemptions: int = 0
    token_ids: tuple = field(default=(), repr=False)  # generated (not written to the JSON)


# ----------------------------------------------------------------------------- the trace


def trace_from_source(spec: str, prompt_column: str, entry: dict, tokenizer,
                      arrivals: np.ndarray | None, seed: int, limit: int | None = None,
                      max_new_tokens: int | None = None, say=None):
    """Prompts of a file or registered source, rendered as the config's build renders its own
    (its split's instructions, chat template, date and prompt cut), sampled with the config's
    temperature and top_p and a per-request seed as a build derives it. Their lengths are not
    known: no oracle, nothing to check the tokens against. `arrivals` None: only count them.

    Returns the requests in the source's seeded order (its arrival order)."""
    build = entry["build"]
    budget = _budget(build, max_new_tokens)
    mixed = load_prompts([spec], prompt_column, limit, seed, build.get("turns") or "first", say)
    planned = plan_prompts(mixed, SPLITS.get(build["split"]), tokenizer,
                           int(build["max_prompt_tokens"]), build.get("date_string"))
    if arrivals is None:
        return planned
    if len(arrivals) < len(planned):
        raise ForelenError(f"--arrivals holds {len(arrivals)} timestamps for {len(planned)} "
                           f"requests; pass --limit {len(arrivals)} or a longer trace")
    out = []
    for j, p in enumerate(planned):
        uid = uid_of(p.group_id, 0)
        out.append(TraceRequest(uid, p.prompt, tuple(p.prompt_ids), budget,
                                float(build["temperature"]), float(build["top_p"]),
                                sample_seed(int(build["seed"]), uid), float(arrivals[j]), None,
                                p.group_id, None))
    return out


def _budget(build: dict, max_new_tokens: int | None) -> int:
    budget = int(build["max_new_tokens"])
    if max_new_tokens is not None:
        if not 0 < max_new_tokens <= budget:
            raise ForelenError(f"--max-new-tokens must be between 1 and the config's budget "
                               f"{budget}, got {max_new_tokens}")
        budget = max_new_tokens
    return budget


def poisson_arrivals(n: int, rate: float, seed: int) -> np.ndarray:
    """n arrival times of a Poisson process at `rate` requests/s; the first opens the run."""
    if not rate > 0:
        raise ForelenError(f"--rate must be > 0 requests/s, got {rate}")
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=n)
    return np.concatenate([[0.0], np.cumsum(gaps[:-1])])


def read_arrivals(path: str) -> np.ndarray:
    """Timestamps (seconds) of a real trace: a JSON list, or one number per line (a CSV's first
    column); sorted and shifted so that the first is 0."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ForelenError(f"--arrivals file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ForelenError(f"cannot read --arrivals {path}: {exc}") from None
    try:
        if text.lstrip().startswith("["):
            values = [float(x) for x in json.loads(text)]
        else:
            values = [float(line.split(",")[0]) for line in text.splitlines()
                      if line.strip() and not line.lstrip().startswith("#")]
    except (ValueError, TypeError):
        raise ForelenError(f"--arrivals {path}: expected numbers (seconds), a JSON list or one "
                           "per line") from None
    t = np.sort(np.asarray(values, np.float64))
    if not len(t) or not np.isfinite(t).all():
        raise ForelenError(f"--arrivals {path} holds no finite timestamps")
    return t - t[0]


def trace_from_config(test, entry: dict, tokenizer, arrivals: np.ndarray, seed: int,
                      limit: int | None = None, max_new_tokens: int | None = None):
    """The config's test rows in a seeded arrival order, with their prompts re-tokenised.

    Returns (requests in arrival order, order): request j is test row order[j]."""
    n = test.n if limit is None else min(limit, test.n)
    order = np.random.default_rng(seed).permutation(test.n)[:n]
    if len(arrivals) < n:
        raise ForelenError(f"--arrivals holds {len(arrivals)} timestamps for {n} requests; pass "
                           f"--limit {len(arrivals)} or a longer trace")
    budget = _budget(entry["build"], max_new_tokens)
    out = []
    for j, i in enumerate(order):
        text = str(test["prompt"][i])
        ids = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
        recorded = int(test["output_tokens"][i])
        response = (tuple(int(t) for t in test["response_token_ids"][i][:budget])
                    if "response_token_ids" in test else None)
        out.append(TraceRequest(str(test["uid"][i]), text, ids, budget,
                                float(test["temperature"][i]), float(test["top_p"][i]),
                                int(test["seed"][i]), float(arrivals[j]),
                                min(recorded, budget), str(test["group_id"][i]), response))
    return out, order


def request_table(req: TraceRequest, pooled: dict, columns, states=None):
    """The one-row FeatureTable a predictor reads for one request: its text and prompt length,
    the prefill's pooled features (stored float16, as the dataset holds them) and, for step
    predictors, the step states gathered so far."""
    cols = {"prompt": np.array([req.prompt], dtype=object),
            "prompt_tokens": np.array([len(req.prompt_ids)], np.int32),
            "group_id": np.array([req.group_id], dtype=object)}
    for name, vec in pooled.items():
        cols[name] = np.asarray(vec, np.float16)[None]
    for name, arr in (states or {}).items():
        cols[name] = np.empty(1, dtype=object)
        cols[name][0] = arr
    return FeatureTable({c: cols[c] for c in columns if c in cols})


# ----------------------------------------------------------------------------- the engine


class ServingEngine(HFEngine):
    """The `hf` runner as a server uses it: step states recorded only for srpt
    (`record_steps`), and no extra step for a row cut at its budget (serving keeps no
    final-token features)."""

    record_steps = False

    def _record(self, rows, logits, captured):
        if self.record_steps:
            super()._record(rows, logits, captured)

    def append(self, row, token):
        if token in self.eos_ids:
            row.done = "stop"
            return
        row.tokens.append(token)
        if len(row.tokens) >= row.request.max_new_tokens:
            row.done = "length"


def serving_engine(model, tokenizer, *, slots: int, kv_budget_gib: float, layers=(),
                   record: str = "none", steps: int = 64, max_prompt: int = 0, max_new: int = 0):
    """An `hf` engine for serving: `record` = none (plain serving), prompt (the prefill's pooled
    features only) or steps (also each decode step's recorded states, for srpt)."""
    settings = HFSettings(slots=slots, kv_budget_gib=kv_budget_gib, record=record != "none",
                              layers=tuple(layers), steps=steps if record == "steps" else 0,
                              max_prompt_tokens=max_prompt, max_new_tokens=max_new)
    engine = ServingEngine(model, tokenizer, settings)
    engine.record_steps = record == "steps"
    return engine


class Server:
    """Drives one engine through a trace under one policy; see the module docstring."""

    def __init__(self, engine, policy: str, predictor=None, columns=(), preempt: bool = False,
                 rerank_every: int = 8, observed_steps=(0, 1, 2, 4, 8, 16, 32, 64)):
        self.engine, self.policy, self.predictor = engine, policy, predictor
        self.columns = list(columns)
        self.preempt = preempt or policy == "srpt"
        self.rerank_every = max(1, int(rerank_every))
        self.observed = tuple(observed_steps)

    # ------------------------------------------------------------------ keys

    def _table(self, req: TraceRequest, prefix, states=None):
        return request_table(req, prefix.pooled, self.columns, states)

    def _predict(self, i: int, req: TraceRequest, prefix) -> float:
        t0 = time.perf_counter()
        # no step generated yet: step-state columns hold none (plp's t = 0 prediction)
        table = self._table(req, prefix, {
            c: np.zeros((0, self.engine.model.config.hidden_size), np.float16)
            for c in self.columns if c.startswith("step_states_")})
        if self.policy == "srpt":
            value = float(self.predictor.predict_remaining(table, 0)[0])
        else:
            value = float(self.predictor.predict(table)[0])
        self.served[i].predict_ms += (time.perf_counter() - t0) * 1e3
        return value

    def _remaining(self, i: int, generated: int) -> float:
        """The running key: remaining length after `generated` tokens."""
        if self.policy == "srpt":  # the newest prediction at an observed step <= generated
            t = max(t for t in self.remaining[i] if t <= generated)
            return max(self.remaining[i][t] - (generated - t), 0.0)
        return max(self.static[i] - generated, 0.0)

    def _observe(self, s: int) -> None:
        """srpt: a running row that reached an observed step gets its remaining re-predicted
        from its prompt features and the step states gathered so far."""
        eng = self.engine
        row = eng.rows[s]
        g = len(row.tokens)
        if g not in self.observed or g in self.remaining[row.index] or g > eng.settings.steps:
            return
        req = self.trace[row.index]
        states = {f"step_states_l{x}": eng.states[x][s, :g].numpy().astype(np.float16)
                  for x in eng.layers}
        t0 = time.perf_counter()
        value = float(self.predictor.predict_remaining(self._table(req, row.prefix, states), g)[0])
        self.served[row.index].predict_ms += (time.perf_counter() - t0) * 1e3
        self.remaining[row.index][g] = value

    # ------------------------------------------------------------------ the loop

    def run(self, trace: list[TraceRequest], clock=time.perf_counter) -> list[Served]:
        """Serve the trace; `clock` (seconds) is the wall clock unless a test steps it."""
        import torch

        eng = self.engine
        self.trace = trace
        self.served = [Served(r.uid, r.arrival_s, len(r.prompt_ids)) for r in trace]
        self.static = np.full(len(trace), np.nan)
        self.remaining = [dict() for _ in trace]
        self.preemptions = 0
        requests = [GenerationRequest(r.uid, r.prompt_ids, r.max_new_tokens, r.temperature,
                                      r.top_p, r.seed) for r in trace]
        eng.setup(requests)
        waiting = WaitQueue()  # of the engine's Parked requests, by key
        start, skipped = clock(), 0.0

        def now() -> float:
            return clock() - start + skipped

        def finish(i: int, row) -> None:
            s = self.served[i]
            s.finish_s, s.tokens, s.finish_reason = now(), len(row.tokens), row.done
            s.token_ids = tuple(row.tokens)

        def admit(slot: int, parked) -> None:
            eng.unpark(slot, parked)
            served = self.served[parked.row.index]
            if served.admitted_s != served.admitted_s:  # NaN: first admission
                served.admitted_s = now()

        def arrive(i: int) -> None:
            req, served = trace[i], self.served[i]
            feature0, prefill0 = eng.timing["feature_s"], eng.timing["prefill_s"]
            prefix = eng.prefill(req.prompt_ids)
            if eng.records_features:  # else nothing is computed there
                served.feature_ms = (eng.timing["feature_s"] - feature0) * 1e3
            served.prefill_ms = (eng.timing["prefill_s"] - prefill0) * 1e3
            row = eng.start(i, requests[i], prefix)
            served.first_token_s = now()
            if self.policy == "fcfs":
                key = float(i)
            elif self.policy == "oracle":
                key = float(req.recorded_tokens)
            else:
                key = self._predict(i, req, prefix)
            if self.policy == "srpt":
                self.remaining[i][0] = key
            self.static[i] = key
            served.key = key
            if row.done:  # EOS as the first token, or a budget of one
                served.admitted_s = served.first_token_s
                finish(i, row)
                return
            waiting.push(key, i, eng.park(eng.cache.scratch, row))

        def preempt(n: int) -> None:
            """Swap out the running request with the largest remaining key while a waiting
            one's key is strictly smaller."""
            while waiting:
                keys = [self._remaining(eng.rows[s].index, len(eng.rows[s].tokens))
                        for s in range(n)]
                worst = preemption_victim(keys, waiting.first_key())
                if worst is None:
                    return
                row = eng.rows[worst]
                out = eng.park(worst, row, with_states=True)
                _, _, w = waiting.pop()
                admit(worst, w)
                waiting.push(keys[worst], row.index, out)
                self.served[row.index].preemptions += 1
                self.preemptions += 1

        n, nxt, done, steps = 0, 0, 0, 0
        arrivals = [r.arrival_s for r in trace]
        # What the engine spent (wall time, whatever `clock` is), as the simulator charges it:
        # per decode step (rows, summed context, seconds from the admissions before it to the
        # compaction after it) and per
        # arrival (prompt tokens, seconds of prefill, first sample and KV copy-out, the
        # prediction excluded). `served_cost_model` fits the cost model to these.
        self.step_log: list[tuple[int, int, float]] = []
        self.arrival_log: list[tuple[int, float]] = []
        with eng.slot_attention(), torch.inference_mode():
            while done < len(trace):
                if not n and not waiting and nxt < len(trace) and arrivals[nxt] > now():
                    skipped += arrivals[nxt] - now()  # idle: jump to the next arrival
                while nxt < len(trace) and arrivals[nxt] <= now():
                    t0 = time.perf_counter()
                    arrive(nxt)
                    s = self.served[nxt]
                    self.arrival_log.append((s.prompt_tokens, time.perf_counter() - t0
                                             - s.predict_ms / 1e3
                                             - s.feature_ms / 1e3))
                    if s.finish_reason:
                        done += 1
                    nxt += 1
                t0 = time.perf_counter()
                if self.preempt and n == eng.n_slots and steps % self.rerank_every == 0:
                    preempt(n)
                while n < eng.n_slots and waiting:
                    _, _, w = waiting.pop()
                    admit(n, w)
                    n += 1
                if not n:
                    continue
                context = sum(eng.rows[s].pos for s in range(n))
                predicted0 = sum(x.predict_ms for x in self.served)
                eng.step(n)
                steps += 1
                for s in range(n):
                    row = eng.rows[s]
                    if row.done:
                        finish(row.index, row)
                        eng.rows[s] = None
                        done += 1
                    elif self.policy == "srpt":
                        self._observe(s)
                rows = n
                n = eng.compact(n)
                self.step_log.append((rows, context, time.perf_counter() - t0 - (
                    sum(x.predict_ms for x in self.served) - predicted0) / 1e3))
        self.steps, self.idle_s = steps, skipped
        return self.served


# ----------------------------------------------------------------------------- summaries


def summarize(served: list[Served]) -> dict:
    arrival = np.array([s.arrival_s for s in served])
    finish = np.array([s.finish_s for s in served])
    jct = finish - arrival
    ttft = np.array([s.first_token_s for s in served]) - arrival
    queue = np.array([s.admitted_s for s in served]) - arrival
    # served: the prefill, then from the first admission to the finish
    service = (finish - np.array([s.admitted_s for s in served])
               + np.array([s.prefill_ms for s in served]) / 1e3)
    tokens = int(sum(s.tokens for s in served))
    span = float(finish.max() - arrival.min())

    gm = group_means(jct) if len(jct) > 1 else None
    ci = (interval(*gm.column(0))[0] if gm is not None else [float("nan")] * 2)
    return {"mean_jct_s": float(jct.mean()), "mean_jct_ci95": [float(x) for x in ci],
            "p50_jct_s": float(np.percentile(jct, 50)),
            "p90_jct_s": float(np.percentile(jct, 90)), "ttft_s": float(ttft.mean()),
            "queue_s": float(queue.mean()), "service_s": float(service.mean()),
            "tok_s": tokens / span if span > 0 else float("nan"),
            "tokens": tokens, "makespan_s": span,
            "preemptions": int(sum(s.preemptions for s in served))}


def simulated(served: list[Served], trace: list[TraceRequest], policy: str, keys: np.ndarray,
              remaining: list[dict] | None, slots: int, cost, rerank_every: int,
              preempt: bool, observed=(0, 1, 2, 4, 8, 16, 32, 64),
              prefill_at: str = "arrival", resume: str = "swap") -> dict:
    """The simulator on the same requests (arrival order, measured lengths, arrival times),
    the same keys and the same slots, with the cost model profiled in this run. By default it
    schedules as this engine does (each request prefilled alone on arrival, preempted KV
    swapped); `prefill_at="admission", resume="recompute"` is the leaderboard's vLLM schedule."""
    n = len(served)
    # the decode steps each request took: the prefill sampled its first token, so L - 1, plus
    # the step that sampled its EOS when it stopped (none when the budget cut it)
    y = np.array([max(s.tokens - (s.finish_reason == "length"), 1) for s in served], np.int64)
    w = Workload(np.array([s.prompt_tokens for s in served], np.int64), y,
                 np.array([s.arrival_s for s in served]),
                 max(int(max(r.max_new_tokens for r in trace)), int(y.max())))
    if policy == "fcfs":
        plan = policies.fcfs(n)
    elif policy == "srpt":
        steps = np.array(observed)
        rem = np.full((n, len(steps)), np.nan)
        for i, known in enumerate(remaining):
            for j, t in enumerate(steps):
                if t in known:
                    rem[i, j] = known[t]
        plan = policies.srpt(steps, rem)
    elif preempt:
        plan = policies.srpt([0], np.asarray(keys, np.float64)[:, None])
    else:
        plan = policies.sjf(keys)
    result = simulate(w, plan, batching="continuous", slots=slots, cost=cost,
                      rerank_every=rerank_every, prefill_at=prefill_at, resume=resume)
    jct = result.finish_s - w.arrival_s
    return {"mean_jct_s": float(jct.mean()), "p50_jct_s": float(np.percentile(jct, 50)),
            "p90_jct_s": float(np.percentile(jct, 90)), "preemptions": int(result.preemptions)}


def utilisation_rate(utilisation: float, cost, slots: int, mean_prompt: float,
                     mean_output: float) -> float:
    """The Poisson rate at which offered work is `utilisation` of the engine's capacity: with all
    slots decoding at the mean context, the engine finishes slots / (mean_output x step time)
    requests a second, plus each request's prefill."""
    context = slots * (mean_prompt + mean_output / 2)
    step = cost.decode_s(slots, context)
    service = mean_output * step / slots + cost.prefill_s(mean_prompt)  # seconds per request
    return utilisation / service


def served_cost_model(server: "Server"):
    """The cost model fitted (non-negative least squares, as `forelen profile`) to what one
    served run spent: its decode steps (rows, summed context, seconds including the admissions'
    KV copies and the compaction) and its arrivals (prompt tokens, seconds of prefill)."""
    if len(server.step_log) < 3 or len(server.arrival_log) < 2:
        raise ForelenError("too few served steps to fit a cost model (serve more requests)")
    return fit_cost_model(server.step_log, server.arrival_log)


def step_miss(server: "Server", cost) -> dict:
    """How the served steps compare with a cost model's price for them: the total and the
    median step, measured over priced."""
    log = np.asarray(server.step_log, np.float64)
    priced = np.array([cost.decode_s(int(b), c) for b, c, _ in log])
    arr = np.asarray(server.arrival_log, np.float64)
    pre = np.array([cost.prefill_s(t) for t, _ in arr])
    return {"decode_total": float(log[:, 2].sum() / priced.sum()),
            "decode_median_step": float(np.median(log[:, 2] / priced)),
            "prefill_total": float(arr[:, 1].sum() / pre.sum()),
            "steps": len(log), "mean_rows": float(log[:, 0].mean())}


def mean_of_rounds(rounds: list[list[Served]]) -> list[Served]:
    """One request list whose times are each request's mean over the rounds (the same tokens
    every round: the samples are seeded)."""
    if len(rounds) == 1:
        return rounds[0]
    out = []
    for group in zip(*rounds):
        mean = Served(**{k: v for k, v in asdict(group[0]).items()})
        for attr in ("first_token_s", "admitted_s", "finish_s", "prefill_ms", "feature_ms",
                     "predict_ms"):
            setattr(mean, attr, float(np.mean([getattr(x, attr) for x in group])))
        mean.preemptions = int(round(np.mean([x.preemptions for x in group])))
        out.append(mean)
    return out


def asjson(served: list[Served]) -> list[dict]:
    return [{k: v for k, v in asdict(s).items() if k != "token_ids"} for s in served]


def as_recorded(served: list[Served], trace: list[TraceRequest]) -> float:
    """Share of requests that generated exactly the response tokens the build recorded (the
    same seed and prompt; floating-point blocking may rarely flip a near-tie)."""
    return float(np.mean([s.token_ids == r.recorded_ids for s, r in zip(served, trace)]))


# ----------------------------------------------------------------------------- the command


def check_options(o: ReplayOptions) -> None:
    parsed = [parse_policy(p) for p in o.policies]
    unknown = [p for p, (base, _) in zip(o.policies, parsed) if base not in POLICIES]
    if unknown or not o.policies:
        raise ForelenError(f"unknown --policy {unknown[0] if unknown else '(none)'}; known: "
                           + ", ".join(POLICIES) + " (sjf:NAME and srpt:NAME rank by predictor "
                           "NAME)")
    named = [p for p, (base, name) in zip(o.policies, parsed) if name and base not in RANKED]
    if named:
        raise ForelenError(f"--policy {named[0]}: only sjf and srpt take a predictor "
                           "(sjf:NAME, srpt:NAME)")
    if o.rounds < 1:
        raise ForelenError(f"--rounds must be >= 1, got {o.rounds}")
    if o.calibrate < 0 or (o.calibrate and o.engine != "hf"):
        raise ForelenError("--calibrate takes a number of probe requests >= 0, and only with "
                           f"--engine hf (got {o.calibrate} with --engine {o.engine})")
    given = [n for n, v in (("--rate", o.rate), ("--utilisation", o.utilisation),
                            ("--arrivals", o.arrivals)) if v is not None]
    if len(given) > 1:
        raise ForelenError(f"{given[0]} and {given[1]} both set the arrivals; give one")
    if o.rate is not None and not o.rate > 0:
        raise ForelenError(f"--rate must be > 0 requests/s, got {o.rate}")
    if o.utilisation is not None and not 0 < o.utilisation <= 4:
        raise ForelenError(f"--utilisation must be in (0, 4], got {o.utilisation}")
    if o.slots < 1 or o.rerank_every < 1 or (o.limit is not None and o.limit < 1):
        raise ForelenError("--slots, --rerank-every and --limit must be >= 1")
    needs = [p for p, (base, name) in zip(o.policies, parsed) if base in RANKED and not name]
    if needs and not (o.predictor or o.saved):
        raise ForelenError(f"--policy {needs[0]} ranks by a predictor: give --predictor NAME "
                           "(fitted here on the config's train rows), --from DIR, or "
                           f"--policy {needs[0]}:NAME")
    if o.predictor and o.saved:
        raise ForelenError("give --predictor (fit here) or --from (saved), not both")
    if o.source and any(parse_policy(p)[0] == "oracle" for p in o.policies):
        raise ForelenError("--policy oracle ranks by the recorded length, which --source prompts "
                           "do not have; it needs the config's test rows (no --source)")
    if o.engine not in ("hf", "vllm"):
        raise ForelenError(f"unknown --engine {o.engine!r}; replay runs on hf or vllm")
    if o.engine == "vllm" and (o.preempt or "srpt" in o.policies):
        raise ForelenError("--engine vllm: vLLM preempts by its own rule (out of KV blocks, "
                           "lowest priority first); --preempt and srpt are hf-engine policies")


def _refuse(info, bases, preempt: bool) -> None:
    """One line, before any fitting, where a predictor cannot rank as asked."""
    if "srpt" in bases and not info.progressive:
        raise ForelenError(f"--policy srpt re-predicts the remaining length as a request "
                           f"decodes; {info.name} is not progressive (plp, tpv and trail are): "
                           "use --policy sjf, with --preempt for remaining = prediction - "
                           "generated")
    if preempt and info.outputs == "ranking":
        raise ForelenError(f"--preempt compares remaining lengths; {info.name} gives ranking "
                           "scores, not lengths")


def _predictor(o: ReplayOptions, folder, config: str, say, name: str | None = None,
               bases=("sjf",)):
    """(fitted predictor, the columns it reads, how it was obtained): predictor `name` fitted
    here, else the run's --from folder or --predictor; refused in one line before it is fitted
    where it cannot rank under `bases`."""
    entry = folder.config(config)
    if o.saved and not name:
        pred, meta = load(o.saved)
        why = mismatch(meta, entry, config)
        if why:
            raise ForelenError(why)
        _refuse(pred.info, bases, o.preempt)
        return pred, list(meta["fitted_on"]["columns"]), {"from": o.saved,
                                                           "key": meta["predictor"]["key"]}
    cls, origin = load_predictor(name or o.predictor)
    _refuse(cls.info, bases, o.preempt)
    runnable_on(entry, config, [cls])
    pred = make_predictor(cls, o.train_seed)
    cols = pred.columns(entry["build"]["recorded_layers"])
    data = load_config(folder, config, cols)
    say(f"fitting {pred.info.name} on {config}'s train rows ({data.train.n}), seed "
        f"{o.train_seed}")
    fit_s = fit_on(pred, data, cols)
    return pred, cols, {"fitted": "train", "seed": o.train_seed, "fit_s": round(fit_s, 2),
                        "origin": origin}


def run(o: ReplayOptions, say=print) -> dict:
    """Serve the trace under each policy, simulate it, return the whole result (see module)."""
    check_options(o)
    given = read_arrivals(o.arrivals) if o.arrivals else None  # refused before any work
    folder, configs, _ = resolve_names([], o.data, o.config)
    config = configs[0]
    entry = folder.config(config)
    build = entry["build"]
    ranked = {}  # predictor name (None: --predictor/--from) -> (predictor, columns, how)
    uses: dict = {}  # predictor name -> the policies that rank by it
    for spec in o.policies:
        base, name = parse_policy(spec)
        if base in RANKED:
            uses.setdefault(name, set()).add(base)
    for name, bases in uses.items():
        ranked[name] = _predictor(o, folder, config, say, name, bases)
    # the run's predictor: --predictor/--from, else the first named one
    pred, cols, how = ranked.get(None) or next(iter(ranked.values()), (None, [], None))
    data = load_config(folder, config, ["prompt", "uid", "seed", "temperature", "top_p",
                                        "response_token_ids"])
    test = data.test
    resolved = resolve_model(build["model"])
    prompt_max = int(np.max(test["prompt_tokens"])) + 8
    new_max = o.max_new_tokens or int(build["max_new_tokens"])
    cost, profile, model, plain = None, None, None, None
    if o.cost_model:
        cost, profile = load_cost_model(o.cost_model), {"from": o.cost_model}
    if o.engine == "vllm":
        for ranker, _, _ in ranked.values():
            replay_vllm.check_predictor(ranker)
        if cost is None and o.rate is None and o.arrivals is None:
            raise ForelenError("--engine vllm: give --rate or --arrivals (--utilisation needs "
                               "a --cost-model of this GPU)")
        tokenizer = load_tokenizer(resolved)[0]
    else:
        say(f"loading {build['model']} ({build.get('dtype')}) for the hf engine on {o.device}")
        model, tokenizer, _ = load_model(resolved, device=o.device,
                                         dtype=build.get("dtype") or "auto")
        plain = serving_engine(model, tokenizer, slots=o.slots, kv_budget_gib=o.kv_budget_gib,
                               max_prompt=prompt_max, max_new=new_max)
        if cost is None:
            say(f"profiling the engine here ({o.slots} slots) for the simulator's cost model")
            profile = profile_engine(plain, batches=sorted({1, max(1, o.slots // 4),
                                                            max(1, o.slots // 2), o.slots}),
                                     contexts=(32, 256))
            cost = CostModel(**profile["coefficients"])
    planned = None
    if o.source:
        planned = trace_from_source(o.source, o.prompt_column, entry, tokenizer, None, o.seed,
                                    o.limit, o.max_new_tokens, say)
        n = len(planned)
        mean_prompt = float(np.mean([len(p.prompt_ids) for p in planned]))
    else:
        n = test.n if o.limit is None else min(o.limit, test.n)
        if o.limit is not None and o.limit > test.n:
            say(f"note: {config} has {test.n} test rows, fewer than --limit {o.limit}; serving "
                f"all {test.n}")
        mean_prompt = float(np.mean(test["prompt_tokens"]))
    # a source's lengths are unknown: the config's test rows estimate them for --utilisation
    mean_out = float(np.mean(np.minimum(test["output_tokens"], new_max)))
    calibration = None
    if o.calibrate and o.rate is None and o.arrivals is None:
        # The profile times `step` alone; serving also admits, copies KV and compacts, on ragged
        # contexts. Size the load on what the engine spends serving: FCFS over the first
        # requests, all arriving at once, and the cost model fitted to its steps.
        at_once = np.zeros(min(o.calibrate, n))
        if o.source:
            probe = trace_from_source(o.source, o.prompt_column, entry, tokenizer, at_once,
                                      o.seed, len(at_once), o.max_new_tokens)
        else:
            probe, _ = trace_from_config(test, entry, tokenizer, at_once, o.seed, len(at_once),
                                         o.max_new_tokens)
        say(f"calibrating: FCFS over {len(probe)} requests arriving at once ...")
        server = Server(plain, "fcfs")
        t0 = time.perf_counter()
        server.run(probe)
        probe_cost = served_cost_model(server)
        calibration = {"requests": len(probe), "wall_s": round(time.perf_counter() - t0, 2),
                       "coefficients": probe_cost.coefficients(),
                       "profile_rate": utilisation_rate(o.utilisation or 0.9, cost, o.slots,
                                                        mean_prompt, mean_out)}
    if o.arrivals:
        arrivals, how_arrive = given, {"file": o.arrivals}
        rate = None
    else:
        rate = o.rate if o.rate is not None else utilisation_rate(
            o.utilisation or 0.9, probe_cost if calibration else cost, o.slots, mean_prompt,
            mean_out)
        if calibration:
            calibration["rate"] = rate
            say(f"  the served steps price the load at {rate:.3f} requests/s (the profile: "
                f"{calibration['profile_rate']:.3f})")
        arrivals = poisson_arrivals(n, rate, o.seed)
        how_arrive = {"poisson_rate": rate, "seed": o.seed,
                      "utilisation_asked": o.utilisation if o.rate is None else None,
                      "priced_by": (None if o.rate is not None else
                                    "served FCFS probe" if calibration else "profile")}
    if o.source:
        trace = trace_from_source(o.source, o.prompt_column, entry, tokenizer, arrivals, o.seed,
                                  o.limit, o.max_new_tokens)
        what = f"{o.source}'s prompts, rendered as {config} renders its own"
    else:
        trace, _ = trace_from_config(test, entry, tokenizer, arrivals, o.seed, o.limit,
                                     o.max_new_tokens)
        what = f"{config}'s test rows"
    offered = (len(trace) / max(trace[-1].arrival_s, 1e-9)) if len(trace) > 1 else None
    say(f"{len(trace)} requests of {what}, arrivals "
        + (f"from {o.arrivals}" if o.arrivals else f"Poisson at {rate:.3f}/s")
        + f", budget {trace[0].max_new_tokens} tokens, {o.slots} slots")
    result = {"requests": len(trace), "predictor": pred.info.name if pred else None,
              "overhead_ms_per_request": None, "policies": {}}
    per_request = {}
    served_by: dict = {spec: [] for spec in o.policies}  # one list of rounds per policy
    runs: dict = {}
    for r in range(o.rounds):
        # each round rotates the order, so a drift in the machine's speed lands on every policy
        order = list(o.policies[r % len(o.policies):]) + list(o.policies[:r % len(o.policies)])
        for spec in order:
            policy, name = parse_policy(spec)
            ranker, ranker_cols, _ = ranked[name] if policy in RANKED else (None, [], None)
            t0 = time.perf_counter()
            if o.engine == "vllm":
                served, steps, n_slots, timing = _serve_vllm(
                    o, build, resolved, tokenizer, trace, policy, ranker, ranker_cols, say)
                server = None
            else:
                layers = layers_read(ranker_cols)
                record = {"fcfs": "none", "oracle": "none"}.get(policy)
                if record is None:
                    record = ("steps" if policy == "srpt" else "prompt") if layers else "none"
                engine = plain if record == "none" else serving_engine(
                    model, tokenizer, slots=o.slots, kv_budget_gib=o.kv_budget_gib,
                    layers=layers, record=record, max_prompt=prompt_max, max_new=new_max)
                before = dict(engine.timing)
                server = Server(engine, policy, ranker, ranker_cols, preempt=o.preempt,
                                rerank_every=o.rerank_every)
                say(f"serving under {spec}" + (" with preemption" if server.preempt else "")
                    + (f" (round {r + 1} of {o.rounds})" if o.rounds > 1 else "") + " ...")
                served = server.run(trace)
                steps, n_slots = server.steps, engine.n_slots
                # this run's share of the engine's counters (one engine serves several runs)
                timing = {k: round(v - before.get(k, 0), 3) if isinstance(v, float) else
                          (v - before.get(k, 0) if isinstance(v, int) else v)
                          for k, v in engine.timing.items()}
            wall = time.perf_counter() - t0
            served_by[spec].append(served)
            runs.setdefault(spec, []).append({
                "server": server, "steps": steps, "slots": n_slots, "wall_s": round(wall, 2),
                "timing": timing, "mean_jct_s": float(np.mean(
                    [x.finish_s - x.arrival_s for x in served]))})
            say(f"  {spec}: mean JCT {runs[spec][-1]['mean_jct_s']:.2f} s, "
                f"{sum(x.tokens for x in served) / max(wall, 1e-9):.1f} tok/s, {wall:.0f} s")
    # the cost model fitted to FCFS's own served steps: the simulator's schedule checked apart
    # from the profile's prices
    fcfs_server = runs.get("fcfs", [{}])[0].get("server")
    served_cost = served_cost_model(fcfs_server) if fcfs_server is not None else None
    for spec in o.policies:
        policy, name = parse_policy(spec)
        ranker = ranked[name][0] if policy in RANKED else None
        rounds = served_by[spec]
        served = mean_of_rounds(rounds)
        first = runs[spec][0]
        server = first["server"]
        remaining = server.remaining if server is not None else None
        measured = summarize(served)
        if server is not None:  # the share of the served span the engine was busy
            measured["busy_share"] = float(np.mean([
                1 - run["server"].idle_s / summarize(x)["makespan_s"]
                for run, x in zip(runs[spec], rounds)]))
        if o.rounds > 1:
            measured["rounds_mean_jct_s"] = [run["mean_jct_s"] for run in runs[spec]]
        keys = np.array([x.key for x in rounds[0]])
        preempting = o.preempt or policy == "srpt"
        sim = sim_vllm = sim_served = None
        args = (rounds[0], trace, policy, keys, remaining, first["slots"])
        if cost is not None:
            sim = simulated(*args, cost, o.rerank_every, preempting,
                            **({} if o.engine == "hf" else VLLM_SCHEDULE))
            sim_vllm = simulated(*args, cost, o.rerank_every, preempting, **VLLM_SCHEDULE)
        if served_cost is not None:
            sim_served = simulated(*args, served_cost, o.rerank_every, preempting)
        # each policy's runs priced on their own served steps: the machine's speed in those
        # runs goes into the simulation, so the error left is the schedule's; and their steps
        # priced on FCFS's fit say how fast the machine ran against FCFS's runs
        sim_own = speed = None
        servers = [run["server"] for run in runs[spec] if run["server"] is not None]
        if servers and sum(len(x.step_log) for x in servers) >= 3:
            own = served_cost_model(SimpleNamespace(
                step_log=[t for x in servers for t in x.step_log],
                arrival_log=[t for x in servers for t in x.arrival_log]))
            sim_own = simulated(*args, own, o.rerank_every, preempting)
            if served_cost is not None:
                speed = [step_miss(x, served_cost) for x in servers]
        overhead = float(np.mean([x.feature_ms + x.predict_ms for x in served]))
        tokens = np.array([x.tokens for x in rounds[0]])
        recorded = (np.array([q.recorded_tokens for q in trace]) if not o.source else None)
        result["policies"][spec] = {
            "measured": measured, "simulated": sim, "simulated_vllm_schedule": sim_vllm,
            "simulated_served_cost": sim_served, "simulated_own_cost": sim_own,
            "served_over_fcfs": speed,
            "predictor": ranker.info.name if ranker else None,
            "overhead_ms_per_request": overhead if policy in RANKED else 0.0,
            "prefill_ms_per_request": float(np.mean([x.prefill_ms for x in served])),
            "feature_ms_per_request": float(np.mean([x.feature_ms for x in served])),
            "predict_ms_per_request": float(np.mean([x.predict_ms for x in served])),
            "slots": first["slots"], "decode_steps": first["steps"],
            "wall_s": round(sum(run["wall_s"] for run in runs[spec]), 2),
            # a source's prompts have no recorded response to check against
            "lengths_as_recorded": (float(np.mean(tokens == recorded))
                                    if recorded is not None else None),
            "tokens_as_recorded": as_recorded(rounds[0], trace) if recorded is not None else None,
            "same_tokens_every_round": all(
                [x.token_ids for x in rnd] == [x.token_ids for x in rounds[0]]
                for rnd in rounds[1:]),
            "engine_timing": first["timing"]}
        if policy in RANKED and ranker is pred and result["overhead_ms_per_request"] is None:
            result["overhead_ms_per_request"] = overhead
        per_request[spec] = asjson(served)
        say(f"  {spec}: mean JCT {measured['mean_jct_s']:.2f} s"
            + (f" (simulated {sim['mean_jct_s']:.2f} s)" if sim else "")
            + f", p90 {measured['p90_jct_s']:.2f} s, {measured['tok_s']:.1f} tok/s")
    result["ratios"] = ratio_errors(result["policies"], per_request)
    result["settings"] = {
        "data": o.data, "config": config, "policies": list(o.policies), "slots": o.slots,
        "kv_budget_gib": o.kv_budget_gib, "preempt": o.preempt, "rerank_every": o.rerank_every,
        "max_new_tokens": trace[0].max_new_tokens, "limit": o.limit, "arrivals": how_arrive,
        "trace": ({"source": o.source, "prompt_column": o.prompt_column,
                   "rendered_as": config, "sample_seeds": "as a build derives them"}
                  if o.source else {"config_test_rows": config, "order_seed": o.seed}),
        "offered_rate": offered, "mean_prompt_tokens": mean_prompt,
        "mean_output_tokens": mean_out, "predictor": how, "columns": cols,
        "predictors": {(name or "run"): {"name": r.info.name, "columns": c, "how": h}
                       for name, (r, c, h) in ranked.items()},
        "intervals": stats_settings() | {"resampled": "requests (paired across policies)"},
        "model": build["model"], "dtype": build.get("dtype"), "engine": o.engine,
        "device": o.device if o.engine == "hf" else "cuda",
        "prefill": "at arrival, before decode steps; first token sampled there",
        "simulated_schedule": ("as the engine: prefill at arrival, one per request; preempted "
                               "KV swapped" if o.engine == "hf" else
                               "vLLM's: prefill on admission; preemption recomputes"),
        "clock": "wall time; idle gaps (nothing running or waiting) skipped, not slept"}
    result["cost_model"] = ({"coefficients": cost.coefficients(), "profile": profile}
                            if cost is not None else None)
    if served_cost is not None:
        # what the profile missed: FCFS's served steps over the profile's price for them
        result["cost_model"] = (result["cost_model"] or {}) | {
            "served": {"coefficients": served_cost.coefficients(),
                       "fitted_on": "fcfs's served decode steps and arrivals (round 1)",
                       "served_over_profile": (step_miss(fcfs_server, cost)
                                               if cost is not None else None)}}
    result["settings"]["calibration"] = calibration
    result["settings"]["rounds"] = o.rounds
    result["machine"] = machine()
    result["provenance"] = stamp()
    result["per_request"] = per_request
    if o.out:
        atomic_write_bytes(Path(o.out), (json.dumps(result, indent=1, default=_json) + "\n")
                           .encode())
    return result


def ratio_errors(policies: dict, per_request: dict | None = None) -> dict:
    """Each policy's mean JCT over FCFS's, measured and simulated, and the simulator's error on
    that ratio (simulated / measured - 1): the check on every simulated ratio. With the
    per-request results, the measured ratio gets a 95% interval (`stats`: BCa over requests,
    each drawn with its JCT under both policies)."""
    if "fcfs" not in policies:
        return {}
    base = policies["fcfs"]
    out = {}
    for name, p in policies.items():
        if name == "fcfs":
            continue
        out[f"{name}/fcfs"] = ratio(p, base)
        if per_request and name in per_request and "fcfs" in per_request:
            out[f"{name}/fcfs"].update(ratio_interval(jcts(per_request[name]),
                                                      jcts(per_request["fcfs"])))
    return out


def jcts(served: list[dict]) -> np.ndarray:
    return np.array([s["finish_s"] - s["arrival_s"] for s in served], np.float64)


def ratio_interval(jct: np.ndarray, base: np.ndarray, seed: int | None = None) -> dict:
    """95% interval of mean(jct) / mean(base) over the same requests, resampled together.

    Requests queue behind each other, so their JCTs are not independent: the interval covers the
    sampling of requests for this one arrival sequence, not a rerun with other arrivals."""
    gm = group_means(np.column_stack([jct, base]), seed=SEED if seed is None else seed)
    theta = float(gm.theta[0] / gm.theta[1])
    reps = gm.reps[:, 0] / gm.reps[:, 1]
    jack = gm.jack[:, 0] / gm.jack[:, 1]
    (lo, hi), method = interval(theta, reps, jack)
    return {"measured_ci95": [float(lo), float(hi)], "ci_method": method}


def ratio(p: dict, base: dict) -> dict:
    m = p["measured"]["mean_jct_s"] / base["measured"]["mean_jct_s"]
    out = {"measured": m, "simulated": None, "error": None}
    for key, name in (("simulated", ""), ("simulated_vllm_schedule", "_vllm_schedule"),
                      ("simulated_served_cost", "_served_cost"),
                      ("simulated_own_cost", "_own_cost")):
        if p.get(key) and base.get(key):
            s = p[key]["mean_jct_s"] / base[key]["mean_jct_s"]
            out[f"simulated{name}"], out[f"error{name}"] = s, s / m - 1
    return out


def _json(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def last_line(result: dict) -> dict:
    """The benchmark line: requests, predictor, overhead and per policy measured/simulated."""
    keep = ("mean_jct_s", "mean_jct_ci95", "p50_jct_s", "p90_jct_s", "ttft_s", "queue_s",
            "service_s", "tok_s")
    return {"requests": result["requests"], "predictor": result["predictor"],
            "overhead_ms_per_request": result["overhead_ms_per_request"],
            "policies": {name: {"measured": {k: p["measured"][k] for k in keep},
                                "simulated": ({k: p["simulated"][k]
                                               for k in ("mean_jct_s", "p90_jct_s")}
                                              if p["simulated"] else None),
                                "predictor": p.get("predictor"),
                                "overhead_ms_per_request": p.get("overhead_ms_per_request")}
                         for name, p in result["policies"].items()},
            "ratios": result["ratios"], "machine": result["machine"]}


def table(result: dict, width: int = 80) -> str:
    """Per policy, measured and simulated, in seconds; fits 80 columns (the rest is in --json)."""
    head = ["policy", "mean JCT", "p90 JCT", "TTFT", "queue", "tok/s", "sim mean", "sim p90"]
    rows = []
    for name, p in result["policies"].items():
        m, s = p["measured"], p["simulated"] or {}
        rows.append([name, f"{m['mean_jct_s']:.2f}", f"{m['p90_jct_s']:.2f}",
                     f"{m['ttft_s']:.3f}", f"{m['queue_s']:.2f}", f"{m['tok_s']:.1f}",
                     f"{s['mean_jct_s']:.2f}" if s else "–",
                     f"{s['p90_jct_s']:.2f}" if s else "–"])
    def widths_of(head, rows):
        return [max(len(x) for x in col) for col in zip(head, *rows)]

    while len(head) > 4 and sum(widths_of(head, rows)) + 2 * (len(head) - 1) > width:
        head, rows = head[:-1], [r[:-1] for r in rows]  # the rest is in --json
    widths = widths_of(head, rows)
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [f"{result['settings']['config']}: {result['requests']} requests, "
             f"{result['settings']['slots']} slots; times in seconds (measured on the hf engine; "
             "sim = the simulator, same trace, cost model profiled in this run)",
             fmt.format(*head)] + [fmt.format(*r) for r in rows]
    for name, r in result["ratios"].items():
        ci = (f" [{r['measured_ci95'][0]:.3f}, {r['measured_ci95'][1]:.3f}]"
              if r.get("measured_ci95") else "")
        if r["simulated"] is None:
            lines.append(f"{name} mean JCT: measured {r['measured']:.3f}{ci} (not simulated)")
            continue
        lines.append(f"{name} mean JCT: measured {r['measured']:.3f}{ci}, simulated "
                     f"{r['simulated']:.3f} (simulator error {r['error'] * 100:+.1f}%)")
        if r.get("simulated_vllm_schedule") is not None:
            lines.append(f"  on the leaderboard's schedule (prefill on admission): "
                         f"{r['simulated_vllm_schedule']:.3f} "
                         f"({r['error_vllm_schedule'] * 100:+.1f}%)")
        if r.get("simulated_own_cost") is not None:
            lines.append(f"  on each policy's own served prices: {r['simulated_own_cost']:.3f} "
                         f"({r['error_own_cost'] * 100:+.1f}%)")
    for name, p in result["policies"].items():
        if not p.get("predictor"):
            continue
        service = p["measured"].get("service_s")
        share = (f", {p['overhead_ms_per_request'] / 1e3 / service:.2%} of a request's service "
                 f"time ({service:.2f} s)" if service else "")
        lines.append(f"{name} ({p['predictor']}) overhead: "
                     f"{p['overhead_ms_per_request']:.2f} ms per request (prompt features "
                     f"{p['feature_ms_per_request']:.2f} + predictor calls "
                     f"{p['predict_ms_per_request']:.2f}){share}; the prefill itself: "
                     f"{p['prefill_ms_per_request']:.2f} ms")
    return "\n".join(lines)


def _serve_vllm(o: ReplayOptions, build: dict, resolved, tokenizer, trace, policy: str, pred,
                cols, say):
    """Keys before submission (a text proxy's prediction, timed per request), then vLLM."""
    predict_ms = np.zeros(len(trace))
    if policy == "fcfs":
        keys = np.zeros(len(trace))
    elif policy == "oracle":
        keys = np.array([r.recorded_tokens for r in trace], np.float64)
    else:
        keys = np.empty(len(trace))
        for i, req in enumerate(trace):
            t0 = time.perf_counter()
            keys[i] = float(pred.predict(request_table(req, {}, cols))[0])
            predict_ms[i] = (time.perf_counter() - t0) * 1e3
    say(f"serving under {policy} on vLLM (priority scheduling, {o.slots} sequences) ...")
    from transformers import GenerationConfig

    location = model_dir(resolved)
    try:  # the model's own EOS list, as the build's engines read it
        generation = GenerationConfig.from_pretrained(location)
    except OSError:
        generation = GenerationConfig()
    eos = eos_ids(SimpleNamespace(generation_config=generation), tokenizer)
    served = replay_vllm.serve(location, build.get("dtype") or "auto", trace, policy, keys,
                               o.slots, eos,
                               [Served(r.uid, r.arrival_s, len(r.prompt_ids)) for r in trace],
                               seed=o.seed)
    for s, ms in zip(served, predict_ms):
        s.predict_ms = float(ms)
    return served, None, o.slots, {}
