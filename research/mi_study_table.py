#!/usr/bin/env python3
"""Tables of research/mi_study.sh's runs (issue 17), standard library only (no numpy, no scipy).

    mi_study_table.py DIR [--label TEXT]           markdown on stdout
    mi_study_table.py --stored-bits CONFIG BITS GS  stored bits per weight (metadata included) of
                                                    uniform BITS-bit GPTQ, GS columns per group
                                                    (-1: one grid per row), over a fixture's linears

Per comparison "A vs B" in a cell: for each seed s (the calibration windows, shared by all arms of
a seed), d_s = 100·(PPL_A,s / PPL_B,s − 1) per dataset; the table gives the mean and sd of d over
the seeds present in both arms, a paired t-test and an exact Wilcoxon signed-rank test (two-sided;
zero differences dropped, tied |d| averaged, the exact distribution enumerated over sign flips),
and both p-values Holm-adjusted within one family: one fixture × one comparison, over the datasets
and the budgets (cells) the comparison is made in. Negative d: A has the lower PPL. With n seeds
the smallest two-sided exact Wilcoxon p is 2/2^n (n = 5: 0.0625, n = 6: 0.031)."""
import glob, json, math, os, re, sys
from collections import defaultdict

DATASETS = ["wikitext2", "ptb", "c4"]


# ---------- bits ----------
def stored_bits(config_path, bits, gs):
    c = json.load(open(config_path))
    h, f = c["hidden_size"], c["ffn_dim"]
    # (rows, cols) of q, k, v, out, fc1, fc2
    shapes = [(h, h)] * 4 + [(f, h), (h, f)]
    tot = w = 0.0
    for rows, cols in shapes:
        grids = 1 if gs <= 0 else math.ceil(cols / gs)
        per_weight = bits + grids * (16 + bits) / cols
        tot += per_weight * rows * cols
        w += rows * cols
    return tot / w


# ---------- statistics ----------
def betacf(a, b, x):
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > 1e-300 else 1e-300)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > 1e-300 else 1e-300)
        c = 1.0 + aa / c
        c = c if abs(c) > 1e-300 else 1e-300
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > 1e-300 else 1e-300)
        c = 1.0 + aa / c
        c = c if abs(c) > 1e-300 else 1e-300
        de = d * c
        h *= de
        if abs(de - 1.0) < 1e-12:
            break
    return h


def betainc(a, b, x):
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(lbt) * betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * betacf(b, a, 1 - x) / b


def paired_t(d):
    """Two-sided one-sample t-test of the differences: (t, p); NaN below 2 values or sd 0."""
    n = len(d)
    if n < 2:
        return float("nan"), float("nan")
    m = sum(d) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / (n - 1))
    if sd == 0:
        return float("nan"), float("nan")
    t = m / (sd / math.sqrt(n))
    dof = n - 1
    return t, betainc(dof / 2, 0.5, dof / (dof + t * t))


def wilcoxon(d):
    """Two-sided exact Wilcoxon signed-rank p (normal approximation above 20 non-zero values)."""
    x = [v for v in d if v != 0]
    n = len(x)
    if n == 0:
        return float("nan")
    order = sorted(range(n), key=lambda i: abs(x[i]))
    ranks = [0.0] * n
    i = 0
    while i < n:
        j = i
        while j + 1 < n and abs(x[order[j + 1]]) == abs(x[order[i]]):
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    w_plus = sum(r for r, v in zip(ranks, x) if v > 0)
    total = sum(ranks)
    mean = total / 2
    if n <= 20:
        # Distribution of the positive-rank sum over all 2^n sign patterns (ranks doubled: integers).
        counts = {0: 1}
        for r in ranks:
            r2 = int(round(2 * r))
            nxt = defaultdict(int)
            for s, c in counts.items():
                nxt[s] += c
                nxt[s + r2] += c
            counts = nxt
        obs = abs(2 * w_plus - 2 * mean)
        extreme = sum(c for s, c in counts.items() if abs(s - 2 * mean) >= obs - 1e-9)
        return min(1.0, extreme / 2 ** n)
    var = n * (n + 1) * (2 * n + 1) / 24
    z = (abs(w_plus - mean) - 0.5) / math.sqrt(var)
    return math.erfc(z / math.sqrt(2))


