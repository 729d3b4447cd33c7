"""Chat templates on a fixed date (src/forelen/builders/template.py): a template that prints today's date
renders the same prompt on any day, so builds resume and shards merge across days, and PiA finds
the user text again on another day."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil

import pytest
from test_build import opts  # noqa: F401 (fixture)

from forelen.builders.template import check_date, pinned_clock, render, today, uses_date
from forelen.errors import ForelenError

DATED = "Today Date: {{ strftime_now('%d %b %Y') }}\n"


def set_clock(monkeypatch, day: str) -> None:
    """The clocks of transformers' `strftime_now` and of forelen's build date say `day`."""
    from transformers.utils import chat_template_utils as ctu

    from forelen.builders import template

    fixed = dt.datetime.fromisoformat(day)

    class Clock(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return fixed

    monkeypatch.setattr(ctu, "datetime", Clock)
    monkeypatch.setattr(template, "today", lambda: day)


@pytest.fixture
def dated():
    from conftest import _make_tokenizer

    tok = _make_tokenizer()
    tok.chat_template = DATED + tok.chat_template
    return tok


def test_renders_on_two_days_are_equal_on_a_fixed_date(dated, monkeypatch):
    set_clock(monkeypatch, "2026-01-05")
    first, unpinned = render(dated, "Hi.", "2025-07-26"), render(dated, "Hi.")
    set_clock(monkeypatch, "2026-01-06")
    assert render(dated, "Hi.", "2025-07-26") == first and "26 Jul 2025" in first
    assert render(dated, "Hi.") != unpinned  # the clock really moved: unpinned renders differ
    from transformers.utils import chat_template_utils as ctu

    assert ctu.datetime.now().day == 6  # the pin is undone after the render


def test_uses_date_tells_templates_apart(dated):
    assert uses_date(dated)
    dated.chat_template = dated.chat_template.removeprefix(DATED)
    assert not uses_date(dated)


def test_check_date_is_one_line():
    assert check_date("2026-12-04") == "2026-12-04" and check_date(None) is None
    with pytest.raises(ForelenError, match="--date must be a day as YYYY-MM-DD"):
        check_date("04/12/2026")
    assert dt.date.fromisoformat(today())


def test_pinned_clock_restores_it_after_an_error(monkeypatch):
    from transformers.utils import chat_template_utils as ctu

    before = ctu.datetime
    with pytest.raises(RuntimeError), pinned_clock("2024-02-29"):
        assert ctu.datetime.now().date() == dt.date(2024, 2, 29)
        raise RuntimeError
    assert ctu.datetime is before


def test_pia_recovers_the_user_text_on_another_day(dated, monkeypatch):
    from forelen.predictors.pia import recover_user_text

    set_clock(monkeypatch, "2026-01-05")
    stored = render(dated, "How tall is the tower?", "2026-01-05")
    set_clock(monkeypatch, "2026-03-01")
    assert recover_user_text(dated, stored) is None  # today's date: the shell does not match
    assert recover_user_text(dated, stored, "2026-01-05") == "How tall is the tower?"


# --------------------------------------------------------------------------------------------
# builds with a template that prints the date


@pytest.fixture(scope="module")
def dated_model(tiny_model_dir, tiny_model, tmp_path_factory):
    from test_import import dated_template

    model = tmp_path_factory.mktemp("dated") / "tiny-llama"
    shutil.copytree(tiny_model_dir, model)
    dated_template(model, tiny_model[1])
    return model


def test_a_build_resumes_on_a_later_day(dated_model, opts, tmp_path, monkeypatch):
    from test_build import CONFIG, interrupt_on_call, sorted_rows

    from forelen.builders.build import run_build
    from forelen.dataset import DatasetFolder

    o = dataclasses.replace(opts, model=str(dated_model), out=str(tmp_path / "ds"))
    whole = dataclasses.replace(o, out=str(tmp_path / "whole"), date="2026-01-05")
    run_build(whole)
    set_clock(monkeypatch, "2026-01-05")
    interrupt_on_call(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run_build(o)
    monkeypatch.undo()
    set_clock(monkeypatch, "2026-01-06")  # the next day: the resume renders on the first day
    entry = run_build(o)
    assert entry["build"]["date_string"] == "2026-01-05"
    assert entry["build"]["template_uses_date"] is True
    rows = sorted_rows(DatasetFolder(o.out))
    assert all("05 Jan 2026" in p for p in rows["prompt"].to_pylist())
    assert rows.equals(sorted_rows(DatasetFolder(whole.out)))
    assert entry["fingerprint"] == DatasetFolder(whole.out).config(CONFIG)["fingerprint"]


def test_a_sharded_build_of_a_dated_template_needs_date(dated_model, opts, tmp_path):
    from forelen.builders.build import run_build

    o = dataclasses.replace(opts, model=str(dated_model), out=str(tmp_path / "ds"), num_shards=2)
    with pytest.raises(ForelenError, match="same --date YYYY-MM-DD"):
        run_build(o)
