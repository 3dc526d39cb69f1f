"""Signal metrics: MSE, Pearson r, identification and the split-half noise ceiling.

Definitions (the paper leaves them open; these are ours and the docs repeat them):

- All signal metrics are computed on z-scored signals: each channel minus its training mean, divided
  by its training standard deviation (``Normalizer`` fitted on the training split).
- ``mse``: mean over test images, channels and time points of (generated - measured average)^2.
- ``pcc``: per test image, Pearson r between the generated and the measured average signal, both
  flattened over channels x time; then the mean over images.
- ``pcc_channel``: per image and channel, Pearson r between time courses; mean over both.
- ``top1`` / ``top5``: R[i, j] = flattened Pearson r between generated signal i and measured average j.
  Image i counts as identified at k when fewer than k other images j have R[i, j] >= R[i, i]
  (ties count against). Chance = k / N.
- ``split_half_r``: test repetitions split at random into two halves; per image, flattened Pearson r
  between the two half-averages; mean over images and over ``n_splits`` random splits.
  ``noise_ceiling`` = sqrt(2 r / (1 + r)): Spearman-Brown gives the reliability of the full average,
  and its square root is the Pearson r a perfect, noise-free model can expect against the measured
  average. ``pcc / noise_ceiling`` is the fraction of the attainable correlation. Halves are of
  equal size (one repetition left out at random when the count is odd).
- ``r_across_images``: per channel and time point, Pearson r across the test images between
  generated and measured averages (the shared evoked response cancels); the mean over channels x
  time. Its ceiling is the same split-half procedure per channel x time (``across_image_ceiling``);
  ``r_across_images_fraction`` = mean r / mean ceiling.
- ``top1_centered`` / ``top5_centered``: identification after removing the training-average response
  from generated and measured signals alike.
- A ceiling of zero or NaN (no repetitions) gives NaN fractions with a warning, never a crash.
"""
from __future__ import annotations

import warnings

import numpy as np


def _flat_z(x: np.ndarray) -> np.ndarray:
    """Rows of x (n, ...) flattened, centred and scaled to unit norm (so a dot product is Pearson r).

    A constant row (max == min, tested on the raw values so rounding in the mean cannot turn it into
    noise) becomes all zeros: its Pearson r with anything is 0, never NaN. A row holding NaN or Inf
    becomes NaN, so a broken input is never reported as "uncorrelated".
    """
    x = np.asarray(x)
    x = x.reshape(len(x), -1).astype(np.float64)
    if x.shape[1] == 0:
        raise ValueError(f"Pearson r needs at least one value per row, got shape {x.shape}")
    finite = np.isfinite(x).all(axis=1)
    constant = np.ptp(np.where(finite[:, None], x, 0.0), axis=1) == 0
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    z = np.divide(x, norm, out=np.zeros_like(x), where=(norm > 0) & ~constant[:, None])
    z[~finite] = np.nan
    return z


