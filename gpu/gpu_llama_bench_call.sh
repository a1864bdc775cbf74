#!/usr/bin/env bash
# One device call of issue 27's Llama benchmark (run ON the GPU machine from the repository root):
# lays out the carried data, tokenizer and binary, then research/bench_llama_gpu.sh (the random
# Llama-3.1-8B-shaped checkpoint with 8 layers, the published llama.py and this tool, SparseGPT 50%,
# GPTQ 4-bit, SparseGPT 50% + 4-bit), everything packed into $OUT/bench_llama.tar.xz beside
# $OUT/bench_llama.md.
#
#   here:   scripts/build_cuda.sh (→ .carry/sparsegpt-mi-cuda.xz); tar -cJf .carry/data.tar.xz -C ../shared/data
#           c4 wikitext2 ptb; .carry/llama-tokenizer/ = ../shared/fixtures/llama-rand-gqa/{tokenizer.json,
#           tokenizer_config.json,special_tokens_map.json,config.json}; .carry/published/{sparsegpt,gptq}/ =
#           the published repositories' llama.py, solver, quant.py, modelutils.py, datautils.py (fetched)
#   device: OUT=$OUT bash gpu/gpu_llama_bench_call.sh   (the device tool sets $OUT; carry the four
#           .carry/ paths above, about 15 MiB; one H100, 600 s)
# Time (H100, test_results/families/bench_llama_h100): checkpoint 18 s, warm-up 10 s, published
# runs 112 s (sgpt50), 141 s (gptq4) and more than 95 s (sgpt50w4), each of ours 25-29 s: the three
# runs with one variant of ours fit one call (TOOLS=published VARIANTS=offload), not two. DEADLINE (560 s) cuts what would not end in
# time, and the table says which runs did not run; a second call with RUNS=... completes them.
# Environment: passed on to research/bench_llama_gpu.sh (RUNS, VARIANTS, MAX_WINDOWS, DEADLINE, ...).
set -uo pipefail
cd "$(dirname "$0")/.."
FINAL=${OUT:-$PWD/gpu_out}; mkdir -p "$FINAL"
W=/tmp/gpu_work/llama_bench; mkdir -p $W
S=/tmp/shared; mkdir -p $S/data $S/fixtures
[ -d $S/data/c4 ] || tar -xJf .carry/data.tar.xz -C $S/data
rm -rf $S/fixtures/llama-rand-gqa; cp -r .carry/llama-tokenizer $S/fixtures/llama-rand-gqa
B=/tmp/sparsegpt-mi
source gpu/gpu_unpack.sh; gpu_unpack $B .carry/sparsegpt-mi-cuda.xz
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
CUSOLVER=$(ls /usr/local/cuda-13.0/targets/x86_64-linux/lib/libcusolver.so.1[0-9]* 2>/dev/null | head -n1)
[ -n "$CUSOLVER" ] || CUSOLVER=$(python3 -c "import glob, site; print(next(iter(sorted(g for p in site.getsitepackages() for g in glob.glob(p + '/nvidia/**/libcusolver.so.1*', recursive=True))), ''))" 2>/dev/null)
[ -n "$CUSOLVER" ] && export LD_LIBRARY_PATH=$(dirname "$CUSOLVER"):$LD_LIBRARY_PATH
bash research/bench_llama_gpu.sh $B .carry/published/sparsegpt .carry/published/gptq $S $W 2>&1 | tee $W/call.log
cp $W/bench_llama.md "$FINAL/" 2>/dev/null
tar -cJf "$FINAL/bench_llama.tar.xz" -C /tmp/gpu_work llama_bench
