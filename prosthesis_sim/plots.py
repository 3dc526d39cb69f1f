"""Report figures: plain functions of arrays and an mne.Info that return a matplotlib Figure.

Figures are built on ``matplotlib.figure.Figure`` (not pyplot), so they need no display, leave no
global state behind and work under any backend; save them with ``fig.savefig(path)``.
"""
from __future__ import annotations

import textwrap

import mne
import numpy as np
from matplotlib.figure import Figure


def window_means(signal: np.ndarray, times: np.ndarray, width: float = 0.1) -> tuple[np.ndarray, list[str]]:
    """Mean of ``signal`` (channels, times) over consecutive windows of ``width`` seconds from 0 s.

    Returns (channels, windows) and a label per window ("0-100 ms"). Pre-stimulus samples are left
    out (the paper's Figure 3 starts at stimulus onset); the last window may be partial.
    """
    edges = np.arange(0.0, times[-1] + width, width)
    means, labels = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (times >= lo - 1e-9) & (times < hi - 1e-9)
        if mask.any():
            means.append(signal[:, mask].mean(axis=1))
            labels.append(f"{lo * 1000:.0f}-{hi * 1000:.0f} ms")
    if not means:
        raise ValueError(f"no samples at or after 0 s (times {times[0]:.3f}..{times[-1]:.3f} s)")
    return np.stack(means, axis=1), labels


def topomap_grid(rows: dict[str, np.ndarray], info: mne.Info, times: np.ndarray, width: float = 0.1,
                 title: str = "", unit: str = "file units") -> Figure:
    """One row of scalp maps per entry of ``rows`` (label -> (channels, times)), one column per window.

    As the paper's Figure 3: each map is ``mne.viz.plot_topomap`` of the window mean; every row has
    its own colour scale, symmetric about 0 and shared by its columns, so maps within a row compare.
    """
    grids = {label: window_means(np.asarray(sig, dtype=float), times, width) for label, sig in rows.items()}
    labels = next(iter(grids.values()))[1]
    fig = Figure(figsize=(1.25 * len(labels) + 1.2, 1.35 * len(rows) + 0.5), layout="constrained")
    axes = fig.subplots(len(rows), len(labels), squeeze=False)
    for r, (label, (means, _)) in enumerate(grids.items()):
        vmax = float(np.abs(means).max()) or 1.0
        for c, ax in enumerate(axes[r]):
            im, _ = mne.viz.plot_topomap(means[:, c], info, axes=ax, show=False, vlim=(-vmax, vmax),
                                         cmap="RdBu_r", contours=4, sensors=True)
            if r == 0:
                ax.set_title(labels[c], fontsize=8)
        axes[r, 0].set_ylabel(textwrap.fill(label, 24), fontsize=8)  # a ylabel: the layout keeps it in the figure
        axes[r, 0].yaxis.label.set_visible(True)
        bar = fig.colorbar(im, ax=list(axes[r]), shrink=0.8, pad=0.01)
        bar.ax.tick_params(labelsize=7)
        bar.set_label(unit, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def channel_time_maps(rows: dict[str, np.ndarray], times: np.ndarray, title: str = "",
                      label: str = "Pearson r across images") -> Figure:
    """One channel x time image per entry of ``rows`` (label -> (channels, times)), one shared colour
    scale from -1 to 1: where in the sensors and when a model follows the images (and where the data
    allow it to: the noise-ceiling row)."""
    fig = Figure(figsize=(8, 1.9 * len(rows) + 0.6), layout="constrained")
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    extent = (float(times[0]), float(times[-1]), 0, 1)
    for ax, (name, values) in zip(axes, rows.items()):
        values = np.asarray(values, dtype=float)
        im = ax.imshow(values, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-1, vmax=1,
                       extent=(extent[0], extent[1], 0, values.shape[0]), interpolation="nearest")
        ax.set_ylabel("channel", fontsize=8)
        ax.set_title(f"{name}: mean {np.nanmean(values):.3f}", fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
    axes[-1].set_xlabel("time (s)", fontsize=8)
    bar = fig.colorbar(im, ax=list(axes), shrink=0.8, pad=0.01)
    bar.set_label(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
