#!/usr/bin/env python3
"""Runs every configuration in ../shared/reference/<fixture>/ through sparsegpt-mi with the
reference's own `args`, full protocol (128 calibration windows, all evaluation windows), and
writes test_results/reference/<fixture>/<run>.json plus test_results/reference_table.md
(PPL side by side, relative difference, zero fraction, distinct values per row).

  research/reference_table.py [--bin target/debug/sparsegpt-mi] [--device cpu|cuda]
      [--fixtures opt-mini-a,opt-mini-b] [--runs sgpt50,gptq4] [--jobs N] [--force]

On 2 CPU cores the full table takes hours (evaluation is ~4 s per window); it is meant for
the GPU machine (--device cuda with the CUDA build).
"""
import argparse, concurrent.futures as cf, json, os, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def flags(a):
    """The reference run's args as sparsegpt-mi flags (None: evaluation only)."""
    if a["method"] == "dense":
        return None
    f = ["--nsamples", str(a["nsamples"]), "--seed", str(a["seed"]), "--percdamp", str(a["percdamp"]),
         "--blocksize", str(a["blocksize"]), "--wbits", str(a["wbits"]), "--groupsize", str(a["groupsize"])]
    if a["method"] == "sparsegpt":
        f += ["--sparsity", str(a["sparsity"]), "--prunen", str(a["prunen"]), "--prunem", str(a["prunem"])]
    if a.get("gmp"):
        f.append("--gmp")
    if a.get("act_order"):
        f.append("--act-order")
    if a.get("sym"):
        f.append("--sym")
    # The published code's one calibration pass per layer and its dynamic act-order groups (the
    # tool's defaults when quantizing are true-sequential and group-aware groups).
    f.append("--true-sequential" if a.get("true_sequential") else "--no-true-sequential")
    if a.get("act_order") and int(a["groupsize"]) > 0 and int(a["wbits"]) < 16:
        f += ["--act-groups", "dynamic"]
    if a.get("dtype") == "float32":
        # The published run kept its solved weights in f32 (not the checkpoint's bf16).
        f.append("--keep-compute-dtype")
    return f


def published_flags(a, published_root=".carry/published"):
    """The reference run's args as research/published_harness.py flags (the published modules
    under published_root/sparsegpt or /gptq; data, device and dtype are the caller's)."""
    f = ["--published", os.path.join(published_root, "sparsegpt" if a["method"] == "sparsegpt" else "gptq"),
         "--method", a["method"], "--nsamples", a["nsamples"], "--seed", a["seed"], "--percdamp", a["percdamp"],
         "--blocksize", a["blocksize"], "--wbits", a["wbits"], "--groupsize", a["groupsize"],
         "--sparsity", a["sparsity"], "--prunen", a["prunen"], "--prunem", a["prunem"],
         "--max-windows", a["max_windows"]]
    f += ["--act-order"] if a.get("act_order") else []
    f += ["--true-sequential"] if a.get("true_sequential") else []
    return [str(x) for x in f]


def eval_flags(a):
    """Flags every run of a reference shares: its evaluation windows and dtype."""
    f = []
    if a.get("max_windows"):
        f += ["--max-windows", str(a["max_windows"])]
    if a.get("dtype") == "float32":
        f += ["--dtype", "f32"]
    return f


def run_one(bin_, shared, fixture, run, device, out, force, extra=()):
    if os.path.exists(out) and not force:
        return out, 0.0, "cached"
    ref = json.load(open(os.path.join(shared, "reference", fixture, run + ".json")))
    model = os.path.join(shared, "fixtures", fixture)
    data = os.path.join(shared, "data")
    f = flags(ref["args"])
    e = eval_flags(ref["args"])
    if f is None:
        cmd = [bin_, "eval", model, *e, "--device", device, "--data-dir", data, "--json", out]
    else:
        cmd = [bin_, "prune", model, "c4", *f, *e, *extra, "--device", device, "--data-dir", data, "--json", out]
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return out, time.time() - t, "FAILED: " + p.stderr.strip().splitlines()[-1]
    return out, time.time() - t, " ".join(cmd[1:])


