"""Identification among candidates, per item, with ties broken at random in expectation.

The protocol the field uses to read information rather than pixels (Gifford et al. 2022 for signals,
MindEye/ATM's 2-way identification for reconstructions, "virtual patients" for percepts): item i's
query is compared with every candidate j (candidate i is the true one) and ranked.

- ``two_way[i]``: the fraction of the other candidates j that are less similar to query i than its own
  candidate (a tie counts one half). Chance is exactly 0.5.
- ``top_k[i]``: the probability that the true candidate ranks within the first k when ties are broken
  at random, so a constant query (every candidate tied) scores exactly k / n, chance, and never 0 or 1.

Per-item values (not only their means) are returned, so intervals resample test images and two rows
that share the images are compared pairwise (``intervals``).
"""
from __future__ import annotations

import numpy as np

from ..metrics import correlation_matrix

#: similarities closer than this count as ties (float rounding of identical candidates)
TIE_TOLERANCE = 1e-9


def similarity(queries: np.ndarray, candidates: np.ndarray, centre: bool = True) -> np.ndarray:
    """S[i, j] = Pearson r between flattened query i and candidate j (0 where either is constant).

    ``centre``: remove from the queries their mean over the n items, and from the candidates theirs,
    before correlating. What every item shares (the evoked response of every signal, the mean layout of
    every percept, or a decoder's bias) then cannot make items alike, and a query set that does not
    depend on the item at all (the mean-ERP floor) becomes constant: every candidate ties and
    identification is exactly at chance.
    """
    q, c = np.asarray(queries, dtype=np.float64), np.asarray(candidates, dtype=np.float64)
    if len(q) != len(c):
        raise ValueError(f"identification needs one candidate per query: {len(q)} queries, {len(c)} candidates")
    if q[0].size != c[0].size:
        raise ValueError(f"queries {q.shape[1:]} and candidates {c.shape[1:]} must have the same number of values")
    if centre:
        # values equal across all items become exactly 0 (the mean of equal floats can round off them)
        q = np.where(np.ptp(q, axis=0) == 0, 0.0, q - q.mean(axis=0, keepdims=True))
        c = np.where(np.ptp(c, axis=0) == 0, 0.0, c - c.mean(axis=0, keepdims=True))
    return correlation_matrix(q, c)


def identify(sim: np.ndarray, ks=(1,)) -> dict[str, np.ndarray]:
    """Per-item 2-way and top-k identification from a square similarity matrix (row i: query i; the
    diagonal holds the true candidate). Returns ``two_way`` and ``top{k}`` arrays of length n."""
    sim = np.asarray(sim, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1] or len(sim) < 2:
        raise ValueError(f"identification needs a square similarity matrix of at least 2 x 2, got {sim.shape}")
    if not np.isfinite(sim).all():
        raise ValueError(f"similarity matrix holds {int((~np.isfinite(sim)).sum())} NaN/Inf values")
    n = len(sim)
    diff = sim - np.diag(sim)[:, None]
    off = ~np.eye(n, dtype=bool)
    greater = ((diff > TIE_TOLERANCE) & off).sum(axis=1)
    ties = ((np.abs(diff) <= TIE_TOLERANCE) & off).sum(axis=1)
    out = {"two_way": (n - 1 - greater - ties + 0.5 * ties) / (n - 1)}
    for k in ks:
        # the true rank is uniform on greater+1 .. greater+ties+1 under random tie-breaking
        out[f"top{k}"] = np.clip((min(k, n) - greater) / (ties + 1), 0.0, 1.0)
    return out


def chance(n: int, ks=(1,)) -> dict[str, float]:
    """Chance levels of :func:`identify` among ``n`` candidates."""
    return {"two_way": 0.5, **{f"top{k}": min(k, n) / n for k in ks}}


def identify_sets(queries: np.ndarray, candidates: np.ndarray, centre: bool = True, ks=(1,)) -> dict[str, np.ndarray]:
    """:func:`identify` of :func:`similarity`: query i among all candidates, candidate i the true one."""
    return identify(similarity(queries, candidates, centre=centre), ks=ks)
