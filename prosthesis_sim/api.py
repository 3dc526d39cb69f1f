"""The Python API: what the ``psim-*`` commands do, for notebooks (``import prosthesis_sim as psim``).

Every function returns the objects the stages already are (a ``BrainDataset``, a fitted encoder or
decoder, a built phosphene model, a ``ClosedLoop``), built from the same Hydra configs the commands use:
``psim.encoder("dit_residual", data, ["encoder.n_samples=4"])`` is ``psim-loop encoder=dit_residual
encoder.n_samples=4``'s encoder. Fits go through the same cache (``fit_cached``: keyed by the config and
the data, so a second call loads what the first fitted); by default under the dataset's cache folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from .checkpoint import fit_cached, load_component
from .data.dataset import BrainDataset

__all__ = ["config", "synthesize", "load_dataset", "encoder", "decoder", "phosphene", "load", "closed_loop",
           "run_frames", "train", "batch_evaluate"]


def config(app: str = "loop", overrides: Sequence[str] = ()) -> DictConfig:
    """The composed config of ``psim-<app>`` (loop, train, eval, synth, report, demo) with command-line
    style ``overrides``, e.g. ``config("eval", ["dataset.root=data", "select.encoders=[ridge]"])``."""
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app: compose with its search path
        return compose(app, overrides=list(overrides))
    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        return compose(app, overrides=list(overrides))


def synthesize(out: str | Path, **kwargs) -> Path:
    """``psim-synth``: a synthetic THINGS-EEG2-format (``modality="meg"``: THINGS-MEG) dataset in ``out``.
    Keyword arguments as ``prosthesis_sim.data.synth.synthesize`` (sizes, seed, ``progress``)."""
    from .data.synth import synthesize as _synthesize

    kwargs.setdefault("progress", False)
    return _synthesize(out, **kwargs)


def load_dataset(root: str | Path, subject: int | str = 1, meg: bool = False, **kwargs) -> BrainDataset:
    """One subject of THINGS-EEG2 (NICE or UBP files) or, with ``meg=True``, THINGS-MEG, as a
    ``BrainDataset``; keyword arguments as the loaders' (``average_train``, ``image_root``, ``tmin`` ...)."""
    if meg:
        from .data.things_meg import load_things_meg

        return load_things_meg(root, subject=subject, **kwargs)
    from .data.things_eeg2 import load_things_eeg2

    return load_things_eeg2(root, subject=subject, **kwargs)


def _cache(data: BrainDataset, cache_dir) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(data.cache_dir or ".") / "models"


def _fitted(group: str, name: str, data: BrainDataset | None, overrides: Iterable[str], cache_dir):
    cfg = getattr(config("loop", [f"{group}={name}", *overrides]), group)
    if data is None:
        return instantiate(cfg)  # unfitted: fit(data) yourself
    return fit_cached(cfg, data, _cache(data, cache_dir), group)[0]


def encoder(name: str = "dit_residual", data: BrainDataset | None = None, overrides: Sequence[str] = (),
            cache_dir: str | Path | None = None):
    """The encoder of ``configs/encoder/<name>.yaml`` (with ``overrides`` such as ``"features=clip"`` or
    ``"encoder.n_samples=4"``), fitted on ``data`` through the fit cache; unfitted without ``data``."""
    return _fitted("encoder", name, data, overrides, cache_dir)


def decoder(name: str = "retrieval", data: BrainDataset | None = None, overrides: Sequence[str] = (),
            cache_dir: str | Path | None = None):
    """The decoder of ``configs/decoder/<name>.yaml``, fitted on ``data``'s measured signals (cached)."""
    return _fitted("decoder", name, data, overrides, cache_dir)


def phosphene(name: str = "argus_scoreboard", overrides: Sequence[str] = ()):
    """The built phosphene model of ``configs/phosphene/<name>.yaml``: ``model(grey_image) -> percept``."""
    return instantiate(config("loop", [f"phosphene={name}", *overrides]).phosphene).build()


def load(path: str | Path, data: BrainDataset | None = None):
    """A saved encoder or decoder (a ``psim-train`` run's ``encoder/`` folder, a cache entry)."""
    return load_component(path, data)


def closed_loop(encoder, decoder, phosphene, data: BrainDataset, signal: str = "mean", repetitions: int = 1,
                seed: int = 0, cache_dir: str | Path | None = None):
    """A ``ClosedLoop`` of the given stages with the mean-ERP floor fitted on ``data``: ``loop.step(frame)``
    returns the signal, decoded image, percept, scores (path, floor, ceiling) and latency of one RGB
    frame; ``signal="trials"``, ``repetitions=N``: the decoder reads the average of N sampled trials."""
    from .loop import ClosedLoop

    floor = fit_cached(config("loop").floor, data, _cache(data, cache_dir), "floor")[0]
    return ClosedLoop(encoder, floor, decoder, phosphene, data.normalizer, seed=seed, signal=signal,
                      repetitions=repetitions)


def run_frames(loop, frames: Iterable) -> list[dict]:
    """Every frame through ``loop.step`` (encode, decode, phosphene, scores), in order, on this thread."""
    return [loop.step(frame) for frame in frames]


def train(root: str | Path, encoder: str = "dit_residual", overrides: Sequence[str] = (),
          out: str | Path = "outputs/train") -> dict:
    """``psim-train``: fit ``encoder`` on one subject and write ``out`` (metrics.json, the saved encoder);
    returns the metrics. ``overrides`` as on the command line (``dataset.subject=2``, ``train.epochs=20``)."""
    from .pipeline import train_and_evaluate

    cfg = config("train", [f"dataset.root={root}", f"encoder={encoder}", f"out={out}", *overrides])
    return train_and_evaluate(cfg, out)


def batch_evaluate(root: str | Path, overrides: Sequence[str] = (), out: str | Path = "outputs/eval"):
    """``psim-eval``: every encoder x decoder x phosphene model on the test split, with intervals and
    paired comparisons; returns the ``EvalResult`` (rows, comparisons, files). ``overrides`` as on the
    command line (``dataset.subject=2``, ``select.encoders=[ridge]``, ``+encoder_dirs.NAME=DIR``)."""
    from .eval import evaluate_batch

    return evaluate_batch(config("eval", [f"dataset.root={root}", f"out={out}", *overrides]))
