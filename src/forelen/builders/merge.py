"""`forelen merge OUT IN...`: join the folders of a sharded build into one dataset folder.

Each input is one job of `forelen build ... --num-shards K --shard-index I`. Merge refuses inputs
from different plans (fingerprint), an unfinished job, a chunk that no input holds or that two
inputs hold, and any shard whose sha256 differs from its manifest; only then are the shards copied
(atomically) and the manifest written, so a failed merge leaves OUT without the config.
"""

from __future__ import annotations

from forelen.builders.pipeline import finish_config
from forelen.compact import merged_form, same_form
from forelen.dataset import MANIFEST, DatasetFolder
from forelen.errors import ForelenError


def merge(out: str, inputs: list[str], say=print) -> dict[str, dict]:
    """Merge every config found in `inputs` into `out`; returns the merged manifest entries."""
    if len(inputs) < 1:
        raise ForelenError("forelen merge needs at least one input folder")
    folders = []
    for path in inputs:
        folder = DatasetFolder(path)
        if not folder.exists(MANIFEST):
            raise ForelenError(f"{path} is not a forelen dataset folder (no {MANIFEST})")
        if _key(folder) == _key(DatasetFolder(out)):
            raise ForelenError(f"merge into a folder other than its inputs ({out})")
        folders.append(folder)
    target = DatasetFolder(out)
    configs = sorted({c for f in folders for c in f.manifest()["configs"]})
    if not configs:
        raise ForelenError("the input folders hold no configs")
    plans = {config: _check(config, [(f, f.config(config)) for f in folders if f.config(config)],
                            target) for config in configs}
    return {config: _write(config, parts, target, say) for config, parts in plans.items()}


def _key(folder) -> str:
    return str(folder.root.resolve()) if folder.fs is None else folder.location.rstrip("/")


def _check(config: str, parts: list, target) -> list:
    """Every refusal happens here, before anything is written."""
    first = parts[0][1]
    for folder, entry in parts:
        shard = entry.get("shard")
        if shard is None:
            raise ForelenError(f"config {config!r} in {folder.location} was not built with "
                               "--num-shards; there is nothing to merge")
        if (entry["fingerprint"], shard["count"], shard["plan_chunks"]) != (
                first["fingerprint"], first["shard"]["count"], first["shard"]["plan_chunks"]):
            raise ForelenError(f"config {config!r} in {folder.location} comes from another build plan "
                               f"than in {parts[0][0].location} (settings, prompts or shard count "
                               "differ); merge only the jobs of one build command")
        if entry.get("status") != "complete":
            raise ForelenError(f"config {config!r} in {folder.location} is unfinished (shard "
                               f"{shard['index']}); rerun its build command to complete it")
        if not same_form(entry.get("form"), first.get("form")):
            raise ForelenError(f"config {config!r} in {folder.location} is in another form than in "
                               f"{parts[0][0].location} (full or compact, steps or layers kept); "
                               "merge folders of one form")
    owner: dict[str, tuple] = {}
    for folder, entry in parts:
        for name, shard_entry in entry["shards"].items():
            if name in owner:
                raise ForelenError(f"chunk {name} of {config!r} is in both {owner[name][0].location} "
                                   f"and {folder.location}; give each job's folder once")
            owner[name] = (folder, shard_entry)
    missing = [n for n in first["shard"]["plan_chunks"] if n not in owner]
    if missing:
        have = sorted(e["shard"]["index"] for _, e in parts)
        raise ForelenError(f"{len(missing)} chunk(s) of {config!r} are in none of the inputs "
                           f"(first: {missing[0]}); inputs hold shards {have} of "
                           f"{first['shard']['count']}")
    for name, (folder, shard_entry) in owner.items():
        if not folder.shard_ok(config, name, shard_entry):
            raise ForelenError(f"shard {folder.shard_path(config, name)} is missing or corrupt "
                               "(sha256 differs from its manifest); rebuild that job")
    if target.config(config):
        raise ForelenError(f"{target.location} already holds config {config!r}; merge into a new "
                           "folder")
    return [(name, folder, shard_entry) for name, (folder, shard_entry) in sorted(owner.items())]


def _write(config: str, parts: list, target, say) -> dict:
    import copy
    import hashlib

    sources = {}
    for name, folder, shard_entry in parts:
        data = folder.read_bytes(f"data/{config}/{name}")
        if hashlib.sha256(data).hexdigest() != shard_entry["sha256"]:
            raise ForelenError(f"shard {folder.shard_path(config, name)} changed during the merge")
        target.write_bytes(f"data/{config}/{name}", data)
        sources[folder.location] = folder.config(config)
    entries = list(sources.values())

    def record(m):
        entry = copy.deepcopy(entries[0])
        entry.pop("shard")
        entry.update(status="partial", shards={n: s for n, _, s in parts}, chunks=len(parts),
                     merged_from=[{"path": p, "shard": e["shard"]["index"]}
                                  for p, e in sorted(sources.items(),
                                                     key=lambda kv: kv[1]["shard"]["index"])])
        entry["timing"] = {key: sum(e["timing"].get(key, 0) for e in entries)
                           for key in entries[0]["timing"]}
        if entry.get("form"):  # compact job folders: the merged form names every job's shards
            entry["form"] = merged_form([e["form"] for e in entries])
        m["configs"][config] = entry
    target.update(record)
    merged = finish_config(target, config)
    say(f"merged {config}: {len(parts)} shards from {len(entries)} job folder(s) into {target.location}")
    return merged
