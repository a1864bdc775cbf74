#!/usr/bin/env python3
"""Table for stage `rounding` of gpu/gpu_run.sh: each run's PPL on the first 32 windows of each
corpus under four variants that differ only in rounding (CPU f32; GPU f16, the default; GPU f32;
GPU f16 with H summed instead of averaged), and the spread between them.

  research/rounding_table.py GPU_BENCH_DIR CPU_DIR ROUNDING_DIR"""
import json, math, os, sys


def ppl(path, dataset, n):
    e = {x["dataset"]: x for x in json.load(open(path))["eval"]}[dataset]
    w = e["window_mean_nll"][:n]
    return math.exp(sum(w) / len(w))


def main(bench, cpu, rounding):
    rows = ["# How far rounding alone moves a run", "",
            "Each run under four variants of the same protocol that differ only in floating-point rounding: the CPU "
            "path in f32 (`gpu_vs_cpu/cpu_*.json`), the GPU path in f16 as the default (`gpu/bench_ours_*.json`), the "
            "GPU path in f32 (`--dtype f32`) and in f16 with H summed once instead of averaged "
            "(`--hessian-accumulation sum`) (`rounding/gpu_*.json`, stage `rounding` of `gpu/gpu_run.sh`, NVIDIA "
            "H100 80GB HBM3). PPL over the first 32 windows of each corpus; Δ = variant / CPU f32 − 1; spread = "
            "largest / smallest of the four − 1. Made by `research/rounding_table.py test_results/gpu "
            "test_results/gpu_vs_cpu test_results/gpu_vs_cpu/rounding`.", "",
            "| fixture | run | corpus | CPU f32 | GPU f16 (Δ) | GPU f32 (Δ) | GPU f16, H summed (Δ) | spread |",
            "|---|---|---|---|---|---|---|---|"]
    spreads = {}
    for fx in ["opt-mini-a", "opt-mini-b"]:
        for run in ["sgpt50w4", "mi4"]:
            c = os.path.join(cpu, f"cpu_{fx}_{run}.json")
            variants = [os.path.join(bench, f"bench_ours_{fx}_{run}.json"),
                        os.path.join(rounding, f"gpu_f32_{fx}_{run}.json"),
                        os.path.join(rounding, f"gpu_sum_{fx}_{run}.json")]
            if not all(os.path.exists(p) for p in [c] + variants):
                continue
            for ds in ["wikitext2", "ptb", "c4"]:
                base = ppl(c, ds, 32)
                vals = [ppl(p, ds, 32) for p in variants]
                spread = max([base] + vals) / min([base] + vals) - 1
                spreads.setdefault(run, []).append(spread)
                cells = " | ".join(f"{v:.2f} ({100 * (v / base - 1):+.2f}%)" for v in vals)
                rows.append(f"| {fx} | {run} | {ds} | {base:.2f} | {cells} | {100 * spread:.2f}% |")
    rows.append("")
    for run, s in spreads.items():
        rows.append(f"- {run}: spread up to {100 * max(s):.2f}% (median {100 * sorted(s)[len(s) // 2]:.2f}%).")
    print("\n".join(rows))


if __name__ == "__main__":
    main(*sys.argv[1:])
