"""Saving, loading and cached fitting of any stage (encoder, decoder) that has a Hydra config.

A component directory holds ``config.yaml`` (the resolved Hydra config that rebuilds the object with
``hydra.utils.instantiate``) and ``weights.safetensors`` (its arrays, with a JSON ``meta`` entry in the
safetensors metadata). Components implement ``state() -> (arrays, meta)`` and ``load_state(arrays, meta)``.
Every write goes to a temporary file first and is renamed into place, so a crash never leaves a
half-written checkpoint where a good one was.

Fit caches are keyed by what changes the fit only (:func:`fit_key`): a component class lists the
constructor arguments that do not change its fitted state in a class attribute ``not_fitted`` (dotted
paths reach into nested dicts, e.g. ``"train.checkpoint_dir"``); nested components (any dict with a
``_target_``) are pruned by their own class's list. On a cache hit the *current* config is built and
the cached state loaded into it, so sampling settings, devices and output folders apply without a refit.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from .errors import ComponentError, root_cause

log = logging.getLogger(__name__)

CONFIG = "config.yaml"
WEIGHTS = "weights.safetensors"


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _to_numpy(arrays: dict[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in arrays.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).numpy()
        out[k] = np.ascontiguousarray(v)
    return out


def to_container(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def save_component(obj, directory: str | Path, cfg, epoch=None) -> Path:
    """Write ``obj``'s state and the config that rebuilds it into ``directory``.

    ``epoch`` (the ``Epoch`` of the data it was fitted on) is kept in the weights file's metadata, so
    that loading it for data on another time axis stops with both named (``load_component``).
    """
    directory = Path(directory)
    arrays, meta = obj.state()
    arrays = _to_numpy(arrays)
    metadata = {"meta": json.dumps(meta)}
    if epoch is not None:
        metadata["epoch"] = json.dumps(dataclasses.asdict(epoch))
    # the weights file is written last: its presence means the directory is complete (see fit_cached)
    atomic_write_text(directory / CONFIG, OmegaConf.to_yaml(OmegaConf.create(to_container(cfg))))
    atomic_write(directory / WEIGHTS, lambda tmp: save_file(arrays, tmp, metadata=metadata))
    return directory


def _weights_metadata(path: Path) -> dict:
    """The safetensors metadata of ``path``; a damaged file is named, with what to do about it."""
    try:
        with safe_open(path, framework="np") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise ComponentError(f"{path}: not a complete safetensors file ({err}); it is truncated or damaged: "
                             "save it again, or delete it (a fit cache entry is then fitted again)") from err


def saved_epoch(directory: str | Path):
    """The ``Epoch`` a saved component was fitted on; None for components saved without one."""
    from .data.dataset import Epoch

    text = _weights_metadata(Path(directory) / WEIGHTS).get("epoch")
    return Epoch(**json.loads(text)) if text else None


def _mismatch(err: RuntimeError, directory: Path) -> str | None:
    """torch's 'Error(s) in loading state_dict' (one line per tensor) as one sentence."""
    text = str(err)
    if "Error(s) in loading state_dict" not in text:
        return None
    sizes = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("size mismatch for")]
    parts = [f"{len(sizes)} tensors differ in shape" if sizes else "",
             "some tensors are missing" if "Missing key(s)" in text else "",
             "some tensors are unexpected" if "Unexpected key(s)" in text else ""]
    first = ""
    if sizes:
        m = re.search(r"for (\S+): .*?Size\((\[.*?\])\).*?Size\((\[.*?\])\)", sizes[0])
        first = f" (first: {m[1]} saved {m[2]}, config builds {m[3]})" if m else f" ({sizes[0]})"
    return (f"{directory}: {CONFIG} does not build the model saved in {WEIGHTS}: "
            + ", ".join(p for p in parts if p) + first
            + ". The config was edited or the two files come from different runs; keep them together as saved")


def _load_state_into(obj, directory: Path):
    meta = json.loads(_weights_metadata(directory / WEIGHTS).get("meta", "{}"))
    try:
        arrays = load_file(directory / WEIGHTS)
    except (SafetensorError, OSError) as err:
        raise ComponentError(f"{directory / WEIGHTS}: cannot read the arrays ({err}); the file is truncated or "
                             "damaged: save it again, or delete it") from err
    try:
        obj.load_state(arrays, meta)
    except KeyError as err:
        raise ComponentError(f"{directory / WEIGHTS}: missing entry {err} for {type(obj).__name__}") from err
    except RuntimeError as err:
        message = _mismatch(err, directory)
        if message is None:
            raise
        raise ComponentError(message) from err
    return obj


