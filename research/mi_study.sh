#!/usr/bin/env bash
# Issue 17's study: does MI grouping pay, with the confounds (sweep order, unmatched bits, the
# redundancy discount, unpaired tests) controlled. Runs every arm of every question for the given
# fixtures and seeds, several runs at once, then writes the tables (research/mi_study_table.py).
#
#   research/mi_study.sh [--fixtures "opt-mini-a opt-mini-b opt-mini-c"] [--seeds 6] [--jobs 8]
#       [--device cuda|cpu] [--nsamples 128] [--max-windows 16] [--null 20]
#       [--questions "q1 q2a q2b q2c nulls"] [--cells "P S1 S2 S3"] [--arms "U,MIid,…"]
#       [--budget-s 450] [--out DIR] [--plan-only] [--resume] [--label TEXT]
#
# Questions and arms (every run: calibration seed s pairs the arms; --host-solver for all, so that
# the static-group and n:m-set arms, which only the host solver runs, are solved as the rest):
#   q1  bits vs grouping vs order, in cells P = 60% + "2.5" bits, S1 = 60% + "3.0", S2 = 60% + "2.25",
#       S3 = 2:4 + "2.5". Each cell's uniform setting (2-bit g32, 3-bit per row, 2-bit g64, 2-bit g32)
#       is the stored-bits reference: the mixed arms get --target-avg-bits = its stored bits
#       (metadata included, from the fixture's shapes), so all arms match within 0.01.
#       Arms: U uniform; Ust U's groups as static groups (grids fitted before the sweep, as the
#       in-place arms' are; not at S1, where U's one grid per row already is); Umi uniform in MI's
#       mixed order; MI mixed bits, MI groups, mixed order; MIid the same in place (--order
#       identity); Rid random groups (MI's sizes) in place; in P also Uact (act-order), Eid
#       (importance-rank groups in place) and, in tier 2, R (random groups, mixed order). All mixed
#       arms --redundancy-discount off.
#   q2a importance (cell P, in place): Eid_obs (ΣW²/[H⁻¹]_jj), Eid_miobs (Gaussian MI R²),
#       Eid_miobs_hist (histogram MI R², reservoir 512), MIid_disc (the redundancy discount on).
#   q2b scale groups at uniform 3-bit g64, dense: G contiguous (GPTQ --groupsize: grids fitted in
#       the sweep); Gst contiguous static groups; Gact_static the same with act-order (GPTQ
#       static_groups); Gmi MI balanced groups; Grange k-means on column ranges; Grand random
#       equal-size groups (all but G static).
#   q2c 2:4 channel sets, no quantization: N consecutive; Nmi MI sets; Nmag apex-style swap search;
#       Nrand random sets.
#   nulls at seed 0: --null − 1 more random partitions for Rid (P), Grand and Nrand (the arm's own
#       partition at seed 0 is the first), MI's rank among them.
# Order of the runs: q1 (tier 1), then q2a-c (tier 2), then the q2b/q2c nulls (tier 3); seed-major
# inside a tier. A run not started within --budget-s seconds of the first is skipped (listed as
# such), so that one call ends in time; the table counts what ran. --resume skips runs whose JSON
# exists (a second call on the same DIR completes the first).
#
# Output: DIR (default test_results/mi_study)/<fixture>/<cell>__<arm>__s<seed>[__p<pseed>].json
# (+ .log), DIR/<fixture>/plan.tsv, then python3 research/mi_study_table.py DIR > DIR/README.md
# (several calls' DIRs, e.g. one per fixture, merged into one DIR make one table). BIN (default
# target/debug/sparsegpt-mi), DATA_DIR (../shared/data), FIXTURE_DIR (../shared/fixtures).
set -euo pipefail
cd "$(dirname "$0")/.."
FIXTURES="opt-mini-a opt-mini-b opt-mini-c"; SEEDS=6; JOBS=8; DEVICE=cuda; NSAMPLES=128; MAXW=16; NULL=20
QUESTIONS="q1 q2a q2b q2c nulls"; CELLS="P S1 S2 S3"; ARMS=""; BUDGET=450; OUTDIR=test_results/mi_study
PLAN_ONLY=0; RESUME=0; LABEL=""
while [ $# -gt 0 ]; do
  case $1 in
    --fixtures) FIXTURES=$2; shift 2;;
    --seeds) SEEDS=$2; shift 2;;
    --jobs) JOBS=$2; shift 2;;
    --device) DEVICE=$2; shift 2;;
    --nsamples) NSAMPLES=$2; shift 2;;
    --max-windows) MAXW=$2; shift 2;;
    --null) NULL=$2; shift 2;;
    --questions) QUESTIONS=$2; shift 2;;
    --cells) CELLS=$2; shift 2;;
    --arms) ARMS=$2; shift 2;;
    --budget-s) BUDGET=$2; shift 2;;
    --out) OUTDIR=$2; shift 2;;
    --plan-only) PLAN_ONLY=1; shift;;
    --resume) RESUME=1; shift;;
    --label) LABEL=$2; shift 2;;
    *) echo "error: unknown option $1" >&2; exit 2;;
  esac
