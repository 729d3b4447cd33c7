"""Predictors from outside the project: a file, a module, or the `forelen.predictors` entry points.

    forelen evaluate --predictor path/to/mine.py:MyPredictor
    forelen evaluate --predictor mypackage.length:MyPredictor --predictor-args n_bins=10,lr=0.001
    # or, in a distribution's pyproject.toml:
    [project.entry-points."forelen.predictors"]
    my-predictor = "mypackage.length:MyPredictor"

A plugin subclasses `forelen.predictors.Predictor` and follows its contract (a class attribute
`card`, Markdown with `---` front matter, is its card on the leaderboard page); `check_predictor`
runs the named checks of `forelen.predictors.checks`, those of the project's own contract test, so
an author can test a class before publishing. Every record says where its predictor came from (`origin`): the module and file sha256,
or the distribution and version.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
from pathlib import Path

from forelen.errors import ForelenError
from forelen.predictors.base import PREDICTORS, Predictor, PredictorInfo
from forelen.predictors.checks import check_predictor as run_checks

ENTRY_POINTS = "forelen.predictors"


def is_spec(name: str) -> bool:
    """A plugin spec (`file.py:Class`, `module:Class`) rather than a registered name."""
    return ":" in name


def entry_points() -> dict:
    from importlib.metadata import entry_points as eps

    return {ep.name: ep for ep in eps(group=ENTRY_POINTS)}


def load(spec: str) -> tuple[type, dict]:
    """(class, origin) for a registered name, an entry point, or a plugin spec."""
    if not is_spec(spec):
        if spec in PREDICTORS:
            return PREDICTORS.get(spec), {"kind": "registered"}
        plugins = entry_points()
        if spec in plugins:
            ep = plugins[spec]
            cls = _checked(_load_ep(ep), spec)
            dist = getattr(ep, "dist", None)
            return cls, {"kind": "entry-point", "entry_point": ep.value,
                         "distribution": getattr(dist, "name", None),
                         "version": getattr(dist, "version", None)}
        PREDICTORS.get(spec)  # the registry's "unknown predictor ..., did you mean" line
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ForelenError(f"--predictor {spec!r}: a plugin is path/to/file.py:ClassName or "
                           "package.module:ClassName")
    if target.endswith(".py") or "/" in target:
        path = Path(target).expanduser()
        if not path.is_file():
            raise ForelenError(f"--predictor {spec!r}: no such file {path}")
        name = f"forelen_plugin_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise ForelenError(f"--predictor {spec!r}: importing {path} failed: "
                               f"{type(exc).__name__}: {exc}") from None
        origin = {"kind": "file", "file": path.name,
                  "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise ForelenError(f"--predictor {spec!r}: cannot import {target}: "
                               f"{type(exc).__name__}: {exc}") from None
        origin = {"kind": "module", "module": target, **_distribution(target, module)}
    if not hasattr(module, attr):
        raise ForelenError(f"--predictor {spec!r}: {target} has no {attr}")
    return _checked(getattr(module, attr), spec), origin


def _load_ep(ep):
    try:
        return ep.load()
    except Exception as exc:
        raise ForelenError(f"entry point {ep.name} ({ep.value}) failed to load: "
                           f"{type(exc).__name__}: {exc}") from None


def _distribution(module_name: str, module) -> dict:
    """The installed distribution that ships a module, with its version; else the file's hash."""
    from importlib.metadata import packages_distributions, version

    top = module_name.split(".")[0]
    dists = packages_distributions().get(top) or []
    if dists:
        return {"distribution": dists[0], "version": version(dists[0])}
    path = getattr(module, "__file__", None)
    return {"sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()} if path else {}


def _checked(cls, spec: str) -> type:
    if not (inspect.isclass(cls) and issubclass(cls, Predictor)):
        raise ForelenError(f"--predictor {spec!r} is not a subclass of "
                           "forelen.predictors.Predictor")
    if not isinstance(getattr(cls, "info", None), PredictorInfo):
        raise ForelenError(f"--predictor {spec!r} has no `info = PredictorInfo(...)`")
    return cls


def parse_args(text: str | None) -> dict:
    """`key=value,...`: values read as JSON where they parse (numbers, true/false, null, lists),
    else as strings."""
    out = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ForelenError(f"--predictor-args: {part!r} is not key=value")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def params_key(pred) -> tuple[str, dict]:
    """(record key, non-default parameters): the name alone with defaults, else name@hash."""
    sig = inspect.signature(type(pred).__init__)
    defaults = {k: p.default for k, p in sig.parameters.items() if k != "self"}
    changed = {k: v for k, v in pred.get_params().items() if defaults.get(k, object()) != v
               and k != "seed"}  # the run's seed is the protocol's, not a variant
    if not changed:
        return pred.info.name, {}
    digest = hashlib.sha256(json.dumps(changed, sort_keys=True, default=str).encode())
    return f"{pred.info.name}@{digest.hexdigest()[:8]}", changed


# ------------------------------------------------------------------ the contract, for authors


def check_predictor(cls_or_instance, n: int = 48) -> None:
    """Every named contract check of `forelen.predictors.checks` on a class (or a configured
    instance): the same checks as the project's own contract test."""
    run_checks(cls_or_instance, n)
