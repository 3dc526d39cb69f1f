"""psim-eval's tables: results.csv (every number), results.md (the readable table) and the console summary."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from ..checkpoint import atomic_write_text

#: results.csv columns, in order (identification columns are empty for decoders that do not embed).
COLUMNS = (
    "encoder", "decoder", "phosphene", "pearson", "ssim", "norm_pearson", "norm_ssim",
    "top1", "top5", "chance_top1", "chance_top5", "top1_fraction_of_measured", "top5_fraction_of_measured",
    "norm_pearson_fraction_of_measured", "floor_pearson", "floor_ssim", "ceiling_pearson", "ceiling_ssim",
    "encode_ms_per_image", "decode_ms_per_image", "phosphene_ms_per_image",
    "n_images", "dataset", "subject", "floor",
)
#: results.md columns: (column, title)
MD_COLUMNS = (
    ("encoder", "encoder"), ("decoder", "decoder"), ("phosphene", "phosphene"), ("pearson", "Pearson"),
    ("ssim", "SSIM"), ("norm_pearson", "norm. Pearson"), ("norm_ssim", "norm. SSIM"), ("top1", "top-1"),
    ("top5", "top-5"), ("top1_fraction_of_measured", "top-1 / measured"),
    ("norm_pearson_fraction_of_measured", "norm. Pearson / measured"), ("encode_ms_per_image", "encode ms"),
    ("decode_ms_per_image", "decode ms"), ("phosphene_ms_per_image", "phosphene ms"),
)
SUMMARY_COLUMNS = ("pearson", "ssim", "norm_pearson", "norm_ssim", "top1", "top5")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def cell(value) -> str:
    """A Markdown cell: numbers with 3 decimals (milliseconds with 1), '—' for missing or NaN."""
    if isinstance(value, str):
        return value
    return f"{value:.3f}" if _finite(value) else "—"


def write_csv(path: Path, rows: list[dict], columns=COLUMNS) -> None:
    """Rows as CSV, atomically; NaN is written as an empty cell (no value), not 'nan'."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def read_csv(path: Path) -> list[dict]:
    """results.csv -> rows, numbers as floats (empty cells as NaN)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        parsed = {}
        for key, value in row.items():
            try:
                parsed[key] = float(value) if value != "" else float("nan")
            except ValueError:
                parsed[key] = value
        out.append(parsed)
    return out


def md_table(rows: list[dict], columns=MD_COLUMNS) -> str:
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for key, _ in columns:
            value = row.get(key)
            cells.append(f"{value:.1f}" if key.endswith("_ms_per_image") and _finite(value) else cell(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def explanation(rows: list[dict]) -> list[str]:
    """What the columns mean and the chance levels, for results.md and psim-report."""
    first = rows[0]
    n = int(first["n_images"])
    ceilings = {}
    for row in rows:
        ceilings.setdefault(row["phosphene"], (row["ceiling_pearson"], row["ceiling_ssim"]))
    ceiling = "; ".join(f"{p}: Pearson {cell(c[0])}, SSIM {cell(c[1])}" for p, c in ceilings.items())
    return [
        f"Scores are means over the {n} test images of Pearson r and SSIM between each image and its percept "
        "(image -> encoder -> decoder -> phosphene model). **norm.** = (score - floor) / (ceiling - floor) on "
        f"those means: the floor is the `{first['floor']}` row with the same decoder and phosphene model (0), "
        f"the ceiling the image sent straight to the implant (1; {ceiling}).", "",
        "`measured` is the measured test average (the real brain's signal). **top-k**: identification of each "
        "test image among all of them by cosine similarity between the decoder's embedding of the signal and "
        f"of the images (decoders that embed; ties count against); chance top-1 = 1/{n} = {1 / n:.3f}, "
        f"top-5 = {min(5, n)}/{n} = {min(5, n) / n:.3f}. **/ measured**: the value as a fraction of the "
        "`measured` row with the same decoder (and phosphene model): how well the decoder, trained on measured "
        "signals only, reads the generated ones. Times are milliseconds per image on this machine.",
    ]


def write_markdown(path: Path, rows: list[dict], title: str, command: str | None = None,
                   figure: str | None = None) -> None:
    lines = [f"# {title}", ""]
    if command:
        lines += [f"Built by `{command}`.", ""]
    lines += [md_table(rows), "", *explanation(rows)]
    if figure:
        lines += ["", f"![percepts]({figure})"]
    atomic_write_text(path, "\n".join(lines) + "\n")


def summary(rows: list[dict], columns=SUMMARY_COLUMNS) -> str:
    """A plain-text table for the console."""
    names = [f"{r['encoder']} / {r['decoder']} / {r['phosphene']}" for r in rows]
    width = max(len(n) for n in names) + 2
    head = " " * width + "".join(f"{c:>14}" for c in columns)
    body = [f"{name:<{width}}" + "".join(f"{cell(r.get(c)):>14}" for c in columns) for name, r in zip(names, rows)]
    return "\n".join([head, *body])
