"""The report's single-trial section: runs trained on single trials (dataset.average_train=false) whose
encoder samples trials carry single_trials.json and single_trials.npz (prosthesis_sim.eval.single_trials);
this draws their table and one figure per run (power spectra and example trials)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..eval.single_trials import CROSS_SPECTRAL, paired_difference  # noqa: E402
from .sections import md_table  # noqa: E402

COLUMNS = ("log_spectral_distance_db", "covariance_distance", "two_sample_accuracy", "two_sample_waveform",
           "two_sample_band_power")  # the last two: runs from before they existed show "-" 


def single_trial_figure(npz: Path, title: str) -> plt.Figure:
    """Left: mean power spectrum over channels (dB) per source. Right: three trials of the first test
    image at the channel with the largest evoked response, one row per source."""
    data = np.load(npz)
    names = [str(n) for n in data["names"]]
    fig = plt.figure(figsize=(12, 1.9 * len(names) + 0.8))
    grid = fig.add_gridspec(len(names), 2, width_ratios=[1, 1.5], wspace=0.22)
    spec = fig.add_subplot(grid[:, 0])
    axes = [fig.add_subplot(grid[i, 1]) for i in range(len(names))]
    for name, db in zip(names, data["spectra_db"]):
        spec.plot(data["freqs"][1:], db[1:], label=name, lw=1.5 if name == "measured" else 1.1,
                  color="black" if name == "measured" else None)
    spec.set(xlabel="frequency (Hz)", ylabel="power (dB, z units)", title="mean power spectrum over channels",
             xlim=(0, float(data["freqs"][-1])))
    spec.legend(fontsize=7)
    times = data["times"]
    lim = float(np.abs(data["examples"]).max()) * 1.05
    for ax, name, trials in zip(axes, names, data["examples"]):
        for k, trial in enumerate(trials):
            ax.plot(times, trial, lw=0.8, alpha=0.9, label=f"trial {k + 1}")
        ax.set_ylim(-lim, lim)
        ax.set_title(f"{name}: 3 trials of test image 1 at {data['channel']}", fontsize=8)
        ax.axhline(0, color="grey", lw=0.5)
        if ax is not axes[-1]:
            ax.set_xticklabels([])
    axes[-1].set_xlabel("time (s)")
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.92, bottom=0.08, hspace=0.45)
    return fig


def single_trial_section(runs, out: Path, tag: str) -> tuple[list[str], list[dict]]:
    """Markdown lines and CSV rows for the runs (report.runs.Run) that hold single_trials.json."""
    runs = [r for r in runs if (Path(r.path) / "single_trials.json").is_file()]
    if not runs:
        return [], []
    lines = ["", "### Single trials", "",
             "Runs trained on single trials (`dataset.average_train=false`) whose encoder samples trials: as many "
             "generated trials per test image as were measured, against the measured test trials, in z units. "
             "Log-spectral distance (dB, RMS over frequencies, mean over channels), affine-invariant distance "
             "between noise covariances, and a classifier two-sample test (cross-validated accuracy of telling "
             "generated from measured trials; 0.5 = indistinguishable), also on the waveforms or the band power "
             "alone (what gives the trials away). The reference row compares two halves of "
             "the measured trials; the baselines add Gaussian noise with the training noise's second-order statistics "
             "to a regression's mean: spatial covariance (white in time), spatial x temporal (Kronecker), or the "
             "cross-spectra (every channel pair at every frequency). Definitions: `prosthesis_sim/eval/single_trials.py`."]
    rows, table = [], []
    results = [json.loads((Path(run.path) / "single_trials.json").read_text()) for run in runs]
    for run, result in zip(runs, results):
        for name, metrics in result["rows"].items():
            rows.append({"encoder": run.label, "subject": run.subject, "row": name, "run": str(run.path),
                         **{k: metrics.get(k) for k in COLUMNS}})
            table.append([run.label, run.subject, name, *("-" if metrics.get(k) is None else f"{metrics[k]:.3f}"
                                                           for k in COLUMNS)])
    lines += ["", md_table(["encoder", "subject", "trials", "log-spectral distance (dB)", "covariance distance",
                            "two-sample accuracy", "waveforms only", "band power only"], table)]
    for run, result in zip(runs, results):  # the verdict: is the generator harder to tell from measured trials?
        if all("two_sample_per_image" in result["rows"].get(k, {}) for k in ("generated", CROSS_SPECTRAL)):
            d = paired_difference(result["rows"], "generated")
            lines += ["", f"{run.label} (subject {run.subject}): two-sample accuracy of generated minus the "
                          f"cross-spectral baseline {d['value']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}], "
                          f"95 % bootstrap over {d['n_images']} test images, paired"
                          + ("" if d["resolved"] else ": the interval holds 0, no ranking") + "."]
    for run in runs:
        npz = Path(run.path) / "single_trials.npz"
        if npz.is_file():
            name = f"single_trials_{tag}{Path(run.path).name}.png"
            fig = single_trial_figure(npz, f"{run.label}, {run.subject}: single trials")
            fig.savefig(out / name, dpi=100)
            plt.close(fig)
            lines.append(f"\n![{name[:-4]}]({name})")
    return lines, rows
