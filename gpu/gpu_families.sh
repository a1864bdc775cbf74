#!/usr/bin/env bash
# On the GPU machine (device tool): the rotary families on CUDA (the fused kernels of
# docs/cuda_forward.md by default; SPARSEGPT_MI_CUDA_FUSED=0 in the environment: candle's generic
# ops, as test_results/families/gpu_h100 was made). For llama-rand-gqa and qwen2-rand: the first two
# WikiText-2 window NLLs in bf16 (the checkpoint's, --dtype auto), f16 and f32 against transformers'
# f32 reference.json; then every published llama.py run of ../shared/reference/llama-rand-gqa (CPU
# f32, 32 calibration windows, first 16 evaluation windows) with its own flags on the GPU in f32,
# bf16, bf16 with H summed (--hessian-accumulation sum) and f16: the bf16 run's gap to the reference
# beside the spread of the three reduced-precision variants, which differ only in rounding. With the
# published code carried (.carry/published/{sparsegpt,gptq}: sparsegpt.py, gptq.py, quant.py; fetched,
# never committed), the same runs by the published code itself on the GPU in bf16 (its llama.py loop,
# research/published_harness.py), with the calibration windows fed to the Hessian in order, reversed
# and shuffled: the published code's own bf16 rounding spread, which the tool's bf16 runs are read
# against (bf16_spread.md).
#
#   here:   scripts/build_cuda.sh; .carry/sparsegpt-mi-cuda.xz, .carry/data.tar.xz, .carry/reference/
#           (../shared/reference), each fixture as .carry/fx/FX/ or file by file xz-compressed as
#           .carry/fxz/FX/*.xz
#   device: OUT=$OUT bash gpu/gpu_families.sh   → $OUT/families.md and $OUT/families.tar.xz
#   env: FIXTURES (default both), VARIANTS (the tool's runs, default "f32 bf16 bf16sum f16"),
#        ORDERS (the published code's H orders, default "base rev shuf1"), PERTURB_DRAWS (N: also the
#        published code with its layer-0 inputs perturbed by one bf16 rounding, relative 2^-8, seeds
#        1..N: the spread a different bf16 forward alone gives), PERTURB_ALL_DRAWS (N: the same at
#        every layer's calibration inputs, _paN), PUBLISHED_JOBS (6), PREV_RUNS (below),
#        PUBLISHED_SCALE_DTYPE (float32: the published quantizer; bfloat16: its scales held in bf16
#        as this tool holds a bf16 checkpoint's; do not mix with PREV_RUNS made otherwise)
set -uo pipefail
cd "$(dirname "$0")/.."
FINAL=${OUT:-$PWD/gpu_out}; mkdir -p "$FINAL"
OUT=/tmp/gpu_work/families; mkdir -p "$OUT"
# PREV_RUNS: an earlier call's families.tar.xz whose published variant runs (reordered H, perturbed
# inputs; same card kind) are kept beside this call's runs instead of being made again; nothing else
# of it is kept (P itself and the tool's runs are made again).
if [ -n "${PREV_RUNS:-}" ]; then
  tar -xJf "$PREV_RUNS" -C /tmp/gpu_work --wildcards 'families/published_*_bf16_*'
