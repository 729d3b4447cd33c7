"""`forelen build` end to end on the tiny model: rows, partitions, shards, overwrite, configs, resume."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401
import pyarrow.parquet as pq
import pytest
from conftest import FORELEN, cli_env

from forelen.builders.build import BuildOptions, run_build
from forelen.builders.plan import partition_of, sample_seed, uid_of
from forelen.builders.planning import PlannedPrompt, plan_chunks, truncate_middle
from forelen.dataset import DatasetFolder, sha256_file
from forelen.errors import ForelenError

CONFIG = "tiny-llama-rl"
SAMPLES, MAX_NEW, BATCH, STEPS = 2, 12, 4, 8


@pytest.fixture(scope="module")
def opts(tiny_model_dir, prompts_file, tmp_path_factory) -> BuildOptions:
    return BuildOptions(split="rl", model=str(tiny_model_dir), sources=(str(prompts_file),),
                        samples_per_prompt=SAMPLES, max_new_tokens=MAX_NEW, batch_size=BATCH,
                        steps=STEPS, dtype="float32", device="cpu",
                        out=str(tmp_path_factory.mktemp("reference") / "ds"))


@pytest.fixture(scope="module")
def reference(opts):
    """An uninterrupted build: (folder, manifest entry, rows sorted by uid)."""
    entry = run_build(opts)
    folder = DatasetFolder(opts.out)
    return folder, entry, sorted_rows(folder)


def sorted_rows(folder: DatasetFolder, config: str = CONFIG) -> pa.Table:
    t = folder.read(config)
    return t.sort_by("uid")


def cli_args(o: BuildOptions, out: str) -> list[str]:
    args = [FORELEN, "build", "--split", o.split, "--model", o.model, "--out", out,
            "--samples-per-prompt", str(o.samples_per_prompt), "--max-new-tokens", str(o.max_new_tokens),
            "--shard-size", str(o.batch_size), "--steps", str(o.steps), "--dtype", o.dtype,
            "--device", o.device]
    for s in o.sources:
        args += ["--source", s]
    return args


def copy_folder(src: Path, dst: Path) -> DatasetFolder:
    shutil.copytree(src, dst)  # copy2: mtimes kept
    return DatasetFolder(dst)


def shard_state(folder: DatasetFolder, config: str) -> dict:
    return {p.name: (sha256_file(p), p.stat().st_mtime_ns)
            for p in sorted(folder.config_dir(config).iterdir())}


def assert_same_rows(a: pa.Table, b: pa.Table) -> None:
    assert a.schema == b.schema
    assert a.num_rows == b.num_rows
    assert a["uid"].to_pylist() == b["uid"].to_pylist()
    for name in a.column_names:
        assert a[name].equals(b[name]), f"column {name} differs"


# ---------------------------------------------------------------------------------------------
# pure planning helpers


def test_partition_of_is_stable_and_roughly_60_20_20():
    ids = [f"src:{i}" for i in range(6000)]
    parts = Counter(partition_of(g) for g in ids)
    assert set(parts) == {"train", "validation", "test"}
    assert abs(parts["train"] / 6000 - 0.6) < 0.03
    assert abs(parts["validation"] / 6000 - 0.2) < 0.03
    assert abs(parts["test"] / 6000 - 0.2) < 0.03
    assert [partition_of(g) for g in ids[:50]] == [partition_of(g) for g in ids[:50]]


def test_sample_seed_and_uid():
    assert uid_of("src:7", 3) == "src:7#3"
    a = sample_seed(0, "src:7#0")
    assert a == sample_seed(0, "src:7#0") and 0 <= a < 2**60
    assert len({sample_seed(s, f"src:7#{i}") for s in range(3) for i in range(3)}) == 9


def test_truncate_middle_keeps_head_and_tail():
    ids = list(range(10))
    assert truncate_middle(ids, 20) == ids
    assert truncate_middle(ids, 4) == [0, 1, 8, 9]
    assert truncate_middle(ids, 5) == [0, 1, 7, 8, 9]
    assert len(truncate_middle(ids, 1)) == 1


def test_plan_chunks_keeps_groups_whole_and_sorted_by_length():
    prompts = [PlannedPrompt(f"g{i}", "s", str(i), "p", [0] * (10 - i), partition_of(f"g{i}"), "MIT")
               for i in range(10)]
    chunks = plan_chunks(prompts, samples=3, batch_size=7)  # 2 groups of 3 samples per chunk
    seen = Counter()
    for c in chunks:
        part = c.name.split("-")[0]
        groups = {p.group_id for p, _ in c.items}
        assert len(groups) <= 2 and len(c.items) == 3 * len(groups)
        assert all(p.partition == part for p, _ in c.items)
        seen.update(p.group_id for p, _ in c.items)
    assert seen == {f"g{i}": 3 for i in range(10)}
    train = [p for c in chunks if c.name.startswith("train") for p, s in c.items if s == 0]
    assert [len(p.prompt_ids) for p in train] == sorted(len(p.prompt_ids) for p in train)
    assert len({c.name for c in chunks}) == len(chunks)
    # More samples than batch_size: one group per chunk.
    assert all(len({p.group_id for p, _ in c.items}) == 1 for c in plan_chunks(prompts, 8, 4))


# ---------------------------------------------------------------------------------------------
# a whole build


def test_build_rows(reference, opts, tiny_model):
    folder, entry, rows = reference
    _, tokenizer = tiny_model
    assert entry["status"] == "complete"
    assert rows.num_rows == 12 * SAMPLES == entry["stats"]["rows"]
    r = rows.to_pylist()
    for row in r:
        assert row["output_tokens"] == len(row["response_token_ids"])
        assert 0 <= row["output_tokens"] <= MAX_NEW
        assert row["finish_reason"] == ("length" if row["output_tokens"] == MAX_NEW else "stop")
        assert row["uid"] == uid_of(row["group_id"], row["sample_index"])
        assert row["group_id"] == f"{row['source']}:{row['source_id']}"
        assert row["source"] == "file:prompts.jsonl" and row["split"] == "rl"
        assert row["seed"] == sample_seed(opts.seed, row["uid"])
        assert (row["temperature"], row["top_p"], row["max_new_tokens"]) == (1.0, 1.0, MAX_NEW)
        assert row["model"] == str(Path(opts.model).resolve())
        assert row["prompt"].startswith("<|im_start|>user\n") and row["prompt"].endswith("assistant\n")
        assert row["prompt_tokens"] == len(tokenizer(row["prompt"], add_special_tokens=False)["input_ids"])
        assert row["response"] == tokenizer.decode(row["response_token_ids"])
        assert len(row["prompt_entropy"]) == row["prompt_tokens"]
        assert len(row["response_entropy"]) == row["output_tokens"]
        for layer in (1, 3):
            assert len(row[f"step_states_l{layer}"]) == min(STEPS, row["output_tokens"])
            assert len(row[f"egtp_l{layer}"]) == 32
    assert {row["source_id"] for row in r} == {f"p{i:02d}" for i in range(12)}
    assert {row["finish_reason"] for row in r} == {"stop", "length"}
    assert len({row["seed"] for row in r}) == len(r)
    # Samples of one prompt differ (sampling at temperature 1 with their own seeds).
    by_group = defaultdict(set)
    for row in r:
        by_group[row["group_id"]].add(tuple(row["response_token_ids"]))
    assert sum(len(v) > 1 for v in by_group.values()) >= 6


def test_build_partitions_and_shards(reference):
    folder, entry, rows = reference
    groups = defaultdict(set)
    for g, p in zip(rows["group_id"].to_pylist(), rows["partition"].to_pylist()):
        groups[g].add(p)
        assert p == partition_of(g)
    assert all(len(v) == 1 for v in groups.values())
    shards = sorted(folder.config_dir(CONFIG).iterdir())
    assert [p.name for p in shards] == sorted(entry["shards"])
    assert len(shards) == entry["chunks"] > 3
    shard_of_group = {}
    for path in shards:
        t = pq.read_table(path)
        assert 0 < t.num_rows <= BATCH
        assert set(t["partition"].to_pylist()) == {path.name.split("-")[0]}
        for g in set(t["group_id"].to_pylist()):
            assert g not in shard_of_group, "a group is split over shards"
            shard_of_group[g] = path.name
        assert entry["shards"][path.name]["sha256"] == sha256_file(path)
        assert entry["shards"][path.name]["rows"] == t.num_rows
    assert not list(folder.root.rglob(".tmp-*"))


def test_build_features_belong_to_their_rows(reference, tiny_model):
    """Stored features equal a fresh recorder pass over each row's own prompt + response."""
    from forelen.builders.recorder import Recorder

    folder, _, rows = reference
    model, tokenizer = tiny_model
    r = rows.to_pylist()
    prompts = [tokenizer(row["prompt"], add_special_tokens=False)["input_ids"] for row in r]
    recs = Recorder(model, [1, 3], steps=STEPS).record(prompts, [row["response_token_ids"] for row in r])
    for row, rec in zip(r, recs):
        np.testing.assert_allclose(row["prompt_entropy"], rec.prompt_entropy, rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(row["response_entropy"], rec.response_entropy, rtol=2e-3, atol=2e-3)
        for key, vec in rec.pooled.items():
            np.testing.assert_allclose(np.asarray(row[key], np.float32), vec, rtol=2e-3, atol=2e-3)
        for key, mat in rec.step_states.items():
            np.testing.assert_allclose(np.asarray(row[key], np.float32).reshape(mat.shape), mat,
                                       rtol=2e-3, atol=2e-3)


def test_build_manifest_and_card(reference, opts):
    import yaml

    folder, entry, _ = reference
    build = entry["build"]
    assert build["recorded_layers"] == [1, 3] and build["num_layers"] == 3
    assert build["hidden_size"] == 32 and build["dtype"] == "float32"
    assert build["samples_per_prompt"] == SAMPLES and build["max_new_tokens"] == MAX_NEW
    assert build["model_slug"] == "tiny-llama" and entry["licenses"] == ["user-provided"]
    assert folder.manifest()["configs"][CONFIG]["status"] == "complete"
    meta = yaml.safe_load((folder.root / "README.md").read_text().split("---\n")[1])
    assert [c["config_name"] for c in meta["configs"]] == [CONFIG]
    parts = {d["split"] for d in meta["configs"][0]["data_files"]}
    assert parts == set(folder.read(CONFIG)["partition"].to_pylist())


def test_load_dataset_reads_the_folder_with_float16_features(reference, tmp_path):
    import datasets

    from forelen.schema import features

    folder, entry, rows = reference
    ds = datasets.load_dataset(str(folder.root), CONFIG, cache_dir=str(tmp_path / "hf"))
    counts = Counter(rows["partition"].to_pylist())
    assert {k: v.num_rows for k, v in ds.items()} == dict(counts)
    feats = ds["train"].features
    assert feats == features(32, [1, 3])
    assert feats["egtp_l3"] == datasets.List(datasets.Value("float16"), length=32)
    assert feats["step_states_l1"] == datasets.List(datasets.List(datasets.Value("float16"), length=32))
    assert feats["prompt_entropy"] == datasets.List(datasets.Value("float16"))
    arrow = ds["train"].data.table  # read through Arrow, the vectors stay float16
    assert arrow.schema.field("egtp_l3").type == pa.list_(pa.float16(), 32)
    assert arrow.schema.field("step_states_l3").type == pa.list_(pa.list_(pa.float16(), 32))
    train = rows.filter(pa.compute.equal(rows["partition"], "train"))
    assert sorted(ds["train"]["uid"]) == train["uid"].to_pylist()


def test_rebuild_needs_overwrite(reference, opts, tmp_path):
    folder = copy_folder(Path(opts.out), tmp_path / "ds")
    before = shard_state(folder, CONFIG)
    again = dataclasses.replace(opts, out=str(folder.root))
    with pytest.raises(ForelenError, match="already built.*--overwrite"):
        run_build(again)
    assert shard_state(folder, CONFIG) == before
    entry = run_build(dataclasses.replace(again, overwrite=True))
    assert entry["status"] == "complete"
    assert_same_rows(sorted_rows(folder), reference[2])  # same options: same rows
    after = shard_state(folder, CONFIG)
    assert set(after) == set(before)
    assert all(after[n][1] != before[n][1] for n in after)  # rewritten


def test_second_config_leaves_the_first_untouched(reference, opts, tmp_path):
    folder = copy_folder(Path(opts.out), tmp_path / "ds")
    before = shard_state(folder, CONFIG)
    entry_before = folder.config(CONFIG)
    cot = run_build(dataclasses.replace(opts, split="cot", out=str(folder.root), limit=4,
                                        samples_per_prompt=1))
    assert cot["status"] == "complete" and cot["stats"]["rows"] == 4
    assert shard_state(folder, CONFIG) == before
    assert folder.config(CONFIG) == entry_before
    assert set(folder.manifest()["configs"]) == {CONFIG, "tiny-llama-cot"}
    rows = folder.read("tiny-llama-cot").to_pylist()
    assert {r["split"] for r in rows} == {"cot"}
    assert {(r["temperature"], r["top_p"]) for r in rows} == {(np.float32(0.6), np.float32(0.95))}
    card = (folder.root / "README.md").read_text()
    assert "config_name: tiny-llama-rl" in card and "config_name: tiny-llama-cot" in card


def test_bfloat16_build(opts, tmp_path):
    """`--dtype auto` picks bfloat16 on CPUs that have it; that path must produce finite features."""
    entry = run_build(dataclasses.replace(opts, dtype="bfloat16", limit=3, out=str(tmp_path / "ds")))
    assert entry["build"]["dtype"] == "bfloat16" and entry["stats"]["rows"] == 3 * SAMPLES
    t = DatasetFolder(tmp_path / "ds").read(CONFIG)
    for name in ("egtp_l3", "mean_l1", "prompt_entropy"):
        values = np.asarray(pa.compute.list_flatten(t[name]).to_numpy(zero_copy_only=False))
        assert values.dtype == np.float16 and np.isfinite(values).all() and values.size


# ---------------------------------------------------------------------------------------------
# resume


def interrupt_on_call(monkeypatch, n: int) -> list:
    calls = []
    original = DatasetFolder.write_shard

    def write_shard(self, config, name, table):
        calls.append(name)
        if len(calls) == n:
            raise KeyboardInterrupt
        return original(self, config, name, table)

    monkeypatch.setattr(DatasetFolder, "write_shard", write_shard)
    return calls


def test_resume_after_interrupt_gives_the_same_rows(reference, opts, tmp_path, monkeypatch):
    out = str(tmp_path / "ds")
    calls = interrupt_on_call(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run_build(dataclasses.replace(opts, out=out))
    monkeypatch.undo()
    folder = DatasetFolder(out)
    partial = folder.config(CONFIG)
    assert partial["status"] == "partial" and len(partial["shards"]) == 2
    assert sorted(partial["shards"]) == sorted(calls[:2])

    written = []
    original = DatasetFolder.write_shard
    monkeypatch.setattr(DatasetFolder, "write_shard",
                        lambda self, c, n, t: written.append(n) or original(self, c, n, t))
    entry = run_build(dataclasses.replace(opts, out=out))
    assert entry["status"] == "complete"
    assert len(written) == entry["chunks"] - 2 and not set(written) & set(partial["shards"])
    rows = sorted_rows(folder)
    assert_same_rows(rows, reference[2])
    assert len(set(rows["uid"].to_pylist())) == rows.num_rows
    assert not list(folder.root.rglob(".tmp-*"))


def test_resume_redoes_corrupt_shards_and_drops_strays(reference, opts, tmp_path, monkeypatch):
    out = str(tmp_path / "ds")
    interrupt_on_call(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        run_build(dataclasses.replace(opts, out=out))
    monkeypatch.undo()
    folder = DatasetFolder(out)
    done = sorted(folder.config(CONFIG)["shards"])
    victim = folder.config_dir(CONFIG) / done[0]
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    stray = folder.config_dir(CONFIG) / ".tmp-leftover"
    stray.write_bytes(b"partial shard")
    run_build(dataclasses.replace(opts, out=out))
    assert not stray.exists()
    assert_same_rows(sorted_rows(folder), reference[2])


def test_partial_build_with_other_settings_is_refused(reference, opts, tmp_path, monkeypatch):
    out = str(tmp_path / "ds")
    interrupt_on_call(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_build(dataclasses.replace(opts, out=out))
    monkeypatch.undo()
    other = dataclasses.replace(opts, out=out, max_new_tokens=MAX_NEW + 1)
    with pytest.raises(ForelenError, match="partial build with other settings"):
        run_build(other)
    entry = run_build(dataclasses.replace(other, overwrite=True))
    assert entry["status"] == "complete" and entry["build"]["max_new_tokens"] == MAX_NEW + 1


def _kill_after_first_shard(args, out: Path, timeout: float = 120.0) -> dict:
    proc = subprocess.Popen(args, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    manifest = out / "manifest.json"
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                cfg = json.loads(manifest.read_text())["configs"].get(CONFIG, {})
            except (OSError, ValueError):
                cfg = {}
            if cfg.get("shards"):
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, err.decode()[-2000:])
    return json.loads(manifest.read_text())["configs"][CONFIG]


def test_resume_after_sigkill_gives_the_same_rows(reference, opts, tmp_path):
    out = tmp_path / "ds"
    args = cli_args(opts, str(out))
    killed = _kill_after_first_shard(args, out)
    assert killed["status"] == "partial"
    assert 1 <= len(killed["shards"]) < killed["chunks"], "the build finished before the kill"
    done = subprocess.run(args, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr
    folder = DatasetFolder(out)
    rows = sorted_rows(folder)
    assert len(set(rows["uid"].to_pylist())) == rows.num_rows
    assert_same_rows(rows, reference[2])
    assert not list(out.rglob(".tmp-*"))


def test_engine_auto_is_hf_without_cuda_and_is_recorded(reference):
    _, entry, _ = reference
    assert entry["build"]["engine"] == "hf" and entry["engine_choice"] == "auto: no CUDA GPU"


def test_engine_auto_picks_vllm_on_cuda_where_installed(monkeypatch):
    import importlib.util

    from forelen.builders.planning import choose_engine

    assert choose_engine("hf-static", "cuda") == ("hf-static", "chosen with --engine")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert choose_engine("auto", "cuda:0")[0] == "hf"
    assert "vllm is not installed" in choose_engine("auto", "cuda:0")[1]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    assert choose_engine("auto", "cuda:0") == ("vllm", "auto: CUDA GPU and vllm installed")
    assert choose_engine("auto", "cpu")[0] == "hf"


def test_default_mix_is_the_papers_where_the_hub_serves_it(monkeypatch):
    from forelen.builders import planning
    from forelen.builders.splits import SPLITS
    from forelen.hub import HubUnreachable

    recipe = SPLITS.get("cot")
    said, asked = [], []

    def hub_up(specs, column, limit, seed, turns="first", say=None):
        asked.append(tuple(specs))
        return [f"prompt from {specs[0]}"]

    monkeypatch.setattr(planning, "load_prompts", hub_up)
    opts = BuildOptions(split="cot")
    assert planning.source_mix(opts, recipe, said.append) == (
        ["prompt from math500"], recipe.hub_sources, "paper (hub)")
    assert not said

    def hub_down(specs, column, limit, seed, turns="first", say=None):
        asked.append(tuple(specs))
        if specs == recipe.hub_sources:
            raise HubUnreachable("source 'math500' needs the Hugging Face hub")
        return ["packaged prompt"]

    monkeypatch.setattr(planning, "load_prompts", hub_down)
    assert planning.source_mix(opts, recipe, said.append) == (
        ["packaged prompt"], recipe.sources, "packaged (offline fallback)")
    assert len(said) == 1 and "building with the packaged offline mix (mmath-pkg" in said[0]
    given = dataclasses.replace(opts, sources=("x.jsonl",))
    assert planning.source_mix(given, recipe, said.append)[1:] == (("x.jsonl",), "--source")


def test_manifest_records_the_mix_used(reference):
    _, entry, _ = reference
    assert entry["build"]["source_mix"] == "--source"


def test_the_spec_and_the_run_options_split_every_build_option_and_the_spec_is_recorded(reference):
    """`BuildOptions` is a `BuildSpec` (what is built) and `RunOptions` (how): each option is
    in exactly one, and every spec field reaches the manifest's resolved build."""
    from forelen.builders.build import BuildSpec, RunOptions

    spec = {f.name for f in dataclasses.fields(BuildSpec)}
    run = {f.name for f in dataclasses.fields(RunOptions)}
    assert spec | run == {f.name for f in dataclasses.fields(BuildOptions)} and not spec & run
    _, entry, _ = reference
    recorded_as = {"date": "date_string", "layers": "recorded_layers"}
    # `turns` acts through the prompts (hashed line by line) and the config's name (`-all`)
    assert {recorded_as.get(name, name) for name in spec - {"turns"}} <= set(entry["build"])
