"""Prompts from a user's own file: .jsonl, .json, .parquet or .csv.

A file source is built from a path, so it is not in SOURCES; `resolve_source` turns a `--source`
value into either a FileSource (path-like values) or a registered source (names).
Rows whose prompt is missing or blank are skipped; their row numbers are not reused, so ids
stay the row index in the file. A file with no usable prompt at all is an error.
"""

from __future__ import annotations

import json
from pathlib import Path

from forelen.builders.sources import SOURCES, Prompt, Source, SourceInfo, select, sharegpt
from forelen.errors import ForelenError

EXTENSIONS = (".jsonl", ".json", ".parquet", ".csv")


def _short(exc: BaseException) -> str:
    """A one-line, bounded reason from an exception."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {n}: {exc.msg}") from None
            if not isinstance(row, dict):
                raise ValueError(f"line {n} is not a JSON object")
            rows.append(row)
    return rows


def _read_json(path: Path) -> list[dict]:
    """A list of objects, or a column-oriented object {column: [values]}."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        import pandas as pd

        return pd.DataFrame(data).to_dict("records")
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ValueError("expected a list of objects or an object of columns")
    return data


def _read_table(path: Path) -> list[dict]:
    import pandas as pd

    if path.suffix.lower() == ".csv":
        # Text everywhere: ids like "007" stay as written and empty cells are "", not NaN.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    else:
        frame = pd.read_parquet(path, use_threads=False)  # see dataset.DatasetFolder.read
    return frame.to_dict("records")


READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_table, ".parquet": _read_table}


def _is_blank(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and value != value:  # NaN from a parquet/JSON column
        return True
    return isinstance(value, str) and not value.strip()


class FileSource(Source):
    """Prompts from one column of a user file; ids from `id_column` (or `id`), else the row index."""

    def __init__(self, path: str | Path, prompt_column: str = "prompt", id_column: str | None = None):
        self.path = Path(path).expanduser()
        self.prompt_column = prompt_column
        self.id_column = id_column
        suffix = self.path.suffix.lower()
        if suffix not in READERS:
            raise ForelenError(
                f"unsupported prompt file type {suffix or '(none)'!r} for {self.path.name}; "
                f"use one of {', '.join(EXTENSIONS)}"
            )
        self.info = SourceInfo(
            name=f"file:{self.path.name}",
            description=f"prompts from column {prompt_column!r} of {self.path}",
            reference=str(self.path),
            license="user-provided",
            offline=True,
        )

    def load(self, limit: int | None, seed: int) -> list[Prompt]:
        rows = self._rows()
        prompts = self._prompts(rows)
        if not prompts:
            raise ForelenError(f"no non-empty prompts in column {self.prompt_column!r} of {self.path.name}")
        return select(prompts, limit, seed)

    def _rows(self) -> list[dict]:
        if not self.path.is_file():
            raise ForelenError(f"prompt file not found: {self.path}")
        try:
            return READERS[self.path.suffix.lower()](self.path)
        except Exception as exc:  # any parser error: the file is corrupt or not what its name says
            raise ForelenError(f"cannot read prompts from {self.path.name!r}: {_short(exc)}") from None

    def _columns(self, rows: list[dict]) -> list[str]:
        columns: dict[str, None] = {}
        for row in rows:
            columns.update(dict.fromkeys(row))
        return list(columns)

    def _id_column(self, columns: list[str]) -> str | None:
        if self.id_column is not None:
            if self.id_column not in columns:
                raise ForelenError(
                    f"id column {self.id_column!r} not found in {self.path.name}; columns: {', '.join(columns)}"
                )
            return self.id_column
        return "id" if "id" in columns else None

    def _prompts(self, rows: list[dict]) -> list[Prompt]:
        columns = self._columns(rows)
        if rows and self.prompt_column not in columns:
            raise ForelenError(
                f"prompt column {self.prompt_column!r} not found in {self.path.name}; columns: {', '.join(columns)}"
            )
        id_column = self._id_column(columns)
        prompts, seen = [], set()
        for index, row in enumerate(rows):
            text = row.get(self.prompt_column)
            if _is_blank(text):
                continue
            if not isinstance(text, str):
                raise ForelenError(
                    f"prompt column {self.prompt_column!r} of {self.path.name} holds a {type(text).__name__} "
                    f"in row {index}, not text"
                )
            source_id = str(index) if id_column is None else self._row_id(row, id_column, index)
            if source_id in seen:
                raise ForelenError(f"duplicate id {source_id!r} in column {id_column!r} of {self.path.name}")
            seen.add(source_id)
            prompts.append(Prompt(self.info.name, source_id, text, meta={"row": index}))
        return prompts

    def _row_id(self, row: dict, id_column: str, index: int) -> str:
        value = row.get(id_column)
        if _is_blank(value):
            raise ForelenError(f"row {index} of {self.path.name} has no value in id column {id_column!r}")
        return str(value)


def looks_like_path(spec: str) -> bool:
    """True for an existing file or a name ending in a prompt-file extension."""
    return spec.lower().endswith(EXTENSIONS) or Path(spec).expanduser().is_file()


def resolve_source(spec: str, prompt_column: str = "prompt") -> Source:
    """A `--source` value as a Source: a prompt file (optionally `file:`-prefixed; a ShareGPT
    file when its records are conversations without a prompt column) or a registered name."""
    path_spec = spec[len("file:") :] if spec.startswith("file:") else spec
    if spec.startswith("file:") or looks_like_path(path_spec):
        path = Path(path_spec).expanduser()
        if not path.exists():
            raise ForelenError(f"prompt file not found: {path_spec}")
        if path.suffix.lower() in (".json", ".jsonl") and path.is_file():
            if sharegpt.is_sharegpt(path, prompt_column):
                return sharegpt.user_file(path)
        return FileSource(path_spec, prompt_column=prompt_column)
    return SOURCES.get(spec)
