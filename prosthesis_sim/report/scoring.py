"""Evaluating saved encoders again (cross-subject, topographies, sampler sweeps), cached as JSON in
``<out>/cache`` keyed by the weights file, the dataset config, the target data files and the seed."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import mne

from ..checkpoint import atomic_write_text, load_component
from ..data.things_eeg2 import subject_dir_name
from ..evaluate import evaluate_encoder, load_test_images, takes_cache_dir
from ..metrics import across_image_ceiling, across_image_r
from .runs import CACHE, Run, load_dataset

CACHE_VERSION = 2  # what a cached evaluation holds: 2 adds the across-image r maps and its ceiling

# --- evaluating saved encoders (cached) --------------------------------------------------------------

def short_hash(text) -> str:
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

    def generate(self, images, seed=None, cache_dir=None, **kwargs):  # kwargs: what evaluate_encoder passes (paths=...)
        if cache_dir is not None and takes_cache_dir(self.encoder):  # cached test features, as in evaluate_encoder
            kwargs["cache_dir"] = cache_dir
        self.generated = self.encoder.generate(images, seed=seed, **kwargs)
        return self.generated


def _score(run: Run, data, images, seed: int | None) -> dict:
    """Scores of run's encoder on data's test split (evaluate_encoder), plus its mean generated signal
    when data is the run's own subject (for the topographies)."""
    encoder = _Recording(load_component(run.path / "encoder", data))
    metrics = evaluate_encoder(encoder, data, images, seed=seed)
    own = data.subject == run.subject
    norm = data.normalizer
    r_map = across_image_r(norm(encoder.generated), norm(data.test_average())) if own else None
    return {"metrics": metrics, "generated_mean": encoder.generated.mean(axis=0).tolist() if own else None,
            "r_map": None if r_map is None else r_map.tolist()}


def _data_files(cfg: dict) -> list:
    """Name, size and mtime of the subject's data files: everything in ``<root>/sub-XX/`` plus a
    ``preprocessed_P<n>-epo*.fif`` in ``<root>`` (THINGS-MEG keeps its epochs files there)."""
    root, sub = Path(cfg["root"]), subject_dir_name(cfg["subject"])
    files = sorted(p for p in (root / sub).iterdir() if p.is_file()) if (root / sub).is_dir() else []
    number = re.search(r"(\d+)$", sub)
    if number:
        files += sorted(root.glob(f"preprocessed_P{int(number.group(1))}-epo*.fif"))
    return [[p.name, *_stat(p)] for p in files]


class DatasetLoader:
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
    loader = loader or DatasetLoader()
    sub = subject_dir_name(cfg["subject"])
    target = {"dataset": cfg, "files": _data_files(cfg), "version": CACHE_VERSION}
    stem = f"data-{short_hash(json.dumps(cfg, sort_keys=True, default=str))}-{sub}"
    summary_job = (out / CACHE / f"{stem}.json", target)
    info_path = out / CACHE / f"{stem}-info.fif"
    jobs = {run: (out / CACHE / f"{run.path.name}-{short_hash(run.path.resolve())}-on-{sub}.json",
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
                "test_average": data.test_average().mean(axis=0).tolist(),
                "ceiling_map": across_image_ceiling(data.normalizer(data.test_repetitions())).tolist()})
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
    loader = loader or DatasetLoader()
    target = {"dataset": cfg, "files": _data_files(cfg)}
    common = {"run": str(run.path.resolve()), "weights": _stat(run.path / "encoder" / "weights.safetensors"),
              "target": target, "seed": seed}
    prefix = f"{run.path.name}-{short_hash(run.path.resolve())}-sampler"
    jobs = {(s, int(n)): (out / CACHE / f"{prefix}-{s}-{n}.json", {**common, "sampler": s, "steps": int(n)})
            for s in samplers for n in steps}
    cells = {cell: _read_cached(*job) for cell, job in jobs.items()}
    missing = [cell for cell, value in cells.items() if value is None]
    if missing:
        data, images = loader(cfg)
        encoder = load_component(run.path / "encoder", data)
        for sampler, n in missing:
            cells[(sampler, n)] = _write_cached(*jobs[(sampler, n)],
                                                evaluate_sampler(encoder, data, images, sampler, n, seed))
    return cells