fi
S=/tmp/shared; mkdir -p $S/fixtures $S/data
[ -d $S/data/c4 ] || tar -xJf .carry/data.tar.xz -C $S/data
rm -rf $S/reference; cp -r .carry/reference $S/reference
# FIXTURES: those carried (each call carries at most 64 MiB).
FIXTURES=${FIXTURES:-llama-rand-gqa qwen2-rand}
for fx in $FIXTURES; do
  rm -rf $S/fixtures/$fx; mkdir -p $S/fixtures/$fx
  for f in .carry/fx/$fx/* .carry/fxz/$fx/*; do
    [ -f "$f" ] || continue
    case $f in *.xz) xz -dc "$f" > $S/fixtures/$fx/$(basename "${f%.xz}");; *) cp "$f" $S/fixtures/$fx/;; esac
  done
done
BIN=${BIN:-/tmp/sparsegpt-mi}
source gpu/gpu_unpack.sh; gpu_unpack $BIN .carry/sparsegpt-mi-cuda.xz
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/card.txt
cat $OUT/card.txt
for fx in $FIXTURES; do
  for dt in auto f16 f32; do
    $BIN eval $S/fixtures/$fx --device cuda --dtype $dt --datasets wikitext2 --max-windows 2 \
      --data-dir $S/data --json $OUT/eval_${fx}_$dt.json > $OUT/eval_${fx}_$dt.log 2>&1 || tail -2 $OUT/eval_${fx}_$dt.log
  done
done
python3 - "$S" "$OUT" "$BIN" <<'PY'
import json, os, subprocess, sys, time
sys.path.insert(0, "research")
from reference_table import flags
s, out, bin_ = sys.argv[1:4]
ref_dir = os.path.join(s, "reference", "llama-rand-gqa")
variants = {"f32": ["--dtype", "f32", "--keep-compute-dtype"], "bf16": ["--dtype", "auto"],
            "bf16sum": ["--dtype", "auto", "--hessian-accumulation", "sum"], "f16": ["--dtype", "f16"]}
variants = {k: v for k, v in variants.items() if k in os.environ.get("VARIANTS", " ".join(variants)).split()}
for f in sorted(os.listdir(ref_dir)):
    run = f[:-5]
    a = json.load(open(os.path.join(ref_dir, f)))["args"]
    fl = flags(a)
    if fl is None:
        continue
    fl = [x for x in fl if x != "--keep-compute-dtype"]
    for v, extra in variants.items():
        cmd = [bin_, "prune", os.path.join(s, "fixtures", "llama-rand-gqa"), "c4", *fl, *extra, "--device", "cuda",
               "--max-windows", str(a["max_windows"]), "--data-dir", os.path.join(s, "data"),
               "--json", os.path.join(out, f"prune_{run}_{v}.json")]
        t = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True)
        open(os.path.join(out, f"prune_{run}_{v}.log"), "w").write(r.stdout + r.stderr)
        print(f"{run} {v}: exit {r.returncode}, {time.time() - t:.1f} s", flush=True)
PY
if [ -d .carry/published/sparsegpt ] && [ -d .carry/published/gptq ]; then
  python3 - "$S" "$OUT" <<'PY'
import concurrent.futures as cf, json, os, subprocess, sys
sys.path.insert(0, "research")
from reference_table import published_flags
s, out = sys.argv[1:3]
ref_dir = os.path.join(s, "reference", "llama-rand-gqa")
orders = {"base": ("", []), "rev": ("_rev", ["--reverse-hessian-order"]),
          "shuf1": ("_shuf1", ["--shuffle-hessian-order", "1"])}
orders = dict(v for k, v in orders.items() if k in os.environ.get("ORDERS", "base rev shuf1").split())
for k in range(1, int(os.environ.get("PERTURB_DRAWS", "0")) + 1):
    orders[f"_p{k}"] = ["--perturb-inputs", str(k), "--perturb-log2", "-8"]
for k in range(1, int(os.environ.get("PERTURB_ALL_DRAWS", "0")) + 1):
    orders[f"_pa{k}"] = ["--perturb-inputs", str(k), "--perturb-log2", "-8", "--perturb-every-layer"]
jobs = []
for f in sorted(os.listdir(ref_dir)):
    a = json.load(open(os.path.join(ref_dir, f)))["args"]
    if a["method"] == "dense":
        continue
    run = f[:-5]
    base = ["python3", "research/published_harness.py", os.path.join(s, "fixtures", "llama-rand-gqa"),
            *published_flags(a), "--data-dir", os.path.join(s, "data"), "--device", "cuda", "--dtype", "bfloat16",
            "--threads", "2"]
    # PUBLISHED_SCALE_DTYPE=bfloat16: the published code with this tool's one quantizer deviation
    # (grids' scales held in the checkpoint's dtype), the null its bf16 runs are read against.
    base += ["--scale-dtype", os.environ.get("PUBLISHED_SCALE_DTYPE", "float32")]
    for tag, extra in orders.items():
        jobs.append((f"published_{run}_bf16{tag}", base + extra))
def one(job):
    name, cmd = job
    r = subprocess.run(cmd + ["--json", os.path.join(out, name + ".json")], capture_output=True, text=True)
    open(os.path.join(out, name + ".log"), "w").write(r.stdout[-4000:] + r.stderr[-4000:])
    return f"{name}: exit {r.returncode}"
with cf.ThreadPoolExecutor(int(os.environ.get("PUBLISHED_JOBS", "6"))) as ex:
    for line in ex.map(one, jobs):
        print(line, flush=True)
PY
  python3 - "$OUT" "$S" <<'PY' | tee "$OUT/bf16_spread.md"
import glob, json, os, re, sys
out, s = sys.argv[1], sys.argv[2]
card = open(os.path.join(out, "card.txt")).read().strip()
load = lambda n: json.load(open(os.path.join(out, n + ".json"))) if os.path.exists(os.path.join(out, n + ".json")) else None
ref_dir = os.path.join(s, "reference", "llama-rand-gqa")
runs = [f[:-5] for f in sorted(os.listdir(ref_dir)) if load(f"published_{f[:-5]}_bf16")]
# The published code's variants present for every run: H order reversed / shuffled, inputs perturbed.
tags = sorted({m.group(1) for f in glob.glob(os.path.join(out, "published_*_bf16_*.json"))
               if (m := re.search(r"_bf16_(rev|shuf\d+|pa?\d+)\.json$", f))},
              key=lambda t: (t[0] == "p", t))
names = {"rev": "P_rev", **{t: f"P_{t}" for t in tags if t != "rev"}}
print(f"# bf16 on CUDA: the tool against the published code's own rounding spread, {card}\n")
print("The published llama.py runs of ../shared/reference/llama-rand-gqa, made again on the GPU in bf16 by the "
      "published code (P: windows fed to the Hessian in order; P_rev reversed; P_shufN shuffled with seed N: the "
      "same H up to summation order; P_pN: the layer-0 inputs perturbed by one bf16 rounding, relative 2^-8 "
      "Gaussian noise with seed N, the size of the difference between two bf16 forward implementations; P_paN: the same at every layer's "
      "calibration inputs) and by "
      "this tool (`--dtype auto`, the checkpoint's bf16; with H summed). Δ% from P. 'H-order spread' = (max − min) "
      "/ P over P and its reordered runs; 'rounding spread' = the same over P and every variant. 'inside' when the "
      "tool's bf16 run lies within the rounding range, else its distance outside it.\n")
head = ["run", "corpus", "P"] + [f"{names[t]} Δ%" for t in tags] + ["H-order spread %", "rounding spread %",
        "ours bf16 Δ%", "ours bf16 sum Δ%", "inside", "zeros ours / P"]
print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
worst, worst_out, inside_n, rows = 0.0, 0.0, 0, 0
for run in runs:
    P = load(f"published_{run}_bf16")
    var = {t: load(f"published_{run}_bf16_{t}") for t in tags}
    ob, os_ = load(f"prune_{run}_bf16"), load(f"prune_{run}_bf16sum")
    for d in ["wikitext2", "ptb", "c4"]:
        p = P["ppl"][d]
        order = [p] + [j["ppl"][d] for t, j in var.items() if j and not t.startswith("p")]
        allp = [p] + [j["ppl"][d] for j in var.values() if j]
        dl = lambda j: None if j is None else 100 * (j["ppl"][d] - p) / p
        c = lambda x: "-" if x is None else f"{x:+.3f}"
        inside = "-"
        if ob is not None:
            rows += 1
            worst = max(worst, abs(dl(ob)))
            o = ob["ppl"][d]
            if min(allp) <= o <= max(allp):
                inside, inside_n = "yes", inside_n + 1
            else:
                gap = 100 * min(abs(o - x) for x in allp) / p
                worst_out = max(worst_out, gap)
                inside = f"no ({gap:.3f} outside)"
        z = "-" if ob is None else f"{ob['zero_fraction']:.4f} / {P['zero_fraction']:.4f}"
        cells = [run, d, f"{p:.1f}"] + [c(dl(var[t])) for t in tags] + [
            f"{100 * (max(order) - min(order)) / p:.3f}", f"{100 * (max(allp) - min(allp)) / p:.3f}",
            c(dl(ob)), c(dl(os_)), inside, z]
        print("| " + " | ".join(cells) + " |")
print(f"\nLargest |ours bf16 − P|: {worst:.3f}%. Inside the published code's rounding range: {inside_n} of {rows} "
      f"rows; largest distance outside it: {worst_out:.3f}% of P.")
PY
fi
python3 - "$OUT" "$S" <<'PY' | tee "$OUT/families.md"
import json, os, sys
out, s = sys.argv[1], sys.argv[2]
card = open(os.path.join(out, "card.txt")).read().strip()
path = "generic candle path" if os.environ.get("SPARSEGPT_MI_CUDA_FUSED", "1").lower() in ("0", "off", "false", "no") else "fused kernels"
print(f"# Rotary families on CUDA ({path}), {card}\n")
print("Forward: the first two WikiText-2 windows' mean NLL against transformers 5.17 in f32 (CPU).\n")
print("| fixture | dtype | window | ours | transformers f32 | relative |\n|---|---|---|---|---|---|")
for fx in ["llama-rand-gqa", "qwen2-rand"]:
    if not os.path.exists(os.path.join(s, "fixtures", fx, "reference.json")):
        continue
    ref = json.load(open(os.path.join(s, "fixtures", fx, "reference.json")))["wikitext2_window_mean_nll"]
    for dt in ["auto", "f16", "f32"]:
        p = os.path.join(out, f"eval_{fx}_{dt}.json")
        if not os.path.exists(p):
            print(f"| {fx} | {dt} | failed: see eval_{fx}_{dt}.log | | | |"); continue
        j = json.load(open(p))
        for w, (g, r) in enumerate(zip(j["results"][0]["window_mean_nll"], ref)):
            print(f"| {fx} | {j['dtype']} | {w} | {g:.6f} | {r:.6f} | {(g - r) / r:+.2e} |")
print("\nCompression: the published llama.py runs (CPU f32) with their own flags on the GPU. Δ% of PPL from the "
      "reference per corpus; 'spread' = max − min over the three reduced-precision variants (bf16, bf16 with H "
      "summed, f16), which differ only in rounding.\n")
print("| run | corpus | reference | f32 Δ% | bf16 Δ% | bf16 sum Δ% | f16 Δ% | spread (pts) | zeros f32 / bf16 / ref |")
print("|---|---|---|---|---|---|---|---|---|")
ref_dir = os.path.join(s, "reference", "llama-rand-gqa")
for f in sorted(os.listdir(ref_dir)):
    run = f[:-5]
    ref = json.load(open(os.path.join(ref_dir, f)))
    if ref["args"]["method"] == "dense":
        continue
    res = {}
    for v in ["f32", "bf16", "bf16sum", "f16"]:
        p = os.path.join(out, f"prune_{run}_{v}.json")
        res[v] = json.load(open(p)) if os.path.exists(p) else None
    for d in ["wikitext2", "ptb", "c4"]:
        r = ref["ppl"][d]
        delta = {v: (100 * (j["ppl"][d] - r) / r if j else None) for v, j in res.items()}
        low = [x for k, x in delta.items() if k != "f32" and x is not None]
        asked = {v: os.path.exists(os.path.join(out, f"prune_{run}_{v}.log")) for v in res}
        cell = lambda v: ("failed" if asked[v] else "–") if delta[v] is None else f"{delta[v]:+.3f}"
        z = lambda v: "-" if res[v] is None else f"{res[v]['zero_fraction']:.4f}"
        print(f"| {run} | {d} | {r:.1f} | {cell('f32')} | {cell('bf16')} | {cell('bf16sum')} | "
              f"{cell('f16')} | {(max(low) - min(low)) if len(low) > 1 else float('nan'):.3f} | "
              f"{z('f32')} / {z('bf16')} / {ref['zero_fraction']:.4f} |")
PY
tar -cJf "$FINAL/families.tar.xz" -C /tmp/gpu_work families
cp "$OUT/families.md" "$FINAL/"
[ -f "$OUT/bf16_spread.md" ] && cp "$OUT/bf16_spread.md" "$FINAL/"
