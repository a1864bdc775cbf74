#!/usr/bin/env python3
"""The published code with scales held in bf16 / f16 (research/published_scale_dtype.sh, CPU f32)
beside the published code and this tool in bf16 on the GPU (a gpu_families.sh runs archive), each
as Δ% of PPL from the published CPU f32 reference.

  research/scale_dtype_table.py SCALE_DIR RUNS_TAR_XZ [REFERENCE_DIR]
"""
import json, os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from draw_rank import archive_runs

scale_dir, archive = sys.argv[1:3]
ref_dir = sys.argv[3] if len(sys.argv) > 3 else "../shared/reference/llama-rand-gqa"
runs = archive_runs(archive)


def ppl(path):
    return json.load(open(path))["ppl"] if os.path.exists(path) else None


print("| run | corpus | reference (published, CPU f32) | published f32, scales bf16 Δ% | published f32, scales f16 Δ% "
      "| published bf16 (GPU) Δ% | ours bf16 (GPU) Δ% |")
print("|---|---|---|---|---|---|---|")
for f in sorted(os.listdir(scale_dir)):
    if not (f.startswith("P_") and f.endswith("_f32_scale_bfloat16.json")):
        continue
    run = f[2:-len("_f32_scale_bfloat16.json")]
    ref = json.load(open(os.path.join(ref_dir, run + ".json")))["ppl"]
    cols = [ppl(os.path.join(scale_dir, f)), ppl(os.path.join(scale_dir, f"P_{run}_f32_scale_float16.json")),
            (runs.get(f"published_{run}_bf16") or {}).get("ppl"), (runs.get(f"prune_{run}_bf16") or {}).get("ppl")]
    for c in ["wikitext2", "ptb", "c4"]:
        cells = ["–" if p is None else f"{100 * (p[c] / ref[c] - 1):+.3f}" for p in cols]
        print(f"| {run} | {c} | {ref[c]:.1f} | " + " | ".join(cells) + " |")
