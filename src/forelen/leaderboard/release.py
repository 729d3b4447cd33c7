"""Leaderboard releases: result records frozen into an immutable, traceable folder.

A release `releases/vX.Y/` holds `manifest.json` (versions, commit, dataset per config, sha256 of
every record), `records/<config>/<predictor>.json`, the rendered `index.html` and a `README.md` that
makes the folder a static hub Space as it is. This module reads records and builds the manifest
(which the page reads too); `freeze.make_release` writes a release. It is built in a temp folder
beside its destination and renamed into place, so an interrupted release leaves nothing; an existing version is never
overwritten: a correction is a new version whose manifest names the one it supersedes. Records made
from a dirty tree (`git_commit` ending in +dirty: their commit does not name the code that made
them) are refused unless `allow_dirty`, and then listed in the manifest and the notes.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from forelen import __version__, contracts
from forelen.dataset import DatasetFolder
from forelen.errors import ForelenError
from forelen.leaderboard.paper import paper_comparison
from forelen.leaderboard.ranking import SIGNIFICANCE, keyed, significance
from forelen.leaderboard.records import dataset_fingerprint, histogram_of
from forelen.provenance import git_commit

VERSION_RE = re.compile(r"^v\d+\.\d+(\.\d+)?$")
MANIFEST = "manifest.json"
RECORDS = "records"
PAGE = "index.html"


@dataclass(frozen=True)
class Record:
    """One result record as read from disk: where it lies, its bytes, and its parsed content."""

    path: Path
    rel: str  # <config>/<predictor>.json
    data: bytes
    body: dict

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def check_version(version: str, what: str = "release version") -> str:
    if not VERSION_RE.match(version or ""):
        raise ForelenError(f"{what} {version!r} is not of the form vX.Y (e.g. v1.0 or v1.2.3)")
    return version


def load_records(folder: str | Path) -> list[Record]:
    """Every `<config>/<predictor>.json` under `folder` (a results folder or a release's records)."""
    root = Path(folder)
    if not root.is_dir():
        raise ForelenError(f"no results folder at {root}")
    records = []
    for path in sorted(root.glob("*/*.json")):
        if path.name.startswith("."):  # temp files of an interrupted atomic write
            continue
        data = path.read_bytes()
        try:
            body = json.loads(data)
        except ValueError:
            raise ForelenError(f"{path} is not a forelen result record (unreadable JSON)") from None
        contracts.validate("record", body, str(path))
        records.append(Record(path, path.relative_to(root).as_posix(), data, body))
    if not records:
        raise ForelenError(f"no result records (<config>/<predictor>.json) in {root}; "
                           "write some with `forelen evaluate`")
    return records


def check_consistency(records: list[Record]) -> None:
    """Refuse records that cannot share one leaderboard, naming the files that disagree."""
    for label, key in (("record version", lambda b: b.get("record_version")),
                       ("dataset schema version", lambda b: b["dataset"].get("schema_version"))):
        _agree(records, key, f"records disagree on the {label}")
    for config in sorted({r.body["dataset"]["config"] for r in records}):
        group = [r for r in records if r.body["dataset"]["config"] == config]
        _agree(group, lambda b: b["dataset"].get("fingerprint"),
               f"records disagree on the dataset fingerprint of config {config} (scored on "
               "different builds; re-evaluate them on one build)")
        _agree(group, lambda b: (b.get("protocol") or {}).get("seed"),
               f"records of config {config} disagree on the seed (evaluate them with one --seed)")
        _agree([r for r in group if (r.body.get("end_to_end") or {}).get("settings")],
               lambda b: json.dumps(b["end_to_end"]["settings"], sort_keys=True, default=str),
               f"records of config {config} disagree on the simulator settings (evaluate them "
               "with one set of settings)")


def _agree(records: list[Record], key, message: str) -> None:
    values: dict = {}
    for r in records:
        values.setdefault(str(key(r.body)), []).append(r.path)
    if len(values) > 1:
        parts = "; ".join(f"{v[:12]}: {', '.join(str(p) for p in paths[:3])}"
                          + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
                          for v, paths in sorted(values.items()))
        raise ForelenError(f"{message}: {parts}")


def _is_dirty(r: Record) -> bool:
    return str(r.body.get("git_commit") or "").endswith("+dirty")


def dirty_records(records: list[Record]) -> list[dict]:
    """The records made from a working tree with uncommitted changes (git_commit ends in +dirty)."""
    return [{"record": f"{RECORDS}/{r.rel}", "predictor": r.body["predictor"]["name"],
             "config": r.body["dataset"]["config"], "git_commit": r.body.get("git_commit")}
            for r in sorted(records, key=lambda r: r.rel) if _is_dirty(r)]


def check_clean(records: list[Record], allow_dirty: bool = False) -> list[dict]:
    """Refuse records from a dirty tree, in one line, unless `allow_dirty`; return them."""
    dirty = [r for r in sorted(records, key=lambda r: r.rel) if _is_dirty(r)]
    if dirty and not allow_dirty:
        raise ForelenError(f"{len(dirty)} of {len(records)} records were made from a dirty tree "
                           "(uncommitted changes, so their commit does not name the code), the "
                           f"first {dirty[0].path} (commit {dirty[0].body['git_commit']}); commit "
                           "and evaluate them again, or release them with --allow-dirty, which "
                           "lists them in the notes and the manifest")
    return dirty_records(dirty)


def dirty_notes(notes: str | None, dirty: list[dict], total: int) -> str | None:
    """The release notes with a section listing the records released from a dirty tree."""
    if not dirty:
        return notes
    lines = ["## Records from a dirty tree", "",
             f"Released with --allow-dirty: {len(dirty)} of {total} records were made from a "
             "working tree with uncommitted changes, so the commit each names does not say which "
             "code made it.", "", "| predictor | config | commit |", "|---|---|---|"]
    lines += [f"| {d['predictor']} | {d['config']} | `{d['git_commit']}` |" for d in dirty]
    return "\n".join(([notes, ""] if notes else []) + lines)


def dataset_blocks(records: list[Record]) -> dict:
    """Per config: where its dataset lives and which build was scored."""
    out = {}
    for r in records:
        d = r.body["dataset"]
        out.setdefault(d["config"], {
            "path": d.get("path"), "repo": d.get("repo"), "revision": d.get("revision"),
            "fingerprint": d.get("fingerprint"), "schema_version": d.get("schema_version"),
            "model": d.get("model"), "model_revision": d.get("model_revision"),
            "split": d.get("split"), "partition": d.get("partition"),
            "test_rows": (r.body.get("references") or {}).get("test_rows"),
            # recorded at evaluation, so a release needs no dataset folder (older records: None,
            # then read from the folder if it still holds the scored build)
            "length_histogram": d.get("length_histogram")})
    return dict(sorted(out.items()))


def length_histogram(path: str | None, config: str, fingerprint: str | None) -> dict | None:
    """Output-length histogram of a config (all partitions), read from its dataset folder.

    None when the folder is gone or now holds another build than the one the records scored.
    """
    if not path or not (Path(path) / MANIFEST).is_file():
        return None
    folder = DatasetFolder(path)
    try:
        entry = folder.config(config)
        if not entry or entry.get("status") != "complete" \
                or dataset_fingerprint(entry) != fingerprint:
            return None
        table = folder.read(config, columns=["output_tokens", "finish_reason"])
    except ForelenError:  # unreadable or corrupt: the page says the distribution is unavailable
        return None
    return histogram_of(table["output_tokens"].to_numpy(),
                        [r == "length" for r in table["finish_reason"].to_pylist()],
                        entry["build"].get("max_new_tokens"))


def build_manifest(records: list[Record], version: str | None, supersedes: str | None = None,
                   notes: str | None = None, created_at: str | None = None) -> dict:
    """The release manifest; `version=None` describes an unfrozen preview of a results folder."""
    check_consistency(records)

    configs = dataset_blocks(records)
    for name, block in configs.items():
        block["length_histogram"] = block["length_histogram"] or length_histogram(
            block["path"], name, block["fingerprint"])
        # the page's ranks and marks, for scripts: rank = 1 + predictors significantly better
        block["significance"] = {"test": SIGNIFICANCE, "predictors": significance(
            [keyed(r.body) for r in records if r.body["dataset"]["config"] == name])}
    comparison = paper_comparison([{**r.body, "rel": f"{RECORDS}/{r.rel}"} for r in records])
    first = records[0].body
    return {
        "paper_comparison": comparison,
        "release": version, "supersedes": supersedes, "notes": notes, "created_at": created_at,
        "forelen_version": __version__, "git_commit": git_commit(),
        "record_version": first.get("record_version"),
        "schema_version": first["dataset"].get("schema_version"),
        "configs": configs,
        "dirty_records": dirty_records(records),
        "records": {f"{RECORDS}/{r.rel}": {"sha256": r.sha256, "predictor": r.body["predictor"]["name"],
                                           "config": r.body["dataset"]["config"],
                                           "forelen_version": r.body.get("forelen_version"),
                                           "git_commit": r.body.get("git_commit"),
                                           "created_at": r.body.get("created_at")}
                    for r in sorted(records, key=lambda r: r.rel)},
    }
