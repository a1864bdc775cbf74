#!/usr/bin/env python3
"""Markdown table of research/compare_modes.sh results: per target and mode, PPL per dataset (mean ± sd over
seeds), achieved bits including scale/zero metadata, compress time; then Welch t-tests of MI
against every other mode (two-sided, per dataset). Standard library only."""
import glob, json, math, os, re, sys
from collections import defaultdict


# The incomplete beta function (t-test p-values): one copy, in the study's table script.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mi_study_table import betainc  # noqa: E402


def welch(x, y):
    """Two-sided Welch t-test: (t, dof, p)."""
    nx, ny = len(x), len(y)
    mx, my = sum(x) / nx, sum(y) / ny
    vx = sum((v - mx) ** 2 for v in x) / (nx - 1)
    vy = sum((v - my) ** 2 for v in y) / (ny - 1)
    se2 = vx / nx + vy / ny
    if se2 == 0:
        return float("nan"), float("nan"), float("nan")
    t = (mx - my) / math.sqrt(se2)
    dof = se2 ** 2 / ((vx / nx) ** 2 / (nx - 1) + (vy / ny) ** 2 / (ny - 1))
    p = betainc(dof / 2, 0.5, dof / (dof + t * t))
    return t, dof, p


def stat(v):
    m = sum(v) / len(v)
    if len(v) < 2:
        return f"{m:.2f}"
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))
    return f"{m:.2f} ± {sd:.2f}"


def main(d):
    runs = defaultdict(list)
    cmd = None
    for p in sorted(glob.glob(os.path.join(d, "*.json"))):
        m = re.match(r"(baseline_w\d+|enhanced|mi|random)_t([\d.]+)_s(\d+)\.json", os.path.basename(p))
        if not m:
            continue
        j = json.load(open(p))
        runs[(m.group(2), m.group(1))].append(j)
        cmd = cmd or j["command"]
    dsets = ["wikitext2", "ptb", "c4"]
    out = [f"# Baseline vs enhanced vs MI grouping vs random groups: {os.path.basename(d)}", "",
           "Made by `research/compare_modes.sh` (one run's command: `" + (cmd or "") + "`). "
           "PPL mean ± sd over seeds (seed = calibration windows and clustering seed); bits = average bits "
           "per weight over all quantized linears, scale (fp16) and zero point metadata included; "
           "baseline_wB = plain SparseGPT + uniform B-bit GPTQ grid.", "",
           "| target | mode | K | seeds | " + " | ".join(f"{x} PPL" for x in dsets) + " | bits (incl. meta) | compress s | MI+grouping s |",
           "|---|---|---|---|" + "---|" * len(dsets) + "---|---|---|"]
    targets = sorted({t for t, _ in runs}, key=float, reverse=True)
    order = lambda m: (0 if m.startswith("baseline") else 1, ["enhanced", "random", "mi"].index(m) if not m.startswith("baseline") else 0, m)
    for t in targets:
        for mode in sorted({m for tt, m in runs if tt == t}, key=order):
            js = runs[(t, mode)]
            cells = [stat([j["ppl"][x] for j in js]) if all(x in j["ppl"] for j in js) else "–" for x in dsets]
            bits = " / ".join(f"{j['bits']['avg_bits_with_metadata']:.3f}" for j in js)
            comp = stat([j["times"]["total_s"] for j in js])
            mi_s = stat([sum((l.get("plan") or {}).get("mi_seconds", 0.0) for l in j["linears"]) for j in js])
            k = "–" if mode.startswith("baseline") else ",".join(sorted({str(j["args"].get("n_groups")) for j in js}))
            out.append(f"| {t} | {mode} | {k} | {len(js)} | " + " | ".join(cells) + f" | {bits} | {comp} | {mi_s} |")
    out += ["", "## Welch t-tests: MI vs each mode (two-sided; negative t = MI has lower PPL)", "",
            "| target | vs | " + " | ".join(f"{x}: t, p" for x in dsets) + " |", "|---|---|" + "---|" * len(dsets)]
    for t in targets:
        mi = runs.get((t, "mi"), [])
        if len(mi) < 2:
            continue
        for mode in sorted({m for tt, m in runs if tt == t and m != "mi"}, key=order):
            other = runs[(t, mode)]
            if len(other) < 2:
                continue
            cells = []
            for x in dsets:
                tt, _, p = welch([j["ppl"][x] for j in mi], [j["ppl"][x] for j in other])
                cells.append(f"{tt:+.2f}, {p:.3f}")
            out.append(f"| {t} | {mode} | " + " | ".join(cells) + " |")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
