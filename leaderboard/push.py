"""Publishing to the Hugging Face hub: a dataset folder as a dataset repo, a release as a Space.

Everything local is checked before the hub is touched (folder complete, records matching their
sha256, a token present, not offline), and nothing is written locally, so a push that fails leaves
the machine as it was. Hub failures are one line (forelen_bench.errors.ForelenError, exit 2).
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

from forelen_bench.errors import ForelenError

REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
# Lock files, temp files of interrupted atomic writes, caches: never published.
IGNORE = [".*", "**/.*", "*.lock", "**/*.lock", "*.tmp", "**/*.tmp", "**/__pycache__/**"]
REPO_TYPES = ("space", "dataset")
NETWORK_MODULES = {"httpx", "httpx2", "httpcore", "httpcore2", "requests", "urllib3", "socket", "ssl"}


def check_repo_id(repo_id: str) -> str:
    if not REPO_ID_RE.match(repo_id or ""):
        raise ForelenError(f"--repo-id {repo_id!r} is not of the form ORG/NAME")
    return repo_id


def hub_api(what: str):
    """An HfApi with a token, or a one-line error: no token, or the hub switched off."""
    from huggingface_hub import HfApi, get_token

    from forelen_bench.hub import hub_offline

    if not get_token():
        raise ForelenError(f"cannot push {what}: no Hugging Face token; run `hf auth login` or set "
                           "HF_TOKEN")
    if hub_offline():
        raise ForelenError(f"cannot push {what}: the hub is switched off (HF_HUB_OFFLINE is set)")
    return HfApi()


@contextlib.contextmanager
def hub_errors(repo_id: str):
    """Turn hub and network failures into one line naming the repo."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    from forelen_bench.hub import connection_errors, short

    try:
        yield
    except OfflineModeIsEnabled:
        raise ForelenError(f"cannot push to {repo_id}: the hub is switched off (HF_HUB_OFFLINE)") \
            from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise ForelenError(f"the hub refused {repo_id} (HTTP {status}): the token has no write "
                               "access to it") from None
        if status == 409:
            raise ForelenError(f"conflict on {repo_id}: {short(exc)}") from None
        raise ForelenError(f"hub error on {repo_id}: {short(exc)}") from None
    except connection_errors() as exc:
        raise ForelenError(f"cannot reach the Hugging Face hub to push {repo_id}: {short(exc)}") \
            from None
    except Exception as exc:
        # Whatever HTTP stack this huggingface_hub version uses, its transport errors are network.
        if type(exc).__module__.split(".")[0] in NETWORK_MODULES:
            raise ForelenError(f"cannot reach the Hugging Face hub to push {repo_id}: "
                               f"{short(exc)}") from None
        raise


def dataset_patterns(folder: Path) -> list[str]:
    """What a dataset push uploads: the card, the manifest and the parquet of complete configs."""
    from forelen_bench.dataset import CARD, MANIFEST

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


def check_release(folder: Path) -> dict:
    """A release folder whose records still match the sha256 in its manifest."""
    import hashlib

    from forelen_bench.leaderboard.release import MANIFEST, PAGE

    if not (folder / MANIFEST).is_file() or not (folder / PAGE).is_file():
        raise ForelenError(f"{folder} is not a leaderboard release (needs {MANIFEST} and {PAGE}); "
                           "make one with `forelen leaderboard release vX.Y`")
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except ValueError:
        raise ForelenError(f"{folder / MANIFEST} is not valid JSON") from None
    if not manifest.get("release"):
        raise ForelenError(f"{folder} is a preview, not a release; freeze it with "
                           "`forelen leaderboard release vX.Y` first")
    for rel, info in sorted((manifest.get("records") or {}).items()):
        path = folder / rel
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != info["sha256"]:
            raise ForelenError(f"{path} is missing or no longer matches the sha256 in "
                               f"{folder / MANIFEST}; a release must not be edited")
    return manifest


def push_leaderboard(folder: str | Path, repo_id: str, repo_type: str = "space",
                     private: bool = False, tag: str | None = None) -> str:
    """Upload a release folder as a static hub Space (index.html at the root) or a dataset repo."""
    folder = Path(folder)
    check_repo_id(repo_id)
    if repo_type not in REPO_TYPES:
        raise ForelenError(f"--repo-type must be one of {', '.join(REPO_TYPES)}, not {repo_type!r}")
    manifest = check_release(folder)
    version = manifest["release"]
    api = hub_api(f"release {version}")
    with hub_errors(repo_id):
        url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True,
                              space_sdk="static" if repo_type == "space" else None)
        commit = api.upload_folder(repo_id=repo_id, repo_type=repo_type, folder_path=str(folder),
                                   ignore_patterns=IGNORE,
                                   commit_message=f"ForeLen leaderboard {version}")
        if tag:
            api.create_tag(repo_id, tag=tag, repo_type=repo_type,
                           revision=getattr(commit, "oid", None),
                           tag_message=f"ForeLen leaderboard {version}")
    return str(url)
