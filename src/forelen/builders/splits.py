"""Split recipes: the three ForeLen scenarios and real chat traffic, each a default source mix plus
generation settings."""

from __future__ import annotations

from dataclasses import dataclass

from forelen.registry import Registry


@dataclass(frozen=True)
class SplitRecipe:
    name: str
    description: str
    reference: str
    sources: tuple[str, ...]  # default mix, works offline
    hub_sources: tuple[str, ...]  # the paper's mix, for machines with the hub
    # Templates wrapping a prompt's text before the chat template, by source domain.
    instructions: tuple[tuple[str, str], ...] = ()
    samples_per_prompt: int = 1
    temperature: float = 0.7
    top_p: float = 0.8
    max_new_tokens: int = 2048
    max_prompt_tokens: int = 16384  # longer prompts are cut in the middle, as LongBench does
    sampling: str = ""  # where the sampling settings and the cap come from (`forelen ls splits`)

    def wrap(self, text: str, domain: str) -> str:
        return dict(self.instructions).get(domain, "{text}").format(text=text)


SPLITS: Registry[SplitRecipe] = Registry("split")

_STEP_BY_STEP = "{text}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
_PAPER = "Predicting LLM Output Length via Entropy-Guided Representations (ICLR 2026), ForeLen"

# Qwen2.5's shipped sampling defaults (generation_config.json: temperature 0.7, top_p 0.8).
SPLITS.add("long", SplitRecipe(
    "long", "long-sequence scenario: long-input tasks and long-output instruction following",
    _PAPER, sources=("longdocs-pkg", "ifeval-pkg", "writingbench-pkg"),
    hub_sources=("longbench", "zeroscrolls", "ifeval"), max_new_tokens=4096,
    sampling="Qwen2.5-Instruct's generation_config (temperature 0.7, top_p 0.8)"))

# DeepSeek-R1's recommended settings for its distills (temperature 0.6, top_p 0.95) and the
# step-by-step boxed-answer instruction used by Qwen2.5-Math and DeepSeek-R1 evaluations.
SPLITS.add("cot", SplitRecipe(
    "cot", "CoT reasoning scenario: math problems answered step by step",
    _PAPER, sources=("mmath-pkg", "gsm-symbolic"), hub_sources=("math500", "gsm8k"),
    instructions=(("math", _STEP_BY_STEP),), temperature=0.6, top_p=0.95, max_new_tokens=8192,
    sampling="DeepSeek-R1's recommended settings for its distills (temperature 0.6, top_p 0.95)"))

# GRPO samples a group of n completions per prompt at temperature 1.0 with no nucleus cut-off.
SPLITS.add("rl", SplitRecipe(
    "rl", "RL-sampling scenario: GRPO-style groups of n samples per math/code prompt",
    _PAPER, sources=("gsm-symbolic", "mmath-pkg", "humaneval-pkg"), hub_sources=("gsm8k", "math500"),
    instructions=(("math", _STEP_BY_STEP),), samples_per_prompt=8, temperature=1.0, top_p=1.0, max_new_tokens=4096,
    sampling="GRPO: n=8 samples per prompt at temperature 1.0, no nucleus cut-off"))

# A chat deployment's sampling: the chat-completions API defaults (temperature 1, top_p 1), which
# OpenAI applies and vLLM's OpenAI-compatible server applies for a model whose
# generation_config.json sets none (SmolLM2's sets none); one reply per prompt. The cap is an
# initial value for a pilot to revise: ChatGPT's own first replies in the packaged ShareGPT copy
# fit in 1024 SmolLM2 tokens 99.8% of the time (median 257, p99 932). Prompts past 4096 tokens
# (1% of first turns; whole conversations under --turns all) are cut in the middle.
SPLITS.add("chat", SplitRecipe(
    "chat", "chat scenario: first user turns of real ShareGPT conversations (--turns all: every "
    "reply, after the conversation so far)",
    "ShareGPT, as in vLLM's serving benchmark and the LTR, SSJF and S3 papers",
    sources=("sharegpt-pkg",), hub_sources=("sharegpt",), temperature=1.0, top_p=1.0,
    max_new_tokens=1024, max_prompt_tokens=4096,
    sampling="a chat deployment: one reply per prompt at the chat-completions defaults "
             "(temperature 1.0, top_p 1.0: OpenAI's, and vLLM's server where the model's "
             "generation_config sets none); cap 1024 is initial, a pilot should set it"))
