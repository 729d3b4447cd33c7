"""Build throughput, side by side in one run on the same real packaged prompts and one generator
(`--model`, default the packaged SmolLM2-135M; `--dtype`, default auto):

(a) naive: one `model.generate(..., output_hidden_states=True, output_scores=True)` per prompt;
(b) static: `hf-static` (static batches by prompt length) + the teacher-forced
    recorder pass;
(c) build: the continuous `hf` engine, features recorded during generation;
(d) roofline: matmul throughput in the model's dtype, measured here at its own GEMM shapes
    (M = slots), turned into tokens/s with the model's FLOPs per token.

Scenarios: cot at 256 new tokens, rl groups of 8 samples, long prompts up to 1,024 tokens. Every
throughput counts generated tokens over generation + feature time. `--attention-sweep` also times
one decode step of each attention kernel (and torch.compile of the decode attention) at the
scenario's slot count. The last line printed is one JSON object.

    python benchmarks/bench_build.py [--quick] [--attention-sweep] [--model M] [--dtype D]
"""

from __future__ import annotations

import argparse
import json
import time

from forelen.provenance import machine


def planned_prompts(tokenizer, split: str, n: int, max_prompt_tokens: int = 4096):
    from forelen.builders.planning import load_prompts, plan_prompts
    from forelen.builders.splits import SPLITS

    recipe = SPLITS.get(split)
    return plan_prompts(load_prompts(recipe.sources, "prompt", n, 0), recipe, tokenizer,
                        max_prompt_tokens)


def requests(planned, samples: int, max_new: int, temperature: float, top_p: float):
    """Ordered as a build plans them: by prompt length, a group's samples together."""
    from forelen.builders.engines import GenerationRequest
    from forelen.builders.plan import sample_seed, uid_of

    ordered = sorted(planned, key=lambda p: (len(p.prompt_ids), p.group_id))
    return [GenerationRequest(uid_of(p.group_id, s), tuple(p.prompt_ids), max_new, temperature,
                              top_p, sample_seed(0, uid_of(p.group_id, s)))
            for p in ordered for s in range(samples)]


def naive(model, reqs) -> dict:
    import torch

    tokens, start = 0, time.perf_counter()
    for r in reqs:
        ids = torch.tensor([r.prompt_ids])
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                 temperature=r.temperature, top_p=r.top_p,
                                 max_new_tokens=r.max_new_tokens, output_hidden_states=True,
                                 output_scores=True, return_dict_in_generate=True)
        tokens += out.sequences.shape[1] - ids.shape[1]
    seconds = time.perf_counter() - start
    return {"tokens": tokens, "seconds": seconds, "tok_s": tokens / seconds}


def static(model, tokenizer, reqs, batch_size: int, layers) -> dict:
    from forelen.builders.engines.hf_static import HFStaticEngine
    from forelen.builders.recorder import Recorder

    t0 = time.perf_counter()
    gens = HFStaticEngine(model, tokenizer, batch_size).generate(reqs)
    t1 = time.perf_counter()
    Recorder(model, layers).record([r.prompt_ids for r in reqs], [g.token_ids for g in gens])
    t2 = time.perf_counter()
    tokens = sum(len(g.token_ids) for g in gens)
    return {"tokens": tokens, "generate_s": t1 - t0, "feature_s": t2 - t1,
            "tok_s": tokens / (t2 - t0), "feature_share": (t2 - t1) / (t2 - t0),
            "truncated": sum(g.finish_reason == "length" for g in gens) / len(gens)}


def continuous(model, tokenizer, reqs, settings) -> dict:
    from forelen.builders.engines.hf import HFEngine

    engine = HFEngine(model, tokenizer, settings)
    t0 = time.perf_counter()
    gens = engine.generate(reqs)
    seconds = time.perf_counter() - t0
    tokens = sum(len(g.token_ids) for g in gens)
    t = engine.timing
    return {"tokens": tokens, "seconds": seconds, "tok_s": tokens / seconds,
            "feature_share": t["feature_s"] / seconds, "prefill_s": t["prefill_s"],
            "decode_s": t["decode_s"], "feature_s": t["feature_s"], "steps": t["steps"],
            "slots": engine.n_slots,
            "truncated": sum(g.finish_reason == "length" for g in gens) / len(gens)}


