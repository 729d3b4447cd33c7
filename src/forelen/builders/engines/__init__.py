"""Generation engines: one interface, `hf` (transformers, CPU/GPU) and `vllm` (GPU, optional)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

from forelen.builders.engines.entropy import entropy_kernel
from forelen.registry import Registry


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
    # `Recorded` features, from engines that record them in the generation pass (`hf`)
    features: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class EngineSettings:
    """What a build asks of every engine: the features to record and the sizes of the work. An
    engine with settings of its own subclasses this (`BatchSettings`, `HFSettings`) and names the
    class as its `Settings`; the build fills each field from the option of the same name
    (`planning.engine_settings`), and the defaults here are the CLI's."""

    record: bool = True  # record features in the generation pass (engines that can)
    layers: tuple[int, ...] = ()  # recorded hidden-state indices (0 = embeddings, L = final norm)
    steps: int = 64  # generated-token states kept per sample
    first_k: int | None = None  # also EGTP over the first k prompt tokens
    max_prompt_tokens: int = 0  # longest prompt the engine will see (sizes the slots; 0: unknown)
    max_new_tokens: int = 0  # largest generation budget (sizes the slots; 0: unknown)


@dataclass(frozen=True)
class BatchSettings(EngineSettings):
    """Engines that generate in batches and record features in a teacher-forced pass after
    (`hf-static`, `vllm`)."""

    batch_size: int = 32  # sequences per static batch and per recorder pass


@dataclass(frozen=True)
class HFSettings(EngineSettings):
    """The `hf` engine's continuous batching over a pre-allocated slot cache (engines/hf.py)."""

    slots: int = 128  # sequences decoded together (upper bound; the KV budget may allow fewer)
    kv_budget_gib: float = 4.0  # memory of the pre-allocated slot KV cache
    attention: str = "sdpa"  # decode attention kernel (see engines/slots.py)
    prefill_chunk: int = 512  # prompt tokens per prefill forward (bounds prefill memory)


class Engine:
    """What the build, the replay and a new engine share: subclass it and register the class in
    ENGINES. The build calls `check`, `create`, `resolved`, `generate` and `feature_seconds`, and
    reads `work_unit` and `records_features`; nothing else of an engine, and never by probing.

    The defaults describe an engine that only generates: features come from the teacher-forced
    recorder pass afterwards (`hf-static`, `vllm`)."""

    info: ClassVar[EngineInfo]
    # the settings this engine is created with (`create`); the build fills them from its options
    Settings: ClassVar[type[EngineSettings]] = BatchSettings
    # True: every Generation carries `features` (no recorder pass)
    records_features: bool = False
    # sequences handed to one `generate` call in a build; None: one shard's (`--shard-size`)
    work_unit: ClassVar[int | None] = None

    @classmethod
    def check(cls, device: str) -> None:
        """Raise ForelenError, in one line, where this engine cannot run on `device`."""

    @classmethod
    def create(cls, model, tokenizer, resolved_model, settings: EngineSettings) -> "Engine":
        raise NotImplementedError

    def generate(self, requests: Sequence[GenerationRequest],
                 on_done: Callable[[Generation], None] | None = None) -> list[Generation] | None:
        """Without `on_done`: every Generation, in request order. With it: each Generation is
        handed over as it ends and none is kept (the build streams them into its shards), and
        the call returns None."""
        raise NotImplementedError

    def resolved(self, settings: BatchSettings, model=None) -> dict:
        """The settings that shape the computation, hence the rows: the manifest's
        `engine_settings`, part of the fingerprint. Here: the static batch and the recorder's
        entropy kernel (engines/entropy.py), which computes the features."""
        out = {"batch_size": settings.batch_size, "features": "teacher-forced recorder pass"}
        if model is not None:
            out["entropy"] = entropy_kernel(model.config.vocab_size, model.device.type)[1]
        return out

    def feature_seconds(self) -> float:
        """Seconds spent so far on features inside the generation pass (0: none computed here)."""
        return 0.0


ENGINES: Registry[type] = Registry("engine", package="forelen.builders.engines")


def finish(uid: str, tokens: Sequence[int], eos_ids: set[int], max_new_tokens: int) -> Generation:
    """Cut at the first EOS; a response without EOS that filled the budget is `length`."""
    out = []
    for t in list(tokens)[:max_new_tokens]:
        if t in eos_ids:
            return Generation(uid, tuple(out), "stop")
        out.append(int(t))
    return Generation(uid, tuple(out), "length" if len(out) >= max_new_tokens else "stop")
