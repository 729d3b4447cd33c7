"""Saved predictors: `forelen fit --out DIR` writes one, `Predictor.load(DIR)` reads it back, and
`forelen evaluate --from DIR` scores it without fitting again.

A saved predictor is a folder (docs/DESIGN.md section 6, "Saved predictors"):

    DIR/predictor.json     the format and its version; the predictor's name, version, class origin
                           and hyper-parameters; what it was fitted on (dataset path and
                           fingerprint, config, generator, hidden size, the layers and columns it
                           reads); the fit's seed, timing and validation MAE; provenance (forelen
                           version, git commit, library versions); the JSON part of its learned
                           state; the sha256 of every other file
    DIR/state.safetensors  every array and tensor of the learned state
    DIR/<subfolders>       state a library writes as files of its own, JSON and text only (a text
                           predictor's tokenizer and encoder config, from `save_pretrained`)

No pickle, and no code named by a file runs on load: arrays and tensors go to safetensors, the
rest of the state to JSON; the class comes from the predictor registry (or the plugin spec it
was fitted from), scikit-learn estimators from the fixed list `SKLEARN`. A state holding
anything else (an open file, a lambda, an estimator outside the list) is refused when saving,
in one line, before anything is written.

Writes are atomic: everything goes into a hidden temporary folder next to DIR, renamed into
place once complete, so an interrupted or failed `forelen fit` leaves no DIR, only (after a kill
-9) a `.DIR.partial-*` folder. An existing DIR is replaced only with `overwrite`, and only if it
is itself a saved predictor.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

import numpy as np

from forelen import __version__
from forelen.errors import ForelenError
from forelen.predictors._plugins import load as load_spec
from forelen.predictors._plugins import params_key
from forelen.predictors.base import PREDICTORS, NotFittedError, Predictor
from forelen.provenance import git_commit, library_versions
from forelen.schema import column_names

FORMAT = "forelen-predictor"
FORMAT_VERSION = 1
META = "predictor.json"
TENSORS = "state.safetensors"

# The scikit-learn estimators a state may hold (prompt-length, tpv), rebuilt on load from their
# parameters and fitted arrays: the import path is looked up here, never taken from the file.
SKLEARN = {
    "sklearn.linear_model.LinearRegression": ("sklearn.linear_model", "LinearRegression"),
    "sklearn.linear_model.Ridge": ("sklearn.linear_model", "Ridge"),
    "sklearn.linear_model.RidgeCV": ("sklearn.linear_model", "RidgeCV"),
    "sklearn.preprocessing.StandardScaler": ("sklearn.preprocessing", "StandardScaler"),
    "sklearn.pipeline.Pipeline": ("sklearn.pipeline", "Pipeline"),
}

# A column read from one recorded layer: `egtp_l30`, `step_states_l10`, `egtp_first32_l30`
LAYER_COLUMN = re.compile(r"^[a-z0-9_]+_l(\d+)$")


class Unsaveable(ForelenError):
    """A learned state that cannot be written without pickle."""


# ------------------------------------------------------------------------- the state's encoding


class Codec:
    """Learned state <-> (JSON, tensors). JSON objects whose one key starts with `$` mark what
    JSON cannot hold: `$array` and `$tensor` (a key into the safetensors file: numpy arrays come
    back as numpy, torch tensors as torch), `$tuple`, `$float` (nan, inf, -inf), `$numpy` (a
    numpy scalar keeps its dtype, so float32 arithmetic stays float32), `$sklearn`."""

    def __init__(self):
        self.tensors: dict = {}
        self.torch = False  # some tensor is a torch tensor: the file is written through torch

    def encode(self, value, path: str):
        if isinstance(value, np.generic):  # before float: np.float64 is a float
            return {"$numpy": value.dtype.str, "value": self.encode(value.item(), path)}
        if value is None or isinstance(value, (bool, str, int)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"$float": repr(value)}
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biufc":
                raise Unsaveable(f"{path} is an array of {value.dtype} (numbers only)")
            return {"$array": self._put(path, np.array(value, order="C", copy=True))}
        if _is_torch_tensor(value):
            self.torch = True
            return {"$tensor": self._put(path, value.detach().cpu().clone().contiguous())}
        if isinstance(value, tuple):
            return {"$tuple": [self.encode(v, f"{path}/{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [self.encode(v, f"{path}/{i}") for i, v in enumerate(value)]
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if not isinstance(k, str) or k.startswith("$"):
                    raise Unsaveable(f"{path} has the key {k!r} (strings not starting with $ only)")
                out[k] = self.encode(v, f"{path}/{k}")
            return out
        name = _sklearn_name(value, path)
        if name is not None:
            fitted = {k: v for k, v in vars(value).items() if k.endswith("_")
                      and not k.startswith("_")}
            return {"$sklearn": name,
                    "params": self.encode(value.get_params(deep=False), f"{path}/params"),
                    "fitted": self.encode(fitted, f"{path}/fitted")}
        raise Unsaveable(f"{path} is a {type(value).__module__}.{type(value).__qualname__}")

    def _put(self, path: str, tensor) -> str:
        if path in self.tensors:
            raise Unsaveable(f"{path} names two tensors")
        self.tensors[path] = tensor
        return path

    def write(self, file: Path) -> None:
        """All tensors into one safetensors file: through torch where any is a torch tensor (bf16
        has no numpy dtype), numpy arrays converted without a copy of their bits."""
        if self.torch:
            import torch
            from safetensors.torch import save_file

            save_file({k: v if _is_torch_tensor(v) else torch.from_numpy(v)
                       for k, v in self.tensors.items()}, str(file))
        else:
            from safetensors.numpy import save_file

            save_file(self.tensors, str(file))

    @staticmethod
    def read(file: Path, framework: str) -> dict:
        if framework == "torch":
            from safetensors.torch import load_file
        else:
            from safetensors.numpy import load_file
        try:
            return load_file(str(file))
        except Exception as exc:  # a truncated or foreign file: safetensors' own words, one line
            raise ForelenError(f"cannot read {file}: {str(exc).splitlines()[0]}") from None

    def decode(self, obj, tensors: dict):
        if isinstance(obj, list):
            return [self.decode(v, tensors) for v in obj]
        if not isinstance(obj, dict):
            return obj
        if "$array" in obj:
            t = tensors[obj["$array"]]
            return t.numpy() if _is_torch_tensor(t) else t
        if "$tensor" in obj:
            return tensors[obj["$tensor"]]
        if "$tuple" in obj:
            return tuple(self.decode(v, tensors) for v in obj["$tuple"])
        if "$float" in obj:
            return float(obj["$float"])
        if "$numpy" in obj:
            return np.dtype(obj["$numpy"]).type(self.decode(obj["value"], tensors))
        if "$sklearn" in obj:
            if obj["$sklearn"] not in SKLEARN:
                raise ForelenError(f"a saved scikit-learn {obj['$sklearn']!r} is not one forelen "
                                   f"loads ({', '.join(SKLEARN)})")
            module, cls = SKLEARN[obj["$sklearn"]]
            est = getattr(importlib.import_module(module), cls)(**self.decode(obj["params"],
                                                                             tensors))
            for k, v in self.decode(obj["fitted"], tensors).items():
                setattr(est, k, v)
            return est
        return {k: self.decode(v, tensors) for k, v in obj.items()}


def _is_torch_tensor(value) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def _sklearn_name(value, path: str) -> str | None:
    if not type(value).__module__.startswith("sklearn."):
        return None
    for name, (module, cls) in SKLEARN.items():
        if type(value) is getattr(importlib.import_module(module), cls):
            return name
    raise Unsaveable(f"{path} is a scikit-learn {type(value).__name__}; forelen saves "
                     f"{', '.join(n.rsplit('.', 1)[1] for n in SKLEARN)} as arrays and JSON")


# ------------------------------------------------------------------------------------ writing


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse before any work: an existing folder without `overwrite`, and, even with it, a
    folder that is not a saved predictor (a typo must never delete a dataset)."""
    if "://" in str(out):
        raise ForelenError(f"--out {out}: a saved predictor is written to a local folder")
    if not (out.exists() or out.is_symlink()):
        return
    if not overwrite:
        raise ForelenError(f"{out} already exists; pass --overwrite to replace it (the old one "
                           "stays until the new one is complete)")
    if not out.is_dir() or out.is_symlink() or (any(out.iterdir()) and not _is_saved(out)):
        raise ForelenError(f"{out} exists and is not a saved predictor (no {META} of format "
                           f"{FORMAT}); refusing to replace it, even with --overwrite")


