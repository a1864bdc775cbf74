#!/usr/bin/env python3
"""Is the tool's bf16 run one more draw of the published code's own bf16 rounding noise?

Reads a gpu_families.sh results archive (runs.tar.xz: published_<run>_bf16[_pN].json, the
published code with its layer-0 inputs perturbed by one bf16 rounding, and prune_<run>_bf16.json,
this tool). Per run and corpus, the rank of the tool's PPL among the published draws {P, P_p1..}:
if the tool's rounding differs from the published code's like one perturbation from another, its
rank is uniform, and it is the lowest or highest of n + 1 values with probability 2 / (n + 1).
Prints the per-row ranks, the count of extreme ranks against that expectation (binomial tail),
and the tool's distance from the draws' mean in units of their standard deviation.

  research/bf16_rank.py RUNS_TAR_XZ [--variant bf16|bf16sum] [--draws p|pa]
"""
import argparse, os, re, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from draw_rank import archive_runs, extreme_tail, rank_and_z

ap = argparse.ArgumentParser()
ap.add_argument("archive")
ap.add_argument("--variant", default="bf16")
ap.add_argument("--draws", default="p", choices=["p", "pa"],
                help="p: layer-0 inputs perturbed (_pN); pa: every layer's calibration inputs (_paN)")
a = ap.parse_args()
runs = archive_runs(a.archive)
draws_of = {}
for name in runs:
    mo = re.fullmatch(r"published_(.+?)_bf16(?:_" + a.draws + r"(\d+))?", name)
    if mo:
        draws_of.setdefault(mo.group(1), []).append(name)
print(f"| run | corpus | published draws | ours ({a.variant}) | rank of ours (1..n+1) | z vs draws |")
print("|---|---|---|---|---|---|")
extreme, rows, n_draws = 0, 0, set()
for run in sorted(draws_of):
    ours = runs.get(f"prune_{run}_{a.variant}")
    if ours is None:
        continue
    for corpus in ["wikitext2", "ptb", "c4"]:
        pub = sorted(runs[n]["ppl"][corpus] for n in draws_of[run])
        o = ours["ppl"][corpus]
        rank, z = rank_and_z(o, pub)
        n = len(pub)
        n_draws.add(n)
        rows += 1
        extreme += rank in (1, n + 1)
        print(f"| {run} | {corpus} | {n} | {o:.1f} | {rank} | {z:+.2f} |")
(n,) = n_draws if len(n_draws) == 1 else (min(n_draws),)
p, tail = extreme_tail(extreme, rows, n)
print(f"\nExtreme ranks (lowest or highest of {n + 1}): {extreme} of {rows}; expected {p * rows:.1f} "
      f"if the tool is one more draw (p = {p:.2f} each); P(at least {extreme}) = {tail:.3f}.")
