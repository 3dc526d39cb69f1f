"""Evaluation report: saved psim-train runs -> report.md, CSVs and topography PNGs (see docs/report.md).

Within-subject numbers are read from each run's metrics.json, never recomputed. The cross-subject
matrix, the generated signals of the topographies and the (opt-in) sampler sweep need each saved
encoder to generate again; those results are cached as JSON in ``<out>/cache`` (keyed by the weights
file, the dataset config, the target data files and the seed), so rebuilding a report only redraws it.
Each run's dataset is rebuilt from the Hydra config its metrics.json records (``dataset_config``), so
EEG (THINGS-EEG2) and MEG (THINGS-MEG) runs both work; older runs without it are read as THINGS-EEG2.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import mne
import numpy as np
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from .checkpoint import atomic_write_text, load_component
from .data.things_eeg2 import subject_dir_name
from .eval.report_section import eval_section, split_runs
from .evaluate import evaluate_encoder, load_test_images
from .plots import topomap_grid

METRICS = {  # metrics.json key -> table title, in the order of the report
    "mse": "MSE (lower is better)",
    "pcc": "PCC, flattened",
    "pcc_channel": "PCC per channel",
    "top1": "top-1 identification",
    "top5": "top-5 identification",
    "pcc_fraction_of_ceiling": "PCC as a fraction of the noise ceiling",
}
COMPARED = ("mse", "pcc", "pcc_channel", "top1", "top5")  # pcc/ceiling orders encoders as pcc does
CROSS = ("mse", "pcc")
BASELINE = "mean_erp"
RIDGE = "ridge"
# training bookkeeping that does not change the model: left out of row labels
BOOKKEEPING = ("train.checkpoint_dir", "train.checkpoint_every", "train.resume")
GROUPS = ("features", "train")  # config groups an encoder config may take whole (features: ${features})
README = Path(__file__).resolve().parents[1] / "README.md"
CACHE = "cache"
EEG_LOADER = "prosthesis_sim.data.things_eeg2.load_things_eeg2"  # runs whose metrics.json lacks dataset_config
ABLATED = ("denoiser.conditioning", "inputs")  # encoder config keys the conditioning ablation varies
ABLATION_KEYS = {"mse": "MSE", "pcc": "PCC", "top1": "top-1", "top5": "top-5"}
SAMPLER_KEYS = ("mse", "pcc", "top1", "top5")


@dataclass(frozen=True, eq=False)  # hashed by identity: runs key dicts
class Run:
    """One psim-train output folder; its row label and command are rebuilt from its encoder config."""

    path: Path
    metrics: dict
    label: str
    command: str
    config: dict  # the saved encoder/config.yaml

    @property
    def dataset_key(self) -> tuple[str, str]:
        """Runs share a report section when they share dataset description (modality, format) and root."""
        return self.metrics["dataset"]["description"], self.root

    @property
    def diffusion(self) -> bool:
        """Whether the encoder samples (has a sampler and a number of steps to sweep)."""
        return "sampler" in self.config and "sampling_steps" in self.config

    @property
    def root(self) -> str:
        return self.metrics["dataset"]["root"]

    @property
    def subject(self) -> str:
        return self.metrics["dataset"]["subject"]


# --- reading runs -----------------------------------------------------------------------------------

def find_runs(paths: list[Path]) -> list[Path]:
    """Run folders (holding metrics.json) among ``paths`` and their direct subfolders, in order."""
    found = []
    for path in map(Path, paths):
        if (path / "metrics.json").is_file():
            found.append(path)
            continue
        inner = sorted(p for p in path.glob("*") if (p / "metrics.json").is_file())
        if not inner:
            raise FileNotFoundError(f"{path}: no metrics.json here or in its subfolders (not a psim-train run)")
        found.extend(inner)
    return found


def load_runs(paths: list[Path]) -> list[Run]:
    """Every run in ``paths``, labelled by its encoder option plus only the settings that tell it apart
    from other runs of the same option (the full settings are in its command)."""
    found = []
    for path in find_runs(paths):
        metrics = json.loads((path / "metrics.json").read_text())
        saved = OmegaConf.to_container(OmegaConf.load(path / "encoder" / "config.yaml"))
        overrides = describe_encoder(saved)
        if overrides is None:
            overrides = [f"<no encoder option matches {path / 'encoder' / 'config.yaml'}>"]
            option, settings = metrics["encoder_name"], ()
        else:
            option = overrides[0].split("=", 1)[1]
            settings = tuple(a for a in overrides[1:] if a.lstrip("~+").split("=")[0] not in BOOKKEEPING)
        dataset = _dataset_option(dataset_config(metrics)["_target_"])
        command = " ".join(["psim-train", *overrides, *([f"dataset={dataset}"] if dataset else []),
                            f"dataset.root={metrics['dataset']['root']}",
                            f"dataset.subject={_subject_number(metrics['dataset']['subject'])}", f"out={path}"])
        found.append((path, metrics, option, settings, command, saved))
    variants: dict[str, set] = {}
    for _, _, option, settings, _, _ in found:
        variants.setdefault(option, set()).add(settings)
    runs = []
    for path, metrics, option, settings, command, saved in found:
        shared = set.intersection(*(set(v) for v in variants[option]))
        own = [a for a in settings if a not in shared]
        runs.append(Run(path, metrics, f"{option} ({', '.join(own)})" if own else option, command, saved))
    return runs


def dataset_config(metrics: dict, subject: str | None = None, image_root: str | None = None) -> dict:
    """The Hydra dataset config (``_target_`` and arguments) a run was trained on, from its metrics.json,
    for ``subject`` (default: the run's own) and ``image_root`` (default: the recorded one). Runs written
    before metrics.json recorded ``dataset_config`` are THINGS-EEG2 at the recorded root."""
    cfg = dict(metrics.get("dataset_config") or {"_target_": EEG_LOADER, "root": metrics["dataset"]["root"]})
    cfg["subject"] = subject if subject is not None else metrics["dataset"]["subject"]
    if image_root is not None:
        cfg["image_root"] = image_root
    return cfg


def load_dataset(cfg: dict):
    """``hydra.utils.instantiate`` of a dataset config (dataset_config's)."""
    return instantiate(OmegaConf.create(cfg))


@cache
def _dataset_option(target: str) -> str | None:
    """The configs/dataset option with this loader, when it is not the default (things_eeg2)."""
    for name in _options("dataset"):
        if OmegaConf.load(resources.files("configs").joinpath("dataset", f"{name}.yaml")).get("_target_") == target:
            return None if name == "things_eeg2" else name
    return None


def _subject_number(subject: str) -> str:
    match = re.fullmatch(r"sub-0*(\d+)", subject)
    return match.group(1) if match else subject


def _compose_train(overrides: list[str]):
    """Compose the psim-train config; inside a Hydra app (psim-report) Hydra is already initialised."""
    if GlobalHydra.instance().is_initialized():
        return compose("train", overrides=overrides)
    with initialize_config_module("configs", version_base="1.3"):
        return compose("train", overrides=overrides)


def _options(group: str) -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("configs").joinpath(group).iterdir() if p.name.endswith(".yaml"))


@cache
def _configs() -> tuple[list[tuple[str, dict, dict]], dict[str, list[tuple[str | None, dict]]]]:
    """Every encoder option as (name, resolved config, raw config), and every option of GROUPS as
    (name, resolved subtree), the default first under the name None (so a tie names no option)."""
    encoders = []
    for name in _options("encoder"):
        cfg = _compose_train([f"encoder={name}"])
        encoders.append((name, OmegaConf.to_container(cfg.encoder, resolve=True),
                         OmegaConf.to_container(cfg.encoder, resolve=False)))
    groups = {}
    for group in GROUPS:
        trees = [(None, _compose_train([])[group])]
        trees += [(name, _compose_train([f"{group}={name}"])[group]) for name in _options(group)]
        groups[group] = [(name, OmegaConf.to_container(tree, resolve=True)) for name, tree in trees]
    return encoders, groups


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _diffs(mine: dict, default: dict) -> list[str]:
    """Flattened keys of ``mine`` whose values differ from ``default``. Keys ``mine`` lacks are not
    differences: a config saved before an option existed ran with what is now its default."""
    return [k for k in mine if mine[k] != default.get(k, ...)
            # the default checkpoint folder lies under the run's `out`, which the report may name differently
            and not (k == "train.checkpoint_dir" and None not in (mine[k], default.get(k)))]


def _distance(mine: dict, diffs: list[str]) -> tuple[int, int]:
    """(differing choices, differing values): a reduced dit_paper run stays dit_paper, not dit."""
    numbers = sum(isinstance(mine[k], (int, float)) and not isinstance(mine[k], bool) for k in diffs)
    return len(diffs) - numbers, len(diffs)


def _override_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    text = str(value)
    return f"'{text}'" if re.search(r"[\s,\[\]{}()=:'\"]", text) else text


def describe_encoder(saved: dict) -> list[str] | None:
    """psim-train overrides (``encoder=NAME`` first) that rebuild a saved, resolved encoder config with
    today's configs.

    Base: the encoder option with the same target and the fewest differing choices (strings, lists,
    booleans: architecture, conditioning, sampler), then the fewest differing numbers (sizes, epochs,
    which runs shrink most often), after choosing for
    each subtree it takes whole from a config group (``features: ${features}``, ``train: ${train}``)
    the closest option of that group. Every value still differing becomes an override, named at the top
    level when the encoder config takes it from there (``seed: ${seed}``). None if no option matches.
    """
    encoders, groups = _configs()
    mine = _flatten(saved)
    best = None
    for name, resolved, raw in encoders:
        if resolved.get("_target_") != saved.get("_target_"):
            continue
        default, args = dict(resolved), [f"encoder={name}"]
        for group, options in groups.items():
            if raw.get(group) == f"${{{group}}}" and isinstance(saved.get(group), dict):
                theirs = _flatten({group: saved[group]})
                option, tree = min(options, key=lambda o: len(_diffs(theirs, _flatten({group: o[1]}))))
                if option is not None:
                    args.append(f"{group}={option}")
                    default[group] = tree
        diffs = _diffs(mine, _flatten(default))
        if best is None or _distance(mine, diffs) < _distance(mine, best[1]):
            best = (args, diffs, raw, _flatten(default))
    if best is None:
        return None
    args, diffs, raw, default = best
    for key in diffs:
        top = key.split(".")[0]
        name = key if raw.get(top) == f"${{{top}}}" else f"encoder.{key}"
        args.append(f"{'+' if key not in default else ''}{name}={_override_value(mine[key])}")
    return args


# --- evaluating saved encoders (cached) --------------------------------------------------------------

def _short_hash(text) -> str:
    return hashlib.sha1(str(text).encode()).hexdigest()[:8]


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _read_cached(path: Path, key: dict):
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            return stored["value"]
    return None


def _write_cached(path: Path, key: dict, value):
    atomic_write_text(path, json.dumps({"key": key, "value": value}))
    return value


class _Recording:
    """Passes generate() through and keeps the output: one generation serves the scores and the maps."""

    def __init__(self, encoder):
        self.encoder = encoder

    def generate(self, images, seed=None, **kwargs):  # kwargs: whatever evaluate_encoder passes (paths=...)
        self.generated = self.encoder.generate(images, seed=seed, **kwargs)
        return self.generated


def _score(run: Run, data, images, seed: int | None) -> dict:
    """Scores of run's encoder on data's test split (evaluate_encoder), plus its mean generated signal
    when data is the run's own subject (for the topographies)."""
    encoder = _Recording(load_component(run.path / "encoder"))
    metrics = evaluate_encoder(encoder, data, images, seed=seed)
    own = data.subject == run.subject
    return {"metrics": metrics, "generated_mean": encoder.generated.mean(axis=0).tolist() if own else None}


def _data_files(cfg: dict) -> list:
    """Name, size and mtime of the subject's data files: everything in ``<root>/sub-XX/`` plus a
    ``preprocessed_P<n>-epo*.fif`` in ``<root>`` (THINGS-MEG keeps its epochs files there)."""
    root, sub = Path(cfg["root"]), subject_dir_name(cfg["subject"])
    files = sorted(p for p in (root / sub).iterdir() if p.is_file()) if (root / sub).is_dir() else []
    number = re.search(r"(\d+)$", sub)
    if number:
        files += sorted(root.glob(f"preprocessed_P{int(number.group(1))}-epo*.fif"))
    return [[p.name, *_stat(p)] for p in files]


class _Loader:
    """Loads a dataset config and its test images on first use; keeps only the last one in memory."""

    def __init__(self):
        self.key, self.value = None, None

    def __call__(self, cfg: dict):
        key = json.dumps(cfg, sort_keys=True, default=str)
        if key != self.key:
            self.key, self.value = None, None  # free the previous subject first
            data = load_dataset(cfg)
            self.key, self.value = key, (data, load_test_images(data))
        return self.value


def evaluate_on_subject(cfg: dict, runs: list[Run], out: Path, seed: int | None,
                        loader=None) -> tuple[dict, mne.Info, dict[Run, dict]]:
    """The subject's average signals and mne.Info, and every run's scores on its test split, from the
    cache when valid. ``cfg``: the subject's dataset config (dataset_config).

    The subject's data are loaded (with ``loader``) only when something is missing, and at most once.
    """
    loader = loader or _Loader()
    sub = subject_dir_name(cfg["subject"])
    target = {"dataset": cfg, "files": _data_files(cfg)}
    stem = f"data-{_short_hash(json.dumps(cfg, sort_keys=True, default=str))}-{sub}"
    summary_job = (out / CACHE / f"{stem}.json", target)
    info_path = out / CACHE / f"{stem}-info.fif"
    jobs = {run: (out / CACHE / f"{run.path.name}-{_short_hash(run.path.resolve())}-on-{sub}.json",
                  {"run": str(run.path.resolve()), "weights": _stat(run.path / "encoder" / "weights.safetensors"),
                   "target": target, "seed": seed})
            for run in runs}
    summary = _read_cached(*summary_job) if info_path.is_file() else None
    results = {run: _read_cached(*job) for run, job in jobs.items()}
    missing = [run for run, result in results.items() if result is None]
    if summary is None or missing:
        data, images = loader(cfg)
        if summary is None:
            info_path.parent.mkdir(parents=True, exist_ok=True)
            mne.io.write_info(info_path, data.info, overwrite=True)
            summary = _write_cached(*summary_job, {
                "ch_names": data.ch_names, "sfreq": data.sfreq, "times": data.times.tolist(),
                "train_average": data.train_average().mean(axis=0).tolist(),
                "test_average": data.test_average().mean(axis=0).tolist()})
        for run in missing:
            results[run] = _write_cached(*jobs[run], _score(run, data, images, seed))
    return summary, mne.io.read_info(info_path, verbose="error"), results


def evaluate_sampler(encoder, data, images, sampler: str, steps: int, seed: int | None = None) -> dict:
    """evaluate_encoder with the diffusion encoder's sampler and number of steps set (restored after);
    every other sampling setting (guidance, samples averaged) stays as saved."""
    saved = encoder.sampler, encoder.sampling_steps
    encoder.sampler, encoder.sampling_steps = sampler, int(steps)
    try:
        return evaluate_encoder(encoder, data, images, seed=seed)
    finally:
        encoder.sampler, encoder.sampling_steps = saved


def sampler_cells(run: Run, cfg: dict, samplers: list[str], steps: list[int], out: Path, seed: int | None,
                  loader=None) -> dict[tuple[str, int], dict]:
    """(sampler, steps) -> evaluate_encoder's scores of the run's encoder on its own subject (``cfg``),
    each cached like a cross-subject cell; the encoder and the data are loaded only for missing cells."""
    loader = loader or _Loader()
    target = {"dataset": cfg, "files": _data_files(cfg)}
    common = {"run": str(run.path.resolve()), "weights": _stat(run.path / "encoder" / "weights.safetensors"),
              "target": target, "seed": seed}
    prefix = f"{run.path.name}-{_short_hash(run.path.resolve())}-sampler"
    jobs = {(s, int(n)): (out / CACHE / f"{prefix}-{s}-{n}.json", {**common, "sampler": s, "steps": int(n)})
            for s in samplers for n in steps}
    cells = {cell: _read_cached(*job) for cell, job in jobs.items()}
    missing = [cell for cell, value in cells.items() if value is None]
    if missing:
        data, images = loader(cfg)
        encoder = load_component(run.path / "encoder")
        for sampler, n in missing:
            cells[(sampler, n)] = _write_cached(*jobs[(sampler, n)],
                                                evaluate_sampler(encoder, data, images, sampler, n, seed))
    return cells


# --- writing ----------------------------------------------------------------------------------------

def _num(value) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.3f}"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _order(labels) -> list[str]:
    """Baselines first (as in the paper's tables), then encoders in the order their runs were given."""
    labels = list(dict.fromkeys(labels))
    return [x for x in (BASELINE, RIDGE) if x in labels] + [x for x in labels if x not in (BASELINE, RIDGE)]


