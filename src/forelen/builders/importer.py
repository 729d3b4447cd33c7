"""`forelen import SOURCE --model M`: responses that exist already, as forelen configs.

Serving logs (chat-completions JSONL), the public ForeLen release (CSV files in its own layout),
ShareGPT conversations, or any JSONL / CSV / Parquet table of prompts and responses. With features
(the default) the teacher-forced recorder runs over every (prompt, response) pair with the
generator model and fills the same schema v1 columns as a build; `--no-features` makes a
text-only config.

Everything is read, cast, tokenised and checked before anything is written: a row that cannot be
used is counted by reason, and the import refuses (one line) unless `--skip-invalid` is given.
Logged lengths are checked against a tokenizer only when the user names one (`--model` or
`--tokenizer`): disagreement on more than 5% of rows means it is probably not the generator's,
and the import refuses unless `--allow-length-mismatch`. The default model decides nothing
silently: where it counts lengths or computes features, the import says so, and the manifest and
the card record which tokenizer counted what. Then the work runs as a build's does: planned
chunks, one atomic shard each, a manifest entry that a rerun of the same command resumes from.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field

from forelen import models
from forelen.builders import template  # template.today(): tests pin the day
from forelen.builders import pipeline
from forelen.builders.build import config_name
from forelen.builders.engines import Engine, Generation, GenerationRequest
from forelen.builders.engines.entropy import entropy_kernel
from forelen.builders.pipeline import finish_config, partition_chunks, prepare_config, start_config
from forelen.builders.plan import partition_of
from forelen.builders.planning import Chunk, truncate_middle
from forelen.builders.runner import run_chunks
from forelen.builders.sources import responses
from forelen.builders.sources.responses import FORMATS
from forelen.builders.sources.sharegpt import TURNS
from forelen.builders.splits import SPLITS
from forelen.builders.template import check_date, render, render_messages, uses_date
from forelen.dataset import DatasetFolder
from forelen.errors import ForelenError
from forelen.models import load_model, load_tokenizer, pick_device, resolve_model, slugify

MISMATCH_LIMIT = 0.05  # above this share of rows, the model is not the generator
# A logged length and the re-tokenised response agree within max(1 token, 1%): EOS counted or
# not, and the odd non-canonical merge, are not a different tokenizer.
LENGTH_TOLERANCE = {"tokens": 1, "relative": 0.01}
PARTITION_ALIASES = {"train": "train", "validation": "validation", "test": "test",
                     "val": "validation", "valid": "validation", "dev": "validation"}
FINISH_ALIASES = {"stop": "stop", "eos": "stop", "end_turn": "stop", "stop_sequence": "stop",
                  "length": "length", "max_tokens": "length"}


@dataclass(frozen=True)
class ImportOptions:
    source: str
    model: str | None = None  # the generator; None: not named (the default model's tokenizer
    #                           counts what is not logged, and no logged length is checked)
    tokenizer: str | None = None  # text only: counts and checks lengths instead of --model's
    generator_name: str | None = None  # the generator's name when no --model can load it
    split: str | None = None  # the release's folders say it; sharegpt: chat; others need it
    format: str = "auto"
    turns: str | None = None  # sharegpt: "first" (default) or "all" replies of a conversation
    prompt_column: str | None = None
    response_column: str | None = None
    length_column: str | None = None
    response_ids_column: str | None = None
    group_column: str | None = None
    partition_column: str | None = None
    finish_column: str | None = None
    features: bool = True
    drop_text: bool = False  # no text, and no token ids that decode back to it
    keep_token_ids: bool = False  # with drop_text: keep response_token_ids (they expose the text)
    date: str | None = None  # templates' day for records whose log has none; None: today
    allow_length_mismatch: bool = False
    skip_invalid: bool = False
    layers: tuple[int, ...] = ()
    steps: int = 64
    egtp_first_k: int | None = None
    batch_size: int = 32  # rows per shard (the unit of resume)
    device: str = "auto"
    dtype: str = "auto"
    out: str = "forelen"
    overwrite: bool = False


@dataclass
class Row:
    group_id: str
    sample_index: int
    source: str
    source_id: str
    partition: str
    prompt: str  # as stored (rendered; a hash with --drop-text)
    prompt_ids: list[int]  # for the features only: never stored
    response: str
    response_ids: list[int]  # stored unless --drop-text (without --keep-token-ids)
    output_tokens: int
    finish_reason: str

    @property
    def uid(self) -> str:
        return f"{self.group_id}#{self.sample_index}"


@dataclass
class Plan:
    config: str
    split: str
    rows: list[Row]
    report: dict = field(default_factory=dict)
    chunks: list[Chunk] = field(default_factory=list)  # items: Rows
    date: str | None = None  # the templates' day for records whose log has none
    template_uses_date: bool = False
    resolved: dict = field(default_factory=dict)  # the manifest's `build`, once the model is known
    fingerprint: str = ""


def check_options(opts: ImportOptions) -> None:
    if opts.format not in FORMATS:
        raise ForelenError(f"--format must be one of {', '.join(FORMATS)}, got {opts.format!r}")
    if opts.split is not None:
        SPLITS.get(opts.split)
    for name in ("batch_size", "egtp_first_k"):
        value = getattr(opts, name)
        if value is not None and value <= 0:
            flag = "--shard-size" if name == "batch_size" else "--" + name.replace("_", "-")
            raise ForelenError(f"{flag} must be a positive integer, got {value}")
    if opts.steps < 0:
        raise ForelenError(f"--steps must be >= 0, got {opts.steps}")
    if opts.keep_token_ids and not opts.drop_text:
        raise ForelenError("--keep-token-ids goes with --drop-text; without it every column is "
                           "kept anyway")
    if opts.tokenizer and opts.features:
        raise ForelenError("--tokenizer is for text-only imports (--no-features); features are "
                           "computed by --model with its own tokenizer")

    if opts.turns is not None and opts.turns not in TURNS:
        raise ForelenError(f"--turns must be one of {', '.join(TURNS)}, got {opts.turns!r}")

    check_date(opts.date)


def stored_ids(opts: ImportOptions) -> bool:
    """Whether response_token_ids are stored: the model's public tokenizer decodes them back to
    the response, so --drop-text leaves them out unless the user keeps them."""
    return not opts.drop_text or opts.keep_token_ids


def run_import(opts: ImportOptions, console=None) -> list[dict]:
    """Import every config the source holds; returns their manifest entries."""
    say = console.print if console else print
    check_options(opts)
    resolved_model = resolve_model(opts.model or models.DEFAULT_MODEL)
    counter = resolve_model(opts.tokenizer) if opts.tokenizer else resolved_model
    path, found = responses.locate(opts.source)
    fmt = responses.detect(path) if opts.format == "auto" else opts.format
    if opts.turns is not None and fmt != "sharegpt":
        raise ForelenError(f"--turns picks the replies of ShareGPT conversations; a {fmt} source "
                           "has one response per row")
    split = opts.split or ("chat" if fmt == "sharegpt" else None)
    if fmt != "forelen-release" and split is None:
        raise ForelenError(f"--split is needed to import a {fmt} source (long, cot, rl or chat); "
                           "only the release's folders say their split")
    columns = {"prompt": opts.prompt_column, "response": opts.response_column,
               "length": opts.length_column, "ids": opts.response_ids_column,
               "group": opts.group_column, "partition": opts.partition_column,
               "finish": opts.finish_column}
    responses.check_columns(fmt, columns)
    parts = responses.read(path, fmt, split, columns, opts.turns or "first")
    folder = DatasetFolder(opts.out)
    tokenizer, model_cfg, revision = load_tokenizer(counter)
    context = getattr(model_cfg, "max_position_embeddings", None) or 1 << 20
    plans = []
    for part in parts:  # every check, for every part, before anything is written
        config = config_of(part, fmt, opts, resolved_model)
        existing = folder.config(config) if not opts.overwrite else None
        plan = plan_rows(part, config, tokenizer, context if opts.features else None, opts,
                         _date_of(opts, existing))
        plan.report.update(format=fmt, source=opts.source, found=found, files=part.files,
                           columns=part.columns, **part.report)
        plan.report["lengths"] = length_provenance(plan.report, opts, counter.spec)
        plans.append(plan)
        say(_summary(plan))
        if plan.report["lengths"]["counted"] and not (opts.model or opts.tokenizer):
            say(f"{plan.config}: {plan.report['lengths']['counted']} responses have no logged "
                f"length; counted with {counter.spec}'s tokenizer (the default): name the "
                "generator's with --tokenizer or --model")
    model = None
    if opts.features:
        device = pick_device(opts.device)
        default = "" if opts.model else " (the default --model; the generator is not named)"
        say(f"loading {resolved_model.spec}{default} on {device} for the features ...")
        model, _, revision = load_model(resolved_model, device, opts.dtype)
    if opts.drop_text and opts.keep_token_ids:
        say(f"--keep-token-ids: response_token_ids are stored, and {resolved_model.spec}'s "
            "tokenizer decodes them back to the response text")
    for plan in plans:
        plan.resolved = _resolved(plan, opts, resolved_model, counter, model_cfg, revision, model)
        plan.fingerprint = _fingerprint(plan.resolved, plan.rows)
    todo = [plan for plan in plans if not _kept(plan, folder, opts, say)]
    return [_write(plan, opts, folder, model, console) for plan in todo]


def config_of(part, fmt: str, opts: ImportOptions, resolved_model) -> str:
    """The release's generator folder; else the generator named (--generator-name or --model),
    and the source's own name when none is: the default model names no config."""
    if fmt == "forelen-release":
        return _slug(part.name)
    base = (slugify(opts.generator_name) if opts.generator_name else
            resolved_model.slug if opts.model else _slug(part.name))
    return config_name(base, part.split, opts.turns or "first")


