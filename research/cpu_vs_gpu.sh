#!/usr/bin/env bash
# Issue 5 check "PPL on the GPU equal to the CPU path within 0.5%": runs the CPU path of the
# GPU benchmark's runs (sgpt50, sgpt50w4, mi4; full 128-window calibration) evaluated on the
# first WINDOWS windows of each corpus, then compares with the GPU runs' per-window NLLs on
# the same windows (test_results/gpu/bench_ours_*.json, from research/bench_gpu.sh).
#   research/cpu_vs_gpu.sh [FIXTURES]      (WINDOWS=32 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
FIXTURES=${1:-opt-mini-a opt-mini-b}; WINDOWS=${WINDOWS:-32}
OUT=test_results/gpu_vs_cpu; mkdir -p $OUT
cargo build -q
for fx in $FIXTURES; do
  for cfg in "sgpt50:--sparsity 0.5" "sgpt50w4:--sparsity 0.5 --wbits 4" \
             "mi4:--sparsity 0.5 --wbits 4 --target-avg-bits 4.0 --use-mi-grouping 1 --n-groups 10"; do
    run=${cfg%%:*}
    [ -f $OUT/cpu_${fx}_$run.json ] || target/debug/sparsegpt-mi prune ../shared/fixtures/$fx c4 ${cfg#*:} \
      --max-windows $WINDOWS --json $OUT/cpu_${fx}_$run.json | tail -4
  done
done
python3 research/cpu_vs_gpu_table.py test_results/gpu $OUT > $OUT/README.md
cat $OUT/README.md
