#!/usr/bin/env bash
# Lays out what checks/cuda/run_on_gpu.sh needs under .carry/ (ignored), from a CUDA build:
#   .carry/attention_check.xz     the kernel harness (checks/cuda/build_harness.sh)
#   .carry/cuda_forward_test.xz   the crate's GPU tests   } from $CARGO_TARGET_DIR (default target/)
#   .carry/sparsegpt-mi-cuda.xz   the CLI                 } written by scripts/build_cuda.sh
#   .carry/fxz/FX/*.xz            the rotary fixtures llama-rand-gqa and qwen2-rand, file by file
#   .carry/data.tar.xz            ../shared/data (WikiText-2, PTB, C4 samples)
#   .carry/reference/             ../shared/reference (the published code's PPLs, 0.3 MB)
# About 50 MB in all: carry these six paths in one device call (under the 64 MiB limit).
#   usage: CARGO_TARGET_DIR=... bash checks/cuda/pack_carry.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET=${CARGO_TARGET_DIR:-target}
SHARED=${SHARED:-../shared}
for f in sparsegpt-mi-cuda.xz cuda_forward_test.xz; do
  [ -f "$TARGET/$f" ] || { echo "error: no $TARGET/$f (run scripts/build_cuda.sh with this CARGO_TARGET_DIR)" >&2; exit 1; }
done
mkdir -p .carry
[ -f .carry/attention_check.xz ] && [ .carry/attention_check.xz -nt src/model/kernels/attention.cu ] \
  && [ .carry/attention_check.xz -nt checks/cuda/attention_check.cu ] || bash checks/cuda/build_harness.sh
cp "$TARGET/sparsegpt-mi-cuda.xz" "$TARGET/cuda_forward_test.xz" .carry/
for fx in llama-rand-gqa qwen2-rand; do
  rm -rf ".carry/fxz/$fx"; mkdir -p ".carry/fxz/$fx"
  for f in "$SHARED/fixtures/$fx"/*; do
    xz -6 -T2 -c "$f" > ".carry/fxz/$fx/$(basename "$f").xz"
  done
done
tar -cJf .carry/data.tar.xz -C "$SHARED/data" .
rm -rf .carry/reference; cp -r "$SHARED/reference" .carry/reference; chmod -R u+w .carry/reference
du -ch .carry/attention_check.xz .carry/cuda_forward_test.xz .carry/sparsegpt-mi-cuda.xz .carry/fxz .carry/data.tar.xz \
  .carry/reference | tail -n1