def roofline(model, m: int) -> dict:
    """Tokens/s if every GEMM of a decode step ran at the rate measured at its own shape, in the
    model's dtype."""
    import torch

    cfg = model.config
    d, f, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    heads, kv = cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", cfg.num_attention_heads)
    hd = d // heads
    per_layer = [(d, heads * hd), (d, kv * hd), (d, kv * hd), (heads * hd, d), (d, f), (d, f), (f, d)]
    shapes = per_layer * cfg.num_hidden_layers + [(d, v)]
    seconds, flops = 0.0, 0.0
    cache: dict[tuple, float] = {}
    with torch.inference_mode():
        for k, n in shapes:
            if (k, n) not in cache:
                a = torch.randn(m, k, dtype=model.dtype)
                b = torch.randn(k, n, dtype=model.dtype)
                for _ in range(3):
                    torch.mm(a, b)
                reps = 20
                t0 = time.perf_counter()
                for _ in range(reps):
                    torch.mm(a, b)
                cache[(k, n)] = (time.perf_counter() - t0) / reps
            seconds += cache[(k, n)]
            flops += 2 * m * k * n
    return {"tok_s": m / seconds, "gflop_s": flops / seconds / 1e9,
            "gflop_per_token": flops / m / 1e9, "m": m}


def attention_sweep(model, slots: int, context: int) -> dict:
    """Time of one decode step's attention over all layers for each kernel, at `slots` rows."""
    import torch

    from forelen.builders.engines import slots as slot_mod

    cfg = model.config
    kv = getattr(cfg, "num_key_value_heads", cfg.num_attention_heads)
    hd = cfg.hidden_size // cfg.num_attention_heads
    k = torch.randn(slots + 1, kv, context + 64, hd, dtype=model.dtype)
    v = torch.randn_like(k)
    q = torch.randn(slots, cfg.num_attention_heads, 1, hd, dtype=model.dtype)
    positions = torch.randint(context // 2, context, (slots,))
    plan = slot_mod.Plan.for_decode(positions, "sdpa", model.dtype)
    views = k[:slots, :, : plan.length], v[:slots, :, : plan.length]
    kernels = {"sdpa": slot_mod._sdpa, "grouped": slot_mod._grouped, "eager": slot_mod._eager}
    out = {}
    with torch.inference_mode():
        for name, fn in kernels.items():
            out[name] = _time(lambda: fn(q, *views, plan.bias, hd ** -0.5)) * cfg.num_hidden_layers
        try:
            compiled = torch.compile(slot_mod._grouped, dynamic=True)
            t0 = time.perf_counter()
            compiled(q, *views, plan.bias, hd ** -0.5)
            out["compile_s"] = time.perf_counter() - t0
            out["grouped+compile"] = _time(
                lambda: compiled(q, *views, plan.bias, hd ** -0.5)) * cfg.num_hidden_layers
        except Exception as exc:  # no compiler toolchain: say so, keep the other figures
            out["compile_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    return {"slots": slots, "context": context, "step_ms": {
        key: round(val * 1000, 2) if isinstance(val, float) and key != "compile_s" else val
        for key, val in out.items()}}


