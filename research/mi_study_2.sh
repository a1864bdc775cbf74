#!/usr/bin/env bash
# Issue 30's studies S1 (MI where mixed bits have room) and S2 (the defaults): every arm of every
# cell for the given fixtures and seeds, several runs at once, then the tables
# (research/mi_study_2_table.py). The pre-stated endpoints, corrections and decision rules are in
# test_results/mi_study_2.md; this script makes the runs they are computed from.
#
#   research/mi_study_2.sh [--studies "S1 S2"] [--fixtures "..."] [--seeds 10] [--jobs 8]
#       [--device cuda|cpu] [--nsamples 128] [--max-windows N] [--null 20] [--null-seeds 3]
#       [--null-k "4"] [--cells "..."] [--arms "U,MI4,…"] [--bit-objective cost-model|legacy]
#       [--budget-s 450] [--gpus 1] [--out DIR] [--plan-only] [--resume] [--label TEXT]
#
# --gpus N spreads the runs over N GPUs of one host (CUDA_VISIBLE_DEVICES by a hash of the run's
# JSON path); give --jobs 8 per GPU where the host has 16 cores per GPU (RAYON_NUM_THREADS 2).
#
# Every run: calibration seed s pairs the arms (same windows); --host-solver for all (the static
# group and n:m-set arms run only there); PPL on the full test sets of WikiText-2, PTB and C4
# unless --max-windows is given (for trying the runner out, not for the study).
#
# S1 (fixtures C and A). Cells: D4 = dense 4-bit per row, D3 = dense 3-bit per row, S50 = 50%
#   unstructured + 4-bit per row (the user's setting). The mixed arms get --min-bits 2
#   --max-bits 8 and --target-avg-bits = the stored bits of the cell's uniform arm (metadata
#   included; with --bit-objective cost-model, the default here, the column map too).
#   Arms: U uniform; Uact uniform act-order; at K = 4 and 8 groups (suffix): MI (MI groups, mixed
#   order), R (random groups of MI's sizes, mixed order), E (importance-rank groups), MId / Rd
#   (MI / R with the redundancy discount on; the other mixed arms have it off).
#   Nulls: at seeds 0 … --null-seeds − 1, --null − 1 more random partitions (--partition-seed
#   1 …) of R and Rd at the primary cells D4 and S50, K in --null-k.
# S2 (fixtures A, B, C; compress time is in every run's JSON, times.total_s). Cells: D4, D3, S50
#   as above, G3 = dense 3-bit g128, G4 = dense 4-bit g128 (fixture B: g64, as 128 does not
#   divide its 192-wide inputs), N24 = 2:4 without quantization, N24Q = 2:4 + 4-bit per row.
#   Act-order cells (D4, D3, G3, G4, S50): U, Uact, Uact_st (act-order with static groups;
#   grouped cells only), and the peer's defaults (GPTQModel 7.7): Upd (--percdamp 0.05),
#   Uact_pd (act-order + 0.05), Uts (--true-sequential), Uga (group-aware act-order; grouped
#   cells), Upeer (0.05 + true-sequential + group-aware act-order; grouped cells). 2:4 cells: N
#   (consecutive channel sets) and Nmag (--nm-permutation magnitude).
#   An arm whose flag this binary does not have (`prune --help`) is skipped with a message
#   (--true-sequential: the architectures work; group-aware act-order: --act-group-aware).
# Runs of S1 and S2 with the same cell and arm (U, Uact at D4, D3, S50 on A and C) are made once.
# Order of the runs (tiers; seed-major inside one): 1 = S1 at the primary cells D4, S50;
# 2 = S2; 3 = S1 at D3; 4 = the nulls. A run not started within --budget-s seconds of the first
# is skipped (listed); --resume skips runs whose JSON exists, so calls on one DIR add up.
#
# Output: DIR (default test_results/mi_study_2)/<fixture>/<cell>__<arm>__s<seed>[__p<pseed>].json
# (+ .log), DIR/plan.tsv and DIR/<fixture>/plan.tsv, then research/mi_study_2_table.py DIR >
# DIR/README.md. BIN (default target/debug/sparsegpt-mi), DATA_DIR (../shared/data), FIXTURE_DIR
# (../shared/fixtures).
set -euo pipefail
cd "$(dirname "$0")/.."
STUDIES="S1 S2"; FIXTURES=""; SEEDS=10; JOBS=8; DEVICE=cuda; NSAMPLES=128; MAXW=""; NULL=20
NULL_SEEDS=3; NULL_K="4"; CELLS=""; ARMS=""; OBJECTIVE=cost-model; BUDGET=450
OUTDIR=test_results/mi_study_2; PLAN_ONLY=0; RESUME=0; LABEL=""; GPUS=1
while [ $# -gt 0 ]; do
  case $1 in
    --studies) STUDIES=$2; shift 2;;
    --fixtures) FIXTURES=$2; shift 2;;
    --seeds) SEEDS=$2; shift 2;;
    --jobs) JOBS=$2; shift 2;;
    --device) DEVICE=$2; shift 2;;
    --nsamples) NSAMPLES=$2; shift 2;;
    --max-windows) MAXW=$2; shift 2;;
    --null) NULL=$2; shift 2;;
    --null-seeds) NULL_SEEDS=$2; shift 2;;
    --null-k) NULL_K=$2; shift 2;;
    --cells) CELLS=$2; shift 2;;
    --arms) ARMS=$2; shift 2;;
    --bit-objective) OBJECTIVE=$2; shift 2;;
    --budget-s) BUDGET=$2; shift 2;;
    --gpus) GPUS=$2; shift 2;;
    --out) OUTDIR=$2; shift 2;;
    --plan-only) PLAN_ONLY=1; shift;;
    --resume) RESUME=1; shift;;
    --label) LABEL=$2; shift 2;;
    *) echo "error: unknown option $1" >&2; exit 2;;
  esac
