#!/usr/bin/env bash
# Baseline (plain SparseGPT + uniform GPTQ bits), enhanced (importance groups, no MI), MI grouping
# and the random-group control, side by side at the same sparsity and target bits.
#
#   research/compare_modes.sh [MODEL] [--seeds N] [--targets "4.0 3.0 2.5"] [--sparsity 0.5]
#                      [--n-groups 10] [--device cpu|cuda] [--jobs J] [--nsamples 128] [--max-windows N]
#                      [--extra "FLAGS"]   (added to every prune run, e.g. "--hessian-accumulation sum")
#
# MODEL defaults to the shipped fixture ../shared/fixtures/opt-mini-a. Each run's JSON goes to
# test_results/mi/<model>/, the table (PPL per dataset, bits incl. metadata, time; with several seeds
# mean ± sd and Welch t-tests of MI against every other mode) to test_results/mi_<model>.md.
# Baseline runs at floor(target) bits, and also at ceil(target) when the target is fractional.
# BIN selects the binary (default: target/debug/sparsegpt-mi, built if missing); the data
# directory is the tool's default ($SPARSEGPT_MI_DATA_DIR, else ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=../shared/fixtures/opt-mini-a
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then MODEL=$1; shift; fi
SEEDS=1; TARGETS="4.0"; SPARSITY=0.5; NGROUPS=10; DEVICE=cpu; JOBS=1; NSAMPLES=128; MAXW=""; EXTRA=""
while [ $# -gt 0 ]; do
  case $1 in
    --seeds) SEEDS=$2; shift 2;;
    --targets) TARGETS=$2; shift 2;;
    --sparsity) SPARSITY=$2; shift 2;;
    --n-groups) NGROUPS=$2; shift 2;;
    --device) DEVICE=$2; shift 2;;
    --jobs) JOBS=$2; shift 2;;
    --nsamples) NSAMPLES=$2; shift 2;;
    --max-windows) MAXW="--max-windows $2"; shift 2;;
    --extra) EXTRA=$2; shift 2;;
    *) echo "error: unknown option $1" >&2; exit 2;;
  esac
done
BIN=${BIN:-target/debug/sparsegpt-mi}
[ -x "$BIN" ] || cargo build
NAME=$(basename "$MODEL")
OUT=test_results/mi/$NAME
mkdir -p "$OUT"
CMDS=$(mktemp)
# Builds where uniform quantization is true-sequential by default: the baseline makes one pass,
# as the mixed modes do, so the arms differ in their bits alone.
ONE_PASS=""; grep -q -- "--no-true-sequential" <<< "$("$BIN" prune --help 2>/dev/null || true)" && ONE_PASS="--no-true-sequential"
for seed in $(seq 0 $((SEEDS - 1))); do
  for t in $TARGETS; do
    common="$BIN prune $MODEL c4 --sparsity $SPARSITY --nsamples $NSAMPLES --seed $seed --device $DEVICE --data-dir ${DATA_DIR:-../shared/data} $MAXW $EXTRA"
    lo=${t%.*}; hi=$lo; awk "BEGIN{exit !($t > $lo)}" && hi=$((lo + 1))
    for b in $(echo "$lo $hi" | tr ' ' '\n' | sort -u); do
      echo "$common --wbits $b $ONE_PASS --json $OUT/baseline_w${b}_t${t}_s${seed}.json" >> "$CMDS"
    done
    mixed="--wbits 4 --target-avg-bits $t --n-groups $NGROUPS"
    echo "$common $mixed --use-mi-grouping 0 --json $OUT/enhanced_t${t}_s${seed}.json" >> "$CMDS"
    echo "$common $mixed --use-mi-grouping 1 --json $OUT/mi_t${t}_s${seed}.json" >> "$CMDS"
    echo "$common $mixed --use-mi-grouping 1 --grouping random --json $OUT/random_t${t}_s${seed}.json" >> "$CMDS"
  done
done
echo "$(wc -l < "$CMDS") runs, $JOBS at a time"
# Each run's output goes to its JSON's .log; a failure prints that log's last line.
xargs -P "$JOBS" -I{} sh -c 'log=$(echo "{}" | sed "s/.*--json \([^ ]*\).*/\1/").log; {} > "$log" 2>&1 || echo "FAILED: {}: $(tail -n1 "$log")" >&2' < "$CMDS"
rm -f "$CMDS"
python3 research/mi_table.py "$OUT" > "test_results/mi_$NAME.md"
cat "test_results/mi_$NAME.md"
