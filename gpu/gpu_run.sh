#!/usr/bin/env bash
# On the GPU machine (device tool): lay out a ../shared-like tree from what was carried, unpack
# the CUDA binary, then run the named stages. Writes everything under $OUT (or ./gpu_out).
#
#   gpu/gpu_run.sh FIXTURE STAGE...   stages: sanity selfcheck compare bench cpu mishare rounding reference noise reload hinv64 mi mi25 scale exports study study2 study2repro run lmeval
#
# Carried (ignored, under .carry/): sparsegpt-mi-cuda.xz (scripts/build_cuda.sh), data.tar.xz
# (evaluation + calibration data), reference/ (../shared/reference), fx/FIXTURE/{config.json,
# model.safetensors}, published/{sparsegpt,gptq} (the published code, fetched, never committed),
# whl/ (stage exports: compressed-tensors 0.20.1 and its dependencies as wheels for Python 3.12:
# annotated_types, loguru, psutil, pydantic, pydantic_core, typing_extensions, typing_inspection).
set -uo pipefail
cd "$(dirname "$0")/.."
FX=$1; shift
# Results go to a work folder, packed at the end into one archive in $OUT (the device tool
# returns at most 8 files).
FINAL=${OUT:-$PWD/gpu_out}; mkdir -p "$FINAL"
OUT=/tmp/gpu_work/$FX; mkdir -p "$OUT"
S=/tmp/shared; mkdir -p $S/fixtures/$FX $S/data
[ -d $S/data/c4 ] || tar -xJf .carry/data.tar.xz -C $S/data
[ -d .carry/reference ] && { rm -rf $S/reference; cp -r .carry/reference $S/reference; }
# A fixture comes as .carry/fx/FX/ or, xz-compressed file by file (*.xz), as .carry/fxz/FX/.
for f in .carry/fx/$FX/* .carry/fxz/$FX/*; do
  [ -f "$f" ] || continue
  case $f in *.xz) xz -dc "$f" > $S/fixtures/$FX/$(basename "${f%.xz}");; *) cp "$f" $S/fixtures/$FX/;; esac
done
# A fixture without tokenizer files gets OPT's (../shared/data/opt-tokenizer); the others keep their own.
[ -f $S/fixtures/$FX/tokenizer.json ] || [ -f $S/fixtures/$FX/vocab.json ] || cp $S/data/opt-tokenizer/* $S/fixtures/$FX/
# BIN / CUDA_XZ: another build than .carry/sparsegpt-mi-cuda.xz (e.g. the one a study began with).
BIN=${BIN:-/tmp/sparsegpt-mi}
source gpu/gpu_unpack.sh; gpu_unpack $BIN ${CUDA_XZ:-.carry/sparsegpt-mi-cuda.xz}
export SPARSEGPT_MI_DATA_DIR=$S/data
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
# cuSOLVER (the GPU solver opens it at run time): the toolkit's, else the Python wheels'.
CUSOLVER=$(ls /usr/local/cuda-13.0/targets/x86_64-linux/lib/libcusolver.so.1[0-9]* 2>/dev/null | head -n1)
[ -n "$CUSOLVER" ] || CUSOLVER=$(python3 -c "import glob, site; print(next(iter(sorted(g for p in site.getsitepackages() for g in glob.glob(p + '/nvidia/**/libcusolver.so.1*', recursive=True))), ''))" 2>/dev/null)
[ -n "$CUSOLVER" ] && export LD_LIBRARY_PATH=$(dirname "$CUSOLVER"):$LD_LIBRARY_PATH
for stage in "$@"; do
  echo "=== $stage $(date +%T)"
  case $stage in
    sanity)
      nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
      t=$(date +%s); $BIN eval $S/fixtures/$FX --device cuda --max-windows 2 --data-dir $S/data --json $OUT/sanity_cuda_$FX.json
      echo "first CUDA call (PTX JIT included): $(( $(date +%s) - t )) s"
      $BIN eval $S/fixtures/$FX --device cuda --max-windows 2 --data-dir $S/data --json $OUT/sanity_cuda2_$FX.json | tail -3
      ;;
    selfcheck)
      # The GPU solver against the host one on random layers (all settings), then its time at
      # opt-6.7b shapes (q/k/v/out, fc1, fc2) beside the host solver's on this machine's cores
      # (SELFCHECK_BIG=0: the first part only).
      echo "cuSOLVER: ${CUSOLVER:-not found}"
      $BIN self-check --json $OUT/selfcheck.json
      [ "${SELFCHECK_BIG:-1}" = 1 ] && $BIN self-check --shapes 4096x4096,16384x4096,4096x16384 --settings sgpt50w4 --json $OUT/selfcheck_6.7b.json
      ;;
    compare)
      # This build against an earlier one (.carry/sparsegpt-mi-old.xz) on the same card in the same
      # call: the bench's runs on FIXTURE with the full protocol, and self-check's default shapes;
      # checks/compare_table.py puts the PPLs side by side.
      OLD=/tmp/sparsegpt-mi-old
      [ -x $OLD ] || { xz -dc .carry/sparsegpt-mi-old.xz > $OLD; chmod +x $OLD; }
      mkdir -p $OUT/compare
      for v in old new; do
        bin=$BIN; [ $v = old ] && bin=$OLD
        for cfg in "sgpt50:--sparsity 0.5" "sgpt50w4:--sparsity 0.5 --wbits 4" "gptq4:--wbits 4" \
                   "mi4:--sparsity 0.5 --wbits 4 --target-avg-bits 4.0 --use-mi-grouping 1 --n-groups 10"; do
          $bin prune $S/fixtures/$FX c4 ${cfg#*:} --device cuda --data-dir $S/data \
            --json $OUT/compare/${v}_${FX}_${cfg%%:*}.json > $OUT/compare/${v}_${FX}_${cfg%%:*}.log 2>&1 || echo "$v ${cfg%%:*} failed"
        done
        $bin self-check --json $OUT/compare/${v}_selfcheck.json > $OUT/compare/${v}_selfcheck.md 2>&1 || echo "$v self-check failed"
      done
      python3 checks/compare_table.py $OUT/compare | tee $OUT/compare/README.md
      ;;
    bench)
      bash research/bench_gpu.sh $BIN .carry/published/sparsegpt .carry/published/gptq $S "$OUT/bench" "$FX"
      ;;
    cpu|cpu16)
      # The CPU path (this host's cores) of the bench runs, evaluated on the first 32 windows of
      # each corpus, for research/cpu_vs_gpu_table.py (issue 5: GPU PPL = CPU PPL within 0.5%).
      # CPU_RUNS="mi4 ..." runs only those. cpu16: in f16 as the GPU runs (files end in _f16),
      # CPU16_RUNS (default mi4).
      runs=${CPU_RUNS:-}; dtype=auto; suffix=
      [ $stage = cpu16 ] && { runs=${CPU16_RUNS:-mi4}; dtype=f16; suffix=_f16; }
      for cfg in "sgpt50:--sparsity 0.5" "sgpt50w4:--sparsity 0.5 --wbits 4" \
                 "mi4:--sparsity 0.5 --wbits 4 --target-avg-bits 4.0 --use-mi-grouping 1 --n-groups 10"; do
        run=${cfg%%:*}
        [[ -z "$runs" || " $runs " == *" $run "* ]] || continue
        $BIN prune $S/fixtures/$FX c4 ${cfg#*:} --device cpu --dtype $dtype --max-windows 32 --data-dir $S/data \
          --json $OUT/cpu_${FX}_$run$suffix.json | tail -5
      done
      ;;
    mishare)
      # Issue 5's MI check, repeated: REPEATS (default 8) MI compresses (no evaluation) in a row,
      # each one's waited-for planning (plan_s) over its compress time; then one with the host
      # solver, where planning runs with no solve beside it (its per-input plan times are the
      # planning's own cost).
      mkdir -p $OUT/mishare
      MI="--sparsity 0.5 --wbits 4 --target-avg-bits 4.0 --use-mi-grouping 1 --n-groups 10 --eval-datasets ''"
      for r in $(seq 1 ${REPEATS:-8}); do
        eval $BIN prune $S/fixtures/$FX c4 $MI --device cuda --data-dir $S/data --json $OUT/mishare/run$r.json > /dev/null 2>&1
      done
      eval $BIN prune $S/fixtures/$FX c4 $MI --device cuda --host-solver --data-dir $S/data --json $OUT/mishare/host_solver.json > /dev/null 2>&1
      python3 research/mi_share_table.py $OUT/mishare | tee $OUT/mishare/README.md
      ;;
    rounding)
      # How far rounding alone moves each run, on the GPU: sgpt50w4 and mi4 in f32 (the CPU path's
      # precision) and in f16 with H summed instead of averaged, on the first 32 windows of each
      # corpus, for research/rounding_table.py beside the CPU runs (stage cpu) and the bench's.
      mkdir -p $OUT/rounding
      for cfg in "sgpt50w4:--sparsity 0.5 --wbits 4" \
                 "mi4:--sparsity 0.5 --wbits 4 --target-avg-bits 4.0 --use-mi-grouping 1 --n-groups 10"; do
        run=${cfg%%:*}
        $BIN prune $S/fixtures/$FX c4 ${cfg#*:} --device cuda --dtype f32 --max-windows 32 --data-dir $S/data \
          --json $OUT/rounding/gpu_f32_${FX}_$run.json | tail -4
        $BIN prune $S/fixtures/$FX c4 ${cfg#*:} --device cuda --hessian-accumulation sum --max-windows 32 --data-dir $S/data \
          --json $OUT/rounding/gpu_sum_${FX}_$run.json | tail -4
      done
      ;;
    reference)
      # REF_EXTRA (e.g. --lazy-updates) is added to every prune run.
      python3 research/reference_table.py --bin $BIN --shared $S --device cuda --fixtures $FX --jobs ${JOBS:-4} \
        --extra="${REF_EXTRA:-}" --out "$OUT/ref" | tail -20
      ;;
    noise)
      # The published code's own rounding spread: H summed in reverse window order, or DRAWS=N
      # seeded shuffled orders (PERTURB=1: N perturbations of the layer-0 inputs instead).
      python3 research/published_noise.py --shared $S --published-sgpt .carry/published/sparsegpt \
        --published-gptq .carry/published/gptq --fixture $FX --jobs ${JOBS:-3} --draws ${DRAWS:-0} \
        ${NOISE_RUNS:+--runs $NOISE_RUNS} ${PERTURB:+--perturb-inputs} --out "$OUT/noise" | tail -40
      ;;
    reload)
      $BIN prune $S/fixtures/$FX c4 --sparsity 0.5 --wbits 4 --device cuda --data-dir $S/data --eval-datasets wikitext2 \
        --save /tmp/saved_$FX --json $OUT/reload_prune_$FX.json | tail -3
      $BIN eval /tmp/saved_$FX --device cuda --datasets wikitext2 --data-dir $S/data --json $OUT/reload_eval_cuda_$FX.json | tail -2
      $BIN eval /tmp/saved_$FX --device cpu --datasets wikitext2 --max-windows 1 --data-dir $S/data \
        --logits-out $OUT/reload_logits_$FX.json --json $OUT/reload_eval_cpu_$FX.json | tail -2
      python3 checks/check_transformers.py /tmp/saved_$FX $OUT/reload_logits_$FX.json | tee $OUT/reload_transformers_$FX.json
      ;;
    hinv64)
      # The f64 factorisation on the runs most sensitive to rounding, beside the f32 default.
      for r in "gptq2g128:--wbits 2 --groupsize 128" "sgpt50w4:--sparsity 0.5 --wbits 4" "gptq3:--wbits 3"; do
        $BIN prune $S/fixtures/$FX c4 ${r#*:} --hinv-precision f64 --device cuda --data-dir $S/data \
          --json $OUT/hinv64_${r%%:*}.json | tail -4
      done
      ;;
    scale)
      # Offloaded compression of random-weight checkpoints with opt-1.3b / opt-6.7b shapes
      # (scripts/make_random_opt.py): time per layer and peak GPU memory. SCALE="shape:layers ...".
      source research/peak_mem.sh
      for spec in ${SCALE:-1.3b:4 6.7b:2}; do
        shape=${spec%%:*}; layers=${spec#*:}
        t=$(date +%s); python3 scripts/make_random_opt.py $shape /tmp/rand-$shape --tokenizer-from $S/fixtures/$FX
        echo "generated in $(( $(date +%s) - t )) s"; df -h /tmp | tail -1
        peak_mem $OUT/scale_$shape.mem /usr/bin/time -v $BIN prune /tmp/rand-$shape c4 --sparsity 0.5 --wbits 4 \
          --device cuda --offload --maxlayer $layers --eval-datasets "" --data-dir $S/data \
          --json $OUT/scale_$shape.json > $OUT/scale_$shape.log 2>&1
        echo "rc $? peak GPU MiB $(cat $OUT/scale_$shape.mem)"; grep -E "Elapsed|Maximum resident" $OUT/scale_$shape.log
        python3 -c "import json; d=json.load(open('$OUT/scale_$shape.json')); print({k: (round(v, 2) if isinstance(v, float) else [round(x, 2) for x in v]) for k, v in d['times'].items()}, 'load', round(d['load_s'], 1))"
        rm -rf /tmp/rand-$shape
      done
      ;;
    exports)
      # Issue 15: this tool's packed exports (prune --save-format gptq | compressed-tensors, solved
      # on the GPU) loaded by transformers (compressed-tensors, installed from .carry/whl) and by
      # check_exports.py's GPTQ dequantizer, logits against the dense export's; and this tool's
      # eval of every export against the dense export's window NLLs (checks/check_exports_run.sh).
      # check_exports_run.sh's RUNS, FORMATS, EXTRA_FLAGS, PY_DTYPE pass through; EXPORTS_TAG names
      # the results folder (exports$EXPORTS_TAG) so that several settings can run in one call.
      CT=/tmp/ct_site
      [ -d $CT ] || python3 -m pip install -q --no-index --no-deps --target $CT .carry/whl/*.whl
      PYTHONPATH=$CT${PYTHONPATH:+:$PYTHONPATH} bash checks/check_exports_run.sh $BIN $S/fixtures/$FX $S/data \
        $OUT/exports${EXPORTS_TAG:-} cuda python3 | tail -30
      ;;
    mi25)
      # 2.5 bits cannot pay for 10 groups' scale/zero metadata on these widths: K = 4 there.
      BIN=$BIN bash research/compare_modes.sh $S/fixtures/$FX --seeds ${SEEDS:-3} --targets 2.5 --n-groups 4 \
        --device cuda --jobs ${JOBS:-4} > "$OUT/mi25_log_$FX.txt" 2>&1
      cp test_results/mi_$FX.md "$OUT/"; tar -cJf "$OUT/mi_runs_$FX.tar.xz" -C test_results/mi "$FX"
      tail -12 "$OUT/mi_$FX.md"
      ;;
    run)
      # Any command in this stage's environment (BIN, S, OUT, the CUDA library path), e.g. one
      # run under SPARSEGPT_MI_TRACE=1 with a timeout: RUN_CMD='timeout 120 $BIN prune …'.
      eval "${RUN_CMD:?set RUN_CMD}"
      ;;
    study)
      # Issue 17's study on FIXTURE (one fixture per call: three do not fit the 64 MiB that
      # travels), STUDY_ARGS added (e.g. "--seeds 6 --jobs 8"); the runs and tables come back in
      # the results archive, under study/FIXTURE/.
      BIN=$BIN DATA_DIR=$S/data FIXTURE_DIR=$S/fixtures bash research/mi_study.sh --fixtures $FX --device cuda \
        --out "$OUT/study" ${STUDY_ARGS:-} > "$OUT/study_log_$FX.txt" 2>&1
      tail -60 "$OUT/study_log_$FX.txt"
      ;;
    study2)
      # Issue 30's studies S1 and S2 (research/mi_study_2.sh) on FIXTURE, STUDY_ARGS added (e.g.
      # "--seeds 10 --budget-s 450 --resume"; on nvidia-h100-x8 "--gpus 8 --jobs 64"); runs made
      # by earlier calls, unpacked into $OUT/study2/FIXTURE/, are skipped with --resume
      # (STUDY_RUNS: a runs archive, test_results/mi_study_2/runs_FIXTURE.tar.xz's layout, unpacked
      # there first). The runs and tables come back in the results archive, under study2/.
      [ "${REPRO_FAILED:-0}" = 1 ] && { echo "study2 skipped: this build did not reproduce the study's runs"; continue; }
      if [ -n "${STUDY_RUNS:-}" ]; then mkdir -p "$OUT/study2" && tar -xJf "$STUDY_RUNS" -C "$OUT/study2"; fi
      BIN=$BIN DATA_DIR=$S/data FIXTURE_DIR=$S/fixtures bash research/mi_study_2.sh --fixtures $FX --device cuda \
        --out "$OUT/study2" ${STUDY_ARGS:-} > "$OUT/study2_log_$FX.txt" 2>&1
      tail -60 "$OUT/study2_log_$FX.txt"
      ;;
    study2repro)
      # Issue 30: does this build reproduce study 2's committed runs of FIXTURE exactly (one run per
      # cell and arm, research/mi_study_2_repro.py)? If so it may continue the study under the
      # study's label. REPRO_ARCHIVE: the runs archive (default the committed one; carry a copy
      # where test_results/ is left behind); REPRO_ARGS e.g. "--per-cell 2" for a smaller sample.
      python3 research/mi_study_2_repro.py $BIN ${REPRO_ARCHIVE:-test_results/mi_study_2/runs_$FX.tar.xz} \
        $S/fixtures $S/data $OUT/study2repro --jobs ${JOBS:-8} ${REPRO_ARGS:-} | tee $OUT/study2repro_$FX.txt | tail -5
      # A build that does not reproduce may not add runs under the study's label: study2 is skipped.
      [ "${PIPESTATUS[0]}" = 0 ] || { REPRO_FAILED=1; echo "study2repro failed: a later study2 stage is skipped"; }
      ;;
    lmeval)
      # Zero-shot tasks: lm-evaluation-harness's HF backend against this tool on the fixture,
      # f32 and f16, then items/s of both (checks/lm_eval_compare.sh; lm-eval's wheels in
      # .whl/ or .carry/lmeval_whl/).
      BIN=$BIN bash checks/lm_eval_compare.sh $S/fixtures/$FX "$OUT/lmeval" ${REPEAT:-100}
      ;;
    mi)
      BIN=$BIN bash research/compare_modes.sh $S/fixtures/$FX --seeds ${SEEDS:-3} --targets "${TARGETS:-4.0 3.0 2.5}" --n-groups ${NGROUPS:-10} \
        --device cuda --jobs ${JOBS:-4} > "$OUT/mi_log_$FX.txt" 2>&1
      cp test_results/mi_$FX.md "$OUT/"; tar -cJf "$OUT/mi_runs_$FX.tar.xz" -C test_results/mi "$FX"
      tail -30 "$OUT/mi_$FX.md"
      ;;
  esac
done
tar -cJf "$FINAL/results_$FX.tar.xz" -C /tmp/gpu_work "$FX"
ls -la "$FINAL"
