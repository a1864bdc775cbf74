#!/usr/bin/env python3
"""Table of research/bench_gpu.sh results: compress time per phase, total, peak GPU memory,
evaluation tokens/s and PPL, sparsegpt-mi next to the published code."""
import glob, json, os, sys


def mem(path):
    try:
        return float(open(path).read().strip())
    except (OSError, ValueError):
        return float("nan")


def main(d):
    card = open(os.path.join(d, "card.txt")).read().strip() if os.path.exists(os.path.join(d, "card.txt")) else "?"
    rows = ["# GPU benchmark: sparsegpt-mi vs the published SparseGPT/GPTQ code", "",
            f"Card: {card}. Made by `research/bench_gpu.sh` (both tools in the same call, one after another). "
            "compress = calibration passes + solving after the layer-0 inputs are caught (the reference's "
            "`compress_s`). Peak memory: nvidia-smi polled about every 0.05 s (CUDA context included), for both tools; "
            "the published code's own torch.cuda.max_memory_allocated in brackets. Phases: plan = MI statistics, "
            "grouping and bit allocation; other = Hessians, weight transfers, the MI kernels' one-time warm-up and the "
            "rest of the layer loop. Planning runs on its own threads; where the GPU solves, a linear is solved as soon as "
            "its input's plan is in, so later inputs' planning overlaps earlier solves. plan = the time solving waited for "
            "plans; MI share = plan over compress time, and in brackets the planning threads' wall time over compress time "
            "(what MI would cost without the overlap).", "",
            "| fixture | run | tool | compress s | phases (calib fwd / plan / solve / recompute / other) | MI share (all planning) | peak GPU MiB | eval tok/s (wt2) | WikiText-2 | PTB | C4 | zeros |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    # A run "RUN-VARIANT" (e.g. sgpt50-offload) is ours with one more flag, compared with the
    # published RUN; each base run first, its variants after it.
    def order(p):
        fx, run = os.path.basename(p)[len("bench_ours_"):-5].rsplit("_", 1)
        return (fx, run.split("-")[0], "-" in run, run)
    for p in sorted(glob.glob(os.path.join(d, "bench_ours_*.json")), key=order):
        key = os.path.basename(p)[len("bench_ours_"):-5]
        fx, run = key.rsplit("_", 1)
        base = run.split("-")[0]
        o = json.load(open(p))
        t = o["times"]
        wt = next((e for e in o["eval"] if e["dataset"] == "wikitext2"), None)
        tps = wt["tokens"] / wt["seconds"] if wt else float("nan")
        ppl = [o["ppl"].get(x, float("nan")) for x in ("wikitext2", "ptb", "c4")]
        # Wall time after the layer-0 inputs are caught, as the reference's compress_s.
        compress = t["total_s"] - t["catch_inputs_s"]
        phases = t["calibration_forward_s"] + t["plan_s"] + t["solve_s"] + t["recompute_s"]
        rows.append(f"| {fx} | {run} | sparsegpt-mi | {compress:.2f} | {t['calibration_forward_s']:.2f} / {t['plan_s']:.2f} / "
                    f"{t['solve_s']:.2f} / {t['recompute_s']:.2f} / {compress - phases:.2f} | {100 * t['plan_s'] / compress:.1f}% ({100 * t.get('plan_thread_s', t['plan_s']) / compress:.1f}%) | {mem(p[:-5] + '.mem'):.0f} | {tps:.0f} | "
                    + " | ".join(f"{v:.2f}" for v in ppl) + f" | {o['zero_fraction']:.4f} |")
        rp = os.path.join(d, f"bench_ref_{fx}_{base}.json")
        if os.path.exists(rp):
            r = json.load(open(rp))
            rtps = r["eval_tokens_per_s"].get("wikitext2", float("nan"))
            if run == base:
                rppl = [r["ppl"].get(x, float("nan")) for x in ("wikitext2", "ptb", "c4")]
                rows.append(f"| {fx} | {run} | published | {r['times']['compress_s']:.2f} | – | – | {mem(rp[:-5] + '.mem'):.0f} "
                            f"({r['peak_gpu_mib']:.0f}) | {rtps:.0f} | " + " | ".join(f"{v:.2f}" for v in rppl)
                            + f" | {r['zero_fraction']:.4f} |")
            rows.append(f"| {fx} | {run} | ratio ours/published | {compress / r['times']['compress_s']:.2f}× | | | "
                        f"{mem(p[:-5] + '.mem') / mem(rp[:-5] + '.mem'):.2f}× | {tps / rtps:.2f}× | | | | |")
    print("\n".join(rows))


if __name__ == "__main__":
    main(sys.argv[1])
