"""Batched feature extraction with an on-disk cache keyed by the extractor and the image files.

CLIP features of a full training set take hours on a CPU and tens of GB (257 x 1024 float32 tokens
per image), so they are computed once, written as memory-mappable .npy files, and reused; test images
too (``features_for_images`` with ``cache_dir``), so an evaluation or a report rebuild does not run
the extractor again. An encoder that uses the pooled vector only asks for ``tokens=False``: the
token sequence is then neither kept nor written (ridge on CLIP: 3 KB per image instead of 1 MB).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from prosthesis_sim.data.dataset import load_image
from prosthesis_sim.features.progress import progress as progress_bar
from prosthesis_sim.protocols import FeatureExtractor, Features


def features_for_images(
    extractor: FeatureExtractor, images: Sequence[np.ndarray], batch_size: int = 64, progress: bool = False,
    paths: Sequence[Path] | None = None, tokens: bool = True, cache_dir: Path | str | None = None,
) -> Features:
    """Features of in-memory images, ``batch_size`` at a time (bounds peak memory).

    Extractors with ``uses_paths = True`` get the images' ``paths`` when known (dataset images, so a
    caption source can look them up), else None (camera frames have no file). With ``paths`` and
    ``cache_dir`` (test images of a dataset) the features come from ``cached_features``: the cache is
    keyed by the files, so the images are read from them and ``images`` must be their content.
    ``tokens=False``: pooled vectors only (see ``cached_features``).
    """
    if cache_dir is not None and paths is not None:
        if len(paths) != len(images):
            raise ValueError(f"features_for_images: {len(paths)} paths for {len(images)} images")
        return cached_features(extractor, paths, cache_dir, batch_size, progress, tokens=tokens)
    return _extract(extractor, len(images), lambda a, b: images[a:b], batch_size, progress, paths=paths,
                    tokens=tokens)


def cached_features(
    extractor: FeatureExtractor,
    paths: Sequence[Path | str],
    cache_dir: Path | str | None = None,
    batch_size: int = 64,
    progress: bool = True,
    tokens: bool = True,
) -> Features:
    """Features of the image files ``paths``, in order; cached under ``cache_dir`` when given.

    The cache key hashes ``extractor.cache_id`` (and ``weights_id`` where the extractor has one, see
    ``extractor_key``) and every path with its size and mtime, so editing, replacing or reordering
    images, or changing an extractor setting or its weights, computes afresh. Cached
    arrays are returned memory-mapped copy-on-write: pages load on demand, and writing to them
    never changes the cache. Extractors with ``uses_paths = True`` (e.g. caption-conditioned ones)
    also get ``paths=`` the files of each batch.

    ``tokens=False`` (an encoder that uses the pooled vector only): ``tokens`` is an empty
    (n, 0, 0) array. The pooled vectors come from a full cache of the same key when there is one,
    else from a pooled-only cache of a key of its own (so it is never taken for a full one);
    extractors with ``skips_tokens = True`` are called with ``tokens=False`` and skip that work.
    """
    paths = [Path(p) for p in paths]

    def load(start: int, stop: int) -> list[np.ndarray]:
        return [load_image(p) for p in paths[start:stop]]

    if cache_dir is None or not paths:
        return _extract(extractor, len(paths), load, batch_size, progress, paths=paths, tokens=tokens)

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = extractor_key(extractor)
    full = {name: cache_dir / f"features-{cache_key(key, paths)}.{name}.npy" for name in ("tokens", "pooled")}
    # pooled is renamed into place last, so its presence means both files are complete
    complete = full["tokens"].exists() and full["pooled"].exists()
    if tokens or complete:
        if not complete:
            _extract_to_files(extractor, len(paths), load, batch_size, progress, full, paths)
        pooled = np.load(full["pooled"], mmap_mode="c")
        return Features(np.load(full["tokens"], mmap_mode="c") if tokens else _no_tokens(len(pooled)), pooled)
    only = {"pooled": cache_dir / f"features-{cache_key(key + '|pooled-only', paths)}.pooled.npy"}
    if not only["pooled"].exists():
        _extract_to_files(extractor, len(paths), load, batch_size, progress, only, paths, tokens=False)
    pooled = np.load(only["pooled"], mmap_mode="c")
    return Features(_no_tokens(len(pooled)), pooled)


def extractor_key(extractor: FeatureExtractor) -> str:
    """What an extractor's features depend on: ``cache_id`` (extractor and settings), plus
    ``weights_id`` where it has one (CLIP: a fingerprint of the checkpoint's files, which the folder
    path in ``cache_id`` does not capture)."""
    weights = getattr(extractor, "weights_id", "")
    return f"{extractor.cache_id}|weights={weights}" if weights else extractor.cache_id


def cache_key(cache_id: str, paths: Sequence[Path]) -> str:
    """sha256 over the extractor id and each file's absolute path, size and mtime."""
    entries = []
    for p in paths:
        st = p.stat()
        entries.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    blob = json.dumps([cache_id, entries]).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def feature_shapes(extractor: FeatureExtractor) -> Features:
    """Features of no images, i.e. the shapes ``extractor`` gives: from ``extractor.empty()`` where it
    has one (CLIP: from the config, so deciding what to compute loads no weights), else from a call
    on no images."""
    empty = getattr(extractor, "empty", None)
    return empty() if callable(empty) else _extract(extractor, 0, lambda a, b: [], 1, False)


