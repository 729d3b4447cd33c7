"""Fine-tuning time of the encoder baselines on real prompts with the offline encoder.

Target (issue: text-proxy baselines): fine-tuning on 2,000 prompts within 10 minutes on 2 cores.
Prompts are the packaged sources' real texts (math, code, instructions, long documents); targets are
random, since time does not depend on them. Prints the time and the prompts' token counts.

    python benchmarks/bench_text.py [--prompts 2000] [--predictor ssjf-reg] [--max-length 512]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def real_prompts(n: int) -> list[str]:
    from forelen_bench.builders.build import load_prompts

    sources = ("mmath-pkg", "gsm-symbolic", "humaneval-pkg", "ifeval-pkg", "writingbench-pkg",
               "arenahard-pkg", "alpacaeval-pkg", "longdocs-pkg")
    return [p.text for _, p in load_prompts(sources, "prompt", n, 0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=2000)
    parser.add_argument("--predictor", default="ssjf-reg")
    parser.add_argument("--max-length", type=int, default=None, help="default: the predictor's")
    args = parser.parse_args()

    from transformers.utils import logging as hf_logging

    from forelen_bench.leaderboard.evaluate import make_predictor
    from forelen_bench.predictors import PREDICTORS
    from forelen_bench.tables import FeatureTable

    hf_logging.disable_progress_bar()
    texts = real_prompts(args.prompts)
    y = np.random.default_rng(0).integers(10, 2000, size=len(texts)).astype(np.float64)
    table = FeatureTable({"prompt": np.array(texts, dtype=object)}, {"recorded_layers": []})
    pred = make_predictor(PREDICTORS.get(args.predictor), 42)
    if args.max_length:
        pred.max_length = args.max_length
    from forelen_bench.predictors._text import load_encoder, tokenize

    tok, _ = load_encoder(pred.encoder)
    lengths = [len(ids) for ids in tokenize(tok, texts, pred.max_length, pred.truncation_side)]
    print(f"{args.predictor}: {len(texts)} real prompts, {np.mean(lengths):.0f} tokens on average "
          f"after truncation to {pred.max_length}; params {pred.get_params()}")
    t = time.perf_counter()
    pred.fit(table, y)
    elapsed = time.perf_counter() - t
    print(f"fine-tuning took {elapsed:.1f} s ({elapsed / 60:.1f} min; target <= 10 min for 2,000)")


if __name__ == "__main__":
    main()
