"""What a new engine, source, predictor or metric must touch: one definition each.

Each test adds a small real one the way a contributor would (a class registered under a name, or
one entry in the metric schema) and uses it through the public path (a build, an evaluation, the
tables), changing nothing else. A test here that needs a second edit somewhere is an extension
point that leaks.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from forelen.builders.build import BuildOptions, run_build
from forelen.builders.engines import ENGINES, Engine, EngineInfo, finish
from forelen.builders.sources import SOURCES, Prompt, Source, SourceInfo
from forelen.dataset import DatasetFolder


class GreedyEngine(Engine):
    """A real engine in a dozen lines: greedy decoding, one request at a time, no cache. The
    features come from the build's teacher-forced recorder pass (`Engine`'s defaults)."""

    info = EngineInfo("greedy-test", "greedy decoding without a cache", devices="cpu",
                      requires="torch")

    @classmethod
    def create(cls, model, tokenizer, resolved_model, settings):
        return cls(model, tokenizer)

    def __init__(self, model, tokenizer):
        from forelen.builders.engines.sampling import eos_ids

        self.model, self.eos = model, eos_ids(model, tokenizer)

    def generate(self, requests, on_done=None):
        import torch

        out = []
        for r in requests:
            ids = list(r.prompt_ids)
            with torch.inference_mode():
                for _ in range(r.max_new_tokens):
                    token = int(self.model(torch.tensor([ids])).logits[0, -1].argmax())
                    ids.append(token)
                    if token in self.eos:
                        break
            gen = finish(r.uid, ids[len(r.prompt_ids):], self.eos, r.max_new_tokens)
            if on_done:
                on_done(gen)
            else:
                out.append(gen)
        return None if on_done else out


class CountingSource(Source):
    """A real source in a few lines: numbered questions, selected as every source selects."""

    info = SourceInfo("counting-test", "numbered questions", reference="this test",
                      license="cc0-1.0", offline=True)

    def load(self, limit, seed):
        from forelen.builders.sources import select

        prompts = [Prompt(self.info.name, str(i), f"Count from 1 to {i}.") for i in range(1, 13)]
        return select(prompts, limit, seed)


@pytest.fixture
def registered(monkeypatch):
    """The new engine and source registered, as their modules' decorators would."""
    ENGINES._discover()
    SOURCES._discover()
    monkeypatch.setitem(ENGINES._entries, "greedy-test", GreedyEngine)
    monkeypatch.setitem(SOURCES._entries, "counting-test", CountingSource())


def test_a_new_engine_and_a_new_source_build_a_dataset_with_nothing_else_changed(
        registered, tiny_model_dir, tmp_path):
    opts = BuildOptions(split="cot", model=str(tiny_model_dir), sources=("counting-test",),
                        engine="greedy-test", limit=6, max_new_tokens=6, batch_size=3,
                        steps=4, dtype="float32", device="cpu", out=str(tmp_path / "ds"))
    entry = run_build(opts)
    assert entry["build"]["engine"] == "greedy-test"
    assert entry["build"]["engine_settings"]["features"] == "teacher-forced recorder pass"
    table = DatasetFolder(opts.out).read(next(iter(DatasetFolder(opts.out).manifest()["configs"])))
    assert table.num_rows == 6
    assert set(table.column("source").to_pylist()) == {"counting-test"}
    # the features of an engine that only generates: the recorder's, for every row
    layer = next(c for c in table.column_names if c.startswith("egtp_l"))
    assert all(v is not None for v in table.column(layer).to_pylist())
    # greedy: the same build again gives the same responses
    again = run_build(dataclasses.replace(opts, out=str(tmp_path / "again")))
    other = DatasetFolder(str(tmp_path / "again"))
    assert other.read(next(iter(other.manifest()["configs"]))).column("response").to_pylist() \
        == table.column("response").to_pylist()
    assert again["fingerprint"] == entry["fingerprint"]


def test_a_new_metric_is_one_entry_in_the_schema_and_reaches_every_table(tmp_path):
    """A metric added to `metrics.METRICS` (with its computation in `length_metrics`) shows in
    the terminal table and the page's config table with no edit to the leaderboard: run in a
    fresh interpreter, since the tables read the schema when they are imported."""
    script = r'''
import dataclasses, json, sys
import numpy as np
import forelen.metrics as m
extra = m.Metric("max_ae", "MaxAE", "MaxAE", 1, "lower", None, "largest absolute error")
m.METRICS = m.METRICS + (extra,)
original = m.length_metrics
def length_metrics(y_true, y_pred, **kw):
    out = original(y_true, y_pred, **kw)
    out["max_ae"] = float(np.max(np.abs(np.asarray(y_true) - np.asarray(y_pred))))
    return out
m.length_metrics = length_metrics
from forelen.leaderboard import render, report
y = np.array([10.0, 20, 30, 40]); p = np.array([12.0, 18, 35, 40])
rec = {"predictor": {"name": "x", "key": "x", "ranked": True, "family": "hidden-state",
                     "outputs": "length"},
       "dataset": {"config": "c"}, "metrics": m.length_metrics(y, p, n_boot=50),
       "timing": {"per_request_ms": 0.1}}
terminal = report.results_table([rec], "c", width=200)
from rich.console import Console
console = Console(width=200, record=True)
console.print(terminal)
text = console.export_text()
page = render.config_table([rec], {})
print(json.dumps({"terminal": "MaxAE" in text and "5.0" in text,
                  "page": any(c.get("text") == "5.0" for c in page[0]["cols"])}))
'''
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"terminal": True, "page": True}
