"""Seeded random streams and the small array helpers every part of the simulator uses."""
from __future__ import annotations

import pickle
import zlib
from pathlib import Path

import numpy as np


def _rng(seed: int, *keys) -> np.random.Generator:
    """An independent stream per (seed, purpose, index ...), so each part is reproducible on its own."""
    ints = [k if isinstance(k, int) else zlib.crc32(str(k).encode()) for k in keys]
    return np.random.default_rng([seed, *ints])


def _mix_channels(matrix: np.ndarray, x: np.ndarray) -> np.ndarray:
    """matrix (c, k) applied to x (n, k, t) -> (n, c, t) as one GEMM: numpy's batched matmul makes one
    small BLAS call per trial, which threaded OpenBLAS turns into a crawl on a busy machine."""
    return np.moveaxis(np.tensordot(matrix, x, axes=(1, 1)), 0, 1)


def _bump(t: np.ndarray, latency, width) -> np.ndarray:
    """Gaussian time course: every ERP component and source waveform is one."""
    return np.exp(-0.5 * ((t - latency) / width) ** 2)


def _write_pickle(path: Path, payload: dict) -> None:
    """Both datasets' files are raw pickles of a dict. Protocol 5 writes an array's buffer as it is, where
    protocol 4 first copies it into bytes: a THINGS-size training array (4.2 GB) would need twice that."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(payload, f, protocol=5)

