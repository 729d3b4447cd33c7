"""Terminal tables in a pipe: numbers are never cut, whatever the width (issue: `17…` for an MAE
of 176.4 in an 80-column pipe)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from forelen.leaderboard.report import results_table
from forelen.metrics import metric_value

RELEASE = Path(__file__).resolve().parents[1] / "releases" / "v0.1.0" / "records"


def _records(config: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((RELEASE / config).glob("*.json"))]


def _print(table, width: int) -> str:
    out = io.StringIO()
    Console(file=out, width=width, force_terminal=False, color_system=None).print(table)
    return out.getvalue()


@pytest.mark.parametrize("width", [80, 60, 40])
def test_no_number_is_cut_at_any_width(width):
    recs = _records("smollm2-135m-cot")
    text = _print(results_table(recs, "smollm2-135m-cot", width), width)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    # every MAE and its interval are printed whole
    for r in recs:
        mae = metric_value(r, "mae")
        if mae is not None:
            assert f"{mae:.1f}" in text
            lo, hi = r["metrics"]["mae_ci95"]
            assert f"{lo:.0f}-{hi:.0f}" in text


def test_columns_that_do_not_fit_are_named():
    recs = _records("smollm2-135m-rl")
    narrow = _print(results_table(recs, "rl", 80), 80)
    assert "not shown at 80 columns:" in narrow and "--json" in narrow
    wide = _print(results_table(recs, "rl", 250), 250)
    assert "not shown" not in wide and "ms/req" in wide
