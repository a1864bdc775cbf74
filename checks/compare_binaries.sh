#!/usr/bin/env bash
# Runs the same prune commands with two builds of sparsegpt-mi and says whether their result JSONs
# are identical apart from timings (and the --save path), and whether the saved directories are
# byte-identical: the same file names, and the same sha256 for every file (hidden ones included).
# Fixture B, 16 calibration windows, first 4 windows of each corpus:
#   sgpt50w4: --sparsity 0.5 --wbits 4                                  (dense export)
#   mi3:      --sparsity 0.5 --wbits 4 --target-avg-bits 3.0 --use-mi-grouping 1 --n-groups 10
#   gptq4:    --wbits 4 --save-format gptq                              (packed GPTQ export)
#
#   checks/compare_binaries.sh OLD_BIN NEW_BIN OUT_DIR      exit status 1 if anything differs
# RUNS="sgpt50w4 gptq4": only those of the three runs (default all).
# IGNORE=key,key: result-JSON keys a change adds or alters on purpose (e.g. a new field), left out
# of the comparison wherever they occur and named in the verdict.
#     env EXTRA_RUNS="name:flags;name:flags" adds runs (e.g. other --save-format exports)
set -euo pipefail
OLD=$1; NEW=$2; OUT=$3; S=${SHARED:-../shared}
mkdir -p "$OUT"
runs=("sgpt50w4:--sparsity 0.5 --wbits 4"
      "mi3:--sparsity 0.5 --wbits 4 --target-avg-bits 3.0 --use-mi-grouping 1 --n-groups 10"
      "gptq4:--wbits 4 --save-format gptq")
if [ -n "${RUNS:-}" ]; then
  chosen=()
  for r in "${runs[@]}"; do [[ " $RUNS " == *" ${r%%:*} "* ]] && chosen+=("$r"); done
  runs=("${chosen[@]}")
fi
IFS=';' read -r -a extra <<< "${EXTRA_RUNS:-}"
for r in "${extra[@]}"; do [ -n "$r" ] && runs+=("$r"); done
names=()
for r in "${runs[@]}"; do names+=("${r%%:*}"); done
for bin in old new; do
  B=$OLD; [ $bin = new ] && B=$NEW
  for r in "${runs[@]}"; do
    name=${r%%:*}
    rm -rf "$OUT/${bin}_${name}_saved"
    # shellcheck disable=SC2086  # the run's flags are split on purpose
    $B prune $S/fixtures/opt-mini-b c4 ${r#*:} --nsamples 16 --max-windows 4 --data-dir $S/data \
      --json "$OUT/${bin}_${name}.json" --save "$OUT/${bin}_${name}_saved" > "$OUT/${bin}_${name}.log" 2>&1
  done
done
IGNORE=${IGNORE:-} python3 - "$OUT" "${names[@]}" <<'PY'
import hashlib, json, os, sys
out, names = sys.argv[1], sys.argv[2:]
ignored = [k for k in os.environ.get('IGNORE', '').split(',') if k]
timing = {'seconds', 'solve_seconds', 'plan_seconds', 'times', 'load_s', 'calibration_s', 'peak_rss_mib',
          'command', 'mi_seconds', 'mi_similarity_seconds', 'mi_clustering_seconds', 'save', *ignored}
def strip(v, top=True):
    if top and isinstance(v.get('saved'), dict):  # the --save path differs by design
        v = dict(v, saved={k: x for k, x in v['saved'].items() if k != 'dir'})
    if isinstance(v, dict):
        return {k: strip(x, False) for k, x in v.items() if k not in timing}
    if isinstance(v, list):
        return [strip(x, False) for x in v]
    return v
def tree(d):
    """Relative path -> sha256 of every file under d."""
    files = {}
    for root, _, fs in os.walk(d):
        for f in fs:
            p = os.path.join(root, f)
            files[os.path.relpath(p, d)] = hashlib.sha256(open(p, 'rb').read()).hexdigest()
    return files
def diffs(a, b, path=''):
    """Paths (a.b[3].c) where two stripped JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in diffs(a.get(k), b.get(k), f'{path}.{k}')]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diffs(x, y, f'{path}[{i}]')]
    return [] if a == b else [f'{path}: {a!r} vs {b!r}']
bad = 0
for name in names:
    a = json.load(open(f'{out}/old_{name}.json')); b = json.load(open(f'{out}/new_{name}.json'))
    same = json.dumps(strip(a)) == json.dumps(strip(b))
    ta, tb = tree(f'{out}/old_{name}_saved'), tree(f'{out}/new_{name}_saved')
    differ = sorted(f for f in set(ta) | set(tb) if ta.get(f) != tb.get(f))
    apart = 'timings' + ''.join(f' and {k}' for k in ignored)
    print(f"{name}: JSON {'identical apart from ' + apart if same else 'DIFFERENT'}; saved files "
          + (f"byte-identical ({len(ta)}: {', '.join(sorted(ta))})" if not differ
             else f"DIFFERENT: {', '.join(f + ('' if f in ta and f in tb else ' (only in ' + ('old' if f in ta else 'new') + ')') for f in differ)}")
          + f"; ppl {b['ppl']}")
    if not same:
        for d in diffs(strip(a), strip(b))[:20]:
            print(f"  {d}"[:300])
    bad += (not same) + bool(differ)
sys.exit(1 if bad else 0)
PY
