"""Result records: one JSON file per (config, predictor), with full provenance (lm-eval style)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from forelen import __version__, contracts
from forelen.dataset import atomic_write_bytes
from forelen.provenance import git_commit, library_versions

RECORD_VERSION = 1


def dataset_fingerprint(entry: dict) -> str:
    """sha256 over the config's shard hashes: changes whenever any row could have changed."""
    h = hashlib.sha256()
    for name, shard in sorted(entry["shards"].items()):
        h.update(f"{name}:{shard['sha256']}\n".encode())
    return h.hexdigest()


def predictions_hash(pred: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(pred, dtype="<f8").tobytes()).hexdigest()


def write_record(results_dir: str | Path, record: dict) -> Path:
    # keyed by name, plus a hash of any non-default parameters: variants never overwrite each other
    key = record["predictor"].get("key") or record["predictor"]["name"]
    path = Path(results_dir) / record["dataset"]["config"] / f"{key}.json"
    data = (json.dumps(record, indent=2, default=_json) + "\n").encode()
    contracts.validate("record", json.loads(data), f"the record to write to {path}")
    atomic_write_bytes(path, data)
    return path


def stamp() -> dict:
    return {"record_version": RECORD_VERSION, "forelen_version": __version__,
            "git_commit": git_commit(), "library_versions": library_versions(),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _json(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


HIST_BINS = 24


def histogram_of(output_tokens, truncated, max_new_tokens: int | None) -> dict:
    """The page's output-length histogram: HIST_BINS bins from 0 to the budget (or the longest
    output), with the count of rows cut at the budget."""
    y = np.asarray(output_tokens, dtype=np.int64)
    cap = int(max_new_tokens or y.max())
    hi = max(int(y.max()), cap, 1)
    counts, edges = np.histogram(y, bins=HIST_BINS, range=(0, hi))
    return {"edges": [round(float(e), 2) for e in edges], "counts": [int(c) for c in counts],
            "rows": int(len(y)), "max_new_tokens": cap,
            "truncated": int(np.sum(np.asarray(truncated, dtype=bool))),
            "mean": round(float(y.mean()), 1), "median": float(np.median(y))}
