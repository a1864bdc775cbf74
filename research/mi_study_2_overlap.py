#!/usr/bin/env python3
"""Two runs archives of study 2 (issue 30) on the runs they share: which were made again (the
run's JSON differs byte for byte, e.g. its compress time) and whether each such run has the same
PPL on every corpus, zero fraction and stored bits as before (exact equality, as
research/mi_study_2_repro.py checks). Used when a call re-made runs that were already committed.

  research/mi_study_2_overlap.py OLD_ARCHIVE NEW_ARCHIVE [--allow-missing]

Exit status 1 if any re-made run differs, or (without --allow-missing: NEW should hold all of
OLD) a run of OLD is missing from NEW.
"""
import json, sys, tarfile

CORPORA = ("wikitext2", "ptb", "c4")


def outcome(run):
    """What must match for two runs to count as the same: PPL on every corpus, zero fraction,
    stored bits (also research/mi_study_2_repro.py's test)."""
    out = {k: run["ppl"].get(k) for k in CORPORA}
    out["zeros"] = run.get("zero_fraction")
    out["bits"] = (run.get("bits") or {}).get("avg_bits_with_metadata")
    return out


def load(path):
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".json")}


def main():
    old, new = load(sys.argv[1]), load(sys.argv[2])
    allow_missing = "--allow-missing" in sys.argv[3:]
    missing = [] if allow_missing else sorted(set(old) - set(new))
    remade = [n for n in sorted(set(old) & set(new)) if old[n] != new[n]]
    pairs = {n: (outcome(json.loads(old[n])), outcome(json.loads(new[n]))) for n in remade}
    differs = [n for n in remade if pairs[n][0] != pairs[n][1]]
    for n in missing:
        print(f"MISSING  {n}")
    for n in differs:
        print(f"DIFFERS  {n}: {pairs[n][0]} -> {pairs[n][1]}")
    print(f"{len(old)} runs before, {len(new)} in the new archive ({len(set(new) - set(old))} not before); "
          f"{len(remade)} made again, {len(remade) - len(differs)} of them identical in PPL on every corpus, "
          f"zero fraction and stored bits" + ("" if allow_missing else f"; {len(missing)} missing"))
    sys.exit(1 if differs or missing else 0)


if __name__ == "__main__":
    main()
