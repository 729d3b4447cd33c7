"""Generation engines: one interface, `hf` (transformers, CPU/GPU) and `vllm` (GPU, optional)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from forelen_bench.registry import Registry


@dataclass(frozen=True)
class EngineInfo:
    name: str
    description: str
    devices: str
    requires: str
    offline: bool = True


@dataclass(frozen=True)
class GenerationRequest:
    uid: str
    prompt_ids: tuple[int, ...]
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int  # per-sample: the same seed and prompt give the same tokens, whatever the batch order


@dataclass(frozen=True)
class Generation:
    uid: str
    token_ids: tuple[int, ...]  # generated tokens, EOS excluded
    finish_reason: str  # "stop" (EOS) or "length" (cut at max_new_tokens: censored)


class Engine(Protocol):
    info: EngineInfo

    def generate(self, requests: Sequence[GenerationRequest],
                 on_done: Callable[[Generation], None] | None = None) -> list[Generation]: ...


ENGINES: Registry[type] = Registry("engine", package="forelen_bench.builders.engines")


def finish(uid: str, tokens: Sequence[int], eos_ids: set[int], max_new_tokens: int) -> Generation:
    """Cut at the first EOS; a response without EOS that filled the budget is `length`."""
    out = []
    for t in list(tokens)[:max_new_tokens]:
        if t in eos_ids:
            return Generation(uid, tuple(out), "stop")
        out.append(int(t))
    return Generation(uid, tuple(out), "length" if len(out) >= max_new_tokens else "stop")
