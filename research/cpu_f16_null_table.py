#!/usr/bin/env python3
"""The table of research/cpu_f16_null.sh's runs: per run and corpus, Δ% of PPL from the published
CPU f32 reference for the published code in f16 (P: f32 scales; P_s: this tool's f16 scales; P_s's
every-layer perturbed draws) and for this tool in f16; the tool's rank among P_s and its draws
(1 = lowest) and its distance from their mean in their standard deviations.

  research/cpu_f16_null_table.py OUT [REFERENCE_DIR]
"""
import glob, json, os, re, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from draw_rank import extreme_tail, rank_and_z

out = sys.argv[1]
ref_dir = sys.argv[2] if len(sys.argv) > 2 else "../shared/reference/llama-rand-gqa"
load = lambda n: json.load(open(os.path.join(out, n + ".json")))["ppl"] if os.path.exists(os.path.join(out, n + ".json")) else None
runs = sorted({m.group(1) for f in glob.glob(os.path.join(out, "ours_*.json"))
               if (m := re.match(r"ours_(.+)\.json$", os.path.basename(f)))})
print("| run | corpus | reference | P (f32 scales) Δ% | P_s (f16 scales) Δ% | P_s draws Δ% | ours Δ% | rank of ours | z vs P_s and draws |")
print("|---|---|---|---|---|---|---|---|---|")
extreme = rows = 0
sizes = set()  # values per row (P_s and its draws): the tail below uses the smallest
for run in runs:
    ref = json.load(open(os.path.join(ref_dir, run + ".json")))["ppl"]
    # A run without quantization has no scales: its null is P and P's draws.
    s = "Ps" if load(f"Ps_{run}") is not None else "P"
    p, ps, ours = load(f"P_{run}"), load(f"{s}_{run}"), load(f"ours_{run}")
    draws = [d for k in range(1, 100) if (d := load(f"{s}_{run}_pa{k}")) is not None]
    if ps is None or ours is None:
        continue
    for c in ["wikitext2", "ptb", "c4"]:
        d = lambda x: f"{100 * (x[c] / ref[c] - 1):+.3f}"
        null = [ps[c]] + [x[c] for x in draws]
        rank, z = rank_and_z(ours[c], null)
        extreme += rank in (1, len(null) + 1)
        sizes.add(len(null))
        rows += 1
        print(f"| {run} | {c} | {ref[c]:.1f} | {d(p) if p else '–'} | {d(ps)} | {', '.join(d(x) for x in draws)} | {d(ours)} "
              f"| {rank} of {len(null) + 1} | {z:+.2f} |")
if rows:
    n = min(sizes) + 1
    q, tail = extreme_tail(extreme, rows, n - 1)
    print(f"\nExtreme ranks (lowest or highest of {n}): {extreme} of {rows}; {rows * q:.1f} expected if the tool is one "
          f"more draw (p = {q:.2f} each); P(at least {extreme}) = {tail:.3f}.")
