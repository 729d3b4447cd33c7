"""`forelen replay --engine vllm`: the same trace served by vLLM's own scheduler with priority
scheduling (`scheduling_policy="priority"`), on a CUDA GPU (`scripts/gpu_replay.sh`).

What vLLM controls and what forelen does:

- Each request is submitted at its arrival time to an `AsyncLLM` engine with an integer
  `priority`; vLLM schedules waiting requests by (priority, arrival time), lower first, into its
  running batch of at most `max_num_seqs` (= `--slots`). fcfs gives every request priority 0, so
  the order is arrival order; sjf the rounded predicted length; oracle the row's recorded length.
- Preemption is vLLM's: a running request is preempted (its KV freed and recomputed later) only
  when the KV cache runs out of blocks, and under priority scheduling the lowest-priority one
  goes. forelen's `--preempt` (swap a running request out for a waiting shorter one) has no
  vLLM equivalent and is refused.
- **Hidden-state predictors cannot rank here.** EGTP, PLP, TRAIL, TPV and the pooling variants
  read the serving model's hidden states at the prompt (and at decode steps); vLLM returns
  tokens and log-probabilities but not hidden states, so they would need a second model pass —
  the cost the paper's argument removes. What would be needed: a vLLM model runner that returns
  the chosen layer's states of the prompt positions, and the prompt tokens' entropies (a full
  LM-head pass over the prompt, which `prompt_logprobs` computes but returns only top-k of),
  to the scheduler before the request's first decode step. Text proxies (ltr, ltr-c, s3,
  ssjf-reg, ssjf-mc, pia), references and the oracle run on the prompt text, before submission.

Times are measured from the first submission with `time.perf_counter`; the first token's time is
when the stream first yields a token.
"""

from __future__ import annotations

import time

import numpy as np

from forelen.builders.engines import GenerationRequest
from forelen.builders.engines.vllm import from_vllm
from forelen.errors import ForelenError

# The vLLM names this path calls; tests/test_vllm_api.py checks them against the installed vllm
# (with the offline engine's VLLM_API).
VLLM_SERVE_API = {
    "AsyncEngineArgs": ("model", "dtype", "scheduling_policy", "max_num_seqs", "seed",
                        "gpu_memory_utilization", "enable_prefix_caching"),
    "AsyncLLM.from_engine_args": ("engine_args",),
    "AsyncLLM.generate": ("prompt", "sampling_params", "request_id", "priority"),
}


def check_predictor(pred) -> None:
    if pred is not None and pred.info.family == "hidden-state":
        raise ForelenError(
            f"--engine vllm: {pred.info.name} reads the serving model's hidden states, which "
            "vLLM does not return; rank with a text proxy (ltr, ltr-c, s3, ssjf-reg, ssjf-mc, "
            "pia) or the oracle, or use --engine hf")


def priorities(keys) -> list[int]:
    """vLLM takes integer priorities, lower first: lengths (or ranking scores) rounded to the
    nearest integer after scaling ranking scores to keep their order."""
    keys = np.asarray(keys, np.float64)
    if np.all(keys == np.round(keys)):
        return [int(k) for k in keys]
    order = np.argsort(np.argsort(keys, kind="stable"), kind="stable")
    return [int(o) for o in order]  # ranks: the same order, ties broken by arrival


def serve(model: str, dtype: str, trace, policy: str, keys, slots: int, eos: set[int], served,
          seed: int = 0, gpu_memory_utilization: float = 0.85):
    """Serve `trace` (replay.TraceRequest, arrival order) through vLLM at their arrival times,
    filling in `served` (replay.Served, one per request: uid, arrival and prompt tokens set);
    returns it."""
    import asyncio

    try:
        from vllm import SamplingParams
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.inputs import TokensPrompt
        from vllm.v1.engine.async_llm import AsyncLLM
    except ImportError as exc:
        raise ForelenError(f"--engine vllm needs vllm with its v1 engine ({exc}); install "
                           "forelen[vllm] on a CUDA machine (scripts/gpu_replay.sh)") from None
    prio = [0] * len(trace) if policy == "fcfs" else priorities(keys)
    requests = [GenerationRequest(r.uid, r.prompt_ids, r.max_new_tokens, r.temperature, r.top_p,
                                  r.seed) for r in trace]
    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(
        model=model, dtype=dtype, scheduling_policy="priority", max_num_seqs=slots, seed=seed,
        gpu_memory_utilization=gpu_memory_utilization, enable_prefix_caching=False))
    for s, k in zip(served, prio):
        s.key = float(k)

    async def one(i: int, start: float) -> None:
        req, s = trace[i], served[i]
        delay = req.arrival_s - (time.perf_counter() - start)
        if delay > 0:
            await asyncio.sleep(delay)
        params = SamplingParams(n=1, temperature=req.temperature, top_p=req.top_p,
                                max_tokens=req.max_new_tokens, seed=req.seed % (2**31))
        final = None
        async for out in engine.generate(TokensPrompt(prompt_token_ids=list(req.prompt_ids)),
                                         params, request_id=f"{policy}-{i}",
                                         priority=prio[i]):
            if s.first_token_s != s.first_token_s and out.outputs[0].token_ids:
                s.first_token_s = time.perf_counter() - start
            final = out
        s.finish_s = time.perf_counter() - start
        s.admitted_s = s.first_token_s
        gen = from_vllm(requests[i], final.outputs[0], eos)  # EOS cut as the hf engine does
        s.token_ids, s.tokens, s.finish_reason = gen.token_ids, len(gen.token_ids), \
            gen.finish_reason

    async def run_all() -> None:
        start = time.perf_counter()
        await asyncio.gather(*(one(i, start) for i in range(len(trace))))

    try:
        asyncio.run(run_all())
    finally:
        engine.shutdown()
    return served
