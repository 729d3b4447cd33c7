"""The steps every way of making a config shares: `forelen build` (generate), `forelen import`
(existing responses), their sharded and Ray forms, and `forelen merge`.

    plan: partition_chunks (per partition, by length, a fixed number of sequences a chunk)
          fingerprint (the resolved settings and every planned item: what resumes and merges)
    run:  prepare_config (fresh, resume or refuse), start_config (the partial manifest entry),
          record_shard (each chunk's shard, under the folder lock), finish_config (stats, card)

A producer (the engine for a build, the logged responses for an import) fills the chunks; one
`runner.ShardWriter` turns a chunk's rows into its shard. Nothing here knows which producer ran.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Callable, Iterable, Sequence

from forelen.errors import ForelenError
from forelen.provenance import git_commit, library_versions
from forelen.schema import PARTITIONS

# The template date acts only through the prompt ids, which the fingerprint hashes: a build with a
# template that ignores the date resumes and merges on any day.
# descriptive, derived from what is hashed (model_weights: from the model alias)
UNHASHED = ("date_string", "template_uses_date", "model_weights")


def fingerprint(resolved: dict, lines: Iterable[str]) -> str:
    """sha256 of the resolved settings (less UNHASHED) and one line per planned item, in order:
    two plans with the same fingerprint write the same rows, so one resumes or merges the other."""
    kept = {k: v for k, v in resolved.items() if k not in UNHASHED}
    h = hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode())
    for line in lines:
        h.update(line.encode())
    return h.hexdigest()


def partition_chunks(items: Sequence, partition: Callable[[Any], str], key: Callable[[Any], Any],
                     size: int) -> list[tuple[str, list]]:
    """(shard name, items) per chunk: per partition (train, validation, test), the items sorted
    by `key`, `size` to a chunk, named `<partition>-<k:05d>.parquet`."""
    size = max(1, int(size))
    chunks = []
    for part in PARTITIONS:
        mine = sorted((x for x in items if partition(x) == part), key=key)
        for k in range(0, len(mine), size):
            chunks.append((f"{part}-{k // size:05d}.parquet", mine[k: k + size]))
    return chunks


def _shard_id(shard: dict | None) -> tuple:
    return (shard["index"], shard["count"]) if shard else (0, 1)


def _shard_label(shard: dict | None) -> str:
    return f"shard {shard['index']} of {shard['count']}" if shard else "the whole plan"


def prepare_config(folder, config: str, print_fn: Callable[[str], None],
                   fp: str, overwrite: bool, shard: dict | None = None) -> dict:
    """Decide between a fresh build, a resume, or a refusal; returns the done shards."""
    entry = folder.config(config)
    if entry and overwrite:
        folder.remove(config)
        folder.update(lambda m: m["configs"].pop(config, None))
        entry = None
    if entry is None:
        folder.remove(config)
        return {}
    if entry.get("status") == "complete":
        raise ForelenError(f"config {config!r} is already built in {folder.location}; "
                           "pass --overwrite to rebuild it")
    if entry.get("fingerprint") != fp:
        raise ForelenError(f"config {config!r} in {folder.location} holds a partial build with other "
                           "settings or prompts; rerun with the same settings to resume, "
                           "or pass --overwrite")
    if _shard_id(entry.get("shard")) != _shard_id(shard):
        raise ForelenError(f"config {config!r} in {folder.location} holds a partial build of "
                           f"{_shard_label(entry.get('shard'))}, not {_shard_label(shard)}; rerun "
                           "with the same --shard-index/--num-shards, or pass --overwrite")
    done = {n: s for n, s in entry.get("shards", {}).items() if folder.shard_ok(config, n, s)}
    for name in folder.config_files(config):
        if name not in done:  # shards of an interrupted chunk; redone identically
            folder.remove(config, name)
    print_fn(f"resuming {config}: {len(done)} shard(s) already written")
    return done


def start_config(folder, config: str, resolved: dict, fp: str, done: dict, chunks: int,
                 **fields) -> None:
    """The partial manifest entry a run starts (or resumes) with: what is built, its
    fingerprint, the shards already written, the versions, plus `fields` (origin, licenses, the
    engine choice, a job's shard)."""
    def start(m):
        entry = m["configs"].setdefault(config, {})
        entry.update(status="partial", build=resolved, fingerprint=fp, shards=done,
                     chunks=chunks, versions=library_versions(), git_commit=git_commit(),
                     **fields)
        entry.setdefault("started_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        entry.setdefault("timing", {"generate_s": 0.0, "record_s": 0.0, "feature_s": 0.0,
                                     "generated_tokens": 0})
    folder.update(start)


def finish_config(folder, config: str) -> dict:
    """Mark a config complete with its stats, and rewrite the folder's card."""
    from forelen.card import config_stats, write_card  # card.py is page-only (numpy, jinja)

    stats = config_stats(folder, config)

    def complete(m):
        entry = m["configs"][config]
        entry.update(status="complete", stats=stats,
                     finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    manifest = folder.update(complete)
    write_card(folder)
    return manifest["configs"][config]