def _is_saved(folder: Path) -> bool:
    try:
        return json.loads((folder / META).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def save(pred, out, meta: dict | None = None, overwrite: bool = False) -> Path:
    """Write a fitted predictor to the folder `out`, atomically; `meta`: what `forelen fit` knows
    beyond the predictor itself (`fitted_on`, `fit`, `provenance`; see src/forelen/leaderboard/evaluate.py).
    Returns the folder."""
    out = Path(out)
    check_out(out, overwrite)
    try:
        pred.check_fitted()
    except NotFittedError:
        raise ForelenError(f"{pred.info.name} is not fitted; fit it before saving") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        codec = Codec()
        try:
            state = {k: codec.encode(v, k) for k, v in pred.get_state(tmp).items()}
        except Unsaveable as exc:
            raise Unsaveable(f"cannot save {pred.info.name} without pickle: {exc}") from None
        codec.write(tmp / TENSORS)
        os.chmod(tmp / TENSORS, 0o666 & ~_umask())  # safetensors creates it private
        files = {p.relative_to(tmp).as_posix(): _sha256(p) for p in sorted(tmp.rglob("*"))
                 if p.is_file() and p.name not in (TENSORS, META)}
        meta = dict(meta or {})
        body = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "predictor": describe(pred) | _plain(meta.pop("predictor", {})),
                **{k: _plain(v) for k, v in meta.items()},
                "provenance": _plain(meta.get("provenance") or provenance()),
                "state": state,
                "tensors": {"file": TENSORS, "framework": "torch" if codec.torch else "numpy",
                            "count": len(codec.tensors), "sha256": _sha256(tmp / TENSORS)},
                "files": files}
        _write(tmp / META, (json.dumps(body, indent=1, allow_nan=False) + "\n").encode())
        _put_in_place(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def describe(pred) -> dict:
    """The predictor's identity and hyper-parameters (JSON-encoded: tuples stay tuples), and
    where its class is found again: the registry, else its module (`forelen fit` puts the plugin
    spec it was given in their place)."""
    info, cls = pred.info, type(pred)
    key, changed = params_key(pred)
    registered = info.name in PREDICTORS and PREDICTORS.get(info.name) is cls
    return {"name": info.name, "version": info.version, "family": info.family,
            "reference": info.reference, "outputs": info.outputs, "table": info.table,
            "progressive": info.progressive, "ranked": info.ranked, "key": key,
            "non_default_params": _plain(changed),
            "origin": {"kind": "registered"} if registered else {"kind": "module",
                                                                 "module": cls.__module__},
            "spec": info.name if registered else f"{cls.__module__}:{cls.__qualname__}",
            "params": Codec().encode(pred.get_params(), "params")}


def provenance() -> dict:
    """What made the saved predictor: forelen's version and git commit, library versions."""
    import time

    return {"forelen_version": __version__, "git_commit": git_commit(),
            "library_versions": library_versions(),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _put_in_place(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished folder into place; an old saved predictor is moved aside first and
    removed only once the new one is there."""
    if out.exists() or out.is_symlink():
        check_out(out, overwrite)  # it may have appeared while fitting
        old = out.with_name(f".{out.name}.replaced-{uuid.uuid4().hex[:8]}")
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _plain(value):
    """Metadata as standard JSON: numpy scalars as numbers, tuples as lists, non-finite as null."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


# ------------------------------------------------------------------------------------ reading


def read_meta(root: Path) -> dict:
    """predictor.json of a saved predictor, its format checked; one line for anything else."""
    if not root.is_dir():
        raise ForelenError(f"no saved predictor at {root} (no such folder); save one with "
                           "`forelen fit --out`")
    try:
        meta = json.loads((root / META).read_text())
    except FileNotFoundError:
        raise ForelenError(f"{root} is not a saved predictor (no {META})") from None
    except (OSError, ValueError) as exc:
        raise ForelenError(f"{root / META} cannot be read: {str(exc).splitlines()[0]}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ForelenError(f"{root / META} is not a saved forelen predictor (format "
                           f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ForelenError(f"{root} was saved in format {meta['format_version']}, newer than this "
                           f"forelen reads ({FORMAT_VERSION}); upgrade forelen")
    return meta


def read_fitted(root: Path) -> dict:
    """predictor.json of a folder `forelen fit` wrote: what it was fitted on is needed to score
    it (`Predictor.save` alone does not know)."""
    meta = read_meta(root)
    if "fitted_on" not in meta or "fit" not in meta:
        raise ForelenError(f"{root} was saved without the dataset it was fitted on (by "
                           "Predictor.save, not `forelen fit`); `forelen evaluate --from` scores "
                           "folders written by `forelen fit`")
    return meta


def load(path, expect: type | None = None):
    """(fitted predictor, its predictor.json) from a saved folder. `expect`: the class
    `Cls.load` was called on; a folder holding another predictor is refused."""
    root = Path(path)
    meta = read_meta(root)
    files = {meta["tensors"]["file"]: meta["tensors"]["sha256"], **meta.get("files", {})}
    for rel, digest in files.items():
        file = root / rel
        if not file.is_file():
            raise ForelenError(f"{root} is incomplete: {rel} is missing")
        if _sha256(file) != digest:
            raise ForelenError(f"{root} is corrupt: {rel} does not match the sha256 in {META}")
    cls = saved_class(meta, root)
    if expect is not None and expect is not Predictor and not issubclass(cls, expect):
        raise ForelenError(f"{root} holds a saved {cls.info.name}, not a "
                           f"{getattr(getattr(expect, 'info', None), 'name', expect.__name__)}")
    codec = Codec()
    pred = cls()
    params = codec.decode(meta["predictor"]["params"], {})
    pred.set_params(**params)
    tensors = Codec.read(root / meta["tensors"]["file"], meta["tensors"]["framework"])
    state = {k: codec.decode(v, tensors) for k, v in meta["state"].items()}
    pred.set_state(state, root)
    return pred, meta


def saved_class(meta: dict, root: Path) -> type:
    """The class a saved predictor was fitted as: registered by name, or a plugin re-imported
    from its spec; refused when this forelen's version of it predicts differently."""
    p = meta["predictor"]
    origin = p.get("origin") or {"kind": "registered"}
    if origin.get("kind") == "registered":
        cls = PREDICTORS.get(p["name"])
    else:
        cls, _ = load_spec(p["spec"])
    if cls.info.version != p["version"]:
        raise ForelenError(
            f"{root} holds {p['name']} version {p['version']} (forelen "
            f"{meta.get('provenance', {}).get('forelen_version')}); {p['name']} here is version "
            f"{cls.info.version}, whose predictions differ: fit it again with `forelen fit`")
    return cls


# ----------------------------------------------------------------- what a config must match


def generator_of(build: dict) -> dict:
    """Who generated a config's lengths and whose hidden states its features are."""
    return {k: build.get(k) for k in ("model", "model_slug", "model_location", "model_revision",
                                      "features_model", "hidden_size", "num_layers", "dtype")}


def layers_read(columns) -> list[int]:
    return sorted({int(m.group(1)) for c in columns if (m := LAYER_COLUMN.match(c))})


def config_columns(build: dict) -> set[str]:
    """The columns a config holds, from its manifest entry (schema v1)."""
    return set(column_names(build.get("recorded_layers") or [], build.get("egtp_first_k"),
                            token_features=build.get("features", True)))


def mismatch(meta: dict, entry: dict, config: str) -> str | None:
    """Why config `config` (manifest entry `entry`) cannot be scored by the saved predictor, in
    one line, or None. The lengths a predictor learnt are its generator's, and hidden states are
    meaningful only for the model, size and layer they came from: a config of another generator,
    of another hidden size, or without the layers and columns the predictor reads is refused."""
    p, fitted = meta["predictor"], meta["fitted_on"]
    name = p["name"]
    was, now = fitted["generator"], generator_of(entry["build"])
    columns = fitted["columns"]
    hidden = layers_read(columns)
    if hidden and was.get("hidden_size") != now.get("hidden_size"):
        return (f"saved {name} reads hidden states of size {was.get('hidden_size')} (from "
                f"{_who(was)}); config {config!r} holds size {now.get('hidden_size')} (from "
                f"{_who(now)}): fit it on {config} with `forelen fit`")
    if _identity(was) != _identity(now):
        return (f"saved {name} was fitted on lengths generated by {_who(was)}; config {config!r} "
                f"was generated by {_who(now)}: a predictor of one generator's lengths does not "
                f"score another's; fit it on {config} with `forelen fit`")
    if hidden and was.get("features_model") != now.get("features_model"):
        return (f"saved {name} read hidden states of {was.get('features_model')}; config "
                f"{config!r} holds those of {now.get('features_model')}: fit it on {config}")
    missing = sorted(set(columns) - config_columns(entry["build"]))
    if missing:
        layers = layers_read(missing)
        where = (f" (layer {', '.join(map(str, layers))}, recorded layers of {config}: "
                 f"{', '.join(map(str, entry['build'].get('recorded_layers') or [])) or 'none'})"
                 if layers else "")
        return (f"saved {name} reads {', '.join(missing)}, which config {config!r} lacks{where}: "
                f"fit it on {config}, or rebuild {config} with what it reads")
    return None


def _identity(g: dict) -> tuple:
    return g.get("model_location"), g.get("model_revision")


def _who(g: dict) -> str:
    name = g.get("model_location") or g.get("model") or "an unknown generator"
    rev = g.get("model_revision")
    return f"{name} ({rev})" if rev and not str(rev).endswith(str(name)) else str(name)

