"""The `vllm` engine's work units, exercised through a fake `vllm` module (no GPU here).

The fake implements the calls the engine makes (`LLM(...)`, `LLM.generate(prompts, params)`,
`SamplingParams`, `TokensPrompt`) and draws each sample's tokens from its seed alone, as vLLM's
per-request seeds do; it records every `generate` call so the tests see how work reaches it.
"""

from __future__ import annotations

import dataclasses
import sys
import textwrap

import pytest
from test_build import assert_same_rows, interrupt_on_call, sorted_rows

from forelen.builders.build import BuildOptions, run_build
from forelen.builders.engines.vllm import VLLMEngine
from forelen.dataset import DatasetFolder

FAKE_VLLM = '''
import random
from dataclasses import dataclass

CALLS = []


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    seed: int | None = None


@dataclass
class _Completion:
    token_ids: list
    finish_reason: str


@dataclass
class _Output:
    outputs: list


class LLM:
    def __init__(self, model, dtype="auto", enable_prefix_caching=False,
                 gpu_memory_utilization=0.9, **kw):
        self.model = model

    def generate(self, prompts, params, use_tqdm=True):
        assert len(prompts) == len(params)
        CALLS.append(len(prompts))
        outs = []
        for prompt, p in zip(prompts, params):
            assert prompt["prompt_token_ids"] and p.n == 1 and p.seed is not None
            rng = random.Random(p.seed)
            n = rng.randint(0, p.max_tokens)
            tokens = [rng.randint(5, 250) for _ in range(n)]
            if n < p.max_tokens:
                tokens.append(EOS)
            outs.append(_Output([_Completion(tokens, "stop" if n < p.max_tokens else "length")]))
        return outs
'''


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch, tiny_model):
    _, tokenizer = tiny_model
    pkg = tmp_path / "fake" / "vllm"
    pkg.mkdir(parents=True)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    (pkg / "__init__.py").write_text(textwrap.dedent(FAKE_VLLM).replace("EOS)", f"{eos})"))
    (pkg / "inputs.py").write_text("def TokensPrompt(prompt_token_ids):\n"
                                   "    return {'prompt_token_ids': prompt_token_ids}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "fake"))
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(VLLMEngine, "check", classmethod(lambda cls, device: None))
    import vllm

    yield vllm
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        monkeypatch.delitem(sys.modules, name, raising=False)


def vllm_opts(tiny_model_dir, prompts_file, out, **kw) -> BuildOptions:
    base = dict(split="rl", model=str(tiny_model_dir), engine="vllm", sources=(str(prompts_file),),
                samples_per_prompt=2, max_new_tokens=12, batch_size=4, steps=4, dtype="float32",
                device="cpu", out=str(out))
    return BuildOptions(**(base | kw))


def test_vllm_gets_thousands_of_sequences_per_call(fake_vllm, tiny_model_dir, prompts_file,
                                                   tmp_path):
    opts = vllm_opts(tiny_model_dir, prompts_file, tmp_path / "ds", samples_per_prompt=180,
                     max_new_tokens=4, batch_size=360)
    entry = run_build(opts)
    rows = entry["stats"]["rows"]
    assert rows == 12 * 180 and entry["build"]["work_unit"] == VLLMEngine.work_unit
    assert fake_vllm.CALLS == [rows]  # 2,160 sequences in one call, not one call per shard
    assert entry["chunks"] == len(entry["shards"]) > 1
    assert entry["build"]["engine_settings"]["features"] == "teacher-forced recorder pass"


def test_vllm_resume_repeats_the_interrupted_unit_exactly(fake_vllm, tiny_model_dir,
                                                          prompts_file, tmp_path, monkeypatch):
    # One prompt (2 samples) a shard, two shards a unit.
    opts = vllm_opts(tiny_model_dir, prompts_file, tmp_path / "ref", batch_size=2, work_unit=4)
    reference = run_build(opts)
    ref_rows = sorted_rows(DatasetFolder(opts.out))
    ref_calls = list(fake_vllm.CALLS)
    assert ref_calls == [4] * 6
    fake_vllm.CALLS.clear()

    out = dataclasses.replace(opts, out=str(tmp_path / "ds"))
    original = DatasetFolder.write_shard
    interrupt_on_call(monkeypatch, 4)  # the 2nd shard of the 2nd unit fails
    with pytest.raises(KeyboardInterrupt):
        run_build(out)
    assert len(DatasetFolder(out.out).config("tiny-llama-rl")["shards"]) == 3
    fake_vllm.CALLS.clear()
    written = []
    monkeypatch.setattr(DatasetFolder, "write_shard",
                        lambda self, c, n, t: written.append(n) or original(self, c, n, t))
    entry = run_build(out)
    # Unit 2 runs again whole, its finished shard is not rewritten; unit 1 is not run.
    assert fake_vllm.CALLS == ref_calls[1:]
    assert len(written) == entry["chunks"] - 3 and entry["chunks"] == 12
    assert_same_rows(sorted_rows(DatasetFolder(out.out)), ref_rows)


def test_vllm_completions_follow_the_hf_conventions():
    """EOS is cut from the tokens; "length" from vLLM (budget or context) stays censored."""
    from types import SimpleNamespace

    from forelen.builders.engines import GenerationRequest
    from forelen.builders.engines.vllm import from_vllm

    req = GenerationRequest("g#0", (1, 2), 4, 1.0, 1.0, 7)
    eos = {0}
    done = from_vllm(req, SimpleNamespace(token_ids=[5, 6, 0], finish_reason="stop"), eos)
    assert (done.token_ids, done.finish_reason) == ((5, 6), "stop")
    last = from_vllm(req, SimpleNamespace(token_ids=[5, 6, 7, 0], finish_reason="stop"), eos)
    assert (last.token_ids, last.finish_reason) == ((5, 6, 7), "stop")
    full = from_vllm(req, SimpleNamespace(token_ids=[5, 6, 7, 8], finish_reason="length"), eos)
    assert (full.token_ids, full.finish_reason) == ((5, 6, 7, 8), "length")
    context = from_vllm(req, SimpleNamespace(token_ids=[5, 6], finish_reason="length"), eos)
    assert (context.token_ids, context.finish_reason) == ((5, 6), "length")
