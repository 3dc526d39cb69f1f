"""psim-eval's tables: results.csv (every number), comparisons.csv (paired differences), results.md (the
readable tables with intervals and verdicts) and the console summary."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from ..checkpoint import atomic_write_text

#: results.csv columns, in order (embedding columns are empty for decoders that do not embed, signal
#: columns for rows without a signal: measured, which is the query, and the thumbnails).
COLUMNS = (
    "encoder", "decoder", "phosphene",
    "percept_top1", "percept_top1_lo", "percept_top1_hi", "percept_2way", "percept_2way_lo", "percept_2way_hi",
    "decoded_top1", "decoded_top1_lo", "decoded_top1_hi", "decoded_2way", "decoded_2way_lo", "decoded_2way_hi",
    "top1", "top1_lo", "top1_hi", "top5", "top5_lo", "top5_hi", "embed_2way",
    "signal_top1", "signal_top1_lo", "signal_top1_hi", "signal_2way", "signal_2way_lo", "signal_2way_hi",
    "chance_top1", "chance_top5", "chance_2way", "above_truth", "above_truth_metrics", "circular",
    "capture_early", "capture_concept", "capture_nonlinear", "capture_semantic", "capture_retinotopic",
    "pearson", "pearson_lo", "pearson_hi", "ssim", "ssim_lo", "ssim_hi",
    "norm_pearson", "norm_pearson_lo", "norm_pearson_hi", "norm_ssim", "norm_ssim_lo", "norm_ssim_hi",
    "top1_fraction_of_measured", "top5_fraction_of_measured",
    "norm_pearson_fraction_of_measured", "floor_pearson", "floor_ssim", "ceiling_pearson", "ceiling_ssim",
    "encode_ms_per_image", "decode_ms_per_image", "phosphene_ms_per_image",
    "n_images", "dataset", "subject", "floor",
)
#: results.md's verdict table per decoder and phosphene model: (value column, title); an interval is
#: shown after the value where the row has ``<column>_lo`` / ``_hi``
VERDICT_COLUMNS = (
    ("encoder", "encoder"), ("percept_2way", "percept 2-way"), ("percept_top1", "percept top-1"),
    ("decoded_2way", "decoded 2-way"), ("top1", "embedding top-1"), ("signal_2way", "signal 2-way"),
    ("norm_pearson", "norm. Pearson"), ("above_truth", "above truth"),
)
#: results.md columns: (column, title)
MD_COLUMNS = (
    ("encoder", "encoder"), ("decoder", "decoder"), ("phosphene", "phosphene"), ("pearson", "Pearson"),
    ("ssim", "SSIM"), ("norm_pearson", "norm. Pearson"), ("norm_ssim", "norm. SSIM"), ("top1", "top-1"),
    ("top5", "top-5"), ("top1_fraction_of_measured", "top-1 / measured"),
    ("norm_pearson_fraction_of_measured", "norm. Pearson / measured"), ("encode_ms_per_image", "encode ms"),
    ("decode_ms_per_image", "decode ms"), ("phosphene_ms_per_image", "phosphene ms"),
)
SUMMARY_COLUMNS = ("percept_2way", "decoded_2way", "top1", "signal_2way", "norm_pearson", "ssim")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def cell(value) -> str:
    """A Markdown cell: numbers with 3 decimals (milliseconds with 1), '—' for missing or NaN."""
    if isinstance(value, str):
        return value
    return f"{value:.3f}" if _finite(value) else "—"


def write_csv(path: Path, rows: list[dict], columns=COLUMNS) -> None:
    """Rows as CSV, atomically; NaN is written as an empty cell (no value), not 'nan'; booleans as
    true / false."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else
                             str(v).lower() if isinstance(v, bool) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def write_comparisons(path: Path, compared: list[dict]) -> None:
    """comparisons.csv: one paired difference (a - b, 95 % interval over the test images) a row."""
    from .verdicts import COMPARISON_COLUMNS

    write_csv(path, compared, COMPARISON_COLUMNS)


def with_interval(row: dict, key: str) -> str:
    """'0.531 [0.502, 0.560]' where the row has an interval for ``key``, else the value alone."""
    value, lo, hi = row.get(key), row.get(f"{key}_lo"), row.get(f"{key}_hi")
    if isinstance(value, bool):
        return "**yes**" if value else "no"
    if _finite(lo) and _finite(hi):
        return f"{cell(value)} [{cell(lo)}, {cell(hi)}]"
    return cell(value)


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


def verdict_tables(rows: list[dict]) -> list[str]:
    """One table per decoder and phosphene model: every identification stage and the normalised
    Pearson, each with its 95 % interval, and the above-truth flag."""
    lines = []
    groups = list(dict.fromkeys((r["decoder"], r["phosphene"]) for r in rows))
    for decoder, phosphene in groups:
        mine = [r for r in rows if (r["decoder"], r["phosphene"]) == (decoder, phosphene)]
        lines += [f"### decoder `{decoder}`, phosphene model `{phosphene}`", "",
                  "| " + " | ".join(t for _, t in VERDICT_COLUMNS) + " |", "|" + "---|" * len(VERDICT_COLUMNS)]
        for r in mine:
            cells = [with_interval(r, k) for k, _ in VERDICT_COLUMNS]
            if is_bound(r["encoder"]):
                cells[-1] = "(bound)"
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def is_bound(encoder: str) -> bool:
    """Thumbnail rows are bounds on what layout alone gives, not signals: never flagged as leaks."""
    return encoder.startswith("thumbnail_")


