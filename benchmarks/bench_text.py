"""Fine-tuning time of the encoder baselines on real prompts with the offline encoder.

Target (issue: text-proxy baselines): fine-tuning on 2,000 prompts within 10 minutes on 2 cores.
Prompts are the packaged sources' real texts (math, code, instructions, long documents); targets are
random, since time does not depend on them.

Two parts, in one process:
1. `--compare N`: one epoch of full fine-tuning on the same N prompts, adding one speed setting at
   a time to the papers' plain loop (float32, random batches, the encoder's own attention dropout):
   no attention dropout, then length-grouped batches, then bf16 autocast (= the defaults); each as
   a ratio to the plain loop.
2. The predictor's whole default recipe on `--prompts` prompts, timed end to end.

    python benchmarks/bench_text.py [--prompts 2000] [--compare 256] [--predictor ssjf-reg]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def real_prompts(n: int) -> list[str]:
    from forelen.builders.planning import load_prompts

    sources = ("mmath-pkg", "gsm-symbolic", "humaneval-pkg", "ifeval-pkg", "writingbench-pkg",
               "arenahard-pkg", "alpacaeval-pkg", "longdocs-pkg")
    return [p.text for _, p in load_prompts(sources, "prompt", n, 0)]


def fit_time(name: str, texts: list[str], y: np.ndarray, **params) -> float:
    from forelen.leaderboard.evaluate import make_predictor
    from forelen.predictors import PREDICTORS
    from forelen.tables import FeatureTable

    table = FeatureTable({"prompt": np.array(texts, dtype=object)}, {"recorded_layers": []})
    pred = make_predictor(PREDICTORS.get(name), 42)
    for k, v in params.items():
        setattr(pred, k, v)
    t = time.perf_counter()
    pred.fit(table, y)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=2000)
    parser.add_argument("--compare", type=int, default=256, help="prompts per setting; 0 skips")
    parser.add_argument("--predictor", default="ssjf-reg")
    args = parser.parse_args()

    from transformers.utils import logging as hf_logging

    from forelen.leaderboard.evaluate import make_predictor
    from forelen.predictors import PREDICTORS
    from forelen.predictors._text import load_encoder, resolve_precision, tokenize

    hf_logging.disable_progress_bar()
    texts = real_prompts(max(args.prompts, args.compare))
    if len(texts) < args.prompts:  # the packaged sets hold fewer distinct prompts: cycle them
        print(f"{len(texts)} distinct packaged prompts; cycling them to {args.prompts}")
        texts = [texts[i % len(texts)] for i in range(args.prompts)]
    y = np.random.default_rng(0).integers(10, 2000, size=len(texts)).astype(np.float64)
    pred = make_predictor(PREDICTORS.get(args.predictor), 42)
    tok, _ = load_encoder(pred.encoder)
    lengths = np.array([len(i) for i in tokenize(tok, texts, pred.max_length, pred.truncation_side)])
    print(f"{args.predictor}: {len(texts)} real prompts, {lengths.mean():.0f} tokens on average "
          f"(median {np.median(lengths):.0f}, max {lengths.max()}) after truncation to "
          f"{pred.max_length}; precision auto -> {resolve_precision('auto')}")

    if args.compare:
        n = args.compare
        print(f"\none epoch of full fine-tuning on {n} prompts (batch {pred.batch_size}):")
        steps = [("plain loop: fp32, random batches, attention dropout of the encoder",
                  dict(precision="fp32", group_by_length=False, attention_dropout=None)),
                 ("+ attention_dropout=0.0", dict(attention_dropout=0.0)),
                 ("+ group_by_length=True", dict(group_by_length=True)),
                 ("+ precision=auto (the defaults)", dict(precision="auto"))]
        base, params = None, {}
        fit_time(args.predictor, texts[:16], y[:16], epochs=1, freeze_after=None)  # load, warm up
        for label, change in steps:
            params |= change
            s = fit_time(args.predictor, texts[:n], y[:n], epochs=1, freeze_after=None, **params)
            base = base or s
            print(f"  {label:<70} {s:6.1f} s  {base / s:5.2f}x")

    if args.prompts:
        n = args.prompts
        s = fit_time(args.predictor, texts[:n], y[:n])
        print(f"\ndefault recipe {pred.get_params()}\non {n} prompts: {s:.1f} s ({s / 60:.1f} min; "
              f"target <= 10 min for 2,000)")


if __name__ == "__main__":
    main()