def length_provenance(report: dict, opts: ImportOptions, counter: str) -> dict:
    """Where the targets come from: logged, or counted by which tokenizer, and whether logged
    lengths were checked against a tokenizer the user named."""
    counted = report["rows_used"] - report["logged_lengths"]
    named = opts.tokenizer or opts.model
    return {"logged": report["logged_lengths"], "counted": counted,
            "counted_with": counter if counted else None,
            "tokenizer": counter, "tokenizer_named": bool(named),
            "checked": bool(named) and report["logged_lengths"] > 0}


def _date_of(opts: ImportOptions, existing: dict | None) -> str:
    """The templates' day for records without a logged date: --date, else the partial
    import's (a rerun resumes), else today."""
    kept = ((existing or {}).get("build") or {}).get("date_string")
    return check_date(opts.date) or kept or template.today()


def _kept(plan: Plan, folder, opts: ImportOptions, say) -> bool:
    """A config this command finished before is kept (a rerun resumes config by config); one
    imported from other data or settings is refused before anything is written."""
    entry = folder.config(plan.config)
    if not entry or opts.overwrite:
        return False
    if entry.get("fingerprint") != plan.fingerprint:
        state = "already in" if entry.get("status") == "complete" else "partly imported into"
        raise ForelenError(f"config {plan.config!r} is {state} {folder.location} from other "
                           "data or settings; rerun the command that made it to resume, or pass "
                           "--overwrite to import it again")
    if entry.get("status") == "complete":
        say(f"{plan.config}: already imported into {folder.location} by this command; kept")
        return True
    return False