done
case $OBJECTIVE in cost-model|legacy) ;; *) echo "error: --bit-objective is cost-model or legacy" >&2; exit 2;; esac
BIN=${BIN:-target/debug/sparsegpt-mi}
DATA=${DATA_DIR:-../shared/data}
FXDIR=${FIXTURE_DIR:-../shared/fixtures}
[ -x "$BIN" ] || [ "$PLAN_ONLY" = 1 ] || cargo build
has() { [[ " $1 " == *" $2 "* ]]; }
arm_on() { [ -z "$ARMS" ] || [[ ",$ARMS," == *",$1,"* ]]; }
cell_on() { [ -z "$CELLS" ] || has "$CELLS" "$1"; }
fx_on() { [ -z "$FIXTURES" ] || has "$FIXTURES" "$1"; }

# Flags this binary has (an arm needing a missing one is skipped, said once).
HELP=$([ -x "$BIN" ] && "$BIN" prune --help 2>/dev/null || true)
flag_ok() { grep -q -- "$1\b" <<< "$HELP"; }
declare -A MISSING=()
needs() { # arm flag…: true if every flag exists, else records the arm as skipped
  local arm=$1; shift
  for f in "$@"; do
    if ! flag_ok "$f"; then MISSING["$arm"]="$f"; return 1; fi
  done
}

mkdir -p "$OUTDIR"
PLAN=$OUTDIR/plan.tsv
: > "$PLAN.new"
declare -A SEEN=()

