"""One plan through every way forelen runs it: the local executor, sharded jobs merged, Ray
replicas (where the extra is installed), and the import producer fed the local build's own
responses. The executors give the same rows, byte for byte on one machine; the import gives the
same rows and lengths, and features within float16 storage of the generated ones."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from test_build import CONFIG, assert_same_rows, opts, sorted_rows  # noqa: F401 (fixture)
from test_import import assert_features_close, export, import_opts

from forelen.builders.build import run_build
from forelen.builders.importer import run_import
from forelen.builders.merge import merge
from forelen.dataset import DatasetFolder

pytestmark = pytest.mark.slow

JOBS = 2


@pytest.fixture(scope="module")
def plan(opts, tmp_path_factory):
    """Work units of eight sequences: several units, so every executor splits the plan."""
    return dataclasses.replace(opts, work_unit=8, out=str(tmp_path_factory.mktemp("one") / "ds"))


@contextlib.contextmanager
def one_thread():
    """Every executor computes on one thread, as each Ray replica does: float32 kernels may round
    differently on another thread count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def local(plan):
    with one_thread():
        entry = run_build(plan)
    return entry, sorted_rows(DatasetFolder(plan.out))


def sharded(plan, root):
    jobs = []
    for i in range(JOBS):
        out = root / f"job{i}"
        with one_thread():
            run_build(dataclasses.replace(plan, out=str(out), num_shards=JOBS, shard_index=i))
        jobs.append(str(out))
    merge(str(root / "merged"), jobs, say=lambda *_: None)
    return root / "merged"


def ray_replicas(plan, root):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'forelen[distributed]'")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        run_build(dataclasses.replace(plan, ray="", workers=2, out=str(root / "ds")))
    finally:
        ray.shutdown()
    return root / "ds"


@pytest.mark.parametrize("executor", [sharded, ray_replicas], ids=["sharded", "ray"])
def test_every_executor_gives_the_local_rows(plan, local, executor, tmp_path):
    entry, rows = local
    folder = DatasetFolder(executor(plan, tmp_path))
    got = folder.config(CONFIG)
    assert got["status"] == "complete" and got["fingerprint"] == entry["fingerprint"]
    assert sorted(got["shards"]) == sorted(entry["shards"])
    assert_same_rows(sorted_rows(folder), rows)


def test_the_import_producer_gives_the_generated_rows(plan, local, tiny_model_dir, tmp_path):
    """The local build's prompts, responses and token ids imported: the same rows and lengths,
    features recomputed by the recorder's pass within float16 storage of those recorded while
    generating (`assert_features_close`)."""
    _, built = local
    source = tmp_path / "export.jsonl"
    export(plan.out, source)
    run_import(import_opts(source, tiny_model_dir, tmp_path / "ds", split="rl"))
    got = sorted_rows(DatasetFolder(tmp_path / "ds"))
    assert got["uid"].to_pylist() == built["uid"].to_pylist()
    for name in ("output_tokens", "response_token_ids", "finish_reason", "partition", "group_id",
                 "prompt", "prompt_tokens"):
        assert got[name].to_pylist() == built[name].to_pylist(), name
    assert_features_close(built, got)
