"""The chunk loop of a build: generate, record, write one shard, update the manifest, show progress."""

from __future__ import annotations

import time


def _progress(console):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), console=console, transient=False)


def run_chunks(chunks, config: str, resolved: dict, engine, recorder, tokenizer, folder,
               console=None) -> None:
    from forelen_bench.builders.build import sample_seed, uid_of
    from forelen_bench.builders.engines import GenerationRequest
    from forelen_bench.builders.rows import build_table

    total = sum(len(c.items) for c in chunks)
    tokens = 0
    started = time.perf_counter()
    with _progress(console) as progress:
        task = progress.add_task(f"build {config}", total=total, rate="")

        def advance(gen):
            nonlocal tokens
            tokens += len(gen.token_ids)
            rate = tokens / max(time.perf_counter() - started, 1e-9)
            progress.update(task, advance=1, rate=f"{rate:.1f} tok/s")

        for chunk in chunks:
            requests = [GenerationRequest(
                uid_of(p.group_id, s), tuple(p.prompt_ids), resolved["max_new_tokens"],
                resolved["temperature"], resolved["top_p"],
                sample_seed(resolved["seed"], uid_of(p.group_id, s))) for p, s in chunk.items]
            t0 = time.perf_counter()
            gens = engine.generate(requests, on_done=advance)
            t1 = time.perf_counter()
            recorded = recorder.record([r.prompt_ids for r in requests], [g.token_ids for g in gens])
            t2 = time.perf_counter()
            scalars = [_scalars(p, s, req, gen, resolved, tokenizer)
                       for (p, s), req, gen in zip(chunk.items, requests, gens)]
            table = build_table(scalars, recorded, resolved["hidden_size"], resolved["recorded_layers"],
                                resolved.get("egtp_first_k"))
            entry = folder.write_shard(config, chunk.name, table)
            n_tokens = sum(len(g.token_ids) for g in gens)

            def record(m, name=chunk.name, entry=entry, g=t1 - t0, r=t2 - t1, n=n_tokens):
                cfg = m["configs"][config]
                cfg["shards"][name] = entry
                timing = cfg["timing"]
                timing["generate_s"] += g
                timing["record_s"] += r
                timing["generated_tokens"] += n
            folder.update(record)


def _scalars(p, sample_index: int, req, gen, resolved: dict, tokenizer) -> dict:
    return {
        "uid": req.uid, "group_id": p.group_id, "sample_index": sample_index,
        "split": resolved["split"], "source": p.source, "source_id": p.source_id,
        "partition": p.partition, "model": resolved["model_location"],
        "model_revision": resolved["model_revision"], "prompt": p.prompt,
        "prompt_tokens": len(p.prompt_ids),
        "response": tokenizer.decode(list(gen.token_ids), skip_special_tokens=False),
        "response_token_ids": list(gen.token_ids), "output_tokens": len(gen.token_ids),
        "finish_reason": gen.finish_reason, "temperature": req.temperature, "top_p": req.top_p,
        "max_new_tokens": req.max_new_tokens, "seed": req.seed,
    }
