"""The psim-eval tables of the README and docs/evaluation.md, read from `make eval`'s folders (nothing recomputed).

    python bench/eval_table.py [outputs/eval/sub-01 outputs/eval/sub-02 ...] [--json FILE]

Prints, per decoder (the first phosphene model), every row's percept 2-way, embedding top-1, signal
2-way and normalised Pearson with their 95 % intervals, one column per subject, and the paired
percept 2-way comparisons the verdicts rest on (each row against the floor and the truth).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prosthesis_sim.eval.tables import read_csv  # noqa: E402

METRICS = (("percept_2way", "percept 2-way"), ("top1", "embedding top-1"), ("signal_2way", "signal 2-way"),
           ("norm_pearson", "norm. Pearson"))


def fmt(row: dict, key: str) -> str:
    value, lo, hi = row.get(key), row.get(f"{key}_lo"), row.get(f"{key}_hi")
    if not isinstance(value, float) or value != value:
        return "—"
    return f"{value:.2f} [{lo:.2f}, {hi:.2f}]" if isinstance(lo, float) and lo == lo else f"{value:.2f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--json", type=Path, help="also write the rows and comparisons as JSON")
    args = parser.parse_args(argv)
    folders = args.folders or sorted(Path("outputs/eval").glob("sub-*"))
    if not folders:
        parser.error("no psim-eval folders (run make eval first)")
    runs = {f.name: (read_csv(f / "results.csv"), read_csv(f / "comparisons.csv")) for f in folders}
    subjects = list(runs)
    first_rows = next(iter(runs.values()))[0]
    phosphene = first_rows[0]["phosphene"]
    n = int(first_rows[0]["n_images"])
    print(f"psim-eval, {phosphene}, {n} test images per subject ({', '.join(subjects)}); 95 % intervals over images\n")
    for decoder in dict.fromkeys(r["decoder"] for r in first_rows):
        print(f"decoder `{decoder}`\n")
        head = ["encoder"] + [f"{title} ({s})" for _, title in METRICS for s in subjects] + ["above truth"]
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        for enc in dict.fromkeys(r["encoder"] for r in first_rows):
            cells = [enc]
            flags = []
            for key, _ in METRICS:
                for s in subjects:
                    row = next((r for r in runs[s][0] if (r["encoder"], r["decoder"], r["phosphene"]) ==
                                (enc, decoder, phosphene)), None)
                    cells.append(fmt(row, key) if row else "—")
            for s in subjects:
                row = next((r for r in runs[s][0] if (r["encoder"], r["decoder"], r["phosphene"]) ==
                            (enc, decoder, phosphene)), {})
                flags.append("bound" if enc.startswith("thumbnail_") else
                             ("**yes**" if row.get("above_truth") == "true" else "no"))
            print("| " + " | ".join(cells + [" / ".join(flags)]) + " |")
        print()
    print("paired percept 2-way differences (a - b [95 % interval]), per subject\n")
    print("| decoder | a - b | " + " | ".join(subjects) + " |\n|---|---|" + "---|" * len(subjects))
    floor = first_rows[0]["floor"]
    keys = []
    for c in next(iter(runs.values()))[1]:
        if c["metric"] == "percept_2way" and c["phosphene"] == phosphene and c["encoder_b"] in (floor, "truth") \
                and not c["encoder_a"].startswith("thumbnail_") and c["encoder_a"] != floor:
            keys.append((c["decoder"], c["encoder_a"], c["encoder_b"]))
    for dec, a, b in dict.fromkeys(keys):
        cells = []
        for s in subjects:
            c = next((c for c in runs[s][1] if (c["metric"], c["decoder"], c["phosphene"], c["encoder_a"],
                                                 c["encoder_b"]) == ("percept_2way", dec, phosphene, a, b)), None)
            cells.append("—" if c is None else f"{c['diff']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}]"
                         + ("" if c["resolved"] == "unresolved" else " *"))
        print(f"| {dec} | {a} - {b} | " + " | ".join(cells) + " |")
    print("\n* the interval excludes 0")
    if args.json:
        args.json.write_text(json.dumps({s: {"rows": rows, "comparisons": comp} for s, (rows, comp) in runs.items()},
                                        indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
