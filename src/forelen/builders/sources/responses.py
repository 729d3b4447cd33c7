"""Readers of existing (prompt, response) data for `forelen import`: the public ForeLen release,
chat-completions logs, ShareGPT conversations, and plain JSONL / CSV / Parquet tables.

Each reader returns `Part`s: one per config to import, holding one record per source row with the
same fields whatever the format (prompt, response, logged length, token ids, group, partition,
finish reason, where the row came from). Values are kept as read (strings from CSV); casting and
validation happen in `src/forelen/builders/importer.py`, which counts and reports every row it cannot use.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from forelen.builders.sources import sharegpt
from forelen.builders.sources.sharegpt import is_sharegpt
from forelen.errors import ForelenError
from forelen.hub import REPO_ID_RE, snapshot

FORMATS = ("auto", "forelen-release", "openai-chat", "sharegpt", "jsonl", "csv", "parquet")
# The release's layout: {model}_{size}/{LongSeq|Reasoning|RL}/{train,validation,test}.csv
RELEASE_SPLITS = {"LongSeq": "long", "Reasoning": "cot", "RL": "rl"}
RELEASE_COLUMNS = {"prompt": "user_prompt_content", "response": "response_content",
                   "length": "target_length"}
RELEASE_PARTITIONS = ("train", "validation", "test")
# Columns a plain table is read from when no --*-column names them (forelen's own names).
DEFAULT_COLUMNS = {"prompt": "prompt", "response": "response", "length": "output_tokens",
                   "ids": "response_token_ids", "group": "group_id", "partition": "partition",
                   "finish": "finish_reason"}
REQUIRED = ("prompt", "response")
# Formats whose fields are fixed by the format: a --*-column option would be silently ignored.
FIXED = {"openai-chat": "messages, choices[0].message.content, usage.completion_tokens, "
                        "choices[0].finish_reason, and group_id and partition at the top level",
         "forelen-release": "user_prompt_content, response_content, target_length, and the "
                            "partition in the file name",
         "sharegpt": "id and conversations [{from, value}]; each reply after a human/user turn "
                     "is a row, its prompt the conversation so far"}


@dataclass
class Record:
    prompt: object  # str, or a list of chat messages (openai-chat)
    response: object
    length: object = None  # the logged length, as read (may be a string, or missing)
    ids: object = None  # logged response token ids, as read
    group: object = None
    partition: object = None
    finish: object = None
    where: str = ""  # file:line (JSONL), file record N (CSV), file row N (Parquet), for messages
    date: str | None = None  # the day it was served (YYYY-MM-DD), where the log says
    unit: str | None = None  # what keeps rows in one partition (a conversation); None: the group


@dataclass
class Part:
    name: str  # release: `<generator folder>-<split>`; otherwise the source's file stem
    split: str | None  # release: from the folder; otherwise --split
    records: list[Record]
    files: dict[str, str] = field(default_factory=dict)  # file -> sha256
    columns: dict[str, str | None] = field(default_factory=dict)  # field -> column read
    # records that yield no row at all (a malformed conversation), counted by reason as the
    # importer counts unusable rows, and where the first of each is
    unusable: dict[str, int] = field(default_factory=dict)
    first_unusable: dict[str, str] = field(default_factory=dict)
    report: dict = field(default_factory=dict)  # what the reader adds to the import report


def locate(source: str) -> tuple[Path, str]:
    """(local path, how it was found): a file or folder, or a hub dataset repo's snapshot."""
    path = Path(source).expanduser()
    if path.exists():
        return path, "local"

    if not REPO_ID_RE.match(source):
        raise ForelenError(f"no such file or folder: {source}")
    folder = snapshot(source, "dataset", None, f"forelen import {source}",
                      f"cannot import {source}: the Hugging Face hub cannot be reached and no "
                      "cached copy exists; download the dataset where the hub is reachable and "
                      "pass its folder")
    return folder, "hub"


def detect(path: Path) -> str:
    if path.is_dir():
        if any(p.parent.name in RELEASE_SPLITS for p in path.rglob("*.csv")) or \
                path.name in RELEASE_SPLITS:
            return "forelen-release"
        raise ForelenError(f"cannot tell the format of folder {path}: it is not in the ForeLen "
                           "release's layout ({model}_{size}/{LongSeq|Reasoning|RL}/*.csv); pass "
                           "a file, or --format")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        if is_sharegpt(path):  # read from the head alone: the file may be cut off
            return "sharegpt"
        first = _first_json(path)
        return "openai-chat" if isinstance(first, dict) and (
            "messages" in first or "request" in first) else "jsonl"
    if suffix in (".csv", ".parquet"):
        return suffix[1:]
    raise ForelenError(f"cannot tell the format of {path} from its suffix; pass --format "
                       f"({', '.join(FORMATS[1:])})")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise ForelenError(f"cannot read {path}: {exc.strerror or exc}") from None
    return h.hexdigest()


