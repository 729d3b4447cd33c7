"""`forelen build`: prompts -> engine.generate -> recorder -> atomic parquet shards -> dataset folder.

The work is planned up front and deterministically (prompts, partitions, chunks, per-sample seeds),
so a build killed at any point resumes by skipping the chunks whose shards the manifest vouches for,
and the final rows equal those of an uninterrupted run.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from forelen.builders.distributed import run_ray_build
from forelen.builders.engines import ENGINES, BatchSettings, EngineSettings, HFSettings
from forelen.builders.engines.slots import KERNELS
from forelen.builders.pipeline import finish_config
from forelen.builders.planning import choose_engine, plan_build, source_mix, start_config
from forelen.builders.runner import Sampled, run_chunks
from forelen.builders.sources.sharegpt import TURNS
from forelen.builders.splits import SPLITS
from forelen.builders.template import check_date
from forelen.dataset import DatasetFolder
from forelen.errors import ForelenError
from forelen.models import load_model, pick_device, resolve_model

DEFAULT_OUT = "forelen"


@dataclass(frozen=True)
class BuildSpec:
    """What is built: the prompts, the generator and how it samples, what is recorded. Every
    field reaches the manifest's resolved `build` and so the fingerprint: two builds of equal
    specs (and equal run settings that shape the computation, below) write the same rows."""

    split: str
    model: str = "smollm2-135m"
    sources: tuple[str, ...] = ()  # empty: the recipe's paper mix, or its packaged mix offline
    prompt_column: str = "prompt"
    turns: str = "first"  # conversation sources: the first user turn, or every reply ("all")
    limit: int | None = None  # prompts (groups), over all sources
    samples_per_prompt: int | None = None  # None: the recipe's
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_prompt_tokens: int | None = None
    seed: int = 0
    date: str | None = None  # the day chat templates see; None: today, or the partial build's
    layers: tuple[int, ...] = ()  # empty: final layer and one at a third of the depth
    steps: int = EngineSettings.steps  # generated-token states kept per sample (PLP/TRAIL/TPV)
    egtp_first_k: int | None = None  # also pool EGTP over the first k prompt tokens only
    dtype: str = "auto"


@dataclass(frozen=True)
class RunOptions:
    """How and where a spec is built: the engine and its memory, the units of resume and of
    engine work, sharding, Ray, the output folder. The settings that shape the computation
    (float blocking: the engine's slots, kernel and prefill chunk; the shard size and work unit,
    which fix what is decoded together) are resolved into the manifest's `engine_settings` and
    `work_unit`, and so into the fingerprint; the rest (device choice, folder, Ray, retries)
    never change a row."""

    engine: str = "auto"  # vllm on a CUDA machine where vllm is installed, else hf
    batch_size: int = BatchSettings.batch_size  # sequences per shard (the unit of resume)
    slots: int = HFSettings.slots  # hf: sequences decoded together, at most
    kv_budget: float = HFSettings.kv_budget_gib  # hf: GiB of the slot KV cache
    attention: str = HFSettings.attention  # hf: decode attention kernel
    prefill_chunk: int = HFSettings.prefill_chunk  # hf: prompt tokens per prefill forward
    work_unit: int | None = None  # sequences per engine call; None: the engine's default
    num_shards: int = 1  # split the plan's work units over this many independent jobs ...
    shard_index: int = 0  # ... of which this is one; `forelen merge` joins their folders
    ray: str | None = None  # build on Ray: "" for ray.init()'s default, else a cluster address
    workers: int | None = None  # Ray: model replicas; None: one per GPU, else one per node
    max_retries: int = 3  # Ray: restarts of a lost worker, and retries of its work unit
    device: str = "auto"
    out: str = DEFAULT_OUT
    overwrite: bool = False
    skip_complete: bool = False  # a complete config is left as it is (scripted pipelines)


@dataclass(frozen=True)
class BuildOptions(RunOptions, BuildSpec):
    """A `BuildSpec` and its `RunOptions` in one flat record (what `forelen build` parses, and
    the constructor scripts call): `.spec` and `.run` give the two apart."""

    @property
    def spec(self) -> BuildSpec:
        return BuildSpec(**{f.name: getattr(self, f.name) for f in fields(BuildSpec)})

    @property
    def run(self) -> RunOptions:
        return RunOptions(**{f.name: getattr(self, f.name) for f in fields(RunOptions)})


# Option fields whose command-line flag names a unit the field name does not (the fields keep their
# names: they are keys of the resolved config, hence of the fingerprint).
FLAGS = {"batch_size": "--shard-size", "kv_budget": "--kv-budget-gib"}


def check_options(opts: BuildOptions) -> None:
    for name in ("limit", "samples_per_prompt", "max_new_tokens", "max_prompt_tokens", "batch_size",
                 "egtp_first_k", "slots", "prefill_chunk", "work_unit"):
        value = getattr(opts, name)
        if value is not None and value <= 0:
            raise ForelenError(f"{FLAGS.get(name, '--' + name.replace('_', '-'))} must be a positive "
                               f"integer, got {value}")
    if opts.steps < 0:
        raise ForelenError(f"--steps must be >= 0, got {opts.steps}")
    if opts.temperature is not None and opts.temperature < 0:
        raise ForelenError(f"--temperature must be >= 0, got {opts.temperature}")
    if opts.top_p is not None and not 0 < opts.top_p <= 1:
        raise ForelenError(f"--top-p must be in (0, 1], got {opts.top_p}")
    if opts.workers is not None and opts.workers <= 0:
        raise ForelenError(f"--workers must be a positive integer, got {opts.workers}")
    if opts.max_retries < 0:
        raise ForelenError(f"--max-retries must be >= 0, got {opts.max_retries}")
    if opts.ray is None and opts.workers is not None:
        raise ForelenError("--workers sets the replicas of a Ray build; add --ray")
    if opts.ray is not None and opts.num_shards > 1:
        raise ForelenError("--ray and --num-shards are two ways to spread one build; use one")
    if opts.num_shards < 1 or not 0 <= opts.shard_index < opts.num_shards:
        raise ForelenError(f"--shard-index must lie in 0..{opts.num_shards - 1} and --num-shards "
                           f"be >= 1, got {opts.shard_index} of {opts.num_shards}")
    if not opts.kv_budget > 0:
        raise ForelenError(f"--kv-budget-gib must be a positive number of GiB, got "
                           f"{opts.kv_budget}")

    check_date(opts.date)

    if opts.turns not in TURNS:
        raise ForelenError(f"--turns must be one of {', '.join(TURNS)}, got {opts.turns!r}")
    if opts.attention not in KERNELS:
        raise ForelenError(f"--attention must be one of {', '.join(KERNELS)}, got {opts.attention!r}")


def config_name(slug: str, split: str, turns: str = "first") -> str:
    """`<model>-<split>`; every reply of the conversations (`--turns all`) is a config apart."""
    return f"{slug}-{split}" + ("-all-turns" if turns == "all" else "")


def run_build(opts: BuildOptions, console=None) -> dict:
    """Build (or resume) one config; returns its manifest entry."""
    from forelen.builders.recorder import Recorder

    say = console.print if console else print
    check_options(opts)
    recipe = SPLITS.get(opts.split)
    if opts.engine != "auto":
        ENGINES.get(opts.engine)  # an unknown name fails before anything is loaded
    resolved_model = resolve_model(opts.model)
    config = config_name(resolved_model.slug, recipe.name, opts.turns)
    folder = DatasetFolder(opts.out)
    existing = folder.config(config)
    if existing and existing.get("status") == "complete" and not opts.overwrite:
        if opts.skip_complete:
            say(f"{config} is already built in {opts.out}; skipped")
            return existing
        raise ForelenError(f"config {config!r} is already built in {folder.location}; "
                           "pass --overwrite to rebuild it")
    if opts.ray is not None:
        return run_ray_build(opts, recipe, resolved_model, config, folder, console)
    mixed = source_mix(opts, recipe, say)
    device = pick_device(opts.device)
    engine_name, why = choose_engine(opts.engine, device)
    engine_cls = ENGINES.get(engine_name)
    engine_cls.check(device)
    say(f"engine {engine_name} ({why}); loading {resolved_model.spec} on {device} ...")
    model, tokenizer, revision = load_model(resolved_model, device, opts.dtype)
    plan = plan_build(opts, recipe, resolved_model, mixed, model.config, tokenizer, revision,
                      device, str(model.dtype).removeprefix("torch."), engine_name)
    engine = engine_cls.create(model, tokenizer, resolved_model, plan.settings)
    plan.resolved.update(engine_settings=engine.resolved(plan.settings, model),
                         work_unit=opts.work_unit or engine_cls.work_unit or opts.batch_size)
    units, done = start_config(opts, folder, config, plan, why, say)
    recorder = Recorder(model, plan.layers, steps=opts.steps, first_k=opts.egtp_first_k)

    run_chunks(units, done, config, plan.resolved, engine, recorder,
               Sampled(plan.resolved, tokenizer), folder, console)
    return finish_config(folder, config)


__all__ = ["BuildOptions", "run_build"]
