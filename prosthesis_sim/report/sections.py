"""The report's Markdown sections and CSV rows: within-subject, ridge, cross-subject, definitions,
conditioning ablation and sampler sweep."""
from __future__ import annotations

import csv
import json
import os
from importlib import resources
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from .runs import BASELINE, BOOKKEEPING, Run, flatten

METRICS = {  # metrics.json key -> table title, in the order of the report
    "mse": "MSE (lower is better)",
    "pcc": "PCC, flattened",
    "pcc_channel": "PCC per channel",
    "top1": "top-1 identification",
    "top5": "top-5 identification",
    "pcc_fraction_of_ceiling": "PCC as a fraction of the noise ceiling",
    "r_across_images": "Pearson r across images, mean over channels x time",
    "r_across_images_fraction": "across-image r as a fraction of its noise ceiling",
    "top1_centered": "top-1 identification, training-average response removed",
    "top5_centered": "top-5 identification, training-average response removed",
}
# pcc/ceiling orders encoders as pcc does; runs from before a metric existed have no value for it
COMPARED = ("mse", "pcc", "pcc_channel", "top1", "top5", "r_across_images", "top1_centered")
CROSS = ("mse", "pcc")
RIDGE = "ridge"
METRICS_DOC = Path(__file__).resolve().parents[2] / "docs" / "evaluation.md"  # in a source tree
ABLATED = ("denoiser.conditioning", "inputs")  # encoder config keys the conditioning ablation varies
ABLATION_KEYS = {"mse": "MSE", "pcc": "PCC", "top1": "top-1", "top5": "top-5"}
SAMPLER_KEYS = ("mse", "pcc", "top1", "top5")


# --- writing ----------------------------------------------------------------------------------------

def _num(value) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.3f}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def label_order(labels) -> list[str]:
    """Baselines first (as in the paper's tables), then encoders in the order their runs were given."""
    labels = list(dict.fromkeys(labels))
    return [x for x in (BASELINE, RIDGE) if x in labels] + [x for x in labels if x not in (BASELINE, RIDGE)]


CEILINGS = {"pcc": "noise_ceiling", "r_across_images": "r_across_images_ceiling"}  # metric -> its ceiling's key


def within_section(within: dict[str, dict[str, dict]], ceilings: dict[str, dict], subjects: list[str],
                    n_test: int) -> list[str]:
    """The paper's layout: one table per metric, rows = encoders, columns = subjects + average."""
    lines = ["### Within-subject", "",
             "Each encoder is trained and tested on the same subject; values from each run's metrics.json; "
             "`average` is the unweighted mean over the subjects with a value."]
    chance = {"top1": f" (chance {1 / n_test:.3f})", "top5": f" (chance {min(5, n_test) / n_test:.3f})"}
    chance.update({f"{k}_centered": v for k, v in chance.items()})
    for key, title in METRICS.items():
        rows = []
        for label in label_order(within):
            vals = [within[label].get(s, {}).get(key) for s in subjects]
            rows.append([label, *map(_num, vals), _num(_mean(vals))])
        if key in CEILINGS:
            vals = [ceilings.get(s, {}).get(CEILINGS[key]) for s in subjects]
            if any(v is not None for v in vals):
                rows.append(["noise ceiling", *map(_num, vals), _num(_mean(vals))])
        lines += ["", f"#### {title}{chance.get(key, '')}", "", md_table(["encoder", *subjects, "average"], rows)]
    if any(len(v) < len(subjects) for v in within.values()):
        lines += ["", "— : no run of that encoder on that subject."]
    return lines


def ridge_section(within: dict[str, dict[str, dict]]) -> list[str]:
    """Flag every encoder that is not better than the ridge baseline on a metric (subject averages)."""
    if RIDGE not in within:
        return []
    lines = ["", "### Against the ridge baseline", "",
             "Averages over the subjects both encoders have runs on; lower MSE, higher everything else is better.", ""]
    for label in label_order(within):
        common = [s for s in within[label] if s in within[RIDGE]]
        if label == RIDGE or not common:
            continue
        worse = []
        for key in COMPARED:
            mine = _mean(within[label][s].get(key) for s in common)
            ridge = _mean(within[RIDGE][s].get(key) for s in common)
            if mine is None or ridge is None:
                continue
            if not (mine < ridge if key == "mse" else mine > ridge):
                worse.append(f"{key} ({mine:.3f} vs {ridge:.3f})")
        verdict = f"does not beat ridge on {', '.join(worse)}" if worse else "beats ridge on every metric"
        lines.append(f"- {label} {verdict}; subjects {', '.join(common)}.")
    return lines