def comparison_lines(compared: list[dict], metric: str = "percept_2way") -> list[str]:
    """The paired differences on ``metric``, one line per decoder / phosphene / pair, resolved or not
    (each pair of reference rows once, thumbnails only against the floor)."""
    lines = []
    order = list(dict.fromkeys(c["encoder_b"] for c in compared))  # the references, in comparisons' order
    for c in compared:
        a, b = c["encoder_a"], c["encoder_b"]
        if c["metric"] != metric or (a in order and order.index(a) < order.index(b)) or (
                is_bound(a) and b != order[0]):
            continue
        verdict = {"a > b": "resolved: a > b", "a < b": "resolved: a < b"}.get(c["resolved"], "not resolved")
        lines.append(f"- `{c['decoder']}` / `{c['phosphene']}`: {c['encoder_a']} - {c['encoder_b']} = "
                     f"{c['diff']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}] ({verdict})")
    return lines


def flagged(rows: list[dict], references=("measured", "truth")) -> list[str]:
    """The rows above the truth, named as the circularity they reveal (thumbnails are bounds, not signals)."""
    out = []
    for r in rows:
        if r.get("above_truth") is True and r["encoder"] not in references and not is_bound(r["encoder"]):
            out.append(f"- **{r['encoder']} / {r['decoder']} / {r['phosphene']}: more decodable than the brain "
                       f"({r['above_truth_metrics'].replace(';', ', ')} above the truth's, paired interval above 0): "
                       "the decoder reads the encoder's features back.** The signal is a cleaner function of the "
                       "image features the encoder was conditioned on than the brain's own noise-free response; "
                       "this row's decodability is not evidence of a realistic signal.")
    return out


def capture_lines(rows: list[dict]) -> list[str]:
    """Per signal row, the share of each component of the synthetic truth it reproduces (if any)."""
    from .capture import COMPONENTS

    if not any(_finite(r.get(f"capture_{c}")) for r in rows for c in COMPONENTS):
        return []
    first = rows[0]["decoder"], rows[0]["phosphene"]
    mine = [r for r in rows if (r["decoder"], r["phosphene"]) == first and _finite(r.get("capture_early"))]
    names = [c for c in COMPONENTS if any(_finite(r.get(f"capture_{c}")) for r in mine)]  # semantic: version 3 only
    lines = ["### Per-component capture (synthetic truth)", "",
             "How much of each component of the simulated brain's image-specific response a signal reproduces: "
             "the joint least-squares coefficient of the components' across-image variation in the signal's "
             "(1: at the brain's strength, 0: absent; the truth is 1 by construction). No recording allows it.", "",
             "| signal | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for r in mine:
        lines.append(f"| {r['encoder']} | " + " | ".join(cell(r.get(f"capture_{c}")) for c in names) + " |")
    return lines + [""]


def write_markdown(path: Path, rows: list[dict], title: str, command: str | None = None,
                   figure: str | None = None, compared: list[dict] | None = None, verdicts: str | None = None) -> None:
    n = int(rows[0]["n_images"])
    lines = [f"# {title}", ""]
    if command:
        lines += [f"Built by `{command}`.", ""]
    lines += ["## Verdicts", "",
              f"Means over the {n} test images with 95 % bootstrap intervals over the images. Identification "
              "ranks the true image among all test images (2-way: over all pairs, chance 0.500; top-1: chance "
              f"1/{n} = {1 / n:.3f}): the **percept** among the ceiling percepts (every test image straight "
              "through the same implant), the **decoded** image among the test images, the decoder's "
              "**embedding** among the test images' (decoders that embed), and the **signal**: each measured "
              "test signal among the row's signals (no decoder). `truth` is the noise-free expected response "
              "(synthetic data), `thumbnail_kxk` a k x k luminance thumbnail sent to the implant: bounds, not "
              "signals. **above truth**: a decodability (embedding top-1, decoded or percept 2-way) above the "
              "truth's with its paired interval above 0.", "", *verdict_tables(rows)]
    flags = flagged(rows)
    circular = sorted({(r["encoder"], r["decoder"], r["circular"]) for r in rows if r.get("circular")})
    if flags or circular:
        lines += ["### Flags", "", *flags]
        lines += [f"- {e} / {d}: the decoder's target space is the encoder's features ({space}): circular" for
                  e, d, space in circular]
        lines.append("")
    if compared:
        lines += ["### Paired comparisons (percept 2-way; all metrics in comparisons.csv)", "",
                  *comparison_lines(compared), ""]
    if verdicts:
        lines += [f"![verdicts]({verdicts})", ""]
    lines += capture_lines(rows)
    lines += ["## Scores", "", md_table(rows), "", *explanation(rows)]
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
