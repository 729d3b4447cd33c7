"""The paper's prompt sets, loaded from the Hugging Face hub.

Every loader takes `repo`: a hub dataset id (the default) or a local folder laid out exactly like
that hub repo, which is how the tests run them. Hub repos are fetched with `snapshot_download`
(only the files a source reads), so every loader reads the same local layout either way. When the
hub cannot be reached the loaders raise a one-line ForelenError that names the packaged offline
alternative.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from forelen.builders.sources import SOURCES, Prompt, Source, SourceInfo, select
from forelen.errors import ForelenError
from forelen.hub import short, snapshot

# --------------------------------------------------------------------------------------------
# Fetching a repo (hub id or local folder) as a local folder


def unreachable(info: SourceInfo, repo: str) -> str:
    """The one-line error for a hub source whose repo cannot be downloaded."""
    alt = f"; offline alternative: --source {info.offline_alternative}" if info.offline_alternative else ""
    return f"source {info.name!r} needs the Hugging Face hub ({repo}), which cannot be reached{alt}"


def fetch_repo(info: SourceInfo, repo: str, patterns: Sequence[str]) -> Path:
    """A local folder holding `repo`'s files matching `patterns` (the folder itself if local)."""
    local = Path(repo).expanduser()
    if local.is_dir():
        return local
    return snapshot(repo, "dataset", patterns, f"source {info.name!r}", unreachable(info, repo))


def _require(info: SourceInfo, folder: Path, relpath: str) -> Path:
    path = folder / relpath
    if not path.is_file():
        raise ForelenError(f"source {info.name!r}: {relpath} is missing from {folder}")
    return path


def _load_dataset(info: SourceInfo, folder: Path, config: str | None, split: str):
    """`datasets.load_dataset` on a local repo folder, with its errors made one line."""
    import datasets

    try:
        return datasets.load_dataset(str(folder), config, split=split)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise ForelenError(f"source {info.name!r}: cannot load split {split!r} from {folder}: {short(exc)}") from None


