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
