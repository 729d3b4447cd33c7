"""Predictors from outside the project: a file, a module, or the `forelen.predictors` entry points.

    forelen evaluate --predictor path/to/mine.py:MyPredictor
    forelen evaluate --predictor mypackage.length:MyPredictor --predictor-args n_bins=10,lr=0.001
    # or, in a distribution's pyproject.toml:
    [project.entry-points."forelen.predictors"]
    my-predictor = "mypackage.length:MyPredictor"

A plugin subclasses `forelen.predictors.Predictor` and follows its contract (a class attribute
`card`, Markdown with `---` front matter, is its card on the leaderboard page); `check_predictor`
runs the same checks as the project's own contract test, so an author can test a class before
publishing. Every record says where its predictor came from (`origin`): the module and file sha256,
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

import numpy as np

from forelen.errors import ForelenError
from forelen.metrics import OBSERVED_STEPS
from forelen.tables import FeatureTable

ENTRY_POINTS = "forelen.predictors"


def is_spec(name: str) -> bool:
    """A plugin spec (`file.py:Class`, `module:Class`) rather than a registered name."""
    return ":" in name


def entry_points() -> dict:
    from importlib.metadata import entry_points as eps

    return {ep.name: ep for ep in eps(group=ENTRY_POINTS)}


def load(spec: str) -> tuple[type, dict]:
    """(class, origin) for a registered name, an entry point, or a plugin spec."""
    from forelen.predictors import PREDICTORS

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
    from forelen.predictors import Predictor, PredictorInfo

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
    """Run the contract checks on a predictor class (or a configured instance); raises
    AssertionError naming the first broken rule. The same checks as the project's own test:
    `__init__` stores its arguments and nothing learned; predict before fit raises
    NotFittedError; fit returns self; predict gives (N,) finite lengths >= 0; progressive
    predictors give finite remaining lengths >= 0; the same seed gives the same predictions."""
    from forelen.predictors import NotFittedError, Predictor

    cls = cls_or_instance if inspect.isclass(cls_or_instance) else type(cls_or_instance)
    make = cls if inspect.isclass(cls_or_instance) else (
        lambda: cls(**cls_or_instance.get_params()))
    assert issubclass(cls, Predictor), f"{cls.__name__} does not subclass Predictor"
    info = getattr(cls, "info", None)
    assert info is not None and info.name and info.version, f"{cls.__name__} lacks info metadata"
    pred = cls()
    sig = inspect.signature(cls.__init__)
    defaults = {k: p.default for k, p in sig.parameters.items() if k != "self"}
    assert pred.get_params() == defaults, "__init__ must store each argument under its own name"
    assert not [k for k in vars(pred) if k.endswith("_")], "__init__ must not set learned state"
    (train, y), (test, y_test) = synthetic(n), synthetic(16, seed=1)
    layers = train.layers()
    pred = make()
    cols = pred.columns(layers)
    try:
        pred.predict(test.select(cols))
    except NotFittedError:
        pass
    else:
        raise AssertionError("predict before fit must raise NotFittedError")
    assert pred.fit(train.select(cols), y, eval_set=(test.select(cols), y_test)) is pred, \
        "fit must return self"
    out = pred.predict(test.select(cols))
    assert isinstance(out, np.ndarray) and out.shape == (test.n,), "predict must return (N,)"
    assert np.all(np.isfinite(out)), "predictions must be finite"
    if info.outputs == "length":
        assert np.all(out >= 0), "predicted lengths must be >= 0"
    if info.progressive:
        for t in OBSERVED_STEPS:
            rows = np.flatnonzero(y_test > t)
            if len(rows):
                rem = pred.predict_remaining(test.select(cols).take(rows), t)
                assert rem.shape == (len(rows),) and np.all(np.isfinite(rem)) \
                    and np.all(rem >= 0), f"predict_remaining at t={t} is not (N,) finite >= 0"
    if "seed" in defaults:
        again = make()
        again.set_params(seed=pred.get_params()["seed"])
        other = again.fit(train.select(cols), y).predict(test.select(cols))
        first = make().fit(train.select(cols), y).predict(test.select(cols))
        assert np.array_equal(first, other), "the same seed must give the same predictions"


def synthetic(n: int = 48, seed: int = 0):
    """(FeatureTable, y): every schema column a predictor may read, lengths weakly tied to the
    vectors; layers 1 and 2 of width 8."""
    layers, d = [1, 2], 8
    rng = np.random.default_rng(seed)
    y = rng.integers(5, 120, size=n)
    cols = {"output_tokens": y, "prompt_tokens": rng.integers(10, 200, size=n),
            "group_id": np.array([f"g{i // 4}" for i in range(n)], dtype=object),
            "finish_reason": np.array(["stop"] * n, dtype=object),
            "prompt": np.array([("briefly " if y[i] < 60 else "in detail ") + f"question {i}: name "
                                f"{i % 5 + 1} colours." for i in range(n)], dtype=object)}
    for layer in layers:
        base = rng.normal(size=(n, d)) + (y[:, None] / 60.0)
        for kind in ("egtp", "mean", "max", "last"):
            cols[f"{kind}_l{layer}"] = (base + rng.normal(scale=0.1, size=(n, d))).astype(np.float16)
        steps = np.empty(n, dtype=object)
        for i in range(n):
            s = min(64, int(y[i]))
            remaining = (y[i] - np.arange(1, s + 1))[:, None] / 60.0
            steps[i] = (rng.normal(size=(s, d)) + remaining).astype(np.float16)
        cols[f"step_states_l{layer}"] = steps
    for name, lengths in (("prompt_entropy", cols["prompt_tokens"]), ("response_entropy", y)):
        arr = np.empty(n, dtype=object)
        for i, m in enumerate(lengths):
            arr[i] = rng.uniform(0, 5, size=int(m)).astype(np.float16)
        cols[name] = arr
    return FeatureTable(cols, {"recorded_layers": layers}), y.astype(np.float64)
