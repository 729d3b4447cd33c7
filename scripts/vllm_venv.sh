#!/usr/bin/env bash
# Make .venv-vllm: vllm in its own virtualenv (vllm pins its own torch; the project's .venv holds
# the CPU torch). tests/test_vllm_api.py checks the vllm engine's calls against it, and skips
# without it. FORELEN_VLLM=<version> picks another vllm. About 5 GB (vllm's CUDA wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VERSION=${FORELEN_VLLM:-0.33.0}
[ "$(cat .venv-vllm/.complete 2>/dev/null)" = "$VERSION" ] && exit 0
rm -rf .venv-vllm
"$PY" -m venv .venv-vllm
.venv-vllm/bin/python -m pip install -q --upgrade pip
.venv-vllm/bin/python -m pip install -q "vllm==$VERSION"
echo "$VERSION" > .venv-vllm/.complete  # the test uses only a finished install