def _slug(name: str) -> str:
    return slugify(name.replace("_", "-"))


def _summary(plan: Plan) -> str:
    r = plan.report
    bad = ", ".join(f"{n} {why}" for why, n in sorted(r["unusable"].items())) or "none"
    mismatch = ("no logged lengths" if not r["logged_lengths"] else
                f"{r['logged_lengths']} logged lengths trusted (not checked: no --model or "
                "--tokenizer named)" if r["length_mismatch_rate"] is None else
                f"{r['length_mismatch_rate']:.1%} of logged lengths differ from the re-tokenised "
                "response")
    return (f"{plan.config}: {r['rows_read']} rows read, {len(plan.rows)} usable "
            f"({r['groups']} prompts); unusable: {bad}; {mismatch}")


# ------------------------------------------------------------------ casting, checking, grouping


def plan_rows(part, config: str, tokenizer, context: int | None, opts: ImportOptions,
              date: str | None = None) -> Plan:
    """Cast, render, tokenise and check every record; group, partition and chunk the rows.

    A record is rendered on the day its log gives (`Record.date`), else on `date`."""
    split = part.split
    marker = template_marker(tokenizer, date)
    unusable: Counter = Counter(part.unusable)  # records that yielded no row (conversations)
    first_bad: dict[str, str] = dict(part.first_unusable)
    check = bool(opts.model or opts.tokenizer)  # a tokenizer the user named, not the default
    kept = []  # (record, rendered prompt, logged length, finish, ids or None)
    counts = Counter()

    def reject(record, why: str) -> None:
        unusable[why] += 1
        first_bad.setdefault(why, record.where)

    if unusable and not opts.skip_invalid:  # records that yield no row: refused before tokenising
        _refuse_unusable(unusable, first_bad, len(part.records) + sum(unusable.values()), part)

    for rec in part.records:
        if rec.prompt is None or (isinstance(rec.prompt, str) and not rec.prompt.strip()):
            reject(rec, "no prompt")
            continue
        if rec.response is None or not isinstance(rec.response, str):
            reject(rec, "no response")
            continue
        length = _int_or_missing(rec.length)
        if length is False:
            reject(rec, "length not a whole number >= 0")
            continue
        ids = _ids(rec.ids)
        if ids is False:
            reject(rec, "response token ids unreadable")
            continue
        finish = _finish(rec.finish)
        if finish is False:
            reject(rec, "unknown finish_reason")
            continue
        partition = None
        if rec.partition not in (None, ""):
            partition = PARTITION_ALIASES.get(str(rec.partition).strip().lower())
            if partition is None:
                reject(rec, "unknown partition")
                continue
        rendered, how = render_prompt(tokenizer, rec.prompt, marker, rec.date or date)
        counts[how] += 1
        counts["dated"] += rec.date is not None
        kept.append((rec, rendered, length, finish, ids, partition))
    if kept:
        prompt_ids = tokenizer([k[1] for k in kept], add_special_tokens=False)["input_ids"]
        need = [i for i, k in enumerate(kept) if k[4] is None]
        encoded = tokenizer([kept[i][0].response for i in need],
                            add_special_tokens=False)["input_ids"] if need else []
        response_ids = [k[4] for k in kept]
        for i, ids in zip(need, encoded):
            response_ids[i] = ids
    rows_in, logged, mismatched, cut = [], 0, 0, 0
    for k, (rec, rendered, length, finish, _, partition) in enumerate(kept):
        p_ids, r_ids = list(prompt_ids[k]), list(response_ids[k])
        if context is not None and len(p_ids) + len(r_ids) > context:
            if len(r_ids) >= context:
                reject(rec, "response longer than the model's context")
                continue
            p_ids = truncate_middle(p_ids, context - len(r_ids))
            rendered = tokenizer.decode(p_ids)
            cut += 1
        if length is not None:
            logged += 1
            if check and abs(length - len(r_ids)) > max(LENGTH_TOLERANCE["tokens"],
                                                        LENGTH_TOLERANCE["relative"] * length):
                mismatched += 1
        target = length if length is not None else len(r_ids)
        rows_in.append((rec, rendered, p_ids, r_ids, target, finish or "stop", partition))
    read = len(part.records) + sum(part.unusable.values())
    if unusable and not opts.skip_invalid:
        _refuse_unusable(unusable, first_bad, read, part)
    rate = mismatched / logged if logged and check else None
    if rate is not None and rate > MISMATCH_LIMIT and not opts.allow_length_mismatch:
        named = opts.tokenizer or opts.model
        raise ForelenError(f"{rate:.0%} of {part.name}'s logged lengths differ from its responses "
                           f"re-tokenised with {named}: that is probably not the model that "
                           "generated them; name the generator with --model (or its tokenizer "
                           "with --tokenizer), or pass --allow-length-mismatch to import anyway")
    if not rows_in:
        raise ForelenError(f"no usable rows in {part.name}")
    rows, across = _group(rows_in, part.name, opts.drop_text, partition_of)
    report = {"rows_read": read, "rows_used": len(rows),
              "unusable": dict(unusable), "first_unusable": first_bad,
              "length_mismatch_rate": rate, "logged_lengths": logged,
              "length_tolerance": LENGTH_TOLERANCE, "prompts_rendered": counts["rendered"],
              "prompts_already_rendered": counts["kept"], "prompts_cut_to_context": cut,
              "prompts_dated_by_log": counts["dated"],
              "prompts_in_several_partitions": across,
              "groups": len({r.group_id for r in rows}),
              "partitions": ("given" if any(x[6] for x in rows_in) else
                             "hash of the conversation" if any(x[0].unit for x in rows_in) else
                             "hash of the group")}

    plan = Plan(config, split, rows, report, date=date, template_uses_date=uses_date(tokenizer))
    plan.chunks = plan_chunks(rows, opts.batch_size)
    return plan


