"""Putting the report together: one section per dataset, psim-eval folders, report.md and the CSVs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..eval.report_section import eval_section, split_runs
from ..plots import channel_time_maps, topomap_grid
from .loop_runs import loop_section, split_loop_runs
from .runs import BASELINE, CACHE, EEG_LOADER, Run, dataset_config, load_runs
from .scoring import DatasetLoader, short_hash, evaluate_on_subject, sampler_cells
from .sections import (ablation_section, cross_section, definitions, md_table, label_order, ridge_section,
                       sampler_section, within_section, write_csv)
from .single_trials import single_trial_section

def _dataset_section(root: str, group: list[Run], out: Path, seed: int | None, image_root: str | None,
                     tag: str, samplers: list[str] = (), sampler_steps: list[int] = ()) -> tuple[list[str], dict]:
    """Markdown lines and CSV / Runs-table rows (by file: within, cross, ablation, samplers, runs) of one
    dataset; draws its topography PNGs."""
    order = label_order(r.label for r in group)
    group = sorted(group, key=lambda r: (order.index(r.label), r.subject))
    subjects = sorted({r.subject for r in group})
    within: dict[str, dict[str, dict]] = {}  # label -> subject -> metrics
    sources: dict[str, dict[str, Run]] = {}  # label -> subject -> run
    ceilings, origin = {}, {}
    for run in group:
        if run.subject in sources.get(run.label, {}):
            raise ValueError(f"two runs of {run.label} on {root} {run.subject}: "
                             f"{sources[run.label][run.subject].path} and {run.path}; pass one")
        sources.setdefault(run.label, {})[run.subject] = run
        within.setdefault(run.label, {})[run.subject] = run.metrics["encoder"]
        origin[(run.label, run.subject)] = run.path
        if run.subject not in within.setdefault(BASELINE, {}):  # every run holds the floor; one per subject
            within[BASELINE][run.subject] = run.metrics[BASELINE]
            origin[(BASELINE, run.subject)] = run.path
        ceilings[run.subject] = run.metrics["noise_ceiling"]
    within_rows = [{"dataset": root, "encoder": label, "subject": s, "run": str(origin[(label, s)]), **m,
                    "noise_ceiling": ceilings[s]["noise_ceiling"]} for label in label_order(within) for s, m in within[label].items()]
    run_rows = [[f"`{r.path}`", r.label, r.subject, f"{r.metrics['train_s']:.1f}", f"`{r.command}`"] for r in group]

    cross: dict[str, dict[tuple[str, str], dict]] = {label: {} for label in sources}
    figures, r_figures = [], []
    sweeps: dict[Run, dict] = {}
    loader = DatasetLoader()
    for target in subjects:
        # every run whose encoder has runs on this subject: its own subject, or a cross-subject cell
        todo = [r for r in group if target in sources[r.label]]
        own = next(r for r in group if r.subject == target)  # the target's data as its own runs were trained on
        cfg = dataset_config(own.metrics, image_root=image_root)
        summary, info, results = evaluate_on_subject(cfg, todo, out, seed, loader)
        if samplers and sampler_steps:
            for run in (r for r in group if r.subject == target and r.diffusion):
                sweeps[run] = sampler_cells(run, dataset_config(run.metrics, image_root=image_root),
                                            list(samplers), list(sampler_steps), out, seed, loader)
        for run, result in results.items():
            cross[run.label][(run.subject, target)] = result["metrics"]
        rows = {"train average": np.array(summary["train_average"]),
                "test average": np.array(summary["test_average"])}
        rows.update({f"generated: {r.label}": np.array(results[r]["generated_mean"])
                     for r in group if r.subject == target})
        rows["test - train"] = rows["test average"] - rows["train average"]
        fig = topomap_grid(rows, info, np.array(summary["times"]),
                           title=f"{target}: mean over images, 100 ms windows")
        figures.append(f"topomaps_{tag}{target}.png")
        fig.savefig(out / figures[-1], dpi=100)
        maps = {"noise ceiling (split halves)": np.array(summary["ceiling_map"], dtype=float)}
        maps.update({r.label: np.array(results[r]["r_map"]) for r in group
                     if r.subject == target and results[r].get("r_map") is not None})
        fig = channel_time_maps(maps, np.array(summary["times"]),
                                title=f"{target}: Pearson r across test images, per channel and time point")
        r_figures.append(f"across_image_r_{tag}{target}.png")
        fig.savefig(out / r_figures[-1], dpi=100)

    n_test = group[0].metrics["dataset"]["n_test"]
    ablation_lines, ablation_rows = ablation_section(group, root)
    sampler_lines, sampler_rows = sampler_section(sweeps, root)
    lines = ["", f"## {group[0].metrics['dataset']['description']}: `{root}`", "",
             f"{len(subjects)} subject(s), {n_test} test images.", "",
             *within_section(within, ceilings, subjects, n_test), *ridge_section(within), *ablation_lines,
             *sampler_lines, "", "### Cross-subject"]
    multi = [label for label in label_order(sources) if len(sources[label]) > 1]
    if not multi:
        lines += ["", "No encoder has runs on several subjects."]
    cross_rows = []
    for label in multi:
        subs = sorted(sources[label])
        lines += cross_section(label, subs, cross[label], within[label])
        cross_rows += [{"dataset": root, "encoder": label, "source_subject": s, "target_subject": t,
                        "source_run": str(sources[label][s].path), **cross[label][(s, t)]} for s in subs for t in subs]
    lines += ["", "### Topographies", "",
              "As the paper's Figure 3 (`mne.viz.plot_topomap`): rows are the mean over training images, the mean "
              "over test images, each encoder's generated signal averaged over the test images, and test minus "
              "train; columns are 100 ms windows from stimulus onset. Each row has its own colour scale, "
              "symmetric about 0, in the data files' units: read the colour bars before comparing amplitudes."]
    lines += [f"\n![{name[:-4]}]({name})" for name in figures]
    lines += ["", "### Across-image r", "",
              "Per channel and time point, Pearson r across the test images between each encoder's generated signal "
              "and the measured test average (z-scored): the evoked response every image shares cancels, so this "
              "shows where and when a model follows the images. The top row is the split-half noise ceiling "
              "(Spearman-Brown corrected, equal halves), what a noise-free model could reach; metrics.json keeps "
              "the means (`r_across_images`, `r_across_images_fraction` = mean r / mean ceiling)."]
    lines += [f"\n![{name[:-4]}]({name})" for name in r_figures]
    trial_lines, trial_rows = single_trial_section(group, out, tag)
    lines += trial_lines
    return lines, {"within": within_rows, "cross": cross_rows, "ablation": ablation_rows, "samplers": sampler_rows,
                   "single_trials": trial_rows, "runs": run_rows}


def build_report(runs: list[Path], out: Path, seed: int | None = None, image_root: str | None = None,
                 samplers: list[str] = (), sampler_steps: list[int] = ()) -> Path:
    """Write ``out/report.md``, ``within_subject.csv``, ``cross_subject.csv`` and one topography PNG per subject
    (``ablation.csv`` / ``samplers.csv`` when those sections are present).

    runs: psim-train output folders, or folders whose subfolders are runs.
    seed: generation seed for re-evaluation; None uses each encoder's own (the one psim-train scored
      with), so the cross-subject diagonal reproduces metrics.json.
    image_root: the datasets' image folder when not the one recorded in metrics.json (older runs:
      ``<dataset root>/images``).
    samplers, sampler_steps: sweep every diffusion run over these samplers x numbers of steps (both
      non-empty; it generates again, cached); default off.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if bool(samplers) != bool(sampler_steps):
        raise ValueError(f"samplers={list(samplers)} and sampler_steps={list(sampler_steps)}: give both or neither")
    loop_dirs, rest, skipped = split_loop_runs(runs)  # psim-loop runs (summary.json + frames.jsonl): their own table
    eval_dirs, train_runs = split_runs(rest)  # psim-eval folders (results.csv) get their own section
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in load_runs(train_runs):
        groups.setdefault(run.dataset_key, []).append(run)
    # sections of one loader together, THINGS-EEG2 first, then the others (MEG ...) in the order given
    targets = list(dict.fromkeys([EEG_LOADER, *(dataset_config(g[0].metrics)["_target_"] for g in groups.values())]))
    keys = sorted(groups, key=lambda k: targets.index(dataset_config(groups[k][0].metrics)["_target_"]))

    text = ["# Evaluation report", "",
            f"Built by `psim-report runs=[{','.join(map(str, runs))}] out={out}"
            + (f" seed={seed}" if seed is not None else "")
            + (f" samplers=[{','.join(samplers)}] sampler_steps=[{','.join(map(str, sampler_steps))}]"
               if samplers else "") + "`.", "", *definitions(out)]
    parts: dict[str, list] = {"within": [], "cross": [], "ablation": [], "samplers": [], "single_trials": [],
                              "runs": []}
    for key in keys:
        description, root = key
        tag = "" if len(groups) == 1 else f"{Path(root).name}-{short_hash(key)}_"
        lines, rows = _dataset_section(root, groups[key], out, seed, image_root, tag, samplers, sampler_steps)
        text += lines
        for name, part in rows.items():
            parts[name] += part
    text += eval_section(eval_dirs, out)
    text += loop_section(loop_dirs, out, skipped)
    files = ["`within_subject.csv`", "`cross_subject.csv`"]
    files += [f"`{name}.csv`" for name in ("ablation", "samplers", "single_trials") if parts[name]]
    text += ["", "## Runs", "",
             "Commands rebuilt from each run's encoder/config.yaml against today's configs (add the run's "
             "`dataset=...` and `dataset.image_root=...` when they were not the defaults).", "",
             md_table(["run", "encoder", "subject", "train s", "command"], parts["runs"]), "",
             f"Files: {', '.join(files)} (every number above, full precision), "
             f"`{CACHE}/` (cached re-evaluations: delete it to regenerate)."] if train_runs else []
    write_csv(out / "within_subject.csv", parts["within"])
    for name, rows in (("cross_subject", parts["cross"]), ("ablation", parts["ablation"]),
                       ("samplers", parts["samplers"]), ("single_trials", parts["single_trials"])):
        if rows:
            write_csv(out / f"{name}.csv", rows)
        else:  # no stale table from an earlier build
            (out / f"{name}.csv").unlink(missing_ok=True)
    (out / "report.md").write_text("\n".join(text) + "\n")
    return out / "report.md"


def report_main(cfg) -> Path:
    """What ``psim-report`` does with its composed config (configs/report.yaml)."""
    runs = [cfg.runs] if isinstance(cfg.runs, str) else list(cfg.runs)  # runs=DIR as well as runs=[DIR,...]
    path = build_report(runs, Path(cfg.out), seed=cfg.seed, image_root=cfg.get("image_root"),
                        samplers=list(cfg.get("samplers") or []), sampler_steps=list(cfg.get("sampler_steps") or []))
    print(f"report written to {path}")
    return path
