#!/usr/bin/env bash
# CPU benchmark (issue 3): fixture A, 128 calibration windows, 50% sparsity + 4-bit, no evaluation,
# on this machine's cores. Writes test_results/cpu_bench_opt-mini-a.json (times per phase, peak RSS).
#   research/bench_cpu.sh [MODEL]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-../shared/fixtures/opt-mini-a}
cargo build -q
/usr/bin/time -v target/debug/sparsegpt-mi prune "$MODEL" c4 --sparsity 0.5 --wbits 4 --nsamples 128 \
  --eval-datasets "" --data-dir "${DATA_DIR:-../shared/data}" --json test_results/cpu_bench_$(basename "$MODEL").json 2> /tmp/cpu_bench_time.txt
grep -E "Elapsed|Maximum resident" /tmp/cpu_bench_time.txt
python3 -c "
import json,sys; d=json.load(open('test_results/cpu_bench_$(basename "$MODEL").json'))
print('cores:', $(nproc), 'phases (s):', {k: round(v, 1) for k, v in d['times'].items() if not isinstance(v, list)})"
