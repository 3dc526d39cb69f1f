"""psim-eval's signals: each encoder's test signals, generated once and cached on disk.

The cache key is the encoder's saved weights (sha256), its settings (sampler, steps ... which change
the signals without a refit), the test image files, the seed and what is generated (the expected
response, or the average of R sampled trials): never the output folder.

Equal noise: the measured test average is a mean over R repetitions, so it carries noise that a
generated expected response does not. An encoder that samples trials (``sample_trials``) also gets a
row ``NAME@avgR``: the average of R of its trials per image, the measured signals' noise level when its
trials are single trials (an encoder fitted on single training trials, ``dataset.average_train=false``,
e.g. ``encoder=dit_trials``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from ..checkpoint import CONFIG, WEIGHTS, atomic_write, fit_cached, load_component, read_config, to_container
from ..features.cache import cache_key

log = logging.getLogger(__name__)


@dataclass
class Signals:
    """Signals for the test images (n, channels, times) and the encoder's time per image (ms)."""

    array: np.ndarray
    ms_per_image: float


def equal_noise_name(name: str, repetitions: int) -> str:
    """The row of an encoder's trials averaged over ``repetitions`` (the measured test average's count)."""
    return f"{name}@avg{repetitions}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _encoder_dir(path) -> Path:
    """A saved encoder folder, or a psim-train run folder holding ``encoder/``."""
    path = Path(path)
    if not (path / WEIGHTS).is_file() and (path / "encoder" / WEIGHTS).is_file():
        return path / "encoder"
    return path


def load_encoder(cfg, name: str, data, cache: Path):
    """(encoder, its weights file, its settings as text, its config as a dict): loaded from
    ``encoder_dirs[name]`` or fitted through fit_cached. The settings include what the fit cache ignores
    (sampler, steps, guidance ...), which changes the generated signals."""
    dirs = cfg.get("encoder_dirs") or {}
    if name in dirs:
        directory = _encoder_dir(dirs[name])
        try:
            encoder = load_component(directory, data)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"encoder_dirs.{name}={dirs[name]}: {err} (give a psim-train output folder "
                                    "or its encoder/ folder)") from err
        config = OmegaConf.to_container(read_config(directory / CONFIG), resolve=False)
        return encoder, directory / WEIGHTS, (directory / CONFIG).read_text(), config
    encoder, directory = fit_cached(cfg.encoders[name], data, cache, "encoder")
    config = to_container(cfg.encoders[name])
    return encoder, Path(directory) / WEIGHTS, json.dumps(config, sort_keys=True), config


def check_signals(name: str, signals, data) -> np.ndarray:
    signals = np.asarray(signals, dtype=np.float32)
    want = (len(data.test_images), *data.signal_shape)
    if signals.shape != want:
        raise ValueError(f"encoder {name!r} generated signals of shape {signals.shape}, expected {want} "
                         f"(test images x channels x times of {data.description} {data.subject})")
    if not np.isfinite(signals).all():
        raise ValueError(f"encoder {name!r} generated {int((~np.isfinite(signals)).sum())} NaN/Inf values")
    return signals


def generate_cached(name: str, encoder, weights: Path, images: list[np.ndarray], data, seed: int,
                    cache: Path, calls: dict[str, int], settings: str = "", repetitions: int = 0) -> Signals:
    """The encoder's test signals, generated once and cached by (weights sha256, settings, test image
    files, seed, what): ``repetitions`` 0 is ``generate`` (the expected response), R > 0 the average of
    R ``sample_trials`` per image (equal noise). New sampling settings regenerate without refitting."""
    settings_sha = hashlib.sha256(settings.encode()).hexdigest()
    what = "mean" if repetitions == 0 else f"trials{repetitions}"
    key = cache_key(f"signals|{_sha256(weights)}|{settings_sha}|seed={seed}|{what}",
                    [Path(p) for p in data.test_images])
    path = cache / "signals" / f"signals-{key}.npz"
    if path.is_file():
        with np.load(path) as f:
            log.info("%s: reusing generated test signals %s", name, path)
            return Signals(check_signals(name, f["signals"], data), float(f["ms_per_image"]))
    start = time.perf_counter()
    paths = list(data.test_images)
    if repetitions == 0:
        signals = encoder.generate(images, seed=seed, paths=paths)
    else:
        signals = np.asarray(encoder.sample_trials(images, repetitions, seed=seed, paths=paths)).mean(axis=1)
    ms = 1000 * (time.perf_counter() - start) / len(images)
    calls[name] = calls.get(name, 0) + 1
    signals = check_signals(name, signals, data)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, signals=signals, ms_per_image=np.float64(ms))

    atomic_write(path, write)
    return Signals(signals, ms)
