#!/usr/bin/env bash
# Bytes on disk of `prune --save DIR --save-format dense|gptq|compressed-tensors` (issue 15), read
# from the result JSON's `saved.sizes` (file sizes of the saved directory, split by kind), for
#   * fixture opt-mini-a (hidden 256, ffn 1024, 8 layers), and
#   * a random-weight checkpoint with opt-1.3b's widths (hidden 2048, ffn 8192, vocab 50272) made by
#     scripts/make_random_opt.py with LAYERS13 decoder layers (default 2: the host solver takes about
#     55 s per layer and run on 2 cores, so all 24 are not run on the CPU); the 24-layer column is
#     computed from it (see the table's notes).
# Runs: gptq4, gptq4 g128, gptq3 g128, 50% + 4-bit (sgpt50w4), each saved as gptq and as
# compressed-tensors, and the dense export (same size for every run). 2 calibration windows, no
# evaluation: sizes do not depend on either.
#   research/export_sizes.sh [BIN] [PYTHON]   → test_results/export/sizes.md, test_results/export/sizes/*.json
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/debug/sparsegpt-mi}
PY=${2:-.pyenv/bin/python}
LAYERS13=${LAYERS13:-2}
OUT=test_results/export/sizes
DATA=../shared/data
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PY" scripts/make_random_opt.py 1.3b "$WORK/opt-1.3b-shapes" --layers "$LAYERS13" --tokenizer-from ../shared/fixtures/opt-mini-a
declare -A FLAGS=(
  [gptq4]="--wbits 4"
  [gptq4g128]="--wbits 4 --groupsize 128"
  [gptq3g128]="--wbits 3 --groupsize 128"
  [sgpt50w4]="--sparsity 0.5 --wbits 4"
)
for model in ../shared/fixtures/opt-mini-a "$WORK/opt-1.3b-shapes"; do
  name=$(basename "$model")
  for spec in gptq4:dense gptq4:gptq gptq4:compressed-tensors gptq4g128:gptq gptq4g128:compressed-tensors \
              gptq3g128:gptq gptq3g128:compressed-tensors sgpt50w4:gptq sgpt50w4:compressed-tensors; do
    run=${spec%%:*} fmt=${spec#*:}
    t=$(date +%s)
    "$BIN" prune "$model" c4 ${FLAGS[$run]} --nsamples 2 --eval-datasets '' --data-dir "$DATA" \
      --save "$WORK/saved" --save-format "$fmt" --json "$OUT/${name}_${run}_$fmt.json" > "$WORK/log" 2>&1 \
      || { cat "$WORK/log"; exit 1; }
    echo "$name $run $fmt: $(( $(date +%s) - t )) s"
    rm -rf "$WORK/saved"
  done
done
"$PY" - "$OUT" "$LAYERS13" <<'EOF' > test_results/export/sizes.md
import json, os, sys
out, layers13 = sys.argv[1], int(sys.argv[2])
MiB = 1024 * 1024
runs = [("dense", "gptq4", "dense"), ("gptq4", "gptq4", "gptq"), ("gptq4", "gptq4", "compressed-tensors"),
        ("gptq4 g128", "gptq4g128", "gptq"), ("gptq4 g128", "gptq4g128", "compressed-tensors"),
        ("gptq3 g128", "gptq3g128", "gptq"), ("gptq3 g128", "gptq3g128", "compressed-tensors"),
        ("50% + 4-bit", "sgpt50w4", "gptq"), ("50% + 4-bit", "sgpt50w4", "compressed-tensors")]
print("# Bytes on disk per save format (issue 15)\n")
print("Made by `research/export_sizes.sh` (CPU, 2 calibration windows, no evaluation; sizes do not depend on "
      "either): `prune MODEL c4 FLAGS --save DIR --save-format F`, sizes from the result JSON's `saved.sizes`, "
      "which are the saved directory's file sizes (checked against the files in tests/export.rs). "
      "MiB = 2^20 bytes. *linears* = packed codes + scales/zeros/g_idx + dense linear weights of the decoder "
      "linears; *bits/w* = those bytes · 8 per decoder linear weight, as stored. Sparsity is not stored: neither "
      "format has a packed sparse representation, so the 50% zeros of a 50% + 4-bit model take a 4-bit code like "
      "any other weight (its size equals gptq4's).\n")
def row(r):
    s = r["saved"]["sizes"]
    lin = s["quantized_weight_bytes"] + s["quantization_metadata_bytes"] + s["dense_linear_bytes"]
    return s, lin
for model, title in (("opt-mini-a", "Fixture opt-mini-a (19.7M parameters, 8 layers; the embeddings are 68% of its parameters)"),
                     ("opt-1.3b-shapes", f"Random weights, opt-1.3b widths, {layers13} of 24 decoder layers")):
    print(f"## {title}\n")
    extra = model == "opt-1.3b-shapes"
    head = "| run | format | total MiB | linears MiB | codes MiB | scales/zeros/g_idx MiB | embeddings MiB | bits/w |"
    if extra:
        head += " 24 layers, total MiB (computed) |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for label, run, fmt in runs:
        p = os.path.join(out, f"{model}_{run}_{fmt}.json")
        s, lin = row(json.load(open(p)))
        line = (f"| {label} | {fmt} | {s['total_bytes'] / MiB:.2f} | {lin / MiB:.2f} | {s['quantized_weight_bytes'] / MiB:.2f} | "
                f"{s['quantization_metadata_bytes'] / MiB:.3f} | {s['embedding_bytes'] / MiB:.2f} | {s['linear_bits_per_weight']:.3f} |")
        if extra:
            # Per decoder layer: its linears (all kinds) and its biases and layer norms (the other
            # tensors less the final layer norm, 2 · 2048 f16 values); the header grows with the
            # tensor count (scaled per layer, an over-estimate by the few non-layer entries).
            per_layer = (lin + s["other_tensor_bytes"] - 2 * 2048 * 2 + s["safetensors_header_bytes"]) / layers13
            total24 = s["total_bytes"] + (24 - layers13) * per_layer
            line += f" {total24 / MiB:.1f} |"
        print(line)
    print()
print(f"The 24-layer column is computed, not measured: the measured {layers13}-layer size plus "
      f"{24 - layers13} more layers of the same tensors (every layer's tensors have the same shapes, so their bytes "
      "are exact; the safetensors header is scaled per layer, within a few KiB). bits/w is per layer and so the "
      "same for 24 layers. For scale: facebook/opt-1.3b's own float16 checkpoint is about 2.5 GiB.")
EOF
cat test_results/export/sizes.md
