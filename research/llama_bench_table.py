#!/usr/bin/env python3
"""Table of research/bench_llama_gpu.sh's results: sparsegpt-mi beside the published llama.py on the
random Llama checkpoint, each run's ratios against issue 27's targets (compress time ≤ 0.3× the
published code's, peak GPU memory ≤ 0.7×, evaluation tokens/s ≥ 1×).

    research/llama_bench_table.py OUT_DIR > OUT_DIR/bench_llama.md
"""
import glob, json, os, sys

TARGETS = {"compress": 0.3, "memory": 0.7, "eval": 1.0}  # ours / published: ≤, ≤, ≥


def read(path, default=None):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def mem(path):
    try:
        return float(read(path, ""))
    except ValueError:
        return float("nan")


def verdict(ratio, target, at_least=False):
    if ratio != ratio:
        return "–"
    met = ratio >= target if at_least else ratio <= target
    return f"{ratio:.2f}× ({'meets' if met else 'misses'} {'≥' if at_least else '≤'} {target}×)"


def ours_row(o, memfile, ds):
    ev = next((e for e in o["eval"] if e["dataset"] == ds), None)
    return {
        "compress": o["times"]["total_s"],
        "memory": mem(memfile),
        "allocated": float("nan"),
        "tps": ev["tokens"] / ev["seconds"] if ev else float("nan"),
        "ppl": o["ppl"].get(ds, float("nan")),
        "windows": ev["windows"] if ev else 0,
        "zeros": o["zero_fraction"],
    }


def published_row(r, memfile, ds):
    return {
        "compress": r["times"]["compress_s"],
        "memory": mem(memfile),
        "allocated": r.get("peak_gpu_mib_all", r["peak_gpu_mib"]),
        "tps": r["eval_tokens_per_s"].get(ds, float("nan")),
        "ppl": r["ppl"].get(ds, float("nan")),
        "windows": r["eval_windows"].get(ds, 0),
        "zeros": r["zero_fraction"],
    }


def main(d, ds="wikitext2"):
    card = read(os.path.join(d, "card.txt"), "?")
    versions = read(os.path.join(d, "versions.txt"), "?")
    checkpoint = read(os.path.join(d, "checkpoint.txt"), "?")
    ref = next(iter(sorted(glob.glob(os.path.join(d, "bench_ref_*.json")))), None)
    nsamples = json.load(open(ref))["args"]["nsamples"] if ref else "?"
    rows = [
        "# Llama benchmark: sparsegpt-mi vs the published llama.py (SparseGPT, GPTQ)", "",
        f"Card: {card}; {versions}. Made by `research/bench_llama_gpu.sh` (both tools in the same call, one "
        f"after another). Model: {checkpoint}. Calibration: {nsamples} C4 windows of 2048 tokens, seed 0, for both; "
        f"evaluation: the first windows of {ds} (count in the table), both tools on the same windows.", "",
        "compress = the whole compression stage: for the published code `llama_sequential`'s wall time (catching "
        "the layer-0 inputs, moving each layer to the GPU and back, calibration passes, solving), for sparsegpt-mi "
        "`times.total_s` (catching the inputs, calibration passes, solving, recomputing; its model stays on the "
        "GPU unless --offload). Peak GPU memory: nvidia-smi polled about every 0.05 s over the whole process "
        "(compression and evaluation, CUDA context included), for both tools; the published code's own "
        "torch.cuda.max_memory_allocated in brackets. Evaluation tokens/s: windows × 2048 over the evaluation's "
        "wall time (the published `llama_eval`; this tool's `eval[].seconds`).", "",
        f"Targets (issue 27): compress ≤ {TARGETS['compress']}× the published time, peak GPU memory ≤ "
        f"{TARGETS['memory']}×, evaluation tokens/s ≥ {TARGETS['eval']}×.", "",
        f"| run | tool | compress s | peak GPU MiB | eval tok/s | {ds} windows | {ds} PPL | zeros |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ratios = []
    runs = sorted({os.path.basename(p)[len("bench_ours_"):-5] for p in glob.glob(os.path.join(d, "bench_ours_*.json"))}
                  | {os.path.basename(p)[len("bench_ref_"):-5] for p in glob.glob(os.path.join(d, "bench_ref_*.json"))},
                  key=lambda r: (r.split("-")[0], "-" in r, r))
    for run in runs:
        base = run.split("-")[0]
        op, rp = os.path.join(d, f"bench_ours_{run}.json"), os.path.join(d, f"bench_ref_{base}.json")
        ours = ours_row(json.load(open(op)), op[:-5] + ".mem", ds) if os.path.exists(op) else None
        pub = published_row(json.load(open(rp)), rp[:-5] + ".mem", ds) if os.path.exists(rp) else None
        if pub and run == base:
            rows.append(f"| {base} | published llama.py | {pub['compress']:.1f} | {pub['memory']:.0f} ({pub['allocated']:.0f}) "
                        f"| {pub['tps']:.0f} | {pub['windows']} | {pub['ppl']:.1f} | {pub['zeros']:.4f} |")
        if ours:
            rows.append(f"| {run} | sparsegpt-mi | {ours['compress']:.1f} | {ours['memory']:.0f} | {ours['tps']:.0f} "
                        f"| {ours['windows']} | {ours['ppl']:.1f} | {ours['zeros']:.4f} |")
        elif run == base and os.path.exists(op[:-5] + ".log"):  # no log: not asked for (TOOLS)
            rows.append(f"| {run} | sparsegpt-mi | did not finish: see bench_ours_{run}.log | | | | | |")
        if ours and pub:
            ratios.append(f"| {run} | {verdict(ours['compress'] / pub['compress'], TARGETS['compress'])} | "
                          f"{verdict(ours['memory'] / pub['memory'], TARGETS['memory'])} | "
                          f"{verdict(ours['tps'] / pub['tps'], TARGETS['eval'], at_least=True)} |")
    for run in (r.strip() for r in os.environ.get("RUNS", "").split()):
        if run and run not in runs:
            rows.append(f"| {run} | – | did not run (deadline): see the call's log | | | | | |")
    rows += ["", "Ratios, sparsegpt-mi / published:", "",
             "| run | compress time | peak GPU memory | eval tokens/s |", "|---|---|---|---|"] + ratios
    print("\n".join(rows))


if __name__ == "__main__":
    main(sys.argv[1])
