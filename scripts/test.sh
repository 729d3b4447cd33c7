#!/usr/bin/env bash
# Run the test suite (sets up ./.venv first if needed). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The leaderboard page is tested in a real headless Chromium (Debian `chromium`, driven by
# playwright). Install it where we may; without it that test skips and says why.
if ! command -v chromium >/dev/null 2>&1 && [ -z "${FORELEN_CHROMIUM:-}" ] \
   && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 \
         && apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; } \
    || echo "note: could not install chromium; the browser test will skip" >&2
fi
# vllm's API is checked against the real package in its own virtualenv (tests/test_vllm_api.py;
# vllm pins its own torch). It takes about 10 GB; where it cannot be made, those tests skip.
if [ "${FORELEN_VLLM_VENV:-1}" = 1 ]; then
  free_gb=$(df -Pk . | awk 'NR==2 {print int($4 / 1048576)}')
  if [ "$free_gb" -ge 20 ]; then
    bash scripts/vllm_venv.sh \
      || { rm -rf .venv-vllm; echo "note: could not make .venv-vllm; the vllm API tests skip" >&2; }
  else
    echo "note: ${free_gb} GB free, too little for .venv-vllm (~10 GB); the vllm API tests skip" >&2
  fi
fi
# The engine's tests also run on the oldest torch and transformers pyproject.toml declares, in
# .venv-minver (tests/test_min_versions.py). PyPI's torch of that age is its CUDA build: about 3 GB
# to download, 5 GB on disk, 1.5 min to make. Where it cannot be made, that test skips.
if [ "${FORELEN_MINVER_VENV:-1}" = 1 ]; then
  free_gb=$(df -Pk . | awk 'NR==2 {print int($4 / 1048576)}')
  if [ "$free_gb" -ge 12 ]; then
    bash scripts/minver_venv.sh \
      || { rm -rf .venv-minver; echo "note: could not make .venv-minver; its test skips" >&2; }
  else
    echo "note: ${free_gb} GB free, too little for .venv-minver (~5 GB); its test skips" >&2
  fi
fi
exec .venv/bin/python -m pytest -q "$@"
