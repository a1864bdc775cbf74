#!/usr/bin/env python3
"""Tables of research/mi_study_2.sh's runs (issue 30: studies S1 and S2), standard library only.

    mi_study_2_table.py DIR [--label TEXT]                     markdown on stdout
    mi_study_2_table.py runs_A.tar.xz runs_C.tar.xz [--label TEXT]   the same over runs archives

The endpoints, corrections and decision rules are fixed in test_results/mi_study_2.md (the plan);
this script computes them:
- per seed s, the composite of "A vs B" over a set of (fixture, cell, K, corpus) is the mean of
  ln(PPL_A,s / PPL_B,s) over it; shown as 100·(e^mean − 1) % (negative: A better);
- primary: MI vs R and MId vs Rd at D4 and S50, composite over fixtures C and A, K 4 and 8 and the
  three corpora: paired t-test over the seeds (two-sided), Holm over these 4 tests;
- secondary: every other comparison, per fixture and cell (composite over corpora, and per corpus);
- Benjamini–Hochberg q over every p-value (paired t) in the document, primary ones included;
- stored bits per run, scale/zero metadata and the column → group map (⌈log₂ K⌉ per input column,
  where a plan has K > 1 groups or act-order reorders groups; group-aware act-order does not)
  counted; the bits check: every
  mixed arm at most its seed's uniform arm (U) and within 0.02;
- the decisions of issue 30's item 4, evaluated mechanically from the rows above (a rule whose
  every-cell clause already fails on a comparison with all its seeds made is decided before the
  other runs: those cannot rescue it);
- the cost model's check (runs with --bit-objective cost-model): per linear, planned / measured
  OBS loss; the compress time (times.total_s) per arm."""
import glob, json, math, os, re, sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mi_study_table import betainc, fmt, holm, mean_sd, paired_t, wilcoxon  # noqa: E402

DATASETS = ["wikitext2", "ptb", "c4"]
CELLS = {
    "D4": "dense, 4-bit per row",
    "D3": "dense, 3-bit per row",
    "S50": "50% unstructured + 4-bit per row (the user's setting)",
    "G3": "dense, 3-bit g128 (fixture B: g64)",
    "G4": "dense, 4-bit g128 (fixture B: g64)",
    "N24": "2:4, no quantization",
    "N24Q": "2:4 + 4-bit per row",
}
S1_FIXTURES = ["opt-mini-c", "opt-mini-a"]
FULL_SEEDS = 10  # the plan's seeds per arm (test_results/mi_study_2.md)
PRIMARY = [("MI", "R", "D4"), ("MI", "R", "S50"), ("MId", "Rd", "D4"), ("MId", "Rd", "S50")]
# (study, cells, A, B, K-suffixed?, what it isolates)
SECONDARY = [
    ("S1", ["D4", "D3", "S50"], "MI", "R", True, "MI vs random groups of MI's sizes (no discount), per fixture"),
    ("S1", ["D4", "D3", "S50"], "MId", "Rd", True, "the same with the redundancy discount, per fixture"),
    ("S1", ["D4", "D3", "S50"], "MI", "E", True, "MI vs importance-rank groups"),
    ("S1", ["D4", "D3", "S50"], "MI", "U", True, "MI mixed bits vs uniform bits"),
    ("S1", ["D4", "D3", "S50"], "MI", "Uact", True, "MI mixed bits vs uniform act-order"),
    ("S1", ["D4", "D3", "S50"], "MId", "Uact", True, "MI with the discount vs uniform act-order (the MId verdicts)"),
    ("S1", ["D4", "D3", "S50"], "MId", "MI", True, "the redundancy discount on MI groups"),
    ("S1", ["D4", "D3", "S50"], "Rd", "R", True, "the redundancy discount on random groups"),
    ("S1", ["D4", "D3", "S50"], "E", "U", True, "importance-rank mixed bits vs uniform"),
    ("S2", ["D4", "D3", "G3", "G4", "S50"], "Uact", "U", False, "act-order"),
    ("S2", ["G3", "G4"], "Uact_st", "U", False, "act-order with static groups (the proposed default with --groupsize)"),
    ("S2", ["G3", "G4"], "Uact_st", "Uact", False, "static vs dynamic groups under act-order"),
    ("S2", ["D4", "D3", "G3", "G4", "S50"], "Upd", "U", False, "--percdamp 0.05 vs 0.01"),
    ("S2", ["D4", "D3", "G3", "G4", "S50"], "Uact_pd", "Uact", False, "--percdamp 0.05 under act-order"),
    ("S2", ["D4", "D3", "G3", "G4", "S50"], "Uts", "U", False, "true-sequential"),
    ("S2", ["G3", "G4"], "Uga", "Uact_st", False, "group-aware act-order vs static groups in act-order"),
    ("S2", ["G3", "G4"], "Uga", "Uact", False, "group-aware vs dynamic groups (the published act-order with --groupsize)"),
    ("S2", ["G3", "G4"], "Upeer", "U", False, "the peer's defaults (0.05, true-sequential, group-aware act-order)"),
    ("S2", ["N24", "N24Q"], "Nmag", "N", False, "magnitude channel sets vs consecutive for 2:4"),
]
MIXED = re.compile(r"^(MI|MId|R|Rd|E)(\d+)$")


