"""Publishing a leaderboard release to the Hugging Face hub, as a static Space or a dataset repo.

The release is checked before the hub is touched (its records still match their sha256, a token
present, not offline), and nothing is written locally. Hub failures are one line (exit 2). The
dataset upload lives on the dataset side, in src/forelen/builders/push.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from forelen.errors import ForelenError
from forelen.hub import IGNORE, check_repo_id, hub_api, hub_errors
from forelen.leaderboard.release import MANIFEST, PAGE

REPO_TYPES = ("space", "dataset")


def check_release(folder: Path) -> dict:
    """A release folder whose records still match the sha256 in its manifest."""
    import hashlib

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