done
BIN=${BIN:-target/debug/sparsegpt-mi}
DATA=${DATA_DIR:-../shared/data}
FXDIR=${FIXTURE_DIR:-../shared/fixtures}
[ -x "$BIN" ] || [ "$PLAN_ONLY" = 1 ] || cargo build
has() { [[ " $1 " == *" $2 "* ]]; }
arm_on() { [ -z "$ARMS" ] || [[ ",$ARMS," == *",$1,"* ]]; }
mkdir -p "$OUTDIR"
PLAN=$OUTDIR/plan.tsv
: > "$PLAN.new"

# cell → sparsity flags, nominal target, uniform flags (wbits groupsize), groups K
cell_sparsity() { case $1 in S3|N) echo "--prunen 2 --prunem 4";; G) echo "";; *) echo "--sparsity 0.6";; esac; }
cell_nominal() { case $1 in P|S3) echo 2.5;; S1) echo 3.0;; S2) echo 2.25;; esac; }
cell_wbits() { case $1 in P|S2|S3) echo 2;; S1|G) echo 3;; N) echo 16;; esac; }
cell_gs() { case $1 in P|S3) echo 32;; S2|G) echo 64;; *) echo -1;; esac; }
cell_k() { case $1 in S2) echo 2;; *) echo 4;; esac; }

# Builds where uniform quantization is true-sequential by default: every arm makes one pass, as
# the study's build did.
ONE_PASS=""; grep -q -- "--no-true-sequential" <<< "$("$BIN" prune --help 2>/dev/null || true)" && ONE_PASS=" --no-true-sequential"
# One run: tier, fixture, cell, arm, seed, partition seed ("" = the seed's own), extra flags.
add() {
  local tier=$1 fx=$2 cell=$3 arm=$4 seed=$5 pseed=$6; shift 6
  local name="${cell}__${arm}__s${seed}"; [ -n "$pseed" ] && name+="__p${pseed}"
  local json=$OUTDIR/$fx/$name.json
  local flags="$(cell_sparsity "$cell") --wbits $(cell_wbits "$cell") --groupsize $(cell_gs "$cell") $*$ONE_PASS"
  [ -n "$pseed" ] && flags+=" --partition-seed $pseed"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tier" "$fx" "$cell" "$arm" "$seed" "$json" \
    "$BIN prune $FXDIR/$fx c4 --nsamples $NSAMPLES --seed $seed --device $DEVICE --data-dir $DATA --max-windows $MAXW --host-solver $flags --json $json" \
    >> "$PLAN.new"
}

