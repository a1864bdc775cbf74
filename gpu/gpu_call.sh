#!/usr/bin/env bash
# One device-tool call on the GPU machine: a quick MI-mode compress of FX (no evaluation; prints
# the plan share and exits if it fails), then `gpu/gpu_run.sh FX STAGES` under a time limit,
# and everything packed into $OUT/all_FX.tar.xz whether or not the stages finished (a call that
# runs past the device tool's limit returns nothing, and it returns at most 8 files).
#
#   FX=opt-mini-b STAGES="bench mi25 noise" LIMIT=540 JOBS=6 bash gpu/gpu_call.sh
#
# Carry: .carry/{sparsegpt-mi-cuda.xz,data.tar.xz,reference,published,fx/$FX} (see gpu/gpu_run.sh).
FX=${FX:-opt-mini-a}
bash gpu/gpu_run.sh $FX sanity > /dev/null 2>&1
B=/tmp/sparsegpt-mi; S=/tmp/shared
export SPARSEGPT_MI_DATA_DIR=$S/data LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
CUSOLVER=$(ls /usr/local/cuda-13.0/targets/x86_64-linux/lib/libcusolver.so.1[0-9]* 2>/dev/null | head -n1)
[ -n "$CUSOLVER" ] || CUSOLVER=$(python3 -c "import glob, site; print(next(iter(sorted(g for p in site.getsitepackages() for g in glob.glob(p + '/nvidia/**/libcusolver.so.1*', recursive=True))), ''))" 2>/dev/null)
[ -n "$CUSOLVER" ] && export LD_LIBRARY_PATH=$(dirname "$CUSOLVER"):$LD_LIBRARY_PATH
mkdir -p /tmp/gpu_work/$FX
$B prune $S/fixtures/$FX c4 --sparsity 0.5 --wbits 4 --target-avg-bits 4.0 --use-mi-grouping 1 --n-groups 10 \
  --device cuda --eval-datasets "" --data-dir $S/data --json /tmp/gpu_work/$FX/quick_mi4.json > /tmp/gpu_work/$FX/quick_mi4.log 2>&1
python3 -c "import json; d=json.load(open('/tmp/gpu_work/$FX/quick_mi4.json')); t=d['times']; print('plan', round(t['plan_s'],3), 'total', round(t['total_s'],3), [round(L['plan']['mi_seconds'],4) for L in d['linears'] if L['name']=='fc2'])" \
  || { tail -3 /tmp/gpu_work/$FX/quick_mi4.log; exit 1; }
timeout ${LIMIT:-500} bash gpu/gpu_run.sh $FX ${STAGES:-bench}
tar -cJf ${OUT:-.}/all_$FX.tar.xz -C /tmp/gpu_work $FX
