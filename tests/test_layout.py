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


# Modules that import parts of forelen inside functions, and why. Everywhere else forelen's own
# imports sit at module level, so the import statements at the top of a file are its dependencies.
DEFERRED = {
    "cli.py": "each command imports what it runs when it runs: `forelen --help` loads no numpy",
    "builders/build.py": "cli.py reads its option defaults from here, so the parts that need numpy "
                         "(the recorder) load when a build runs",
    "builders/planning.py": "as build.py, which imports it: the recorder's layers need numpy",
    "builders/importer.py": "as build.py: cli.py reads ImportOptions' defaults from here",
    "builders/runner.py": "imported by build.py; its rows need numpy (see build.py)",
    "builders/distributed.py": "imported by build.py; its replicas' recorder needs numpy",
    "builders/pipeline.py": "as build.py: the card (numpy, jinja) loads when a config finishes",
    "predictors/base.py": "Predictor.save/load call the saved-folder code, which finds classes in "
                          "PREDICTORS (the one cycle ALLOWED_CYCLES names)",
    "compact.py": "card.py is page-only (provenance.PAGE_ONLY): not loaded to score",
    "contracts/__init__.py": "the record schema's metric keys come from metrics, which needs "
                             "numpy; dataset.py (on the CLI's start) validates manifests",
}


def deferred_forelen_imports(path: Path) -> int:
    tree = ast.parse(path.read_text())
    count = 0
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("forelen")
                        or isinstance(node, ast.Import)
                        and any(a.name.startswith("forelen") for a in node.names)):
                    count += 1
    return count


def test_forelen_imports_are_deferred_only_where_a_reason_is_given():
    found = {str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if deferred_forelen_imports(p)}
    assert found - set(DEFERRED) == set(), "import at module level, or give the reason here"
    assert set(DEFERRED) - found == set(), "no deferred import left: drop the entry"


# Import edges that close a cycle, and why each is needed; every other import, at a module's top
# or inside a function, points one way.
ALLOWED_CYCLES = {
    ("forelen.predictors.base", "forelen.predictors._saved"):
        "Predictor.save/load are the saved-folder code's entry points, and that code finds a saved "
        "predictor's class in PREDICTORS, which holds Predictors",
}


def module_graph() -> dict[str, set[str]]:
    """Each forelen module -> the forelen modules it imports when it runs (top level or in a
    function; `if TYPE_CHECKING:` blocks left out), with the packages importing them runs."""
    modules = {}
    for path in SRC.rglob("*.py"):
        parts = ("forelen",) + path.relative_to(SRC).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        found = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        named = found & modules.keys()
        implied = {".".join(d.split(".")[:k]) for d in found for k in range(2, d.count(".") + 1)}
        # a package above `name` is already importing when `name` runs, unless named outright
        ancestors = {p for p in modules if name.startswith(p + ".")}
        graph[name] = (named | (implied & modules.keys()) - ancestors) - {name}
    return graph


def test_no_import_cycles_but_the_ones_named():
    """An import cycle hidden behind a function-level import is still a cycle: none is left
    but ALLOWED_CYCLES's, each with its reason."""
    graph = module_graph()
    assert len(graph) > 50  # the walk found the package
    for a, b in ALLOWED_CYCLES:
        assert b in graph[a], f"{a} no longer imports {b}: drop the entry"
        graph[a] = graph[a] - {b}
    state: dict[str, int] = {}
    cycles = []

    def visit(node, path):
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == [], " ; ".join(" -> ".join(c) for c in cycles)


def test_the_cli_starts_without_numpy():
    """`forelen --help` and a mistyped command answer in a fraction of a second: importing the
    CLI loads none of the numerical libraries."""
    import subprocess
    import sys

    code = ("import sys, forelen.cli; print(sorted(m for m in ('numpy', 'torch', 'transformers', "
            "'pandas', 'pyarrow') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr[-1000:]


def test_no_metric_is_named_outside_the_metric_schema():
    """The leaderboard reads every metric through `forelen.metrics` (RANKED_BY, PAPER_METRIC,
    ORDER_METRIC, COMPARED, METRICS): changing what ranks is one edit there, not a hunt through
    the renderer, the report and the ranking for string literals."""
    from forelen.metrics import METRICS

    keys = {m.key for m in METRICS} | {m.ci for m in METRICS if m.ci}
    found = []
    paths = sorted((SRC / "leaderboard").glob("*.py"))
    assert len(paths) > 5
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and node.value in keys:
                found.append(f"{path.name}:{node.lineno} {node.value!r}")
    assert found == []


def test_every_registered_engine_is_an_engine():
    """The build talks to engines through `Engine` only (check, create, resolved, generate,
    feature_seconds, work_unit): a registered class that is not one would be probed."""
    from forelen.builders.engines import ENGINES, Engine

    names = ENGINES.names()
    assert {"hf", "hf-static", "vllm"} <= set(names)
    for name in names:
        assert issubclass(ENGINES.get(name), Engine), name
    for path in (SRC / "builders").rglob("*.py"):
        assert "hasattr(engine" not in path.read_text(), path.name


def test_every_registered_source_is_a_source():
    """Builds and evaluations ask sources through `Source` (load, partition_keys, conversational,
    with_turns), never by probing for a method."""
    from forelen.builders.sources import SOURCES, Source

    names = SOURCES.names()
    assert {"sharegpt-pkg", "gsm-symbolic", "longdocs-pkg"} <= set(names)
    for name in names:
        assert isinstance(SOURCES.get(name), Source), name
    assert SOURCES.get("sharegpt-pkg").conversational
    for path in (SRC / "builders").rglob("*.py"):
        text = path.read_text()
        assert "hasattr(source" not in text and 'getattr(src, "partition_keys"' not in text, path
