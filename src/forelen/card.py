"""Render the dataset card (README.md with YAML `configs:`) from src/forelen/cards/dataset_card.md."""

from __future__ import annotations

import importlib.resources

import numpy as np

from forelen import __version__
from forelen.dataset import CARD, DatasetFolder, partitions_present
from forelen.schema import PARTITIONS, SCHEMA_VERSION


def config_stats(folder: DatasetFolder, config: str) -> dict:
    """Length statistics from the scalar columns only (no feature column is read)."""
    table = folder.read(config, columns=["group_id", "source", "partition", "output_tokens",
                                         "prompt_tokens", "finish_reason"])
    out = np.asarray(table["output_tokens"].to_numpy())
    prompt = np.asarray(table["prompt_tokens"].to_numpy())
    parts = table["partition"].to_pylist()
    sources = table["source"].to_pylist()
    return {
        "rows": table.num_rows,
        "groups": len(set(table["group_id"].to_pylist())),
        "partition_rows": {p: parts.count(p) for p in PARTITIONS},
        "output_tokens": {"mean": round(float(out.mean()), 1), "median": float(np.median(out)),
                          "p90": float(np.percentile(out, 90)), "max": int(out.max())},
        "prompt_tokens": {"mean": round(float(prompt.mean()), 1), "max": int(prompt.max())},
        "truncation_rate": round(table["finish_reason"].to_pylist().count("length") / len(out), 4),
        "sources": {s: sources.count(s) for s in sorted(set(sources))},
    }


def render_card(folder: DatasetFolder) -> str:
    from jinja2 import Environment

    manifest = folder.manifest()
    configs = [dict(name=name, partitions=partitions_present(entry), **entry)
               for name, entry in sorted(manifest["configs"].items())
               if entry.get("status") == "complete"]
    template = importlib.resources.files("forelen.cards").joinpath("dataset_card.md")
    return Environment(keep_trailing_newline=True).from_string(template.read_text()).render(
        configs=configs, forelen_version=__version__, schema_version=SCHEMA_VERSION)


def write_card(folder: DatasetFolder) -> None:
    folder.write_bytes(CARD, render_card(folder).encode())
