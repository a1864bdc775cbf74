#!/usr/bin/env python3
"""Table for research/cpu_vs_gpu.sh: PPL of the CPU path and of the GPU path on the same first
windows of each corpus (the GPU run's per-window NLLs, cut to the CPU run's window count)."""
import glob, json, math, os, sys


def main(gpu_dir, cpu_dir):
    card_path = os.path.join(gpu_dir, "card.txt")
    card = open(card_path).read().split(",")[0].strip() if os.path.exists(card_path) else "GPU"
    rows = ["# CPU path vs GPU path, same runs", "",
            "CPU runs: f32, `--device cpu`, by `research/cpu_vs_gpu.sh` on the 2-core development machine or by "
            "`gpu/gpu_run.sh FIXTURE cpu` on the GPU machine's host CPU (the JSON's `command` says which binary "
            f"ran). GPU runs: `research/bench_gpu.sh` on the {card} (f16). Both with 128 calibration windows. PPL over the "
            "first N windows of each corpus (N as the CPU run evaluated); Δ = GPU/CPU − 1. Bar: |Δ| ≤ 0.5%. The GPU solves "
            "on the device in the reference's block order (cuSOLVER factor, sweep kernel, one GEMM per block), the CPU "
            "in the eager order (same arithmetic, other rounding). MI runs group channels with the same code on both "
            "(similarity, Chebyshev-filtered eigensolver, k-means), from f16 activations' statistics on the GPU and "
            "f32 ones on the CPU.", "",
            "| fixture | run | corpus | windows | CPU PPL | GPU PPL | Δ | zeros CPU / GPU |", "|---|---|---|---|---|---|---|---|"]
    worst = 0.0
    for cp in sorted(glob.glob(os.path.join(cpu_dir, "cpu_*.json"))):
        key = os.path.basename(cp)[4:-5]
        gp = os.path.join(gpu_dir, f"bench_ours_{key}.json")
        if not os.path.exists(gp):
            continue
        fx, run = key.rsplit("_", 1)
        c, g = json.load(open(cp)), json.load(open(gp))
        geval = {e["dataset"]: e for e in g["eval"]}
        for e in c["eval"]:
            n = e["windows"]
            gn = geval[e["dataset"]]["window_mean_nll"][:n]
            cppl = math.exp(sum(e["window_mean_nll"]) / n)
            gppl = math.exp(sum(gn) / len(gn))
            d = gppl / cppl - 1
            worst = max(worst, abs(d))
            rows.append(f"| {fx} | {run} | {e['dataset']} | {n} | {cppl:.3f} | {gppl:.3f} | {100 * d:+.2f}% | "
                        f"{c['zero_fraction']:.4f} / {g['zero_fraction']:.4f} |")
    rows += ["", f"Largest |Δ|: {100 * worst:.2f}%."]
    print("\n".join(rows))


if __name__ == "__main__":
    main(*sys.argv[1:])
