#!/usr/bin/env bash
# Lays out what checks/cuda/run_on_gpu.sh needs under .carry/ (ignored), from a CUDA build:
#   .carry/attention_check.xz     the kernel harness (checks/cuda/build_harness.sh, rebuilt when
#                                 older than its sources)
#   .carry/cuda_forward_test.xz   the crate's GPU tests (scripts/build_cuda.sh writes it to
#                                 $CARGO_TARGET_DIR, default target/)
#   .carry/fxz/FX/*.xz            the rotary fixtures llama-rand-gqa and qwen2-rand, file by file
#   .carry/wikitext2.tar.xz       ../shared/data/wikitext2
# About 44 MB: carry these four paths in one device call; with the repository's own files it has
# to stay under the call's 64 MiB (printed below).
#   usage: CARGO_TARGET_DIR=... bash checks/cuda/pack_carry.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET=${CARGO_TARGET_DIR:-target}
SHARED=${SHARED:-../shared}
[ -f "$TARGET/cuda_forward_test.xz" ] || { echo "error: no $TARGET/cuda_forward_test.xz (run scripts/build_cuda.sh with this CARGO_TARGET_DIR)" >&2; exit 1; }
mkdir -p .carry
[ -f .carry/attention_check.xz ] && [ .carry/attention_check.xz -nt src/model/kernels/attention.cu ] \
  && [ .carry/attention_check.xz -nt checks/cuda/attention_check.cu ] || bash checks/cuda/build_harness.sh
cp "$TARGET/cuda_forward_test.xz" .carry/
for fx in llama-rand-gqa qwen2-rand; do
  rm -rf ".carry/fxz/$fx"; mkdir -p ".carry/fxz/$fx"
  for f in "$SHARED/fixtures/$fx"/*; do
    xz -6 -T2 -c "$f" > ".carry/fxz/$fx/$(basename "$f").xz"
  done
done
tar -cJf .carry/wikitext2.tar.xz -C "$SHARED/data" wikitext2
carried=$(du -cb .carry/attention_check.xz .carry/cuda_forward_test.xz .carry/fxz .carry/wikitext2.tar.xz | tail -n1 | cut -f1)
tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -n1 | cut -f1)
echo "carried $((carried / 1000000)) MB + the repository's files $((tracked / 1000000)) MB = $(((carried + tracked) / 1000000)) MB (limit $((64 * 1048576 / 1000000)) MB)"
[ $((carried + tracked)) -le $((64 * 1048576)) ] || { echo "error: over the device call's 64 MiB" >&2; exit 1; }
