"""The dataset folder: atomic writes, the locked manifest, shard hashes, the card."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest
import yaml

from forelen import dataset as ds
from forelen.card import config_stats, render_card, write_card
from forelen.dataset import DatasetFolder, atomic_write_bytes, partitions_present, sha256_file
from forelen.errors import ForelenError
from forelen.schema import SCHEMA_VERSION


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob(".tmp-*"))


def table(n: int = 4, partition: str = "train", offset: int = 0) -> pa.Table:
    return pa.table({
        "uid": [f"g{offset + i // 2}#{i % 2}" for i in range(n)],
        "group_id": [f"g{offset + i // 2}" for i in range(n)],
        "source": ["s"] * n,
        "partition": [partition] * n,
        "output_tokens": pa.array([3 * i + 1 for i in range(n)], pa.int32()),
        "prompt_tokens": pa.array([10 + i for i in range(n)], pa.int32()),
        "finish_reason": ["length" if i % 2 else "stop" for i in range(n)],
    })


def add_config(folder: DatasetFolder, config: str, shards: dict[str, pa.Table],
               status: str = "complete") -> None:
    entries = {name: folder.write_shard(config, name, t) for name, t in shards.items()}

    def change(m):
        m["configs"][config] = {"status": "partial", "shards": entries, "build": BUILD,
                                "licenses": ["MIT"]}
    folder.update(change)
    if status == "complete":
        stats = config_stats(folder, config)
        folder.update(lambda m: m["configs"][config].update(status="complete", stats=stats))


BUILD = {"model_location": "org/tiny", "model_revision": "abc", "split": "rl", "engine": "hf",
         "device": "cpu", "dtype": "float32", "sources": ["x.jsonl"], "samples_per_prompt": 2,
         "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8, "max_prompt_tokens": 100,
         "seed": 0, "recorded_layers": [1, 3], "num_layers": 3, "hidden_size": 32, "steps": 4}


# ---------------------------------------------------------------------------------------------
# atomic writes


def test_atomic_write_creates_parents_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "a" / "b" / "file.bin"
    atomic_write_bytes(path, b"hello")
    assert path.read_bytes() == b"hello"
    atomic_write_bytes(path, b"world")
    assert path.read_bytes() == b"world"
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.bin"]


def test_atomic_write_failure_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "file.bin"
    atomic_write_bytes(path, b"old")

    def boom(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(ds.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_atomic_write_interrupted_mid_write_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "file.bin"

    def interrupt(fd):
        raise KeyboardInterrupt
    monkeypatch.setattr(ds.os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, b"data")
    monkeypatch.undo()
    assert not path.exists()
    assert leftovers(tmp_path) == []


def test_atomic_write_honours_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640


def test_write_shard_is_atomic_and_hash_matches(tmp_path):
    folder = DatasetFolder(tmp_path)
    entry = folder.write_shard("cfg", "train-00000.parquet", table())
    path = folder.config_dir("cfg") / "train-00000.parquet"
    assert entry["rows"] == 4 and entry["bytes"] == path.stat().st_size
    assert entry["sha256"] == sha256_file(path)
    assert folder.shard_ok("cfg", "train-00000.parquet", entry)
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# manifest


def test_empty_folder_has_an_empty_manifest(tmp_path):
    m = DatasetFolder(tmp_path / "none").manifest()
    assert m["configs"] == {} and m["schema_version"] == SCHEMA_VERSION
    assert not (tmp_path / "none").exists()  # reading creates nothing


def test_update_writes_version_and_keeps_other_configs(tmp_path):
    folder = DatasetFolder(tmp_path)
    folder.update(lambda m: m["configs"].__setitem__("a", {"status": "partial"}))
    folder.update(lambda m: m["configs"].__setitem__("b", {"status": "complete"}))
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert set(m["configs"]) == {"a", "b"}
    assert m["schema_version"] == SCHEMA_VERSION and m["forelen_version"]
    assert folder.config("a") == {"status": "partial"}
    assert folder.config("zzz") is None
    assert leftovers(tmp_path) == []


def test_concurrent_updates_from_two_processes_keep_both_configs(tmp_path):
    script = textwrap.dedent("""
        import sys, time
        from forelen.dataset import DatasetFolder
        folder, name = DatasetFolder(sys.argv[1]), sys.argv[2]
        for i in range(25):
            def change(m, i=i):
                entry = m["configs"].setdefault(name, {"status": "partial", "shards": {}})
                time.sleep(0.002)  # widen the read-modify-write window
                entry["shards"][f"train-{i:05d}.parquet"] = {"rows": i, "sha256": "0" * 64}
            folder.update(change)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), name])
             for name in ("model-a-rl", "model-b-long")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    m = DatasetFolder(tmp_path).manifest()
    assert set(m["configs"]) == {"model-a-rl", "model-b-long"}
    for entry in m["configs"].values():
        assert len(entry["shards"]) == 25
    assert leftovers(tmp_path) == []


def test_schema_version_mismatch_is_a_forelen_error(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"format": "forelen-dataset", "schema_version": SCHEMA_VERSION + 1, "configs": {}}))
    folder = DatasetFolder(tmp_path)
    with pytest.raises(ForelenError, match=f"schema version {SCHEMA_VERSION + 1}"):
        folder.manifest()
    with pytest.raises(ForelenError):
        folder.update(lambda m: None)
    assert json.loads((tmp_path / "manifest.json").read_text())["schema_version"] == SCHEMA_VERSION + 1


