#!/usr/bin/env bash
# The reduced-precision null on the CPU (issue 27), for machines without a GPU: the published code
# (research/published_harness.py) and this tool on llama-rand-gqa in f16 on the CPU, the
# reference runs' own flags. Per RUN: the published code with f32 scales (P, as published) and with
# this tool's f16 scales (P_s; a run without quantization has none: P_s = P), P_s with every layer's calibration inputs perturbed by one f16
# rounding (relative 2^-11, seeds 1..DRAWS: P_s_paN), and this tool (`--dtype f16`). Is the tool one
# more draw of P_s's rounding spread? (research/cpu_f16_null_table.py OUT)
#
#   research/cpu_f16_null.sh OUT PYTHON BIN [RUNS (gptq4 sgpt50)] [DRAWS (4)]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$1 PY=$2 BIN=$3 RUNS=${4:-gptq4 sgpt50} DRAWS=${5:-4}
REF=../shared/reference/llama-rand-gqa
mkdir -p "$OUT"
flags_of() {  # RUN published|ours: the reference run's flags for the published harness or this tool
  python3 - "$REF/$1.json" "$2" <<'PY'
import json, sys
sys.path.insert(0, "research")
from reference_table import flags, published_flags
a = json.load(open(sys.argv[1]))["args"]
if sys.argv[2] == "published":
    print(" ".join(published_flags(a)))
else:
    print(" ".join([x for x in flags(a) if x != "--keep-compute-dtype"] + ["--max-windows", str(a["max_windows"])]))
PY
}
published() {  # NAME EXTRA...
  local name=$1; shift
  [ -f "$OUT/$name.json" ] && return 0
  # shellcheck disable=SC2046
  "$PY" research/published_harness.py ../shared/fixtures/llama-rand-gqa $(flags_of "$run" published) --device cpu \
    --dtype float16 --threads 2 --data-dir ../shared/data --json "$OUT/$name.json" "$@" > "$OUT/$name.log" 2>&1
  echo "$name: done"
}
for run in $RUNS; do
  published "P_${run}" --scale-dtype float32
  # A run without quantization has no scales: P_s is P, and its draws perturb P.
  quantized=$(python3 -c "import json, sys; print(int(json.load(open(sys.argv[1]))['args']['wbits'] < 16))" "$REF/$run.json")
  s=Ps; [ "$quantized" = 1 ] || s=P
  [ "$quantized" = 1 ] && published "Ps_${run}" --scale-dtype float16
  for k in $(seq 1 "$DRAWS"); do
    published "${s}_${run}_pa$k" --scale-dtype float16 --perturb-inputs "$k" --perturb-log2 -11 --perturb-every-layer
  done
  if [ ! -f "$OUT/ours_${run}.json" ]; then
    # shellcheck disable=SC2046
    "$BIN" prune ../shared/fixtures/llama-rand-gqa c4 $(flags_of "$run" ours) --dtype f16 --data-dir ../shared/data \
      --json "$OUT/ours_${run}.json" > "$OUT/ours_${run}.log" 2>&1
    echo "ours_$run: done"
  fi
done