for fx in $FIXTURES; do
  mkdir -p "$OUTDIR/$fx"
  # The stored bits of each cell's uniform setting on this fixture: the mixed arms' target.
  declare -A TARGET=()
  for cell in P S1 S2 S3; do
    TARGET[$cell]=$(python3 research/mi_study_table.py --stored-bits "$FXDIR/$fx/config.json" "$(cell_wbits $cell)" "$(cell_gs $cell)")
  done
  mixed() { echo "--target-avg-bits ${TARGET[$1]} --n-groups $(cell_k "$1") --redundancy-discount off"; }
  for seed in $(seq 0 $((SEEDS - 1))); do
    if has "$QUESTIONS" q1; then
      for cell in $CELLS; do
        m=$(mixed "$cell")
        arm_on U && add 1 "$fx" "$cell" U "$seed" ""
        # The uniform groups as static groups (grids from the untouched weight, as the in-place
        # mixed arms' are): the reference of the in-place arms where U's grids are fitted during
        # the sweep (GPTQ --groupsize). At S1 (one grid per row) U already is that.
        [ "$cell" != S1 ] && arm_on Ust && add 1 "$fx" "$cell" Ust "$seed" "" --grouping-use scales --grouping contiguous
        arm_on Umi && add 1 "$fx" "$cell" Umi "$seed" "" --use-mi-grouping 1 $m --uniform-in-mixed-order
        arm_on MI && add 1 "$fx" "$cell" MI "$seed" "" --use-mi-grouping 1 $m
        arm_on MIid && add 1 "$fx" "$cell" MIid "$seed" "" --use-mi-grouping 1 $m --order identity
        arm_on Rid && add 1 "$fx" "$cell" Rid "$seed" "" --use-mi-grouping 1 --grouping random $m --order identity
        if [ "$cell" = P ]; then
          arm_on Uact && add 1 "$fx" P Uact "$seed" "" --act-order
          arm_on Eid && add 1 "$fx" P Eid "$seed" "" --use-mi-grouping 0 $m --order identity
          arm_on R && add 2 "$fx" P R "$seed" "" --use-mi-grouping 1 --grouping random $m
        fi
      done
    fi
  done
  # The random-partition null of q1 (tier 1): seed 0, partition seeds 1 … NULL−1.
  if has "$QUESTIONS" q1 && has "$QUESTIONS" nulls && has "$CELLS" P && [ "$NULL" -gt 1 ]; then
    for p in $(seq 1 $((NULL - 1))); do
      add 1 "$fx" P Rid 0 "$p" --use-mi-grouping 1 --grouping random $(mixed P) --order identity
    done
  fi
  for seed in $(seq 0 $((SEEDS - 1))); do
    m=$(mixed P)
    if has "$QUESTIONS" q2a; then
      # The slow one first (histogram MI over all channel pairs of every input).
      arm_on Eid_miobs_hist && add 2 "$fx" P Eid_miobs_hist "$seed" "" --use-mi-grouping 0 $m --order identity --importance mi-obs --mi-method hist --reservoir 512
      arm_on Eid_obs && add 2 "$fx" P Eid_obs "$seed" "" --use-mi-grouping 0 $m --order identity --importance obs
      arm_on Eid_miobs && add 2 "$fx" P Eid_miobs "$seed" "" --use-mi-grouping 0 $m --order identity --importance mi-obs
      arm_on MIid_disc && add 2 "$fx" P MIid_disc "$seed" "" --use-mi-grouping 1 ${m/--redundancy-discount off/--redundancy-discount on} --order identity
      # q2a compares with q1's Eid and MIid at P: run them if q1 does not.
      if ! has "$QUESTIONS" q1; then
        add 2 "$fx" P Eid "$seed" "" --use-mi-grouping 0 $m --order identity
        add 2 "$fx" P MIid "$seed" "" --use-mi-grouping 1 $m --order identity
      fi
    fi
    if has "$QUESTIONS" q2b; then
      arm_on G && add 2 "$fx" G G "$seed" ""
      arm_on Gst && add 2 "$fx" G Gst "$seed" "" --grouping-use scales --grouping contiguous
      arm_on Gact_static && add 2 "$fx" G Gact_static "$seed" "" --grouping-use scales --grouping contiguous --act-order
      arm_on Gmi && add 2 "$fx" G Gmi "$seed" "" --grouping-use scales
      arm_on Grange && add 2 "$fx" G Grange "$seed" "" --grouping-use scales --grouping range
      arm_on Grand && add 2 "$fx" G Grand "$seed" "" --grouping-use scales --grouping random
    fi
    if has "$QUESTIONS" q2c; then
      arm_on N && add 2 "$fx" N N "$seed" ""
      arm_on Nmi && add 2 "$fx" N Nmi "$seed" "" --nm-permutation mi
      arm_on Nmag && add 2 "$fx" N Nmag "$seed" "" --nm-permutation magnitude
      arm_on Nrand && add 2 "$fx" N Nrand "$seed" "" --nm-permutation random
    fi
  done
  if has "$QUESTIONS" nulls && [ "$NULL" -gt 1 ]; then
    for p in $(seq 1 $((NULL - 1))); do
      has "$QUESTIONS" q2b && add 3 "$fx" G Grand 0 "$p" --grouping-use scales --grouping random
      has "$QUESTIONS" q2c && add 3 "$fx" N Nrand 0 "$p" --nm-permutation random
    done
  fi
  unset -f mixed
