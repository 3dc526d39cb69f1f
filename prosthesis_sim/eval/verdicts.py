"""psim-eval's verdicts: per-row intervals, paired comparisons, and the flag for rows above the truth.

Every row of results.csv was scored image by image (``per_image[key][metric]``: one value per test
image, the same images in the same order for every row). Here each mean gets its 95 % bootstrap
interval over the test images, each normalised score its paired interval (score, floor and ceiling
resampled together), and each row is compared with the reference rows (the floor, ``ridge``, the
truth and the measured signals) under the same decoder and phosphene model, pairing the images.

A row whose decodability is above the truth's, with the paired interval wholly above 0, is flagged:
no signal can carry more about an image than the noise-free response of the brain that saw it, so
such a row is read better than the brain because the decoder reads the encoder's own features back.
"""
from __future__ import annotations

import numpy as np

from .intervals import diff_interval, mean_interval, normalised_diff_interval, normalised_interval

MEASURED, TRUTH = "measured", "truth"
#: per-image metrics with an interval on every row (where the row has them)
INTERVAL_METRICS = ("pearson", "ssim", "percept_2way", "percept_top1", "decoded_2way", "decoded_top1",
                    "top1", "top5", "signal_2way", "signal_top1")
#: metrics compared pairwise between rows; norm_pearson as a difference of normalised scores
COMPARED = ("percept_2way", "percept_top1", "norm_pearson", "decoded_2way", "top1", "signal_2way")
#: what "decodability" means for the above-truth flag: what a decoder reads from the signal
DECODABILITY = ("top1", "decoded_2way", "percept_2way")
COMPARISON_COLUMNS = ("metric", "decoder", "phosphene", "encoder_a", "encoder_b", "diff", "lo", "hi",
                      "resolved", "n_images")


def _has(values: dict, metric: str) -> bool:
    return metric in values and values[metric] is not None and np.isfinite(values[metric]).all()


def add_intervals(rows: list[dict], per_image: dict[tuple, dict], floor: str, ceilings: dict, n_resamples: int,
                  seed: int) -> None:
    """``<metric>_lo`` / ``<metric>_hi`` on every row, for the means and the normalised scores."""
    for row in rows:
        key = (row["encoder"], row["decoder"], row["phosphene"])
        values = per_image[key]
        for metric in INTERVAL_METRICS:
            lo = hi = float("nan")
            if _has(values, metric):
                _, lo, hi = mean_interval(values[metric], n_resamples, seed)
            row[f"{metric}_lo"], row[f"{metric}_hi"] = lo, hi
        low = per_image[(floor, row["decoder"], row["phosphene"])]
        for score in ("pearson", "ssim"):
            value, lo, hi = normalised_interval(values[score], low[score], ceilings[row["phosphene"]][score],
                                                n_resamples, seed)
            row[f"norm_{score}"], row[f"norm_{score}_lo"], row[f"norm_{score}_hi"] = value, lo, hi


def compare(a: dict, b: dict, metric: str, floor: dict, ceiling: dict, n_resamples: int, seed: int):
    """(diff, lo, hi) of row a - row b on one metric, paired over the images; None when either lacks it."""
    if metric == "norm_pearson":
        return normalised_diff_interval(a["pearson"], b["pearson"], floor["pearson"], ceiling["pearson"],
                                        n_resamples, seed)
    if not (_has(a, metric) and _has(b, metric)):
        return None
    return diff_interval(a[metric], b[metric], n_resamples, seed)


def comparisons(rows: list[dict], per_image: dict[tuple, dict], floor: str, references: list[str],
                ceilings: dict, n_resamples: int, seed: int) -> list[dict]:
    """Every row against every reference row (same decoder and phosphene model) on every metric of
    ``COMPARED`` both have: comparisons.csv."""
    out = []
    n = len(next(iter(per_image.values()))["pearson"])
    for row in rows:
        dec, ph = row["decoder"], row["phosphene"]
        a = per_image[(row["encoder"], dec, ph)]
        for ref in references:
            if ref == row["encoder"] or (ref, dec, ph) not in per_image:
                continue
            b = per_image[(ref, dec, ph)]
            for metric in COMPARED:
                result = compare(a, b, metric, per_image[(floor, dec, ph)], ceilings[ph], n_resamples, seed)
                if result is None:
                    continue
                diff, lo, hi = result
                resolved = "a > b" if lo > 0 else "a < b" if hi < 0 else "unresolved"
                out.append({"metric": metric, "decoder": dec, "phosphene": ph, "encoder_a": row["encoder"],
                            "encoder_b": ref, "diff": diff, "lo": lo, "hi": hi, "resolved": resolved,
                            "n_images": n})
    return out


def flag_above_truth(rows: list[dict], compared: list[dict]) -> None:
    """``above_truth`` (True/False) on every row: any decodability metric whose paired difference from
    the truth row lies wholly above 0. Without a truth row (real data) every row is False, and
    ``above_truth_metrics`` names the metrics that put a row there."""
    above: dict[tuple, list[str]] = {}
    for c in compared:
        if c["encoder_b"] == TRUTH and c["metric"] in DECODABILITY and c["lo"] > 0:
            above.setdefault((c["encoder_a"], c["decoder"], c["phosphene"]), []).append(c["metric"])
    for row in rows:
        metrics = above.get((row["encoder"], row["decoder"], row["phosphene"]), [])
        row["above_truth"] = bool(metrics)
        row["above_truth_metrics"] = ";".join(metrics)
