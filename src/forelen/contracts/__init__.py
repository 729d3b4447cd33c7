"""The JSON contracts of forelen's files: the dataset manifest and the result record.

Both are JSON Schemas (draft 2020-12) shipped with the package (`manifest.schema.json`,
`record.schema.json`; the record's metric keys are filled in from `forelen.metrics.METRICS`, so
a new metric needs no schema edit). Every manifest and record is validated when it is written and
when it is read; a file that breaks its contract is one clear error naming the file, the key and
the rule, never a KeyError deep in a table. `forelen schema manifest|record` prints the schema;
docs/schemas/ holds the published copies (a test keeps them equal).
"""

from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from importlib import resources

from forelen.errors import ForelenError

KINDS = ("manifest", "record")


@lru_cache(maxsize=None)
def _schema(kind: str) -> dict:
    if kind not in KINDS:
        raise ForelenError(f"unknown contract {kind!r}; known: {', '.join(KINDS)}")
    text = resources.files(__package__).joinpath(f"{kind}.schema.json").read_text()
    schema = json.loads(text)
    if kind == "record":
        from forelen.metrics import METRICS  # numpy: only once a record is checked

        props = schema["properties"]["metrics"]["properties"]
        for m in METRICS:
            props.setdefault(m.key, {"type": ["number", "null"], "description": m.tip})
            if m.ci:
                props.setdefault(m.ci, {"oneOf": [
                    {"type": "null"},
                    {"type": "array", "items": {"type": "number"}, "minItems": 2,
                     "maxItems": 2}]})
    return schema


def schema(kind: str) -> dict:
    """The complete JSON Schema of a contract (a copy: safe to modify)."""
    return copy.deepcopy(_schema(kind))


@lru_cache(maxsize=None)
def _validator(kind: str):
    from jsonschema import Draft202012Validator

    return Draft202012Validator(_schema(kind))


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _shard_ok(entry) -> bool:
    """The manifest schema's `shard` rule, in plain Python (a build rewrites the manifest once a
    shard: a config of 10,000 shards would cost jsonschema a second each time)."""
    if not isinstance(entry, dict):
        return False
    rows, sha, size = entry.get("rows"), entry.get("sha256"), entry.get("bytes", 0)
    return (type(rows) is int and rows >= 0 and isinstance(sha, str) and bool(_SHA256.match(sha))
            and type(size) is int and size >= 0)


def _light(obj):
    """The manifest with every config's shards that keep their rule left out (checked by
    `_shard_ok`); a shard that breaks it stays, so jsonschema names it."""
    configs = obj.get("configs") if isinstance(obj, dict) else None
    if not isinstance(configs, dict):
        return obj
    out = dict(obj, configs={})
    for name, entry in configs.items():
        shards = entry.get("shards") if isinstance(entry, dict) else None
        if isinstance(shards, dict):
            entry = dict(entry, shards={n: e for n, e in shards.items() if not _shard_ok(e)})
        out["configs"][name] = entry
    return out


def problems(kind: str, obj) -> list[str]:
    """Every rule `obj` breaks, as `at <path>: <message>` lines (none: it keeps the contract)."""
    out = []
    if kind == "manifest":
        obj = _light(obj)
    for err in sorted(_validator(kind).iter_errors(obj), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in err.absolute_path) or "(top)"
        message = err.message if len(err.message) <= 160 else err.message[:157] + "..."
        out.append(f"at {where}: {message}")
    return out


def validate(kind: str, obj, where: str) -> None:
    """Raise ForelenError, in one line, when `obj` (read from or written to `where`) breaks its
    contract: the first problem and how many more there are."""
    found = problems(kind, obj)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ForelenError(f"{where} is not a valid forelen {kind}: {found[0]}{more}")
