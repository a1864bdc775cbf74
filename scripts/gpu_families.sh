#!/usr/bin/env bash
# On the GPU machine (device tool): the rotary families on CUDA, which run on candle's generic
# ops for now (RoPE, grouped-query attention and RMSNorm as candle ops, scores in f32; the fused
# CUDA kernels are OPT's). For llama-rand-gqa and qwen2-rand: the first two WikiText-2 window
# NLLs with --dtype auto (the checkpoint's bf16), f16 and f32 on the GPU against transformers'
# f32 reference.json (the bf16 gap is rounding: state it), then two compression runs of
# llama-rand-gqa with the published llama.py flags (sgpt50, gptq4; 32 windows, first 16
# evaluation windows) in bf16 and f32, against ../shared/reference/llama-rand-gqa (CPU f32).
#
#   scripts/build_cuda.sh   # here: .carry/sparsegpt-mi-cuda.xz from target/sparsegpt-mi-cuda.xz
#   carry: .carry/sparsegpt-mi-cuda.xz, .carry/data.tar.xz, .carry/reference/,
#          .carry/fx/{llama-rand-gqa,qwen2-rand}/ (each fixture folder as it is in ../shared)
#   device: OUT=$OUT bash scripts/gpu_families.sh      → $OUT/families.md and the JSONs
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}; mkdir -p "$OUT"
S=/tmp/shared; mkdir -p $S/fixtures $S/data
[ -d $S/data/c4 ] || tar -xJf .carry/data.tar.xz -C $S/data
rm -rf $S/reference; cp -r .carry/reference $S/reference
for fx in llama-rand-gqa qwen2-rand; do rm -rf $S/fixtures/$fx; cp -r .carry/fx/$fx $S/fixtures/$fx; done
BIN=${BIN:-/tmp/sparsegpt-mi}
source scripts/gpu_unpack.sh; gpu_unpack $BIN .carry/sparsegpt-mi-cuda.xz
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/card.txt
for fx in llama-rand-gqa qwen2-rand; do
  for dt in auto f16 f32; do
    $BIN eval $S/fixtures/$fx --device cuda --dtype $dt --datasets wikitext2 --max-windows 2 \
      --data-dir $S/data --json $OUT/eval_${fx}_$dt.json > $OUT/eval_${fx}_$dt.log 2>&1
  done
done
for run in sgpt50 gptq4; do
  flags=$(python3 - $S/reference/llama-rand-gqa/$run.json <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))["args"]
f = ["--nsamples", a["nsamples"], "--seed", a["seed"], "--wbits", a["wbits"], "--groupsize", a["groupsize"], "--max-windows", a["max_windows"]]
if a["method"] == "sparsegpt":
    f += ["--sparsity", a["sparsity"], "--prunen", a["prunen"], "--prunem", a["prunem"]]
print(" ".join(map(str, f)))
PY
)
  for dt in auto f32; do
    keep=""; [ $dt = f32 ] && keep=--keep-compute-dtype  # the reference kept f32 weights
    $BIN prune $S/fixtures/llama-rand-gqa c4 $flags $keep --device cuda --dtype $dt --data-dir $S/data \
      --json $OUT/prune_${run}_$dt.json > $OUT/prune_${run}_$dt.log 2>&1
  done
done
python3 - "$OUT" "$S" <<'PY' | tee "$OUT/families.md"
import json, os, sys
out, s = sys.argv[1], sys.argv[2]
card = open(os.path.join(out, "card.txt")).read().strip()
print(f"# Rotary families on CUDA (generic candle path), {card}\n")
print("| fixture | dtype | window | ours | transformers f32 | relative |\n|---|---|---|---|---|---|")
for fx in ["llama-rand-gqa", "qwen2-rand"]:
    ref = json.load(open(os.path.join(s, "fixtures", fx, "reference.json")))["wikitext2_window_mean_nll"]
    for dt in ["auto", "f16", "f32"]:
        p = os.path.join(out, f"eval_{fx}_{dt}.json")
        if not os.path.exists(p):
            print(f"| {fx} | {dt} | failed: see eval_{fx}_{dt}.log | | | |"); continue
        j = json.load(open(p))
        for w, (g, r) in enumerate(zip(j["results"][0]["window_mean_nll"], ref)):
            print(f"| {fx} | {j['dtype']} | {w} | {g:.6f} | {r:.6f} | {(g - r) / r:+.2e} |")
print("\n| run | dtype | WikiText-2 / ref (Δ%) | PTB / ref (Δ%) | C4 / ref (Δ%) | zeros / ref |\n|---|---|---|---|---|---|")
for run in ["sgpt50", "gptq4"]:
    ref = json.load(open(os.path.join(s, "reference", "llama-rand-gqa", run + ".json")))
    for dt in ["auto", "f32"]:
        p = os.path.join(out, f"prune_{run}_{dt}.json")
        if not os.path.exists(p):
            print(f"| {run} | {dt} | failed: see prune_{run}_{dt}.log | | | |"); continue
        j = json.load(open(p))
        cells = [f"{j['ppl'][d]:.1f} / {ref['ppl'][d]:.1f} ({100 * (j['ppl'][d] - ref['ppl'][d]) / ref['ppl'][d]:+.3f})" for d in ["wikitext2", "ptb", "c4"]]
        print(f"| {run} | {j['dtype']} | {' | '.join(cells)} | {j['zero_fraction']:.4f} / {ref['zero_fraction']:.4f} |")
PY
