#!/usr/bin/env bash
# Issue 15's engine check: this tool compresses FIXTURE and saves each run in the three formats
# (prune --save DIR --save-format dense|gptq|compressed-tensors), then
#   * scripts/check_exports.py loads the exports with transformers (compressed-tensors through the
#     compressed-tensors package; GPTQ through transformers + gptqmodel when they import, else
#     through the script's own dequantizer, written from docs/formats.md) and compares logits with
#     the dense export's on a fixed input (pass: max |Δ logit| <= 1e-2);
#   * this tool's `eval` reads every export back: window NLLs must equal the dense export's.
# Writes OUT/check_<fixture>_<run>.json, OUT/eval_<fixture>_<run>_<format>.json, OUT/logs/ and
# OUT/README.md (the table). Exit status: the number of failed checks.
#
#   checks/check_exports_run.sh BIN FIXTURE_DIR DATA_DIR OUT DEVICE [PYTHON]
#     DEVICE: cpu | cuda (prune, eval and the Python side all run there)
#     env NSAMPLES (default 16), MAX_WINDOWS (default 2), RUNS (default "gptq4 sgpt50w4 gptq3g128";
#     also gptq4g128, gptq4g64), FORMATS (default "dense gptq compressed-tensors"; dense is the reference and
#     always runs), EXTRA_FLAGS (added to every prune, e.g. "--dtype f16 --save-dtype f16" for a GPTQ
#     export of a bf16 model), PY_DTYPE (the dtype transformers loads the exports in, default float16)
set -uo pipefail
BIN=$1 FIXTURE=$2 DATA=$3 OUT=$4 DEVICE=$5 PY=${6:-python3}
NSAMPLES=${NSAMPLES:-16} MAX_WINDOWS=${MAX_WINDOWS:-2}
FX=$(basename "$FIXTURE")
mkdir -p "$OUT/logs"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
fails=0
declare -A FLAGS=(
  [gptq4]="--wbits 4"
  [sgpt50w4]="--sparsity 0.5 --wbits 4"
  [gptq3g128]="--wbits 3 --groupsize 128"
  [gptq4g128]="--wbits 4 --groupsize 128"
  [gptq4g64]="--wbits 4 --groupsize 64"
)
FORMATS="dense ${FORMATS:-gptq compressed-tensors}"; FORMATS=${FORMATS//dense dense/dense}
nll() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['results'][0]['window_mean_nll'])" "$1"; }
for run in ${RUNS:-gptq4 sgpt50w4 gptq3g128}; do
  ct_args=()
  for fmt in $FORMATS; do
    d=$WORK/${run}_$fmt
    log=$OUT/logs/prune_${FX}_${run}_$fmt.log
    if ! "$BIN" prune "$FIXTURE" c4 ${FLAGS[$run]} ${EXTRA_FLAGS:-} --nsamples "$NSAMPLES" --eval-datasets '' --device "$DEVICE" \
        --data-dir "$DATA" --save "$d" --save-format "$fmt" --json "$OUT/logs/prune_${FX}_${run}_$fmt.json" > "$log" 2>&1; then
      if grep -q "does not divide the layer width" "$log"; then
        echo "$run $fmt: refused by the tool (as documented): $(tail -1 "$log")"
        continue
      fi
      echo "$run $fmt: prune FAILED: $(tail -1 "$log")"; fails=$((fails + 1)); continue
    fi
    grep -E "^saved to|^note" "$log" | cut -c1-400
    "$BIN" eval "$d" --datasets wikitext2 --max-windows "$MAX_WINDOWS" --device "$DEVICE" --data-dir "$DATA" \
      --json "$OUT/eval_${FX}_${run}_$fmt.json" > "$OUT/logs/eval_${FX}_${run}_$fmt.log" 2>&1 \
      || { echo "$run $fmt: eval FAILED"; fails=$((fails + 1)); continue; }
    [ "$fmt" = gptq ] && ct_args+=(--gptq "$d")
    [ "$fmt" = compressed-tensors ] && ct_args+=(--ct "$d")
  done
  dense=$(nll "$OUT/eval_${FX}_${run}_dense.json")
  for fmt in gptq compressed-tensors; do
    f=$OUT/eval_${FX}_${run}_$fmt.json
    [ -f "$f" ] || continue
    got=$(nll "$f")
    if [ "$got" = "$dense" ]; then echo "$run $fmt: this tool's eval = dense export's, window NLLs $got"
    else echo "$run $fmt: this tool's eval DIFFERS: $got vs dense $dense"; fails=$((fails + 1)); fi
  done
  pydev=$DEVICE
  "$PY" scripts/check_exports.py --dense "$WORK/${run}_dense" "${ct_args[@]}" --device "$pydev" --dtype "${PY_DTYPE:-float16}" \
    --json "$OUT/check_${FX}_${run}.json" 2> "$OUT/logs/check_${FX}_${run}.err" || fails=$((fails + 1))
done
"$PY" - "$OUT" "$FX" <<'EOF' | tee "$OUT/README.md"
import glob, json, os, sys
out, fx = sys.argv[1], sys.argv[2]
print(f"# Packed exports of {fx} loaded outside this tool\n")
print("| run | export | loader | max abs Δlogit | argmax agreement | weights bit-exact | pass |")
print("|---|---|---|---|---|---|---|")
env = None
for p in sorted(glob.glob(os.path.join(out, f"check_{fx}_*.json"))):
    r = json.load(open(p))
    env = {k: r.get(k) for k in ("device", "dtype", "torch", "transformers", "compressed_tensors", "tokens", "input")}
    run = os.path.basename(p)[len(f"check_{fx}_"):-5]
    for name, e in r["exports"].items():
        if name == "dense":
            continue
        if not e.get("loaded"):
            print(f"| {run} | {name} | — | load failed: {e.get('error', '')[:120]} | | | FAIL |")
            continue
        print(f"| {run} | {name} | {e['loader']} | {e['max_abs_dlogit']:.3e} | {e['argmax_agreement']:.3f} | "
              f"{e['weights_bit_exact']} | {'PASS' if e['pass'] else 'FAIL'} |")
print(f"\nEnvironment: {env}")
print("\nThis tool's own read-back (eval of each export, window NLLs against the dense export's):\n")
for p in sorted(glob.glob(os.path.join(out, f"eval_{fx}_*_dense.json"))):
    run = os.path.basename(p)[len(f"eval_{fx}_"):-len("_dense.json")]
    dense = json.load(open(p))["results"][0]["window_mean_nll"]
    for fmt in ("gptq", "compressed-tensors"):
        q = os.path.join(out, f"eval_{fx}_{run}_{fmt}.json")
        if os.path.exists(q):
            got = json.load(open(q))["results"][0]["window_mean_nll"]
            print(f"- {run} {fmt}: {'equal' if got == dense else 'DIFFERENT'} ({got} vs {dense})")
EOF
echo "failed checks: $fails"
exit $fails
