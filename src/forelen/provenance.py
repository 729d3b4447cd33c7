"""What every output records about the code that made it: library versions, git commit, and the
hashes of the code a result record depends on (`code_provenance`)."""

from __future__ import annotations

import hashlib
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


# -- the code a result record depends on -----------------------------------------------------------

PACKAGE = Path(__file__).resolve().parent
# Files that draw, publish or describe records and never run while one is made (a test checks
# that an evaluation imports none of them): the page and the CLI can change without making every
# record stale.
PAGE_ONLY = ("leaderboard/render.py", "leaderboard/ranking.py", "leaderboard/paper.py",
             "leaderboard/plots.py", "leaderboard/push.py", "leaderboard/templates", "cli.py",
             "card.py", "cards")
# Not predictor families: the shared parts of `predictors/`, hashed with the evaluation code.
_SHARED_PREDICTOR_FILES = ("__init__.py", "checks.py")


def _is_family(rel: str) -> bool:
    """A predictor family's own module (predictors/egtp.py): hashed only into its own records."""
    parts = rel.split("/")
    return (len(parts) == 2 and parts[0] == "predictors" and parts[1].endswith(".py")
            and not parts[1].startswith("_") and parts[1] not in _SHARED_PREDICTOR_FILES)


def _evaluation_files() -> list[Path]:
    out = []
    for path in sorted(PACKAGE.rglob("*")):
        rel = path.relative_to(PACKAGE).as_posix()
        if (not path.is_file() or "__pycache__" in rel or path.suffix == ".pyc"
                or any(rel == p or rel.startswith(p + "/") for p in PAGE_ONLY)
                or _is_family(rel)):
            continue
        out.append(path)
    return out


def _sha256_of(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


_EVALUATION: dict = {}


def evaluation_sha256() -> str:
    """sha256 over every file of the installed package that can change a record, less the
    predictor families' own modules (each in its own records only) and PAGE_ONLY."""
    if "sha" not in _EVALUATION:
        _EVALUATION["sha"] = _sha256_of(_evaluation_files())
    return _EVALUATION["sha"]


def code_provenance(cls) -> dict:
    """What a record keeps of the code that made it, so that staleness is read from the record:
    the evaluation code's hash and the predictor's own module's (a plug-in's file included)."""
    import inspect

    source = inspect.getsourcefile(cls)
    own = Path(source).resolve() if source else None
    return {"evaluation_sha256": evaluation_sha256(),
            "predictor_sha256": (hashlib.sha256(own.read_bytes()).hexdigest()
                                 if own and own.is_file() else None)}
