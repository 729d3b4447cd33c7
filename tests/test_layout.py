"""The package's layering: imports that would make cycles are absent (checked on the source)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def test_the_simulator_never_imports_leaderboard_code():
    for path in (ROOT / "forelen_bench" / "simulator").glob("*.py"):
        assert not [m for m in imported(path) if "leaderboard" in m], path.name


def test_the_build_loop_does_not_import_the_build():
    assert "forelen_bench.builders.build" not in imported(ROOT / "builders" / "runner.py")
    assert not [m for m in imported(ROOT / "builders" / "plan.py") if "builders" in m]