# cell → flags. Fixture B's inputs (192, 768) take g64 where the others take g128.
cell_flags() { # cell fixture
  local gs=128; [ "$2" = opt-mini-b ] && gs=64
  case $1 in
    D4) echo "--wbits 4 --groupsize -1";;
    D3) echo "--wbits 3 --groupsize -1";;
    S50) echo "--sparsity 0.5 --wbits 4 --groupsize -1";;
    G3) echo "--wbits 3 --groupsize $gs";;
    G4) echo "--wbits 4 --groupsize $gs";;
    N24) echo "--prunen 2 --prunem 4 --wbits 16";;
    N24Q) echo "--prunen 2 --prunem 4 --wbits 4 --groupsize -1";;
  esac
}
cell_bits() { set -- $(cell_flags "$1" "$2"); case $1 in --sparsity) echo "$4 $6";; --prunen) echo "$6 ${8:--1}";; *) echo "$2 $4";; esac; }

# One run: tier, fixture, cell, arm, seed, partition seed ("" = the seed's own), extra flags.
add() {
  local tier=$1 fx=$2 cell=$3 arm=$4 seed=$5 pseed=$6; shift 6
  local name="${cell}__${arm}__s${seed}"; [ -n "$pseed" ] && name+="__p${pseed}"
  local json=$OUTDIR/$fx/$name.json
  [ -n "${SEEN[$json]:-}" ] && return 0
  SEEN[$json]=1
  local flags="$(cell_flags "$cell" "$fx") $*"
  # Builds where true-sequential is the default when quantizing: the arms without it are told
  # to make one pass (the study's build had no such default, and its plan stays as it was).
  [[ " $* " != *" --true-sequential "* ]] && flag_ok --no-true-sequential && flags+=" --no-true-sequential"
  [ -n "$pseed" ] && flags+=" --partition-seed $pseed"
  [ -n "$MAXW" ] && flags+=" --max-windows $MAXW"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tier" "$fx" "$cell" "$arm" "$seed" "$json" \
    "$BIN prune $FXDIR/$fx c4 --nsamples $NSAMPLES --seed $seed --device $DEVICE --data-dir $DATA --host-solver $flags --json $json" \
    >> "$PLAN.new"
}

# S1's mixed arms of one cell: K groups, MI / R / E without the discount, MId / Rd with it.
s1_mixed() { # tier fixture cell seed target
  local tier=$1 fx=$2 cell=$3 seed=$4 target=$5
  for k in 4 8; do
    local m="--target-avg-bits $target --min-bits 2 --max-bits 8 --n-groups $k --bit-objective $OBJECTIVE"
    arm_on MI$k && add "$tier" "$fx" "$cell" MI$k "$seed" "" --use-mi-grouping 1 $m --redundancy-discount off
    arm_on R$k && add "$tier" "$fx" "$cell" R$k "$seed" "" --use-mi-grouping 1 --grouping random $m --redundancy-discount off
    arm_on E$k && add "$tier" "$fx" "$cell" E$k "$seed" "" --use-mi-grouping 0 $m --redundancy-discount off
    arm_on MId$k && add "$tier" "$fx" "$cell" MId$k "$seed" "" --use-mi-grouping 1 $m --redundancy-discount on
    arm_on Rd$k && add "$tier" "$fx" "$cell" Rd$k "$seed" "" --use-mi-grouping 1 --grouping random $m --redundancy-discount on
  done
  return 0  # an arm left out by --arms is no error (set -e)
}

s1_fixtures="opt-mini-c opt-mini-a"; s2_fixtures="opt-mini-a opt-mini-b opt-mini-c"
declare -A TARGET=()
target_of() { # fixture cell: the stored bits of the cell's uniform arm
  local key="$1/$2"
  if [ -z "${TARGET[$key]:-}" ]; then
    TARGET[$key]=$(python3 research/mi_study_table.py --stored-bits "$FXDIR/$1/config.json" $(cell_bits "$2" "$1"))
  fi
  echo "${TARGET[$key]}"
}

