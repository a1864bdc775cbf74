#!/usr/bin/env bash
# One call on the GPU machine (H100/H200), from the repository root, with .carry/ carried
# (checks/cuda/pack_carry.sh lays it out):
#   bash checks/cuda/run_on_gpu.sh [quick]
# 1. the kernel harness (.carry/attention_check.xz: PASS/FAIL per check, timings),
# 2. the crate's fused-vs-generic GPU tests (OPT; the rotary families' layers, kernels and the
#    fixtures llama-rand-gqa and qwen2-rand end to end) and the random-model eval throughput
#    (.carry/cuda_forward_test.xz),
# 3. the CLI (.carry/sparsegpt-mi-cuda.xz) on the two rotary fixtures: eval of the first two
#    WikiText-2 windows fused, generic (SPARSEGPT_MI_CUDA_FUSED=0) and offloaded, bf16 and f16,
#    against transformers' f32 NLLs; SparseGPT 50% and GPTQ 4-bit on llama-rand-gqa (calibration
#    through the fused path) fused and generic (SparseGPT offloaded too), against the published
#    code's f32 PPL,
# 4. torch baselines on the same GPU (checks/cuda/torch_baseline.py; skipped where torch is absent).
# Logs go to stdout and, where the device tool provides $OUT, to $OUT (gpu.txt, harness.txt,
# tests.txt, families.txt, cli.tar.xz: the CLI runs' JSONs and logs, torch.txt, summary.txt).
# quick: small harness shapes only, no throughput tests, no torch baseline.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUTDIR=${OUT:-/tmp/sgmi-gpu-run}
mkdir -p "$OUTDIR"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee "$OUTDIR/gpu.txt"
for f in attention_check cuda_forward_test sparsegpt-mi-cuda; do
  [ -f ".carry/$f.xz" ] && xz -dc ".carry/$f.xz" > "/tmp/$f" && chmod +x "/tmp/$f"
