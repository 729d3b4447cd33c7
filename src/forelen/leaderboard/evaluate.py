"""The evaluation protocol: fit on train, select on validation, score on test, fixed seeds."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from forelen import stats
from forelen.builders.sources import SOURCES, partition_units
from forelen.compact import is_compact, physical_columns
from forelen.errors import ForelenError
from forelen.leaderboard.records import (dataset_fingerprint, histogram_of, predictions_hash, stamp,
                                         write_record)
from forelen.metrics import (MIN_GROUPS, OBSERVED_STEPS, PAPER_METRIC, RANKED_BY,
                             group_median_floor, length_metrics, per_step_mae, ranking_metrics)
from forelen.predictors import load_predictor
from forelen.predictors._plugins import is_spec, params_key
from forelen.predictors._saved import (check_out, generator_of, layers_read, load, mismatch,
                                       read_fitted, read_meta, saved_class)
from forelen.provenance import code_provenance
from forelen.schema import SCHEMA_VERSION
from forelen.simulator.endtoend import Scenario, SimSettings
from forelen.stats import SEED
from forelen.tables import from_arrow

BASE_COLUMNS = ("output_tokens", "group_id", "prompt_tokens", "finish_reason", "source",
                "source_id")


@dataclass
class Split3:
    """The three partitions of one config as feature tables, plus the config's manifest entry."""

    config: str
    entry: dict
    train: object
    validation: object
    test: object
    # the test rows' bootstrap units and, per source, what a unit is (`bootstrap_units`); None:
    # each prompt (group_id) is its own unit
    units: object = None
    unit_by_source: dict | None = None

    def test_units(self) -> np.ndarray:
        return np.asarray(self.test["group_id"] if self.units is None else self.units)


def bootstrap_units(test) -> tuple[np.ndarray, dict]:
    """Each test row's bootstrap unit: its partition unit (`sources.partition_units`), so that one
    GSM-Symbolic template's instances, or one article's questions, are resampled together as the
    builder kept them together in one partition; they are correlated, and resampling them one by
    one would make intervals too narrow. Rows of a source that cannot say (an imported dataset's
    own source, a missing package) fall back to their prompt. Returns (units, {source: "template"
    | "document" | "prompt" | "prompt (...)" saying why a source's units were not found})."""
    sources = np.asarray(test["source"]).astype(str)
    ids = np.asarray(test["source_id"]).astype(str)
    units = np.asarray(test["group_id"]).astype(object)
    by_source = {}
    for name in sorted(set(sources.tolist())):
        rows = np.flatnonzero(sources == name)
        got = partition_units(name, ids[rows].tolist())
        if got is None:
            by_source[name] = ("prompt (partition keys unavailable)" if name in SOURCES.names()
                               else "prompt (source not registered here)")
            continue
        units[rows] = got
        by_source[name] = SOURCES.get(name).info.partition_by if name in SOURCES.names() \
            else "prompt"
    return units.astype(str), by_source


def load_config(folder, config: str, columns: list[str]) -> Split3:
    entry = folder.config(config)
    if entry is None or entry.get("status") != "complete":
        known = [n for n, e in folder.manifest()["configs"].items() if e.get("status") == "complete"]
        raise ForelenError(_unknown("config", config, known))
    meta = {"recorded_layers": entry["build"]["recorded_layers"], "config": config,
            "model": entry["build"]["model"], "split": entry["build"]["split"],
            "dtype": entry["build"].get("dtype"),
            "date_string": entry["build"].get("date_string")}  # the day its templates saw
    read = sorted(set(columns) | set(BASE_COLUMNS))
    if is_compact(entry):  # step states kept as summaries (src/forelen/compact.py)
        read = physical_columns(entry, read)
    parts = {}
    for part in ("train", "validation", "test"):
        table = folder.read(config, part, columns=read)
        parts[part] = from_arrow(table, meta) if table is not None else None
    if parts["train"] is None or parts["test"] is None:
        raise ForelenError(f"config {config!r} needs rows in both train and test to be evaluated")
    units, by_source = bootstrap_units(parts["test"])
    return Split3(config, entry, parts["train"], parts["validation"], parts["test"], units,
                  by_source)