for seed in $(seq 0 $((SEEDS - 1))); do
  if has "$STUDIES" S1; then
    for fx in $s1_fixtures; do
      fx_on "$fx" || continue
      for cell in D4 S50 D3; do
        cell_on "$cell" || continue
        tier=1; [ "$cell" = D3 ] && tier=3
        arm_on U && add $tier "$fx" "$cell" U "$seed" ""
        arm_on Uact && add $tier "$fx" "$cell" Uact "$seed" "" --act-order
        s1_mixed $tier "$fx" "$cell" "$seed" "$(target_of "$fx" "$cell")"
      done
    done
  fi
  if has "$STUDIES" S2; then
    for fx in $s2_fixtures; do
      fx_on "$fx" || continue
      for cell in D4 D3 G3 G4 S50; do
        cell_on "$cell" || continue
        grouped=0; [[ $cell == G* ]] && grouped=1
        # Uact's groups are the published dynamic ones, Uga's group-aware: builds with
        # --act-groups (group-aware by default) are told which; earlier ones had --act-group-aware.
        dyn=(); ga=(--act-group-aware)
        if [ $grouped = 1 ] && flag_ok --act-groups; then dyn=(--act-groups dynamic); ga=(--act-groups group-aware); fi
        arm_on U && add 2 "$fx" "$cell" U "$seed" ""
        arm_on Uact && add 2 "$fx" "$cell" Uact "$seed" "" --act-order "${dyn[@]}"
        [ $grouped = 1 ] && arm_on Uact_st && add 2 "$fx" "$cell" Uact_st "$seed" "" --grouping-use scales --grouping contiguous --act-order
        arm_on Upd && add 2 "$fx" "$cell" Upd "$seed" "" --percdamp 0.05
        arm_on Uact_pd && add 2 "$fx" "$cell" Uact_pd "$seed" "" --act-order --percdamp 0.05 "${dyn[@]}"
        arm_on Uts && needs Uts --true-sequential && add 2 "$fx" "$cell" Uts "$seed" "" --true-sequential
        if [ $grouped = 1 ]; then
          arm_on Uga && needs Uga "${ga[0]}" && add 2 "$fx" "$cell" Uga "$seed" "" --act-order "${ga[@]}"
          arm_on Upeer && needs Upeer --true-sequential "${ga[0]}" \
            && add 2 "$fx" "$cell" Upeer "$seed" "" --percdamp 0.05 --true-sequential --act-order "${ga[@]}"
        fi
      done
      for cell in N24 N24Q; do
        cell_on "$cell" || continue
        arm_on N && add 2 "$fx" "$cell" N "$seed" ""
        arm_on Nmag && add 2 "$fx" "$cell" Nmag "$seed" "" --nm-permutation magnitude
      done
    done
  fi
done
# S1's random-partition nulls (tier 4).
if has "$STUDIES" S1 && [ "$NULL" -gt 1 ]; then
  for fx in $s1_fixtures; do
    fx_on "$fx" || continue
    for cell in D4 S50; do
      cell_on "$cell" || continue
      t=$(target_of "$fx" "$cell")
      for seed in $(seq 0 $((NULL_SEEDS - 1))); do
        for k in $NULL_K; do
          m="--target-avg-bits $t --min-bits 2 --max-bits 8 --n-groups $k --bit-objective $OBJECTIVE"
          for p in $(seq 1 $((NULL - 1))); do
            arm_on R$k && add 4 "$fx" "$cell" R$k "$seed" "$p" --use-mi-grouping 1 --grouping random $m --redundancy-discount off
            arm_on Rd$k && add 4 "$fx" "$cell" Rd$k "$seed" "$p" --use-mi-grouping 1 --grouping random $m --redundancy-discount on
          done
        done
      done
    done
  done
fi
for arm in "${!MISSING[@]}"; do
  echo "skipping arm $arm: this binary has no ${MISSING[$arm]} (see the arm list above)" >&2
done
sort -s -t$'\t' -k1,1n "$PLAN.new" > "$PLAN"; rm -f "$PLAN.new"
for fx in $(cut -f2 "$PLAN" | sort -u); do
  mkdir -p "$OUTDIR/$fx"
  awk -F'\t' -v fx="$fx" '$2 == fx' "$PLAN" > "$OUTDIR/$fx/plan.tsv"