def ours(path):
    j = json.load(open(path))
    if "results" in j:  # eval
        return {r["dataset"]: r["ppl"] for r in j["results"]}, 0.0, None, None
    dist = max((l["max_distinct_per_row"] for l in j["linears"]), default=None)
    return j["ppl"], j["zero_fraction"], dist, j["times"]["total_s"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/debug/sparsegpt-mi"))
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fixtures", default="opt-mini-a,opt-mini-b")
    ap.add_argument("--runs", default="")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(ROOT, "test_results"))
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--table", default="reference_table.md", help="the table's file name under --out")
    ap.add_argument("--extra", default="", help="flags added to every prune run, e.g. --extra=--lazy-updates")
    a = ap.parse_args()
    extra = a.extra.split()
    todo = []
    for fx in a.fixtures.split(","):
        names = sorted(n[:-5] for n in os.listdir(os.path.join(a.shared, "reference", fx)) if n.endswith(".json"))
        for run in names:
            if a.runs and run not in a.runs.split(","):
                continue
            out = os.path.join(a.out, "reference", fx, run + ".json")
            os.makedirs(os.path.dirname(out), exist_ok=True)
            todo.append((fx, run, out))
    commands = {}
    with cf.ThreadPoolExecutor(a.jobs) as ex:
        futs = {ex.submit(run_one, a.bin, a.shared, fx, run, a.device, out, a.force, extra): (fx, run) for fx, run, out in todo}
        for fut in cf.as_completed(futs):
            fx, run = futs[fut]
            out, dt, msg = fut.result()
            commands[(fx, run)] = msg
            print(f"{fx:12s} {run:16s} {dt:7.1f}s {msg[:100]}", flush=True)
    lines = ["# sparsegpt-mi vs the published SparseGPT/GPTQ code", "",
             f"Made by `research/reference_table.py --device {a.device} --fixtures {a.fixtures}"
             + (f" --extra='{a.extra}'" if a.extra else "") + "` "
             "(each reference's own args: calibration windows drawn with the Python-compatible sampler, seed 0; "
             "its evaluation windows (`max_windows`) and dtype). Reference: ../shared/reference (published code; "
             "OPT fixtures on an H100 in fp16, llama-rand-gqa on the CPU in f32).", "",
             "| fixture | run | WikiText-2 ours / ref (Δ%) | PTB ours / ref (Δ%) | C4 ours / ref (Δ%) | zeros ours / ref | max levels/row ours / ref |",
             "|---|---|---|---|---|---|---|"]
    worst = 0.0
    for fx, run, out in todo:
        if not os.path.exists(out):
            lines.append(f"| {fx} | {run} | not run: {commands.get((fx, run), '')} | | | | |")
            continue
        ref = json.load(open(os.path.join(a.shared, "reference", fx, run + ".json")))
        ppl, zeros, dist, _ = ours(out)
        cells = []
        for ds in ("wikitext2", "ptb", "c4"):
            o, r = ppl.get(ds), ref["ppl"].get(ds)
            if o is None or r is None:
                cells.append("–")
                continue
            d = 100.0 * (o - r) / r
            worst = max(worst, abs(d))
            cells.append(f"{o:.2f} / {r:.2f} ({d:+.3f})")
        rd = ref.get("max_distinct_per_row")
        lines.append(f"| {fx} | {run} | {' | '.join(cells)} | {zeros:.4f} / {ref['zero_fraction']:.4f} | {dist} / {rd} |")
    lines += ["", f"Largest |Δ| in perplexity: {worst:.3f}%.", "",
              "Levels per row are counted over all rows here and over sampled rows in the reference;"
              " quantized runs must stay ≤ 2^wbits (≤ 2^wbits per group of 128 columns for g128)."]
    with open(os.path.join(a.out, a.table), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
