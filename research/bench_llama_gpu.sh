#!/usr/bin/env bash
# Llama benchmark, run ON the GPU machine: a random-weight checkpoint with Llama-3.1-8B's shapes
# (8 of its 32 layers, bf16, made here by scripts/make_random_opt.py), compressed by the published
# llama.py (research/published_llama.py) and by sparsegpt-mi's CUDA build, one after another on
# the same card, with the same calibration (128 C4 windows of 2048 tokens, seed 0) and the same
# evaluation windows; research/llama_bench_table.py puts them side by side with the issue's targets.
#
#   research/bench_llama_gpu.sh BIN PUBLISHED_SPARSEGPT_DIR PUBLISHED_GPTQ_DIR SHARED_DIR OUT_DIR
#
# BIN: the CUDA binary. The published dirs hold IST-DASLab/sparsegpt and IST-DASLab/gptq (llama.py,
# the solver, quant.py, modelutils.py, datautils.py), fetched and carried, never committed.
# SHARED_DIR: data/ (c4, wikitext2, ptb) and fixtures/ (the checkpoint is made there).
# Environment: RUNS (default "sgpt50 gptq4 sgpt50w4", in that order: each run is the published
# code's then ours), SHAPE (default llama-3.1-8b), LAYERS (8), TOKENIZER (the directory whose
# tokenizer files the checkpoint gets, default SHARED_DIR/fixtures/llama-rand-gqa), EVAL (wikitext2),
# MAX_WINDOWS (32: evaluation windows per corpus, both tools), NSAMPLES (128), TOOLS (default "published ours":
# ours = this tool with its model resident on the GPU), VARIANTS (ours again with each as a flag, e.g. "offload";
# TOOLS=published VARIANTS=offload compares the published code with the offloaded runs only), DEADLINE (seconds from the start within which every run must end, default
# 560: a run that would start with less than MIN_RUN s left is skipped, one still running at the
# deadline is stopped; the table is written from what finished).
set -uo pipefail
BIN=$1; PUB_SGPT=$2; PUB_GPTQ=$3; SHARED=$4; OUT=$5
RUNS=${RUNS:-sgpt50 gptq4 sgpt50w4}; SHAPE=${SHAPE:-llama-3.1-8b}; LAYERS=${LAYERS:-8}
EVAL=${EVAL:-wikitext2}; MAX_WINDOWS=${MAX_WINDOWS:-32}; NSAMPLES=${NSAMPLES:-128}; DEADLINE=${DEADLINE:-560}; MIN_RUN=${MIN_RUN:-30}
TOKENIZER=${TOKENIZER:-$SHARED/fixtures/llama-rand-gqa}
HERE=$(cd "$(dirname "$0")" && pwd)
START=$(date +%s)
left() { echo $(( DEADLINE - ($(date +%s) - START) )); }
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUT/card.txt"
python3 -c "import torch, transformers; print(f'torch {torch.__version__}, transformers {transformers.__version__}')" > "$OUT/versions.txt"
source "$HERE/peak_mem.sh"
CKPT=$SHARED/fixtures/rand-$SHAPE-L$LAYERS
t=$(date +%s)
if [ ! -f "$CKPT/config.json" ]; then
  python3 "$HERE/../scripts/make_random_opt.py" "$SHAPE" "$CKPT" --layers "$LAYERS" --tokenizer-from "$TOKENIZER" \
    > "$OUT/make_checkpoint.log" 2>&1 || { tail -5 "$OUT/make_checkpoint.log"; exit 1; }
fi
echo "$(tail -n1 "$OUT/make_checkpoint.log" 2>/dev/null | sed 's/^[^ ]*: //'), made in $(( $(date +%s) - t )) s" | tee "$OUT/checkpoint.txt"
cp "$CKPT/config.json" "$OUT/checkpoint_config.json"
# Warm the driver's PTX cache (candle's kernels are JIT-compiled on first use) and the page cache:
# the benchmarked checkpoint, layer 0 compressed from 2 windows, 9 evaluation windows (one full
# batch of 8 and a partial one); not measured.
export CUDA_CACHE_MAXSIZE=${CUDA_CACHE_MAXSIZE:-4294967296}
t=$(date +%s)
"$BIN" prune "$CKPT" c4 --sparsity 0.5 --wbits 4 --nsamples 2 --maxlayer 1 --device cuda --eval-datasets wikitext2 \
  --max-windows 9 --data-dir "$SHARED/data" --json "$OUT/warmup.json" > "$OUT/warmup.log" 2>&1 || tail -3 "$OUT/warmup.log"
echo "warm-up: $(( $(date +%s) - t )) s"
for run in $RUNS; do
  case $run in
    sgpt50) method=sparsegpt; flags="--sparsity 0.5";;
    sgpt50w4) method=sparsegpt; flags="--sparsity 0.5 --wbits 4";;
    gptq4) method=gptq; flags="--wbits 4";;
    *) echo "unknown run $run"; continue;;
  esac
  pub=$PUB_SGPT; [ "$method" = gptq ] && pub=$PUB_GPTQ
  for tool in ${TOOLS:-published ours} ${VARIANTS:-}; do
    remaining=$(left)
    if [ "$remaining" -lt "$MIN_RUN" ]; then echo "$run $tool: skipped, $remaining s left"; continue; fi
    t=$(date +%s)
    if [ "$tool" = published ]; then
      base=$OUT/bench_ref_$run
      peak_mem "$base.mem" timeout "$remaining" python3 "$HERE/published_llama.py" "$CKPT" --published "$pub" \
        --method $method $flags --nsamples "$NSAMPLES" --data-dir "$SHARED/data" --eval "$EVAL" --max-windows "$MAX_WINDOWS" \
        --json "$base.json" > "$base.log" 2>&1
    else
      name=$run; extra=""
      [ "$tool" != ours ] && { name=$run-$tool; extra="--$tool"; }
      base=$OUT/bench_ours_$name
      # --no-true-sequential: the published code's one calibration pass (the tool's default when
      # quantizing is true-sequential), like for like.
      peak_mem "$base.mem" timeout "$remaining" "$BIN" prune "$CKPT" c4 $flags --no-true-sequential $extra --nsamples "$NSAMPLES" --device cuda \
        --eval-datasets "$EVAL" --max-windows "$MAX_WINDOWS" --data-dir "$SHARED/data" --json "$base.json" > "$base.log" 2>&1
    fi
    rc=$?
    echo "$run $tool: exit $rc, $(( $(date +%s) - t )) s"
    [ $rc = 0 ] || tail -3 "$base.log"
  done
done
RUNS="$RUNS" python3 "$HERE/llama_bench_table.py" "$OUT" > "$OUT/bench_llama.md"
cat "$OUT/bench_llama.md"
