#!/usr/bin/env bash
# Mutation check of the emulator's checks (emu_check.cpp) for the rotary families' kernels: each
# line of MUTATIONS plants one deliberate bug in a copy of src/model/kernels/attention.cu (the first
# occurrence of OLD replaced by NEW), builds the emulator on it and runs `emu_check quick`. A
# mutation is caught when the run fails (a FAIL line, or an abort: an out-of-bounds access or a
# deadlock the emulator detects). Prints one line per mutation; exit status 0 iff all are caught.
#   usage: bash checks/cuda/emu/mutate.sh   (about a minute per mutation on two cores)
set -uo pipefail
cd "$(dirname "$0")/../../.."
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
# name|OLD|NEW  (\n in OLD/NEW: a newline)
MUTATIONS=$(cat <<'EOF'
kv_head_ignored|const int hk = GROUPED ? h / kv_group : h;|const int hk = h;
no_logit_scale|const float sl2 = GROUPED ? s_scale * LOG2E : LOG2E;|const float sl2 = LOG2E;
bf16_mma_as_f16|{ mma16816_bf16(d, a, b0, b1); }|{ mma16816(d, a, b0, b1); }
rope_sign|E::from_f(round_to<E>(a[i] * cs) - round_to<E>(c[i] * sn))|E::from_f(round_to<E>(a[i] * cs) + round_to<E>(c[i] * sn))
rope_position|const long long t = static_cast<long long>(pos) * half + j;|const long long t = static_cast<long long>(pos + 1) * half + j;
rope_second_half|c[i] = on ? E::to_f(ld_u16_rw(p + j + half)) : 0.f;|c[i] = on ? E::to_f(ld_u16_rw(p + j + half - 1)) : 0.f;
qk_norm_no_inner_rounding|a[i] = round_to<E>(E::to_f(ld_u16(norm_w + j)) * round_to<E>(a[i] * r));|a[i] = round_to<E>(E::to_f(ld_u16(norm_w + j)) * (a[i] * r));
qk_norm_half_warp|for (int off = 16; off > 0; off >>= 1) ss += shfl_xor(ss, off);\n        const float r|for (int off = 8; off > 0; off >>= 1) ss += shfl_xor(ss, off);\n        const float r
rms_norm_no_inner_rounding|o[k] = E::pack(g.x * round_to<E>(f.x * r), g.y * round_to<E>(f.y * r));|o[k] = E::pack(g.x * (f.x * r), g.y * (f.y * r));
rms_norm_half_the_warps|for (int k = 0; k < NORM_THREADS / 32; ++k) ss += red[k];|for (int k = 0; k < NORM_THREADS / 64; ++k) ss += red[k];
rms_norm_no_barrier|if ((tid & 31) == 0) red[tid >> 5] = ss;\n    __syncthreads();\n    ss = 0.f;|if ((tid & 31) == 0) red[tid >> 5] = ss;\n    ss = 0.f;
silu_no_rounding|return round_to<E>(g / (1.f + exp_f(-g))) * u;|return (g / (1.f + exp_f(-g))) * u;
silu_last_step_skipped|for (long long i = first; i < n / 8; i += stride) {|for (long long i = first; i < n / 8 - 1; i += stride) {
nll_bf16_read_as_f16|    return E::to_f(ld_u16(p));\n}|    return h2f(ld_u16(p));\n}
EOF
)
caught=0; total=0
while IFS='|' read -r name old new; do
  [ -n "$name" ] || continue
  total=$((total + 1))
  python3 - "$old" "$new" src/model/kernels/attention.cu "$W/$name.cu" <<'PY' || { echo "ERROR    $name: pattern not found"; continue; }
import sys
old, new, src, dst = sys.argv[1].replace("\\n", "\n"), sys.argv[2].replace("\\n", "\n"), sys.argv[3], sys.argv[4]
s = open(src).read()
if old not in s:
    sys.exit(1)
open(dst, "w").write(s.replace(old, new, 1))
PY
  if ! g++ -O2 -std=c++20 -Wno-unknown-pragmas -Wno-missing-field-initializers -DSGMI_EMULATE -Ichecks/cuda/emu \
      -DSGMI_KERNEL_FILE="\"$W/$name.cu\"" checks/cuda/emu/emu_check.cpp -o "$W/$name" 2> "$W/$name.err"; then
    echo "ERROR    $name: does not compile"; continue
  fi
  # in a shell of its own, whose stderr is the log: an abort is reported there, not here
  sh -c '"$0" quick; exit $?' "$W/$name" > "$W/$name.out" 2>&1; rc=$?
  fails=$(grep '^FAIL' "$W/$name.out" | grep -vc '^FAIL:')
  if [ $rc -ne 0 ]; then
    caught=$((caught + 1))
    what=$(grep '^FAIL' "$W/$name.out" | grep -v '^FAIL:' | head -n1 | cut -c1-90)
    [ -n "$what" ] || what=$(grep -m1 '^emulator:' "$W/$name.out" | cut -c1-90)
    echo "caught   $name: exit $rc, $fails failing check(s); first: $what"
  else
    echo "MISSED   $name"
  fi
done <<< "$MUTATIONS"
echo "$caught of $total mutations caught"
[ "$caught" = "$total" ]
