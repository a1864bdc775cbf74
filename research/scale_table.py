#!/usr/bin/env python3
"""Table of gpu/gpu_run.sh's `scale` stage: offloaded compression of random-weight OPT checkpoints with
opt-1.3b / opt-6.7b shapes (scripts/make_random_opt.py), per-layer cost and memory.
    research/scale_table.py DIR   (DIR holds scale_<shape>.json and .mem)"""
import glob, json, os, sys


def main(d):
    rows = ["# Scale: offloaded compression (`--offload`) of random OPT checkpoints", "",
            "Made by `gpu/gpu_run.sh FIXTURE scale` on the H100 (SCALE=\"1.3b:2 6.7b:1\": layers compressed; the "
            "rest are only run forward), 50% + 4-bit, 128 calibration windows of C4, no evaluation. Layers stay in host "
            "memory (f16) and visit the GPU one at a time. Peak GPU memory by nvidia-smi polling (context included). "
            "Full-model estimate = layers × compressed-layer time.", "",
            "| shape | params | layers compressed | s per compressed layer | of which solve (GPU solver, then install and level count on the host) | calibration pass | other (weight transfers, Hessian diagonals) | forward-only layer s | load s | peak GPU MiB | host RSS GiB | full-model estimate |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in sorted(glob.glob(os.path.join(d, "scale_*.json"))):
        shape = os.path.basename(p)[6:-5]
        r = json.load(open(p))
        t = r["times"]
        n = r["args"]["maxlayer"]
        per = t["per_layer_s"]
        comp = sum(per[:n]) / n
        fwd_only = sum(per[n:]) / max(1, len(per) - n)
        solve = t["solve_s"] / n
        fwd = t["calibration_forward_s"] / n
        other = comp - solve - fwd
        params = sum(l["rows"] * l["cols"] for l in r["linears"]) / n * len(per)
        mem = open(p[:-5] + ".mem").read().strip() if os.path.exists(p[:-5] + ".mem") else "?"
        rows.append(f"| opt-{shape} | {params / 1e9:.2f} B in linears | {n} of {len(per)} | {comp:.1f} | {solve:.1f} | {fwd:.2f} | {other:.1f} | "
                    f"{fwd_only:.2f} | {r['load_s']:.1f} | {mem} | {r['peak_rss_mib'] / 1024:.1f} | {len(per) * comp / 60:.1f} min |")
    print("\n".join(rows))


if __name__ == "__main__":
    main(sys.argv[1])
