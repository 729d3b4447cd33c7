"""The deterministic identities of a plan: partitions, sample ids and per-sample seeds.

Imported by the build (`build.py`), its work loop (`runner.py`) and the importer alike, and by
nothing else of theirs, so that no two of those modules import each other.
"""

from __future__ import annotations

import hashlib


def partition_of(group_id: str) -> str:
    """60/20/20 by a hash of the group, so every sample of one prompt lands in one partition."""
    bucket = int(hashlib.sha256(group_id.encode()).hexdigest(), 16) % 100
    return "train" if bucket < 60 else "validation" if bucket < 80 else "test"


def sample_seed(seed: int, uid: str) -> int:
    return int(hashlib.sha256(f"{seed}:{uid}".encode()).hexdigest()[:15], 16)


def uid_of(group_id: str, sample_index: int) -> str:
    return f"{group_id}#{sample_index}"
