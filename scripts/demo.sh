#!/usr/bin/env bash
# The main job on the embedded default: set up, build small long, cot and rl configs of ForeLen
# with the packaged SmolLM2-135M on packaged prompts into ./demo/forelen, then evaluate every
# registered predictor on them (result records in ./demo/results) and render the leaderboard page.
# Re-running resumes an interrupted build and leaves complete configs as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${FORELEN_DEMO_OUT:-demo/forelen}
build() { .venv/bin/forelen build --model smollm2-135m --out "$OUT" --seed 0 --skip-complete "$@"; }
build --split long --limit 24 --max-new-tokens 256 --max-prompt-tokens 1024
build --split cot --limit 64 --max-new-tokens 256
build --split rl --limit 12 --samples-per-prompt 8 --max-new-tokens 256
# Fit every registered predictor (hidden-state, text-proxy, references) on train, select on
# validation, score on test; each record also holds the simulated end-to-end scheduling result.
RESULTS=${FORELEN_DEMO_RESULTS:-demo/results}
.venv/bin/forelen evaluate --predictor all --data "$OUT" --results "$RESULTS"
echo
echo "dataset folder: $OUT  (python: datasets.load_dataset('$OUT', 'smollm2-135m-rl'))"
# The leaderboard page of this run (one self-contained HTML file); its path is the last line.
echo "leaderboard page:"
.venv/bin/forelen leaderboard render --results "$RESULTS"
