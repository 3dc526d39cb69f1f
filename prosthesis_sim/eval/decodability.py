"""Decodability: does a decoder trained on measured brains identify images from generated signals?

Identification is among the test images themselves: S[i, j] = cosine similarity between the decoder's
embedding of the signal for test image i and its embedding of test image j. Image i's top-k is the
probability that it ranks within the first k when ties are broken at random (``identify``), so a
constant embedding scores chance, k / N, exactly. Chance is k / N. The same decoder, gallery and chance serve measured and generated signals, so
``top1 / top1 of the measured row`` says how much of the real brain's decodable information the
encoder reproduces.
"""
from __future__ import annotations

import numpy as np

from .identify import identify


def embeds(decoder) -> bool:
    """Whether a decoder exposes an embedding (duck-typed: ``embed`` and ``embed_images``)."""
    return callable(getattr(decoder, "embed", None)) and callable(getattr(decoder, "embed_images", None))


def _unit_rows(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be (n, d) embeddings, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds {int((~np.isfinite(x)).sum())} NaN/Inf values")
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def cosine_similarity(signal_emb: np.ndarray, image_emb: np.ndarray) -> np.ndarray:
    """S[i, j] = cosine similarity of the decoder's embedding of signal i and of image j."""
    a, b = _unit_rows(signal_emb, "signal embeddings"), _unit_rows(image_emb, "image embeddings")
    if a.shape != b.shape:
        raise ValueError(f"signal embeddings {a.shape} and image embeddings {b.shape} must have the same shape "
                         "(one row per test image, one embedding space)")
    return a @ b.T


def identification_per_image(signal_emb: np.ndarray, image_emb: np.ndarray, ks=(1, 5)) -> dict[str, np.ndarray]:
    """Per test image: top-k (ties broken at random, in expectation) and 2-way identification of image i
    among all test images from the decoder's embedding of signal i (``identify.identify``)."""
    return identify(cosine_similarity(signal_emb, image_emb), ks=ks)


def identification(signal_emb: np.ndarray, image_emb: np.ndarray, ks=(1, 5)) -> dict[str, float]:
    """top-k identification of row i of ``image_emb`` from row i of ``signal_emb``, with chance.

    signal_emb: (n, d) the decoder's embeddings of the signals; image_emb: (n, d) its embeddings of the
    same n images, in the same order. Returns ``top{k}`` and ``chance_top{k}`` (= min(k, n) / n).
    """
    per_image = identification_per_image(signal_emb, image_emb, ks)
    n = len(signal_emb)
    out = {f"top{k}": float(np.mean(per_image[f"top{k}"])) for k in ks}
    out.update({f"chance_top{k}": min(k, n) / n for k in ks})
    return out


def fraction_of(value: float, reference: float) -> float:
    """value / reference, NaN when the reference is missing or not positive: a fraction of a score at
    or below the floor (which can happen to a normalised score) has no meaning, and its sign would flip."""
    if reference is None or not np.isfinite(reference) or reference <= 0 or value is None:
        return float("nan")
    return float(value / reference)