def holm(ps):
    """Holm step-down adjusted p-values (NaN stay NaN and do not count)."""
    idx = [i for i, p in enumerate(ps) if not math.isnan(p)]
    m = len(idx)
    out = [float("nan")] * len(ps)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: ps[i])):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out


def mean_sd(v):
    n = len(v)
    if n == 0:
        return float("nan"), float("nan")
    m = sum(v) / n
    return m, (math.sqrt(sum((x - m) ** 2 for x in v) / (n - 1)) if n > 1 else float("nan"))


def fmt(x, spec=".3f"):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


# ---------- the study's structure ----------
CELLS = {
    "P": "60% sparsity, nominal 2.5 bits (uniform: 2-bit g32)",
    "S1": "60% sparsity, nominal 3.0 bits (uniform: 3-bit per row)",
    "S2": "60% sparsity, nominal 2.25 bits (uniform: 2-bit g64)",
    "S3": "2:4 sparsity, nominal 2.5 bits (uniform: 2-bit g32)",
    "G": "dense, uniform 3-bit, scale groups of 64",
    "N": "2:4 sparsity, no quantization",
}
# (question, cells, A, B, what the comparison isolates)
COMPARISONS = [
    ("q1", ["P", "S1", "S2", "S3"], "Umi", "U", "order alone: the same uniform bits, MI's mixed sweep order vs the natural one"),
    ("q1", ["P", "S1", "S2", "S3"], "MI", "Umi", "bits + grouping at a fixed order: MI's mixed bits vs uniform bits, both in MI's order"),
    ("q1", ["S1"], "MIid", "U", "bits + grouping without any order change: MI's mixed bits in place vs uniform per-row bits (both grids fitted before the sweep)"),
    ("q1", ["P", "S2", "S3"], "MIid", "Ust", "bits + grouping without any order change: MI's mixed bits in place vs uniform static groups"),
    ("q1", ["P", "S2", "S3"], "Ust", "U", "grid fitting alone: the uniform groups' grids from the untouched weight (static) vs during the sweep"),
    ("q1", ["P", "S1", "S2", "S3"], "MIid", "Rid", "grouping alone: MI groups vs random groups of MI's sizes, same allocator, in place"),
    ("q1", ["P"], "MI", "MIid", "order on the mixed plan: the same groups and bits, mixed vs natural order"),
    ("q1", ["P"], "MI", "R", "MI vs random groups in the mixed order (the old comparison, bits matched, no discount)"),
    ("q1", ["P"], "MIid", "Eid", "MI grouping vs importance-rank grouping (the allocator's optimum), in place"),
    ("q1", ["P"], "Eid", "Ust", "bits with importance-rank groups, in place, vs uniform static groups"),
    ("q1", ["P"], "Uact", "U", "the act-order baseline vs the natural order, uniform bits"),
    ("q2a", ["P"], "Eid_obs", "Eid", "importance: OBS saliency ΣW²/[H⁻¹]_jj vs diagonal H_jj·ΣW²"),
    ("q2a", ["P"], "Eid_miobs", "Eid_obs", "Gaussian R² from the (centred) correlation vs the exact H⁻¹ diagonal"),
    ("q2a", ["P"], "Eid_miobs_hist", "Eid_miobs", "non-Gaussian MI (histogram) vs Gaussian MI in the same redundancy formula: what MI adds"),
    ("q2a", ["P"], "MIid_disc", "MIid", "the redundancy discount I·(1 − r/2) on vs off, MI groups in place"),
    ("q2b", ["G"], "Gmi", "Gst", "grouping alone: MI scale groups vs contiguous ones, both static, natural order"),
    ("q2b", ["G"], "Gmi", "G", "MI scale groups vs GPTQ's contiguous groups of 64 (grids fitted in the sweep): what a user would compare"),
    ("q2b", ["G"], "Gmi", "Gact_static", "MI scale groups vs static contiguous groups swept in act-order (GPTQ static_groups)"),
    ("q2b", ["G"], "Gst", "G", "grid fitting alone: static vs in-sweep contiguous groups"),
    ("q2b", ["G"], "Gact_static", "Gst", "act-order alone, static contiguous groups"),
    ("q2b", ["G"], "Gmi", "Grange", "MI scale groups vs k-means on column weight ranges"),
    ("q2b", ["G"], "Gmi", "Grand", "MI scale groups vs random equal-size groups"),
    ("q2c", ["N"], "Nmi", "N", "MI channel sets vs consecutive channels for 2:4"),
    ("q2c", ["N"], "Nmi", "Nrand", "MI channel sets vs random sets"),
    ("q2c", ["N"], "Nmi", "Nmag", "MI channel sets vs the magnitude (apex-style) swap search"),
    ("q2c", ["N"], "Nmag", "N", "magnitude swap search vs consecutive channels"),
]
NULLS = [("q1", "P", "MIid", "Rid"), ("q2b", "G", "Gmi", "Grand"), ("q2c", "N", "Nmi", "Nrand")]
REFERENCE = {"P": "U", "S1": "U", "S2": "U", "S3": "U", "G": "G"}
QUESTIONS = {
    "q1": "Q1. Bits vs grouping vs order (mixed arms: MI spectral groups, --redundancy-discount off, targets = the uniform arm's stored bits)",
    "q2a": "Q2a. Redundancy-adjusted importance (enhanced = importance-rank groups, in place, cell P)",
    "q2b": "Q2b. MI-chosen scale-sharing groups at uniform bits (static groups, g_idx)",
    "q2c": "Q2c. MI-guided channel sets for 2:4 (sweep order unchanged; see nm_sets.rs)",
}


