"""Ray's cost and gain on one machine, side by side in one run: the same small build of the packaged
SmolLM2-135M on the packaged cot prompts (a) in one process, (b) on Ray with 1 worker (all the
CPUs' threads) and (c) on Ray with 2 workers of 1 thread each, on a local cluster of 2 CPUs.

All three use the same plan (same --work-unit), so their rows are the same build. Reported:
- tokens/s of each over the build loop (one process: generation + features; Ray: the driver's
  dispatch loop, wall clock), and Ray's start-up (replicas loading the model) apart from it;
- Ray's overhead per work unit and per chunk with 1 worker: the dispatch loop's wall time less the
  time the replica spent inside its `run` calls, over the units (and chunks) it ran;
- the speedup of 2 workers over one process.

    python benchmarks/bench_ray.py [--limit 24] [--max-new-tokens 96] [--work-unit 16]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
from pathlib import Path


def cpu_model() -> str:
    """CPU model name, and whether it has AMX (bf16 figures differ with and without it)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), "unknown")
    return f"{name} ({'with' if 'amx_bf16' in info else 'without'} AMX)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=24, help="cot prompts")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=4, help="sequences per chunk (shard)")
    ap.add_argument("--work-unit", type=int, default=8, help="sequences per unit")
    args = ap.parse_args()

    import ray

    from forelen.builders.build import BuildOptions, run_build

    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    base = BuildOptions(split="cot", limit=args.limit, max_new_tokens=args.max_new_tokens,
                        batch_size=args.batch_size, work_unit=args.work_unit, device="cpu",
                        out=str(tmp / "local"))
    results = {}
    start = time.perf_counter()
    entry = run_build(base)
    t = entry["timing"]
    loop_s = t["generate_s"] + t["record_s"]
    results["local"] = {"tokens": t["generated_tokens"], "loop_s": loop_s,
                        "tok_s": t["generated_tokens"] / loop_s,
                        "total_s": time.perf_counter() - start}
    chunks = entry["chunks"]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        for workers in (1, 2):
            start = time.perf_counter()
            e = run_build(dataclasses.replace(base, ray="", workers=workers,
                                              out=str(tmp / f"ray{workers}")))
            t = e["timing"]
            assert e["fingerprint"] == entry["fingerprint"]
            results[f"ray{workers}"] = {
                "tokens": t["generated_tokens"], "loop_s": t["wall_s"],
                "tok_s": t["generated_tokens"] / t["wall_s"], "busy_s": t["busy_s"],
                "startup_s": t["ray_startup_s"], "total_s": time.perf_counter() - start,
                "threads_per_worker": e["ray"]["threads_per_worker"],
                "units": e["ray"]["units_run"]}
    finally:
        ray.shutdown()
    r1 = results["ray1"]
    units = r1["units"]
    overhead_unit = (r1["loop_s"] - r1["busy_s"]) / units
    summary = {
        "machine": f"{cpu_model()}, {__import__('os').cpu_count()} CPUs",
        "units": units, "chunks": chunks, "rows": entry["stats"]["rows"],
        "local_tok_s": round(results["local"]["tok_s"], 1),
        "ray1_tok_s": round(r1["tok_s"], 1), "ray2_tok_s": round(results["ray2"]["tok_s"], 1),
        "ray_overhead_per_unit_s": round(overhead_unit, 4),
        "ray_overhead_per_chunk_s": round(overhead_unit * units / chunks, 4),
        "ray1_vs_local_loop": round(r1["loop_s"] / results["local"]["loop_s"], 3),
        "speedup_ray2_vs_local": round(results["ray2"]["tok_s"] / results["local"]["tok_s"], 3),
        "speedup_ray2_vs_ray1": round(results["ray2"]["tok_s"] / r1["tok_s"], 3),
        "ray_startup_s": {k: round(v["startup_s"], 2) for k, v in results.items()
                          if k.startswith("ray")},
    }
    print("\n| run | tokens | loop s | tok/s | total s |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['tokens']} | {r['loop_s']:.1f} | {r['tok_s']:.1f} | "
              f"{r['total_s']:.1f} |")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
