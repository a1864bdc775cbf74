#!/usr/bin/env bash
# One device call of the issue-16 benchmark (run ON the GPU machine from the repository root,
# with .carry/ carried as gpu/gpu_run.sh expects): optional fixture stages through
# gpu/gpu_run.sh, then research/bench_gpu.sh on random checkpoints, everything packed into
# $OUT/bench_NAME.tar.xz.
#   NAME=p1 FX=opt-mini-c STAGES="sanity reference" SHAPES="1.3b:24" RUNS=... PUB_RUNS=... bash gpu/gpu_bench_call.sh
# BENCH_FIXTURES: fixtures benchmarked before the random checkpoints (FX's stages lay them out);
# LIMIT: seconds for the benchmark (the table is written from what finished); SELFCHECK=1: the
# GPU solver against the host one (`self-check`, default shapes) first.
set -uo pipefail
cd "$(dirname "$0")/.."
NAME=${NAME:-bench}
W=/tmp/gpu_work; mkdir -p $W
[ -n "${FX:-}" ] && bash gpu/gpu_run.sh "$FX" ${STAGES:-sanity} > $W/${NAME}_stages.log 2>&1
B=/tmp/sparsegpt-mi; S=/tmp/shared
mkdir -p $S/data; [ -d $S/data/c4 ] || tar -xJf .carry/data.tar.xz -C $S/data
source gpu/gpu_unpack.sh; gpu_unpack $B .carry/sparsegpt-mi-cuda.xz
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
CUSOLVER=$(python3 -c "import glob, site; print(next(iter(sorted(g for p in site.getsitepackages() for g in glob.glob(p + '/nvidia/**/libcusolver.so.1*', recursive=True))), ''))" 2>/dev/null)
[ -n "$CUSOLVER" ] && export LD_LIBRARY_PATH=$(dirname "$CUSOLVER"):$LD_LIBRARY_PATH
[ "${SELFCHECK:-0}" = 1 ] && $B self-check --json $W/${NAME}_selfcheck.json > $W/${NAME}_selfcheck.md 2>&1
if [ -n "${SHAPES:-}" ]; then
  mkdir -p $S/fixtures
  RANDOM_SHAPES="$SHAPES" EVAL=${EVAL:-wikitext2} MI=${MI:-0} timeout ${LIMIT:-0} bash research/bench_gpu.sh $B \
    .carry/published/sparsegpt .carry/published/gptq $S $W/${NAME}_bench "${BENCH_FIXTURES:-}" > $W/${NAME}_bench.log 2>&1
  python3 research/bench_table.py $W/${NAME}_bench > $W/${NAME}_bench/bench_gpu.md
  cat $W/${NAME}_bench/bench_gpu.md
fi
tar --exclude='*.safetensors' -cJf ${OUT:-.}/bench_$NAME.tar.xz -C $W .
