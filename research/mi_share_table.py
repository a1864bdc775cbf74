#!/usr/bin/env python3
"""Table for `gpu/gpu_run.sh FIXTURE mishare`: the MI planning share of compress time over
repeated GPU runs (plan_s = the time solving waited for plans), and where planning's own time
goes (per-input plan times, median over layers), from the runs' JSON files in one folder."""
import glob, json, os, statistics, sys


def main(folder):
    runs = sorted(glob.glob(os.path.join(folder, "run*.json")), key=lambda p: int(os.path.basename(p)[3:-5]))
    rows = ["| run | compress s | plan waited s | MI share | planning threads s (share) |", "|---|---|---|---|---|"]
    shares = []
    for p in runs:
        t = json.load(open(p))["times"]
        compress = t["total_s"] - t["catch_inputs_s"]  # as research/bench_table.py
        share = t["plan_s"] / compress
        shares.append(share)
        rows.append(f"| {os.path.basename(p)[:-5]} | {compress:.3f} | {t['plan_s']:.3f} | {100 * share:.1f}% | "
                    f"{t['plan_thread_s']:.3f} ({100 * t['plan_thread_s'] / compress:.1f}%) |")
    out = [f"# MI planning share over {len(runs)} GPU runs", "",
           "Each run: `sparsegpt-mi prune FIXTURE c4 --sparsity 0.5 --wbits 4 --target-avg-bits 4.0 "
           "--use-mi-grouping 1 --n-groups 10 --eval-datasets '' --device cuda`, one after another in one call. "
           "compress = calibration passes + solving after the layer-0 inputs are caught, as in `gpu/bench_gpu.md`; "
           "MI share = the time solving waited for plans over compress time (issue 5: at most 10%).", ""] + rows
    if shares:
        out += ["", f"MI share: mean {100 * statistics.mean(shares):.1f}%, max {100 * max(shares):.1f}%."]
    per_input = {}
    for label, paths in [("GPU solver (planning beside solves)", runs),
                         ("host solver (planning alone, before solves)", [os.path.join(folder, "host_solver.json")])]:
        for p in paths:
            if not os.path.exists(p):
                continue
            for lin in json.load(open(p))["linears"]:
                plan = lin.get("plan") or {}
                if plan.get("mi_seconds", 0) > 0:
                    key = (label, f"{lin['name']} ({lin['cols']} wide)")
                    per_input.setdefault(key, []).append((lin["plan_seconds"], plan.get("mi_clustering_seconds", 0.0)))
    if per_input:
        out += ["", "Per input, median over layers (and runs): plan ms (of which clustering ms)", "",
                "| solver | input | plan ms | clustering ms |", "|---|---|---|---|"]
        for (label, name), v in per_input.items():
            out.append(f"| {label} | {name} | {1e3 * statistics.median(x[0] for x in v):.1f} | "
                       f"{1e3 * statistics.median(x[1] for x in v):.1f} |")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
