"""Featurising speed of `forelen import`, against the bf16 matmul roofline measured in the same run.

Featurising is pure prefill: one teacher-forced forward over each prompt + response, the recorded
layers' states, and the exact entropy (LM head + softmax over the whole vocabulary) at every
position. The script imports `--rows` (prompt, response) pairs with the packaged SmolLM2-135M:
prompts from the packaged cot mix, responses cut from the packaged long-context documents to
lengths drawn (seeded) from a log-normal with median `--median-response` tokens. It reports

- prompt+response tokens/s of the feature pass (the import's `record_s`);
- that rate as a fraction of the roofline: every GEMM of a forward (the LM head included, since
  entropies need it at every position) at the bf16 rate measured here at M = `--m` rows;
- seconds per 1,000 rows, for the feature pass and for the whole import (reading, tokenising,
  writing included);
- on paper, the same for a 7B model on one GPU (stated assumptions, not a measurement).

    python benchmarks/bench_import.py [--rows 256] [--median-response 200] [--quick]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_build import cpu_name, roofline  # noqa: E402  (same folder)

# On paper: Qwen2.5-7B has 7.6e9 parameters (6.5e9 outside the embeddings) and a 152,064 x 3,584
# LM head; a forward costs about 2 FLOPs per parameter per token. An H100 SXM's dense bf16 peak is
# 989 TFLOP/s (NVIDIA's datasheet); long prefills reach about half of it in practice.
PAPER_7B = {"gflop_per_token": 2 * (6.5e9 + 152_064 * 3_584) / 1e9, "gpu": "H100 SXM",
            "peak_tflop_s": 989.0, "assumed_mfu": 0.5}


def rows(n: int, median: int, seed: int, tokenizer) -> list[dict]:
    import numpy as np

    from forelen.builders.planning import load_prompts
    from forelen.builders.splits import SPLITS

    prompts = [p.text for _, p in load_prompts(SPLITS.get("cot").sources, "prompt", n, seed)]
    docs = [p.text for _, p in load_prompts(SPLITS.get("long").sources, "prompt", 64, seed)]
    doc_ids = [tokenizer(d, add_special_tokens=False)["input_ids"] for d in docs]
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(median), 0.6, size=len(prompts)), 8, 1024).astype(int)
    out = []
    for i, (prompt, length) in enumerate(zip(prompts, lengths)):
        ids = doc_ids[i % len(doc_ids)]
        start = int(rng.integers(0, max(1, len(ids) - length)))
        out.append({"prompt": prompt, "response": tokenizer.decode(ids[start: start + length])})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--median-response", type=int, default=200)
    ap.add_argument("--m", type=int, default=2048, help="GEMM rows of the roofline")
    ap.add_argument("--quick", action="store_true", help="64 rows")
    args = ap.parse_args()
    n = 64 if args.quick else args.rows

    from forelen.builders.importer import ImportOptions, run_import
    from forelen.models import load_model, resolve_model

    model, tokenizer, _ = load_model(resolve_model("smollm2-135m"), "cpu")
    tmp = Path(tempfile.mkdtemp(prefix="bench-import-"))
    source = tmp / "rows.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows(n, args.median_response, 0,
                                                                  tokenizer)))
    start = time.perf_counter()
    (entry,) = run_import(ImportOptions(source=str(source), split="cot", out=str(tmp / "ds"),
                                        device="cpu"))
    wall = time.perf_counter() - start
    t = entry["timing"]
    tokens, record_s = t["imported_tokens"], t["record_s"]
    roof = roofline(model, args.m)
    tok_s = tokens / record_s
    paper_tok_s = (PAPER_7B["peak_tflop_s"] * 1e3 * PAPER_7B["assumed_mfu"]
                   / PAPER_7B["gflop_per_token"])
    per_row = tokens / entry["stats"]["rows"]
    summary = {
        "machine": f"{cpu_name()}, {os.cpu_count()} CPUs", "dtype": entry["build"]["dtype"],
        "rows": entry["stats"]["rows"], "tokens": tokens, "tokens_per_row": round(per_row, 1),
        "import_tok_s": round(tok_s, 1), "roofline_tok_s": round(roof["tok_s"], 1),
        "roofline_gflop_s": round(roof["gflop_s"], 1), "roofline_m": args.m,
        "roofline_fraction": round(tok_s / roof["tok_s"], 3),
        "feature_s_per_1000_rows": round(record_s / entry["stats"]["rows"] * 1000, 1),
        "import_s_per_1000_rows": round(wall / entry["stats"]["rows"] * 1000, 1),
        "paper_7b_gpu": {"gpu": PAPER_7B["gpu"], "tok_s": round(paper_tok_s),
                         "s_per_1000_rows": round(per_row * 1000 / paper_tok_s, 1),
                         "assumptions": "2 FLOP/parameter/token, 50% of the dense bf16 peak, "
                                        "rows as long as these"},
    }
    print(f"\nfeature pass: {tokens} prompt+response tokens in {record_s:.1f} s = {tok_s:.0f} "
          f"tok/s; roofline {roof['tok_s']:.0f} tok/s ({roof['gflop_s']:.0f} GFLOP/s at "
          f"M={args.m}); whole import {wall:.1f} s")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
