"""`forelen import`: the ForeLen release's layout, chat-completions logs and forelen's own export,
imported with the tiny float32 model; the features of a round trip equal the built ones; bad input
is one line and exit 2 with nothing written."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re

import numpy as np
import pytest
from test_build import CONFIG, STEPS, opts, reference  # noqa: F401 (fixtures)
from test_cli import assert_one_line_error, call_main

from forelen.builders.importer import ImportOptions, run_import
from forelen.dataset import DatasetFolder
from forelen.errors import ForelenError

RESPONSES = [
    "The answer is 42 because six times seven is forty two.",
    "First add the numbers, then divide by two. The result is 7.",
    "A quiet town by the sea has a small museum.",
    "def add(a, b):\n    return a + b",
    "Start at zero and count to ten, one step at a time.",
    "Paintings are shown every summer.",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return tiny_model[1]


def n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


@pytest.fixture(scope="module")
def release(tmp_path_factory, tokenizer):
    """Qwen2.5_7B/RL/{train,validation,test}.csv in the release's columns; validation's lengths
    are written as strings ("7.0"), as some of the release's files have them."""
    root = tmp_path_factory.mktemp("release")
    folder = root / "Qwen2.5_7B" / "RL"
    folder.mkdir(parents=True)
    for p, part in enumerate(("train", "validation", "test")):
        with open(folder / f"{part}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["user_prompt_content", "response_content", "target_length"])
            for i in range(4):
                prompt = f"Question {p}-{i // 2}: what is {i // 2} plus {p}?"  # 2 samples each
                response = RESPONSES[(i + p) % len(RESPONSES)]
                length = n_tokens(tokenizer, response)
                w.writerow([prompt, response, f"{length}.0" if part == "validation" else length])
    return root


@pytest.fixture(scope="module")
def chat_log(tmp_path_factory):
    path = tmp_path_factory.mktemp("chat") / "logs.jsonl"
    lines = []
    for i in range(20):
        reply = RESPONSES[i % len(RESPONSES)]
        lines.append({"request": {"model": "served", "messages": [
                          {"role": "system", "content": "Be brief."},
                          {"role": "user", "content": f"Tell me thing number {i}."}]},
                      "response": {"choices": [{"message": {"role": "assistant",
                                                            "content": reply},
                                                "finish_reason": "length" if i == 0 else "stop"}],
                                   "usage": {"prompt_tokens": 20, "completion_tokens": None}}})
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def import_opts(source, model_dir, out, **kw) -> ImportOptions:
    return ImportOptions(source=str(source), model=str(model_dir), out=str(out), dtype="float32",
                         device="cpu", steps=STEPS, batch_size=4, **kw)


def test_release_layout_keeps_partitions_and_names_the_config(release, tiny_model_dir, tmp_path):
    (entry,) = run_import(import_opts(release, tiny_model_dir, tmp_path / "ds"))
    folder = DatasetFolder(tmp_path / "ds")
    assert list(folder.manifest()["configs"]) == ["qwen2.5-7b-rl"]
    assert entry["origin"] == "imported" and entry["build"]["split"] == "rl"
    report = entry["build"]["import"]
    assert report["format"] == "forelen-release" and report["rows_read"] == 12
    assert report["rows_used"] == 12 and report["unusable"] == {}
    assert report["length_mismatch_rate"] == 0.0
    assert len(report["files"]) == 3 and all(len(h) == 64 for h in report["files"].values())
    table = folder.read("qwen2.5-7b-rl")
    assert entry["stats"]["partition_rows"] == {"train": 4, "validation": 4, "test": 4}
    # the validation file's "7.0" strings were cast; targets are the logged lengths
    parts = table["partition"].to_pylist()
    lengths = table["output_tokens"].to_pylist()
    ids = table["response_token_ids"].to_pylist()
    assert all(n == len(i) for n, i in zip(lengths, ids))
    assert parts.count("validation") == 4
    # identical prompts form groups of 2 samples; prompts were given the chat template
    assert entry["stats"]["groups"] == 6
    assert all(p.startswith("<|im_start|>") for p in table["prompt"].to_pylist())
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "imported" in card and "forelen-release" in card


def test_openai_chat_logs_text_only(chat_log, tiny_model_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ds"
    (entry,) = run_import(import_opts(chat_log, tiny_model_dir, out, split="cot", features=False))
    assert entry["build"]["features"] is False and entry["build"]["recorded_layers"] == []
    table = DatasetFolder(out).read("tiny-llama-cot")
    assert "egtp_l3" not in table.column_names and "prompt_entropy" not in table.column_names
    assert table.num_rows == 20 and table["finish_reason"].to_pylist().count("length") == 1
    assert all("Be brief." in p and p.rstrip().endswith("assistant")
               for p in table["prompt"].to_pylist())
    assert entry["build"]["import"]["length_mismatch_rate"] is None  # no logged lengths
    # a text-only config: references and text proxies evaluate, a hidden-state predictor says no
    results = str(tmp_path / "results")
    code, stdout, err = call_main(monkeypatch, capsys, "evaluate", "--data", str(out),
                                  "--predictor", "egtp", "--results", results)
    assert "has no features" in assert_one_line_error(code, stdout, err)
    from forelen.leaderboard.evaluate import run_evaluation

    notes = []
    records = run_evaluation(DatasetFolder(out), ["tiny-llama-cot"],
                             ["constant-median", "prompt-length", "egtp"], 0, results,
                             say=notes.append)
    assert [r["predictor"]["name"] for r in records] == ["constant-median", "prompt-length"]
    assert notes and "leaving out egtp" in notes[0]


def export(reference_folder, path, with_ids: bool = True) -> None:
    rows = DatasetFolder(reference_folder).read(CONFIG).to_pylist()
    keys = ["prompt", "response", "output_tokens", "group_id", "partition", "finish_reason"]
    keys += ["response_token_ids"] if with_ids else []
    path.write_text("".join(json.dumps({k: r[k] for k in keys}) + "\n" for r in rows))


def test_round_trip_features_equal_the_built_ones(reference, tiny_model_dir, tmp_path):
    """Build, export prompts, responses and token ids, import with features: same rows, and
    features within float16 storage of the built ones (cosine >= 0.9999; entropies within 1e-4
    plus one float16 step, the precision they are stored at)."""
    folder, entry, built = reference
    source = tmp_path / "export.jsonl"
    export(folder.root, source)
    (imported,) = run_import(import_opts(source, tiny_model_dir, tmp_path / "ds", split="rl"))
    assert imported["build"]["import"]["prompts_already_rendered"] == built.num_rows
    got = DatasetFolder(tmp_path / "ds").read(CONFIG).sort_by("uid")
    assert got["uid"].to_pylist() == built["uid"].to_pylist()
    for name in ("output_tokens", "response_token_ids", "partition", "group_id", "prompt",
                 "finish_reason", "prompt_tokens"):
        assert got[name].to_pylist() == built[name].to_pylist(), name
    assert_features_close(built, got)


def assert_features_close(built, got) -> None:
    """Features recomputed by the recorder's pass against those recorded while generating: pooled
    vectors at cosine >= 0.9999, entropies within 1e-4 plus one float16 step, step states of the
    same shapes."""
    for name in built.column_names:
        if re.match(r"^(egtp|mean|max|last)_l\d+$", name):
            a = np.asarray(built[name].to_pylist(), float)
            b = np.asarray(got[name].to_pylist(), float)
            cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
            assert cos.min() >= 0.9999, name
        elif name.endswith("_entropy"):
            for x, y in zip(built[name].to_pylist(), got[name].to_pylist()):
                x, y = np.asarray(x, float), np.asarray(y, float)
                assert x.shape == y.shape
                assert np.all(np.abs(x - y) <= 1e-4 + np.abs(x) * 2.0 ** -10), name
        elif name.startswith("step_states_l"):
            for x, y in zip(built[name].to_pylist(), got[name].to_pylist()):
                assert np.asarray(x).shape == np.asarray(y).shape


def test_evaluate_and_resume_on_an_import(reference, tiny_model_dir, tmp_path, monkeypatch):
    from test_build import interrupt_on_call

    from forelen.leaderboard.evaluate import run_evaluation

    folder, _, _ = reference
    source = tmp_path / "export.jsonl"
    export(folder.root, source)
    o = import_opts(source, tiny_model_dir, tmp_path / "full", split="rl")
    run_import(o)
    whole = DatasetFolder(o.out).read(CONFIG).sort_by("uid")
    cut = dataclasses.replace(o, out=str(tmp_path / "cut"))
    interrupt_on_call(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run_import(cut)
    monkeypatch.undo()
    partial = DatasetFolder(cut.out).config(CONFIG)
    assert partial["status"] == "partial" and len(partial["shards"]) == 2
    run_import(cut)
    again = DatasetFolder(cut.out).read(CONFIG).sort_by("uid")
    assert again.equals(whole)
    records = run_evaluation(DatasetFolder(cut.out), [CONFIG], ["constant-median", "egtp"], 0,
                             str(tmp_path / "results"))
    assert [r["predictor"]["name"] for r in records] == ["constant-median", "egtp"]
    assert all(np.isfinite(r["metrics"]["mae"]) for r in records)


def test_drop_text_hashes_text_and_drops_ids(release, tiny_model_dir, tmp_path):
    run_import(import_opts(release, tiny_model_dir, tmp_path / "ds", drop_text=True,
                           features=False))
    table = DatasetFolder(tmp_path / "ds").read("qwen2.5-7b-rl")
    assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", t)
               for t in table["prompt"].to_pylist() + table["response"].to_pylist())
    # token ids decode back to the text with the model's public tokenizer: none are kept
    assert table["response_token_ids"].null_count == table.num_rows


# ---------------------------------------------------------------------------------------------
# bad input: one line, exit 2, nothing written


def _bad(tmp_path, name: str, text: str | bytes):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _refused(monkeypatch, capsys, tmp_path, *args) -> str:
    out = tmp_path / "out"
    code, stdout, err = call_main(monkeypatch, capsys, "import", *map(str, args), "--out",
                                  str(out), "--dtype", "float32", "--device", "cpu")
    line = assert_one_line_error(code, stdout, err)
    assert not out.exists(), "a refused import wrote into the output folder"
    return line


def test_bad_input_is_one_line(monkeypatch, capsys, tmp_path, tiny_model_dir, release,
                               tokenizer):
    model = ("--model", tiny_model_dir)
    no_length = tmp_path / "rel" / "M_1B" / "RL"
    no_length.mkdir(parents=True)
    (no_length / "train.csv").write_text("user_prompt_content,response_content\nhi,there\n")
    assert "no column 'target_length'" in _refused(monkeypatch, capsys, tmp_path,
                                                   tmp_path / "rel", *model)
    assert "empty" in _refused(monkeypatch, capsys, tmp_path, _bad(tmp_path, "e.jsonl", ""),
                               "--split", "rl", *model)
    words = _bad(tmp_path, "w.csv", "prompt,response,output_tokens\nhi,there,12\nhi,you,many\n")
    line = _refused(monkeypatch, capsys, tmp_path, words, "--split", "cot", *model)
    assert "whole number" in line and "w.csv record 2" in line
    # lengths counted in characters: not this model's tokens
    chars = tmp_path / "chars.csv"
    with open(chars, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "response", "output_tokens"])
        w.writerows([f"q{i}", r, len(r)] for i, r in enumerate(RESPONSES))
    assert "not the model that generated" in _refused(monkeypatch, capsys, tmp_path, chars,
                                                      "--split", "cot", *model)
    latin = _bad(tmp_path, "l.jsonl", b'{"prompt": "caf\xe9", "response": "x"}\n')
    assert "cannot read" in _refused(monkeypatch, capsys, tmp_path, latin, "--split", "cot",
                                     *model)
    if os.geteuid() != 0:  # root reads a chmod-000 file anyway
        locked = _bad(tmp_path, "locked.csv", "prompt,response\nhi,there\n")
        locked.chmod(0)
        assert "cannot read" in _refused(monkeypatch, capsys, tmp_path, locked, "--split", "cot",
                                         *model)
    missing = _bad(tmp_path, "m.csv", "question,answer\nhi,there\n")
    assert "--prompt-column" in _refused(monkeypatch, capsys, tmp_path, missing, "--split", "cot",
                                         *model)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = _refused(monkeypatch, capsys, tmp_path, "someorg/forelen-logs", "--split", "rl",
                    *model)
    assert "hub cannot be reached" in line
    assert "--split is needed" in _refused(monkeypatch, capsys, tmp_path, words, *model)


def test_skip_invalid_counts_the_rows_it_leaves_out(tmp_path, tiny_model_dir, tokenizer):
    good = RESPONSES[0]
    path = _bad(tmp_path, "mixed.csv", "prompt,response,output_tokens\n"
                f"a,{good},{n_tokens(tokenizer, good)}\nb,{good},lots\n,{good},3\n")
    with pytest.raises(ForelenError, match="--skip-invalid"):
        run_import(import_opts(path, tiny_model_dir, tmp_path / "ds", split="cot"))
    (entry,) = run_import(import_opts(path, tiny_model_dir, tmp_path / "ds", split="cot",
                                      skip_invalid=True, features=False))
    report = entry["build"]["import"]
    assert report["rows_used"] == 1
    assert report["unusable"] == {"length not a whole number >= 0": 1, "no prompt": 1}


def test_import_resumes_after_sigkill(tiny_model_dir, tmp_path):
    """kill -9 once the first shard is in the manifest; the same command resumes and ends with
    the rows of an uninterrupted import."""
    import signal
    import subprocess
    import time

    from conftest import FORELEN, cli_env

    source = tmp_path / "many.jsonl"
    source.write_text("".join(json.dumps({"prompt": f"Question {i}: say something.",
                                          "response": RESPONSES[i % len(RESPONSES)] * 3})
                              + "\n" for i in range(80)))
    args = [FORELEN, "import", str(source), "--split", "cot", "--model", str(tiny_model_dir),
            "--dtype", "float32", "--device", "cpu", "--shard-size", "1", "--steps", "4"]
    run_import(ImportOptions(source=str(source), model=str(tiny_model_dir), split="cot",
                             dtype="float32", device="cpu", batch_size=1, steps=4,
                             out=str(tmp_path / "whole")))
    out = tmp_path / "ds"
    proc = subprocess.Popen(args + ["--out", str(out)], env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads((out / "manifest.json").read_text())["configs"]["tiny-llama-cot"][
                    "shards"]:
                proc.send_signal(signal.SIGKILL)
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.002)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the import finished before the kill"
    entry = json.loads((out / "manifest.json").read_text())["configs"]["tiny-llama-cot"]
    assert entry["status"] == "partial" and 0 < len(entry["shards"]) < entry["chunks"]
    again = subprocess.run(args + ["--out", str(out)], env=cli_env(), capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming" in again.stdout + again.stderr
    rows = DatasetFolder(out).read("tiny-llama-cot").sort_by("uid")
    assert rows.equals(DatasetFolder(tmp_path / "whole").read("tiny-llama-cot").sort_by("uid"))
    assert not list(out.rglob(".tmp-*"))


# ---------------------------------------------------------------------------------------------
# --drop-text keeps no text; imports resume config by config; fixed-column formats; dates


def _sentences(texts) -> list[str]:
    return [s.strip() for t in texts for s in re.split(r"[.?\n]", t) if len(s.strip()) >= 12]


def test_drop_text_leaves_no_sentence_of_the_source(tmp_path, tiny_model_dir, tokenizer,
                                                    monkeypatch, capsys):
    """Every column of a --drop-text import (token id lists decoded with the tokenizer) and every
    file of its folder is searched for every sentence of the source: none is found."""
    secret = "Patient John Doe has diabetes and takes insulin daily."
    rows = [{"prompt": f"Summarise the chart of ward {i // 2} for the night nurse.",
             "response": secret if i == 0 else RESPONSES[i % len(RESPONSES)],
             "group_id": f"chart of John Doe, ward {i // 2}"} for i in range(12)]
    source = tmp_path / "private.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "ds"
    (entry,) = run_import(import_opts(source, tiny_model_dir, out, split="cot", drop_text=True))
    sentences = _sentences([r["prompt"] for r in rows] + [r["response"] for r in rows]
                           + [r["group_id"] for r in rows]) + ["John Doe"]
    table = DatasetFolder(out).read("tiny-llama-cot")
    seen = []
    for name in table.column_names:
        for value in table[name].to_pylist():
            if isinstance(value, str):
                seen.append(value)
            elif isinstance(value, list) and value and isinstance(value[0], int):
                seen.append(tokenizer.decode(value))
    for path in out.rglob("*"):
        if path.is_file():
            seen.append(path.read_bytes().decode("utf-8", "replace"))
    leaks = [s for s in sentences if any(s in text for text in seen)]
    assert not leaks, f"text of the source survived --drop-text: {leaks[:3]}"
    assert set(table["response_token_ids"].to_pylist()) == {None}
    assert entry["build"]["response_token_ids"] is False
    # text-reading predictors are left out in one line; alone, one asked for is refused
    from forelen.leaderboard.evaluate import run_evaluation

    notes = []
    records = run_evaluation(DatasetFolder(out), ["tiny-llama-cot"],
                             ["constant-median", "ssjf-reg", "pia", "egtp"], 0,
                             str(tmp_path / "results"), say=notes.append)
    assert [r["predictor"]["name"] for r in records] == ["constant-median", "egtp"]
    assert notes == ["tiny-llama-cot: no text (imported with --drop-text); leaving out "
                     "ssjf-reg, pia"]
    code, stdout, err = call_main(monkeypatch, capsys, "evaluate", "--data", str(out),
                                  "--predictor", "s3", "--results", str(tmp_path / "r2"))
    assert "has no text" in assert_one_line_error(code, stdout, err)


def test_keep_token_ids_keeps_them_and_says_what_they_expose(release, tiny_model_dir, tmp_path,
                                                             tokenizer, capsys):
    out = tmp_path / "ds"
    run_import(import_opts(release, tiny_model_dir, out, drop_text=True, keep_token_ids=True,
                           features=False))
    said = capsys.readouterr().out
    assert "decodes them back to the response text" in said
    table = DatasetFolder(out).read("qwen2.5-7b-rl")
    decoded = {tokenizer.decode(ids) for ids in table["response_token_ids"].to_pylist()}
    assert decoded <= set(RESPONSES)
    with pytest.raises(ForelenError, match="--keep-token-ids goes with --drop-text"):
        run_import(import_opts(release, tiny_model_dir, tmp_path / "x", keep_token_ids=True))


def test_a_release_import_resumes_config_by_config(release, tiny_model_dir, tmp_path,
                                                   monkeypatch, capsys, tokenizer):
    """Interrupted during its second config, the same command keeps the first and resumes the
    second; the rows equal those of an uninterrupted import."""
    import shutil

    from test_build import interrupt_on_call

    two = tmp_path / "two"
    shutil.copytree(release, two)
    shutil.copytree(two / "Qwen2.5_7B" / "RL", two / "Qwen2.5_7B" / "Reasoning")
    whole = import_opts(two, tiny_model_dir, tmp_path / "whole")
    run_import(whole)
    cut = dataclasses.replace(whole, out=str(tmp_path / "cut"))
    interrupt_on_call(monkeypatch, 3 + 2)  # 3 shards of the first config, 1 of the second
    with pytest.raises(KeyboardInterrupt):
        run_import(cut)
    monkeypatch.undo()
    manifest = DatasetFolder(cut.out).manifest()["configs"]
    first, second = sorted(manifest)
    assert manifest[first]["status"] == "complete" and manifest[second]["status"] == "partial"
    finished_at = manifest[first]["finished_at"]
    capsys.readouterr()
    run_import(cut)
    said = capsys.readouterr().out
    assert f"{first}: already imported" in said and f"resuming {second}: 1 shard" in said
    manifest = DatasetFolder(cut.out).manifest()["configs"]
    assert manifest[first]["finished_at"] == finished_at  # kept, not redone
    for config in (first, second):
        assert manifest[config]["status"] == "complete"
        assert DatasetFolder(cut.out).read(config).sort_by("uid").equals(
            DatasetFolder(whole.out).read(config).sort_by("uid"))
    # the same command again keeps both; other data is refused, before anything is written
    run_import(cut)
    other = tmp_path / "other"
    shutil.copytree(two, other)
    with open(other / "Qwen2.5_7B" / "RL" / "test.csv", "a") as f:
        f.write(f"one more question,{RESPONSES[0]},{n_tokens(tokenizer, RESPONSES[0])}\n")
    with pytest.raises(ForelenError, match="from other data or settings"):
        run_import(dataclasses.replace(cut, source=str(other)))


def test_fixed_column_formats_refuse_column_options(chat_log, release, tiny_model_dir, tmp_path):
    for source, option in ((chat_log, "group_column"), (chat_log, "length_column"),
                           (release, "prompt_column")):
        with pytest.raises(ForelenError, match=f"--{option.replace('_', '-')} does not apply"):
            run_import(import_opts(source, tiny_model_dir, tmp_path / "ds", split="cot",
                                   features=False, **{option: "x"}))
    assert not (tmp_path / "ds").exists()


def test_csv_rows_are_named_by_record_number(monkeypatch, capsys, tmp_path, tiny_model_dir):
    """A quoted response spanning lines does not shift the number in the message."""
    path = tmp_path / "multi.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "response", "output_tokens"])
        w.writerow(["first", "line one\nline two\nline three", "6"])
        w.writerow(["second", "fine", "many"])
    line = _refused(monkeypatch, capsys, tmp_path, path, "--split", "cot", "--model",
                    str(tiny_model_dir), "--no-features")
    assert "first at multi.csv record 2" in line


def test_logged_dates_render_the_template_on_the_day_served(tmp_path, tiny_model_dir, tokenizer):
    """A template that prints the date renders each logged request on the day it was served
    (`created`), and the others on --date."""
    import shutil

    model = tmp_path / "dated-model"
    shutil.copytree(tiny_model_dir, model)
    dated_template(model, tokenizer)
    log = tmp_path / "dated.jsonl"
    lines = [{"messages": [{"role": "user", "content": f"Question {i}?"}],
              "choices": [{"message": {"content": RESPONSES[i]}, "finish_reason": "stop"}],
              **({"created": 1700000000} if i % 2 else {})} for i in range(6)]
    log.write_text("".join(json.dumps(x) + "\n" for x in lines))
    (entry,) = run_import(import_opts(log, model, tmp_path / "ds", split="cot", features=False,
                                      date="2025-03-09"))
    assert entry["build"]["date_string"] == "2025-03-09"
    assert entry["build"]["template_uses_date"] is True
    assert entry["build"]["import"]["prompts_dated_by_log"] == 3
    prompts = DatasetFolder(tmp_path / "ds").read("dated-model-cot")["prompt"].to_pylist()
    assert sum("Today: 14 Nov 2023" in p for p in prompts) == 3  # 1700000000 is 2023-11-14 UTC
    assert sum("Today: 09 Mar 2025" in p for p in prompts) == 3


def dated_template(model_dir, tokenizer) -> None:
    """Give a saved model's tokenizer a chat template that prints today's date, as
    Llama-3.2-Instruct's does ("Today Date: 26 Jul 2024")."""
    template = "Today: {{ strftime_now('%d %b %Y') }}\n" + tokenizer.chat_template
    jinja = model_dir / "chat_template.jinja"
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    if jinja.exists() or "chat_template" not in config:
        jinja.write_text(template)
    else:
        config["chat_template"] = template
        (model_dir / "tokenizer_config.json").write_text(json.dumps(config))


def _ok(monkeypatch, capsys, *args) -> str:
    """Run `forelen ARGS` in-process as a user would; returns stderr (it must succeed)."""
    import sys

    from forelen import cli

    monkeypatch.setattr(sys, "argv", ["forelen", *args])
    try:
        cli.main()
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err
    return capsys.readouterr().err


def _length_log(tmp_path, tokenizer):
    """A log whose lengths are in another tokenizer's units: every one differs from the tiny
    model's count (a closed model's serving log)."""
    path = tmp_path / "closed.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "response": r,
                                        "n": n_tokens(tokenizer, r) * 3 + 5}) + "\n"
                            for i, r in enumerate(RESPONSES)))
    return path


