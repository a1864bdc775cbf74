#!/usr/bin/env python3
"""How far does rounding alone move the published code's perplexities? Runs the published
SparseGPT/GPTQ code (scripts/published_harness.py) on each reference run's own `args`, with the
calibration windows fed to the Hessian in reverse order: mathematically the same H, only the
f32 summation order differs. The table puts that beside the reference (the same code, windows in
order) and beside sparsegpt-mi's committed results (test_results/reference/<fixture>/), so our
distance from the reference can be read against the reference's distance from itself.

Run on the GPU machine (scripts/gpu_run.sh FIXTURE noise):
  scripts/published_noise.py --shared DIR --published-sgpt DIR --published-gptq DIR --fixture opt-mini-a
      [--runs gptq3,sgpt50w4] [--jobs 3] --out DIR
"""
import argparse, concurrent.futures as cf, json, os, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from reference_table import flags  # noqa: E402  (the reference args as prune flags)

DATASETS = ("wikitext2", "ptb", "c4")


def run_reversed(a, run):
    ref = json.load(open(os.path.join(a.shared, "reference", a.fixture, run + ".json")))
    args = ref["args"]
    method = args["method"]
    pub = a.published_gptq if method == "gptq" else a.published_sgpt
    out = os.path.join(a.out, f"noise_{a.fixture}_{run}.json")
    cmd = [sys.executable, os.path.join(HERE, "published_harness.py"), os.path.join(a.shared, "fixtures", a.fixture),
           "--published", pub, "--method", method, *flags(args), "--reverse-hessian-order",
           "--data-dir", os.path.join(a.shared, "data"), "--json", out]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return run, None, p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"rc {p.returncode}"
    return run, out, " ".join(cmd[2:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", required=True)
    ap.add_argument("--published-sgpt", required=True)
    ap.add_argument("--published-gptq", required=True)
    ap.add_argument("--fixture", required=True)
    ap.add_argument("--runs", default="")
    ap.add_argument("--ours", default=os.path.join(HERE, "..", "test_results", "reference"))
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    names = sorted(n[:-5] for n in os.listdir(os.path.join(a.shared, "reference", a.fixture)) if n.endswith(".json"))
    runs = [r for r in names if (not a.runs or r in a.runs.split(","))
            and json.load(open(os.path.join(a.shared, "reference", a.fixture, r + ".json")))["args"]["method"] != "dense"
            and not json.load(open(os.path.join(a.shared, "reference", a.fixture, r + ".json")))["args"].get("gmp")]
    results = {}
    with cf.ThreadPoolExecutor(a.jobs) as ex:
        for run, out, msg in ex.map(lambda r: run_reversed(a, r), runs):
            results[run] = out
            print(f"{run:16s} {msg[:160]}", flush=True)
    lines = [f"# Rounding noise of the published code on {a.fixture}", "",
             "Published SparseGPT/GPTQ (scripts/published_harness.py) with the calibration windows added to H in "
             "reverse order (same H up to f32 rounding) vs the reference (same code, same card type, windows in "
             "order), beside sparsegpt-mi's committed full-protocol results. Made by `scripts/gpu_run.sh "
             f"{a.fixture} noise` (scripts/published_noise.py). Δ% = relative to the reference.", "",
             "| run | dataset | reference | published, H reversed (Δ%) | sparsegpt-mi (Δ%) |", "|---|---|---|---|---|"]
    worst = {"noise": 0.0, "ours": 0.0}
    for run in runs:
        ref = json.load(open(os.path.join(a.shared, "reference", a.fixture, run + ".json")))["ppl"]
        noise = json.load(open(results[run]))["ppl"] if results.get(run) else {}
        ours_path = os.path.join(a.ours, a.fixture, run + ".json")
        ours = json.load(open(ours_path))["ppl"] if os.path.exists(ours_path) else {}
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
                cells.append(f"{v:.2f} ({d:+.2f})")
            lines.append(f"| {run} | {ds} | {r:.2f} | {cells[0]} | {cells[1]} |")
    lines += ["", f"Largest |Δ|: published with H reversed {worst['noise']:.2f}%, sparsegpt-mi {worst['ours']:.2f}%."]
    md = os.path.join(a.out, f"noise_{a.fixture}.md")
    with open(md, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