def load(d):
    runs = {}  # (fixture, cell, arm, seed, pseed) → json
    cmd = {}
    for p in sorted(glob.glob(os.path.join(d, "*", "*.json"))):
        m = re.match(r"([A-Z0-9]+)__([A-Za-z_]+)__s(\d+)(?:__p(\d+))?\.json$", os.path.basename(p))
        if not m:
            continue
        fx = os.path.basename(os.path.dirname(p))
        j = json.load(open(p))
        key = (fx, m.group(1), m.group(2), int(m.group(3)), None if m.group(4) is None else int(m.group(4)))
        runs[key] = j
        cmd.setdefault((fx, m.group(1), m.group(2)), j.get("command", ""))
    return runs, cmd


def main(d, label):
    runs, cmds = load(d)
    fixtures = sorted({k[0] for k in runs})
    out = ["# Issue 17's MI study: does MI grouping pay?", ""]
    if label:
        out += [f"**{label}**", ""]
    planned = skipped = 0
    for plan in sorted(glob.glob(os.path.join(d, "*", "plan.tsv"))):
        rows = [l.rstrip("\n").split("\t") for l in open(plan) if l.strip()]
        planned += len(rows)
        skipped += sum(1 for r in rows if not os.path.exists(os.path.join(os.path.dirname(plan), os.path.basename(r[5]))))
    out += [f"Made by `research/mi_study.sh` (one run's command, per cell and arm, in the bits table below); "
            f"{len(runs)} runs read, {planned} planned, {skipped} planned runs missing (skipped by the time budget or failed). "
            "PPL: the first `--max-windows` windows of each corpus. Seeds pair the arms (same calibration windows); "
            "paired differences d = 100·(PPL_A/PPL_B − 1) per seed, negative = A better; t = paired t-test, "
            "W = exact Wilcoxon signed-rank, both two-sided, Holm-adjusted (H) over datasets × budgets within one fixture "
            "and comparison.", ""]

    def seeds_of(fx, cell, arm):
        return {k[3]: v for k, v in runs.items() if k[:3] == (fx, cell, arm) and k[4] is None}

    # Comparisons, per question.
    for q, title in QUESTIONS.items():
        comps = [c for c in COMPARISONS if c[0] == q]
        rows = []
        for fx in fixtures:
            for (_, cells, a, b, what) in comps:
                fam = []
                for cell in cells:
                    ra, rb = seeds_of(fx, cell, a), seeds_of(fx, cell, b)
                    common = sorted(set(ra) & set(rb))
                    if not common:
                        continue
                    for ds in DATASETS:
                        dd = [100 * (ra[s]["ppl"][ds] / rb[s]["ppl"][ds] - 1) for s in common
                              if ds in ra[s]["ppl"] and ds in rb[s]["ppl"]]
                        if not dd:
                            continue
                        t, pt = paired_t(dd)
                        pw = wilcoxon(dd)
                        fam.append([fx, cell, f"{a} vs {b}", ds, len(dd), *mean_sd(dd), t, pt, pw, what])
                ht = holm([r[8] for r in fam])
                hw = holm([r[9] for r in fam])
                for r, x, y in zip(fam, ht, hw):
                    rows.append(r + [x, y])
        if not rows:
            continue
        out += [f"## {title}", "", "Which comparison isolates which effect:", ""]
        for (_, cells, a, b, what) in comps:
            out.append(f"- **{a} vs {b}** ({', '.join(cells)}): {what}")
        out += ["", "| fixture | cell | comparison | dataset | n | mean d % | sd | t | p (t) | p (W) | H p (t) | H p (W) |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            fx, cell, comp, ds, n, m, sd, t, pt, pw, _, ht, hw = r
            star = " *" if not math.isnan(ht) and ht < 0.05 else ""
            out.append(f"| {fx} | {cell} | {comp} | {ds} | {n} | {fmt(m, '+.2f')} | {fmt(sd, '.2f')} | {fmt(t, '+.2f')} | "
                       f"{fmt(pt)} | {fmt(pw)} | {fmt(ht)}{star} | {fmt(hw)} |")
        out += ["", "\\* Holm-adjusted paired t p < 0.05.", ""]

    # Random-partition nulls at seed 0.
    null_rows = []
    for fx in fixtures:
        for (q, cell, mi, rnd) in NULLS:
            m = runs.get((fx, cell, mi, 0, None))
            null = [v for k, v in runs.items() if k[:4] == (fx, cell, rnd, 0)]
            if m is None or len(null) < 2:
                continue
            for ds in DATASETS:
                vals = [v["ppl"][ds] for v in null if ds in v["ppl"]]
                x = m["ppl"][ds]
                below = sum(1 for v in vals if v <= x)
                nm, nsd = mean_sd(vals)
                null_rows.append(f"| {fx} | {q} {cell} | {mi} vs {len(vals)} × {rnd} | {ds} | {x:.2f} | {nm:.2f} ± {nsd:.2f} | "
                                 f"{min(vals):.2f} – {max(vals):.2f} | {below + 1} of {len(vals) + 1} | {(below + 1) / (len(vals) + 1):.3f} |")
    if null_rows:
        out += ["## Random-partition nulls (seed 0)", "",
                "The MI arm against random partitions of the same sizes at one calibration seed (the random arm's own "
                "partition at seed 0 and the `--partition-seed` ones): MI's rank (1 = lowest PPL) and the one-sided "
                "permutation p = (1 + #random ≤ MI)/(N + 1).", "",
                "| fixture | question | comparison | dataset | MI PPL | null mean ± sd | null range | MI's rank | p |",
                "|---|---|---|---|---|---|---|---|---|"] + null_rows + [""]

    # The budgets: nominal targets, the uniform setting standing for each, its stored bits.
    NOMINAL = {"P": 2.5, "S1": 3.0, "S2": 2.25, "S3": 2.5}
    budget_rows = []
    for fx in fixtures:
        for cell, nominal in NOMINAL.items():
            u = seeds_of(fx, cell, "U")
            if not u:
                continue
            b = sum(r["bits"]["avg_bits_with_metadata"] for r in u.values()) / len(u)
            budget_rows.append(f"| {fx} | {cell} | {nominal} | {CELLS[cell].split('uniform: ')[1].rstrip(')')} | {b:.4f} | {b - nominal:+.4f} |")
    if budget_rows:
        out += ["## Budgets", "",
                "No uniform setting stores a nominal target exactly; each cell's uniform arm is the one nearest to it "
                "from above among per-row and g32/g64/g128 grids (g128 does not divide fixture B's 192-wide inputs), and "
                "the mixed arms are given its stored bits as --target-avg-bits, so every arm of a cell stores the same "
                "bits (checked below), not the nominal figure.", "",
                "| fixture | cell | nominal | uniform setting | stored bits | gap to nominal |", "|---|---|---|---|---|---|"]
        out += budget_rows + [""]

    # PPL and bits of every arm; the bits check.
    out += ["## Every arm: PPL (mean ± sd over seeds) and stored bits", "",
            "Stored bits = average bits per weight over all quantized linears, scale (fp16) and zero-point metadata "
            "included (the column → group map and a mixed plan's column order are not counted; see scale_groups.rs). "
            "Δ bits: the arm's mean minus the cell's uniform arm; ⚠ marks any run more than 0.01 from its seed's "
            "uniform run.", ""]
    off = []
    for fx in fixtures:
        out += [f"### {fx}", "", "| cell | arm | seeds | " + " | ".join(f"{x} PPL" for x in DATASETS) + " | bits | Δ bits | command |",
                "|---|---|---|" + "---|" * len(DATASETS) + "---|---|---|"]
        for cell in CELLS:
            arms = sorted({k[2] for k in runs if k[0] == fx and k[1] == cell})
            ref = seeds_of(fx, cell, REFERENCE.get(cell, ""))
            for arm in arms:
                rs = seeds_of(fx, cell, arm)
                if not rs:
                    continue
                cells_ = []
                for ds in DATASETS:
                    m, sd = mean_sd([r["ppl"][ds] for r in rs.values() if ds in r["ppl"]])
                    cells_.append(f"{fmt(m, '.2f')} ± {fmt(sd, '.2f')}")
                bits = [r["bits"]["avg_bits_with_metadata"] for r in rs.values() if r["bits"]["quantized"]]
                b = sum(bits) / len(bits) if bits else float("nan")
                delta, flag = float("nan"), ""
                if ref and bits:
                    dl = [rs[s]["bits"]["avg_bits_with_metadata"] - ref[s]["bits"]["avg_bits_with_metadata"]
                          for s in rs if s in ref and ref[s]["bits"]["quantized"]]
                    if dl:
                        delta = sum(dl) / len(dl)
                        if max(abs(x) for x in dl) > 0.01:
                            flag = " ⚠"
                            off.append(f"{fx} {cell} {arm}")
                cmd = cmds.get((fx, cell, arm), "")
                cmd = re.sub(r"^\S*sparsegpt-mi ", "sparsegpt-mi ", cmd)
                cmd = re.sub(r" --json \S+", "", cmd)
                out.append(f"| {cell} | {arm} | {len(rs)} | " + " | ".join(cells_) + f" | {fmt(b, '.4f')} | {fmt(delta, '+.4f')}{flag} | `{cmd}` |")
        out.append("")
    out += ["Bits check: " + ("every quantized arm within 0.01 of its cell's uniform arm, seed by seed." if not off
                              else "off by more than 0.01: " + ", ".join(off)), ""]
    out += ["Cells: " + "; ".join(f"{k} = {v}" for k, v in CELLS.items()) + "."]
    print("\n".join(out))


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--stored-bits":
        print(f"{stored_bits(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])):.6f}")
    else:
        args = sys.argv[1:]
        label = None
        if "--label" in args:
            i = args.index("--label")
            label = args[i + 1]
            del args[i:i + 2]
        main(args[0], label)
