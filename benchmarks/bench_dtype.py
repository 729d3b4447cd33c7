"""float32 against bfloat16 matmul on this CPU, side by side, at SmolLM2-135M's own GEMM shapes.

Why `scripts/reference.sh` pins float32: bf16 is fast only where the CPU has bf16 units
(AVX512-BF16, AMX); elsewhere torch runs bf16 matmul through a slow path. This measures, in one
process and at the decode shapes of a build (M = 128 slots), the matmul rate of each dtype, and the
tokens/s a decode step would reach if every GEMM ran at that rate (the roofline of
benchmarks/bench_build.py). The last line printed is one JSON object.

    python benchmarks/bench_dtype.py [--threads 2] [--slots 128] [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def gemm_shapes(cfg) -> list[tuple[int, int]]:
    """(K, N) of every GEMM of one decode step: q, k, v, o, gate, up, down per layer, lm_head."""
    d, f, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    heads = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    hd = d // heads
    per_layer = [(d, heads * hd), (d, kv * hd), (d, kv * hd), (heads * hd, d), (d, f), (d, f), (f, d)]
    return per_layer * cfg.num_hidden_layers + [(d, v)]


def seconds_per_mm(m: int, k: int, n: int, dtype, budget: float) -> float:
    """Mean seconds of one (m, k) @ (k, n) product, timed for about `budget` seconds (>= 3 runs)."""
    import torch

    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    torch.mm(a, b)  # warm-up
    runs, t0 = 0, time.perf_counter()
    while runs < 3 or time.perf_counter() - t0 < budget:
        torch.mm(a, b)
        runs += 1
    return (time.perf_counter() - t0) / runs


def measure(cfg, dtype, m: int, budget: float) -> dict:
    shapes = gemm_shapes(cfg)
    cache: dict[tuple[int, int], float] = {}
    seconds = flops = 0.0
    for k, n in shapes:
        if (k, n) not in cache:
            cache[(k, n)] = seconds_per_mm(m, k, n, dtype, budget)
        seconds += cache[(k, n)]
        flops += 2 * m * k * n
    return {"gflop_s": round(flops / seconds / 1e9, 2), "roofline_tok_s": round(m / seconds, 1),
            "step_ms": round(seconds * 1e3, 2)}


def cpu() -> dict:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines()
                  if ln.startswith("model name")), "unknown")
    flags = next((ln for ln in text.splitlines() if ln.startswith("flags")), "").split()
    return {"cpu": model, "bf16_units": sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16")),
            "avx512": "avx512f" in flags}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--slots", type=int, default=128, help="M of every GEMM (sequences decoded)")
    ap.add_argument("--seconds", type=float, default=1.0, help="timing budget per GEMM shape")
    args = ap.parse_args()
    import torch
    from transformers import AutoConfig

    from forelen.models import model_dir, resolve_model

    torch.set_num_threads(args.threads)
    cfg = AutoConfig.from_pretrained(model_dir(resolve_model("smollm2-135m")))
    with torch.inference_mode():
        fp32 = measure(cfg, torch.float32, args.slots, args.seconds)
        bf16 = measure(cfg, torch.bfloat16, args.slots, args.seconds)
    print(f"float32  {fp32['gflop_s']:8.1f} GFLOP/s  roofline {fp32['roofline_tok_s']:8.1f} tok/s")
    print(f"bfloat16 {bf16['gflop_s']:8.1f} GFLOP/s  roofline {bf16['roofline_tok_s']:8.1f} tok/s")
    print(json.dumps({**cpu(), "threads": args.threads, "slots": args.slots, "float32": fp32,
                      "bfloat16": bf16,
                      "bf16_over_fp32": round(bf16["gflop_s"] / fp32["gflop_s"], 3)}))


if __name__ == "__main__":
    main()
