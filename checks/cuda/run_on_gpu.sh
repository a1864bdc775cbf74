#!/usr/bin/env bash
# One call on the GPU machine (H100/H200), from the repository root, with .carry/ carried:
#   bash checks/cuda/run_on_gpu.sh [quick]
# 1. the kernel harness (.carry/attention_check.xz: PASS/FAIL per check, timings),
# 2. the crate's fused-vs-generic GPU tests and the random-model eval throughput
#    (.carry/cuda_forward_test.xz),
# 3. torch baselines on the same GPU (checks/cuda/torch_baseline.py).
# Logs go to stdout and, where the device tool provides $OUT, to $OUT/*.txt.
# quick: small harness shapes only, no throughput test, no torch baseline.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUTDIR=${OUT:-/tmp/sgmi-gpu-run}
mkdir -p "$OUTDIR"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee "$OUTDIR/gpu.txt"
for f in attention_check cuda_forward_test; do
  xz -dc ".carry/$f.xz" > "/tmp/$f" && chmod +x "/tmp/$f"
done
if [ "${1:-}" = quick ]; then
  /tmp/attention_check quick 2>&1 | tee "$OUTDIR/harness.txt"; h=${PIPESTATUS[0]}
  /tmp/cuda_forward_test --test-threads=1 --nocapture 2>&1 | tee "$OUTDIR/tests.txt"; t=${PIPESTATUS[0]}
  echo "harness rc=$h tests rc=$t"
  exit $(( h != 0 || t != 0 ))
fi
/tmp/attention_check 2>&1 | tee "$OUTDIR/harness.txt"; h=${PIPESTATUS[0]}
/tmp/cuda_forward_test --test-threads=1 --include-ignored --nocapture 2>&1 | tee "$OUTDIR/tests.txt"; t=${PIPESTATUS[0]}
python3 checks/cuda/torch_baseline.py 2>&1 | tee "$OUTDIR/torch.txt"; p=${PIPESTATUS[0]}
echo "harness rc=$h tests rc=$t torch rc=$p" | tee "$OUTDIR/summary.txt"
exit $(( h != 0 || t != 0 ))
