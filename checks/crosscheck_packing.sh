#!/usr/bin/env bash
# Runs the packing_crosscheck example (the library's packing and the f16 rounding the exports use)
# and compares its output with compressed-tensors' own functions (checks/crosscheck_packing.py).
#   checks/crosscheck_packing.sh [PYTHON]   (default .pyenv/bin/python; needs torch, numpy,
#                                             safetensors, compressed-tensors)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.pyenv/bin/python}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p test_results/export
cargo run -q --example packing_crosscheck -- "$TMP/rust.json"
"$PY" checks/crosscheck_packing.py "$TMP/rust.json" test_results/export/crosscheck_packing.json 2>&1 | tee test_results/export/crosscheck_packing.txt
