#!/usr/bin/env bash
# Lays out .carry/ (ignored) for one of the device calls of gpu/README.md from a fresh machine, and
# checks that it fits the call's 64 MiB beside the tracked tree (or beside the tree without
# test_results/, which no device script reads: then move it aside for the call).
#
#   CARGO_TARGET_DIR=... bash gpu/pack_carry.sh CALL
#     CALL families      gpu_families.sh and gpu_run.sh's `exports` stage on the rotary fixtures:
#                        fxz/{llama-rand-gqa,qwen2-rand}, reference/, published/, whl/
#     CALL llama_bench   gpu_llama_bench_call.sh: llama-tokenizer/, published/
#     CALL study2 FX     gpu_run.sh FX study2repro study2 (issue 30): fxz/FX, the study's build as
#                        study2-cuda.xz (STUDY_BUILD, default /work/sparsegpt-mi-cuda-3b0d4c2.xz:
#                        scripts/build_cuda.sh in a worktree at 3b0d4c2, the label build-55ee067),
#                        study2_runs_FX.tar.xz (the committed runs, where any; for STUDY_RUNS=)
#   All: data.tar.xz; families and llama_bench also sparsegpt-mi-cuda.xz (scripts/build_cuda.sh's,
#   from $CARGO_TARGET_DIR, default target/). published/ is the published code (IST-DASLab/sparsegpt and gptq, exported from
#   the `fetch` tool's mirrors under $MIRRORS, default /work/.mirror; never committed); whl/ is
#   gpu/make_wheels.sh's. Parts already in .carry/ are kept, except the binary, copied every time.
# (checks/cuda/pack_carry.sh is the kernel harness's call; the fixtures travel the same way, fxz/.)
set -euo pipefail
cd "$(dirname "$0")/.."
CALL=${1:?usage: gpu/pack_carry.sh families|llama_bench|study2 FIXTURE}
TARGET=${CARGO_TARGET_DIR:-target}
SHARED=${SHARED:-../shared}
MIRRORS=${MIRRORS:-/work/.mirror}
mkdir -p .carry
if [ "$CALL" != study2 ]; then
  [ -f "$TARGET/sparsegpt-mi-cuda.xz" ] || { echo "error: no $TARGET/sparsegpt-mi-cuda.xz (scripts/build_cuda.sh first)" >&2; exit 1; }
  cp "$TARGET/sparsegpt-mi-cuda.xz" .carry/
fi
[ -f .carry/data.tar.xz ] || tar -cJf .carry/data.tar.xz -C "$SHARED/data" c4 wikitext2 ptb
published() {
  for r in sparsegpt gptq; do
    [ -d ".carry/published/$r" ] && continue
    local git="$MIRRORS/IST-DASLab+$r/repo"
    [ -d "$git" ] || { echo "error: no mirror of IST-DASLab/$r at $git (fetch github:IST-DASLab/$r)" >&2; exit 1; }
    mkdir -p ".carry/published/$r"
    git --git-dir="$git" archive HEAD | tar -x -C ".carry/published/$r"
  done
}
# A fixture as .carry/fxz/FX/*.xz, file by file (gpu_run.sh and gpu_families.sh unpack it).
fixture_xz() {
  [ -d ".carry/fxz/$1" ] && return
  mkdir -p ".carry/fxz/$1"
  for f in "$SHARED/fixtures/$1"/*; do xz -6 -T2 -c "$f" > ".carry/fxz/$1/$(basename "$f").xz"; done
}
case $CALL in
  families)
    # Each fixture named: .carry/fxz/ may also hold other calls' fixtures.
    PARTS=(sparsegpt-mi-cuda.xz data.tar.xz fxz/llama-rand-gqa fxz/qwen2-rand reference published whl)
    fixture_xz llama-rand-gqa
    fixture_xz qwen2-rand
    [ -d .carry/reference ] || cp -r "$SHARED/reference" .carry/reference
    published
    [ -d .carry/whl ] || bash gpu/make_wheels.sh .carry/whl
    ;;
  llama_bench)
    PARTS=(sparsegpt-mi-cuda.xz data.tar.xz llama-tokenizer published)
    if [ ! -d .carry/llama-tokenizer ]; then
      mkdir -p .carry/llama-tokenizer
      for f in tokenizer.json tokenizer_config.json special_tokens_map.json config.json; do
        [ -f "$SHARED/fixtures/llama-rand-gqa/$f" ] && cp "$SHARED/fixtures/llama-rand-gqa/$f" .carry/llama-tokenizer/
      done
    fi
    published
    ;;
  study2)
    FX=${2:?usage: gpu/pack_carry.sh study2 FIXTURE}
    [ -d "$SHARED/fixtures/$FX" ] || { echo "error: no fixture $SHARED/fixtures/$FX" >&2; exit 1; }
    BUILD=${STUDY_BUILD:-/work/sparsegpt-mi-cuda-3b0d4c2.xz}
    [ -f "$BUILD" ] || { echo "error: no study build $BUILD (git worktree add W 3b0d4c2; SRC_DIR=W BUILD_ONLY=1 bash scripts/build_cuda.sh; copy its target/sparsegpt-mi-cuda.xz there; or STUDY_BUILD=)" >&2; exit 1; }
    cp "$BUILD" .carry/study2-cuda.xz
    PARTS=(data.tar.xz study2-cuda.xz "fxz/$FX")
    fixture_xz "$FX"
    if [ -f "test_results/mi_study_2/runs_$FX.tar.xz" ]; then
      cp "test_results/mi_study_2/runs_$FX.tar.xz" ".carry/study2_runs_$FX.tar.xz"
      PARTS+=("study2_runs_$FX.tar.xz")
    fi
    ;;
  *) echo "error: unknown call '$CALL' (families, llama_bench, study2 FIXTURE)" >&2; exit 1 ;;
esac
carried=$(cd .carry && du -cb "${PARTS[@]}" | tail -n1 | cut -f1)
tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -n1 | cut -f1)
results=$(git ls-files -z test_results | xargs -0 du -cb 2>/dev/null | tail -n1 | cut -f1)
limit=$((64 * 1048576))
echo "carry: ${PARTS[*]/#/.carry/}"
echo "carried $((carried / 1000000)) MB + tracked files $((tracked / 1000000)) MB (test_results/ $((results / 1000000)) MB) = $(((carried + tracked) / 1000000)) MB; limit $((limit / 1000000)) MB"
if [ $((carried + tracked)) -le $limit ]; then
  echo "fits with test_results/"
elif [ $((carried + tracked - results)) -le $limit ]; then
  echo "fits only with test_results/ moved aside for the call (mv test_results /work/tr_hold; the call; mv /work/tr_hold test_results)"
else
  echo "error: over the device call's 64 MiB even without test_results/" >&2
  exit 1
fi
