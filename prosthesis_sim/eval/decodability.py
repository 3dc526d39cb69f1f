"""Decodability: does a decoder trained on measured brains identify images from generated signals?

Identification is among the test images themselves: S[i, j] = cosine similarity between the decoder's
embedding of the signal for test image i and its embedding of test image j. Image i counts as
identified at k when fewer than k other images j have S[i, j] >= S[i, i] (ties count against, so a
constant embedding is not "right"; the same rule as ``prosthesis_sim.metrics.identification``).
Chance is k / N. The same decoder, gallery and chance serve measured and generated signals, so
``top1 / top1 of the measured row`` says how much of the real brain's decodable information the
encoder reproduces.
"""
from __future__ import annotations

import numpy as np


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


def identification(signal_emb: np.ndarray, image_emb: np.ndarray, ks=(1, 5)) -> dict[str, float]:
    """top-k identification of row i of ``image_emb`` from row i of ``signal_emb``, with chance.

    signal_emb: (n, d) the decoder's embeddings of the signals; image_emb: (n, d) its embeddings of the
    same n images, in the same order. Returns ``top{k}`` and ``chance_top{k}`` (= min(k, n) / n).
    """
    a, b = _unit_rows(signal_emb, "signal embeddings"), _unit_rows(image_emb, "image embeddings")
    if a.shape != b.shape:
        raise ValueError(f"signal embeddings {a.shape} and image embeddings {b.shape} must have the same shape "
                         "(one row per test image, one embedding space)")
    sim = a @ b.T
    rank = (sim >= np.diag(sim)[:, None]).sum(axis=1) - 1  # other images at least as similar
    n = len(sim)
    out = {f"top{k}": float(np.mean(rank < k)) for k in ks}
    out.update({f"chance_top{k}": min(k, n) / n for k in ks})
    return out


def fraction_of(value: float, reference: float) -> float:
    """value / reference, NaN when the reference is missing or not positive: a fraction of a score at
    or below the floor (which can happen to a normalised score) has no meaning, and its sign would flip."""
    if reference is None or not np.isfinite(reference) or reference <= 0 or value is None:
        return float("nan")
    return float(value / reference)
