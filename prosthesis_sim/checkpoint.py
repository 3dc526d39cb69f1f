"""Saving, loading and cached fitting of any stage (encoder, decoder) that has a Hydra config.

A component directory holds ``config.yaml`` (the resolved Hydra config that rebuilds the object with
``hydra.utils.instantiate``) and ``weights.safetensors`` (its arrays, with a JSON ``meta`` entry in the
safetensors metadata). Components implement ``state() -> (arrays, meta)`` and ``load_state(arrays, meta)``.
Every write goes to a temporary file first and is renamed into place, so a crash never leaves a
half-written checkpoint where a good one was.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

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
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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


def save_component(obj, directory: str | Path, cfg) -> Path:
    """Write ``obj``'s state and the config that rebuilds it into ``directory``."""
    directory = Path(directory)
    arrays, meta = obj.state()
    arrays = _to_numpy(arrays)
    # the weights file is written last: its presence means the directory is complete (see fit_cached)
    atomic_write_text(directory / CONFIG, OmegaConf.to_yaml(OmegaConf.create(to_container(cfg))))
    atomic_write(directory / WEIGHTS, lambda tmp: save_file(arrays, tmp, metadata={"meta": json.dumps(meta)}))
    return directory


def load_component(directory: str | Path):
    """Rebuild a component saved by :func:`save_component`."""
    directory = Path(directory)
    for name in (CONFIG, WEIGHTS):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} is missing: not a saved component directory")
    obj = instantiate(OmegaConf.load(directory / CONFIG))
    with safe_open(directory / WEIGHTS, framework="np") as f:
        meta = json.loads((f.metadata() or {}).get("meta", "{}"))
    try:
        obj.load_state(load_file(directory / WEIGHTS), meta)
    except KeyError as err:
        raise ValueError(f"{directory / WEIGHTS}: missing entry {err} for {type(obj).__name__}") from err
    return obj


def config_hash(cfg, *extra: str) -> str:
    text = json.dumps(to_container(cfg), sort_keys=True, default=str) + "|".join(extra)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def fit_cached(cfg, data, cache_root: str | Path, name: str):
    """Instantiate ``cfg``, fit it on ``data`` and save it, or load it if that exact fit was saved before.

    The cache key covers the resolved config and the dataset's signature, so any change refits.
    """
    directory = Path(cache_root) / f"{name}-{config_hash(cfg, data.signature())}"
    if (directory / WEIGHTS).is_file():
        log.info("%s: reusing %s", name, directory)
        return load_component(directory), directory
    log.info("%s: no cached fit in %s, fitting %s", name, directory, cfg.get("_target_"))
    obj = instantiate(cfg)
    obj.fit(data)
    save_component(obj, directory, cfg)
    log.info("%s: fitted and saved to %s", name, directory)
    return obj, directory
