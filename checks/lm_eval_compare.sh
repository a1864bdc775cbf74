#!/usr/bin/env bash
# On the GPU machine: lm-evaluation-harness 0.4.13 (its HF backend) against `sparsegpt-mi eval
# --tasks` on one model and the same task files, then the items/s benchmark of both on the
# same card. Writes to OUTDIR: compare_f32.md and compare_f16.md (per-request log-likelihoods,
# per-document acc / acc_norm, the metrics and stderrs, both tools' JSON), bench.md (items/s of
# this tool and of lm-eval at batch sizes 1 and 32 on tasks files of N variants per item).
# Exit 1 if the two tools disagree beyond the tolerance (|Δ summed log-likelihood| per
# continuation token: f32 1e-4, f16 0.02) or on any acc / acc_norm decision.
#
#   BIN=/tmp/sparsegpt-mi bash checks/lm_eval_compare.sh MODEL_DIR OUTDIR [REPEAT]
#
# (gpu/gpu_run.sh FIXTURE lmeval runs it on the fixture.) lm-eval is not installed there;
# it travels as pure-Python wheels for Python 3.12 in .whl/ (or .carry/lmeval_whl/; both are in
# .gitignore: name the folder in the device call's `carry`), made here:
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
#     lm_eval==0.4.13 datasets==4.8.5 evaluate==0.4.6 dill==0.4.1 multiprocess==0.70.19 \
#     pytablewriter==1.2.1 DataProperty==1.1.1 mbstrdecoder==1.1.5 pathvalidate==3.3.1 tabledata==1.3.5 \
#     tcolorpy==0.1.7 typepy==1.3.5 chardet==5.2.0
#
# (12 MiB; the rest of what lm-eval's HF path imports is on the machine: torch, transformers,
# accelerate, peft, numpy, pandas, pyarrow, jinja2, pyyaml, sacrebleu, scikit-learn, tqdm,
# huggingface-hub, fsspec, xxhash, tokenizers. sqlitedict, word2number and rouge-score, sdists
# only, are imported by lm-eval only for features not used here.)
set -uo pipefail
cd "$(dirname "$0")/.."
MODEL=$(realpath "$1"); OUTDIR=$2; REPEAT=${3:-100}
BIN=${BIN:?BIN=path of the CUDA build of sparsegpt-mi}
mkdir -p "$OUTDIR"; OUTDIR=$(realpath "$OUTDIR")
WHL=.whl; [ -d "$WHL" ] || WHL=.carry/lmeval_whl
SITE=/tmp/lmeval_site
[ -d $SITE/lm_eval ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE $WHL/*.whl || exit 2
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m pip show torch transformers pyarrow fsspec huggingface_hub 2>/dev/null | grep -E "^(Name|Version)" | paste - - | tr '\n' ';'; echo
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
status=0
TASKS=$(realpath tests/data/tasks)
for DT in f32 f16; do
  PT=$([ $DT = f32 ] && echo float32 || echo float16)
  "$BIN" eval "$MODEL" --tasks all --data-dir tests/data --device cuda --dtype $DT --json "$OUTDIR/ours_$DT.json" \
    > "$OUTDIR/ours_$DT.txt" 2>&1 || { echo "sparsegpt-mi failed ($DT):"; tail -3 "$OUTDIR/ours_$DT.txt"; status=1; continue; }
  python3 checks/lm_eval_compare.py --model "$MODEL" --tasks-dir "$TASKS" --ours "$OUTDIR/ours_$DT.json" \
    --dtype $PT --device cuda --batch-size 1 --out "$OUTDIR/compare_$DT.md" --json "$OUTDIR/lm_eval_$DT.json" \
    > "$OUTDIR/lm_eval_$DT.log" 2>&1 || status=1
  cat "$OUTDIR/compare_$DT.md" 2>/dev/null || tail -20 "$OUTDIR/lm_eval_$DT.log"
done
# Benchmark: REPEAT variants of every item, f16, both tools on this card, one after the other.
BENCH=/tmp/lmeval_bench; rm -rf $BENCH; mkdir -p $BENCH
python3 checks/make_task_files.py --repeat "$REPEAT" --out $BENCH/tasks > /dev/null || exit 2
"$BIN" eval "$MODEL" --tasks all --data-dir $BENCH --device cuda --dtype f16 --json "$OUTDIR/bench_ours.json" > "$OUTDIR/bench_ours.txt" 2>&1 || status=1
{
  echo "# items/s, f16, $REPEAT variants of each hand-written item ($(nvidia-smi --query-gpu=name --format=csv,noheader))"
  for BS in 1 32; do
    python3 checks/lm_eval_compare.py --model "$MODEL" --tasks-dir $BENCH/tasks --ours "$OUTDIR/bench_ours.json" \
      --dtype float16 --device cuda --batch-size $BS --out "$OUTDIR/bench_bs$BS.md" > "$OUTDIR/bench_bs$BS.log" 2>&1
    echo; echo "## lm-eval batch size $BS"; grep -E "^Speed|^Tolerance" "$OUTDIR/bench_bs$BS.md"
  done
} > "$OUTDIR/bench.md"
cat "$OUTDIR/bench.md"
exit $status
