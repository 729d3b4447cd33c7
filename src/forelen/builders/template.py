"""Chat templates rendered on a fixed date, so a plan never depends on the day it is made.

transformers gives every chat template `strftime_now`, and some templates write today's date into
each prompt (Llama-3.2-Instruct: "Today Date: 04 Dec 2026"). The date then enters the prompt ids,
and so a build's fingerprint: a resume on a later day would be refused, shards made on different
days could not be merged, and PiA could not find the user text again. forelen renders every
prompt with one date (`date_string`, ISO `YYYY-MM-DD`), recorded in the manifest: the build date by
default, reused on resume; an import takes each record's date from the log when it has one.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import threading

from forelen.errors import ForelenError

_LOCK = threading.Lock()  # the clock is pinned module-wide while one render runs
_PROBE = "\x00forelen-date-probe\x00"


def today() -> str:
    """The date a build made today records (UTC, so two machines agree)."""
    return _dt.datetime.now(_dt.timezone.utc).date().isoformat()


def check_date(value: str | None) -> str | None:
    """`--date` as given: ISO YYYY-MM-DD, or one clear line."""
    if value is None:
        return None
    try:
        return _dt.date.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise ForelenError(f"--date must be a day as YYYY-MM-DD, got {value!r}") from None


@contextlib.contextmanager
def pinned_clock(date: str | None):
    """Within the block, templates' `strftime_now` reads `date` (midnight UTC) instead of now.

    transformers defines `strftime_now(fmt)` as `datetime.now().strftime(fmt)` over its module's
    `datetime` (utils/chat_template_utils.py), and converts callables passed as template
    arguments to strings, so the clock the template reads is the module's.
    """
    if date is None:
        yield
        return
    from transformers.utils import chat_template_utils as ctu

    fixed = _dt.datetime.fromisoformat(date)

    class _Pinned(_dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return fixed if tz is None else fixed.replace(tzinfo=tz)

        @classmethod
        def today(cls):
            return fixed

    with _LOCK:
        had = hasattr(ctu, "datetime")
        saved = getattr(ctu, "datetime", None)
        ctu.datetime = _Pinned
        try:
            yield
        finally:
            if had:
                ctu.datetime = saved
            else:
                del ctu.datetime


def render_messages(tokenizer, messages: list[dict], date: str | None = None) -> str:
    """A conversation with the tokenizer's chat template and the generation prompt, on `date`."""
    with pinned_clock(date):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def render(tokenizer, text: str, date: str | None = None) -> str:
    """One user turn as the generator sees it; the text as it is without a chat template."""
    if getattr(tokenizer, "chat_template", None):
        return render_messages(tokenizer, [{"role": "user", "content": text}], date)
    return text


def uses_date(tokenizer) -> bool:
    """Whether the chat template writes the date into a prompt (two days, two renders)."""
    if not getattr(tokenizer, "chat_template", None):
        return False
    return render(tokenizer, _PROBE, "2001-01-01") != render(tokenizer, _PROBE, "2002-02-02")
