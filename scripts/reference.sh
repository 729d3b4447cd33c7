#!/usr/bin/env bash
# The reference release of ForeLen (v0.2.0): build the cot, long, rl and chat configs of both
# packaged generators (SmolLM2-135M, Qwen2.5-Coder-0.5B) on the packaged prompts at pinned sizes,
# seed and each generator's pilot caps (src/forelen/pipelines/reference.toml), evaluate every
# registered predictor and the heads' variants, and release records, manifest and page into
# releases/. Every phase resumes, and a build runs as jobs whose compact folders are committed, so
# it can span several sessions; each build prints its dataset fingerprint. v0.1.0 is reproduced
# from the commit that made it.
#   bash scripts/reference.sh                          # all phases (hours on a 2-core CPU)
#   bash scripts/reference.sh --phase build --split cot --model qwen2.5-coder-0.5b
#   bash scripts/reference.sh --model Qwen2.5-3B --engine vllm --full --out /data/forelen
# Options: python scripts/reference.py --help
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/forelen ] || bash scripts/setup.sh
exec .venv/bin/python scripts/reference.py "$@"
