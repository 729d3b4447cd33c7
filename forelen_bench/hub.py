"""Fetching from the Hugging Face hub, with one-line errors when it cannot be reached.

`snapshot_download` is used rather than per-file downloads: with no network it fails at once,
where per-file calls retry for tens of seconds; with a cached copy it works offline.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from forelen_bench.errors import ForelenError


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
    from huggingface_hub.errors import (GatedRepoError, HFValidationError,
                                        RepositoryNotFoundError)

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
