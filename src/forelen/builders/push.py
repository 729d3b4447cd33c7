"""`forelen push-dataset`: a dataset folder (built or imported) as a Hugging Face dataset repo.

Everything local is checked before the hub is touched (every config complete, every shard present
at its manifest size, a token, not offline); nothing is written locally. Hub failures are one line.
"""

from __future__ import annotations

import json
from pathlib import Path

from forelen.dataset import CARD, MANIFEST
from forelen.errors import ForelenError
from forelen.hub import IGNORE, check_repo_id, hub_api, hub_errors


def dataset_patterns(folder: Path) -> list[str]:
    """What a dataset push uploads: the card, the manifest and the parquet of complete configs."""
    if not (folder / MANIFEST).is_file():
        raise ForelenError(f"no dataset folder at {folder} (no {MANIFEST}); build one with "
                           "`forelen build`")
    if not (folder / CARD).is_file():
        raise ForelenError(f"{folder} has no dataset card ({CARD}); rerun `forelen build` to "
                           "write it")
    try:
        configs = json.loads((folder / MANIFEST).read_text()).get("configs") or {}
    except ValueError:
        raise ForelenError(f"{folder / MANIFEST} is not valid JSON") from None
    if not configs:
        raise ForelenError(f"{folder} holds no config yet; nothing to push")
    unfinished = sorted(n for n, e in configs.items() if e.get("status") != "complete")
    if unfinished:
        raise ForelenError(f"config {unfinished[0]} in {folder} is not complete (status "
                           f"{configs[unfinished[0]].get('status')!r}); finish its build or remove "
                           "it before pushing")
    for name, entry in sorted(configs.items()):
        for shard, info in sorted((entry.get("shards") or {}).items()):
            path = folder / "data" / name / shard
            if not path.is_file() or path.stat().st_size != info.get("bytes", path.stat().st_size):
                raise ForelenError(f"shard {path} is missing or differs from the manifest; "
                                   "rerun `forelen build` to repair it")
    return [CARD, MANIFEST] + [f"data/{name}/*.parquet" for name in sorted(configs)]


def push_dataset(folder: str | Path, repo_id: str, tag: str | None = None,
                 private: bool = False) -> str:
    """Upload a dataset folder as a hub dataset repo; tag the commit; return the repo URL."""
    folder = Path(folder)
    check_repo_id(repo_id)
    allow = dataset_patterns(folder)
    api = hub_api(f"dataset {folder}")
    with hub_errors(repo_id):
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=str(folder),
                                   allow_patterns=allow, ignore_patterns=IGNORE,
                                   commit_message=f"forelen dataset{f' {tag}' if tag else ''}")
        if tag:
            api.create_tag(repo_id, tag=tag, repo_type="dataset",
                           revision=getattr(commit, "oid", None),
                           tag_message=f"forelen dataset {tag}")
    return str(url)
