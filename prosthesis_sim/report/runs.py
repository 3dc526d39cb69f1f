"""Reading psim-train runs: their metrics, dataset config, and a row label rebuilt from the encoder config."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ..checkpoint import read_config


BASELINE = "mean_erp"
# training bookkeeping that does not change the model: left out of row labels
BOOKKEEPING = ("train.checkpoint_dir", "train.checkpoint_every", "train.resume")
GROUPS = ("features", "train")  # config groups an encoder config may take whole (features: ${features})
CACHE = "cache"
EEG_LOADER = "prosthesis_sim.data.things_eeg2.load_things_eeg2"  # runs whose metrics.json lacks dataset_config


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
        saved = OmegaConf.to_container(read_config(path / "encoder" / "config.yaml"))
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
        if OmegaConf.load(resources.files("prosthesis_sim.configs").joinpath("dataset", f"{name}.yaml")).get("_target_") == target:
            return None if name == "things_eeg2" else name
    return None


def _subject_number(subject: str) -> str:
    match = re.fullmatch(r"sub-0*(\d+)", subject)
    return match.group(1) if match else subject


def _compose_train(overrides: list[str]):
    """Compose the psim-train config; inside a Hydra app (psim-report) Hydra is already initialised."""
    if GlobalHydra.instance().is_initialized():
        return compose("train", overrides=overrides)
    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        return compose("train", overrides=overrides)


def _options(group: str) -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("prosthesis_sim.configs").joinpath(group).iterdir() if p.name.endswith(".yaml"))


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


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
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
    mine = flatten(saved)
    best = None
    for name, resolved, raw in encoders:
        if resolved.get("_target_") != saved.get("_target_"):
            continue
        default, args = dict(resolved), [f"encoder={name}"]
        for group, options in groups.items():
            if raw.get(group) == f"${{{group}}}" and isinstance(saved.get(group), dict):
                theirs = flatten({group: saved[group]})
                option, tree = min(options, key=lambda o: len(_diffs(theirs, flatten({group: o[1]}))))
                if option is not None:
                    args.append(f"{group}={option}")
                    default[group] = tree
        diffs = _diffs(mine, flatten(default))
        if best is None or _distance(mine, diffs) < _distance(mine, best[1]):
            best = (args, diffs, raw, flatten(default))
    if best is None:
        return None
    args, diffs, raw, default = best
    for key in diffs:
        top = key.split(".")[0]
        name = key if raw.get(top) == f"${{{top}}}" else f"encoder.{key}"
        args.append(f"{'+' if key not in default else ''}{name}={_override_value(mine[key])}")
    return args


