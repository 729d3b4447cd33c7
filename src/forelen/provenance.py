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
#
# A record depends on the code that runs while it is made: the evaluation (`EVALUATION_ROOT` and
# every forelen module it imports, at any depth, at the top or inside a function) and the
# predictor's module with what it imports beyond that. Both sets are read from the source's import
# statements (`code_closure`), so a change to a module no evaluation loads (the importer, the
# reference pipeline, the replay) stales no record, and a change to the hf engine stales only the
# records of the predictors that run it (PiA). A registry that loads its entries by name
# (`Registry(package=...)`) brings its whole package in. tests/test_reference_script.py runs an
# evaluation and checks that every forelen module it loaded is in the set its records hash.

PACKAGE = Path(__file__).resolve().parent
EVALUATION_ROOT = "forelen.leaderboard.evaluate"
# Files that draw, publish or describe records and never run while one is made (a test checks
# that an evaluation imports none of them): a deferred import of one (the release's page) does
# not bring it into a record's code.
PAGE_ONLY = ("leaderboard/render.py", "leaderboard/ranking.py", "leaderboard/paper.py",
             "leaderboard/plots.py", "leaderboard/push.py", "leaderboard/templates", "cli.py",
             "card.py", "cards")
# Not predictor families: the shared parts of `predictors/`, hashed with the evaluation code.
_SHARED_PREDICTOR_FILES = ("__init__.py", "base.py", "checks.py")


def _is_family(rel: str) -> bool:
    """A predictor family's own module (predictors/egtp.py): hashed only into its own records."""
    parts = rel.split("/")
    return (len(parts) == 2 and parts[0] == "predictors" and parts[1].endswith(".py")
            and not parts[1].startswith("_") and parts[1] not in _SHARED_PREDICTOR_FILES)


def _page_only(rel: str) -> bool:
    return any(rel == p or rel.startswith(p + "/") for p in PAGE_ONLY)


def _modules() -> dict[str, Path]:
    """Every module of the installed package by dotted name (a package by its __init__.py)."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("forelen",) + path.relative_to(PACKAGE).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imported(path: Path, modules: dict[str, Path]) -> set[str]:
    """The forelen modules a file imports anywhere in it, with the packages that importing them
    runs, and the whole package of a registry it defines that loads entries by name."""
    import ast

    tree = ast.parse(path.read_bytes())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Registry"):
            for kw in node.keywords:
                if kw.arg == "package" and isinstance(kw.value, ast.Constant):
                    names |= {m for m in modules if m.startswith(kw.value.value + ".")}
    out = set()
    for name in names:
        if not name.startswith("forelen"):
            continue
        parts = name.split(".")
        out |= {".".join(parts[:k]) for k in range(1, len(parts) + 1)} & modules.keys()
    return out


def code_closure(root: Path, stop=lambda rel: False) -> list[Path]:
    """The files `root` runs: itself, each forelen module it imports at any depth (not past a
    file where `stop(relative path)` holds, nor into PAGE_ONLY), and the data files beside
    each module reached (a package's JSON schemas)."""
    modules = _modules()
    seen: set[Path] = set()
    stack = [root]
    while stack:
        path = stack.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported(path, modules):
            dep = modules[name]
            rel = dep.relative_to(PACKAGE).as_posix()
            if dep not in seen and not _page_only(rel) and not stop(rel):
                stack.append(dep)
    data = {f for path in seen if path.is_relative_to(PACKAGE) for f in path.parent.iterdir()
            if f.is_file() and f.suffix not in (".py", ".pyc")
            and not _page_only(f.relative_to(PACKAGE).as_posix())}
    return sorted(seen | data)


def _evaluation_files() -> list[Path]:
    root = _modules()[EVALUATION_ROOT]
    return code_closure(root, stop=_is_family)


def _sha256_of(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        name = path.relative_to(PACKAGE).as_posix() if path.is_relative_to(PACKAGE) else path.name
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


_EVALUATION: dict = {}


def evaluation_sha256() -> str:
    """sha256 over the files an evaluation runs, less the predictor families' own modules (each in
    its own records) and PAGE_ONLY."""
    if "sha" not in _EVALUATION:
        _EVALUATION["sha"] = _sha256_of(_evaluation_files())
    return _EVALUATION["sha"]


def predictor_files(cls) -> list[Path]:
    """The files a predictor's records depend on beyond the evaluation's: its own module (a
    plug-in's file included) and what it imports that the evaluation does not."""
    import inspect

    source = inspect.getsourcefile(cls)
    own = Path(source).resolve() if source else None
    if own is None or not own.is_file():
        return []
    shared = {f.relative_to(PACKAGE).as_posix() for f in _evaluation_files()}
    stop = lambda rel: rel in shared or _is_family(rel)  # noqa: E731 (another family's module)
    return [own] + [f for f in code_closure(own, stop) if f != own]


def code_provenance(cls) -> dict:
    """What a record keeps of the code that made it, so that staleness is read from the record:
    the evaluation code's hash and the hash of the predictor's own files (`predictor_files`)."""
    files = predictor_files(cls)
    return {"evaluation_sha256": evaluation_sha256(),
            "predictor_sha256": _sha256_of(files) if files else None}