def _zip_jsonl(info: SourceInfo, archive: Path, member: str) -> Iterator[dict]:
    """The JSON objects of one `.jsonl` member of a zip archive."""
    try:
        with zipfile.ZipFile(archive) as zf:
            if member not in zf.namelist():
                raise ForelenError(f"source {info.name!r}: {archive.name} has no {member}")
            with zf.open(member) as fh:
                for line in fh:
                    if line.strip():
                        yield json.loads(line)
    except (zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise ForelenError(f"source {info.name!r}: cannot read {archive.name}: {short(exc)}") from None


def _zip_members(archive: Path) -> list[str]:
    with zipfile.ZipFile(archive) as zf:
        return zf.namelist()


# --------------------------------------------------------------------------------------------
# LongBench

LONGBENCH_TASKS = (
    "narrativeqa", "qasper", "multifieldqa_en", "hotpotqa", "2wikimqa", "musique",
    "gov_report", "qmsum", "multi_news", "trec", "triviaqa", "samsum",
    "passage_count", "passage_retrieval_en", "lcc", "repobench-p",
)  # fmt: skip

def _qa(instruction: str, label: str = "", query: str = "Question") -> str:
    """Instruction, the (labelled) context, then the question and an answer cue."""
    head = f"{label}:\n" if label else ""
    return f"{instruction}\n\n{head}{{context}}\n\n{query}: {{input}}\nAnswer:"


def _summary(instruction: str, label: str) -> str:
    return f"{instruction}\n\n{label}:\n{{context}}\n\nSummary:"


def _few_shot(instruction: str) -> str:
    """LongBench's few-shot inputs already carry their own "Question:"/"Dialogue:" cue."""
    return f"{instruction}\n\n{{context}}\n\n{{input}}"


_SINGLE_DOC = _qa("Read the text below and answer the question about it as concisely as you can.")
_MULTI_DOC = _qa("Answer the question using the passages below. Give only the answer, no other words.", "Passages")

LONGBENCH_TEMPLATES = {
    "narrativeqa": _qa("Read the story below and answer the question in as few words as you can.", "Story"),
    "qasper": _qa(
        "Read the scientific article below and answer the question in a single phrase or sentence; "
        'write "unanswerable" if the article does not say, and "yes" or "no" for yes/no questions.',
        "Article",
    ),
    "multifieldqa_en": _SINGLE_DOC,
    "hotpotqa": _MULTI_DOC,
    "2wikimqa": _MULTI_DOC,
    "musique": _MULTI_DOC,
    "gov_report": _summary("Below is a report by a government agency. Write a one-page summary of it.", "Report"),
    "qmsum": _qa("Below is a meeting transcript. Answer the query in a few sentences.", "Transcript", "Query"),
    "multi_news": _summary("Below are several news articles. Write a one-page summary covering all of them.", "News"),
    "trec": _few_shot("Classify the type of the last question, following the examples."),
    "triviaqa": _few_shot("Answer the last question from its passage, following the examples."),
    "samsum": _few_shot("Summarise the last dialogue in a few sentences, following the examples."),
    "passage_count": "Below are several paragraphs, some of them duplicates. Count the distinct paragraphs.\n\n"
    "{context}\n\nReply with the number of distinct paragraphs only.\nAnswer:",
    "passage_retrieval_en": "Below are numbered paragraphs and then a summary of one of them. "
    'Name the paragraph it summarises, as "Paragraph N".\n\n{context}\n\nSummary: {input}\n\nAnswer:',
    "lcc": "Complete the next line of the code below.\n\n{context}Next line of code:\n",
    "repobench-p": "Complete the next line of the code below, using the repository context.\n\n"
    "{context}{input}Next line of code:\n",
}


def longbench_text(task: str, row: dict) -> str:
    """LongBench-style prompt: instruction, context, then the question (or the task's default)."""
    template = LONGBENCH_TEMPLATES.get(task, _SINGLE_DOC)
    return template.replace("{context}", row.get("context") or "").replace("{input}", row.get("input") or "")


class LongBench(Source):
    """THUDM/LongBench: English long-context tasks from `data.zip` (data/<task>.jsonl)."""

    def __init__(self, repo: str = "THUDM/LongBench", tasks: Iterable[str] = LONGBENCH_TASKS):
        self.repo = repo
        self.tasks = tuple(tasks)
        self.info = SourceInfo(
            name="longbench",
            description="LongBench English tasks: single/multi-doc QA, summarisation, few-shot, synthetic, code",
            reference="Bai et al. 2024, LongBench: A Bilingual, Multitask Benchmark for Long Context "
            "Understanding (ACL 2024); https://huggingface.co/datasets/THUDM/LongBench",
            license="MIT",
            hub_id="THUDM/LongBench",
            offline_alternative="longdocs-pkg",
            domain="long",
        )

    def load(self, limit: int | None, seed: int) -> list[Prompt]:
        archive = _require(self.info, fetch_repo(self.info, self.repo, ["data.zip"]), "data.zip")
        self._check_tasks(archive)
        prompts = [
            Prompt(
                source=self.info.name,
                source_id=str(row["_id"]),
                text=longbench_text(task, row),
                meta={"task": task, "length": row.get("length")},
            )
            for task in self.tasks
            for row in _zip_jsonl(self.info, archive, f"data/{task}.jsonl")
        ]
        return select(prompts, limit, seed)

    def _check_tasks(self, archive: Path) -> None:
        present = sorted(m[5:-6] for m in _zip_members(archive) if m.startswith("data/") and m.endswith(".jsonl"))
        missing = [t for t in self.tasks if t not in present]
        if missing:
            raise ForelenError(
                f"source 'longbench': unknown task(s) {', '.join(missing)}; available: {', '.join(present)}"
            )


# --------------------------------------------------------------------------------------------
# ZeroSCROLLS

ZEROSCROLLS_TASKS = (
    "gov_report", "summ_screen_fd", "qmsum", "qasper", "narrative_qa",
    "quality", "musique", "squality", "space_digest", "book_sum_sort",
)  # fmt: skip


class ZeroScrolls(Source):
    """tau/zero_scrolls: `<task>.zip` holding `<task>/<split>.jsonl`; `input` is the full prompt."""

    def __init__(self, repo: str = "tau/zero_scrolls", tasks: Iterable[str] = ZEROSCROLLS_TASKS, split: str = "test"):
        self.repo = repo
        self.tasks = tuple(tasks)
        self.split = split
        self.info = SourceInfo(
            name="zeroscrolls",
            description="ZeroSCROLLS long-text tasks (summarisation, QA, aggregation) with their zero-shot prompts",
            reference="Shaham et al. 2023, ZeroSCROLLS: A Zero-Shot Benchmark for Long Text Understanding "
            "(Findings of EMNLP 2023); https://huggingface.co/datasets/tau/zero_scrolls",
            license="MIT",
            hub_id="tau/zero_scrolls",
            offline_alternative="longdocs-pkg",
            domain="long",
        )

    def load(self, limit: int | None, seed: int) -> list[Prompt]:
        unknown = [t for t in self.tasks if t not in ZEROSCROLLS_TASKS]
        if unknown:
            raise ForelenError(
                f"source 'zeroscrolls': unknown task(s) {', '.join(unknown)}; available: {', '.join(ZEROSCROLLS_TASKS)}"
            )
        folder = fetch_repo(self.info, self.repo, [f"{t}.zip" for t in self.tasks])
        prompts: dict[str, Prompt] = {}
        for task in self.tasks:
            archive = _require(self.info, folder, f"{task}.zip")
            for row in _zip_jsonl(self.info, archive, f"{task}/{self.split}.jsonl"):
                # Validation sets repeat an input once per reference output: keep one prompt per id.
                prompts.setdefault(
                    str(row["id"]),
                    Prompt(self.info.name, str(row["id"]), row["input"], meta={"task": task, "split": self.split}),
                )
        return select(list(prompts.values()), limit, seed)


# --------------------------------------------------------------------------------------------
# Sets read with `datasets` (parquet/jsonl repos)


class IFEval(Source):
    """google/IFEval: verifiable instruction-following prompts."""

    def __init__(self, repo: str = "google/IFEval"):
        self.repo = repo
        self.info = SourceInfo(
            name="ifeval",
            description="IFEval instruction-following prompts with verifiable constraints (541)",
            reference="Zhou et al. 2023, Instruction-Following Evaluation for Large Language Models; "
            "https://huggingface.co/datasets/google/IFEval",
            license="Apache-2.0",
            hub_id="google/IFEval",
            offline_alternative="ifeval-pkg",
            domain="instruction",
        )

    def load(self, limit: int | None, seed: int) -> list[Prompt]:
        folder = fetch_repo(self.info, self.repo, ["*.jsonl", "README.md"])
        rows = _load_dataset(self.info, folder, None, "train")
        prompts = [
            Prompt(self.info.name, str(r["key"]), r["prompt"], meta={"instruction_ids": list(r["instruction_id_list"])})
            for r in rows
        ]
        return select(prompts, limit, seed)


def gsm8k_final_answer(answer: str) -> str:
    """The number after GSM8K's `####` marker."""
    return answer.rsplit("####", 1)[-1].strip()


class GSM8K(Source):
    """openai/gsm8k, config `main`, train and test splits."""

    def __init__(self, repo: str = "openai/gsm8k", splits: Iterable[str] = ("train", "test")):
        self.repo = repo
        self.splits = tuple(splits)
        self.info = SourceInfo(
            name="gsm8k",
            description="GSM8K grade-school math word problems (main config, train + test)",
            reference="Cobbe et al. 2021, Training Verifiers to Solve Math Word Problems; "
            "https://huggingface.co/datasets/openai/gsm8k",
            license="MIT",
            hub_id="openai/gsm8k",
            offline_alternative="gsm-symbolic",
            domain="math",
        )

    def load(self, limit: int | None, seed: int) -> list[Prompt]:
        folder = fetch_repo(self.info, self.repo, ["main/*", "README.md"])
        prompts = []
        for split in self.splits:
            for i, r in enumerate(_load_dataset(self.info, folder, "main", split)):
                meta = {"split": split, "answer": gsm8k_final_answer(r["answer"])}
                prompts.append(Prompt(self.info.name, f"{split}-{i}", r["question"], meta=meta))
        return select(prompts, limit, seed)


class Math500(Source):
    """HuggingFaceH4/MATH-500: the 500-problem MATH test subset."""

    def __init__(self, repo: str = "HuggingFaceH4/MATH-500"):
        self.repo = repo
        self.info = SourceInfo(
            name="math500",
            description="MATH-500 competition math problems (test split)",
            reference="Lightman et al. 2023, Let's Verify Step by Step (MATH-500, a subset of Hendrycks et al. "
            "2021 MATH); "
            "https://huggingface.co/datasets/HuggingFaceH4/MATH-500",
            license="MIT",
            hub_id="HuggingFaceH4/MATH-500",
            offline_alternative="mmath-pkg",
            domain="math",
        )

    def load(self, limit: int | None, seed: int) -> list[Prompt]:
        folder = fetch_repo(self.info, self.repo, ["test.jsonl", "README.md"])
        prompts = [
            Prompt(
                self.info.name,
                r["unique_id"],
                r["problem"],
                meta={"subject": r["subject"], "level": r["level"], "answer": r["answer"]},
            )
            for r in _load_dataset(self.info, folder, None, "test")
        ]
        return select(prompts, limit, seed)


for _source in (LongBench(), ZeroScrolls(), IFEval(), GSM8K(), Math500()):
    SOURCES.add(_source.info.name, _source)
