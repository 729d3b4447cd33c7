"""The package's layering: imports that would make cycles are absent (checked on the source)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "forelen"


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def test_the_simulator_never_imports_leaderboard_code():
    paths = sorted((SRC / "simulator").glob("*.py"))
    assert len(paths) > 1  # the folder is where the test looks
    for path in paths:
        assert not [m for m in imported(path) if "leaderboard" in m], path.name


def test_the_build_loop_does_not_import_the_build():
    assert "forelen.builders.build" not in imported(SRC / "builders" / "runner.py")
    assert not [m for m in imported(SRC / "builders" / "plan.py") if "builders" in m]


def test_the_old_import_name_is_the_same_package_with_a_warning():
    """`forelen_bench` (0.1's import name) still imports, as the very same modules as `forelen`:
    a plug-in written against it registers in the one registry."""
    import subprocess
    import sys

    script = ("import warnings\n"
              "with warnings.catch_warnings(record=True) as w:\n"
              "    warnings.simplefilter('always')\n"
              "    import forelen_bench\n"
              "    from forelen_bench.predictors import PREDICTORS as old\n"
              "from forelen.predictors import PREDICTORS as new\n"
              "import forelen, forelen.builders.build as b, forelen_bench.builders.build as a\n"
              "assert forelen_bench is forelen and a is b and old is new\n"
              "assert any(issubclass(x.category, DeprecationWarning) for x in w)\n"
              "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-1500:]
