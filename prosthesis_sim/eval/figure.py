"""percepts.png: a few test images through every path, one column per image, one labelled row per path."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..checkpoint import atomic_write


def percept_figure(path: Path, images: list[np.ndarray], rows: list[tuple[str, list[np.ndarray]]],
                   title: str = "") -> Path:
    """Write a grid: first row the images (RGB), then each (label, grey images in [0, 1]) row.

    Grey panels share one scale (0 black, 1 white), so brightness compares across rows.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    all_rows = [("test image", images), *rows]
    n_rows, n_cols = len(all_rows), len(images)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.5 * n_cols + 2.6, 1.25 * n_rows + 0.6), squeeze=False,
                             layout="constrained")
    for r, (label, panels) in enumerate(all_rows):
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            if panel.ndim == 3:
                ax.imshow(panel)
            else:
                ax.imshow(panel, cmap="gray", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return Path(path)


#: verdicts.png's panels: (column, axis label)
VERDICT_METRICS = (("percept_2way", "percept 2-way identification"), ("decoded_2way", "decoded 2-way"),
                   ("norm_pearson", "normalised Pearson"))


def verdict_figure(path: Path, rows: list[dict], title: str = "") -> Path:
    """verdicts.png: per decoder and phosphene model (a row of panels), each path's value with its 95 %
    interval (a bar), chance dotted, the truth (synthetic data) dashed: a difference inside the bars is no
    ranking."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys((r["decoder"], r["phosphene"]) for r in rows))
    encoders = list(dict.fromkeys(r["encoder"] for r in rows))
    fig, axes = plt.subplots(len(groups), len(VERDICT_METRICS), squeeze=False, layout="constrained",
                             figsize=(4.2 * len(VERDICT_METRICS), 0.32 * len(encoders) * len(groups) + 1.2 * len(groups)))
    for g, (decoder, phosphene) in enumerate(groups):
        mine = {r["encoder"]: r for r in rows if (r["decoder"], r["phosphene"]) == (decoder, phosphene)}
        for m, (key, label) in enumerate(VERDICT_METRICS):
            ax = axes[g, m]
            for y, enc in enumerate(encoders):
                r = mine.get(enc)
                if r is None or not np.isfinite(r.get(key, np.nan)):
                    continue
                lo, hi = r.get(f"{key}_lo", np.nan), r.get(f"{key}_hi", np.nan)
                colour = "C3" if r.get("above_truth") is True and not enc.startswith("thumbnail_") else (
                    "0.5" if enc.startswith("thumbnail_") else "C0")
                if np.isfinite(lo) and np.isfinite(hi):
                    ax.plot([lo, hi], [y, y], color=colour, lw=2.5, solid_capstyle="butt")
                ax.plot([r[key]], [y], "o", color=colour, ms=4)
            chance = 0.5 if key.endswith("2way") else 0.0
            ax.axvline(chance, color="k", ls=":", lw=1)
            if "truth" in mine and np.isfinite(mine["truth"].get(key, np.nan)):
                ax.axvline(mine["truth"][key], color="C2", ls="--", lw=1)
            ax.set_yticks(range(len(encoders)), encoders if m == 0 else [""] * len(encoders), fontsize=8)
            ax.invert_yaxis()
            ax.tick_params(axis="x", labelsize=8)
            ax.set_xlabel(label, fontsize=8)
            if m == 0:
                ax.set_title(f"{decoder} / {phosphene}", fontsize=9, loc="left")
    fig.suptitle((title + "\n" if title else "") + "95 % intervals over test images; dotted: chance (floor 0 for "
                 "norm.), dashed: truth; red: above the truth", fontsize=9)
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return Path(path)
