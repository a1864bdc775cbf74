#!/usr/bin/env bash
# The long fuzz campaign: tests/fuzz.rs's targets with many inputs each, several seeds of the
# mutation stream; writes test_results/fuzz/README.md (executions and panics per target, the
# command, the commit) and keeps any panicking input under test_results/fuzz/findings/.
#   checks/fuzz_campaign.sh [INPUTS_PER_TARGET_PER_ROUND] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
ITERS=${1:-20000}
ROUNDS=${2:-3}
OUT=test_results/fuzz
mkdir -p "$OUT"
rm -rf "$OUT/findings"
LOG=$(mktemp)
# The test binary, built once and copied: edits during a campaign do not change what runs.
BIN=$(cargo test --offline --test fuzz --no-run 2>&1 | grep -o 'target/debug/deps/fuzz-[0-9a-f]*' | head -n 1)
cp "$BIN" "$LOG.bin"
start=$(date +%s)
for round in $(seq 0 $((ROUNDS - 1))); do
  # FUZZ_SEED shifts the mutation stream: each round sees other inputs.
  FUZZ_ITERS=$ITERS FUZZ_SEED=$((round * 1000003)) FUZZ_FINDINGS="$OUT/findings" \
    "$LOG.bin" --nocapture --test-threads 1 2>&1 | grep -ao 'fuzz target .*' >> "$LOG" || true
done
secs=$(( $(date +%s) - start ))
{
  echo "# Fuzz campaign"
  echo
  echo "\`checks/fuzz_campaign.sh $ITERS $ROUNDS\` at $(git rev-parse --short HEAD) on $(uname -srm), $(nproc) cores; $secs s in all."
  echo "Harness: tests/fuzz.rs (deterministic mutations of seeds from ../shared; a reader may refuse an"
  echo "input, a panic is a finding). Rounds differ by FUZZ_SEED."
  echo
  echo "| target | executions | panics |"
  echo "|---|---|---|"
  awk '{name=$3; sub(":","",name); ex[name]+=$4; pa[name]+=$6} END {for (n in ex) printf "| %s | %d | %d |\n", n, ex[n], pa[n]}' "$LOG" | sort
  echo
  n=$(find "$OUT/findings" -type f 2>/dev/null | wc -l || true)
  echo "Findings kept: $n (test_results/fuzz/findings/)."
} > "$OUT/README.md"
rm -f "$LOG" "$LOG.bin"
cat "$OUT/README.md"