done

# Count and estimate: seconds of GPU-machine wall time per run with JOBS at once, from the first
# study's logs (test_results/mi_study/study_log_*.txt: B 252 runs in 234 s, C 194 in 433 s, 8 at
# a time, 16 windows per corpus), plus the full test sets' forward passes (C: 0.06 s per 16
# windows per corpus alone; 439 windows, ×8 for sharing the GPU, over JOBS runs) and, for the
# mixed arms, the first study's MI/U compress-time ratio (~1.7×: C 10.7 s vs 6.3 s total_s).
python3 - "$PLAN" "$JOBS" "$BUDGET" "${MAXW:-0}" "$GPUS" <<'EOF'
import collections, sys
plan, jobs, budget, maxw, gpus = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
jobs = min(jobs, 8 * gpus)  # the measured rates: 8 runs sharing one GPU and 16 cores
per_run = {"opt-mini-a": 1.3, "opt-mini-b": 0.93, "opt-mini-c": 2.2}   # s per run, 8 at a time
windows = {"opt-mini-a": 439, "opt-mini-b": 439, "opt-mini-c": 439}
rows = [l.rstrip("\n").split("\t") for l in open(plan) if l.strip()]
count, secs = collections.Counter(), collections.Counter()
for tier, fx, cell, arm, seed, json, cmd in rows:
    t = per_run.get(fx, 2.0) * 8 / jobs
    mixed = arm[:1] in ("M", "R", "E")
    if mixed:
        t *= 1.7
    w = maxw * 3 if maxw else windows.get(fx, 439)
    t += 0.06 / 16 * max(w - 48, 0) * 8 / jobs
    count[(fx, tier)] += 1
    secs[(fx, tier)] += t
total = sum(secs.values())
print(f"{len(rows)} runs, {jobs} at a time; estimated wall time on the GPU machine {total:.0f} s ({total/60:.1f} min), budget {budget:.0f} s per call")
for (fx, tier), n in sorted(count.items(), key=lambda x: (x[0][1], x[0][0])):
    print(f"  tier {tier} {fx}: {n} runs, ~{secs[(fx, tier)]:.0f} s")
if total > budget:
    print(f"  over one call's budget: runs not started by {budget:.0f} s are skipped; call again with --resume")
EOF
[ "$PLAN_ONLY" = 1 ] && exit 0

# Run: each job checks the deadline before it starts; output to its JSON's .log.
START=$(date +%s)
export START BUDGET RESUME GPUS
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-2}
RUNNER=$(mktemp)
cat > "$RUNNER" <<'EOF'
IFS=$'\t' read -r tier fx cell arm seed json cmd <<< "$1"
if [ "$RESUME" = 1 ] && [ -s "$json" ]; then exit 0; fi
if [ $(( $(date +%s) - START )) -ge "${BUDGET%.*}" ]; then echo "SKIPPED (budget): $json"; exit 0; fi
t=$(date +%s)
if [ "$GPUS" -gt 1 ]; then export CUDA_VISIBLE_DEVICES=$(( $(cksum <<< "$json" | cut -d' ' -f1) % GPUS )); fi
$cmd > "${json%.json}.log" 2>&1 || echo "FAILED: $json: $(tail -n1 "${json%.json}.log")"
echo "$(( $(date +%s) - t )) s tier $tier $fx $cell $arm s$seed"
EOF
tr '\n' '\0' < "$PLAN" | xargs -0 -P "$JOBS" -n 1 bash "$RUNNER" | tee -a "$OUTDIR/run_log.txt"
rm -f "$RUNNER"
echo "ran for $(( $(date +%s) - START )) s"
python3 research/mi_study_2_table.py "$OUTDIR" ${LABEL:+--label "$LABEL"} > "$OUTDIR/README.md"
cat "$OUTDIR/README.md"