def _unknown(kind: str, name: str, known: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ";"
    return f"unknown {kind} {name!r}{hint} known: {', '.join(sorted(known)) or 'none'}"


def make_predictor(cls, seed: int, params: dict | None = None):
    """An instance with its defaults, the run's seed set where it takes one, then `params`
    (--predictor-args) through `set_params`, which refuses unknown names."""
    pred = cls()
    if "seed" in pred.get_params():
        pred.seed = seed
    if params:
        pred.set_params(**params)
    return pred


def fit_on(pred, data: Split3, cols: list[str]) -> float:
    """Fit on train, with validation as `eval_set` (to select or stop on); returns seconds.
    `forelen evaluate` and `forelen fit` share it, so a saved predictor is the one evaluate fits."""
    y_train = data.train["output_tokens"].astype(np.float64)
    eval_set = None
    if data.validation is not None:
        eval_set = (data.validation.select(cols), data.validation["output_tokens"].astype(np.float64))
    t0 = time.perf_counter()
    pred.fit(data.train.select(cols), y_train, eval_set=eval_set)
    return time.perf_counter() - t0


def evaluate_one(pred, data: Split3, seed: int, columns: list[str] | None = None,
                 fitted: bool = False) -> dict:
    """Fit, select, score one predictor on one config; the record's measured parts. `fitted`:
    a loaded predictor, scored as it is (`columns`: those it was fitted on, not re-resolved
    against this config's layers); its `fit_s` is None."""
    cols = list(columns) if columns is not None else pred.columns(
        data.entry["build"]["recorded_layers"])
    y_test = data.test["output_tokens"].astype(np.float64)
    fit_s = None if fitted else fit_on(pred, data, cols)
    t1 = time.perf_counter()
    test = data.test.select(cols)
    predictions = np.asarray(pred.predict(test), dtype=np.float64)
    t2 = time.perf_counter()
    # read now: the latency measurement below predicts single rows and would overwrite them
    diagnostics = pred.diagnostics()
    out = {"columns": cols, "predictions": predictions, "diagnostics": diagnostics,
           "head": pred.training_config(),
           "timing": {"fit_s": fit_s, "predict_s": t2 - t1,
                      "per_request_ms": per_request_ms(pred, test)}}
    if pred.info.outputs == "ranking":
        out["metrics"] = ranking_metrics(y_test, predictions)
    else:
        out["validation"] = validation_score(pred, data, cols)
        out["metrics"] = length_metrics(y_test, predictions, seed=SEED, groups=data.test_units(),
                                        censored=np.asarray(data.test["finish_reason"]) == "length",
                                        distribution=predicted_distribution(pred, test),
                                        cap=data.entry["build"].get("max_new_tokens"))
        out["metrics"]["ci_unit"] = "partition unit"
        out["metrics"]["ci_unit_by_source"] = data.unit_by_source or {
            name: "prompt" for name in sorted(set(np.asarray(data.test["source"]).astype(str)))}
    if pred.info.progressive:
        out["remaining"] = remaining_matrix(pred, test, y_test)
        col = {t: j for j, t in enumerate(OBSERVED_STEPS)}
        out["per_step"] = per_step_mae(
            y_test, lambda t, mask: out["remaining"][mask, col[t]], OBSERVED_STEPS)
    return out


def validation_score(pred, data: Split3, cols: list[str]) -> dict | None:
    """MAE on the validation partition, after the fit (which may have used it to select a
    checkpoint): what a comparison may choose a predictor by without looking at test rows (the
    paper comparison picks "the best baseline" by it). None without a validation partition."""
    if data.validation is None or not data.validation.n:
        return None
    y = data.validation["output_tokens"].astype(np.float64)
    p = np.asarray(pred.predict(data.validation.select(cols)), dtype=np.float64)
    return {PAPER_METRIC: float(np.mean(np.abs(y - p))), "n": int(len(y)),
            "groups": int(len(np.unique(np.asarray(data.validation["group_id"]))))}


def predicted_distribution(pred, test):
    """The predictor's `BinnedDistribution` over the test rows, or None where it predicts none
    (no `predict_distribution`, or one that raises NotImplementedError): its distribution
    metrics are then null."""
    method = getattr(pred, "predict_distribution", None)
    if not callable(method):
        return None
    try:
        dist = method(test)
    except NotImplementedError:
        return None
    if dist is not None and len(dist) != test.n:
        raise ForelenError(f"{pred.info.name}: predict_distribution gave {len(dist)} rows for "
                           f"{test.n} test rows")
    return dist


def per_row(data: Split3, result: dict) -> dict | None:
    """What the page's paired significance tests need, in test-row order: each row's absolute
    error and bootstrap unit (`group`: the index of its partition unit, `bootstrap_units`), and a
    hash of the row order so that only records over the very same rows are paired. None for
    ranking-only predictors (no lengths, no errors)."""
    import hashlib

    if result["metrics"].get(RANKED_BY) is None:
        return None
    y = data.test["output_tokens"].astype(np.float64)
    groups = np.asarray(data.test["group_id"])
    names, index = np.unique(data.test_units(), return_inverse=True)  # the bootstrap's order
    order = hashlib.sha256("\n".join(map(str, groups)).encode()
                           + np.asarray(y, "<f8").tobytes()).hexdigest()
    cut = np.asarray(data.test["finish_reason"]) == "length"
    out = {"abs_error": np.round(np.abs(y - result["predictions"]), 3).tolist(),
           "group": index.ravel().tolist(), "unit_names": [str(n) for n in names],
           "rows_sha256": order,
           # the rows cut at max_new_tokens (indices): MAE compl. and MAE capped from the record
           "censored_rows": np.flatnonzero(cut).tolist()}
    if result.get("remaining") is not None:
        # progressive predictors: each row's remaining-length error at each observed step t,
        # None where the row had ended by t (per_step's MAE is the mean of a column)
        err = np.abs((y[:, None] - np.asarray(OBSERVED_STEPS)) - result["remaining"])
        out["step_abs_error"] = {str(t): [None if v != v else round(float(v), 3) for v in col]
                                 for t, col in zip(OBSERVED_STEPS, err.T)}
    return out


def remaining_matrix(pred, test, y_test) -> np.ndarray:
    """(N, T) remaining-length predictions at each observed step t for the rows still running at
    t (output_tokens > t), NaN elsewhere: per-step MAE and the SRPT simulator both read it."""
    out = np.full((len(y_test), len(OBSERVED_STEPS)), np.nan)
    for j, t in enumerate(OBSERVED_STEPS):
        rows = np.flatnonzero(y_test > t)
        if len(rows):
            out[rows, j] = np.asarray(pred.predict_remaining(test.take(rows), t), np.float64)
    return out


def end_to_end(scenario, result: dict, groups=None) -> dict:
    """The record's `end_to_end` section: the predictor's schedules against FCFS and the oracle
    (SJF on the prediction under static and continuous batching; a progressive predictor also
    SRPT under continuous batching, `continuous-srpt`), and, with `groups` (the test rows'
    bootstrap units, those of the MAE's interval), the same schedules on the `stats.N_BOOT` group
    resamples of `stats.unit_weights` (seed `stats.SEED`, so replicate b pairs with the MAE's) and
    on the leave-one-unit-out samples: the paper comparison's BCa intervals of padding ratio and
    JCT come from them (`simulator.endtoend.series` decodes a stored series)."""
    remaining = result.get("remaining")
    steps = OBSERVED_STEPS if remaining is not None else None
    block = scenario.block(result["predictions"], steps, remaining)
    if groups is not None and len(np.unique(np.asarray(groups))) >= MIN_GROUPS:
        block["bootstrap"] = scenario.bootstrap(result["predictions"], groups, steps, remaining,
                                                n_boot=stats.N_BOOT, seed=stats.SEED)
    return block


def scenario_for(data: Split3, settings=None):
    return Scenario(data.test["prompt_tokens"], data.test["output_tokens"],
                    settings or SimSettings(), data.entry["build"].get("max_new_tokens"))


def per_request_ms(pred, test, repeats: int = 20) -> float:
    """Median latency of predicting one request (one row), in milliseconds."""
    one = test.take([0])
    pred.predict(one)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        pred.predict(one)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def references(data: Split3) -> dict:
    """Context for the table: the rl static floor (each sample by its own group's median)."""
    y = data.test["output_tokens"].astype(np.float64)
    out = {"test_rows": int(len(y)), "test_mean_output_tokens": float(y.mean()),
           "test_truncation_rate": float(np.mean(data.test["finish_reason"] == "length"))}
    if data.entry["build"]["split"] == "rl":
        out["static_floor_mae"] = group_median_floor(y, data.test["group_id"])
    return out


def dataset_block(folder, data: Split3) -> dict:
    build = data.entry["build"]
    # a URL, or a path relative to where forelen ran: records and pages travel, and the dataset is
    # identified by its fingerprint, never by an absolute local path
    path = folder.location if folder.fs is not None else os.path.relpath(folder.root)
    return {"path": path, "repo": None, "revision": None,
            "config": data.config, "partition": "test", "schema_version": SCHEMA_VERSION,
            "fingerprint": dataset_fingerprint(data.entry), "model": build["model_location"],
            "model_revision": build["model_revision"], "split": build["split"],
            "recorded_layers": build["recorded_layers"], "sources": build.get("sources"),
            "source_mix": build.get("source_mix"), "length_histogram": _histogram(data),
            **({"form": data.entry["form"]} if data.entry.get("form") else {})}


def _histogram(data: Split3) -> dict:
    """Output lengths of every partition, so a release can show the distribution without the
    dataset folder (the record names the build by its fingerprint)."""
    parts = [p for p in (data.train, data.validation, data.test) if p is not None]
    return histogram_of(np.concatenate([p["output_tokens"] for p in parts]),
                        np.concatenate([p["finish_reason"] == "length" for p in parts]),
                        data.entry["build"].get("max_new_tokens"))


TEXT_COLUMNS = ("prompt", "response", "response_token_ids")


def runnable_on(entry: dict | None, config: str, classes: list, say=None) -> list:
    """The predictors that can run on a config. A text-only config (imported with
    --no-features) has no hidden states; a config imported with --drop-text has no text (its
    prompt and response columns hold sha256 hashes). A predictor that needs what the config lacks
    is one clear error when asked for alone, and among several (`--predictor all`) it is left
    out, said in one line."""
    build = (entry or {}).get("build", {})
    lacks = []
    if not build.get("features", True):
        lacks.append(("no features (imported with --no-features)", "needs hidden states",
                      "import it again with features, or evaluate a text-proxy or reference "
                      "predictor", lambda c: c.info.family == "hidden-state"))
    if build.get("drop_text"):
        lacks.append(("no text (imported with --drop-text)", "reads the prompt text",
                      "import it again with its text, or evaluate a hidden-state or reference "
                      "predictor", lambda c: any(col in TEXT_COLUMNS for col in c.info.requires)))
    for what, needs, hint, unable in lacks:
        out = [c.info.name for c in classes if unable(c)]
        if out and len(out) == len(classes):
            raise ForelenError(f"config {config!r} has {what}; {', '.join(out)} {needs}: {hint}")
        if out and say:
            say(f"{config}: {what}; leaving out {', '.join(out)}")
        classes = [c for c in classes if not unable(c)]
    return classes


def run_evaluation(folder, configs: list[str], predictor_names: list[str], seed: int,
                   results_dir: str, on_result=None, sim=None, say=None,
                   predictor_args: dict | None = None) -> list[dict]:
    """Evaluate every (config, predictor) pair; write and return the result records.

    `predictor_names`: registered names, entry points or plugin specs (`file.py:Class`).
    `sim` (simulator.endtoend.SimSettings) sets up the `end_to_end` section; default settings
    with the run's seed when None. `predictor_args` go to every predictor's `set_params`.
    """
    loaded = [load_predictor(n) for n in predictor_names]
    origins = {cls: origin for cls, origin in loaded}
    requested = [cls for cls, _ in loaded]
    for cls in requested:  # unknown --predictor-args fail before any work
        make_predictor(cls, seed, predictor_args)
    records = []
    for config in configs:
        entry = folder.config(config)
        classes = runnable_on(entry, config, requested, say)
        layers = entry["build"]["recorded_layers"] if entry else []
        columns = ({c for cls in classes
                    for c in make_predictor(cls, seed, predictor_args).columns(layers)}
                   if entry else set())
        data = load_config(folder, config, sorted(columns))
        context = references(data)
        scenario = scenario_for(data, sim or _default_sim(seed))
        for cls in classes:
            pred = make_predictor(cls, seed, predictor_args)
            key, changed = params_key(pred)
            result = evaluate_one(pred, data, seed)
            record = make_record(pred, origins[cls], key, changed, folder, data, seed, result,
                                 context, scenario)
            record["path"] = str(write_record(results_dir, record))
            records.append(record)
            if on_result:
                on_result(record)
    return records


def make_record(pred, origin: dict, key: str, changed: dict, folder, data: Split3, seed: int,
                result: dict, context: dict, scenario) -> dict:
    """One (config, predictor) result record (lm-eval style provenance, docs/DESIGN.md 7)."""
    cls = type(pred)
    return stamp() | {
        "predictor": {"name": pred.info.name, "key": key, "non_default_params": changed,
                      "origin": origin, "version": pred.info.version,
                      "card": getattr(cls, "card", None) if origin["kind"] != "registered"
                      else None,
                      "family": pred.info.family, "reference": pred.info.reference,
                      "outputs": pred.info.outputs, "progressive": pred.info.progressive,
                      "ranked": pred.info.ranked, "params": pred.get_params(),
                      "columns": result["columns"], "head": result["head"]},
        "dataset": dataset_block(folder, data),
        "protocol": {"fit": "train", "select": "validation", "score": "test", "seed": seed},
        "metrics": result["metrics"], "per_step": result.get("per_step"),
        "validation": result.get("validation"),
        "references": context, "timing": result["timing"],
        "predictions_sha256": predictions_hash(result["predictions"]),
        "diagnostics": result["diagnostics"],
        "per_row": per_row(data, result),
        "end_to_end": end_to_end(scenario, result, data.test_units()),
        "code": code_provenance(cls),
    }


# ------------------------------------------------------------------- saved predictors (fit)


def fit_and_save(folder, config: str, spec: str, seed: int, out: str, overwrite: bool = False,
                 predictor_args: dict | None = None, say=None) -> dict:
    """`forelen fit`: fit one predictor on a config's train partition (validation as its
    eval_set, as `evaluate` fits it) and save it to `out` with what it was fitted on; returns
    the saved predictor.json. `out` is checked before any work, and written only when complete."""
    out_path = Path(out)
    check_out(out_path, overwrite)
    cls, origin = load_predictor(spec)
    pred = make_predictor(cls, seed, predictor_args)
    entry = folder.config(config)
    runnable_on(entry, config, [cls])
    layers = entry["build"]["recorded_layers"] if entry else []
    cols = pred.columns(layers) if entry else []
    data = load_config(folder, config, cols)
    if say:
        say(f"fitting {pred.info.name} on {config} ({data.train.n} train rows, "
            f"{data.validation.n if data.validation is not None else 0} validation rows), "
            f"seed {seed}")
    fit_s = fit_on(pred, data, cols)
    validation = (validation_score(pred, data, cols) if pred.info.outputs == "length" else None)
    key, changed = params_key(pred)
    build = data.entry["build"]
    # the dataset as the saved folder sees it: a URL, or a path relative to the saved folder, so
    # the two can move together; the fingerprint names the build wherever it lies
    where = (folder.location if folder.fs is not None
             else os.path.relpath(Path(folder.root).resolve(), out_path.resolve()))
    meta = {
        "predictor": {"key": key, "non_default_params": changed, "origin": origin,
                      "spec": spec if is_spec(spec) or origin["kind"] != "registered"
                      else pred.info.name,
                      "card": getattr(cls, "card", None) if origin["kind"] != "registered"
                      else None,
                      "columns": cols, "head": pred.training_config()},
        "fitted_on": {
            "dataset": {"path": where, "config": config,
                        "fingerprint": dataset_fingerprint(data.entry),
                        "schema_version": SCHEMA_VERSION, "split": build["split"],
                        "rows": {"train": int(data.train.n),
                                 "validation": int(data.validation.n)
                                 if data.validation is not None else 0}},
            "generator": generator_of(build), "recorded_layers": build["recorded_layers"],
            "layers": layers_read(cols), "columns": cols},
        "fit": {"seed": seed, "protocol": {"fit": "train", "select": "validation"},
                "fit_s": fit_s, "validation": validation},
        "provenance": stamp(),
    }
    return read_meta(pred.save(out_path, overwrite=overwrite, meta=meta))


def saved_configs(folder, configs: list[str], meta: dict, saved_dir: str,
                  say=None) -> list[str]:
    """The configs a saved predictor can score (`_saved.mismatch`, then what `runnable_on`
    asks of a config): one named config that it cannot is one error line; of several
    (`--config all`) those are left out, said in a line."""
    cls = saved_class(meta, Path(saved_dir))
    ok, reasons = [], []
    for config in configs:
        entry = folder.config(config)
        try:
            why = mismatch(meta, entry, config)
            if why is None:
                runnable_on(entry, config, [cls])
        except ForelenError as exc:
            why = str(exc)
        if why is None:
            ok.append(config)
        else:
            reasons.append(why)
    if not ok:
        raise ForelenError(reasons[0] if len(configs) == 1 else
                           f"none of the {len(configs)} configs can be scored by the saved "
                           f"{meta['predictor']['name']}; the first: {reasons[0]}")
    if reasons and say:
        say(f"leaving out {len(reasons)} config(s) the saved {meta['predictor']['name']} cannot "
            f"score; the first: {reasons[0]}")
    return ok


def run_saved_evaluation(folder, configs: list[str], saved_dir: str, results_dir: str,
                         seed: int | None = None, on_result=None, sim=None,
                         say=None) -> list[dict]:
    """`forelen evaluate --from DIR`: score a saved predictor on each config without fitting;
    the same record `run_evaluation` writes (same metrics and key), its `protocol` saying it
    was loaded, and `saved_predictor` where from and the saved folder's own provenance."""
    meta = read_fitted(Path(saved_dir))
    fit_seed = meta["fit"]["seed"]
    if seed is not None and seed != fit_seed:
        raise ForelenError(f"--seed {seed}: {saved_dir} was fitted with seed {fit_seed}, and a "
                           f"loaded predictor is not fitted again; leave --seed out")
    seed = fit_seed
    configs = saved_configs(folder, configs, meta, saved_dir, say)
    t0 = time.perf_counter()
    pred, meta = load(saved_dir)
    load_s = time.perf_counter() - t0
    p, fitted = meta["predictor"], meta["fitted_on"]
    if say:
        say(f"evaluating saved {p['key']} ({saved_dir}, fitted on {fitted['dataset']['config']}, "
            f"seed {seed}) on {len(configs)} config(s), without fitting")
    records = []
    for config in configs:
        data = load_config(folder, config, fitted["columns"])
        result = evaluate_one(pred, data, seed, columns=fitted["columns"], fitted=True)
        result["timing"]["load_s"] = load_s
        same = dataset_fingerprint(data.entry) == fitted["dataset"]["fingerprint"]
        # a predictor fitted on another config (or another build of this one) is another
        # entry of the results folder, never confused with this config's own fit
        key = p["key"] if same else (f"{p['key']}+fit-{fitted['dataset']['config']}"
                                     if fitted["dataset"]["config"] != config
                                     else f"{p['key']}+fit-{fitted['dataset']['fingerprint'][:8]}")
        record = make_record(pred, p["origin"], key, p["non_default_params"], folder, data, seed,
                             result, references(data), scenario_for(data, sim or
                                                                    _default_sim(seed)))
        record["protocol"] |= {"loaded": True} | ({} if same else {
            "fit": f"train of {fitted['dataset']['config']} "
                   f"(fingerprint {fitted['dataset']['fingerprint'][:12]})",
            "select": f"validation of {fitted['dataset']['config']}"})
        record["saved_predictor"] = {
            "path": os.path.relpath(Path(saved_dir).resolve()), "key": p["key"],
            "state_sha256": meta["tensors"]["sha256"], "fitted_on": fitted, "fit": meta["fit"],
            "provenance": meta.get("provenance")}
        record["path"] = str(write_record(results_dir, record))
        records.append(record)
        if on_result:
            on_result(record)
    return records


def _default_sim(seed: int):
    return SimSettings(seed=seed)
