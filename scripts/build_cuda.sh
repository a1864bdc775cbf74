#!/usr/bin/env bash
# Builds the CUDA binary of sparsegpt-mi on a machine without a GPU (see ../shared/cuda/NOTES.md):
# CUDA 13.0 compiler and libraries from NVIDIA's PyPI wheels into .cuda-venv/, a stub libcuda for
# the linker, then `cargo build --release --features cuda` for sm_90 (H100/H200).
# Lints the CUDA build first (clippy with --features cuda, warnings are errors).
# Output: $CARGO_TARGET_DIR/release/sparsegpt-mi and $CARGO_TARGET_DIR/sparsegpt-mi-cuda.xz (to carry
# to the GPU machine), and the GPU tests of the fused forward (tests/cuda_forward.rs) as
# $CARGO_TARGET_DIR/cuda_forward_test.xz (checks/cuda/run_on_gpu.sh runs it); CARGO_TARGET_DIR
# defaults to target/.
# SRC_DIR: build another checkout's sources (e.g. a git worktree at the commit a study was built
# from); BUILD_ONLY=1: the binary alone, without the lint and the GPU test binary.
set -euo pipefail
cd "${SRC_DIR:-$(dirname "$0")/..}"
BUILD_ONLY=${BUILD_ONLY:-0}
VENV=${CUDA_VENV:-.cuda-venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "cuda-toolkit[nvcc,crt,nvvm,cudart,cublas,curand,nvrtc,cccl]==13.0.2"
fi
CUDA_ROOT=$("$VENV/bin/python" - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("nvidia")
print(os.path.join(list(spec.submodule_search_locations)[0], "cu13"))
PY
)
[ -x "$CUDA_ROOT/bin/nvcc" ] || { echo "error: nvcc not found under $CUDA_ROOT" >&2; exit 1; }
# Unversioned library names for the linker.
for lib in cudart cublas cublasLt curand nvrtc; do
  so=$(ls "$CUDA_ROOT"/lib/lib$lib.so.* 2>/dev/null | head -n1 || true)
  [ -n "$so" ] && ln -sf "$(basename "$so")" "$CUDA_ROOT/lib/lib$lib.so"
done
# A stub libcuda.so: candle links the driver API dynamically; the real driver is used at run time.
mkdir -p "$CUDA_ROOT/lib/stubs"
if [ ! -f "$CUDA_ROOT/lib/stubs/libcuda.so" ]; then
  cargo fetch -q
  SYS=$(ls -d ~/.cargo/registry/src/*/cudarc-0.19.*/src/driver/sys/mod.rs | head -n1)
  grep -o 'fn cu[A-Za-z0-9_]*(' "$SYS" | sed 's/^fn //; s/($//' | sort -u \
    | awk '{print "void " $1 "(void) {}"}' > "$CUDA_ROOT/lib/stubs/cuda_stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CUDA_ROOT/lib/stubs/libcuda.so" "$CUDA_ROOT/lib/stubs/cuda_stub.c"
fi
export PATH="$CUDA_ROOT/bin:$PATH" CUDA_HOME="$CUDA_ROOT" CUDA_PATH="$CUDA_ROOT" CUDA_COMPUTE_CAP=90 \
  CUDARC_CUDA_VERSION=13000 CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-2} \
  LIBRARY_PATH="$CUDA_ROOT/lib:$CUDA_ROOT/lib/stubs:${LIBRARY_PATH:-}" \
  RUSTFLAGS="-L $CUDA_ROOT/lib -L $CUDA_ROOT/lib/stubs -C link-arg=-Wl,-rpath,/usr/local/cuda-13.0/targets/x86_64-linux/lib:/usr/local/cuda/lib64"
TARGET=${CARGO_TARGET_DIR:-target}
[ "$BUILD_ONLY" = 1 ] || cargo clippy --release --features cuda --all-targets -- -D warnings
cargo build --release --features cuda
xz -6 -T2 -c "$TARGET/release/sparsegpt-mi" > "$TARGET/sparsegpt-mi-cuda.xz"
[ "$BUILD_ONLY" = 1 ] && { ls -la "$TARGET/release/sparsegpt-mi" "$TARGET/sparsegpt-mi-cuda.xz"; exit 0; }
TEST_BIN=$(cargo test --release --features cuda --test cuda_forward --no-run --message-format=json \
  | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cuda_forward" and m.get("executable"):
        print(m["executable"])')
[ -x "$TEST_BIN" ] || { echo "error: the cuda_forward test binary was not built" >&2; exit 1; }
xz -6 -T2 -c "$TEST_BIN" > "$TARGET/cuda_forward_test.xz"
ls -la "$TARGET/release/sparsegpt-mi" "$TARGET/sparsegpt-mi-cuda.xz" "$TARGET/cuda_forward_test.xz"