def _time(fn, reps: int = 10) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: under 5 minutes")
    parser.add_argument("--slots", type=int, default=128)
    parser.add_argument("--attention", default="sdpa")
    parser.add_argument("--static-batch", type=int, default=32, help="hf-static batch size")
    parser.add_argument("--attention-sweep", action="store_true")
    parser.add_argument("--model", default="smollm2-135m", help="generator (an alias or a path)")
    parser.add_argument("--dtype", default="auto",
                        help="auto (bf16 where the CPU has bf16 units), float32 or bfloat16")
    args = parser.parse_args()
    q = args.quick
    sizes = {"cot": (24 if q else 64, 128 if q else 256), "rl": (3 if q else 8, 128 if q else 256),
             "long": (6 if q else 24, 64 if q else 256), "naive": (2 if q else 4, 64 if q else 256)}

    import torch
    from transformers.utils import logging as hf_logging

    from forelen.builders.engines import HFSettings
    from forelen.builders.recorder import default_layers
    from forelen.models import load_model, resolve_model

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model, tokenizer, revision = load_model(resolve_model(args.model), dtype=args.dtype)
    layers = default_layers(model.config.num_hidden_layers)
    print(f"{args.model} ({revision}, {model.dtype}) on {machine()}; slots {args.slots}, "
          f"attention {args.attention}, static batch {args.static_batch}{', quick' if q else ''}")
    settings = HFSettings(slots=args.slots, attention=args.attention, layers=tuple(layers))
    cot = planned_prompts(tokenizer, "cot", sizes["cot"][0])
    scenarios = {
        "cot": requests(cot, 1, sizes["cot"][1], 0.6, 0.95),
        "rl": requests(planned_prompts(tokenizer, "rl", sizes["rl"][0]), 8, sizes["rl"][1], 1.0, 1.0),
        "long": requests(planned_prompts(tokenizer, "long", sizes["long"][0], 1024), 1,
                         sizes["long"][1], 0.7, 0.8),
    }
    report: dict = {}
    for name, reqs in scenarios.items():
        mean_prompt = sum(len(r.prompt_ids) for r in reqs) / len(reqs)
        s = static(model, tokenizer, reqs, args.static_batch, layers)
        c = continuous(model, tokenizer, reqs, settings)
        report[name] = {"sequences": len(reqs), "max_new_tokens": reqs[0].max_new_tokens,
                        "mean_prompt_tokens": round(mean_prompt, 1), "static": s, "build": c,
                        "speedup_vs_static": c["tok_s"] / s["tok_s"]}
        print(f"{name:5s} {len(reqs):4d} seqs, prompt {mean_prompt:6.1f} tok, "
              f"{reqs[0].max_new_tokens} new: static {s['tok_s']:7.1f} tok/s "
              f"(features {s['feature_share']:.0%}), build {c['tok_s']:7.1f} tok/s "
              f"(features {c['feature_share']:.0%}, {c['slots']} slots) -> "
              f"{report[name]['speedup_vs_static']:.2f}x")
    n = naive(model, requests(cot[: sizes["naive"][0]], 1, sizes["naive"][1], 0.6, 0.95))
    print(f"naive {n['tokens']} tokens, batch 1 generate with states and scores: "
          f"{n['tok_s']:.1f} tok/s")
    roof = roofline(model, args.slots)
    print(f"roofline: {model.dtype} GEMMs at the model's shapes, M={args.slots}: {roof['gflop_s']:.0f} "
          f"GFLOP/s x {roof['gflop_per_token']:.3f} GFLOP/token = {roof['tok_s']:.0f} tok/s")
    if args.attention_sweep:
        context = max(len(r.prompt_ids) for r in scenarios["cot"]) + sizes["cot"][1]
        sweep = attention_sweep(model, args.slots, context)
        report["attention_sweep"] = sweep
        print(f"decode attention, all layers, {args.slots} rows, context {context}: "
              + ", ".join(f"{k} {v}" for k, v in sweep["step_ms"].items()))
    cot_build = report["cot"]["build"]
    summary = {
        "naive_tok_s": round(n["tok_s"], 1),
        "static_tok_s": round(report["cot"]["static"]["tok_s"], 1),
        "build_tok_s": round(cot_build["tok_s"], 1),
        "roofline_tok_s": round(roof["tok_s"], 1),
        "roofline_fraction": round(cot_build["tok_s"] / roof["tok_s"], 3),
        "feature_share": round(cot_build["feature_share"], 3),
        "speedup_vs_static": round(report["cot"]["speedup_vs_static"], 2),
        "rl_speedup_vs_static": round(report["rl"]["speedup_vs_static"], 2),
        "long_speedup_vs_static": round(report["long"]["speedup_vs_static"], 2),
        "model": args.model, "dtype": str(model.dtype).replace("torch.", ""),
        "machine": machine(), "threads": torch.get_num_threads(), "quick": q,
        "slots": args.slots, "attention": args.attention, "scenarios": report,
    }
    print(json.dumps(summary, default=float))


if __name__ == "__main__":
    main()
