#!/usr/bin/env bash
# The published code (research/published_harness.py, CPU f32, the reference runs' own flags from
# ../shared/reference/llama-rand-gqa) with this tool's one quantizer deviation: the grids' scales
# held in DTYPE (--scale-dtype), zero points from the rounded scale. How far that deviation alone
# moves the published code's PPL, beside the reference made without it (research/scale_dtype_table.py).
#
#   research/published_scale_dtype.sh OUT PYTHON [DTYPE (bfloat16)] [RUNS (the quantized reference runs)]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$1 PY=$2 DT=${3:-bfloat16}
RUNS=${4:-gptq3g128 gptq4 gptq4act gptq4ts sgpt50w4}
REF=../shared/reference/llama-rand-gqa
mkdir -p "$OUT"
for run in $RUNS; do
  flags=$(python3 -c 'import json, sys; sys.path.insert(0, "research"); from reference_table import published_flags
print(" ".join(published_flags(json.load(open(sys.argv[1]))["args"])))' "$REF/$run.json")
  # shellcheck disable=SC2086
  "$PY" research/published_harness.py ../shared/fixtures/llama-rand-gqa $flags --device cpu --dtype float32 --threads 2 \
    --data-dir ../shared/data --scale-dtype "$DT" --json "$OUT/P_${run}_f32_scale_$DT.json" > "$OUT/P_${run}_$DT.log" 2>&1
  echo "$run: done"
done