def _within_section(within: dict[str, dict[str, dict]], ceilings: dict[str, float], subjects: list[str],
                    n_test: int) -> list[str]:
    """The paper's layout: one table per metric, rows = encoders, columns = subjects + average."""
    lines = ["### Within-subject", "",
             "Each encoder is trained and tested on the same subject; values from each run's metrics.json; "
             "`average` is the unweighted mean over the subjects with a value."]
    chance = {"top1": f" (chance {1 / n_test:.3f})", "top5": f" (chance {min(5, n_test) / n_test:.3f})"}
    for key, title in METRICS.items():
        rows = []
        for label in _order(within):
            vals = [within[label].get(s, {}).get(key) for s in subjects]
            rows.append([label, *map(_num, vals), _num(_mean(vals))])
        if key == "pcc":
            vals = [ceilings.get(s) for s in subjects]
            rows.append(["noise ceiling", *map(_num, vals), _num(_mean(vals))])
        lines += ["", f"#### {title}{chance.get(key, '')}", "", _md_table(["encoder", *subjects, "average"], rows)]
    if any(len(v) < len(subjects) for v in within.values()):
        lines += ["", "— : no run of that encoder on that subject."]
    return lines


def _ridge_section(within: dict[str, dict[str, dict]]) -> list[str]:
    """Flag every encoder that is not better than the ridge baseline on a metric (subject averages)."""
    if RIDGE not in within:
        return []
    lines = ["", "### Against the ridge baseline", "",
             "Averages over the subjects both encoders have runs on; lower MSE, higher everything else is better.", ""]
    for label in _order(within):
        common = [s for s in within[label] if s in within[RIDGE]]
        if label == RIDGE or not common:
            continue
        worse = []
        for key in COMPARED:
            mine = _mean(within[label][s][key] for s in common)
            ridge = _mean(within[RIDGE][s][key] for s in common)
            if not (mine < ridge if key == "mse" else mine > ridge):
                worse.append(f"{key} ({mine:.3f} vs {ridge:.3f})")
        verdict = f"does not beat ridge on {', '.join(worse)}" if worse else "beats ridge on every metric"
        lines.append(f"- {label} {verdict}; subjects {', '.join(common)}.")
    return lines