done
# Tier order, the order of addition inside a tier; each fixture's share beside its runs.
sort -s -t$'\t' -k1,1n "$PLAN.new" > "$PLAN"; rm -f "$PLAN.new"
for fx in $FIXTURES; do awk -F'\t' -v fx="$fx" '$2 == fx' "$PLAN" > "$OUTDIR/$fx/plan.tsv"; done

# Count and estimate. Per-run seconds on the GPU machine (one H200, 16 cores, JOBS runs at once,
# host solver, 128 calibration windows, 16 windows per corpus), from measured parts: the CPU work
# every run does (tokenizing the three evaluation corpora single-threaded, 2.3 s, and the
# calibration documents, 0.5 s, on this project's 2-core machine), the host solve (A: 1.2 s on 2
# threads), CUDA start ~1 s, the GPU forward passes ~1 s; the histogram-MI arm's planning (A: 4.8 s
# per layer on 2 threads, reservoir 512) and the swap search (A: 0.7 s per layer) on top; ×1.2 for
# runs sharing the machine.
python3 - "$PLAN" "$JOBS" "$BUDGET" "$MAXW" <<'EOF'
import collections, sys
plan, jobs, budget, maxw = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
base = {"opt-mini-a": 6.5, "opt-mini-b": 5.0, "opt-mini-c": 8.0}
layers = {"opt-mini-a": 8, "opt-mini-b": 6, "opt-mini-c": 12}
rows = [l.rstrip("\n").split("\t") for l in open(plan)]
count, secs = collections.Counter(), collections.Counter()
for tier, fx, cell, arm, seed, json, cmd in rows:
    t = base.get(fx, 7.0) + 0.01 * 3 * maxw
    if arm == "Eid_miobs_hist":
        t += 4.8 * layers.get(fx, 8) * (0.5 if fx == "opt-mini-b" else 1.0)
    if arm == "Nmag":
        t += 0.7 * layers.get(fx, 8)
    count[(fx, tier)] += 1
    secs[(fx, tier)] += t * 1.2 / jobs
total = sum(secs.values())
print(f"{len(rows)} runs, {jobs} at a time; estimated wall time on the GPU machine {total:.0f} s ({total/60:.1f} min), budget {budget:.0f} s")
for (fx, tier), n in sorted(count.items()):
    print(f"  {fx} tier {tier}: {n} runs, ~{secs[(fx, tier)]:.0f} s")
if total > budget:
    print(f"  the estimate is over the budget: runs not started by {budget:.0f} s are skipped (tier 3 first)")
EOF
[ "$PLAN_ONLY" = 1 ] && exit 0

# Run: each job checks the deadline before it starts; output to its JSON's .log.
START=$(date +%s)
export START BUDGET RESUME
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-2}
RUNNER=$(mktemp)
cat > "$RUNNER" <<'EOF'
IFS=$'\t' read -r tier fx cell arm seed json cmd <<< "$1"
if [ "$RESUME" = 1 ] && [ -s "$json" ]; then exit 0; fi
if [ $(( $(date +%s) - START )) -ge "${BUDGET%.*}" ]; then echo "SKIPPED (budget): $json"; exit 0; fi
t=$(date +%s)
$cmd > "${json%.json}.log" 2>&1 || echo "FAILED: $json: $(tail -n1 "${json%.json}.log")"
echo "$(( $(date +%s) - t )) s tier $tier $fx $cell $arm s$seed"
EOF
tr '\n' '\0' < "$PLAN" | xargs -0 -P "$JOBS" -n 1 bash "$RUNNER" | tee "$OUTDIR/run_log.txt"
rm -f "$RUNNER"
echo "ran for $(( $(date +%s) - START )) s"
python3 research/mi_study_table.py "$OUTDIR" ${LABEL:+--label "$LABEL"} > "$OUTDIR/README.md"
cat "$OUTDIR/README.md"
