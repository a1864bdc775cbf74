#!/usr/bin/env bash
# Runs the same prune commands with two builds of sparsegpt-mi and says whether their result JSONs
# are identical apart from timings (and the --save path), and whether the saved models are
# byte-identical. Fixture B, 16 calibration windows, first 4 windows of each corpus:
#   sgpt50w4: --sparsity 0.5 --wbits 4
#   mi3:      --sparsity 0.5 --wbits 4 --target-avg-bits 3.0 --use-mi-grouping 1 --n-groups 10
#
#   scripts/compare_binaries.sh OLD_BIN NEW_BIN OUT_DIR
set -euo pipefail
OLD=$1; NEW=$2; OUT=$3; S=${SHARED:-../shared}
mkdir -p "$OUT"
runs=("sgpt50w4:--sparsity 0.5 --wbits 4"
      "mi3:--sparsity 0.5 --wbits 4 --target-avg-bits 3.0 --use-mi-grouping 1 --n-groups 10")
for bin in old new; do
  B=$OLD; [ $bin = new ] && B=$NEW
  for r in "${runs[@]}"; do
    name=${r%%:*}
    rm -rf "$OUT/${bin}_${name}_saved"
    $B prune $S/fixtures/opt-mini-b c4 ${r#*:} --nsamples 16 --max-windows 4 --data-dir $S/data \
      --json "$OUT/${bin}_${name}.json" --save "$OUT/${bin}_${name}_saved" > "$OUT/${bin}_${name}.log" 2>&1
  done
done
python3 - "$OUT" <<'PY'
import json, sys, hashlib
out = sys.argv[1]
timing = {'seconds', 'solve_seconds', 'plan_seconds', 'times', 'load_s', 'calibration_s', 'peak_rss_mib',
          'command', 'mi_seconds', 'mi_similarity_seconds', 'mi_clustering_seconds', 'save'}
def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if k not in timing}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v
def sha(p):
    return hashlib.sha256(open(p, 'rb').read()).hexdigest()
bad = 0
for name in ['sgpt50w4', 'mi3']:
    a = json.load(open(f'{out}/old_{name}.json')); b = json.load(open(f'{out}/new_{name}.json'))
    same = json.dumps(strip(a)) == json.dumps(strip(b))
    ms = sha(f'{out}/old_{name}_saved/model.safetensors') == sha(f'{out}/new_{name}_saved/model.safetensors')
    print(f"{name}: JSON {'identical apart from timings' if same else 'DIFFERENT'}; saved model "
          f"{'byte-identical' if ms else 'DIFFERENT'}; ppl {b['ppl']}")
    bad += (not same) + (not ms)
sys.exit(1 if bad else 0)
PY
