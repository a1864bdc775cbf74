#!/usr/bin/env bash
# Whether the forward kernels that an earlier revision shipped compile to the same machine code
# now: src/model/kernels/attention.cu at BASE (a git revision) and in the working tree, each
# compiled as build.rs does (nvcc --cubin -O3 -arch=sm_90), every kernel of BASE's cubin
# disassembled (cuobjdump -sass) and compared instruction by instruction with the same-named
# kernel of the new cubin (addresses and encodings dropped). Also the registers and spills of
# every kernel of the new cubin (ptxas -v). No GPU needed.
#   usage: bash checks/cuda/same_sass.sh BASE   (CUDA_ROOT: the toolkit, as build_harness.sh;
#          CUOBJDUMP: a cuobjdump, default the one on PATH)
# Exit status 0 iff every kernel of BASE is unchanged.
set -euo pipefail
cd "$(dirname "$0")/../.."
BASE=${1:?usage: same_sass.sh BASE_REVISION}
source checks/cuda/cuda_root.sh
OBJ=${CUOBJDUMP:-cuobjdump}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
git show "$BASE:src/model/kernels/attention.cu" > "$W/base.cu"
"$NVCC" --cubin -O3 -std=c++17 -arch=sm_90 "$W/base.cu" -o "$W/base.cubin"
"$NVCC" --cubin -O3 -std=c++17 -arch=sm_90 -Xptxas -v src/model/kernels/attention.cu -o "$W/new.cubin" 2> "$W/ptxas.txt"
echo "nvcc: $("$NVCC" --version | tail -n1); base $(git rev-parse --short "$BASE"), working tree on $(git rev-parse --short HEAD)"
sass() { "$OBJ" -sass -fun "$2" "$1" | grep -E '^\s+/\*[0-9a-f]{4}\*/' | sed -E 's#^\s+/\*[0-9a-f]{4}\*/\s+##; s#\s*;.*##; s#\s+# #g'; }
kernels=$("$OBJ" -sass "$W/base.cubin" | sed -n -E 's/^\s+Function : (\S+)$/\1/p' | sort)
bad=0
for k in $kernels; do
  a=$(sass "$W/base.cubin" "$k" | md5sum); b=$(sass "$W/new.cubin" "$k" 2>/dev/null | md5sum)
  n=$(sass "$W/base.cubin" "$k" | wc -l)
  if [ "$a" = "$b" ]; then echo "same      $k ($n instructions)"; else echo "DIFFERENT $k"; bad=1; fi
done
echo
echo "registers and spills of every kernel now (ptxas -v):"
python3 - "$W/ptxas.txt" <<'PY'
import re, sys
lines = open(sys.argv[1]).read().split("\n")
name = None
for i, l in enumerate(lines):
    m = re.search(r"Compiling entry function '(\w+)'", l)
    if m:
        name = m.group(1)
    m = re.search(r"Used (\d+) registers", l)
    if m and name:
        ctx = " ".join(lines[max(0, i - 2):i + 1])
        spill = re.search(r"(\d+) bytes spill stores", ctx)
        print(f"  {name:32s} {m.group(1):>4s} registers, {spill.group(1) if spill else '?'} bytes spilled")
        name = None
PY
exit $bad
