"""The options of `forelen replay` (`forelen.replay.run`), apart from the replay itself, which
loads numpy and torch: the CLI takes its defaults from this class when it starts, never from a
copy (tests/test_cli.py checks every option that has a field)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReplayOptions:
    data: str = "forelen"
    config: str = ""
    policies: tuple[str, ...] = ("fcfs", "sjf")
    predictor: str | None = None
    saved: str | None = None  # a `forelen fit` folder instead of fitting `predictor` here
    rate: float | None = None
    utilisation: float | None = None
    arrivals: str | None = None
    limit: int | None = None
    max_new_tokens: int | None = None
    slots: int = 16
    kv_budget_gib: float = 4.0
    preempt: bool = False
    rerank_every: int = 8
    seed: int = 0  # arrival order and times
    train_seed: int = 42  # the predictor's training, as evaluate's default
    cost_model: str | None = None  # a profile to use instead of profiling here
    out: str | None = None
    source: str | None = None  # prompts of a file or registered source instead of the test rows
    prompt_column: str = "prompt"
    engine: str = "hf"  # hf (this process, CPU or GPU) or vllm (scripts/gpu_replay.sh)
    device: str = "cpu"  # hf
    rounds: int = 1  # each policy served this many times, in rotated order (drift cancels)
    calibrate: int = 0  # hf: probe FCFS on this many requests (all at once) before --utilisation
