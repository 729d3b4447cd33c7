"""`forelen build --ray [ADDRESS]`: the same build, its work units run by model replicas on Ray.

Ray actors, not Ray Data. A build's unit of work is a planned work unit: consecutive chunks that
one engine runs whole, so that continuous batching sees exactly the sequences of a local build and
the rows do not depend on where the work ran. Ray Data's `map_batches` re-blocks rows as it pleases
and owns the scheduling and the output, whereas a build needs (1) whole units on one replica,
(2) each chunk's shard written once, atomically, under its planned name, and (3) the driver alone
entering finished chunks in the manifest, which is what resume reads. An actor per replica loads
the model once (`__init__`), `run` takes one unit and returns the entries of the shards it wrote,
and the driver hands the next unit to whichever replica is idle.

Faults are Ray's own: actors are created with `max_restarts` and `max_task_retries`, so a replica
whose process is killed (or whose node is lost) is restarted, reloads the model, and the unit it
was running is retried. Its shards carry planned names and are written by atomic replace, so a
retry overwrites rather than duplicates, and the driver enters each chunk once. A killed driver
takes its actors with it (they are owned by the driver's job); the same command then resumes from
the manifest like a local build, and shards written but never entered are removed and redone.
"""

from __future__ import annotations

import os
import time
from collections import deque
from pathlib import Path

from forelen.builders import pipeline
from forelen.builders.engines import ENGINES
from forelen.builders.planning import choose_engine, plan_build, source_mix, start_config
from forelen.builders.runner import Sampled, ShardWriter, progress_bar, record_shard
from forelen.dataset import DatasetFolder
from forelen.errors import ForelenError
from forelen.models import load_model, load_tokenizer

EXTRA_HINT = "pip install 'forelen[distributed]'"


def import_ray():
    try:
        import ray
    except ImportError:
        raise ForelenError(f"--ray needs Ray, which is not installed: {EXTRA_HINT}") from None
    return ray