def _refuse_unusable(unusable: Counter, first_bad: dict, read: int, part) -> None:
    why, n = unusable.most_common(1)[0]
    raise ForelenError(f"{sum(unusable.values())} of {read} rows of {part.name} "
                       f"cannot be used ({n} {why}, first at {first_bad[why]}); fix the "
                       "source, or pass --skip-invalid to import the rest (they are counted)")


def _group(rows_in, name: str, drop_text: bool, partition_of):
    """Identical prompts (or equal --group-column values) form a group; given partitions are
    kept, so a prompt found in two partitions becomes two groups (counted: that is leakage).
    Otherwise a group's partition is the hash of its unit: the conversation of its first row
    where the reader gives one (every turn of a conversation in one partition), else itself."""
    keys: dict[tuple, list] = {}
    for item in rows_in:
        rec, rendered = item[0], item[1]
        key = str(rec.group) if rec.group not in (None, "") else rendered
        keys.setdefault((key, item[6]), []).append(item)
    parts_of_key = Counter(k for k, _ in keys)
    across = sum(1 for n in parts_of_key.values() if n > 1)
    rows = []
    for (key, given), items in keys.items():
        rec = items[0][0]
        given_id = rec.group not in (None, "") and not drop_text  # a given id may be text
        base = (str(rec.group) if given_id else  # a given group id is kept
                f"{_slug(name)}:{hashlib.sha256(key.encode()).hexdigest()[:16]}")
        group_id = base + (f"-{given}" if parts_of_key[key] > 1 else "")
        partition = given or partition_of(f"{_slug(name)}:{rec.unit}" if rec.unit else group_id)
        for s, (rec, rendered, p_ids, r_ids, target, finish, _) in enumerate(items):
            rows.append(Row(group_id, s, f"import:{_slug(name)}", rec.where, partition,
                            _hashed(rendered) if drop_text else rendered, p_ids,
                            _hashed(rec.response) if drop_text else rec.response, r_ids,
                            int(target), finish))
    return rows, across


