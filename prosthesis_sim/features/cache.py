"""Batched feature extraction with an on-disk cache keyed by the extractor and the image files.

CLIP features of a full training set take hours on a CPU and tens of GB (257 x 1024 float32 tokens
per image), so they are computed once, written as memory-mappable .npy files, and reused.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from prosthesis_sim.data.dataset import load_image
from prosthesis_sim.protocols import FeatureExtractor, Features


def features_for_images(
    extractor: FeatureExtractor, images: Sequence[np.ndarray], batch_size: int = 64, progress: bool = False,
    paths: Sequence[Path] | None = None,
) -> Features:
    """Features of in-memory images, ``batch_size`` at a time (bounds peak memory).

    Extractors with ``uses_paths = True`` get the images' ``paths`` when known (dataset images, so a
    caption source can look them up), else None (camera frames have no file).
    """
    return _extract(extractor, len(images), lambda a, b: images[a:b], batch_size, progress, paths=paths)


def cached_features(
    extractor: FeatureExtractor,
    paths: Sequence[Path | str],
    cache_dir: Path | str | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> Features:
    """Features of the image files ``paths``, in order; cached under ``cache_dir`` when given.

    The cache key hashes ``extractor.cache_id`` and every path with its size and mtime, so editing,
    replacing or reordering images, or changing an extractor setting, computes afresh. Cached
    arrays are returned memory-mapped copy-on-write: pages load on demand, and writing to them
    never changes the cache. Extractors with ``uses_paths = True`` (e.g. caption-conditioned ones)
    also get ``paths=`` the files of each batch.
    """
    paths = [Path(p) for p in paths]

    def load(start: int, stop: int) -> list[np.ndarray]:
        return [load_image(p) for p in paths[start:stop]]

    if cache_dir is None or not paths:
        return _extract(extractor, len(paths), load, batch_size, progress, paths=paths)

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = f"features-{cache_key(extractor.cache_id, paths)}"
    files = {name: cache_dir / f"{stem}.{name}.npy" for name in ("tokens", "pooled")}
    # pooled is renamed into place last, so its presence means both files are complete
    if not (files["tokens"].exists() and files["pooled"].exists()):
        _extract_to_files(extractor, len(paths), load, batch_size, progress, files, paths)
    return Features(np.load(files["tokens"], mmap_mode="c"), np.load(files["pooled"], mmap_mode="c"))


def cache_key(cache_id: str, paths: Sequence[Path]) -> str:
    """sha256 over the extractor id and each file's absolute path, size and mtime."""
    entries = []
    for p in paths:
        st = p.stat()
        entries.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    blob = json.dumps([cache_id, entries]).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def _extract(
    extractor: FeatureExtractor,
    n: int,
    get_batch: Callable[[int, int], Sequence[np.ndarray]],
    batch_size: int,
    progress: bool,
    allocate: Callable[[str, tuple[int, ...]], np.ndarray] | None = None,
    paths: Sequence[Path] | None = None,
) -> Features:
    """Run ``extractor`` over ``get_batch(start, stop)`` slices, filling arrays from ``allocate``
    (``allocate(name, shape)``; in-memory arrays by default). Extractors with ``uses_paths = True``
    also get ``paths=`` the batch's files (None for in-memory images)."""
    with_paths = getattr(extractor, "uses_paths", False)

    def run(images, start: int, stop: int) -> Features:
        if not with_paths:
            return extractor(images)
        return extractor(images, paths=None if paths is None else list(paths[start:stop]))

    if n == 0:
        return run([], 0, 0)
    allocate = allocate or (lambda name, shape: np.empty(shape, np.float32))
    tokens = pooled = None
    with tqdm(total=n, desc=f"features {extractor.cache_id}", unit="img", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            out = run(get_batch(start, stop), start, stop)
            if tokens is None:  # shapes are known only after the first batch
                tokens = allocate("tokens", (n, *out.tokens.shape[1:]))
                pooled = allocate("pooled", (n, *out.pooled.shape[1:]))
            tokens[start:stop] = out.tokens
            pooled[start:stop] = out.pooled
            bar.update(stop - start)
    return Features(tokens, pooled)


def _extract_to_files(
    extractor: FeatureExtractor,
    n: int,
    get_batch: Callable[[int, int], Sequence[np.ndarray]],
    batch_size: int,
    progress: bool,
    files: dict[str, Path],
    paths: Sequence[Path] | None = None,
) -> None:
    """Stream features into temp .npy files next to ``files``, then rename them into place.

    Streaming keeps peak memory at one batch (CLIP tokens of a dataset can exceed RAM); renaming
    means readers never see a partial file, even if extraction is interrupted.
    """
    temps: dict[str, str] = {}

    def allocate(name: str, shape: tuple[int, ...]) -> np.ndarray:
        fd, temps[name] = tempfile.mkstemp(dir=files[name].parent, prefix=files[name].name, suffix=".tmp")
        os.close(fd)
        return np.lib.format.open_memmap(temps[name], mode="w+", dtype=np.float32, shape=shape)

    try:
        features = _extract(extractor, n, get_batch, batch_size, progress, allocate, paths)
        for name in ("tokens", "pooled"):
            getattr(features, name).flush()
            os.replace(temps.pop(name), files[name])
    finally:
        for temp in temps.values():
            os.unlink(temp)
