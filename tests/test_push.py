"""Publishing to the hub (src/forelen/builders/push.py: datasets; src/forelen/leaderboard/push.py: releases), tested up to
the HfApi boundary with a fake HfApi."""

from __future__ import annotations

import sys
from pathlib import Path

import huggingface_hub
import pytest
from leaderboard_records import CONFIGS, make_dataset, write_results

from forelen import cli
from forelen.builders import push as dataset_push
from forelen.errors import ForelenError
from forelen.leaderboard import push
from forelen.leaderboard.freeze import make_release


class FakeApi:
    """Records every call; `fail` maps a method name to the exception it raises."""

    calls: list = []
    fail: dict = {}

    def _call(self, name, *args, **kwargs):
        FakeApi.calls.append((name, args, kwargs))
        if name in FakeApi.fail:
            raise FakeApi.fail[name]

    def create_repo(self, repo_id, **kwargs):
        self._call("create_repo", repo_id, **kwargs)
        return f"https://hub.example/{kwargs.get('repo_type')}s/{repo_id}"

    def upload_folder(self, **kwargs):
        self._call("upload_folder", **kwargs)
        return type("CommitInfo", (), {"oid": "c0ffee"})()

    def create_tag(self, repo_id, **kwargs):
        self._call("create_tag", repo_id, **kwargs)


@pytest.fixture
def hub(monkeypatch):
    FakeApi.calls, FakeApi.fail = [], {}
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    return FakeApi


@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "forelen"
    make_dataset(root)
    (root / "README.md").write_text("---\nconfigs: []\n---\n# card\n")
    (root / "data" / CONFIGS[0] / ".tmp-abc").write_bytes(b"partial")
    return root


@pytest.fixture
def release(tmp_path) -> Path:
    results = write_results(tmp_path / "results", tmp_path / "data")
    return make_release("v1.0", results, tmp_path / "releases")


def snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def names(calls) -> list[str]:
    return [c[0] for c in calls]


def test_push_dataset_uploads_card_manifest_parquet_and_tags(hub, dataset):
    before = snapshot(dataset)
    url = dataset_push.push_dataset(dataset, "org/forelen", tag="v1.0", private=True)
    assert url == "https://hub.example/datasets/org/forelen"
    assert names(hub.calls) == ["create_repo", "upload_folder", "create_tag"]
    _, args, kw = hub.calls[0]
    assert args == ("org/forelen",) and kw["repo_type"] == "dataset"
    assert kw["exist_ok"] is True and kw["private"] is True
    _, _, kw = hub.calls[1]
    assert kw["repo_id"] == "org/forelen" and kw["repo_type"] == "dataset"
    assert kw["folder_path"] == str(dataset)
    assert kw["allow_patterns"] == ["README.md", "manifest.json"] + [
        f"data/{c}/*.parquet" for c in CONFIGS]
    assert ".*" in kw["ignore_patterns"] and "**/.*" in kw["ignore_patterns"]
    assert "*.lock" in kw["ignore_patterns"]
    _, args, kw = hub.calls[2]
    assert args == ("org/forelen",) and kw["tag"] == "v1.0" and kw["repo_type"] == "dataset"
    assert kw["revision"] == "c0ffee"  # the commit just uploaded, not whatever main is by then
    assert snapshot(dataset) == before


def test_push_dataset_without_tag_does_not_tag(hub, dataset):
    dataset_push.push_dataset(dataset, "org/forelen")
    assert names(hub.calls) == ["create_repo", "upload_folder"]
    assert hub.calls[0][2]["private"] is False


def test_push_checks_the_folder_before_the_hub(hub, dataset, tmp_path):
    with pytest.raises(ForelenError, match="no dataset folder"):
        dataset_push.push_dataset(tmp_path / "nothing", "org/x")
    with pytest.raises(ForelenError, match="not of the form ORG/NAME"):
        dataset_push.push_dataset(dataset, "just-a-name")
    (dataset / "README.md").unlink()
    with pytest.raises(ForelenError, match="no dataset card"):
        dataset_push.push_dataset(dataset, "org/x")
    assert hub.calls == []


def test_push_refuses_an_unfinished_config_or_a_broken_shard(hub, dataset):
    from forelen.dataset import DatasetFolder

    folder = DatasetFolder(dataset)
    folder.update(lambda m: m["configs"][CONFIGS[1]].__setitem__("status", "partial"))
    with pytest.raises(ForelenError, match=f"config {CONFIGS[1]} .* is not complete"):
        dataset_push.push_dataset(dataset, "org/x")
    folder.update(lambda m: m["configs"][CONFIGS[1]].__setitem__("status", "complete"))
    (dataset / "data" / CONFIGS[0] / "test-00000.parquet").write_bytes(b"short")
    with pytest.raises(ForelenError, match="missing or differs from the manifest"):
        dataset_push.push_dataset(dataset, "org/x")
    assert hub.calls == []


