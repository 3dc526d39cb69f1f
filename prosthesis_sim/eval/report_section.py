"""psim-report's "Batch evaluation" section: psim-eval folders (holding results.csv) among the runs given.

Numbers are read from each folder's results.csv, never recomputed; the figure is linked, not copied.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from .tables import capture_lines, cell, explanation, md_table, read_csv, verdict_tables

RESULTS = "results.csv"
REPORT_COLUMNS = (
    ("encoder", "encoder"), ("decoder", "decoder"), ("phosphene", "phosphene"), ("pearson", "Pearson"),
    ("ssim", "SSIM"), ("norm_pearson", "norm. Pearson"), ("norm_ssim", "norm. SSIM"), ("top1", "top-1"),
    ("top5", "top-5"), ("top1_fraction_of_measured", "top-1 / measured"),
    ("norm_pearson_fraction_of_measured", "norm. Pearson / measured"),
)


def split_runs(paths) -> tuple[list[Path], list[Path]]:
    """(psim-eval folders, other paths): a path holding results.csv is a psim-eval folder; a folder holding
    neither results.csv nor metrics.json contributes its psim-eval subfolders (a multirun sweep) and keeps
    its psim-train subfolders for the rest of the report."""
    evals, others = [], []
    for path in map(Path, paths):
        if (path / RESULTS).is_file():
            evals.append(path)
        elif (path / "metrics.json").is_file():
            others.append(path)
        else:
            inner = sorted(p for p in path.glob("*") if (p / RESULTS).is_file())
            trains = sorted(p for p in path.glob("*") if (p / "metrics.json").is_file())
            if not inner and not trains:
                raise FileNotFoundError(f"{path}: no metrics.json (psim-train run) or {RESULTS} (psim-eval) here "
                                        "or in its subfolders")
            evals += inner
            others += trains
    return evals, others


def _finite(value) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def decodability_lines(rows: list[dict]) -> list[str]:
    """Per decoder that embeds: identification from measured vs each encoder's generated signals."""
    lines = []
    first_phosphene = rows[0]["phosphene"]
    for decoder in dict.fromkeys(r["decoder"] for r in rows):
        mine = [r for r in rows if r["decoder"] == decoder and r["phosphene"] == first_phosphene]
        measured = next((r for r in mine if r["encoder"] == "measured"), None)
        if measured is None or not _finite(measured.get("top1")):
            continue
        parts = [f"{r['encoder']} {cell(r['top1'])} / {cell(r['top5'])} "
                 f"({cell(r['top1_fraction_of_measured'])} of measured top-1)" for r in mine if r is not measured]
        lines.append(f"- `{decoder}`: measured signals top-1 / top-5 {cell(measured['top1'])} / "
                     f"{cell(measured['top5'])} (chance {cell(measured['chance_top1'])} / "
                     f"{cell(measured['chance_top5'])}); generated: {'; '.join(parts)}.")
    return lines


def eval_section(folders: list[Path], out: Path) -> list[str]:
    """Markdown lines: one subsection per psim-eval folder (table, decodability, figure link)."""
    if not folders:
        return []
    lines = ["", "## Batch evaluation (psim-eval)", "",
             "Encoder x decoder x phosphene model on each dataset's test split, read from `results.csv` "
             "(every column there, full precision)."]
    for folder in folders:
        rows = read_csv(folder / RESULTS)
        if not rows:
            raise ValueError(f"{folder / RESULTS} holds no rows: rerun psim-eval")
        for row in rows:  # read_csv keeps 'true' / 'false' as text
            if isinstance(row.get("above_truth"), str):
                row["above_truth"] = row["above_truth"] == "true"
        first = rows[0]
        lines += ["", f"### {first['dataset']}, {first['subject']}: `{folder}`", ""]
        if "percept_2way" in first:  # psim-eval folders written before the verdicts have no intervals
            lines += ["Identification at every stage with 95 % intervals over the test images (paired "
                      "differences in the folder's comparisons.csv):", "",
                      *[line.replace("### ", "#### ") for line in [*verdict_tables(rows), *capture_lines(rows)]]]
        lines += [md_table(rows, REPORT_COLUMNS), "", *explanation(rows)]
        decodability = decodability_lines(rows)
        if decodability:
            lines += ["", "Decodability (identification of the test images by decoders trained on measured "
                      "signals only):", "", *decodability]
        for figure in ("verdicts.png", "percepts.png"):
            if (folder / figure).is_file():
                lines += ["", f"![{figure[:-4]} {first['subject']}]({os.path.relpath(folder / figure, out)})"]
    return lines