done
# A ../shared-like folder for the tests and the CLI: fixtures (xz-compressed file by file) and data.
S=/tmp/sgmi-shared
mkdir -p $S/fixtures $S/data
[ -f .carry/data.tar.xz ] && { [ -d $S/data/wikitext2 ] || tar -xJf .carry/data.tar.xz -C $S/data; }
[ -d .carry/reference ] && { rm -rf $S/reference; cp -r .carry/reference $S/reference; }
for fx in llama-rand-gqa qwen2-rand; do
  [ -d ".carry/fxz/$fx" ] || continue
  mkdir -p "$S/fixtures/$fx"
  for f in .carry/fxz/$fx/*.xz; do xz -dc "$f" > "$S/fixtures/$fx/$(basename "${f%.xz}")"; done
done
export SPARSEGPT_MI_SHARED=$S
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}

if [ "${1:-}" = quick ]; then
  /tmp/attention_check quick 2>&1 | tee "$OUTDIR/harness.txt"; h=${PIPESTATUS[0]}
  /tmp/cuda_forward_test --test-threads=1 --nocapture 2>&1 | tee "$OUTDIR/tests.txt"; t=${PIPESTATUS[0]}
  echo "harness rc=$h tests rc=$t" | tee "$OUTDIR/summary.txt"
  exit $(( h != 0 || t != 0 ))
fi
/tmp/attention_check 2>&1 | tee "$OUTDIR/harness.txt"; h=${PIPESTATUS[0]}
/tmp/cuda_forward_test --test-threads=1 --include-ignored --nocapture 2>&1 | tee "$OUTDIR/tests.txt"; t=${PIPESTATUS[0]}

# 3. the CLI on the rotary fixtures (each stage below starts only with enough of the device
# call's 10 minutes left; what is skipped is said in summary.txt)
BIN=/tmp/sparsegpt-mi-cuda
C=$OUTDIR/cli; mkdir -p $C
c=0
[ $SECONDS -gt 330 ] && c=skipped
[ "$c" = skipped ] || for fx in llama-rand-gqa qwen2-rand; do
  for dt in auto f16; do
    for v in fused generic offload; do
      env=""; extra=""
      [ $v = generic ] && env="SPARSEGPT_MI_CUDA_FUSED=0"
      [ $v = offload ] && extra="--offload"
      env $env $BIN eval $S/fixtures/$fx --device cuda --dtype $dt $extra --datasets wikitext2 --max-windows 2 \
        --data-dir $S/data --json $C/eval_${fx}_${dt}_$v.json > $C/eval_${fx}_${dt}_$v.log 2>&1 || { c=1; tail -2 $C/eval_${fx}_${dt}_$v.log; }
    done
  done
done
[ "$c" = skipped ] || for run in sgpt50:"--sparsity 0.5" gptq4:"--wbits 4"; do
  for v in fused generic offload; do
    [ ${run%%:*} = gptq4 ] && [ $v = offload ] && continue
    env=""; extra=""
    [ $v = generic ] && env="SPARSEGPT_MI_CUDA_FUSED=0"
    [ $v = offload ] && extra="--offload"
    env $env $BIN prune $S/fixtures/llama-rand-gqa c4 ${run#*:} --nsamples 32 --max-windows 16 --device cuda $extra \
      --data-dir $S/data --json $C/prune_${run%%:*}_$v.json > $C/prune_${run%%:*}_$v.log 2>&1 || { c=1; tail -2 $C/prune_${run%%:*}_$v.log; }
  done
done
[ "$c" = skipped ] || python3 - "$C" "$S" <<'PY' | tee "$OUTDIR/families.txt"
import json, os, sys
c, s = sys.argv[1], sys.argv[2]
load = lambda p: json.load(open(p)) if os.path.exists(p) else None
print("CLI eval, first two WikiText-2 windows' mean NLL; relative to transformers 5.17 f32 (CPU)")
for fx in ["llama-rand-gqa", "qwen2-rand"]:
    ref = json.load(open(os.path.join(s, "fixtures", fx, "reference.json")))["wikitext2_window_mean_nll"]
    for dt in ["auto", "f16"]:
        for v in ["fused", "generic", "offload"]:
            j = load(os.path.join(c, f"eval_{fx}_{dt}_{v}.json"))
            if j is None:
                print(f"{fx} {dt} {v}: failed"); continue
            nll = j["results"][0]["window_mean_nll"]
            cells = "  ".join(f"{g:.6f} ({(g - r) / r:+.2e})" for g, r in zip(nll, ref))
            print(f"{fx:15s} {j['dtype']:5s} {v:8s} {cells}")
print("\nCLI prune of llama-rand-gqa (32 calibration windows, first 16 evaluation windows), PPL; "
      "relative to the published llama.py in f32 on the CPU (../shared/reference/llama-rand-gqa)")
for run in ["sgpt50", "gptq4"]:
    ref = load(os.path.join(s, "reference", "llama-rand-gqa", f"{run}.json"))
    for v in ["fused", "generic", "offload"] if run == "sgpt50" else ["fused", "generic"]:
        j = load(os.path.join(c, f"prune_{run}_{v}.json"))
        if j is None:
            print(f"{run} {v}: failed"); continue
        cells = "  ".join(f"{d} {j['ppl'][d]:.1f}" + (f" ({100 * (j['ppl'][d] - ref['ppl'][d]) / ref['ppl'][d]:+.3f}%)" if ref else "")
                          for d in ["wikitext2", "ptb", "c4"])
        print(f"{run:6s} {j.get('dtype', ''):5s} {v:8s} {cells}  zeros {j['zero_fraction']:.4f}")
PY
# the device tool returns at most 8 files: the runs' JSONs and logs as one archive
[ -d "$C" ] && tar -cJf "$OUTDIR/cli.tar.xz" -C "$OUTDIR" cli && rm -rf "$C"
if [ $SECONDS -gt 480 ]; then
  p=skipped; echo "no time left for the torch baseline" | tee "$OUTDIR/torch.txt"
elif python3 -c "import torch" 2>/dev/null; then
  python3 checks/cuda/torch_baseline.py 2>&1 | tee "$OUTDIR/torch.txt"; p=${PIPESTATUS[0]}
else
  p=skipped; echo "torch not installed: no torch baseline" | tee "$OUTDIR/torch.txt"
fi
echo "harness rc=$h tests rc=$t cli rc=$c torch rc=$p" | tee "$OUTDIR/summary.txt"
[ "$c" = skipped ] && c=0 && echo "the CLI runs were skipped (no time left)" | tee -a "$OUTDIR/summary.txt"
exit $(( h != 0 || t != 0 || c != 0 ))
