#!/usr/bin/env bash
# Study 2 (issue 30): a device call's results archive (gpu_run.sh FX ... study2 → results_FX.tar.xz)
# into the committed runs archive test_results/mi_study_2/runs_FX.tar.xz (plan.tsv, run_log.txt,
# FX/*.json and FX/plan.tsv; per-run logs left out), and its study log beside as
# study_log_FX_CALLNAME.txt. Refuses an archive that holds fewer runs than the committed one.
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
new=$(find "$SRC/$FX" -name '*.json' | wc -l)
old=0
[ -f "$DEST/runs_$FX.tar.xz" ] && old=$(tar -tJf "$DEST/runs_$FX.tar.xz" | grep -c '\.json$' || true)
[ "$new" -ge "$old" ] || { echo "error: $RES holds $new runs of $FX, the committed archive $old" >&2; exit 1; }
files=(plan.tsv run_log.txt)
(cd "$SRC" && find "$FX" -maxdepth 1 \( -name '*.json' -o -name plan.tsv \) | sort) > "$TMP/list"
tar -cJf "$TMP/runs.tar.xz" -C "$SRC" "${files[@]}" -T "$TMP/list"
mv "$TMP/runs.tar.xz" "$DEST/runs_$FX.tar.xz"
[ -f "$TMP/$FX/study2_log_$FX.txt" ] && cp "$TMP/$FX/study2_log_$FX.txt" "$DEST/study_log_${FX}_$CALL.txt"
[ -f "$TMP/$FX/study2repro_$FX.txt" ] && cp "$TMP/$FX/study2repro_$FX.txt" "$DEST/study2repro_${FX}_$CALL.txt"
echo "runs_$FX.tar.xz: $old → $new runs"
