#!/usr/bin/env python3
"""How far does rounding alone move the published code's perplexities? Runs the published
SparseGPT/GPTQ code (research/published_harness.py) on each reference run's own `args`, with the
calibration windows fed to the Hessian in reverse order: mathematically the same H, only the
f32 summation order differs. The table puts that beside the reference (the same code, windows in
order) and beside sparsegpt-mi's committed results (test_results/reference/<fixture>/), so our
distance from the reference can be read against the reference's distance from itself.

Run on the GPU machine (gpu/gpu_run.sh FIXTURE noise):
  research/published_noise.py --shared DIR --published-sgpt DIR --published-gptq DIR --fixture opt-mini-a
      [--runs gptq3,sgpt50w4] [--jobs 3] [--resume] --out DIR
A reference made on the CPU in f32 (llama-rand-gqa) is run the same way, on the CPU in f32 over its
first `max_windows` windows; that needs only torch and transformers, no GPU.
"""
import argparse, concurrent.futures as cf, json, os, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from reference_table import flags  # noqa: E402  (the reference args as prune flags)

DATASETS = ("wikitext2", "ptb", "c4")


def reference(a, run):
    """The reference run's JSON (args, ppl)."""
    return json.load(open(os.path.join(a.shared, "reference", a.fixture, run + ".json")))


def ours_ppl(a, run):
    """sparsegpt-mi's committed full-protocol PPL for the run ({} if none)."""
    path = os.path.join(a.ours, a.fixture, run + ".json")
    return json.load(open(path))["ppl"] if os.path.exists(path) else {}


def harness_flags(args):
    """The reference's args as published_harness.py flags: its solver flags, and where it was made
    on the CPU in f32 (the llama fixture), that device, dtype and evaluation windows."""
    f = [x for x in flags(args) if x != "--keep-compute-dtype"]
    if args.get("device") == "cpu":
        f += ["--device", "cpu", "--dtype", args.get("dtype", "float32")]
    if args.get("max_windows"):
        f += ["--max-windows", str(args["max_windows"])]
    return f


