#!/usr/bin/env bash
# Makes .carry/whl/: the Python packages the GPU machine lacks for the export checks (stage
# `exports` of gpu_run.sh: compressed-tensors, and transformers' GPTQ backend, GPTQModel + optimum),
# as wheels for its Python 3.12, installed there with `pip install --no-index --no-deps --target`.
# The GPU machine has torch 2.11 and transformers 5.17; GPTQModel 7.7.0 asks for newer ones in its
# metadata but imports and loads GPTQ checkpoints with these (--no-deps), as on this machine's CPU
# (test_results/export/gptqmodel_cpu/). The list is what `import gptqmodel, optimum.gptq,
# compressed_tensors` needed in a venv holding only torch 2.11.0 and transformers 5.17.0.
#
#   bash gpu/make_wheels.sh [DIR]      (default .carry/whl; about 14 MB; needs PyPI and a Python 3.12,
#                                       PY312, default pyenv's 3.12.1)
# GPTQModel ships no binary wheel: built here without its CUDA extension (pure Python); Defuser,
# Device-SMI, LogBar, TokeNicer (sdists, pure Python) and PyPcre (a C extension linking the system's
# libpcre2-8.so.0) are built with Python 3.12; the rest are PyPI's own cp312 / py3 wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.carry/whl}
PY312=${PY312:-/root/.pyenv/versions/3.12.1/bin/python3.12}
[ -x "$PY312" ] || { echo "error: no Python 3.12 at $PY312 (set PY312)" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$DIR"; DIR=$(cd "$DIR" && pwd)
BINARY=(optimum==2.3.0 compressed-tensors==0.20.1 accelerate==1.16.0 annotated-types==0.8.0 loguru==0.7.3
  pillow==13.0.0 psutil==7.2.2 pydantic==2.14.4 pydantic_core==2.50.5 requests==2.34.2 urllib3==2.8.0 idna==3.21
  certifi==2026.10.19.post1 threadpoolctl==3.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0)
SDIST=(Defuser==0.0.28 Device-SMI==0.5.7 LogBar==0.4.15 PyPcre==0.6.4 TokeNicer==0.0.14)
"$PY312" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --abi cp312 --abi abi3 --abi none --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d "$DIR" "${BINARY[@]}"
"$PY312" -m pip wheel -q --no-deps -w "$DIR" "${SDIST[@]}"
# GPTQModel: its setup.py pins setuptools >=84.2.1,<85 and builds no extension with BUILD_CUDA_EXT=0.
"$PY312" -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q "setuptools>=84.2.1,<85" wheel
"$WORK/venv/bin/pip" download -q --no-deps --no-binary=:all: gptqmodel==7.7.0 -d "$WORK"
tar -xzf "$WORK"/gptqmodel-7.7.0.tar.gz -C "$WORK"
(cd "$WORK/gptqmodel-7.7.0" && BUILD_CUDA_EXT=0 "$WORK/venv/bin/pip" wheel -q --no-deps --no-build-isolation . -w "$DIR") 2>&1 \
  | grep -v -e '^ *$' -e '!!' -e 'check.warn' || true
ls "$DIR"
du -sh "$DIR"