def load(d):
    runs, cmds = {}, {}
    for p in sorted(glob.glob(os.path.join(d, "*", "*.json"))):
        m = re.match(r"([A-Z0-9]+)__([A-Za-z0-9_]+)__s(\d+)(?:__p(\d+))?\.json$", os.path.basename(p))
        if not m:
            continue
        fx = os.path.basename(os.path.dirname(p))
        j = json.load(open(p))
        runs[(fx, m.group(1), m.group(2), int(m.group(3)), None if m.group(4) is None else int(m.group(4)))] = j
        cmds.setdefault((fx, m.group(1), m.group(2)), j.get("command", ""))
    return runs, cmds


def map_bits(cols, k):
    return 0.0 if k <= 1 else cols * math.ceil(math.log2(k))


def stored(run):
    """(bits with metadata, the same with the column map, permutation bits per weight or None)."""
    if not run["bits"]["quantized"]:
        return float("nan"), float("nan"), None
    args = run.get("args", {})
    tot = meta = mp = perm = 0.0
    any_perm = False
    for lin in run["linears"]:
        n = lin["rows"] * lin["cols"]
        tot += n
        meta += (lin["avg_bits_with_metadata"] or 0.0) * n
        plan = lin.get("plan") or {}
        if "group_sizes" in plan:
            k = sum(1 for s in plan["group_sizes"] if s > 0)
        elif "k" in plan:
            k = plan["k"]
        elif (args.get("act_order") and args.get("groupsize", -1) > 0 and not args.get("act_group_aware")
              and args.get("act_groups", "dynamic") == "dynamic"):
            # Act-order's groups are runs of the sweep order (a g_idx); group-aware act-order
            # keeps the natural groups (none needed).
            k = math.ceil(lin["cols"] / args["groupsize"])
        else:
            k = 1
        mp += map_bits(lin["cols"], k)
        if plan.get("order") == "mixed" or args.get("act_order"):
            any_perm = True
            perm += lin["cols"] * math.ceil(math.log2(lin["cols"]))
    return meta / tot, (meta + mp) / tot, (perm / tot if any_perm else None)


def t_quantile(dof, p=0.05):
    """The two-sided critical t for level p (bisection on the t-test's p-value)."""
    lo, hi = 0.0, 1000.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if betainc(dof / 2, 0.5, dof / (dof + mid * mid)) > p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def bh(ps):
    """Benjamini–Hochberg q-values (NaN stay NaN and do not count)."""
    idx = sorted((i for i, p in enumerate(ps) if not math.isnan(p)), key=lambda i: ps[i])
    m = len(idx)
    out = [float("nan")] * len(ps)
    running = 1.0
    for rank in range(m - 1, -1, -1):
        i = idx[rank]
        running = min(running, ps[i] * m / (rank + 1))
        out[i] = running
    return out


