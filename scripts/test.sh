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
exec .venv/bin/python -m pytest -q "$@"
