# Sourced by the CUDA check scripts: sets CUDA_ROOT (unless given) to the toolkit of the nvcc on
# PATH, else to the crate's .cuda-venv (scripts/build_cuda.sh), and NVCC to its compiler.
if [ -z "${CUDA_ROOT:-}" ]; then
  if command -v nvcc >/dev/null; then
    CUDA_ROOT=$(dirname "$(dirname "$(command -v nvcc)")")
  else
    CUDA_ROOT=$(ls -d "${CUDA_VENV:-.cuda-venv}"/lib/python3*/site-packages/nvidia/cu13 | head -n1)
  fi
fi
NVCC="$CUDA_ROOT/bin/nvcc"
