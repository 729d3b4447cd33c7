"""Throughput of the build path versus a naive per-prompt `generate` loop, same model, same prompts.

Build path: the `hf` engine (batched by prompt length, per-sample seeds) + the teacher-forced
recorder. Naive loop: one `model.generate(..., output_hidden_states=True, output_scores=True)` per
prompt, which is how features are usually collected. Both run here, in one process, on SmolLM2 and
the `cot` split's real prompts, so the ratio does not depend on what else the machine is doing.

    python benchmarks/bench_build.py [--prompts 32] [--naive-prompts 4] [--max-new-tokens 256]
"""

from __future__ import annotations

import argparse
import time

# 2 cores x ~205 GFLOP/s bf16 GEMM each, ~0.27 GFLOP per SmolLM2-135M token: the compute roofline
# at batch >= 8, where weights stream from cache once per step for the whole batch.
ROOFLINE_TOK_S = 1500.0


def prompts_for(tokenizer, n: int):
    from forelen_bench.builders.build import load_prompts, plan_prompts
    from forelen_bench.builders.splits import SPLITS

    recipe = SPLITS.get("cot")
    return plan_prompts(load_prompts(recipe.sources, "prompt", n, 0), recipe, tokenizer, 4096)


def naive(model, planned, max_new_tokens: int) -> tuple[int, float]:
    import torch

    tokens, start = 0, time.perf_counter()
    for p in planned:
        ids = torch.tensor([p.prompt_ids])
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                 temperature=0.6, top_p=0.95, max_new_tokens=max_new_tokens,
                                 output_hidden_states=True, output_scores=True,
                                 return_dict_in_generate=True)
        tokens += out.sequences.shape[1] - ids.shape[1]
    return tokens, time.perf_counter() - start


def build_path(model, tokenizer, planned, max_new_tokens: int, batch_size: int):
    from forelen_bench.builders.build import sample_seed
    from forelen_bench.builders.engines import GenerationRequest
    from forelen_bench.builders.engines.hf import HFEngine
    from forelen_bench.builders.recorder import Recorder

    requests = [GenerationRequest(p.group_id, tuple(p.prompt_ids), max_new_tokens, 0.6, 0.95,
                                  sample_seed(0, p.group_id)) for p in planned]
    t0 = time.perf_counter()
    gens = HFEngine(model, tokenizer, batch_size).generate(requests)
    t1 = time.perf_counter()
    Recorder(model).record([r.prompt_ids for r in requests], [g.token_ids for g in gens])
    t2 = time.perf_counter()
    return sum(len(g.token_ids) for g in gens), t1 - t0, t2 - t1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--naive-prompts", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    from forelen_bench.models import load_model, resolve_model

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model, tokenizer, revision = load_model(resolve_model("smollm2-135m"))
    planned = prompts_for(tokenizer, args.prompts)
    mean_prompt = sum(len(p.prompt_ids) for p in planned) / len(planned)
    print(f"SmolLM2-135M ({revision}, {model.dtype}), {torch.get_num_threads()} threads, "
          f"{len(planned)} cot prompts (mean {mean_prompt:.0f} prompt tokens), "
          f"max_new_tokens {args.max_new_tokens}")
    n_tok, t_naive = naive(model, planned[: args.naive_prompts], args.max_new_tokens)
    naive_rate = n_tok / t_naive
    print(f"naive loop (batch 1, output_hidden_states+scores): {n_tok} tokens in {t_naive:.1f} s"
          f" = {naive_rate:.1f} tok/s")
    n_tok, t_gen, t_rec = build_path(model, tokenizer, planned, args.max_new_tokens,
                                     args.batch_size)
    rate = n_tok / (t_gen + t_rec)
    print(f"build path (hf engine batch {args.batch_size} + recorder): {n_tok} tokens, "
          f"generate {t_gen:.1f} s + record {t_rec:.1f} s = {rate:.1f} tok/s end to end "
          f"({n_tok / t_gen:.1f} tok/s generation alone)")
    print(f"speed-up over the naive loop: {rate / naive_rate:.2f}x (target >= 3x)")
    print(f"recorder time / generation time: {t_rec / t_gen:.1%} (target <= 25%)")
    print(f"roofline fraction: {rate / ROOFLINE_TOK_S:.1%} of ~{ROOFLINE_TOK_S:.0f} tok/s")


if __name__ == "__main__":
    main()
