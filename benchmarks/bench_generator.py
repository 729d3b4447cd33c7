"""A packaged generator against SmolLM2-135M, measured in one script on the same packaged prompts:
load time, resident memory, batch-1 decode tokens/s and build tokens/s, and their ratios.

Each model runs in its own process (so resident memory is its own): load from the converted cache
(`converted_now` says whether the one-off GGUF conversion happened in this run), then
(a) decode: one cot prompt, greedy, exactly `--new` tokens at batch 1; tokens/s is one over the
    median time of a decode step (the CPU may be shared: a median shrugs off a neighbour's burst);
(b) build: the continuous `hf` engine as `forelen build` runs it (features recorded), `--prompts`
    cot prompts x 1 sample at `--build-new` new tokens and temperature 0.6, all in `--slots` slots;
    tokens/s = generated tokens over the whole call (prefill, decode and features), and over
    decode and features alone (what a long build approaches once prompts are a small share).
The sizes and both models' figures feed the cost estimates of the generator pilot (issue 34). The
last line printed is one JSON object.

    python benchmarks/bench_generator.py [--model qwen2.5-coder-1.5b] [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from forelen.provenance import machine

BASELINE = "smollm2-135m"


def rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def decode_tok_s(model, ids, new: int) -> dict:
    """Greedy batch-1 decode of exactly `new` tokens: the median time between two decode steps
    (a logits processor notes when each step's logits arrive), robust to a busy neighbour."""
    import torch

    stamps: list[float] = []

    def note(input_ids, scores):
        stamps.append(time.perf_counter())
        return scores

    t0 = time.perf_counter()
    with torch.inference_mode():
        model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                       min_new_tokens=new, max_new_tokens=new, logits_processor=[note])
    steps = sorted(b - a for a, b in zip(stamps, stamps[1:]))
    median = steps[len(steps) // 2]
    return {"tok_s": 1 / median, "step_ms_median": median * 1e3, "step_ms_p90": steps[
        int(0.9 * (len(steps) - 1))] * 1e3, "prefill_s": stamps[0] - t0, "steps": len(steps),
        "prompt_tokens": ids.shape[1]}


def build_tok_s(model, tokenizer, n_prompts: int, new: int, slots: int) -> dict:
    from bench_build import planned_prompts, requests

    from forelen.builders.engines import HFSettings
    from forelen.builders.engines.hf import HFEngine
    from forelen.builders.recorder import default_layers

    reqs = requests(planned_prompts(tokenizer, "cot", n_prompts), 1, new, 0.6, 0.95)
    settings = HFSettings(slots=slots, layers=tuple(default_layers(model.config.num_hidden_layers)),
                              max_prompt_tokens=max(len(r.prompt_ids) for r in reqs),
                              max_new_tokens=new)
    engine = HFEngine(model, tokenizer, settings)
    t0 = time.perf_counter()
    gens = engine.generate(reqs)
    seconds = time.perf_counter() - t0
    tokens = sum(len(g.token_ids) for g in gens)
    t = engine.timing
    # decode_tok_s: the rate of a long build, where decoding outweighs the prompts' prefill
    return {"tok_s": tokens / seconds, "decode_tok_s": tokens / (t["decode_s"] + t["feature_s"]),
            "tokens": tokens, "seconds": seconds, "prefill_s": t["prefill_s"],
            "decode_s": t["decode_s"], "feature_s": t["feature_s"],
            "prompt_tokens": sum(len(r.prompt_ids) for r in reqs),
            "sequences": len(reqs), "slots": engine.n_slots,
            "at_cap": sum(g.finish_reason == "length" for g in gens) / len(gens)}


def one(alias: str, args) -> dict:
    """Everything measured for one model, in this process."""
    import torch
    from bench_build import planned_prompts
    from transformers.utils import logging as hf_logging

    from forelen.models import MODELS, cache_dir, load_model, resolve_model

    hf_logging.set_verbosity_error()
    resolved = resolve_model(alias)
    converted = any(p.is_dir() and p.name.startswith(resolved.slug + "-")
                    for p in (cache_dir() / "models").glob("*"))
    t0 = time.perf_counter()
    model, tokenizer, revision = load_model(resolved, "cpu", args.dtype)
    load_s = time.perf_counter() - t0
    prompt = planned_prompts(tokenizer, "cot", 1)[0]
    ids = torch.tensor([prompt.prompt_ids])
    decode = decode_tok_s(model, ids, args.new)
    rss = rss_gib()  # after a decode: safetensors are mapped on load and paged in on first use
    build = build_tok_s(model, tokenizer, args.prompts, args.build_new, args.slots)
    cfg = model.config
    return {"model": alias, "revision": revision, "weights": MODELS.get(alias).weights,
            "dtype": str(model.dtype).removeprefix("torch."),
            "params_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3),
            "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size, "vocab": cfg.vocab_size,
            "converted_now": not converted, "load_s": round(load_s, 1), "rss_gib": round(rss, 2),
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "decode": decode, "build": build, "threads": torch.get_num_threads()}


def run_child(alias: str, argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", alias, *argv], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--quick", action="store_true", help="small sizes: a few minutes")
    parser.add_argument("--new", type=int, default=None, help="batch-1 decode tokens")
    parser.add_argument("--prompts", type=int, default=None, help="build: cot prompts (1 sample)")
    parser.add_argument("--build-new", type=int, default=None, help="build: new tokens per sample")
    parser.add_argument("--slots", type=int, default=None, help="build: slots (default --prompts)")
    parser.add_argument("--dtype", default="float32",
                        help="float32 as scripts/reference.sh pins it; auto is bf16 on AVX512-BF16/AMX")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.new = args.new or (16 if args.quick else 32)
    args.prompts = args.prompts or (4 if args.quick else 32)
    args.build_new = args.build_new or (32 if args.quick else 64)
    args.slots = args.slots or args.prompts
    if args.one:
        print(json.dumps(one(args.one, args), default=float))
        return
    argv = ["--new", str(args.new), "--prompts", str(args.prompts), "--build-new",
            str(args.build_new), "--slots", str(args.slots), "--dtype", args.dtype]
    rows = {}
    for alias in (args.model, BASELINE):
        r = rows[alias] = run_child(alias, argv)
        print(f"{alias:20s} {r['params_b']:.2f}B {r['dtype']}: load {r['load_s']:6.1f} s"
              f"{' (converted now)' if r['converted_now'] else ''}, RSS {r['rss_gib']:.2f} GiB "
              f"after a decode "
              f"(peak {r['peak_rss_gib']:.2f}), decode {r['decode']['tok_s']:6.2f} tok/s at batch 1, "
              f"build {r['build']['tok_s']:6.2f} tok/s ({r['build']['decode_tok_s']:.2f} without "
              f"prefill; {r['build']['sequences']} seqs x {args.build_new} new, "
              f"{r['build']['slots']} slots)", flush=True)
    new, base = rows[args.model], rows[BASELINE]
    summary = {
        "model": args.model, "tok_s": round(new["decode"]["tok_s"], 2),
        "smollm2_tok_s": round(base["decode"]["tok_s"], 2),
        "ratio": round(base["decode"]["tok_s"] / new["decode"]["tok_s"], 2),
        "build_tok_s": round(new["build"]["tok_s"], 2),
        "smollm2_build_tok_s": round(base["build"]["tok_s"], 2),
        "build_ratio": round(base["build"]["tok_s"] / new["build"]["tok_s"], 2),
        "build_decode_tok_s": round(new["build"]["decode_tok_s"], 2),
        "smollm2_build_decode_tok_s": round(base["build"]["decode_tok_s"], 2),
        "load_s": new["load_s"], "rss_gib": new["rss_gib"], "peak_rss_gib": new["peak_rss_gib"],
        "machine": machine(), "threads": new["threads"], "quick": args.quick,
        "note": "ratio = SmolLM2's tok/s over the model's; CPU cores possibly shared with other jobs",
        "runs": rows,
    }
    print(json.dumps(summary, default=float))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
