#!/usr/bin/env python3
"""Does another build reproduce study 2's committed runs exactly? Re-runs a sample of a runs
archive's JSONs (one per arm of each cell at the lowest seed present) with BIN, each with the
exact flags its JSON's `command` records (binary, fixture and data paths and the JSON path
replaced), and compares PPL on every corpus, the zero fraction and the stored bits for exact
equality. A build that reproduces every sampled run may continue the study under the same label;
one that does not starts a new label (the study's arms must come from one build).

  research/mi_study_2_repro.py BIN ARCHIVE FIXTURE_DIR DATA_DIR OUT [--jobs 8] [--per-cell 99] [--dry-run]

Exit status 1 if any sampled run differs or fails.
"""
import argparse, concurrent.futures as cf, json, os, re, shlex, subprocess, sys, tarfile

from mi_study_2_overlap import outcome

ap = argparse.ArgumentParser()
ap.add_argument("bin")
ap.add_argument("archive")
ap.add_argument("fixture_dir", help="folder holding the fixture (named as in the archive)")
ap.add_argument("data_dir")
ap.add_argument("out")
ap.add_argument("--jobs", type=int, default=8)
ap.add_argument("--per-cell", type=int, default=99, help="at most this many arms per cell")
ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
a = ap.parse_args()
os.makedirs(a.out, exist_ok=True)
runs = {}
with tarfile.open(a.archive) as tar:
    for m in tar.getmembers():
        if m.name.endswith(".json"):
            runs[m.name] = json.load(tar.extractfile(m))
# name: FIXTURE/CELL__ARM__sSEED[__pP].json; sample one per (cell, arm) at the lowest seed.
chosen = {}
for name in sorted(runs):
    mo = re.fullmatch(r"(.+)/([^_/]+)__([^_]+)__s(\d+)\.json", name)
    if not mo:
        continue
    fx, cell, arm, seed = mo.group(1), mo.group(2), mo.group(3), int(mo.group(4))
    key = (fx, cell, arm)
    if key not in chosen or seed < chosen[key][0]:
        chosen[key] = (seed, name)
per_cell = {}
sample = []
for (fx, cell, arm), (seed, name) in sorted(chosen.items()):
    if per_cell.get((fx, cell), 0) < a.per_cell:
        per_cell[(fx, cell)] = per_cell.get((fx, cell), 0) + 1
        sample.append(name)


def rerun(name):
    old = runs[name]
    argv = shlex.split(old["command"])
    fx = name.split("/")[0]
    out_json = os.path.join(a.out, name.replace("/", "__"))
    new = [a.bin]
    i = 1
    while i < len(argv):
        tok = argv[i]
        if tok == "--json":
            new += [tok, out_json]; i += 2; continue
        if tok == "--data-dir":
            new += [tok, a.data_dir]; i += 2; continue
        if tok.endswith("/" + fx):
            new.append(os.path.join(a.fixture_dir, fx)); i += 1; continue
        new.append(tok); i += 1
    if a.dry_run:
        return name, True, shlex.join(new)
    p = subprocess.run(new, capture_output=True, text=True)
    if p.returncode != 0:
        return name, False, f"exit {p.returncode}: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ''}"
    was, now = outcome(old), outcome(json.load(open(out_json)))
    diffs = [f"{k} {was[k]} -> {now[k]}" for k in was if was[k] != now[k]]
    return name, not diffs, "; ".join(diffs) or "identical"


bad = 0
with cf.ThreadPoolExecutor(a.jobs) as ex:
    for name, ok, msg in ex.map(rerun, sample):
        bad += not ok
        print(f"{'would run' if a.dry_run else 'same' if ok else 'DIFFERS'}  {name}: {msg}", flush=True)
if a.dry_run:
    sys.exit(0)
print(f"\n{len(sample) - bad} of {len(sample)} sampled runs reproduced exactly by {a.bin}")
sys.exit(1 if bad else 0)
