"""The `vllm` engine's calls checked against the real vllm package.

vllm 0.33 pins torch 2.14 and the project's venv holds torch 2.13, so the package lives in its own
virtualenv (`scripts/vllm_venv.sh` makes `.venv-vllm`; FORELEN_VLLM_PYTHON names another). The
probe imports it there and reports signatures and fields; every name in `VLLM_API` must be among
them. Where no such virtualenv could be made, the test skips and says why.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from forelen.builders.engines.vllm import VLLM_API
from forelen.replay_vllm import VLLM_SERVE_API

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def api() -> dict:
    python = os.environ.get("FORELEN_VLLM_PYTHON")
    if not python:
        if not (ROOT / ".venv-vllm" / ".complete").exists():
            pytest.skip("no virtualenv with vllm (.venv-vllm): run scripts/vllm_venv.sh; vllm pins "
                        "its own torch, so it cannot share .venv")
        python = str(ROOT / ".venv-vllm" / "bin" / "python")
    probe = subprocess.run([python, str(Path(__file__).with_name("vllm_api_probe.py"))],
                           capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, CUDA_VISIBLE_DEVICES="",
                                    VLLM_LOGGING_LEVEL="ERROR"))
    assert probe.returncode == 0, probe.stderr[-3000:]
    return json.loads(probe.stdout.strip().splitlines()[-1])


USED = {**VLLM_API, **VLLM_SERVE_API}  # the offline engine and `forelen replay --engine vllm`


@pytest.mark.parametrize("name", sorted(USED))
def test_every_name_the_engine_uses_exists(api, name):
    have = set(api[name])
    if name == "LLM" and "**" in have:  # LLM(**kwargs) passes engine options on to EngineArgs
        have |= set(api["EngineArgs"])
    missing = [n for n in USED[name] if n not in have]
    assert not missing, f"vllm {api['version']} {name} lacks {missing}"


def test_sampling_params_and_tokens_prompt_build(api):
    assert api["built"] == {"SamplingParams": [1, 0.7, 0.9, 8, 3], "TokensPrompt": [1, 2, 3]}
