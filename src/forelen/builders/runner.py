"""The work loop of a build: engine work units, features, one shard per planned chunk, progress.

The shard (a planned chunk) is the unit of resume; the work unit (consecutive chunks, up to
`work_unit` sequences) is the unit of engine work, so a continuous-batching engine keeps its slots
full across chunk boundaries and vLLM gets thousands of sequences per call. Units are cut from the
whole plan, never from what is left of it: a resumed build hands the engine exactly the units of an
uninterrupted one, and a unit interrupted half-way is run again whole (its finished shards are not
rewritten). Numerics then never depend on where a build was interrupted, and neither do the rows.
"""

from __future__ import annotations

import time

from forelen.builders.engines import GenerationRequest
from forelen.builders.plan import sample_seed, uid_of


def progress_bar(console):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), console=console, transient=False)


def plan_units(chunks: list, work_unit: int) -> list[list]:
    """Consecutive chunks, at most `work_unit` sequences a unit (at least one chunk)."""
    units: list[list] = []
    size = 0
    for chunk in chunks:
        if units and size + len(chunk.items) <= work_unit:
            units[-1].append(chunk)
            size += len(chunk.items)
        else:
            units.append([chunk])
            size = len(chunk.items)
    return units


def requests_of(chunk, resolved: dict) -> list:
    return [GenerationRequest(uid_of(p.group_id, s), tuple(p.prompt_ids), resolved["max_new_tokens"],
                              resolved["temperature"], resolved["top_p"],
                              sample_seed(resolved["seed"], uid_of(p.group_id, s)))
            for p, s in chunk.items]


class ShardWriter:
    """Collects a unit's generations per chunk and writes each chunk's shard once it is whole."""

    def __init__(self, config, resolved, engine, recorder, tokenizer, folder, done: set[str],
                 sink=None):
        self.config, self.resolved, self.engine = config, resolved, engine
        self.recorder, self.tokenizer, self.folder, self.done = recorder, tokenizer, folder, done
        # where a written shard is reported: the manifest (a local build) or the Ray driver
        self.sink = sink or (lambda shard: record_shard(folder, config, shard))
        self.mark = time.perf_counter()
        self.feature_mark = engine.feature_seconds()

    def start(self, unit) -> list:
        self.chunks = {c.name: c for c in unit}
        self.requests = {c.name: requests_of(c, self.resolved) for c in unit}
        self.owner = {r.uid: name for name, reqs in self.requests.items() for r in reqs}
        self.collected: dict[str, dict] = {name: {} for name in self.chunks}
        return [r for c in unit for r in self.requests[c.name]]

    def add(self, gen) -> None:
        name = self.owner[gen.uid]
        got = self.collected[name]
        got[gen.uid] = gen
        if len(got) == len(self.requests[name]):
            if name not in self.done:
                self._write(self.chunks[name], [got[r.uid] for r in self.requests[name]])
            del self.collected[name]

    def _write(self, chunk, gens) -> None:
        from forelen.builders.rows import build_table

        reqs = self.requests[chunk.name]
        t0 = time.perf_counter()
        if self.engine.records_features:
            recorded = [g.features for g in gens]
        else:
            recorded = self.recorder.record([r.prompt_ids for r in reqs], [g.token_ids for g in gens])
        t1 = time.perf_counter()
        r = self.resolved
        scalars = [_scalars(p, s, req, gen, r, self.tokenizer)
                   for (p, s), req, gen in zip(chunk.items, reqs, gens)]
        table = build_table(scalars, recorded, r["hidden_size"], r["recorded_layers"],
                            r.get("egtp_first_k"))
        entry = self.folder.write_shard(self.config, chunk.name, table)
        self.done.add(chunk.name)
        shard = {"name": chunk.name, "entry": entry, "generate_s": t0 - self.mark,
                 "record_s": t1 - t0,
                 "feature_s": self.engine.feature_seconds() - self.feature_mark,
                 "generated_tokens": sum(len(g.token_ids) for g in gens)}
        self.mark, self.feature_mark = time.perf_counter(), self.engine.feature_seconds()
        self.sink(shard)


def record_shard(folder, config: str, shard: dict) -> None:
    """Enter a written shard and its timing into the manifest (only ever by one process)."""
    def update(m):
        cfg = m["configs"][config]
        cfg["shards"][shard["name"]] = shard["entry"]
        timing = cfg["timing"]
        for key, value in shard.items():  # generate_s, record_s, feature_s, *_tokens
            if key not in ("name", "entry"):
                timing[key] = timing.get(key, 0) + value
    folder.update(update)


def run_chunks(units: list[list], done: dict, config: str, resolved: dict, engine, recorder,
               tokenizer, folder, console=None) -> None:
    """Run every work unit (of `plan_units`) holding a chunk not in `done`; write missing shards."""
    units = [u for u in units if any(c.name not in done for c in u)]
    total = sum(len(c.items) for u in units for c in u)
    writer = ShardWriter(config, resolved, engine, recorder, tokenizer, folder, set(done))
    tokens = 0
    started = time.perf_counter()
    with progress_bar(console) as progress:
        task = progress.add_task(f"build {config}", total=total, rate="")

        def advance(gen):
            nonlocal tokens
            tokens += len(gen.token_ids)
            writer.add(gen)
            rate = tokens / max(time.perf_counter() - started, 1e-9)
            progress.update(task, advance=1, rate=f"{rate:.1f} tok/s")

        for unit in units:
            engine.generate(writer.start(unit), on_done=advance)


def _scalars(p, sample_index: int, req, gen, resolved: dict, tokenizer) -> dict:
    from forelen.builders.rows import sample_row  # numpy: loaded when a build runs

    return sample_row(
        uid=req.uid, group_id=p.group_id, sample_index=sample_index, split=resolved["split"],
        source=p.source, source_id=p.source_id, partition=p.partition, resolved=resolved,
        prompt=p.prompt, prompt_ids=p.prompt_ids,
        response=tokenizer.decode(list(gen.token_ids), skip_special_tokens=False),
        response_ids=gen.token_ids, output_tokens=len(gen.token_ids),
        finish_reason=gen.finish_reason, temperature=req.temperature, top_p=req.top_p,
        max_new_tokens=req.max_new_tokens, seed=req.seed)