def correlation_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """R[i, j] = Pearson r between flattened a[i] and b[j]; 0 where either is constant."""
    return _flat_z(a) @ _flat_z(b).T


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between a[i] and b[i] (flattened), for every i; 0 where either is constant.

    The one Pearson implementation of the toolkit: signal metrics and image scores
    (``scores.pearson``) both use it, so a constant input means the same (0) everywhere.
    """
    za, zb = _flat_z(a), _flat_z(b)
    if za.shape != zb.shape:
        raise ValueError(f"pearson_rows needs as many rows and values per row in both arrays, got shapes "
                         f"{np.shape(a)} and {np.shape(b)}")
    return np.sum(za * zb, axis=1)


def identification(generated: np.ndarray, measured: np.ndarray, ks=(1, 5)) -> dict[str, float]:
    r = correlation_matrix(generated, measured)
    rank = (r >= np.diag(r)[:, None]).sum(axis=1) - 1  # ties count against: a constant guess is not "right"
    return {f"top{k}": float(np.mean(rank < k)) for k in ks}


def _halves(rng: np.random.Generator, n_rep: int) -> tuple[np.ndarray, np.ndarray]:
    """Two random halves of equal size (one repetition left out at random when the count is odd)."""
    perm = rng.permutation(n_rep)
    half = n_rep // 2
    return perm[:half], perm[half : 2 * half]


def _spearman_brown_ceiling(r: np.ndarray | float) -> np.ndarray | float:
    """Split-half r -> the r a noise-free model can reach against the full average: sqrt(2r / (1 + r))."""
    r = np.asarray(r, dtype=np.float64)
    reliability = np.where(r > -1, 2 * r / (1 + np.where(r > -1, r, 0)), np.nan)
    return np.sqrt(np.clip(reliability, 0, None)), reliability


def split_half_reliability(trials: np.ndarray, n_splits: int = 20, seed: int = 0) -> dict[str, float]:
    """trials: (n_images, n_repetitions, n_channels, n_times), z-scored.

    Halves are of equal size (one repetition left out at random per split when the count is odd).
    With one repetition (BrainFLORA's random split: every test image seen once) there are no halves:
    the ceiling is NaN, with a warning, so that training and scoring still run.
    """
    n_rep = trials.shape[1]
    if n_rep < 2:
        warnings.warn(f"the split-half noise ceiling needs >= 2 test repetitions, got {n_rep}: reported as NaN",
                      stacklevel=2)
        nan = float("nan")
        return {"split_half_r": nan, "reliability": nan, "noise_ceiling": nan, "n_repetitions": int(n_rep)}
    rng = np.random.default_rng(seed)
    rs = []
    for _ in range(n_splits):
        a, b = _halves(rng, n_rep)
        rs.append(pearson_rows(trials[:, a].mean(axis=1), trials[:, b].mean(axis=1)).mean())
    r = float(np.mean(rs))
    ceiling, reliability = _spearman_brown_ceiling(r)
    return {
        "split_half_r": r,
        "reliability": float(reliability),
        "noise_ceiling": float(ceiling),
        "n_repetitions": int(n_rep),
    }


def across_image_r(generated: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """(n_channels, n_times): Pearson r across test images at every channel and time point.

    The evoked response every image shares is the same at a given channel and time for all images,
    so it cancels here; flattened per-image r (``pcc``) is dominated by it (Gifford et al. 2022
    score encoders this way). 0 where either side does not vary across images.
    """
    if generated.shape != measured.shape or generated.ndim != 3:
        raise ValueError(f"across_image_r needs two (images, channels, times) arrays of one shape, got "
                         f"{generated.shape} and {measured.shape}")
    g = generated - generated.mean(axis=0)
    m = measured - measured.mean(axis=0)
    den = np.sqrt((g ** 2).sum(axis=0) * (m ** 2).sum(axis=0))
    return np.divide((g * m).sum(axis=0), den, out=np.zeros(den.shape), where=den > 0)


def across_image_ceiling(trials: np.ndarray, n_splits: int = 20, seed: int = 0) -> np.ndarray:
    """(n_channels, n_times) split-half noise ceiling of the across-image r (Spearman-Brown corrected,
    sqrt of the reliability; 0 where the halves do not agree). NaN, with a warning, without repetitions."""
    n_rep = trials.shape[1]
    if n_rep < 2:
        warnings.warn(f"the across-image noise ceiling needs >= 2 test repetitions, got {n_rep}: reported as NaN",
                      stacklevel=2)
        return np.full(trials.shape[2:], np.nan)
    rng = np.random.default_rng(seed)
    r = np.mean([across_image_r(trials[:, a].mean(axis=1), trials[:, b].mean(axis=1))
                 for a, b in (_halves(rng, n_rep) for _ in range(n_splits))], axis=0)
    return _spearman_brown_ceiling(r)[0]


def fraction_of_ceiling(value: float, ceiling: float, what: str) -> float:
    """value / ceiling; NaN with a warning where the ceiling is zero, negative or unknown."""
    if not np.isfinite(ceiling) or ceiling <= 0:
        warnings.warn(f"{what}: the noise ceiling is {ceiling}, so the fraction of it is NaN", stacklevel=2)
        return float("nan")
    return float(value / ceiling)


def signal_metrics(generated: np.ndarray, measured: np.ndarray,
                   reference: np.ndarray | None = None) -> dict[str, float]:
    """generated, measured: (n_images, n_channels, n_times), z-scored. See the module docstring.

    reference: (n_channels, n_times), the training-average response: with it, identification is also
    scored with it removed from both sides (``top1_centered``), which the shared response cannot help.
    """
    if generated.shape != measured.shape:
        raise ValueError(f"generated signals have shape {generated.shape}, measured {measured.shape}")
    if not np.isfinite(generated).all():
        raise ValueError(f"generated signals hold {int((~np.isfinite(generated)).sum())} NaN/Inf values")
    ch = pearson_rows(
        generated.reshape(-1, generated.shape[-1]), measured.reshape(-1, measured.shape[-1])
    )
    out = {
        "mse": float(np.mean((generated - measured) ** 2)),
        "pcc": float(pearson_rows(generated, measured).mean()),
        "pcc_channel": float(ch.mean()),
        "r_across_images": float(across_image_r(generated, measured).mean()),
    }
    out.update(identification(generated, measured))
    if reference is not None:
        centered = identification(generated - reference, measured - reference)
        out.update({f"{k}_centered": v for k, v in centered.items()})
    return out
