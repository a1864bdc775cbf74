#!/usr/bin/env bash
# One call on the GPU machine (H100/H200), from the repository root, with what
# checks/cuda/pack_carry.sh lays out under .carry/ carried:
#   bash checks/cuda/run_on_gpu.sh [quick]
# 1. the kernel harness (.carry/attention_check.xz: PASS/FAIL per check, timings),
# 2. the crate's fused-vs-generic GPU tests (.carry/cuda_forward_test.xz): OPT; the rotary
#    families' layers and kernels; the fixtures llama-rand-gqa and qwen2-rand end to end (fused,
#    generic and offloaded, bf16 and f16, against transformers' f32 NLLs) and a compression of
#    llama-rand-gqa calibrated through the fused path; the random-model eval throughput (opt-1.3b,
#    opt-6.7b, Llama-3-8B shapes),
# 3. torch baselines on the same GPU (checks/cuda/torch_baseline.py; skipped where torch is absent
#    or after minute 7 of the call).
# The fixtures come xz-compressed file by file (.carry/fxz/FX/*.xz) and WikiText-2 as
# .carry/wikitext2.tar.xz; they are laid out in /tmp/sgmi-shared for the tests. The CLI's view of
# the same families (every published llama.py run, bf16/f16/f32) is gpu/gpu_families.sh, a call of
# its own (the CLI, its data and both fixtures do not fit one call's 64 MiB beside the tests).
# Logs go to stdout and, where the device tool provides $OUT, to $OUT (gpu.txt, harness.txt,
# tests.txt, torch.txt, summary.txt).
# quick: small harness shapes only, no throughput tests, no torch baseline. harness / tests: only
# that part, at full size (two calls on the warm machine when the fixtures' upload and the test
# binary do not fit one call: the fixtures, once laid out, stay in /tmp/sgmi-shared).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUTDIR=${OUT:-/tmp/sgmi-gpu-run}
mkdir -p "$OUTDIR"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee "$OUTDIR/gpu.txt"
for f in attention_check cuda_forward_test; do
  [ -f ".carry/$f.xz" ] && xz -dc ".carry/$f.xz" > "/tmp/$f" && chmod +x "/tmp/$f"
done
# A ../shared-like folder for the tests: the fixtures (xz-compressed file by file) and WikiText-2.
S=/tmp/sgmi-shared
mkdir -p $S/fixtures $S/data
[ -f .carry/wikitext2.tar.xz ] && { rm -rf $S/data/wikitext2; tar -xJf .carry/wikitext2.tar.xz -C $S/data; }
for fx in llama-rand-gqa qwen2-rand; do
  [ -d ".carry/fxz/$fx" ] || continue
  mkdir -p "$S/fixtures/$fx"
  for f in .carry/fxz/$fx/*.xz; do xz -dc "$f" > "$S/fixtures/$fx/$(basename "${f%.xz}")"; done
done
export SPARSEGPT_MI_SHARED=$S
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}

if [ "${1:-}" = harness ]; then
  /tmp/attention_check 2>&1 | tee "$OUTDIR/harness.txt"; h=${PIPESTATUS[0]}
  echo "harness rc=$h" | tee "$OUTDIR/summary.txt"; exit $(( h != 0 ))
fi
if [ "${1:-}" = tests ]; then
  /tmp/cuda_forward_test --test-threads=1 --include-ignored --nocapture 2>&1 | tee "$OUTDIR/tests.txt"; t=${PIPESTATUS[0]}
  echo "tests rc=$t" | tee "$OUTDIR/summary.txt"; exit $(( t != 0 ))
fi
if [ "${1:-}" = quick ]; then
  /tmp/attention_check quick 2>&1 | tee "$OUTDIR/harness.txt"; h=${PIPESTATUS[0]}
  /tmp/cuda_forward_test --test-threads=1 --nocapture 2>&1 | tee "$OUTDIR/tests.txt"; t=${PIPESTATUS[0]}
  echo "harness rc=$h tests rc=$t" | tee "$OUTDIR/summary.txt"
  exit $(( h != 0 || t != 0 ))
fi
/tmp/attention_check 2>&1 | tee "$OUTDIR/harness.txt"; h=${PIPESTATUS[0]}
/tmp/cuda_forward_test --test-threads=1 --include-ignored --nocapture 2>&1 | tee "$OUTDIR/tests.txt"; t=${PIPESTATUS[0]}

if [ $SECONDS -gt 420 ]; then
  p=skipped; echo "no time left for the torch baseline" | tee "$OUTDIR/torch.txt"
elif python3 -c "import torch" 2>/dev/null; then
  python3 checks/cuda/torch_baseline.py 2>&1 | tee "$OUTDIR/torch.txt"; p=${PIPESTATUS[0]}
else
  p=skipped; echo "torch not installed: no torch baseline" | tee "$OUTDIR/torch.txt"
fi
echo "harness rc=$h tests rc=$t torch rc=$p" | tee "$OUTDIR/summary.txt"
exit $(( h != 0 || t != 0 ))
