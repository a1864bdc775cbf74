#!/usr/bin/env bash
# Tests scripts/check_exports.py on synthetic exports written by tests/helpers/write_test_exports.py
# (a test aid: RTN min-max codes of a fixture, written as dense + GPTQ + compressed-tensors).
# Every case must PASS (bit-exact weights, max |Δlogit| ≤ tol) except the ones marked "expect
# FAIL", which check that the checker catches a broken export. Writes test_results/export/check_*.json
# and check_exports.txt.
#   checks/test_check_exports.sh [PYTHON]      (default: .pyenv/bin/python, a CPU venv)
set -u
cd "$(dirname "$0")/.."
PY=${1:-.pyenv/bin/python}
FIX=../shared/fixtures
OUT=test_results/export
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT"
LOG=$OUT/check_exports.txt
: > "$LOG"
fails=0

run() { # name expect(pass|fail) model writer-args... -- checker-args...
  local name=$1 expect=$2 model=$3; shift 3
  local wargs=() cargs=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do wargs+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  cargs=("$@")
  local d=$TMP/$name
  echo "== $name (expect $expect): $model ${wargs[*]}" | tee -a "$LOG"
  "$PY" tests/helpers/write_test_exports.py --model "$FIX/$model" --out "$d" "${wargs[@]}" 2>&1 | tee -a "$LOG"
  local args=(--dense "$d/dense" --json "$OUT/check_$name.json")
  [ -d "$d/gptq" ] && args+=(--gptq "$d/gptq")
  [ -d "$d/ct" ] && args+=(--ct "$d/ct")
  if [ ${#cargs[@]} -gt 0 ]; then args=("${cargs[@]//@D@/$d}" --json "$OUT/check_$name.json"); fi
  "$PY" scripts/check_exports.py "${args[@]}" 2>"$TMP/err" | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  if { [ "$expect" = pass ] && [ "$rc" -eq 0 ]; } || { [ "$expect" = fail ] && [ "$rc" -eq 1 ]; }; then
    echo "-> as expected (rc $rc)" | tee -a "$LOG"
  else
    echo "-> UNEXPECTED (rc $rc)" | tee -a "$LOG"; tail -5 "$TMP/err" | tee -a "$LOG"; fails=$((fails + 1))
  fi
  echo | tee -a "$LOG"
}

run postln_4b_g64_asym pass opt-rand-postln --bits 4 --group-size 64
run miniB_3b_g64_sym pass opt-mini-b --bits 3 --group-size 64 --sym
run miniB_2b_channel_asym_actorder pass opt-mini-b --bits 2 --group-size -1 --act-order
run miniB_8b_g32_asym pass opt-mini-b --bits 8 --group-size 32
run miniB_mixed_4b_8b_g64_asym pass opt-mini-b --bits 4 --group-size 64 --mixed
# in = 192 with groups of 128: a short last group (GPTQ holds it: groups = ceil(in / 128));
# act-order groups, so no ct export (its "group" actorder was removed).
run miniB_4b_g128_asym_actorder_gptq pass opt-mini-b --bits 4 --group-size 128 --act-order
# The same short last group in compressed-tensors: its group strategy requires in % group_size == 0.
run miniB_4b_g128_ct_short_group fail opt-mini-b --bits 4 --group-size 128 --formats dense,ct
# The checker must catch a wrong reference: compare the quantized exports with the original model.
run postln_vs_original fail opt-rand-postln --bits 4 --group-size 64 -- --dense "$FIX/opt-rand-postln" --gptq @D@/gptq --ct @D@/ct

# A corrupted GPTQ word (one qweight int32 flipped) must be caught too.
name=postln_corrupt_qweight
d=$TMP/$name
echo "== $name (expect fail)" | tee -a "$LOG"
"$PY" tests/helpers/write_test_exports.py --model "$FIX/opt-rand-postln" --out "$d" --bits 4 --group-size 64 --formats dense,gptq >/dev/null
"$PY" - "$d/gptq/model.safetensors" <<'EOF'
import sys
from safetensors.torch import load_file, save_file
p = sys.argv[1]
t = load_file(p)
k = "model.decoder.layers.0.fc1.qweight"
t[k][0, :] ^= -1  # flip every bit of the first word row: all 512 outputs, inputs 0..7
save_file(t, p, metadata={"format": "pt"})
print("flipped", k, "[0, :]")
EOF
"$PY" scripts/check_exports.py --dense "$d/dense" --gptq "$d/gptq" --json "$OUT/check_$name.json" 2>/dev/null | tee -a "$LOG"
rc=${PIPESTATUS[0]}
if [ "$rc" -eq 1 ]; then echo "-> as expected (rc $rc)" | tee -a "$LOG"; else echo "-> UNEXPECTED (rc $rc)" | tee -a "$LOG"; fails=$((fails + 1)); fi

echo "unexpected outcomes: $fails" | tee -a "$LOG"
exit $fails
