"""The oldest torch and transformers forelen declares are the ones it runs on.

`src/forelen/requirements.py` holds the floors (MINIMUM) and checks them when a model or the
`hf` engine is loaded: a too-old or missing package is one line naming the version needed.
pyproject.toml must declare the same floors, and the engine's tests must pass on exactly those
versions: the `.venv-minver` virtualenv (`scripts/minver_venv.sh`, made by scripts/test.sh) holds
them, and the slow test below runs tests/test_engine_hf.py and tests/test_engine_continuous.py
there. Without that virtualenv (too little disk for PyPI's CUDA build of the old torch, ~5 GB) it
skips and says why.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_prompts

from forelen import cli, requirements
from forelen.errors import ForelenError
from forelen.requirements import MINIMUM, check_versions, release

ROOT = Path(__file__).resolve().parents[1]
ENGINE_TESTS = ("tests/test_engine_hf.py", "tests/test_engine_continuous.py")


def declared_floors() -> dict[str, str]:
    tomllib = pytest.importorskip("tomllib")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {m.group(1): m.group(2) for m in (re.fullmatch(r"([\w-]+)>=([\d.]+)", d) for d in deps)
            if m}


def test_pyproject_declares_the_checked_minimums():
    floors = declared_floors()
    assert {name: floors.get(name) for name in MINIMUM} == {
        name: oldest for name, (oldest, _) in MINIMUM.items()}


def test_minver_script_installs_the_declared_floors():
    script = (ROOT / "scripts" / "minver_venv.sh").read_text()
    for name in MINIMUM:
        assert f"{name}==$(floor {name})" in script


def test_vllm_extra_admits_only_vllm_on_a_torch_we_support():
    tomllib = pytest.importorskip("tomllib")
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["vllm"]
    (floor,) = [re.fullmatch(r"vllm>=([\d.]+)", d).group(1) for d in extra]
    # vllm 0.6.0-0.6.3 pin torch 2.4.0, below MINIMUM; 0.6.4 pins torch 2.5.1.
    assert release(floor) >= (0, 6, 4)


def test_the_installed_versions_pass():
    check_versions()


@pytest.mark.parametrize("name,have", [("torch", "2.4.1"), ("torch", "2.4.1+cu121"),
                                       ("transformers", "4.55.4"), ("transformers", None)])
def test_too_old_or_missing_is_one_line_naming_both_versions(monkeypatch, name, have):
    real = requirements.installed
    monkeypatch.setattr(requirements, "installed", lambda n: have if n == name else real(n))
    with pytest.raises(ForelenError) as info:
        check_versions()
    message = str(info.value)
    assert "\n" not in message
    assert f"{name}>={MINIMUM[name][0]}" in message and f"installed: {have or 'none'}" in message


@pytest.mark.parametrize("have", ["2.5.0", "2.5.0+cu124", "2.5.0a0+git1234", "2.13.0+cpu", "3.0",
                                  "weird"])
def test_new_enough_or_unparsable_passes(monkeypatch, have):
    monkeypatch.setattr(requirements, "installed", lambda n: have if n == "torch" else "9.0")
    check_versions()


def test_cli_build_with_an_old_transformers_is_one_line_exit_2(monkeypatch, capsys, tmp_path):
    """Before any weight is read (a folder holding only config.json suffices) and before the
    engine's first forward."""
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "config.json").write_text("{}")
    prompts = write_prompts(tmp_path / "prompts.jsonl")
    real = requirements.installed
    monkeypatch.setattr(requirements, "installed",
                        lambda n: "4.46.3" if n == "transformers" else real(n))
    monkeypatch.setattr(sys, "argv", ["forelen", "build", "--split", "rl", "--model", str(model),
                                      "--source", str(prompts), "--out", str(tmp_path / "out"),
                                      "--engine", "hf", "--device", "cpu"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    out, err = capsys.readouterr()
    assert info.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"error: forelen needs transformers>={MINIMUM['transformers'][0]} "
        f"(for {MINIMUM['transformers'][1]}); installed: 4.46.3; upgrade with "
        f"pip install 'transformers>={MINIMUM['transformers'][0]}'")


def test_the_engine_refuses_an_old_torch_before_its_first_forward(monkeypatch):
    from forelen.builders.engines import slots

    real = requirements.installed
    monkeypatch.setattr(requirements, "installed", lambda n: "2.4.1" if n == "torch" else real(n))
    with pytest.raises(ForelenError, match=r"needs torch>=2\.5 .*installed: 2\.4\.1"):
        slots.register()


# ---------------------------------------------------------------------------------------------
# the engine's tests on the declared minimums


@pytest.fixture(scope="module")
def minver_python() -> str:
    python = os.environ.get("FORELEN_MINVER_PYTHON")
    if not python:
        if not (ROOT / ".venv-minver" / ".complete").exists():
            pytest.skip("no virtualenv with the declared minimum torch and transformers "
                        "(.venv-minver): run scripts/minver_venv.sh (~5 GB: PyPI's torch of that "
                        "age is its CUDA build)")
        python = str(ROOT / ".venv-minver" / "bin" / "python")
    return python


@pytest.mark.slow
def test_engine_tests_pass_on_the_declared_minimums(minver_python):
    probe = subprocess.run(
        [minver_python, "-c", "from importlib.metadata import version; "
                              "print(' '.join(version(n) for n in ('torch', 'transformers')))"],
        capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:]
    for (name, (oldest, _)), have in zip(MINIMUM.items(), probe.stdout.split()):
        got, want = release(have), release(oldest)
        assert got == want + (0,) * (len(got) - len(want)), (
            f"{minver_python} holds {name} {have}, not the declared minimum {oldest}: rerun "
            "scripts/minver_venv.sh")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    run = subprocess.run([minver_python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          *ENGINE_TESTS], cwd=ROOT, capture_output=True, text=True, timeout=1800,
                         env=env)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout.strip().splitlines()[-1]
