"""95 % bootstrap intervals over test images (``scipy.stats.bootstrap``), paired where rows share them.

Test images are the unit that is resampled (never trials or pixels): the verdict is about how the
encoder does on images like these. Two rows scored on the same images are compared by resampling the
images once for both (``paired=True``), which removes the between-image variance they share; that is
what lets a small test set resolve a difference that unpaired intervals would swallow. Percentile
intervals with a fixed seed, so a table is reproducible; a statistic that is constant over the
resamples (a floor exactly at chance) gets a zero-width interval, not NaN.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

LEVEL = 0.95
N_RESAMPLES = 2000
SEED = 0


def _interval(statistic, arrays, n_resamples: int, seed: int) -> tuple[float, float, float]:
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    n = {len(a) for a in arrays}
    if len(n) != 1:
        raise ValueError(f"paired bootstrap needs one value per test image in every array, got lengths {sorted(n)}")
    value = float(statistic(*arrays, axis=-1))
    if n.pop() < 2 or not all(np.isfinite(a).all() for a in arrays) or not np.isfinite(value):
        return value, float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample with a zero denominator gives inf/NaN
        res = stats.bootstrap(arrays, statistic, paired=True, vectorized=True, axis=-1, confidence_level=LEVEL,
                              n_resamples=n_resamples, method="percentile", random_state=np.random.default_rng(seed))
    return value, float(res.confidence_interval.low), float(res.confidence_interval.high)


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def _diff(a, b, axis=-1):
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def _normalised(s, f, c, axis=-1):
    mf = np.mean(f, axis=axis)
    return (np.mean(s, axis=axis) - mf) / (np.mean(c, axis=axis) - mf)


def _normalised_diff(a, b, f, c, axis=-1):
    return (np.mean(a, axis=axis) - np.mean(b, axis=axis)) / (np.mean(c, axis=axis) - np.mean(f, axis=axis))


def _pooled_r(a, b, aa, bb, ab, axis=-1):
    # per-image means of a, b, a^2, b^2, ab over equally many values: their means over images are the
    # pooled moments, so the resampled statistic is the Pearson r of the resampled images' values
    ma, mb = np.mean(a, axis=axis), np.mean(b, axis=axis)
    cov = np.mean(ab, axis=axis) - ma * mb
    return cov / np.sqrt((np.mean(aa, axis=axis) - ma ** 2) * (np.mean(bb, axis=axis) - mb ** 2))


def mean_interval(x, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> tuple[float, float, float]:
    """(mean, low, high) of per-image values."""
    return _interval(_mean, [x], n_resamples, seed)


def diff_interval(a, b, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high), images resampled together: a[i] and b[i] are the same image."""
    return _interval(_diff, [a, b], n_resamples, seed)


def normalised_interval(score, floor, ceiling, n_resamples: int = N_RESAMPLES,
                        seed: int = SEED) -> tuple[float, float, float]:
    """(mean(score) - mean(floor)) / (mean(ceiling) - mean(floor)) on means over the same images, with
    its paired interval: the normalised score of ``scores.normalised_score``, uncertainty included."""
    return _interval(_normalised, [score, floor, ceiling], n_resamples, seed)


def normalised_diff_interval(a, b, floor, ceiling, n_resamples: int = N_RESAMPLES,
                             seed: int = SEED) -> tuple[float, float, float]:
    """The difference of two rows' normalised scores (same floor and ceiling), with its paired interval."""
    return _interval(_normalised_diff, [a, b, floor, ceiling], n_resamples, seed)


def correlation_interval(a, b, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> tuple[float, float, float]:
    """(r, low, high): the Pearson r of all values of ``a`` and ``b`` (n_images, ...), pooled over
    images and the rest, as ``np.corrcoef`` of the flattened arrays gives it, with images resampled."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    if a.shape != b.shape:
        raise ValueError(f"correlation_interval needs arrays of one shape, got {a.shape} and {b.shape}")
    moments = [a.mean(1), b.mean(1), (a * a).mean(1), (b * b).mean(1), (a * b).mean(1)]
    return _interval(_pooled_r, moments, n_resamples, seed)


def excludes_zero(low: float, high: float) -> bool:
    """Whether an interval resolves a difference (lies wholly above or below 0)."""
    return bool(np.isfinite(low) and np.isfinite(high) and (low > 0 or high < 0))
