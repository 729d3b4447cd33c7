"""Builds on Ray (`forelen build --ray`), on a local cluster of 2 CPUs with the tiny float32 model:
two replicas give exactly the rows of a local build, a replica killed mid-build is restarted by
Ray and its unit redone without losing or duplicating a row, and a killed driver resumes."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import cli_env
from test_build import CONFIG, assert_same_rows, cli_args, opts, sorted_rows  # noqa: F401
from test_cli import assert_one_line_error, call_main

from forelen.builders.build import run_build
from forelen.dataset import DatasetFolder

ray = pytest.importorskip("ray", reason="Ray is an optional extra: "
                                       "pip install 'forelen[distributed]'")
psutil = pytest.importorskip("psutil")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    """One local cluster for the module (starting one takes seconds)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def plan(opts, tmp_path_factory):
    """Work units of eight sequences: several units, so both replicas get work."""
    return dataclasses.replace(opts, work_unit=8,
                               out=str(tmp_path_factory.mktemp("ray-local") / "ds"))


@pytest.fixture(scope="module")
def local(plan):
    entry = build_here(plan)
    return entry, sorted_rows(DatasetFolder(plan.out))


@pytest.fixture(scope="module")
def slow(plan, tmp_path_factory):
    """A plan whose units take seconds (160 tokens, four samples a prompt), so a test can stop a
    build between its first shard and its last even when the CPU is shared: with `plan`'s
    fraction-of-a-second units a whole build could finish between two polls."""
    return dataclasses.replace(plan, max_new_tokens=160, samples_per_prompt=4, work_unit=16,
                               batch_size=8, out=str(tmp_path_factory.mktemp("ray-slow") / "ds"))


@pytest.fixture(scope="module")
def slow_local(slow):
    entry = build_here(slow)
    return entry, sorted_rows(DatasetFolder(slow.out))


def build_here(opts):
    """A plan built in this process on one thread, like each replica: float32 kernels may round
    differently on another thread count (on an AVX2-only AMD EPYC, 2 threads against 1 changed
    the recorded hidden states' low bits)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_build(opts)
    finally:
        torch.set_num_threads(threads)


def test_two_replicas_equal_a_local_build(cluster, plan, local, tmp_path):
    """Shards written by the workers through a file:// URL; every column equal by uid."""
    out = f"file://{tmp_path / 'ds'}"
    entry = run_build(dataclasses.replace(plan, ray="", workers=2, out=out))
    ref_entry, ref_rows = local
    assert entry["status"] == "complete"
    assert entry["fingerprint"] == ref_entry["fingerprint"]  # a Ray build is the same plan
    assert sorted(entry["shards"]) == sorted(ref_entry["shards"])
    assert entry["ray"]["workers"] == 2 and entry["ray"]["threads_per_worker"] == 1
    assert entry["timing"]["wall_s"] > 0
    assert_same_rows(sorted_rows(DatasetFolder(out)), ref_rows)
    on_disk = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert on_disk["configs"][CONFIG]["status"] == "complete"
    assert not list((tmp_path / "ds").rglob(".tmp-*"))


def _replicas() -> list:
    return [p for p in psutil.process_iter(["cmdline"])
            if any("BuildWorker" in part for part in (p.info["cmdline"] or []))]


def test_a_killed_replica_is_restarted_and_its_unit_redone(cluster, slow, slow_local, tmp_path):
    """SIGKILL one replica as soon as the first shard lands: Ray restarts it, retries its unit."""
    ref = slow_local[1]
    out = tmp_path / "ray"
    killed: list[int] = []
    built = threading.Event()

    def killer():  # until the build returns, however slow a shared CPU makes it
        while not built.is_set() and not killed:
            shards = list((out / "data" / CONFIG).glob("*.parquet")) if out.exists() else []
            workers = _replicas()
            if shards and workers:
                os.kill(workers[0].pid, signal.SIGKILL)
                killed.append(workers[0].pid)
            time.sleep(0.01)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        entry = run_build(dataclasses.replace(slow, ray="", workers=2, out=str(out)))
    finally:
        built.set()
        thread.join()
    assert killed, "no replica was killed"
    assert entry["status"] == "complete"
    assert entry["ray"]["worker_restarts"] >= 1
    rows = sorted_rows(DatasetFolder(str(out)))
    uids = rows["uid"].to_pylist()
    assert len(uids) == len(set(uids))
    assert_same_rows(rows, ref)


def test_a_killed_driver_resumes(slow, slow_local, tmp_path):
    """The driver (with the local cluster it started) killed after its first shards: the same
    command resumes from the manifest and ends with the rows of a local build."""
    out = str(tmp_path / "ds")
    args = cli_args(slow, out) + ["--work-unit", str(slow.work_unit), "--ray", "--workers", "2"]
    proc = subprocess.Popen(args, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    manifest = Path(out) / "manifest.json"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        try:
            if json.loads(manifest.read_text())["configs"][CONFIG]["shards"]:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[0].decode()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    entry = json.loads(manifest.read_text())["configs"][CONFIG]
    assert entry["status"] == "partial" and 0 < len(entry["shards"]) < slow_local[0]["chunks"]
    rerun = subprocess.run(args, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming" in rerun.stdout + rerun.stderr
    assert_same_rows(sorted_rows(DatasetFolder(out)), slow_local[1])


def test_ray_options_fail_in_one_line(monkeypatch, capsys, plan, tmp_path):
    base = cli_args(plan, str(tmp_path / "ds"))[1:]
    code, out, err = call_main(monkeypatch, capsys, *base, "--workers", "2")
    assert "add --ray" in assert_one_line_error(code, out, err)
    code, out, err = call_main(monkeypatch, capsys, *base, "--ray", "--num-shards", "2")
    assert "use one" in assert_one_line_error(code, out, err)
    code, out, err = call_main(monkeypatch, capsys, *base, "--ray", "--workers", "64")
    assert "CPU" in assert_one_line_error(code, out, err)
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if the extra were missing
    code, out, err = call_main(monkeypatch, capsys, *base, "--ray")
    assert "forelen[distributed]" in assert_one_line_error(code, out, err)
    assert not (tmp_path / "ds").exists()