def _no_tokens(n: int) -> np.ndarray:
    """The token array of pooled-only features: no tokens, so a model that needs them fails loudly."""
    return np.zeros((n, 0, 0), np.float32)


def _extract(
    extractor: FeatureExtractor,
    n: int,
    get_batch: Callable[[int, int], Sequence[np.ndarray]],
    batch_size: int,
    progress: bool,
    allocate: Callable[[str, tuple[int, ...]], np.ndarray] | None = None,
    paths: Sequence[Path] | None = None,
    tokens: bool = True,
) -> Features:
    """Run ``extractor`` over ``get_batch(start, stop)`` slices, filling arrays from ``allocate``
    (``allocate(name, shape)``; in-memory arrays by default). Extractors with ``uses_paths = True``
    also get ``paths=`` the batch's files (None for in-memory images). ``tokens=False``: tokens are
    dropped per batch (or not computed, for extractors with ``skips_tokens = True``)."""
    kwargs = {} if tokens or not getattr(extractor, "skips_tokens", False) else {"tokens": False}
    with_paths = getattr(extractor, "uses_paths", False)

    def run(images, start: int, stop: int) -> Features:
        if not with_paths:
            return extractor(images, **kwargs)
        return extractor(images, paths=None if paths is None else list(paths[start:stop]), **kwargs)

    if n == 0:
        out = run([], 0, 0)
        return out if tokens else Features(_no_tokens(0), out.pooled)
    allocate = allocate or (lambda name, shape: np.empty(shape, np.float32))
    arrays: dict[str, np.ndarray] = {}
    names = ("tokens", "pooled") if tokens else ("pooled",)
    with progress_bar(n, f"features {extractor.cache_id}", "img", enabled=progress) as bar:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            out = run(get_batch(start, stop), start, stop)
            for name in names:
                part = getattr(out, name)
                if name not in arrays:  # shapes are known only after the first batch
                    arrays[name] = allocate(name, (n, *part.shape[1:]))
                arrays[name][start:stop] = part
            bar.update(stop - start)
    return Features(arrays["tokens"] if tokens else _no_tokens(n), arrays["pooled"])


def _extract_to_files(
    extractor: FeatureExtractor,
    n: int,
    get_batch: Callable[[int, int], Sequence[np.ndarray]],
    batch_size: int,
    progress: bool,
    files: dict[str, Path],
    paths: Sequence[Path] | None = None,
    tokens: bool = True,
) -> None:
    """Stream features into temp .npy files next to ``files`` (``tokens`` and ``pooled``, or
    ``pooled`` only with ``tokens=False``), then rename them into place, pooled last.

    Streaming keeps peak memory at one batch (CLIP tokens of a dataset can exceed RAM); renaming
    means readers never see a partial file, even if extraction is interrupted.
    """
    temps: dict[str, str] = {}

    def allocate(name: str, shape: tuple[int, ...]) -> np.ndarray:
        fd, temps[name] = tempfile.mkstemp(dir=files[name].parent, prefix=files[name].name, suffix=".tmp")
        os.close(fd)
        return np.lib.format.open_memmap(temps[name], mode="w+", dtype=np.float32, shape=shape)

    try:
        features = _extract(extractor, n, get_batch, batch_size, progress, allocate, paths, tokens)
        for name in files:
            getattr(features, name).flush()
            os.replace(temps.pop(name), files[name])
    finally:
        for temp in temps.values():
            os.unlink(temp)
