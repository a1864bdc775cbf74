#!/usr/bin/env python3
"""Side by side: the runs of two builds (old_*.json, new_*.json in one folder, from
`gpu/gpu_run.sh FX compare`): PPL per corpus and whether it is equal to the last digit, zero
fraction, bits; then the two self-check tables."""
import glob, json, os, sys

d = sys.argv[1]
print("| fixture / run | corpus | old PPL | new PPL | equal |")
print("|---|---|---|---|---|")
for new in sorted(glob.glob(os.path.join(d, "new_*.json"))):
    name = os.path.basename(new)[4:-5]
    if name == "selfcheck":
        continue
    old = os.path.join(d, "old_" + name + ".json")
    if not os.path.exists(old):
        print(f"| {name} | – | missing | | |")
        continue
    a, b = json.load(open(old)), json.load(open(new))
    for c in sorted(b["ppl"]):
        print(f"| {name} | {c} | {a['ppl'][c]!r} | {b['ppl'][c]!r} | {'yes' if a['ppl'][c] == b['ppl'][c] else 'NO'} |")
    print(f"| {name} | zero fraction, bits | {a['zero_fraction']!r}, {a['bits']['avg_bits_with_metadata']!r} "
          f"| {b['zero_fraction']!r}, {b['bits']['avg_bits_with_metadata']!r} | "
          f"{'yes' if (a['zero_fraction'], a['bits']) == (b['zero_fraction'], b['bits']) else 'NO'} |")
for v in ["old", "new"]:
    p = os.path.join(d, f"{v}_selfcheck.md")
    if os.path.exists(p):
        print(f"\nself-check, {v} build:\n")
        print(open(p).read())
