"""Sharded builds (`--num-shards K --shard-index I`) and `forelen merge`, on the tiny float32 model:
three job folders merge into exactly the rows of one build; merge refuses mismatched plans, a
missing chunk, a chunk given twice and a corrupt shard, each with one line and exit 2."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
from test_build import CONFIG, assert_same_rows, opts, sorted_rows  # noqa: F401 (fixture)
from test_cli import assert_one_line_error, call_main

from forelen.builders.build import run_build
from forelen.builders.merge import merge
from forelen.dataset import DatasetFolder
from forelen.errors import ForelenError

SHARDS = 3


@pytest.fixture(scope="module")
def plan(opts, tmp_path_factory):
    """Small work units (two shards each) so that three jobs each get a share."""
    return dataclasses.replace(opts, work_unit=8,
                               out=str(tmp_path_factory.mktemp("merge-ref") / "ds"))


@pytest.fixture(scope="module")
def single(plan):
    entry = run_build(plan)
    return entry, sorted_rows(DatasetFolder(plan.out))


@pytest.fixture(scope="module")
def jobs(plan, tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs")
    folders = []
    for i in range(SHARDS):
        out = root / f"job{i}"
        run_build(dataclasses.replace(plan, out=str(out), num_shards=SHARDS, shard_index=i))
        folders.append(out)
    return folders


def test_jobs_split_the_plan_by_work_unit(single, jobs):
    entry, _ = single
    shares = [DatasetFolder(f).config(CONFIG) for f in jobs]
    assert all(s["status"] == "complete" and s["shard"]["count"] == SHARDS for s in shares)
    names = [n for s in shares for n in s["shards"]]
    assert sorted(names) == sorted(entry["shards"]) and len(set(names)) == len(names)
    assert all(s["shards"] for s in shares)
    assert {s["fingerprint"] for s in shares} == {entry["fingerprint"]}


def test_merged_jobs_equal_one_build(single, jobs, tmp_path):
    entry, rows = single
    merged = merge(str(tmp_path / "merged"), [str(f) for f in reversed(jobs)], say=lambda *_: None)
    out = merged[CONFIG]
    assert out["status"] == "complete" and out["chunks"] == entry["chunks"]
    assert "shard" not in out and [m["shard"] for m in out["merged_from"]] == [0, 1, 2]
    assert_same_rows(sorted_rows(DatasetFolder(tmp_path / "merged")), rows)
    assert out["stats"] == entry["stats"]


def test_merge_refusals_are_one_line(jobs, plan, tmp_path, monkeypatch, capsys):
    def refused(*inputs, expect: str):
        code, out, err = call_main(monkeypatch, capsys, "merge", str(tmp_path / "m"),
                                   *map(str, inputs))
        assert expect in assert_one_line_error(code, out, err)
        assert not (tmp_path / "m" / "manifest.json").exists()

    refused(*jobs[:2], expect="chunk(s) of 'tiny-llama-rl' are in none of the inputs")
    refused(jobs[0], jobs[0], jobs[1], jobs[2], expect="is in both")
    other = tmp_path / "other"
    run_build(dataclasses.replace(plan, out=str(other), num_shards=SHARDS, shard_index=2,
                                  max_new_tokens=plan.max_new_tokens + 1))
    refused(jobs[0], jobs[1], other, expect="comes from another build plan")
    bad = tmp_path / "bad"
    shutil.copytree(jobs[1], bad)
    victim = next((bad / "data" / CONFIG).iterdir())
    victim.write_bytes(victim.read_bytes()[:-8] + b"corrupt!")
    refused(jobs[0], bad, jobs[2], expect="is missing or corrupt")
    refused(tmp_path / "nowhere", expect="is not a forelen dataset folder")
    refused(plan.out, expect="was not built with --num-shards")


def test_shard_options_are_checked(plan, tmp_path):
    with pytest.raises(ForelenError, match="--shard-index must lie in 0..2"):
        run_build(dataclasses.replace(plan, out=str(tmp_path / "x"), num_shards=3, shard_index=3))
    with pytest.raises(ForelenError, match="exceeds the plan's"):
        run_build(dataclasses.replace(plan, out=str(tmp_path / "x"), num_shards=99))


def test_a_job_resumes_only_as_the_same_shard(jobs, plan, tmp_path):
    out = tmp_path / "job"
    shutil.copytree(jobs[0], out)
    folder = DatasetFolder(out)
    folder.update(lambda m: m["configs"][CONFIG].update(status="partial"))
    with pytest.raises(ForelenError, match="holds a partial build of shard 0 of 3, not shard 1"):
        run_build(dataclasses.replace(plan, out=str(out), num_shards=SHARDS, shard_index=1))


def test_compact_jobs_merge_into_the_compact_form_of_one_build(plan, single, jobs, tmp_path):
    """A build too long for one session runs as jobs; each job's compact form is what is kept
    (in git), and merging those equals compacting the one build: same shards, same source."""
    from forelen.compact import compact

    entry, _ = single
    small = []
    for i, job in enumerate(jobs):
        small.append(tmp_path / f"small{i}")
        compact(str(job), CONFIG, str(small[-1]), say=lambda *_: None)
    merged = merge(str(tmp_path / "merged"), [str(f) for f in small], say=lambda *_: None)[CONFIG]
    whole = compact(plan.out, CONFIG, str(tmp_path / "whole"), say=lambda *_: None)
    assert merged["status"] == "complete"
    assert {n: s["sha256"] for n, s in merged["shards"].items()} == {
        n: s["sha256"] for n, s in whole["shards"].items()}
    assert merged["form"] == whole["form"]
    assert merged["form"]["source_shards"] == {n: s["sha256"] for n, s in entry["shards"].items()}
    # a full job and a compact one do not merge
    with pytest.raises(ForelenError, match="another form"):
        merge(str(tmp_path / "mixed"), [str(jobs[0]), str(small[1]), str(small[2])],
              say=lambda *_: None)
    assert not (tmp_path / "mixed" / "manifest.json").exists()
