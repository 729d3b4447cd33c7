"""Fetching from the Hugging Face hub, with one-line errors when it cannot be reached.

`snapshot_download` is used rather than per-file downloads: with no network it fails at once,
where per-file calls retry for tens of seconds; with a cached copy it works offline.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Sequence

from forelen.errors import ForelenError


def hub_offline() -> bool:
    """HF_HUB_OFFLINE, read now: huggingface_hub reads it only once, at import."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


class HubUnreachable(ForelenError):
    """The hub (and any cached copy) cannot serve a repo: callers with an offline fallback use it."""


def connection_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the hub cannot be reached" (not "the repo does not exist")."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    errors: list[type[BaseException]] = [LocalEntryNotFoundError, OfflineModeIsEnabled,
                                         HfHubHTTPError, ConnectionError, TimeoutError]
    # huggingface_hub >= 1.0 talks through httpx (2.x through its fork httpx2), older through requests.
    for module, attr in (("httpx", "HTTPError"), ("httpx2", "HTTPError"),
                         ("requests", "RequestException")):
        try:
            errors.append(getattr(__import__(module), attr))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def short(exc: BaseException) -> str:
    """The first line of an exception message, for one-line errors."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def snapshot(repo: str, repo_type: str, patterns: Sequence[str] | None, label: str,
             unreachable: str) -> Path:
    """A local folder with `repo`'s files matching `patterns`; `label` names the asker in errors."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

    try:
        folder = snapshot_download(repo, repo_type=repo_type, local_files_only=hub_offline(),
                                   allow_patterns=list(patterns) if patterns else None)
    except HFValidationError:
        raise ForelenError(f"{label}: {repo!r} is neither a local folder nor a hub id") from None
    except GatedRepoError:
        raise ForelenError(f"{label}: {repo} is gated; accept its license on the hub and log in "
                           "(huggingface-cli login)") from None
    except RepositoryNotFoundError:
        raise ForelenError(f"{label}: {repo} was not found on the hub (or needs a login)") from None
    except connection_errors():
        raise HubUnreachable(unreachable) from None
    except OSError as exc:
        raise ForelenError(f"{label}: cannot download {repo}: {short(exc)}") from None
    return Path(folder)


# -- pushing (a dataset folder: src/forelen/builders/push.py; a leaderboard release: src/forelen/leaderboard/push.py)

REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
# Lock files, temp files of interrupted atomic writes, caches: never published.
IGNORE = [".*", "**/.*", "*.lock", "**/*.lock", "*.tmp", "**/*.tmp", "**/__pycache__/**"]
NETWORK_MODULES = {"httpx", "httpx2", "httpcore", "httpcore2", "requests", "urllib3", "socket", "ssl"}


def check_repo_id(repo_id: str) -> str:
    if not REPO_ID_RE.match(repo_id or ""):
        raise ForelenError(f"--repo-id {repo_id!r} is not of the form ORG/NAME")
    return repo_id


def hub_api(what: str):
    """An HfApi with a token, or a one-line error: no token, or the hub switched off."""
    from huggingface_hub import HfApi, get_token

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