def pct(x):
    return 100 * (math.exp(x) - 1)


class Study:
    def __init__(self, runs):
        self.runs = runs

    def seeds(self, fx, cell, arm):
        return {k[3]: v for k, v in self.runs.items() if k[:3] == (fx, cell, arm) and k[4] is None}

    def composite(self, a, b, units, datasets=DATASETS):
        """Per seed present in every unit: the mean ln(PPL_A/PPL_B) over units × datasets."""
        per_seed = defaultdict(list)
        seed_sets = []
        for (fx, cell, ka, kb) in units:
            ra, rb = self.seeds(fx, cell, ka), self.seeds(fx, cell, kb)
            common = set(ra) & set(rb)
            seed_sets.append(common)
            for s in common:
                for ds in datasets:
                    if ds in ra[s]["ppl"] and ds in rb[s]["ppl"]:
                        per_seed[s].append(math.log(ra[s]["ppl"][ds] / rb[s]["ppl"][ds]))
        if not seed_sets:
            return []
        common = set.intersection(*seed_sets)
        return [sum(per_seed[s]) / len(per_seed[s]) for s in sorted(common) if per_seed[s]]


def summary(d):
    """(n, mean %, CI low %, CI high %, t, p (t), p (W)) of log differences d."""
    n = len(d)
    m, sd = mean_sd(d)
    t, p = paired_t(d)
    if n >= 2 and not math.isnan(sd):
        half = t_quantile(n - 1) * sd / math.sqrt(n)
        lo, hi = pct(m - half), pct(m + half)
    else:
        lo = hi = float("nan")
    return n, pct(m) if n else float("nan"), lo, hi, t, p, wilcoxon(d) if n else float("nan")


S2_FIXTURES = ["opt-mini-a", "opt-mini-b", "opt-mini-c"]
# The peer's defaults (the plan's last rule): each arm judged against the arm it changes, under the
# act-order rule's thresholds: C ≥ 1% better at G3 or D3, and no cell of any fixture worse by > 0.5%.
PEER_RULES = [("Upd", "U", "`--percdamp 0.05`"), ("Uact_pd", "Uact", "`--percdamp 0.05` under act-order"),
              ("Uts", "U", "`--true-sequential`"), ("Uga", "Uact_st", "group-aware act-order (`--act-group-aware`)")]


def peer_default_decisions(secd):
    """The plan's rule for the peer's defaults, per arm: decided once every cell is complete, or
    earlier where a complete cell already fails it; otherwise where each clause stands so far."""
    out = []
    for a, b, name in PEER_RULES:
        cells = next(c for _, c, aa, bb, _, _ in SECONDARY if (aa, bb) == (a, b))
        rows = {(fx, cell): secd.get((fx, cell, a, b)) for fx in S2_FIXTURES for cell in cells}
        made = {k: v for k, v in rows.items() if v}
        complete = {k: v for k, v in made.items() if v[0] >= FULL_SEEDS}
        gain_keys = [k for k in rows if k[0] == "opt-mini-c" and k[1] in ("G3", "D3")]
        gain = {k: made[k] for k in gain_keys if k in made}
        best = min(gain.items(), key=lambda kv: kv[1][1], default=None)
        worst = max(made.items(), key=lambda kv: kv[1][1], default=None)
        gains, no_worse = bool(best) and best[1][1] <= -1.0, not worst or worst[1][1] <= 0.5
        gain_txt = (f"C {best[0][1]} {fmt(best[1][1], '+.2f')}% (CI {fmt(best[1][2], '+.2f')} … "
                    f"{fmt(best[1][3], '+.2f')})" if best else "C: no run")
        worst_txt = f"worst cell {worst[0][0]} {worst[0][1]} {fmt(worst[1][1], '+.2f')}%" if worst else "no cell"
        failed = max(((k, v) for k, v in complete.items() if v[1] > 0.5), key=lambda kv: kv[1][1], default=None)
        c_done = all(k in complete for k in gain_keys)
        missing = [f"{fx} {cell}" for (fx, cell) in rows if (fx, cell) not in complete]
        if failed:
            (fx, cell), v = failed
            verdict = (f"**keep the published default** (decided: {fx} {cell} {fmt(v[1], '+.2f')}% with all "
                       f"{FULL_SEEDS} seeds, needs ≤ +0.5% in every cell)")
        elif c_done and not gains:
            verdict = "**keep the published default** (decided: C ≥ 1% better at G3 or D3 is needed, and C is complete)"
        elif not missing:
            verdict = f"**{'make it the default' if gains and no_worse else 'keep the published default'}**"
        else:
            verdict = (f"**pending** ({'passes' if gains and no_worse else 'fails'} so far); cells not complete: "
                       + ", ".join(missing))
        out.append(f"- {name} (the plan's rule for the peer's defaults; {a} vs {b}): {gain_txt}; {worst_txt} → {verdict}.")
    return out