def run_reordered(a, run, draw=None):
    """The published code on `run`'s args with H's windows reversed (draw None) or shuffled
    with seed `draw`."""
    args = reference(a, run)["args"]
    method = args["method"]
    pub = a.published_gptq if method == "gptq" else a.published_sgpt
    if draw is None:
        out, order = os.path.join(a.out, f"noise_{a.fixture}_{run}.json"), ["--reverse-hessian-order"]
    elif a.perturb_inputs:
        out, order = os.path.join(a.out, f"noise_{a.fixture}_{run}_p{draw}.json"), ["--perturb-inputs", str(draw)]
    else:
        out, order = os.path.join(a.out, f"noise_{a.fixture}_{run}_s{draw}.json"), ["--shuffle-hessian-order", str(draw)]
    cmd = [sys.executable, os.path.join(HERE, "published_harness.py"), os.path.join(a.shared, "fixtures", a.fixture),
           "--published", pub, "--method", method, *harness_flags(args), *order,
           "--data-dir", os.path.join(a.shared, "data"), "--json", out]
    if a.resume and os.path.exists(out):
        return (run, draw), out, "kept (--resume): " + out
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return (run, draw), None, p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"rc {p.returncode}"
    return (run, draw), out, " ".join(cmd[2:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", required=True)
    ap.add_argument("--published-sgpt", required=True)
    ap.add_argument("--published-gptq", required=True)
    ap.add_argument("--fixture", required=True)
    ap.add_argument("--runs", default="")
    ap.add_argument("--ours", default=os.path.join(HERE, "..", "test_results", "reference"))
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--draws", type=int, default=0,
                    help="instead of one reversed order, this many seeded shuffles per run (seeds 1..N): a spread")
    ap.add_argument("--perturb-inputs", action="store_true",
                    help="with --draws: perturb the layer-0 inputs by one f16 rounding (seeds 1..N) instead of shuffling")
    ap.add_argument("--resume", action="store_true", help="keep a run whose JSON exists in --out")
    ap.add_argument("--digits", type=int, default=2, help="decimals of the Δ% columns")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    names = sorted(n[:-5] for n in os.listdir(os.path.join(a.shared, "reference", a.fixture)) if n.endswith(".json"))
    runs = [r for r in names if (not a.runs or r in a.runs.split(","))
            and reference(a, r)["args"]["method"] != "dense" and not reference(a, r)["args"].get("gmp")]
    results = {}
    todo = [(r, d) for r in runs for d in (range(1, a.draws + 1) if a.draws else [None])]
    with cf.ThreadPoolExecutor(a.jobs) as ex:
        for key, out, msg in ex.map(lambda rd: run_reordered(a, *rd), todo):
            results[key] = out
            print(f"{key[0]:16s} {key[1]} {msg[:160]}", flush=True)
    if a.draws:
        return spread_table(a, runs, results)
    lines = [f"# Rounding noise of the published code on {a.fixture}", "",
             "Published SparseGPT/GPTQ (research/published_harness.py) with the calibration windows added to H in "
             "reverse order (same H up to f32 rounding) vs the reference (same code, same card type, windows in "
             "order), beside sparsegpt-mi's committed results (test_results/reference/). Made by "
             f"`research/published_noise.py --fixture {a.fixture}` (on the GPU machine: `gpu/gpu_run.sh FIXTURE noise`). "
             "Δ% = relative to the reference.", "",
             "| run | dataset | reference | published, H reversed (Δ%) | sparsegpt-mi (Δ%) |", "|---|---|---|---|---|"]
    worst = {"noise": 0.0, "ours": 0.0}
    for run in runs:
        ref = reference(a, run)["ppl"]
        noise = json.load(open(results[(run, None)]))["ppl"] if results.get((run, None)) else {}
        ours = ours_ppl(a, run)
        for ds in DATASETS:
            r = ref.get(ds)
            cells = []
            for key, src in (("noise", noise), ("ours", ours)):
                v = src.get(ds)
                if v is None or r is None:
                    cells.append("–")
                    continue
                d = 100.0 * (v - r) / r
                worst[key] = max(worst[key], abs(d))
                cells.append(f"{v:.2f} ({d:+.{a.digits}f})")
            lines.append(f"| {run} | {ds} | {r:.2f} | {cells[0]} | {cells[1]} |")
    lines += ["", f"Largest |Δ|: published with H reversed {worst['noise']:.{a.digits}f}%, "
              f"sparsegpt-mi {worst['ours']:.{a.digits}f}%."]
    md = os.path.join(a.out, f"noise_{a.fixture}.md")
    with open(md, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def spread_table(a, runs, results):
    """Per run and corpus: the reference, the shuffled draws' Δ% (mean ± sd, range), ours."""
    import statistics
    what = ("the layer-0 inputs perturbed by one f16 rounding (relative 2^-11 Gaussian noise, seeds 1..N)" if a.perturb_inputs
            else "the calibration windows added to H in seeded random orders (seeds 1..N; the same H up to f32 rounding)")
    short = "perturbed inputs" if a.perturb_inputs else "shuffled H"
    lines = [f"# Rounding spread of the published code on {a.fixture}" + (": f16-perturbed inputs" if a.perturb_inputs else ""), "",
             f"Published SparseGPT/GPTQ (research/published_harness.py), {a.draws} runs with {what}, relative to the "
             "reference, beside sparsegpt-mi's committed full-protocol results. Made by "
             f"`DRAWS={a.draws}{' PERTURB=1' if a.perturb_inputs else ''} gpu/gpu_run.sh {a.fixture} noise` "
             f"(research/published_noise.py --draws {a.draws}{' --perturb-inputs' if a.perturb_inputs else ''}).", "",
             f"| run | dataset | reference | published, {short}: Δ% mean ± sd | range | sparsegpt-mi Δ% | ours within range |",
             "|---|---|---|---|---|---|---|"]
    for run in runs:
        ref = reference(a, run)["ppl"]
        ours = ours_ppl(a, run)
        draws = [json.load(open(results[(run, d)]))["ppl"] for d in range(1, a.draws + 1) if results.get((run, d))]
        for ds in DATASETS:
            r = ref.get(ds)
            ds_d = [100.0 * (x[ds] - r) / r for x in draws if ds in x]
            if not ds_d or r is None:
                continue
            sd = statistics.stdev(ds_d) if len(ds_d) > 1 else 0.0
            o = 100.0 * (ours[ds] - r) / r if ds in ours else None
            inside = "–" if o is None else ("yes" if min(ds_d) <= o <= max(ds_d) else "no")
            lines.append(f"| {run} | {ds} | {r:.2f} | {statistics.mean(ds_d):+.2f} ± {sd:.2f} | [{min(ds_d):+.2f}, {max(ds_d):+.2f}] | "
                         + (f"{o:+.2f}" if o is not None else "–") + f" | {inside} |")
    md = os.path.join(a.out, f"spread{'_perturbed' if a.perturb_inputs else ''}_{a.fixture}.md")
    with open(md, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
