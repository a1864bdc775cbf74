#!/usr/bin/env python3
"""The published code on llama-rand-gqa (CPU f32) with H's windows in order (the shared reference),
reversed and shuffled (test_results/noise/noise_llama-rand-gqa_<run>[_s1].json, made by
published_harness.py as research/published_noise.py builds it) beside sparsegpt-mi's committed
results (test_results/reference/llama-rand-gqa/): is each of the tool's gaps to the reference one of
the published code's own rounding outcomes (within 1e-6 of one of its orderings), inside their range,
or outside it?

  research/noise_orders_table.py [SHARED]   (default ../shared)
"""
import json, os, sys

shared = sys.argv[1] if len(sys.argv) > 1 else "../shared"
here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test_results")
load = lambda p: json.load(open(p))["ppl"] if os.path.exists(p) else None
print("| run | corpus | reference (in order) | H reversed Δ% | H shuffled (seed 1) Δ% | sparsegpt-mi Δ% | sparsegpt-mi vs the published orderings |")
print("|---|---|---|---|---|---|---|")
worst = 0.0
for run in ["gptq3g128", "gptq4", "gptq4act", "sgpt24"]:
    ref = load(os.path.join(shared, "reference", "llama-rand-gqa", f"{run}.json"))
    rev = load(os.path.join(here, "noise", f"noise_llama-rand-gqa_{run}.json"))
    shuf = load(os.path.join(here, "noise", f"noise_llama-rand-gqa_{run}_s1.json"))
    ours = load(os.path.join(here, "reference", "llama-rand-gqa", f"{run}.json"))
    for d in ["wikitext2", "ptb", "c4"]:
        p = ref[d]
        vals = [p, rev[d]] + ([shuf[d]] if shuf else [])
        dl = lambda v: 100 * (v - p) / p
        o = ours[d]
        near = min(abs(o - v) for v in vals) / p
        if near <= 1e-6:
            verdict = "equal to one of them (1e-6)"
        elif min(vals) <= o <= max(vals):
            verdict = "inside their range"
        else:
            gap = 100 * min(abs(o - min(vals)), abs(o - max(vals))) / p
            worst = max(worst, gap)
            verdict = f"outside their range by {gap:.3f}% (their spread {100 * (max(vals) - min(vals)) / p:.3f}%)"
        print(f"| {run} | {d} | {p:.2f} | {dl(rev[d]):+.3f} | {'-' if not shuf else f'{dl(shuf[d]):+.3f}'} | {dl(o):+.3f} | {verdict} |")
print(f"\nLargest distance of sparsegpt-mi outside the published orderings' range: {worst:.3f}%.")
