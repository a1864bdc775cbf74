#!/usr/bin/env bash
# Study 2 (issue 30): a device call's results archive (gpu_run.sh FX ... study2 → results_FX.tar.xz)
# into the committed runs archive test_results/mi_study_2/runs_FX.tar.xz (plan.tsv, run_log.txt,
# FX/*.json and FX/plan.tsv; per-run logs left out), and its study log beside as
# study_log_FX_CALLNAME.txt. The committed archive is the base: its runs are kept as they are and
# the call's runs it lacks are added; runs the call made again (a stale runs archive carried) must
# equal the committed ones in PPL, zero fraction and stored bits (research/mi_study_2_overlap.py),
# else nothing is written. run_log.txt gets the call's run lines appended.
#
#   research/mi_study_2_repack.sh RESULTS_ARCHIVE FX CALLNAME
set -euo pipefail
cd "$(dirname "$0")/.."
RES=${1:?usage: research/mi_study_2_repack.sh RESULTS_ARCHIVE FIXTURE CALLNAME}
FX=${2:?fixture}; CALL=${3:?call name}
DEST=test_results/mi_study_2
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
tar -xJf "$RES" -C "$TMP"
SRC=$TMP/$FX/study2
[ -d "$SRC/$FX" ] || { echo "error: no study2/$FX in $RES" >&2; exit 1; }
LOG=$TMP/$FX/study2_log_$FX.txt
BASE=$TMP/base; mkdir -p "$BASE/$FX"
old=0
if [ -f "$DEST/runs_$FX.tar.xz" ]; then
  tar -xJf "$DEST/runs_$FX.tar.xz" -C "$BASE"
  old=$(find "$BASE/$FX" -name '*.json' | wc -l)
  # The call's runs as an archive, to compare with the committed one on the runs both hold.
  (cd "$SRC" && find "$FX" -maxdepth 1 -name '*.json' | sort) > "$TMP/call_list"
  tar -cJf "$TMP/call.tar.xz" -C "$SRC" -T "$TMP/call_list"
  python3 research/mi_study_2_overlap.py "$DEST/runs_$FX.tar.xz" "$TMP/call.tar.xz" --allow-missing \
    | tee "$TMP/overlap.txt"
fi
cp -n "$SRC/plan.tsv" "$BASE/plan.tsv" 2>/dev/null || true
cp -n "$SRC/$FX/plan.tsv" "$BASE/$FX/plan.tsv" 2>/dev/null || true
cmp -s "$SRC/$FX/plan.tsv" "$BASE/$FX/plan.tsv" || { echo "error: the call's plan.tsv of $FX is not the committed one" >&2; exit 1; }
for f in "$SRC/$FX"/*.json; do cp -n "$f" "$BASE/$FX/"; done
touch "$BASE/run_log.txt"
[ -f "$LOG" ] && grep -E '^[0-9]+ s tier ' "$LOG" >> "$BASE/run_log.txt" || true
new=$(find "$BASE/$FX" -name '*.json' | wc -l)
(cd "$BASE" && find "$FX" -maxdepth 1 \( -name '*.json' -o -name plan.tsv \) | sort) > "$TMP/list"
tar -cJf "$TMP/runs.tar.xz" -C "$BASE" plan.tsv run_log.txt -T "$TMP/list"
mv "$TMP/runs.tar.xz" "$DEST/runs_$FX.tar.xz"
[ -f "$LOG" ] && cp "$LOG" "$DEST/study_log_${FX}_$CALL.txt"
[ -f "$TMP/overlap.txt" ] && cp "$TMP/overlap.txt" "$DEST/overlap_${FX}_$CALL.txt"
[ -f "$TMP/$FX/study2repro_$FX.txt" ] && cp "$TMP/$FX/study2repro_$FX.txt" "$DEST/study2repro_${FX}_$CALL.txt"
echo "runs_$FX.tar.xz: $old → $new runs"
