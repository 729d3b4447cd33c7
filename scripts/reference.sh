#!/usr/bin/env bash
# The reference release of ForeLen (v0.1.0): build the long, cot and rl configs with the packaged
# SmolLM2-135M on the packaged prompts at pinned sizes and seeds, evaluate every registered
# predictor, and release records, manifest and page into releases/. Every phase resumes, so a
# build can run across several sessions; each build prints its dataset fingerprint.
#   bash scripts/reference.sh                          # all phases (hours on a 2-core CPU)
#   bash scripts/reference.sh --phase build --split cot
#   bash scripts/reference.sh --model Qwen2.5-3B --engine vllm --full --out /data/forelen
# Options: python scripts/reference.py --help
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/forelen ] || bash scripts/setup.sh
exec .venv/bin/python scripts/reference.py "$@"
