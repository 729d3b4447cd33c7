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
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None
