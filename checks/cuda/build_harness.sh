#!/usr/bin/env bash
# Builds the GPU check of the forward kernels (checks/cuda/attention_check.cu, which includes
# src/model/kernels/attention.cu) for sm_90 (H100/H200), with no GPU needed:
#   .carry/attention_check     the executable (cudart static; cuBLAS/cuBLASLt 13 found through
#                              its RUNPATH /usr/local/cuda-13.0/targets/x86_64-linux/lib)
#   .carry/attention_check.xz  the same, compressed, to carry to the GPU machine
#   .carry/attention_check.ptxas.txt  ptxas register / shared-memory / spill report
# nvcc: $CUDA_ROOT/bin/nvcc, else the one on PATH, else the crate's .cuda-venv (scripts/build_cuda.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
source checks/cuda/cuda_root.sh
[ -x "$NVCC" ] || { echo "error: no nvcc at $NVCC (set CUDA_ROOT)" >&2; exit 1; }
# cuBLAS under an unversioned name for the linker (the PyPI wheels ship only .so.13).
LIBDIR=""
for d in "$CUDA_ROOT/lib64" "$CUDA_ROOT/lib" "$CUDA_ROOT/targets/x86_64-linux/lib"; do
  [ -e "$d/libcublas.so" ] && [ -e "$d/libcublasLt.so" ] && { LIBDIR=$d; break; }
done
if [ -z "$LIBDIR" ]; then
  LIBDIR=$(mktemp -d)
  for lib in cublas cublasLt; do
    so=$(ls "$CUDA_ROOT"/lib/lib$lib.so.* | head -n1)
    ln -s "$so" "$LIBDIR/lib$lib.so"
  done
fi
mkdir -p .carry
"$NVCC" -O3 -std=c++17 -arch=sm_90 -lineinfo -Xptxas -v checks/cuda/attention_check.cu -L"$LIBDIR" -L"$CUDA_ROOT/lib" -L"$CUDA_ROOT/lib64" -lcublasLt -lcublas \
  -Xlinker -rpath=/usr/local/cuda-13.0/targets/x86_64-linux/lib:/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib \
  -o .carry/attention_check 2> .carry/attention_check.ptxas.txt \
  || { cat .carry/attention_check.ptxas.txt >&2; exit 1; }
grep -iE "warning|error" .carry/attention_check.ptxas.txt | grep -v "^ptxas info" >&2 || true
xz -6 -T2 -kf .carry/attention_check
ls -la .carry/attention_check .carry/attention_check.xz