def check_columns(fmt: str, columns: dict[str, str | None]) -> None:
    """A column option for a format that fixes its columns is refused, not ignored."""
    given = [k for k, v in columns.items() if v]
    if fmt in FIXED and given:
        raise ForelenError(f"--{_option(given[0])} does not apply to {fmt} data, whose fields "
                           f"are fixed: {FIXED[fmt]}")


def read(path: Path, fmt: str, split: str | None, columns: dict[str, str | None],
         turns: str = "first") -> list[Part]:
    """The source's parts; `columns` maps field -> column for the plain formats (None: default);
    `turns` says which replies of a ShareGPT conversation are rows."""
    if fmt == "forelen-release":
        return _release(path, split)
    if path.is_dir():
        raise ForelenError(f"{path} is a folder; --format {fmt} reads one file")
    if fmt == "sharegpt":
        return [_sharegpt(path, split, turns)]
    if fmt == "openai-chat":
        records = [_chat(obj, f"{path.name} line {i}") for i, obj in _json_lines(path)]
        return [Part(path.stem, split, _nonempty(records, path), {str(path): sha256_of(path)},
                     {"prompt": "messages", "response": "choices[0].message.content",
                      "length": "usage.completion_tokens", "finish": "choices[0].finish_reason"})]
    rows, names, lines = _table(path, fmt)
    mapping = _mapping(columns, names, path)
    records = [Record(*(row.get(mapping[k]) if mapping[k] else None
                        for k in ("prompt", "response", "length", "ids", "group", "partition",
                                  "finish")), where=f"{path.name} {line}")
               for line, row in zip(lines, rows)]
    return [Part(path.stem, split, _nonempty(records, path), {str(path): sha256_of(path)},
                 mapping)]


def _mapping(columns: dict[str, str | None], names: list[str], path: Path) -> dict:
    """field -> column: the ones given must exist; defaults are used where present."""
    mapping = {}
    for key, default in DEFAULT_COLUMNS.items():
        given = columns.get(key)
        if given:
            if given not in names:
                raise ForelenError(f"{path} has no column {given!r} (--{_option(key)}); its "
                                   f"columns: {', '.join(names)}")
            mapping[key] = given
        else:
            mapping[key] = default if default in names else None
    missing = [k for k in REQUIRED if mapping[k] is None]
    if missing:
        raise ForelenError(f"{path} has no {missing[0]} column (looked for "
                           f"{DEFAULT_COLUMNS[missing[0]]!r}); name it with "
                           f"--{_option(missing[0])}; its columns: {', '.join(names)}")
    return mapping


def _option(key: str) -> str:
    return {"ids": "response-ids-column", "finish": "finish-column"}.get(key, f"{key}-column")


def _nonempty(records: list, path: Path) -> list:
    if not records:
        raise ForelenError(f"{path} holds no rows")
    return records


def _table(path: Path, fmt: str) -> tuple[list[dict], list[str], list[str]]:
    """(rows as dicts, column names, where each row is: "line N" in JSONL, "record N" in CSV,
    counted from the first row after the header, "row N" in Parquet).

    Every CSV value is read as a string (the release mixes types across its files)."""
    try:
        if fmt == "csv":
            import pandas as pd

            try:
                frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            except pd.errors.EmptyDataError:
                raise ForelenError(f"{path} is empty") from None
            except (pd.errors.ParserError, UnicodeDecodeError) as exc:
                raise ForelenError(f"cannot parse {path} as CSV: "
                                   f"{str(exc).strip().splitlines()[0]}") from None
            rows = frame.to_dict("records")
            # quoted cells span lines (responses usually do): a line number would be wrong
            return rows, list(frame.columns), [f"record {i + 1}" for i in range(len(rows))]
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                table = pq.read_table(path, use_threads=False)  # see dataset.DatasetFolder.read
            except pa.ArrowInvalid as exc:
                raise ForelenError(f"cannot read {path} as Parquet: {exc}") from None
            return (table.to_pylist(), table.column_names,
                    [f"row {i + 1}" for i in range(table.num_rows)])
        numbered = _json_lines(path)
        if any(not isinstance(obj, dict) for _, obj in numbered):
            raise ForelenError(f"{path}: every line must be a JSON object")
        rows = [obj for _, obj in numbered]
        names = list(dict.fromkeys(k for r in rows for k in r))
        return rows, names, [f"line {i}" for i, _ in numbered]
    except OSError as exc:
        raise ForelenError(f"cannot read {path}: {exc.strerror or exc}") from None