def check_component_dir(directory: str | Path, key: str) -> Path:
    """A saved component folder (config.yaml and weights.safetensors), named by its config ``key``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ComponentError(f"{key}={directory}: no such folder (expected a saved component: {CONFIG} and {WEIGHTS})")
    for name in (CONFIG, WEIGHTS):
        if not (directory / name).is_file():
            raise ComponentError(f"{key}={directory}: {name} is missing (a saved component holds {CONFIG} and {WEIGHTS})")
    return directory


#: Module prefixes of the plug-ins before they installed inside this package (saved configs name them).
_MOVED = {"encoders.": "prosthesis_sim.encoders.", "decoders.": "prosthesis_sim.decoders."}


def upgrade_targets(node):
    """``node`` (a plain config container) with every ``_target_`` that names a plug-in by its old
    top-level module (``encoders.ridge.RidgeEncoder``) renamed to where it installs now
    (``prosthesis_sim.encoders.ridge.RidgeEncoder``), so components saved before the move still load."""
    if isinstance(node, list):
        return [upgrade_targets(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: upgrade_targets(v) for k, v in node.items()}
    target = node.get("_target_")
    if isinstance(target, str):
        for old, new in _MOVED.items():
            if target.startswith(old):
                node["_target_"] = new + target[len(old):]
    return node


def read_config(path: str | Path) -> DictConfig:
    """A saved ``config.yaml``, unresolved, with its targets upgraded (:func:`upgrade_targets`)."""
    return OmegaConf.create(upgrade_targets(OmegaConf.to_container(OmegaConf.load(path), resolve=False)))


def load_component(directory: str | Path, data=None):
    """Rebuild a component saved by :func:`save_component`.

    With ``data`` (the BrainDataset it will be used on), a component fitted on another epoch is
    refused with both epochs named (components saved before epochs were recorded are not checked).
    """
    directory = Path(directory)
    for name in (CONFIG, WEIGHTS):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} is missing: not a saved component directory")
    if data is not None:
        fitted = saved_epoch(directory)
        if fitted is not None:
            fitted.check(data.epoch, str(directory), f"{data.description} {data.subject}")
    try:
        obj = instantiate(read_config(directory / CONFIG))
    except Exception as err:  # YAML, import and constructor errors, wrapped by Hydra
        cause = root_cause(err)
        text = " ".join(ln.strip() for ln in str(cause).splitlines() if ln.strip()) or type(cause).__name__
        raise ComponentError(f"{directory / CONFIG}: cannot build the component it describes: {text}") from err
    return _load_state_into(obj, directory)


def config_hash(cfg, *extra: str) -> str:
    """A short hash of the whole resolved config (and ``extra`` strings)."""
    text = json.dumps(to_container(cfg), sort_keys=True, default=str) + "|".join(extra)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def not_fitted(target: str) -> tuple[str, ...]:
    """The ``not_fitted`` keys declared by the class (or function) a ``_target_`` names; () if none."""
    try:
        obj = get_object(target)
    except Exception as err:  # hydra wraps import errors in its own types
        raise ValueError(f"_target_ {target!r} cannot be imported, so its fit key is unknown: {err}") from err
    keys = getattr(obj, "not_fitted", ())
    if isinstance(keys, str) or not all(isinstance(k, str) for k in keys):
        raise TypeError(f"{target}.not_fitted must be a tuple of key names, got {keys!r}")
    return tuple(keys)


def _drop(node: dict, path: str) -> None:
    head, _, rest = path.partition(".")
    if head not in node:
        return
    if not rest:
        del node[head]
    elif isinstance(node[head], dict):
        _drop(node[head], rest)


def _prune(node):
    if isinstance(node, list):
        return [_prune(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _prune(v) for k, v in node.items()}
    if isinstance(node.get("_target_"), str):
        for path in not_fitted(node["_target_"]):
            _drop(node, path)
    return node


def fit_key(cfg) -> dict:
    """The resolved config without the keys that do not change a fit (see the module docstring)."""
    return _prune(to_container(cfg))


def _inputs_signature(cfg) -> str:
    """What a component reads besides the dataset (e.g. a gallery folder's files): its class's
    ``fit_inputs(config) -> str``, empty when it declares none."""
    target = cfg.get("_target_") if hasattr(cfg, "get") else None
    if not target:
        return ""
    reader = getattr(get_object(target), "fit_inputs", None)
    return reader(to_container(cfg)) if reader is not None else ""


def fit_cached(cfg, data, cache_root: str | Path, name: str):
    """Fit ``cfg`` on ``data`` and save it, or load the fit saved before under the same fit key.

    The cache key is :func:`fit_key` of ``cfg`` plus the dataset's signature (and what the class's
    ``fit_inputs`` reads, such as a gallery folder's files): a change of anything that
    changes the fit refits; output folders, sampling settings and devices do not. On a hit the current
    ``cfg`` is instantiated and the cached state loaded into it. The directory's ``config.yaml`` is the
    config of the run that fitted it. A class may name ``fitted_parts``: attributes whose sub-configs are
    components of their own, fitted (or loaded) through this cache first and handed to it fitted, so a
    part shared by two components is fitted once (the retrieval decoder's embedding decoder, when
    psim-eval also evaluates that embedding decoder). Its ``fit`` then leaves fitted parts as they are.
    """
    directory = Path(cache_root) / f"{name}-{config_hash(fit_key(cfg), data.signature(), _inputs_signature(cfg))}"
    obj = instantiate(cfg)
    if (directory / WEIGHTS).is_file():
        log.info("%s: reusing %s", name, directory)
        _load_state_into(obj, directory)
        return obj, directory
    log.info("%s: no cached fit in %s, fitting %s", name, directory, cfg.get("_target_"))
    for part in getattr(obj, "fitted_parts", ()):  # parts with a cache of their own (a retrieval's embedder)
        fitted, _ = fit_cached(cfg[part], data, cache_root, name)
        setattr(obj, part, fitted)
    obj.fit(data)
    save_component(obj, directory, cfg, getattr(data, "epoch", None))  # stand-ins in tests have none
    log.info("%s: fitted and saved to %s", name, directory)
    return obj, directory