def test_no_token_fails_in_one_line(hub, dataset, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(ForelenError, match="no Hugging Face token"):
        dataset_push.push_dataset(dataset, "org/x")
    assert hub.calls == []


def test_offline_fails_in_one_line(hub, dataset, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ForelenError, match="HF_HUB_OFFLINE"):
        dataset_push.push_dataset(dataset, "org/x")
    assert hub.calls == []


def test_connection_failure_is_one_line_and_writes_nothing(hub, dataset, release):
    import requests

    before = snapshot(dataset), snapshot(release)
    hub.fail["upload_folder"] = requests.ConnectionError("Max retries exceeded with url: /api")
    with pytest.raises(ForelenError, match="cannot reach the Hugging Face hub to push org/x"):
        dataset_push.push_dataset(dataset, "org/x", tag="v1")
    with pytest.raises(ForelenError, match="cannot reach the Hugging Face hub"):
        push.push_leaderboard(release, "org/x")
    assert "create_tag" not in names(hub.calls)
    assert (snapshot(dataset), snapshot(release)) == before


def test_hub_refusals_are_one_line(hub, dataset):
    from huggingface_hub.errors import HfHubHTTPError

    response = type("Response", (), {"status_code": 403, "headers": {}, "url": "u", "request": None})()
    hub.fail["create_repo"] = HfHubHTTPError("403 Forbidden", response=response)
    with pytest.raises(ForelenError, match=r"refused org/x \(HTTP 403\)"):
        dataset_push.push_dataset(dataset, "org/x")
    response.status_code = 409
    hub.fail = {"create_tag": HfHubHTTPError("409 Conflict: tag v1 exists", response=response)}
    with pytest.raises(ForelenError, match="conflict on org/x"):
        dataset_push.push_dataset(dataset, "org/x", tag="v1")


def test_push_leaderboard_as_a_static_space(hub, release):
    url = push.push_leaderboard(release, "org/board", tag="v1.0")
    assert url == "https://hub.example/spaces/org/board"
    assert names(hub.calls) == ["create_repo", "upload_folder", "create_tag"]
    _, args, kw = hub.calls[0]
    assert args == ("org/board",) and kw["repo_type"] == "space" and kw["space_sdk"] == "static"
    assert kw["exist_ok"] is True
    _, _, kw = hub.calls[1]
    assert kw["folder_path"] == str(release) and kw["repo_type"] == "space"
    assert (release / "index.html").is_file()  # served from the Space's root
    assert "sdk: static" in (release / "README.md").read_text()
    assert "v1.0" in kw["commit_message"]
    assert hub.calls[2][2]["tag"] == "v1.0" and hub.calls[2][2]["repo_type"] == "space"


def test_push_leaderboard_as_a_dataset_repo(hub, release):
    push.push_leaderboard(release, "org/board", repo_type="dataset")
    assert names(hub.calls) == ["create_repo", "upload_folder"]
    assert hub.calls[0][2]["repo_type"] == "dataset" and hub.calls[0][2]["space_sdk"] is None
    with pytest.raises(ForelenError, match="--repo-type must be one of space, dataset"):
        push.push_leaderboard(release, "org/board", repo_type="model")


def test_push_leaderboard_refuses_previews_and_edited_releases(hub, release, tmp_path):
    results = tmp_path / "results"
    with pytest.raises(ForelenError, match="not a leaderboard release"):
        push.push_leaderboard(results, "org/board")
    record = next((release / "records").rglob("*.json"))
    record.chmod(0o644)
    record.write_text(record.read_text().replace('"mae"', '"mae" ', 1))
    with pytest.raises(ForelenError, match="no longer matches the sha256"):
        push.push_leaderboard(release, "org/board")
    assert hub.calls == []


def call_main(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["forelen", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_push_commands(hub, dataset, release, monkeypatch, capsys):
    code, out, err = call_main(monkeypatch, capsys, "push", str(dataset), "--repo-id", "org/ds",
                               "--tag", "v2")
    assert code == 0 and out.strip() == "https://hub.example/datasets/org/ds", err
    code, out, err = call_main(monkeypatch, capsys, "leaderboard", "push", str(release),
                               "--repo-id", "org/board")
    assert code == 0 and out.strip() == "https://hub.example/spaces/org/board", err
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    code, out, err = call_main(monkeypatch, capsys, "push", str(dataset), "--repo-id", "org/ds")
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [err.strip()] and err.startswith("error: ")


def test_unreachable_hub_through_the_real_client(release, tmp_path):
    """No fake: the installed huggingface_hub against a closed local port, as the CLI runs it."""
    import socket
    import subprocess

    from conftest import FORELEN, cli_env

    with socket.socket() as s:  # a port nobody listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    before = snapshot(release)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    res = subprocess.run([FORELEN, "leaderboard", "push", str(release), "--repo-id", "org/board"],
                         capture_output=True, text=True, timeout=120, cwd=cwd,
                         env=cli_env(HF_TOKEN="hf_fake", HF_ENDPOINT=f"http://127.0.0.1:{port}",
                                     HF_HUB_OFFLINE="0", HF_HUB_ETAG_TIMEOUT="2"))
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]
    assert res.stderr.startswith("error: cannot reach the Hugging Face hub to push org/board")
    assert snapshot(release) == before and list(cwd.iterdir()) == []