def _json_lines(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ForelenError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not text.strip():
        raise ForelenError(f"{path} is empty")
    stripped = text.lstrip()
    if stripped.startswith("["):  # a .json array of objects
        try:
            return list(enumerate(json.loads(text), 1))
        except json.JSONDecodeError as exc:
            raise ForelenError(f"{path} is not valid JSON: {exc}") from None
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append((i, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ForelenError(f"{path}:{i} is not valid JSON: {exc.msg}") from None
    return out


def _first_json(path: Path):
    lines = _json_lines(path)
    return lines[0][1] if lines else None


def _text(content) -> str | None:
    """Chat message content: a string, or a list of parts ({"type": "text", "text": ...})."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def _chat(obj, where: str) -> Record:
    """One chat-completions log line: the request's `messages`, the reply, usage, finish reason.

    Accepted shapes: {"messages", "choices", "usage"} flat, or {"request": {...}, "response":
    {...}}; a reply given as the last (assistant) message of `messages` also works.
    """
    if not isinstance(obj, dict):
        return Record(None, None, where=where)
    request = obj.get("request") if isinstance(obj.get("request"), dict) else obj
    response = obj.get("response") if isinstance(obj.get("response"), dict) else obj
    messages = request.get("messages")
    reply, finish = None, response.get("finish_reason")
    choices = response.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message") or {}
        reply = _text(message.get("content")) if isinstance(message, dict) else None
        if reply is None and "text" in choices[0]:  # completions (not chat) logs
            reply = choices[0]["text"]
        finish = choices[0].get("finish_reason", finish)
    elif isinstance(messages, list) and messages and isinstance(messages[-1], dict) \
            and messages[-1].get("role") == "assistant":
        reply, messages = _text(messages[-1].get("content")), messages[:-1]
    if isinstance(messages, list):
        messages = [{"role": m.get("role", "user"), "content": _text(m.get("content")) or ""}
                    for m in messages if isinstance(m, dict)] or None
    else:
        messages = None
    usage = response.get("usage") or obj.get("usage") or {}
    length = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return Record(messages, reply, length, None, obj.get("group_id"), obj.get("partition"),
                  finish, where, _served_on(response.get("created", obj.get("created"))))


def _served_on(created) -> str | None:
    """The UTC day of a chat-completions `created` (Unix seconds), or None."""
    import datetime as dt

    if isinstance(created, bool) or not isinstance(created, (int, float)):
        return None
    try:
        return dt.datetime.fromtimestamp(created, dt.timezone.utc).date().isoformat()
    except (OverflowError, OSError, ValueError):
        return None


def _sharegpt(path: Path, split: str | None, turns: str) -> Part:
    """Rows of a ShareGPT file: each the conversation so far (chat messages) and its reply. A
    record that yields no row is counted by reason; every row of one conversation shares its
    partition."""
    parsed = sharegpt.parse(sharegpt.read_conversations(path), turns)
    records = [Record(t.messages, t.response,
                      where=parsed.where[cid] + (f" turn {t.index}" if turns == "all" else ""),
                      unit=cid)
               for cid, rows in parsed.usable.items() for t in rows]
    return Part(path.stem, split, records, {str(path): sha256_of(path)},
                {"prompt": "conversations (turns before the reply)",
                 "response": "conversations (gpt/assistant reply)"},
                unusable=dict(parsed.unusable), first_unusable=parsed.first_unusable,
                report={"conversations": parsed.counts})


def _release(path: Path, split: str | None) -> list[Part]:
    """Every (generator folder, split) under `path`, with its train/validation/test files."""
    path = path.resolve()
    found: dict[tuple[str, str], dict[str, Path]] = {}
    candidates = [path] if path.is_file() else sorted(path.rglob("*.csv"))
    for f in candidates:
        if f.parent.name not in RELEASE_SPLITS or f.stem not in RELEASE_PARTITIONS:
            continue
        s = RELEASE_SPLITS[f.parent.name]
        if split and s != split:
            continue
        found.setdefault((f.parent.parent.name, s), {})[f.stem] = f
    if not found:
        wanted = f" for split {split}" if split else ""
        raise ForelenError(f"no ForeLen release files{wanted} under {path} (expected "
                           "{model}_{size}/{LongSeq|Reasoning|RL}/{train,validation,test}.csv)")
    parts = []
    for (generator, s), files in sorted(found.items()):
        records, sums = [], {}
        for part in RELEASE_PARTITIONS:
            if part not in files:
                continue
            f = files[part]
            rows, names, lines = _table(f, "csv")
            missing = [c for c in RELEASE_COLUMNS.values() if c not in names]
            if missing:
                raise ForelenError(f"{f} has no column {missing[0]!r}; the release's files have "
                                   f"{', '.join(RELEASE_COLUMNS.values())}; its columns: "
                                   f"{', '.join(names)}")
            if not rows:
                raise ForelenError(f"{f} holds no rows")
            sums[str(f)] = sha256_of(f)
            records += [Record(r[RELEASE_COLUMNS["prompt"]], r[RELEASE_COLUMNS["response"]],
                               r[RELEASE_COLUMNS["length"]], None, None, part, None,
                               f"{f.parent.name}/{f.name} {line}")
                        for line, r in zip(lines, rows)]
        parts.append(Part(f"{generator}-{s}", s, records, sums,
                          dict(RELEASE_COLUMNS, partition="file name (train/validation/test)")))
    return parts
