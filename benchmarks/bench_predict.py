"""Cost of length prediction beside the cost of generation, on this machine, in one process.

1. Per-request inference: one `egtp` prediction and one `plp` update (remaining length at step 8)
   versus one decode step of SmolLM2-135M (batch 1, KV cache, a 128-token context).
2. The same per-request latency for every text-proxy predictor (SSJF, S3, LTR, PiA), each fitted
   briefly on synthetic prompts first: the overhead they add per request, beside their accuracy.
3. Fit (early stopping on validation) + predict of every hidden-state predictor, default
   parameters, on a synthetic 10,000-row table shaped like a SmolLM2 config (hidden 576, layers 10
   and 30, S = 64 step states), split 60/20/20 as in `forelen evaluate`.

    python benchmarks/bench_predict.py [--rows 10000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

HIDDEN_STATE = ("egtp", "pool-mean", "pool-max", "pool-last", "plp", "trail", "tpv")


def decode_step_ms(repeats: int = 30) -> float:
    import warnings

    import torch
    from transformers.utils import logging as hf_logging

    from forelen.models import load_model, resolve_model

    hf_logging.disable_progress_bar()
    model, _, _ = load_model(resolve_model("smollm2-135m"))
    ids = torch.randint(100, 40000, (1, 128))
    warnings.filterwarnings("ignore", category=FutureWarning)  # the cache keyword's renaming
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model(ids, use_cache=True)
        cache, nxt = out.past_key_values, ids[:, -1:]
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            out = model(nxt, past_key_values=cache, use_cache=True)
            times.append(time.perf_counter() - t)
            cache = out.past_key_values
    return float(np.median(times) * 1000)


def synthetic(rows: int, dim: int = 576, layers=(10, 30), steps: int = 64, seed: int = 0):
    from forelen.tables import FeatureTable

    rng = np.random.default_rng(seed)
    y = rng.integers(10, 2000, size=rows)
    cols = {"output_tokens": y, "prompt_tokens": rng.integers(20, 2000, size=rows),
            "group_id": np.array([f"g{i // 8}" for i in range(rows)], dtype=object)}
    signal = (np.log(y)[:, None] - 6) * rng.normal(size=(1, dim))
    for layer in layers:
        for kind in ("egtp", "mean", "max", "last"):
            cols[f"{kind}_l{layer}"] = (rng.normal(size=(rows, dim)) + signal).astype(np.float16)
        st = np.empty(rows, dtype=object)
        block = (rng.normal(size=(steps, dim))).astype(np.float16)
        for i in range(rows):
            st[i] = block[: min(steps, int(y[i]))] + signal[i].astype(np.float16)
        cols[f"step_states_l{layer}"] = st
    ent = np.empty(rows, dtype=object)
    for i in range(rows):
        ent[i] = rng.uniform(0, 4, size=int(y[i])).astype(np.float16)
    cols["response_entropy"] = ent
    return FeatureTable(cols, {"recorded_layers": list(layers)}), y.astype(np.float64)


def text_latencies(step_ms: float, repeats: int = 20) -> None:
    """Per-request latency of each text predictor; quality is measured by `forelen evaluate`."""
    from forelen.leaderboard.evaluate import make_predictor
    from forelen.predictors import PREDICTORS
    from forelen.tables import FeatureTable

    rng = np.random.default_rng(0)
    words = ["explain", "briefly", "in detail", "the", "history", "of", "rivers", "and", "code"]
    prompts = np.array([" ".join(rng.choice(words, size=rng.integers(20, 200))) for _ in range(64)],
                       dtype=object)
    y = rng.integers(10, 500, size=64).astype(np.float64)
    table = FeatureTable({"prompt": prompts, "prompt_tokens": rng.integers(20, 200, size=64)},
                         {"recorded_layers": [10, 30], "model": "smollm2-135m"})
    for name, cls in PREDICTORS.items():
        if cls.info.family != "text-proxy":
            continue
        pred = make_predictor(cls, 42)
        if "epochs" in pred.get_params():
            pred.epochs = 1  # latency does not depend on how long it trained
        pred.fit(table.select(pred.columns([10, 30])), y)
        one = table.select(pred.columns([10, 30])).take([0])
        pred.predict(one)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            pred.predict(one)
            times.append(time.perf_counter() - t)
        ms = float(np.median(times) * 1000)
        print(f"{name:>10}: one prediction {ms:.2f} ms = {ms / step_ms:.1%} of a decode step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--skip-text", action="store_true", help="skip the text-proxy predictors")
    args = parser.parse_args()

    from forelen.leaderboard.evaluate import make_predictor
    from forelen.predictors import PREDICTORS

    step_ms = decode_step_ms()
    print(f"SmolLM2-135M decode step (batch 1, 128-token context): {step_ms:.2f} ms")
    if not args.skip_text:
        text_latencies(step_ms)
    table, y = synthetic(args.rows)
    # The evaluation protocol's 60/20/20: fit on train, early-stop on validation, predict test.
    n_train, n_val = int(0.6 * args.rows), int(0.2 * args.rows)
    train = table.take(np.arange(n_train))
    val = table.take(np.arange(n_train, n_train + n_val))
    test = table.take(np.arange(n_train + n_val, args.rows))
    y_val = y[n_train: n_train + n_val]
    layers = table.layers()
    total = 0.0
    for name in HIDDEN_STATE:
        pred = make_predictor(PREDICTORS.get(name), 42)
        cols = pred.columns(layers)
        t0 = time.perf_counter()
        pred.fit(train.select(cols), y[:n_train], eval_set=(val.select(cols), y_val))
        pred.predict(test.select(cols))
        elapsed = time.perf_counter() - t0
        total += elapsed
        one = test.select(cols).take([0])
        call = (lambda: pred.predict_remaining(one, 8)) if pred.info.progressive else \
            (lambda: pred.predict(one))
        call()
        times = []
        for _ in range(50):
            t = time.perf_counter()
            call()
            times.append(time.perf_counter() - t)
        ms = float(np.median(times) * 1000)
        what = "one update at t=8" if pred.info.progressive else "one prediction"
        print(f"{name:>10}: fit+predict {args.rows} rows {elapsed:6.1f} s; {what} {ms:.3f} ms "
              f"= {ms / step_ms:.1%} of a decode step")
    print(f"all hidden-state predictors on {args.rows} rows: {total:.1f} s (target < 120 s)")


if __name__ == "__main__":
    main()
