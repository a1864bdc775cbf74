#!/usr/bin/env bash
# On the GPU machine (device tool), from the repository root with .carry/{sparsegpt-mi-cuda.xz,
# data.tar.xz}: this tool's WikiText-2 evaluation throughput at one random shape, repeated, to
# tell a slow evaluation from a slow call: the dense checkpoint evaluated twice, then SparseGPT
# 50% + evaluation as research/bench_gpu.sh runs it (without SPARSEGPT_MI_TRACE). JSONs to $OUT.
#   SHAPE=6.7b LAYERS=8 bash gpu/gpu_eval_repeat.sh
set -uo pipefail
cd "$(dirname "$0")/.."
SHAPE=${SHAPE:-6.7b}; LAYERS=${LAYERS:-8}; S=/tmp/shared; B=/tmp/sparsegpt-mi-eval; OUT=${OUT:-gpu_out}
mkdir -p $S/data "$OUT"; [ -d $S/data/c4 ] || tar -xJf .carry/data.tar.xz -C $S/data
source gpu/gpu_unpack.sh; gpu_unpack $B .carry/sparsegpt-mi-cuda.xz
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
CUSOLVER=$(python3 -c "import glob, site; print(next(iter(sorted(g for p in site.getsitepackages() for g in glob.glob(p + '/nvidia/**/libcusolver.so.1*', recursive=True))), ''))" 2>/dev/null)
[ -n "$CUSOLVER" ] && export LD_LIBRARY_PATH=$(dirname "$CUSOLVER"):$LD_LIBRARY_PATH
FX=$S/fixtures/rand-$SHAPE-L$LAYERS
[ -f $FX/model.safetensors ] || python3 scripts/make_random_opt.py $SHAPE $FX --layers $LAYERS --tokenizer-from $S/data/opt-tokenizer > /dev/null
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,utilization.gpu --format=csv,noheader > "$OUT/card.txt"
for k in 1 2; do
  $B eval $FX --device cuda --datasets wikitext2 --data-dir $S/data --json "$OUT/eval_dense_$k.json" 2>&1 | tail -2
done
$B prune $FX c4 --sparsity 0.5 --device cuda --eval-datasets wikitext2 --data-dir $S/data --json "$OUT/prune_sgpt50.json" 2>&1 | tail -3
python3 - "$OUT" <<'PY'
import json, sys, glob
for f in sorted(glob.glob(sys.argv[1] + "/*.json")):
    d = json.load(open(f))
    e = [x for x in d.get("eval", d.get("results", [])) if x["dataset"] == "wikitext2"][0]
    print(f.split("/")[-1], "wikitext2", round(e["ppl"], 4), "tokens/s", round(e["tokens"] / e["seconds"]))
PY