def test_text_only_with_logged_lengths_needs_no_model(tmp_path, tiny_model_dir, tokenizer,
                                                      monkeypatch, capsys):
    """No --model: the logged lengths are the targets, unchecked; the default model (here the
    tiny one) names no config and no generator, and the manifest and card say what it counted."""
    from forelen import models

    monkeypatch.setattr(models, "DEFAULT_MODEL", str(tiny_model_dir))
    log = _length_log(tmp_path, tokenizer)
    out = tmp_path / "ds"
    _ok(monkeypatch, capsys, "import", str(log), "--no-features", "--length-column", "n",
        "--split", "chat", "--out", str(out))
    entry = DatasetFolder(out).config("closed-chat")
    build, report = entry["build"], entry["build"]["import"]
    assert build["generator"] == "unknown" and build["model"] is None
    assert report["length_mismatch_rate"] is None
    assert report["lengths"] == {"logged": 6, "counted": 0, "counted_with": None,
                                 "tokenizer": str(tiny_model_dir), "tokenizer_named": False,
                                 "checked": False}
    table = DatasetFolder(out).read("closed-chat")
    logged = {json.loads(x)["prompt"]: json.loads(x)["n"] for x in log.read_text().splitlines()}
    assert {p.split("user\n")[1].split("<|im_end|>")[0]: n for p, n in
            zip(table["prompt"].to_pylist(), table["output_tokens"].to_pylist())} == logged
    assert set(table["model"].to_pylist()) == {"unknown"}
    card = (out / "README.md").read_text()
    assert "trusted, not checked" in card and "6 logged" in card
    # the generator's name, when the user has one, names the config and the rows
    _ok(monkeypatch, capsys, "import", str(log), "--no-features", "--length-column", "n",
        "--split", "chat", "--out", str(out), "--generator-name", "gpt-4o-mini")
    assert DatasetFolder(out).config("gpt-4o-mini-chat")["build"]["generator"] == "gpt-4o-mini"
    # a tokenizer the user names is checked against, and this one is not the generator's
    line = _refused(monkeypatch, capsys, tmp_path, log, "--no-features", "--length-column", "n",
                    "--split", "chat", "--tokenizer", str(tiny_model_dir))
    assert "differ from its responses re-tokenised" in line


def test_counted_lengths_name_their_tokenizer(tmp_path, tiny_model_dir, monkeypatch, capsys):
    from forelen import models

    monkeypatch.setattr(models, "DEFAULT_MODEL", str(tiny_model_dir))
    path = tmp_path / "plain.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "response": r}) + "\n"
                            for i, r in enumerate(RESPONSES)))
    err = _ok(monkeypatch, capsys, "import", str(path), "--no-features", "--split", "cot",
              "--out", str(tmp_path / "ds"))
    assert "counted with" in err and "(the default)" in err
    lengths = DatasetFolder(tmp_path / "ds").config("plain-cot")["build"]["import"]["lengths"]
    assert lengths["counted"] == 6 and lengths["counted_with"] == str(tiny_model_dir)
    assert "counted with the tokenizer of" in (tmp_path / "ds" / "README.md").read_text()