def connect(ray, address: str) -> bool:
    """ray.init() with its default (RAY_ADDRESS, else a new local cluster) for an empty address,
    else connect to `address`. Returns whether this call started Ray (and so must shut it down)."""
    if ray.is_initialized():
        return False
    quiet = {"logging_level": "ERROR", "log_to_driver": False}
    try:
        if address or os.environ.get("RAY_ADDRESS"):
            ray.init(address=address or None, **quiet)
        else:
            ray.init(include_dashboard=False, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or os.environ.get("RAY_ADDRESS") or "a local cluster"
        raise ForelenError(f"cannot start or reach Ray at {where}: "
                           f"{str(exc).strip().splitlines()[0]}") from None
    return True


class BuildWorker:
    """One model replica (a Ray actor): loads the model once, runs work units, writes shards."""

    def __init__(self, opts, resolved_model, engine_name: str, settings, device: str,
                 threads: int, location: str):
        import torch

        from forelen.builders.recorder import Recorder

        if device == "cpu":
            torch.set_num_threads(threads)
        self.device, self.settings = device, settings
        self.model, self.tokenizer, self.revision = load_model(resolved_model, device, opts.dtype)
        self.engine = ENGINES.get(engine_name).create(self.model, self.tokenizer, resolved_model,
                                                      settings)
        self.recorder = Recorder(self.model, list(settings.layers), steps=settings.steps,
                                 first_k=settings.first_k)
        self.folder = DatasetFolder(location)

    def describe(self) -> dict:
        import torch

        return {"pid": os.getpid(), "device": self.device, "revision": self.revision,
                "dtype": str(self.model.dtype).removeprefix("torch."),
                "engine_settings": self.engine.resolved(self.settings, self.model),
                "threads": torch.get_num_threads()}

    def run(self, config: str, resolved: dict, unit: list, done: list[str]) -> dict:
        """Generate one work unit and write its chunks' shards; return their entries."""
        shards: list[dict] = []
        t0 = time.perf_counter()
        writer = ShardWriter(config, resolved, self.engine, self.recorder,
                             Sampled(resolved, self.tokenizer), self.folder, set(done),
                             sink=shards.append)
        self.engine.generate(writer.start(unit), on_done=writer.add)
        return {"pid": os.getpid(), "busy_s": time.perf_counter() - t0, "shards": shards}


def replicas(ray, opts) -> tuple[str, int, int]:
    """(device, workers, threads per worker) from the cluster's resources and the options."""
    res = ray.cluster_resources()
    gpus, cpus = int(res.get("GPU", 0)), int(res.get("CPU", 0))
    if opts.device.startswith("cuda") and not gpus:
        raise ForelenError(f"--device {opts.device}: the Ray cluster has no GPU")
    device = "cuda" if gpus and opts.device in ("auto", "cuda") else "cpu"
    if opts.device not in ("auto", "cpu", "cuda"):
        raise ForelenError("a Ray build places one replica per GPU; use --device auto, cpu or cuda")
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    workers = opts.workers or (gpus if device == "cuda" else max(1, nodes))
    if device == "cuda":
        if workers > gpus:
            raise ForelenError(f"--workers {workers}: the Ray cluster has {gpus} GPU(s), one per "
                               "replica")
        return device, workers, 1
    if workers > cpus:
        raise ForelenError(f"--workers {workers}: the Ray cluster has {cpus} CPU(s), at least one "
                           "per replica")
    return device, workers, max(1, cpus // workers)


def run_ray_build(opts, recipe, resolved_model, config: str, folder, console=None) -> dict:
    say = console.print if console else print
    ray = import_ray()
    started = connect(ray, opts.ray)
    try:
        return _build(ray, opts, recipe, resolved_model, config, folder, console, say)
    finally:
        if started:
            ray.shutdown()


def _build(ray, opts, recipe, resolved_model, config, folder, console, say) -> dict:
    device, n_workers, threads = replicas(ray, opts)
    mixed = source_mix(opts, recipe, say)
    engine_name, why = choose_engine(opts.engine, device)
    engine_cls = ENGINES.get(engine_name)
    engine_cls.check(device)
    tokenizer, model_cfg, revision = load_tokenizer(resolved_model)
    plan = plan_build(opts, recipe, resolved_model, mixed, model_cfg, tokenizer, revision, device,
                      "", engine_name)
    location = folder.location if folder.fs is not None else str(Path(folder.root).resolve())
    say(f"engine {engine_name} ({why}); starting {n_workers} Ray worker(s) on {device}"
        + (f", {threads} thread(s) each" if device == "cpu" else "")
        + f"; each loads {resolved_model.spec} ...")
    t0 = time.perf_counter()
    actor_cls = ray.remote(BuildWorker).options(
        num_cpus=threads if device == "cpu" else 1, num_gpus=1 if device == "cuda" else 0,
        max_restarts=opts.max_retries, max_task_retries=opts.max_retries)
    actors = [actor_cls.remote(opts, resolved_model, engine_name, plan.settings, device, threads,
                               location) for _ in range(n_workers)]
    described = _get(ray, [a.describe.remote() for a in actors], "starting a worker")
    first = described[0]
    for d in described[1:]:
        if (d["dtype"], d["engine_settings"]) != (first["dtype"], first["engine_settings"]):
            raise ForelenError("the Ray workers disagree on the model's dtype or the engine's "
                               f"settings ({first['dtype']}, {first['engine_settings']} vs "
                               f"{d['dtype']}, {d['engine_settings']}); pass --dtype and --slots "
                               "so every replica computes the same way")
    startup_s = time.perf_counter() - t0
    plan.resolved.update(dtype=first["dtype"], engine_settings=first["engine_settings"],
                         work_unit=opts.work_unit or engine_cls.work_unit or opts.batch_size)
    units, done = start_config(opts, folder, config, plan, why, say)
    todo = [u for u in units if any(c.name not in done for c in u)]
    if 0 < len(todo) < n_workers:
        say(f"note: {len(todo)} work unit(s) for {n_workers} workers; a smaller --work-unit "
            "spreads the build over all of them (and changes the plan's fingerprint)")
    pids = {i: {d["pid"]} for i, d in enumerate(described)}
    wall_s, busy_s = _dispatch(ray, actors, todo, done, config, plan.resolved, folder, console,
                               pids)

    def record(m):
        entry = m["configs"][config]
        entry["ray"] = {"address": opts.ray or os.environ.get("RAY_ADDRESS") or "local",
                        "workers": n_workers, "device": device, "units_run": len(todo),
                        "threads_per_worker": first["threads"] if device == "cpu" else None,
                        "worker_restarts": sum(len(p) - 1 for p in pids.values())}
        timing = entry["timing"]
        timing["wall_s"] = timing.get("wall_s", 0.0) + wall_s  # the driver's dispatch loop
        timing["busy_s"] = timing.get("busy_s", 0.0) + busy_s  # replicas inside `run`, summed
        timing["ray_startup_s"] = timing.get("ray_startup_s", 0.0) + startup_s
    folder.update(record)
    return pipeline.finish_config(folder, config)


def _dispatch(ray, actors, units, done, config, resolved, folder, console, pids):
    """Hand each unit to an idle replica; enter the shards each returns.

    Returns (wall seconds of the loop, seconds the replicas spent inside `run`)."""
    queue, idle, pending = deque(units), list(range(len(actors))), {}
    total = sum(len(c.items) for u in units for c in u)
    tokens, busy, started = 0, 0.0, time.perf_counter()
    with progress_bar(console) as progress:
        task = progress.add_task(f"build {config} on Ray", total=total, rate="")
        while queue or pending:
            while queue and idle:
                i, unit = idle.pop(), queue.popleft()
                ref = actors[i].run.remote(config, resolved, unit, sorted(done))
                pending[ref] = (i, unit)
            ready, _ = ray.wait(list(pending), num_returns=1)
            i, unit = pending.pop(ready[0])
            out = _get(ray, ready[0], f"work unit {unit[0].name}..{unit[-1].name}")
            pids[i].add(out["pid"])
            busy += out["busy_s"]
            for shard in out["shards"]:
                if shard["name"] not in done:
                    record_shard(folder, config, shard)
                    done[shard["name"]] = shard["entry"]
                    tokens += shard["generated_tokens"]
            idle.append(i)
            rate = tokens / max(time.perf_counter() - started, 1e-9)
            progress.update(task, advance=sum(len(c.items) for c in unit),
                            rate=f"{rate:.1f} tok/s")
    return time.perf_counter() - started, busy


def _get(ray, refs, what: str):
    """ray.get, with a lost replica or a failure inside one turned into one clear line."""
    from ray.exceptions import RayActorError, RayTaskError

    try:
        return ray.get(refs)
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, ForelenError):
            raise ForelenError(str(cause)) from None
        detail = f"{type(cause).__name__}: {cause}" if cause else str(exc).splitlines()[0]
        raise ForelenError(f"a Ray worker failed while {what}: {detail.splitlines()[0]}") from None
    except RayActorError as exc:
        raise ForelenError(f"a Ray worker was lost while {what}, and Ray's retries are spent "
                           f"({str(exc).strip().splitlines()[0]}); rerun the same command to "
                           "resume, or raise --max-retries") from None
