#!/usr/bin/env bash
# A real GPTQ client on the CPU: transformers + optimum + GPTQModel's torch kernel load this tool's
# GPTQ exports, and every packed linear's weight as GPTQModel dequantizes it must equal the dense
# export of the same run (checks/gptqmodel_check.py). Runs OPT (opt-mini-a, f16) and Llama
# (llama-rand-gqa, bf16, saved with --save-dtype f16) with per-row, grouped and act-order grids.
# Writes OUT/<fixture>_<run>.json, OUT/logs/ and OUT/README.md (the table, the versions, the
# machine). Exit status: the number of failed checks.
#
#   checks/gptqmodel_check.sh BIN OUT [PYTHON]
#     PYTHON: a Python with torch, transformers, optimum and gptqmodel (GPTQModel ships no binary
#     wheel: `BUILD_CUDA_EXT=0 pip wheel --no-deps --no-build-isolation gptqmodel==7.7.0` builds a
#     pure-Python one; README "Checks" lists the whole environment).
#     env NSAMPLES (default 8), SHARED (default ../shared), DEVICE (cpu).
set -uo pipefail
BIN=$1 OUT=$2 PY=${3:-.venv-gptq/bin/python}
SHARED=${SHARED:-../shared} NSAMPLES=${NSAMPLES:-8} DEVICE=${DEVICE:-cpu}
mkdir -p "$OUT/logs"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# GPTQModel's torch kernel compiles its dequantization with torch.compile unless told not to;
# the eager path is the same arithmetic, and needs no compiler on the machine.
export TORCH_COMPILE_DISABLE=${TORCH_COMPILE_DISABLE:-1}
fails=0
# fixture:run:flags (the llama fixture is bf16: GPTQ stores f16, so --save-dtype f16).
CASES=(
  "opt-mini-a:w4:--wbits 4"
  "opt-mini-a:w4g128:--wbits 4 --groupsize 128"
  "opt-mini-a:w4g128_actorder:--wbits 4 --groupsize 128 --act-order --act-groups dynamic"
  "opt-mini-a:w4g128_actorder_groupaware:--wbits 4 --groupsize 128 --act-order"
  "opt-mini-a:sgpt50w4:--sparsity 0.5 --wbits 4"
  "llama-rand-gqa:w4:--wbits 4 --save-dtype f16"
  "llama-rand-gqa:w4g64:--wbits 4 --groupsize 64 --save-dtype f16"
  "llama-rand-gqa:w4g64_actorder:--wbits 4 --groupsize 64 --act-order --act-groups dynamic --save-dtype f16"
  "llama-rand-gqa:w8g128_short_last_group:--wbits 8 --groupsize 128 --save-dtype f16"
)
for case in "${CASES[@]}"; do
  IFS=: read -r fx run flags <<< "$case"
  ok=1
  for fmt in dense gptq; do
    d=$WORK/${fx}_${run}_$fmt
    if ! "$BIN" prune "$SHARED/fixtures/$fx" c4 $flags --nsamples "$NSAMPLES" --eval-datasets '' --device "$DEVICE" \
        --data-dir "$SHARED/data" --save "$d" --save-format "$fmt" --json "$OUT/logs/prune_${fx}_${run}_$fmt.json" \
        > "$OUT/logs/prune_${fx}_${run}_$fmt.log" 2>&1; then
      echo "$fx $run $fmt: prune FAILED: $(tail -1 "$OUT/logs/prune_${fx}_${run}_$fmt.log")"; ok=0
    fi
  done
  if [ $ok = 1 ]; then
    "$PY" checks/gptqmodel_check.py --dense "$WORK/${fx}_${run}_dense" --gptq "$WORK/${fx}_${run}_gptq" \
      --device "$DEVICE" --json "$OUT/${fx}_${run}.json" 2> "$OUT/logs/check_${fx}_${run}.err" || fails=$((fails + 1))
  else
    fails=$((fails + 1))
  fi
done
"$PY" - "$OUT" "${CASES[@]}" <<'EOF' | tee "$OUT/README.md"
import json, os, platform, subprocess, sys
out, cases = sys.argv[1], sys.argv[2:]
print("# GPTQ exports through a real GPTQ client (transformers + optimum + GPTQModel's torch kernel)\n")
print("| fixture | run | flags | packed linears | kernel | max abs ΔW vs dense export | bit-exact | other tensors equal | max abs Δlogit (f16) | dense f16 vs f32 | pass |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
versions = None
for case in cases:
    fx, run, flags = case.split(":", 2)
    p = os.path.join(out, f"{fx}_{run}.json")
    if not os.path.exists(p):
        print(f"| {fx} | {run} | `{flags}` | — | — | — | — | — | — | — | FAIL (no result; see logs/) |")
        continue
    r = json.load(open(p))
    versions = r.get("versions", versions)
    if "error" in r:
        print(f"| {fx} | {run} | `{flags}` | — | — | {r['error'][:160]} | | | | | FAIL |")
        continue
    kernel = ", ".join(k.rsplit(".", 1)[-1] for k in r["kernels"])
    print(f"| {fx} | {run} | `{flags}` | {r['linears_compared']} | {kernel} | {r['max_abs_dweight']:.3e} | "
          f"{r['weights_bit_exact']} | {r['other_tensors_equal']} | {r['max_abs_dlogit']:.3e} | "
          f"{r['dense_f16_vs_f32_max_abs_dlogit']:.3e} | {'PASS' if r['pass'] else 'FAIL'} |")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"\nVersions: {versions}\n\nMachine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}.")
EOF
echo "failed checks: $fails"
exit $fails