def cross_section(label: str, subjects: list[str], scores: dict[tuple[str, str], dict],
                   within: dict[str, dict]) -> list[str]:
    """MSE and PCC matrices (rows: trained on, columns: tested on) with off-diagonal means and stds."""
    lines = ["", f"#### {label}", ""]
    n = len(subjects)
    off = ~np.eye(n, dtype=bool)
    for key in CROSS:
        m = np.array([[scores[(s, t)][key] for t in subjects] for s in subjects])
        rows = [[s, *map(_num, m[i]), _num(m[i][off[i]].mean()), _num(m[i][off[i]].std())]
                for i, s in enumerate(subjects)]
        rows.append(["mean", *(_num(m[:, j][off[:, j]].mean()) for j in range(n)), _num(m[off].mean()), ""])
        rows.append(["std", *(_num(m[:, j][off[:, j]].std()) for j in range(n)), "", ""])
        lines += [f"{METRICS[key]}; cross-subject mean {m[off].mean():.3f}, within-subject (diagonal) "
                  f"mean {np.diag(m).mean():.3f}", "",
                  md_table(["trained on \\ tested on", *subjects, "mean", "std"], rows), ""]
    gap = max(abs(scores[(s, s)][k] - within[s][k]) for s in subjects for k in COMPARED if k in within[s])
    check = "reproduces" if gap < 1e-6 else "**does not reproduce**"
    lines.append(f"The diagonal {check} the runs' metrics.json (largest difference {gap:.2g}).")
    return lines


