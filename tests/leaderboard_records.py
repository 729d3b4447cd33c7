"""Result records and a tiny dataset folder for the leaderboard tests, written in code.

The records have the shape `forelen evaluate` writes (src/forelen/leaderboard/records.py); `end_to_end` has the
shape of the scheduling simulator's block, so the page is tested with and without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CONFIGS = ("tiny-cot", "tiny-rl")
# name: (family, outputs, progressive, ranked, MAE per config)
PREDICTORS = {
    "egtp": ("hidden-state", "length", False, True, (40.0, 20.0)),
    "plp": ("hidden-state", "length", True, True, (35.0, 30.0)),
    "tpv": ("hidden-state", "length", True, True, (60.0, 25.0)),
    "constant-median": ("reference", "length", False, True, (50.0, 45.0)),
    "ltr": ("text-proxy", "ranking", False, True, (None, None)),
    "group-median-oracle": ("reference", "length", False, False, (0.0, 4.0)),
}
DISTRIBUTION = ("egtp", "plp")  # records that carry crps, coverage_80, interval_width_80
EVIL = '</script><script>alert("x")</script><b>bold</b>'


def make_dataset(root: Path, configs=CONFIGS, max_new_tokens: int = 256) -> dict[str, str]:
    """A dataset folder with only the columns the leaderboard reads; returns fingerprints."""
    import pyarrow as pa

    from forelen.dataset import DatasetFolder
    from forelen.leaderboard.records import dataset_fingerprint

    folder = DatasetFolder(root)
    rng = np.random.default_rng(0)
    prints = {}
    for i, config in enumerate(configs):
        y = np.minimum(rng.integers(10, 320, size=40 + 10 * i), max_new_tokens)
        table = pa.table({"output_tokens": pa.array(y, pa.int32()),
                          "finish_reason": ["length" if v >= max_new_tokens else "stop" for v in y]})
        shard = folder.write_shard(config, "test-00000.parquet", table)
        entry = {"status": "complete", "shards": {"test-00000.parquet": shard},
                 "build": {"max_new_tokens": max_new_tokens, "split": config.split("-")[-1]}}
        folder.update(lambda m, c=config, e=entry: m["configs"].__setitem__(c, e))
        prints[config] = dataset_fingerprint(entry)
    return prints


def end_to_end(mae: float) -> dict:
    def metrics(scale: float) -> dict:
        return {"requests": 40, "throughput_tok_s": 900.0 * scale, "throughput_req_s": 5.0 * scale,
                "jct_mean_s": 3.0 / scale, "jct_p90_s": 6.0 / scale, "padding_ratio": 0.3 / scale,
                "makespan_s": 9.0 / scale}

    def block(policy: str) -> dict:
        pred, fcfs, oracle = metrics(1 + 10 / (mae + 10)), metrics(1.0), metrics(2.0)
        ratio = lambda a, b: {k: a[k] / b[k] for k in ("throughput_tok_s", "jct_mean_s",  # noqa: E731
                                                       "jct_p90_s", "padding_ratio")}
        return {"policy": policy, "predictor": pred, "fcfs": fcfs, "oracle": oracle,
                "vs_fcfs": ratio(pred, fcfs), "vs_oracle": ratio(pred, oracle) | {"jct_p90_s": None}}

    return {"settings": {"slots": 8, "arrival_rate": 4.0},
            "modes": {"static": block("sjf"), "continuous": block("srpt")}}


def make_record(config: str, name: str, fingerprint: str, dataset_path: str | None,
                e2e: bool = True, evil: bool = False) -> dict:
    family, outputs, progressive, ranked, maes = PREDICTORS[name]
    mae = maes[CONFIGS.index(config)] if config in CONFIGS else 10.0
    ranking = outputs == "ranking"
    metrics = ({"n": 40, "kendall_tau": 0.3, "spearman_rho": 0.4} if ranking else
               {"n": 40, "mae": mae, "mae_ci95": [mae * 0.8, mae * 1.2], "rmse": mae * 1.3,
                "median_ae": mae * 0.9, "kendall_tau": 0.5 - mae / 200, "spearman_rho": 0.6 - mae / 200,
                "acc_50": 0.5, "acc_100": 0.8})
    if name in DISTRIBUTION:  # predictors with `predict_distribution`; the others lack the keys,
        # as records written before the distribution metrics do
        metrics |= {"crps": mae * 0.7, "coverage_80": 0.78, "interval_width_80": mae * 3}
    params = {"seed": 42, "layer": "final"} | ({"note": EVIL} if evil else {})
    record = {
        "record_version": 1, "forelen_version": "0.1.0", "git_commit": "abc123",
        "library_versions": {"python": "3.11"}, "created_at": "2026-01-01T00:00:00Z",
        "predictor": {"name": name, "version": "1", "family": family,
                      "reference": EVIL if evil else f"paper of {name}", "outputs": outputs,
                      "progressive": progressive, "ranked": ranked, "params": params,
                      "columns": ["egtp_l30"]},
        "dataset": {"path": dataset_path, "repo": None, "revision": None, "config": config,
                    "partition": "test", "schema_version": 1, "fingerprint": fingerprint,
                    "model": "tiny/model", "model_revision": "r1", "split": config.split("-")[-1],
                    "recorded_layers": [10, 30], "sources": ["mmath-pkg", "gsm-symbolic"],
                    "source_mix": "packaged (offline fallback)"},
        "protocol": {"fit": "train", "select": "validation", "score": "test", "seed": 42},
        "metrics": metrics,
        "per_step": ({str(t): {"n": 40, "mae": mae * (1 - t / 100)} for t in (0, 1, 2, 4, 8, 16, 32, 64)}
                     if progressive else None),
        "references": {"test_rows": 40, "test_mean_output_tokens": 150.0, "test_truncation_rate": 0.2}
                      | ({"static_floor_mae": 4.0} if config.endswith("rl") else {}),
        "timing": {"fit_s": 0.1, "predict_s": 0.01, "per_request_ms": 0.2},
        "predictions_sha256": "0" * 64,
    }
    if e2e and not ranking:
        record["end_to_end"] = end_to_end(mae)
    return record


def write_results(root: Path, dataset: Path | None = None, e2e: bool = True, evil: bool = False,
                  names=tuple(PREDICTORS)) -> Path:
    """A results folder (<config>/<predictor>.json) and, with `dataset`, its dataset folder."""
    prints = make_dataset(dataset) if dataset else {c: f"fp-{c}" for c in CONFIGS}
    for config in CONFIGS:
        for name in names:
            rec = make_record(config, name, prints[config], str(dataset) if dataset else None,
                              e2e=e2e, evil=evil and name == "egtp")
            path = root / config / f"{name}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(rec, indent=2))
    return root