def _cross_section(label: str, subjects: list[str], scores: dict[tuple[str, str], dict],
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
                  _md_table(["trained on \\ tested on", *subjects, "mean", "std"], rows), ""]
    gap = max(abs(scores[(s, s)][k] - within[s][k]) for s in subjects for k in COMPARED)
    check = "reproduces" if gap < 1e-6 else "**does not reproduce**"
    lines.append(f"The diagonal {check} the runs' metrics.json (largest difference {gap:.2g}).")
    return lines


def _write_csv(path: Path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(rows)


def _definitions(out: Path) -> list[str]:
    link = os.path.relpath(README, out) if README.is_file() else "README.md"
    return [
        "## Metric definitions", "",
        f"Exactly as `prosthesis_sim/metrics.py` computes them (details: [README, Metrics]({link}#metrics)).", "",
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
    return tuple(OmegaConf.load(resources.files("configs") / "encoder" / "dit.yaml").denoiser.conditioning)


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


def _ablation_section(group: list[Run], root: str) -> tuple[list[str], list[dict]]:
    """One table per set of DiT runs that differ only in encoder.denoiser.conditioning / encoder.inputs
    (and bookkeeping): rows = conditioning, columns = MSE, PCC, top-1, top-5 averaged over subjects."""
    sets: dict[str, dict[tuple, list[Run]]] = {}
    for run in group:
        variant = _ablation_variant(run.config)
        if variant is None:
            continue
        rest = {k: v for k, v in _flatten(run.config).items() if k not in ABLATED and k not in BOOKKEEPING}
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
        lines += ["", f"Runs: {names}.", "", _md_table(["conditioning", *ABLATION_KEYS.values(), "subjects"], rows)]
    return lines, rows_csv


def _sampler_section(sweeps: dict[Run, dict[tuple[str, int], dict]], root: str) -> tuple[list[str], list[dict]]:
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
        lines += ["", f"#### {run.label}, {run.subject}", "", _md_table(header, rows)]
    return lines, rows_csv


def _dataset_section(root: str, group: list[Run], out: Path, seed: int | None, image_root: str | None,
                     tag: str, samplers: list[str] = (), sampler_steps: list[int] = ()) -> tuple[list[str], dict]:
    """Markdown lines and CSV / Runs-table rows (by file: within, cross, ablation, samplers, runs) of one
    dataset; draws its topography PNGs."""
    order = _order(r.label for r in group)
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
        ceilings[run.subject] = run.metrics["noise_ceiling"]["noise_ceiling"]
    within_rows = [{"dataset": root, "encoder": label, "subject": s, "run": str(origin[(label, s)]), **m,
                    "noise_ceiling": ceilings[s]} for label in _order(within) for s, m in within[label].items()]
    run_rows = [[f"`{r.path}`", r.label, r.subject, f"{r.metrics['train_s']:.1f}", f"`{r.command}`"] for r in group]

    cross: dict[str, dict[tuple[str, str], dict]] = {label: {} for label in sources}
    figures = []
    sweeps: dict[Run, dict] = {}
    loader = _Loader()
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

    n_test = group[0].metrics["dataset"]["n_test"]
    ablation_lines, ablation_rows = _ablation_section(group, root)
    sampler_lines, sampler_rows = _sampler_section(sweeps, root)
    lines = ["", f"## {group[0].metrics['dataset']['description']}: `{root}`", "",
             f"{len(subjects)} subject(s), {n_test} test images.", "",
             *_within_section(within, ceilings, subjects, n_test), *_ridge_section(within), *ablation_lines,
             *sampler_lines, "", "### Cross-subject"]
    multi = [label for label in _order(sources) if len(sources[label]) > 1]
    if not multi:
        lines += ["", "No encoder has runs on several subjects."]
    cross_rows = []
    for label in multi:
        subs = sorted(sources[label])
        lines += _cross_section(label, subs, cross[label], within[label])
        cross_rows += [{"dataset": root, "encoder": label, "source_subject": s, "target_subject": t,
                        "source_run": str(sources[label][s].path), **cross[label][(s, t)]} for s in subs for t in subs]
    lines += ["", "### Topographies", "",
              "As the paper's Figure 3 (`mne.viz.plot_topomap`): rows are the mean over training images, the mean "
              "over test images, each encoder's generated signal averaged over the test images, and test minus "
              "train; columns are 100 ms windows from stimulus onset. Each row has its own colour scale, "
              "symmetric about 0, in the data files' units: read the colour bars before comparing amplitudes."]
    lines += [f"\n![{name[:-4]}]({name})" for name in figures]
    return lines, {"within": within_rows, "cross": cross_rows, "ablation": ablation_rows, "samplers": sampler_rows,
                   "runs": run_rows}


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
    eval_dirs, train_runs = split_runs(runs)  # psim-eval folders (results.csv) get their own section
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
               if samplers else "") + "`.", "", *_definitions(out)]
    parts: dict[str, list] = {"within": [], "cross": [], "ablation": [], "samplers": [], "runs": []}
    for key in keys:
        description, root = key
        tag = "" if len(groups) == 1 else f"{Path(root).name}-{_short_hash(key)}_"
        lines, rows = _dataset_section(root, groups[key], out, seed, image_root, tag, samplers, sampler_steps)
        text += lines
        for name, part in rows.items():
            parts[name] += part
    text += eval_section(eval_dirs, out)
    files = ["`within_subject.csv`", "`cross_subject.csv`"]
    files += [f"`{name}.csv`" for name in ("ablation", "samplers") if parts[name]]
    text += ["", "## Runs", "",
             "Commands rebuilt from each run's encoder/config.yaml against today's configs (add the run's "
             "`dataset=...` and `dataset.image_root=...` when they were not the defaults).", "",
             _md_table(["run", "encoder", "subject", "train s", "command"], parts["runs"]), "",
             f"Files: {', '.join(files)} (every number above, full precision), "
             f"`{CACHE}/` (cached re-evaluations: delete it to regenerate)."] if train_runs else []
    _write_csv(out / "within_subject.csv", parts["within"])
    for name, rows in (("cross_subject", parts["cross"]), ("ablation", parts["ablation"]),
                       ("samplers", parts["samplers"])):
        if rows:
            _write_csv(out / f"{name}.csv", rows)
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
