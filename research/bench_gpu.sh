#!/usr/bin/env bash
# GPU benchmark, run ON the GPU machine: sparsegpt-mi (CUDA build) and the published code on the
# same fixture and settings, in one call, one after another on the same card.
#
#   research/bench_gpu.sh BIN PUBLISHED_SPARSEGPT_DIR PUBLISHED_GPTQ_DIR SHARED_DIR OUT_DIR [FIXTURES]
#
# BIN: the CUDA binary (scripts/build_cuda.sh, carried xz-compressed). The published dirs hold
# IST-DASLab/sparsegpt (sparsegpt.py, quant.py) and IST-DASLab/gptq (gptq.py, quant.py), fetched
# and carried, never committed. Writes OUT_DIR/bench_*.json and OUT_DIR/bench_gpu.md.
#
# Environment: RUNS (default "sgpt50 sgpt50w4 gptq4"), PUB_RUNS (the published code's, default
# RUNS; "" for none), VARIANTS (ours again with each as a flag, e.g. "offload": run sgpt50-offload
# with --offload, compared with the same published run), EVAL (corpora, default all three), MI=0 (skip the MI run), RANDOM_SHAPES="1.3b:24 6.7b:8" (random-weight
# checkpoints with those widths and layer counts, made here by scripts/make_random_opt.py, added
# to FIXTURES as rand-SHAPE-LN).
set -euo pipefail
BIN=$1; PUB_SGPT=$2; PUB_GPTQ=$3; SHARED=$4; OUT=$5; FIXTURES=${6-opt-mini-a opt-mini-b}
RUNS=${RUNS:-sgpt50 sgpt50w4 gptq4}; EVAL=${EVAL:-wikitext2,ptb,c4}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUT/card.txt"
source "$HERE/peak_mem.sh"
for spec in ${RANDOM_SHAPES:-}; do
  shape=${spec%%:*}; layers=${spec#*:}; name=rand-$shape-L$layers
  [ -f "$SHARED/fixtures/$name/model.safetensors" ] || python3 "$HERE/../scripts/make_random_opt.py" "$shape" "$SHARED/fixtures/$name" \
    --layers "$layers" --tokenizer-from "$SHARED/data/opt-tokenizer" > /dev/null
  FIXTURES="$FIXTURES $name"
done
FIXTURES=$(echo $FIXTURES)
# Warm the driver's PTX cache once (candle's kernels are JIT-compiled on first use): a short
# compress + an evaluation of one full batch of windows and a partial one, since a dense
# evaluation, or one of a single window, leaves kernels of the benchmarked evaluation cold
# (p5, p6: 65k tokens/s cold, 153k warm). A cache large enough for all of them.
export CUDA_CACHE_MAXSIZE=${CUDA_CACHE_MAXSIZE:-4294967296}
"$BIN" prune "$SHARED/fixtures/${FIXTURES%% *}" c4 --sparsity 0.5 --wbits 4 --nsamples 2 --device cuda \
  --eval-datasets ptb --max-windows 9 --data-dir "$SHARED/data" --json "$OUT/warmup.json" > /dev/null
for fx in $FIXTURES; do
  for cfg in "sgpt50:sparsegpt:--sparsity 0.5" "sgpt50w4:sparsegpt:--sparsity 0.5 --wbits 4" "gptq4:gptq:--wbits 4"; do
    run=${cfg%%:*}; rest=${cfg#*:}; method=${rest%%:*}; flags=${rest#*:}
    [[ " $RUNS " == *" $run "* ]] || continue
    pub=$PUB_SGPT; [ "$method" = gptq ] && pub=$PUB_GPTQ
    for variant in "" ${VARIANTS:-}; do
      name=$run${variant:+-$variant}
      # --no-true-sequential: the published code's one calibration pass (the tool's default when
      # quantizing is true-sequential), like for like.
      peak_mem "$OUT/bench_ours_${fx}_$name.mem" "$BIN" prune "$SHARED/fixtures/$fx" c4 $flags --no-true-sequential ${variant:+--$variant} --device cuda \
        --eval-datasets "$EVAL" --data-dir "$SHARED/data" --json "$OUT/bench_ours_${fx}_$name.json" > "$OUT/bench_ours_${fx}_$name.log" 2>&1 || true
    done
    [[ " ${PUB_RUNS-$RUNS} " == *" $run "* ]] || continue
    peak_mem "$OUT/bench_ref_${fx}_$run.mem" python3 "$HERE/published_harness.py" "$SHARED/fixtures/$fx" \
      --published "$pub" --method "$method" $flags --data-dir "$SHARED/data" --eval "$EVAL" \
      --json "$OUT/bench_ref_${fx}_$run.json" > "$OUT/bench_ref_${fx}_$run.log" 2>&1 || true
  done
done
# MI mode (ours only; no published counterpart).
[ "${MI:-1}" = 0 ] && FIXTURES=""
for fx in $FIXTURES; do
  peak_mem "$OUT/bench_ours_${fx}_mi4.mem" "$BIN" prune "$SHARED/fixtures/$fx" c4 --sparsity 0.5 --wbits 4 \
    --target-avg-bits 4.0 --use-mi-grouping 1 --n-groups 10 --device cuda --data-dir "$SHARED/data" \
    --json "$OUT/bench_ours_${fx}_mi4.json" > "$OUT/bench_ours_${fx}_mi4.log" 2>&1 || true
done
python3 "$HERE/bench_table.py" "$OUT" > "$OUT/bench_gpu.md"
cat "$OUT/bench_gpu.md"
