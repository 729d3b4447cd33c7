"""The manifest and record contracts (`forelen.contracts`): published, kept, enforced."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import FORELEN, cli_env

from forelen import contracts
from forelen.dataset import DatasetFolder
from forelen.errors import ForelenError
from forelen.leaderboard.records import write_record
from forelen.leaderboard.release import load_records
from forelen.metrics import METRICS

ROOT = Path(__file__).resolve().parents[1]
RELEASE = ROOT / "releases" / "v0.1.0"


@pytest.mark.parametrize("kind", contracts.KINDS)
def test_the_published_schemas_are_the_ones_enforced(kind):
    """docs/schemas/ is what `forelen schema KIND` prints: regenerate it with that command."""
    published = json.loads((ROOT / "docs" / "schemas" / f"{kind}.schema.json").read_text())
    assert published == contracts.schema(kind)


def test_every_metric_of_the_schema_is_typed_in_the_record_contract():
    props = contracts.schema("record")["properties"]["metrics"]["properties"]
    for m in METRICS:
        assert props[m.key]["type"] == ["number", "null"]
        if m.ci:
            assert m.ci in props


def test_every_released_record_and_manifest_keeps_its_contract():
    records = load_records(RELEASE / "records")  # validates each one
    assert len(records) >= 40
    assert contracts.problems("manifest", json.loads(
        (ROOT / "reference" / "compact" / "cot256" / "manifest.json").read_text())) == []


def _record() -> dict:
    return json.loads(next((RELEASE / "records").glob("*/egtp.json")).read_text())


def test_a_broken_record_is_refused_on_write_and_nothing_is_written(tmp_path):
    bad = _record()
    bad["metrics"]["mae"] = "twelve"
    with pytest.raises(ForelenError, match=r"at metrics/mae: 'twelve' is not of type"):
        write_record(tmp_path, bad)
    assert not list(tmp_path.rglob("*.json"))
    write_record(tmp_path, _record())  # the same record, unbroken
    assert len(list(tmp_path.rglob("*.json"))) == 1


def test_a_broken_record_is_one_line_on_read(tmp_path):
    bad = _record()
    del bad["predictor"]["version"]
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "egtp.json").write_text(json.dumps(bad))
    with pytest.raises(ForelenError) as info:
        load_records(tmp_path)
    message = str(info.value)
    assert "egtp.json is not a valid forelen record: at predictor: 'version' is a required " \
           "property" in message and "\n" not in message


def test_a_broken_manifest_is_one_line_on_read_and_never_written(tmp_path):
    folder = DatasetFolder(tmp_path / "ds")

    def add(manifest):
        manifest["configs"]["m-cot"] = {"status": "partial", "shards": {
            "train-00000.parquet": {"rows": 3, "sha256": "0" * 64}}}

    folder.update(add)

    def corrupt(manifest):
        manifest["configs"]["m-cot"]["status"] = "finished"

    with pytest.raises(ForelenError, match=r"at configs/m-cot/status: 'finished' is not one of"):
        folder.update(corrupt)
    assert folder.manifest()["configs"]["m-cot"]["status"] == "partial"  # untouched on disk
    raw = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    raw["configs"]["m-cot"]["shards"]["train-00000.parquet"]["sha256"] = "not-a-hash"
    (tmp_path / "ds" / "manifest.json").write_text(json.dumps(raw))
    proc = subprocess.run([FORELEN, "evaluate", "--data", str(tmp_path / "ds"),
                           "--predictor", "constant-median"], capture_output=True, text=True,
                          env=cli_env())
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not a valid forelen manifest: at configs/m-cot/shards/" \
        "train-00000.parquet/sha256" in lines[0], proc.stderr


def test_the_schema_command_prints_and_checks(tmp_path):
    out = subprocess.run([FORELEN, "schema", "record"], capture_output=True, text=True,
                         env=cli_env())
    assert out.returncode == 0 and json.loads(out.stdout)["title"] == "forelen result record"
    good = next((RELEASE / "records").glob("*/egtp.json"))
    ok = subprocess.run([FORELEN, "schema", "record", "--check", str(good)], capture_output=True,
                        text=True, env=cli_env())
    assert ok.returncode == 0 and "a valid forelen record" in ok.stdout
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"record_version": 1}))
    no = subprocess.run([FORELEN, "schema", "record", "--check", str(bad)], capture_output=True,
                        text=True, env=cli_env())
    assert no.returncode == 2 and no.stderr.count("\n") == 1 and "required property" in no.stderr