def main(d, label):
    runs, cmds = load(d)
    st = Study(runs)
    fixtures = sorted({k[0] for k in runs})
    out = ["# Issue 30's studies S1 and S2: MI where mixed bits have room, and the defaults", ""]
    if label:
        out += [f"**{label}**", ""]
    planned = missing = 0
    # Each fixture's folder holds its own plan.tsv (the runs of several calls and fixtures are
    # unpacked side by side); a plan at the top is read only where no fixture has one.
    plans = sorted(glob.glob(os.path.join(d, "*", "plan.tsv"))) or [os.path.join(d, "plan.tsv")]
    for plan in filter(os.path.exists, plans):
        rows = [l.rstrip("\n").split("\t") for l in open(plan) if l.strip()]
        planned += len(rows)
        missing += sum(1 for r in rows if not os.path.exists(os.path.join(d, r[1], os.path.basename(r[5]))))
    out += [f"Made by `research/mi_study_2.sh`; {len(runs)} runs read, {planned} planned, {missing} planned runs "
            "missing. Composite = mean of ln(PPL_A/PPL_B) per seed over the units named, shown as "
            "100·(e^mean − 1) %; negative: A better. t = paired t-test over seeds (two-sided), 95% CI from it; "
            "W = exact Wilcoxon signed-rank; Holm over the 4 primary tests; BH q over every p (t) in this document.", ""]

    tests = []  # every (section, row-cells, p) for BH, filled in order; rendered after BH
    # Primary.
    prim = []
    for a, b, cell in PRIMARY:
        units = [(fx, cell, f"{a}{k}", f"{b}{k}") for fx in S1_FIXTURES for k in (4, 8)]
        prim.append((a, b, cell, summary(st.composite(a, b, units))))
    holm_p = holm([r[3][5] for r in prim])
    # Secondary.
    sec = []
    for study, cells, a, b, by_k, what in SECONDARY:
        for fx in fixtures:
            for cell in cells:
                for k in ((4, 8) if by_k else (None,)):
                    ka, kb = (f"{a}{k}" if by_k else a), (f"{b}{k}" if by_k and MIXED.match(f"{b}{k}") else b)
                    if not st.seeds(fx, cell, ka) or not st.seeds(fx, cell, kb):
                        continue
                    comp = summary(st.composite(ka, kb, [(fx, cell, ka, kb)]))
                    per_ds = [summary(st.composite(ka, kb, [(fx, cell, ka, kb)], [ds])) for ds in DATASETS]
                    sec.append((study, fx, cell, ka, kb, comp, per_ds, what))
    all_p = [r[3][5] for r in prim] + [r[5][5] for r in sec] + [x[5] for r in sec for x in r[6]]
    q = bh(all_p)
    qi = iter(q)
    q_prim = [next(qi) for _ in prim]
    q_sec = [next(qi) for _ in sec]
    q_ds = [[next(qi) for _ in DATASETS] for _ in sec]

    out += ["## Primary endpoints (pre-stated)", "",
            "Composite over fixtures C and A, K = 4 and 8, and the three corpora; paired over seeds.", "",
            "| comparison | cell | n | composite % | 95% CI | t | p (t) | p (W) | Holm p | BH q |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for (a, b, cell, s), h, qq in zip(prim, holm_p, q_prim):
        n, m, lo, hi, t, p, w = s
        star = " *" if not math.isnan(h) and h < 0.05 else ""
        out.append(f"| {a} vs {b} | {cell} | {n} | {fmt(m, '+.2f')} | {fmt(lo, '+.2f')} … {fmt(hi, '+.2f')} | "
                   f"{fmt(t, '+.2f')} | {fmt(p)} | {fmt(w)} | {fmt(h)}{star} | {fmt(qq)} |")
    out += ["", "\\* Holm-adjusted p < 0.05.", ""]

    out += ["## Secondary comparisons", "",
            "| study | fixture | cell | comparison | n | composite % | 95% CI | p (t) | BH q | " +
            " | ".join(f"{ds} %" for ds in DATASETS) + " | what |",
            "|---|---|---|---|---|---|---|---|---|" + "---|" * len(DATASETS) + "---|"]
    for (study, fx, cell, ka, kb, comp, per_ds, what), qq, qd in zip(sec, q_sec, q_ds):
        n, m, lo, hi, t, p, w = comp
        ds_cells = [f"{fmt(x[1], '+.2f')} (q {fmt(y, '.2f')})" for x, y in zip(per_ds, qd)]
        star = " †" if not math.isnan(qq) and qq < 0.05 else ""
        out.append(f"| {study} | {fx} | {cell} | {ka} vs {kb} | {n} | {fmt(m, '+.2f')} | {fmt(lo, '+.2f')} … "
                   f"{fmt(hi, '+.2f')} | {fmt(p)} | {fmt(qq)}{star} | " + " | ".join(ds_cells) + f" | {what} |")
    out += ["", "† BH q < 0.05 over the whole document.", ""]

    # Nulls.
    null_rows = []
    for fx in S1_FIXTURES:
        for cell in ("D4", "S50"):
            for arm, ref in (("MI", "R"), ("MId", "Rd")):
                for k in (4, 8):
                    for seed in range(10):
                        null = [v for kk, v in runs.items() if kk[:4] == (fx, cell, f"{ref}{k}", seed)]
                        m = runs.get((fx, cell, f"{arm}{k}", seed, None))
                        if m is None or len(null) < 2:
                            continue
                        comp = lambda r: sum(math.log(r["ppl"][ds]) for ds in DATASETS) / len(DATASETS)
                        vals = [comp(v) for v in null]
                        x = comp(m)
                        below = sum(1 for v in vals if v <= x)
                        null_rows.append(f"| {fx} | {cell} | {arm}{k} vs {len(vals)} × {ref}{k} | {seed} | "
                                         f"{below + 1} of {len(vals) + 1} | {(below + 1) / (len(vals) + 1):.3f} |")
    if null_rows:
        out += ["## Random-partition nulls", "",
                "The MI arm's composite log-PPL (mean over the corpora) against random partitions of the same sizes "
                "at one seed; rank 1 = lowest; one-sided permutation p = (1 + #random ≤ MI)/(N + 1).", "",
                "| fixture | cell | comparison | seed | MI's rank | p |", "|---|---|---|---|---|---|"] + null_rows + [""]

    # Decisions of item 4.
    out += ["## Decisions (issue 30, item 4, rules as pre-stated in test_results/mi_study_2.md)", ""]
    secd = {(r[1], r[2], r[3], r[4]): r[5] for r in sec}

    def get(fx, cell, a, b):
        return secd.get((fx, cell, a, b))

    # Act-order: C improves ≥ 1% at 3 bits (D3 per row; G3 with static groups), no cell worse by > 0.5%.
    c3 = [get("opt-mini-c", "D3", "Uact", "U"), get("opt-mini-c", "G3", "Uact_st", "U")]
    worst = [(fx, cell, s) for (fx, cell, a, b), s in secd.items()
             if (a, b) in (("Uact", "U"), ("Uact_st", "U")) and (cell in ("D4", "D3", "S50") or a == "Uact_st")]
    if all(c3) and worst:
        ok3 = all(s[1] <= -1.0 for s in c3)
        wfx, wcell, ws = max(worst, key=lambda x: x[2][1])
        ok_all = ws[1] <= 0.5
        out.append(f"- **--act-order default** (static groups with --groupsize): C at 3 bits {', '.join(fmt(s[1], '+.2f') + '%' for s in c3)} "
                   f"(needs ≤ −1%: {'yes' if ok3 else 'no'}); worst cell {(wfx, wcell)} "
                   f"{fmt(ws[1], '+.2f')}% (needs ≤ +0.5%: {'yes' if ok_all else 'no'}) → "
                   f"**{'make it the default' if ok3 and ok_all else 'keep the published default'}**.")
    else:
        # An all-cells clause that already fails on a comparison with every seed made cannot be
        # rescued by the runs still missing: the rule is decided.
        failed = [w for w in worst if w[2][0] >= FULL_SEEDS and w[2][1] > 0.5]
        if failed:
            fx, cell, s = max(failed, key=lambda x: x[2][1])
            out.append(f"- **--act-order default**: decided before every run is made: {fx} {cell} has all "
                       f"{FULL_SEEDS} seeds at {fmt(s[1], '+.2f')}% (CI {fmt(s[2], '+.2f')} … {fmt(s[3], '+.2f')}; "
                       "needs ≤ +0.5% in every cell) → **keep the published default** (the missing runs cannot "
                       "change it).")
        else:
            out.append("- --act-order default: not decidable yet (runs missing).")
    # 2:4 magnitude sets: C improves ≥ 2% at 2:4 + 4-bit, no regression (mean ≤ 0) on A and B.
    cn = get("opt-mini-c", "N24Q", "Nmag", "N")
    ab = [get(fx, cell, "Nmag", "N") for fx in ("opt-mini-a", "opt-mini-b") for cell in ("N24", "N24Q")]
    if cn and all(ab):
        okc, okab = cn[1] <= -2.0, all(s[1] <= 0.0 for s in ab)
        out.append(f"- **--nm-permutation magnitude default for n:m**: C at 2:4 + 4-bit {fmt(cn[1], '+.2f')}% (needs ≤ −2%: "
                   f"{'yes' if okc else 'no'}); A/B {', '.join(fmt(s[1], '+.2f') + '%' for s in ab)} (needs ≤ 0: "
                   f"{'yes' if okab else 'no'}) → **{'make it the default' if okc and okab else 'keep none'}**.")
    elif (c_fails := bool(cn) and cn[0] >= FULL_SEEDS and cn[1] > -2.0) or any(
            s and s[0] >= FULL_SEEDS and s[1] > 0.0 for s in ab):
        why = (f"C at 2:4 + 4-bit has all {FULL_SEEDS} seeds at {fmt(cn[1], '+.2f')}% (needs ≤ −2%)"
               if c_fails else "a complete A/B cell regresses (needs ≤ 0)")
        out.append(f"- **--nm-permutation magnitude default for n:m**: decided before every run is made: {why} → "
                   "**keep none** (the missing runs cannot change it).")
    else:
        out.append("- --nm-permutation default: not decidable yet (runs missing)"
                   + (f"; so far C at 2:4 + 4-bit {fmt(cn[1], '+.2f')}% (CI {fmt(cn[2], '+.2f')} … "
                      f"{fmt(cn[3], '+.2f')}, n = {cn[0]} of {FULL_SEEDS}; needs ≤ −2%)." if cn else "."))
    out += peer_default_decisions(secd)
    # MI per regime: recommended if it beats R by ≥ 2% and Uact; not recommended where the CI excludes −2%.
    for fx in S1_FIXTURES:
        for cell in ("D4", "D3", "S50"):
            for arm, ref in (("MI", "R"), ("MId", "Rd")):
                for k in (4, 8):
                    vr, vu = get(fx, cell, f"{arm}{k}", f"{ref}{k}"), get(fx, cell, f"{arm}{k}", "Uact")
                    if not vr or not vu:
                        continue
                    if vr[1] <= -2.0 and vu[1] < 0:
                        verdict = "recommended"
                    elif not math.isnan(vr[2]) and vr[2] > -2.0:
                        verdict = "not recommended (the CI excludes −2% vs random)"
                    else:
                        verdict = "undecided (the CI includes −2%)"
                        if not math.isnan(vu[2]) and vu[2] > 0.0:
                            verdict = ("undecided vs random (the CI includes −2%), yet not recommendable: "
                                       "worse than uniform act-order (its CI above 0)")
                    n = min(vr[0], vu[0])
                    if n < FULL_SEEDS:
                        verdict += f"; interim: {n} of {FULL_SEEDS} seeds"
                    out.append(f"- MI ({arm}{k}) on {fx} {cell}: vs {ref}{k} {fmt(vr[1], '+.2f')}% "
                               f"(CI {fmt(vr[2], '+.2f')} … {fmt(vr[3], '+.2f')}), vs Uact {fmt(vu[1], '+.2f')}% → **{verdict}**.")
    out.append("")

    # Bits, PPL, times, the cost model's check.
    out += ["## Every arm: PPL, stored bits, compress time", "",
            "Stored bits: scale/zero metadata included; + map: the column → group map too (⌈log₂ K⌉ bits per input "
            "column per linear, where K > 1 groups or act-order reorders groups); perm: a column permutation "
            "instead (⌈log₂ cols⌉ per column), where the arm sweeps in another order. ⚠: a mixed arm above its "
            "seed's U (+ map) or more than 0.02 below it.", ""]
    off = []
    for fx in fixtures:
        out += [f"### {fx}", "", "| cell | arm | seeds | " + " | ".join(f"{x} PPL" for x in DATASETS) +
                " | bits | + map | perm | compress s | command |", "|---|---|---|" + "---|" * len(DATASETS) + "---|---|---|---|---|"]
        for cell in CELLS:
            arms = sorted({k[2] for k in runs if k[0] == fx and k[1] == cell})
            ref = st.seeds(fx, cell, "U")
            for arm in arms:
                rs = st.seeds(fx, cell, arm)
                if not rs:
                    continue
                ppl = []
                for ds in DATASETS:
                    m, sd = mean_sd([r["ppl"][ds] for r in rs.values() if ds in r["ppl"]])
                    ppl.append(f"{fmt(m, '.2f')} ± {fmt(sd, '.2f')}")
                bits = [stored(r) for r in rs.values()]
                b = sum(x[0] for x in bits) / len(bits)
                bm = sum(x[1] for x in bits) / len(bits)
                perms = [x[2] for x in bits if x[2] is not None]
                flag = ""
                if MIXED.match(arm) and ref:
                    for s, r in rs.items():
                        if s in ref:
                            d = stored(r)[1] - stored(ref[s])[0]
                            if d > 1e-9 or d < -0.02:
                                flag = " ⚠"
                    if flag:
                        off.append(f"{fx} {cell} {arm}")
                secs, _ = mean_sd([r["times"]["total_s"] for r in rs.values()])
                cmd = re.sub(r" --json \S+", "", re.sub(r"^\S*sparsegpt-mi ", "sparsegpt-mi ", cmds.get((fx, cell, arm), "")))
                out.append(f"| {cell} | {arm} | {len(rs)} | " + " | ".join(ppl) + f" | {fmt(b, '.4f')} | {fmt(bm, '.4f')}{flag} | "
                           f"{fmt(sum(perms) / len(perms), '.4f') if perms else '–'} | {fmt(secs, '.1f')} | `{cmd}` |")
        out.append("")
    out += ["Bits check: " + ("every mixed arm stores, map included, at most its seed's uniform arm and within 0.02 of it."
                              if not off else "off: " + ", ".join(off)), ""]

    model = defaultdict(list)
    for (fx, cell, arm, seed, p), r in runs.items():
        for lin in r["linears"]:
            cm = (lin.get("plan") or {}).get("cost_model")
            if cm and lin["loss"] > 0:
                ins, uni = cm.get("planned_loss_in_sweep"), cm.get("uniform_planned_loss_in_sweep")
                unif = cm.get("uniform_planned_loss")
                model[(fx, cell, arm)].append((cm["planned_loss"] / lin["loss"],
                                               (ins or float("nan")) / lin["loss"],
                                               ins / uni if ins and uni else float("nan"),
                                               float("nan") if not unif else float(cm["planned_loss"] > unif)))
    if model:
        def quart(v):
            v = sorted(x for x in v if not math.isnan(x))
            if not v:
                return "–"
            q = lambda f: v[min(len(v) - 1, int(f * len(v)))]
            return f"{q(0.5):.2f} [{q(0.25):.2f}, {q(0.75):.2f}]"
        out += ["## The cost model against the solves", "",
                "Per linear: the planned loss over the solve's measured OBS loss, median [quartiles] over linears "
                "and seeds; with the --importance factors, and with the solver's own factors in its sweep order; "
                "and the plan's expected loss over the uniform scheme's (both in their sweep orders): below 1, the "
                "model expects the mixed plan to lose less than uniform bits; and the share of linears whose "
                "mixed plan the allocator's own objective (the --importance factors) rates worse than the uniform "
                "scheme it replaces. In S50 the measured loss includes the pruning error, which the model does not "
                "plan.", "",
                "| fixture | cell | arm | linears | planned / measured | in sweep / measured | plan / uniform (model) "
                "| plan worse than uniform (objective) |",
                "|---|---|---|---|---|---|---|---|"]
        for (fx, cell, arm), v in sorted(model.items()):
            worse = [x[3] for x in v if not math.isnan(x[3])]
            out.append(f"| {fx} | {cell} | {arm} | {len(v)} | {quart([x[0] for x in v])} | {quart([x[1] for x in v])} | "
                       f"{quart([x[2] for x in v])} | {f'{100 * sum(worse) / len(worse):.0f}%' if worse else '–'} |")
        out.append("")
    out += ["Cells: " + "; ".join(f"{k} = {v}" for k, v in CELLS.items()) + "."]
    print("\n".join(out))


if __name__ == "__main__":
    args = sys.argv[1:]
    label = None
    if "--label" in args:
        i = args.index("--label")
        label = args[i + 1]
        del args[i:i + 2]
    if not args:
        sys.exit("usage: mi_study_2_table.py DIR | RUNS_ARCHIVE.tar.xz... [--label TEXT]")
    if len(args) == 1 and os.path.isdir(args[0]):
        main(args[0], label)
    else:
        # Runs archives (test_results/mi_study_2/runs_FIXTURE.tar.xz, one per fixture): each
        # fixture's folder side by side in one temporary folder, the layout of a device's study folder.
        import tarfile, tempfile
        with tempfile.TemporaryDirectory() as tmp:
            for a in args:
                with tarfile.open(a) as tar:
                    tar.extractall(tmp, members=[m for m in tar.getmembers() if "/" in m.name],
                                   **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
            main(tmp, label)
