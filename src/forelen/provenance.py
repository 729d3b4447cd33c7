"""What every output records about the code that made it: library versions, git commit."""

from __future__ import annotations

import subprocess
from pathlib import Path

LIBRARIES = ("forelen", "torch", "transformers", "datasets", "huggingface-hub", "pyarrow", "numpy",
             "scipy", "scikit-learn")


def library_versions(dists=LIBRARIES) -> dict:
    import importlib.metadata as md
    import platform

    versions = {"python": platform.python_version()}
    for dist in dists:
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    return versions


def git_commit() -> str | None:
    """The commit of the forelen source tree when it runs from a git checkout (+dirty if edited)."""
    root = Path(__file__).resolve().parents[2]  # src/forelen/ -> the checkout
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> str:
    """The CPU a timing comes from, with the vector units that change kernels' speed (AVX2,
    AVX-512, AVX512-BF16, AMX), its logical CPUs and torch's threads; figures from one CPU type
    do not carry to another."""
    import os

    path = Path("/proc/cpuinfo")
    text = path.read_text() if path.is_file() else ""
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines()
                 if ln.startswith("model name")), None)
    if name is None:
        import platform

        name = platform.processor() or "unknown CPU"
    flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in text]
    try:
        import torch

        threads = f", {torch.get_num_threads()} torch threads"
        gpu = (f"; GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "")
    except ImportError:
        threads, gpu = "", ""
    return (f"{name} ({', '.join(flags) or 'no AVX2'}), {os.cpu_count()} logical CPUs"
            f"{threads}{gpu}")