def _hashed(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def plan_chunks(rows: list[Row], batch_size: int) -> list[Chunk]:
    """Per partition, a group's rows together, groups by length, `batch_size` rows a chunk."""
    return [Chunk(name, items) for name, items in partition_chunks(
        rows, lambda r: r.partition, lambda r: (len(r.prompt_ids), r.group_id, r.sample_index),
        batch_size)]


def template_marker(tokenizer, date: str | None = None) -> str | None:
    """The text a prompt rendered with this chat template starts with (its first special token),
    or None when the tokenizer has no template."""
    if not getattr(tokenizer, "chat_template", None):
        return None

    head = render(tokenizer, "\x00", date).split("\x00")[0]
    specials = sorted(getattr(tokenizer, "all_special_tokens", []) +
                      list(getattr(tokenizer, "get_added_vocab", lambda: {})()), key=len,
                      reverse=True)
    text = head.lstrip()
    return next((s for s in specials if s and text.startswith(s)), None)


def render_prompt(tokenizer, prompt, marker: str | None,
                  date: str | None = None) -> tuple[str, str]:
    """(rendered prompt, "rendered" | "kept"): chat messages and plain prompts get the chat
    template as a build applies it, on `date`; a prompt that already starts with the template's
    marker was rendered by whoever logged it and is kept as it is."""
    if isinstance(prompt, list):
        if getattr(tokenizer, "chat_template", None):
            return render_messages(tokenizer, prompt, date), "rendered"
        return "\n".join(m["content"] for m in prompt), "rendered"
    text = str(prompt)
    if marker and text.lstrip().startswith(marker):
        return text, "kept"
    return render(tokenizer, text, date), "rendered"


def _int_or_missing(value):
    """None (no logged length), an int >= 0, or False (unusable)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        return False
    if not math.isfinite(number) or number < 0 or number != int(number):
        return False
    return int(number)


def _ids(value):
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        ids = json.loads(value) if isinstance(value, str) else list(value)
        return [int(t) for t in ids]
    except (ValueError, TypeError):
        return False


def _finish(value):
    if value in (None, ""):
        return None
    return FINISH_ALIASES.get(str(value).strip().lower(), False)


# ------------------------------------------------------------------ writing


def _resolved(plan: Plan, opts: ImportOptions, resolved_model, counter, model_cfg,
              revision: str, model) -> dict:
    """The manifest's `build`. `model` is the generator only where the user named one: the
    default model computes features (`features_model`) or counts tokens (`import.lengths`), and
    the generator is then `--generator-name`, or unknown."""
    from forelen.builders.recorder import BATCH_TOKENS, default_layers

    num_layers = model_cfg.num_hidden_layers
    layers = (sorted(set(opts.layers)) or default_layers(num_layers)) if opts.features else []
    if any(not 0 <= x <= num_layers for x in layers):
        raise ForelenError(f"--layer must lie in 0..{num_layers} for {resolved_model.spec}")
    location = resolved_model.hub_id or resolved_model.location
    generator = opts.generator_name or (opts.model and location) or "unknown"
    return {
        "origin": "imported", "split": plan.split,
        "model": opts.model and resolved_model.spec, "generator": generator,
        "model_slug": plan.config.removesuffix(f"-{plan.split}").removesuffix(
            f"-{plan.split}-all-turns"),
        "model_location": generator,
        # the revision loaded is the tokenizer's under --tokenizer, not the generator's
        "model_revision": revision if opts.model and not opts.tokenizer else None,
        "features_model": (f"{resolved_model.spec} ({revision})" if opts.features else None),
        "engine": "import",
        "sources": [opts.source], "source_mix": "imported",
        "samples_per_prompt": None, "temperature": None, "top_p": None, "max_new_tokens": None,
        "max_prompt_tokens": getattr(model_cfg, "max_position_embeddings", None),
        "seed": None, "recorded_layers": layers, "num_layers": num_layers,
        "hidden_size": model_cfg.hidden_size, "steps": opts.steps if opts.features else 0,
        "egtp_first_k": opts.egtp_first_k if opts.features else None,
        "batch_size": opts.batch_size, "features": opts.features, "drop_text": opts.drop_text,
        "response_token_ids": stored_ids(opts),
        "turns": opts.turns,
        # records with a logged date (`import.prompts_dated_by_log`) were rendered on that day
        "date_string": plan.date, "template_uses_date": plan.template_uses_date,
        "device": str(model.device) if model is not None else None,
        "dtype": str(model.dtype).removeprefix("torch.") if model is not None else None,
        "entropy": ("nats, temperature 1, full vocabulary, position-aligned (see schema); "
                    "teacher-forced over the logged response") if opts.features else None,
        "entropy_kernel": _entropy_kernel(model) if model is not None else None,
        "recorder_batch_tokens": BATCH_TOKENS if opts.features else None,
        "import": plan.report,
    }


def _entropy_kernel(model) -> str:
    return entropy_kernel(model.config.vocab_size, model.device.type)[1]


def _fingerprint(resolved: dict, rows: list[Row]) -> str:
    """The import's fingerprint (`pipeline.fingerprint`): settings and every row's ids, length
    and finish."""
    return pipeline.fingerprint(resolved, (
        f"{r.uid}\0{r.partition}\0{r.output_tokens}\0{r.finish_reason}\0"
        f"{','.join(map(str, r.prompt_ids))}\0{','.join(map(str, r.response_ids))}\n"
        for r in rows))


def _write(plan: Plan, opts: ImportOptions, folder, model, console) -> dict:
    """The plan's missing shards through the build's writer (`runner.run_chunks`), the logged
    responses standing in for an engine's; each chunk is a work unit of its own."""
    from forelen.builders.recorder import Recorder

    say = console.print if console else _plain
    resolved, fp = plan.resolved, plan.fingerprint
    done = prepare_config(folder, plan.config, say, fp, opts.overwrite)
    start_config(folder, plan.config, resolved, fp, done, len(plan.chunks), origin="imported",
                 licenses=["as the imported source's"])
    recorder = (Recorder(model, resolved["recorded_layers"], steps=opts.steps,
                         first_k=opts.egtp_first_k) if model is not None else None)
    run_chunks([[c] for c in plan.chunks], done, plan.config, resolved,
               LoggedResponses(plan.rows), recorder, Logged(plan.split, resolved, stored_ids(opts)),
               folder, console, verb="import")
    entry = finish_config(folder, plan.config)
    t = entry["timing"]
    rate = (f", features at {t['imported_tokens'] / t['record_s']:.0f} prompt+response tok/s"
            if recorder is not None and t["record_s"] > 0 else " (text only, no features)")
    say(f"[green]imported[/green] {plan.config} into {folder.location}: "
        f"{entry['stats']['rows']} rows from {entry['stats']['groups']} prompts{rate}")
    return entry


class LoggedResponses(Engine):
    """Stands in for an engine: hands over each row's logged response as its generation. Not
    registered: nothing builds with it."""

    def __init__(self, rows: list[Row]):
        self.by_uid = {r.uid: r for r in rows}

    def generate(self, requests, on_done=None):
        gens = [Generation(q.uid, tuple(self.by_uid[q.uid].response_ids),
                           self.by_uid[q.uid].finish_reason) for q in requests]
        for gen in gens if on_done else ():
            on_done(gen)
        return None if on_done else gens


class Logged:
    """An import's producer (`runner.Sampled` is a build's): a chunk's items are Rows, whose
    response, length and finish reason were logged; the recorder reads features over them."""

    def __init__(self, split: str, resolved: dict, keep_ids: bool = True):
        self.split, self.resolved, self.keep_ids = split, resolved, keep_ids

    def requests(self, chunk) -> list[GenerationRequest]:
        # nothing is sampled: no budget, temperature or seed
        return [GenerationRequest(r.uid, tuple(r.prompt_ids), None, None, None, None)
                for r in chunk.items]

    def rows(self, chunk, requests, gens) -> list[dict]:
        from forelen.builders.rows import sample_row

        return [sample_row(
            uid=r.uid, group_id=r.group_id, sample_index=r.sample_index, split=self.split,
            source=r.source, source_id=r.source_id, partition=r.partition,
            resolved=self.resolved, prompt=r.prompt, prompt_ids=r.prompt_ids,
            response=r.response, response_ids=r.response_ids if self.keep_ids else None,
            output_tokens=r.output_tokens, finish_reason=r.finish_reason) for r in chunk.items]

    def timing(self, requests, gens, waited_s: float) -> dict:
        return {"generate_s": 0.0, "generated_tokens": 0,
                "imported_tokens": sum(len(q.prompt_ids) + len(g.token_ids)
                                       for q, g in zip(requests, gens))}

    def tokens(self, gen) -> int:
        return len(gen.token_ids)


def _plain(message: str) -> None:
    """print, without the rich markup a console would render."""
    from rich.text import Text

    print(Text.from_markup(message).plain)
