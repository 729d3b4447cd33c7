"""Shared fixtures: a tiny random Llama model built in code (no download), a prompts file, a cache.

The tiny model is a real `LlamaForCausalLM` (3 decoder layers, hidden size 32) with a byte-level BPE
tokenizer trained on an in-code corpus and a ChatML chat template, saved with `save_pretrained`, so
`forelen build --model <folder>` loads it exactly as it would load a hub model folder.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORELEN = str(Path(sys.executable).with_name("forelen"))

IM_START, IM_END, UNK = "<|im_start|>", "<|im_end|>", "<unk>"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

EOS_LOGIT = 4.0  # typical EOS logit on the corpus
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512)

CORPUS = [
    "What is the sum of 12 and 30? Please reason step by step.",
    "Write a short poem about the sea and the wind.",
    "Explain why the sky is blue to a child.",
    "A farmer has 17 sheep and buys 5 more. How many sheep does the farmer have now?",
    "def add(a, b):\n    return a + b",
    "Summarize the following text in one sentence: the quick brown fox jumps over the lazy dog.",
    "List three prime numbers larger than ten.",
    "Translate 'good morning' into French, German and Spanish.",
    "The train leaves at 9:15 and arrives at 11:40. How long is the trip?",
    "Describe a cat, a dog and a bird in one paragraph each.",
] * 4

PROMPTS = [
    "Hi.",
    "What is 2 + 2?",
    "Name a color.",
    "Write a haiku about autumn leaves.",
    "Explain in two sentences why ice floats on water.",
    "A shop sells pens at 3 dollars each. How much do 7 pens cost? Think step by step.",
    "List five animals that live in the ocean and say one fact about each of them.",
    "Summarize: the quick brown fox jumps over the lazy dog, then runs into the forest and hides.",
    "def fib(n):\n    # complete this function so it returns the n-th Fibonacci number\n",
    "Describe the water cycle, from evaporation over condensation to precipitation, for a child "
    "of eight years.",
    "Tom has 12 apples. He gives 5 to Anna and buys 9 more at the market. Then he eats two of them "
    "and shares the rest equally with his sister. How many apples does each of them get?",
    "Write a short story in which a robot learns to paint, a cat watches it, and in the end the "
    "paintings are shown in a small museum in a quiet town by the sea, where people come to see "
    "them every summer.",
]


def _make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[UNK, IM_START, IM_END],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS + PROMPTS, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=UNK, eos_token=IM_END,
                                   pad_token=IM_END, bos_token=None)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(folder: Path) -> Path:
    """Save a seeded random tiny Llama and its tokenizer into `folder`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _make_tokenizer()
    eos = tokenizer.convert_tokens_to_ids(IM_END)
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=None, eos_token_id=eos,
                         pad_token_id=eos, tie_word_embeddings=False, initializer_range=0.2, **TINY)
    torch.manual_seed(1234)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        # Peakier next-token distributions than the default init, and an EOS row along the mean
        # final state, so that some samples stop early and others run into the budget.
        model.lm_head.weight.mul_(2.0)
        states = torch.cat([
            model.model(torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]]))
            .last_hidden_state[0] for text in CORPUS[:10]])
        mean = states.mean(dim=0)
        model.lm_head.weight[eos] = mean / mean.norm() ** 2 * EOS_LOGIT
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = eos
    model.generation_config.bos_token_id = None
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session", autouse=True)
def forelen_cache(tmp_path_factory):
    """Every test (and every `forelen` subprocess) uses a private model cache."""
    cache = tmp_path_factory.mktemp("forelen-cache")
    old = os.environ.get("FORELEN_CACHE")
    os.environ["FORELEN_CACHE"] = str(cache)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    yield cache
    if old is None:
        os.environ.pop("FORELEN_CACHE", None)
    else:
        os.environ["FORELEN_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """(model, tokenizer) of the tiny model in float32, eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def write_prompts(path: Path, prompts=PROMPTS, column: str = "prompt") -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for i, text in enumerate(prompts):
            fh.write(json.dumps({"id": f"p{i:02d}", column: text}) + "\n")
    return path


@pytest.fixture(scope="session")
def prompts_file(tmp_path_factory) -> Path:
    return write_prompts(tmp_path_factory.mktemp("prompts") / "prompts.jsonl")


def cli_env(**extra) -> dict:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="")
    env.update(extra)
    return env


# An honest `slow` marker: every test that builds or loads a model (the tiny test model, SmolLM2,
# the MiniLM encoder of the text baselines), runs a build, a browser, a Ray cluster or the vllm
# virtualenv is slow; `pytest -m "not slow"` is the fast loop for development, CI runs everything.
SLOW_FIXTURES = {"tiny_model", "tiny_model_dir", "built", "reference", "opts", "release",
                 "cluster", "api"}
SLOW_MODULES = {"test_text_predictors", "test_html_browser", "test_vllm_api", "test_ray",
                "test_build", "test_engine_hf", "test_engine_continuous", "test_engine_vllm",
                "test_merge", "test_import", "test_evaluate", "test_plugins", "test_pia"}


def pytest_collection_modifyitems(config, items):
    from forelen.predictors import PREDICTORS

    text = {n for n, cls in PREDICTORS.items() if cls.info.family == "text-proxy"}
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        params = getattr(getattr(item, "callspec", None), "params", {})
        if (module in SLOW_MODULES or SLOW_FIXTURES & set(item.fixturenames)
                or params.get("name") in text):
            item.add_marker(pytest.mark.slow)