def test_corrupt_manifest_is_a_forelen_error(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ForelenError, match="cannot read"):
        DatasetFolder(tmp_path).manifest()


# ---------------------------------------------------------------------------------------------
# reading shards


def test_read_concatenates_shards_and_filters_partitions(tmp_path):
    folder = DatasetFolder(tmp_path)
    add_config(folder, "cfg", {"train-00000.parquet": table(4, "train"),
                               "train-00001.parquet": table(2, "train", offset=10),
                               "test-00000.parquet": table(2, "test", offset=20)})
    full = folder.read("cfg")
    assert full.num_rows == 8
    assert folder.read("cfg", partition="train").num_rows == 6
    assert set(folder.read("cfg", partition="test")["partition"].to_pylist()) == {"test"}
    assert folder.read("cfg", partition="validation") is None
    assert folder.read("cfg", columns=["uid"]).column_names == ["uid"]


def test_read_detects_a_corrupt_shard(tmp_path):
    folder = DatasetFolder(tmp_path)
    add_config(folder, "cfg", {"train-00000.parquet": table(), "test-00000.parquet": table()})
    path = folder.config_dir("cfg") / "train-00000.parquet"
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid: mid + 4] = bytes(b ^ 0xFF for b in data[mid: mid + 4])
    path.write_bytes(bytes(data))
    with pytest.raises(ForelenError, match="train-00000.parquet is missing or corrupt"):
        folder.read("cfg")
    assert folder.read("cfg", partition="test").num_rows == 4  # the intact shard still reads


def test_read_detects_a_missing_shard(tmp_path):
    folder = DatasetFolder(tmp_path)
    add_config(folder, "cfg", {"train-00000.parquet": table()})
    (folder.config_dir("cfg") / "train-00000.parquet").unlink()
    with pytest.raises(ForelenError, match="missing or corrupt"):
        folder.read("cfg")


def test_read_unknown_config_lists_built_ones(tmp_path):
    folder = DatasetFolder(tmp_path)
    with pytest.raises(ForelenError, match="built: none"):
        folder.read("nope")
    add_config(folder, "tiny-rl", {"train-00000.parquet": table()})
    with pytest.raises(ForelenError, match="built: tiny-rl"):
        folder.read("nope")


def test_float16_survives_a_shard_roundtrip(tmp_path):
    import numpy as np

    folder = DatasetFolder(tmp_path)
    vec = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(6, dtype=np.float16)), 3)
    add_config(folder, "cfg", {"train-00000.parquet": pa.table({"v": vec})}, status="partial")
    t = folder.read("cfg")
    assert t.schema.field("v").type == pa.list_(pa.float16(), 3)


# ---------------------------------------------------------------------------------------------
# card


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_partitions_present_in_canonical_order():
    entry = {"shards": {"test-00000.parquet": {}, "train-00001.parquet": {}, "train-00000.parquet": {}}}
    assert partitions_present(entry) == ["train", "test"]
    assert partitions_present({}) == []


def test_card_front_matter_lists_complete_configs_with_their_partitions(tmp_path):
    folder = DatasetFolder(tmp_path)
    add_config(folder, "tiny-llama-rl", {"train-00000.parquet": table(4, "train"),
                                         "validation-00000.parquet": table(2, "validation"),
                                         "test-00000.parquet": table(2, "test")})
    add_config(folder, "tiny-llama-cot", {"test-00000.parquet": table(2, "test")})
    add_config(folder, "tiny-llama-long", {"train-00000.parquet": table()}, status="partial")
    write_card(folder)
    text = (tmp_path / "README.md").read_text()
    meta = front_matter(text)
    configs = {c["config_name"]: c["data_files"] for c in meta["configs"]}
    assert set(configs) == {"tiny-llama-rl", "tiny-llama-cot"}  # the partial one is not listed
    assert configs["tiny-llama-rl"] == [
        {"split": "train", "path": "data/tiny-llama-rl/train-*.parquet"},
        {"split": "validation", "path": "data/tiny-llama-rl/validation-*.parquet"},
        {"split": "test", "path": "data/tiny-llama-rl/test-*.parquet"},
    ]
    assert configs["tiny-llama-cot"] == [{"split": "test", "path": "data/tiny-llama-cot/test-*.parquet"}]
    assert "tiny-llama-cot" in text.split("---\n", 2)[2]  # the usage example names a config
    assert leftovers(tmp_path) == []


def test_card_of_an_empty_folder_is_valid_yaml(tmp_path):
    meta = front_matter(render_card(DatasetFolder(tmp_path)))
    assert not meta.get("configs")
    assert "output-length-prediction" in meta["tags"]


def test_config_stats_from_scalar_columns(tmp_path):
    folder = DatasetFolder(tmp_path)
    add_config(folder, "cfg", {"train-00000.parquet": table(4, "train"),
                               "test-00000.parquet": table(2, "test", offset=5)})
    s = config_stats(folder, "cfg")
    assert s["rows"] == 6 and s["groups"] == 3
    assert s["partition_rows"] == {"train": 4, "validation": 0, "test": 2}
    out = sorted([1, 4, 7, 10, 1, 4])
    assert s["output_tokens"]["max"] == max(out) and s["output_tokens"]["mean"] == round(sum(out) / 6, 1)
    assert s["truncation_rate"] == round(3 / 6, 4)
    assert s["sources"] == {"s": 6}