def write_csv(path: Path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(rows)


def definitions(out: Path) -> list[str]:
    link = os.path.relpath(METRICS_DOC, out) if METRICS_DOC.is_file() else "docs/evaluation.md"
    return [
        "## Metric definitions", "",
        f"Exactly as `prosthesis_sim/metrics.py` computes them (details: [docs, Metrics]({link}#metrics)).", "",
        "- Signals are z-scored per channel with the subject's training mean and standard deviation.",
        "- **MSE**: mean over test images, channels and time points of (generated - measured test average)^2.",
        "- **PCC, flattened**: per test image, Pearson r between the generated and the measured average signal, "
        "both flattened over channels x time; mean over images.",
        "- **PCC per channel**: per image and channel, Pearson r between the two time courses; mean over both.",
        "- **top-k**: R[i, j] = flattened Pearson r between the signal generated for test image i and the "
        "measured average for test image j; image i is identified when fewer than k other images j have "
        "R[i, j] >= R[i, i]. Chance is k / N.",
        "- **noise ceiling**: sqrt(2r / (1 + r)), r = per-image Pearson r between the averages of two random "
        "halves of the test repetitions (mean over images and 20 splits): the PCC a perfect model can expect. "
        "**PCC / noise ceiling** is the fraction of it an encoder reaches.",
        "- **Cross-subject**: the encoder trained on subject i generates for subject j's test images, scored "
        "against j's measured averages with j's z-scoring. Row (source) and column (target) means and "
        "standard deviations (ddof = 0) are over the off-diagonal entries only; the diagonal is the "
        "within-subject value.",
    ]


def _default_conditioning() -> tuple[str, ...]:
    """The default DiT's conditioning, from its shipped config (the framework never imports a plug-in)."""
    return tuple(OmegaConf.load(resources.files("prosthesis_sim.configs") / "encoder" / "dit.yaml").denoiser.conditioning)


def _ablation_variant(config: dict) -> tuple[tuple[str, ...], str] | None:
    """(conditioning, inputs) of a saved DiT diffusion encoder config; None for other encoders."""
    denoiser = config.get("denoiser")
    if not (isinstance(denoiser, dict) and str(denoiser.get("_target_", "")).endswith(".DiT") and "inputs" in config):
        return None
    conditioning = denoiser.get("conditioning")
    return tuple(conditioning) if conditioning is not None else _default_conditioning(), str(config["inputs"])


def conditioning_label(conditioning: tuple[str, ...], inputs: str) -> str:
    """The paper's names for the conditioning ablation (Tables 6-9) plus the token-sequence variant."""
    if set(conditioning) == {"add"}:
        return "addition"
    if set(conditioning) == {"concat"}:
        return "concatenation"
    if set(conditioning) == {"cross"}:
        return f"cross-attention ({'pooled token' if inputs == 'pooled' else 'token sequence'})"
    if tuple(conditioning) == _default_conditioning() and inputs == "tokens":
        return f"default ({' + '.join(conditioning)}, token sequence)"
    return f"conditioning=[{','.join(conditioning)}], inputs={inputs}"


def ablation_section(group: list[Run], root: str) -> tuple[list[str], list[dict]]:
    """One table per set of DiT runs that differ only in encoder.denoiser.conditioning / encoder.inputs
    (and bookkeeping): rows = conditioning, columns = MSE, PCC, top-1, top-5 averaged over subjects."""
    sets: dict[str, dict[tuple, list[Run]]] = {}
    for run in group:
        variant = _ablation_variant(run.config)
        if variant is None:
            continue
        rest = {k: v for k, v in flatten(run.config).items() if k not in ABLATED and k not in BOOKKEEPING}
        sets.setdefault(json.dumps(rest, sort_keys=True, default=str), {}).setdefault(variant, []).append(run)
    tables = [variants for variants in sets.values() if len(variants) > 1]
    if not tables:
        return [], []
    lines = ["", "### Conditioning ablation", "",
             "As the paper's Tables 6-9: DiT runs that differ only in how the image conditions the denoiser "
             "(`encoder.denoiser.conditioning`, `encoder.inputs`); every value is the mean over the subjects "
             "with a run (`subjects`), read from metrics.json."]
    rows_csv = []
    for variants in tables:
        labels = {v: conditioning_label(*v) for v in variants}
        clash = {lab for lab in labels.values() if list(labels.values()).count(lab) > 1}
        labels = {v: f"{lab}, inputs={v[1]}" if lab in clash else lab for v, lab in labels.items()}
        rows = []
        for variant, runs in variants.items():
            means = {k: _mean(r.metrics["encoder"][k] for r in runs) for k in ABLATION_KEYS}
            subjects = sorted(r.subject for r in runs)
            rows.append([labels[variant], *(_num(means[k]) for k in ABLATION_KEYS), ", ".join(subjects)])
            rows_csv.append({"dataset": root, "conditioning": labels[variant], "denoiser.conditioning":
                             "[" + ",".join(variant[0]) + "]", "inputs": variant[1],
                             "subjects": " ".join(subjects), "runs": " ".join(str(r.path) for r in runs), **means})
        names = ", ".join(dict.fromkeys(r.label for runs in variants.values() for r in runs))
        lines += ["", f"Runs: {names}.", "", md_table(["conditioning", *ABLATION_KEYS.values(), "subjects"], rows)]
    return lines, rows_csv


def sampler_section(sweeps: dict[Run, dict[tuple[str, int], dict]], root: str) -> tuple[list[str], list[dict]]:
    """Per diffusion run: its saved sampler (metrics.json) and every swept (sampler, steps)."""
    if not sweeps:
        return [], []
    header = ["sampler", "steps", *(ABLATION_KEYS[k] for k in SAMPLER_KEYS), "s per image"]
    lines = ["", "### Samplers", "",
             "Each diffusion run's saved encoder generates its own subject's test split again with every "
             "sampler x number of steps (`samplers`, `sampler_steps`); guidance and the number of averaged "
             "samples stay as saved. The first row is the run as trained (metrics.json). Seconds per image "
             "were measured when the cell was computed (cached with it), on that machine."]
    rows_csv = []
    for run, cells in sweeps.items():
        saved = run.metrics["encoder"]
        rows = [[f"{run.config['sampler']} (saved)", str(run.config["sampling_steps"]),
                 *(_num(saved[k]) for k in SAMPLER_KEYS), _num(saved.get("generate_s_per_image"))]]
        for (sampler, steps), m in cells.items():
            rows.append([sampler, str(steps), *(_num(m[k]) for k in SAMPLER_KEYS), _num(m["generate_s_per_image"])])
            rows_csv.append({"dataset": root, "encoder": run.label, "subject": run.subject, "run": str(run.path),
                             "sampler": sampler, "steps": steps, **m})
        lines += ["", f"#### {run.label}, {run.subject}", "", md_table(header, rows)]
    return lines, rows_csv


