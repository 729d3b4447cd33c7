#!/usr/bin/env bash
# Make .venv-minver: the lowest torch, transformers and numpy that pyproject.toml declares (their
# `>=` floors, read from it), pytest, and forelen installed editable without its dependencies.
# tests/test_min_versions.py runs the engine's tests there, so a floor the code has outgrown is
# caught; it skips without this venv. PyPI's Linux torch of that age is its CUDA build (it runs on
# the CPU): about 3 GB downloaded, 5 GB on disk.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
floor() {  # "torch>=2.5" in pyproject.toml's dependencies -> 2.5
  local v
  v=$(sed -n "s/^ *\"$1>=\([0-9][0-9.]*\)\".*/\1/p" pyproject.toml)
  [ -n "$v" ] || { echo "minver_venv.sh: no \"$1>=...\" in pyproject.toml" >&2; exit 1; }
  echo "$v"
}
PINS="torch==$(floor torch) transformers==$(floor transformers) numpy==$(floor numpy)"
[ "$(cat .venv-minver/.complete 2>/dev/null)" = "$PINS" ] && exit 0
rm -rf .venv-minver
"$PY" -m venv .venv-minver
.venv-minver/bin/python -m pip install -q --upgrade pip
# shellcheck disable=SC2086  # PINS is a list of requirements
.venv-minver/bin/python -m pip install -q $PINS "pytest>=8"
.venv-minver/bin/python -m pip install -q --no-deps -e .
echo "$PINS" > .venv-minver/.complete  # the test uses only a finished install
