"""Scoring an image-to-brain encoder on a dataset's test split (definitions in metrics.py)."""
from __future__ import annotations

import inspect
import time

import numpy as np

from .data.dataset import BrainDataset, load_image
from .metrics import across_image_ceiling, fraction_of_ceiling, signal_metrics, split_half_reliability


def load_test_images(data: BrainDataset) -> list[np.ndarray]:
    return [load_image(p) for p in data.test_images]


def takes_cache_dir(encoder) -> bool:
    """Whether ``encoder.generate`` takes ``cache_dir=`` (a feature cache for images with files);
    encoders written to the plain protocol do not, and are called without it."""
    try:
        return "cache_dir" in inspect.signature(encoder.generate).parameters
    except (TypeError, ValueError):  # no signature to read (some builtins, C extensions)
        return False


def evaluate_encoder(encoder, data: BrainDataset, images: list[np.ndarray] | None = None, seed: int = 0) -> dict:
    """Generate a signal for every test image and compare it with the measured test average.

    The test images' features are cached in the dataset's cache folder (``data.cache_dir``, keyed like
    the training features), so evaluating again, or rebuilding a report, does not run the extractor.
    """
    norm = data.normalizer
    images = load_test_images(data) if images is None else images
    kwargs = {"cache_dir": data.cache_dir} if data.cache_dir is not None and takes_cache_dir(encoder) else {}
    start = time.perf_counter()
    generated = encoder.generate(images, seed=seed, paths=data.test_images, **kwargs)
    seconds = time.perf_counter() - start
    reference = norm(data.train_average().mean(axis=0, keepdims=True))[0]
    out = signal_metrics(norm(generated), norm(data.test_average()), reference)
    out.update(metric_intervals(norm(generated), norm(data.test_average()), seed=seed))
    out["generate_s_per_image"] = seconds / len(images)
    return out


R_RESAMPLES = 200  # resamples of the across-image r (each a channels x times map): enough for a 95 % interval


def metric_intervals(generated: np.ndarray, measured: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> dict:
    """95 % bootstrap intervals over the test images of top-1 (the ``metrics.identification`` rule, per
    image) and of the mean across-image r (recomputed on each resample of images): ``top1_lo`` ...
    ``r_across_images_hi``. Why: a test split of 50-200 images leaves both uncertain by several points."""
    from scipy import stats

    from .metrics import correlation_matrix

    r = correlation_matrix(generated, measured)
    top1 = ((r >= np.diag(r)[:, None]).sum(axis=1) - 1 < 1).astype(np.float64)
    rng = np.random.default_rng(seed)
    out = {}
    if len(top1) >= 2 and np.ptp(top1) > 0:
        ci = stats.bootstrap([top1], np.mean, confidence_level=0.95, n_resamples=n_resamples, method="percentile",
                             random_state=rng).confidence_interval
        out.update(top1_lo=float(ci.low), top1_hi=float(ci.high))
    else:
        out.update(top1_lo=float(top1.mean()), top1_hi=float(top1.mean()))
    # across-image r of every resample at once: resampling images is weighting them by their counts
    n = len(generated)
    counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(R_RESAMPLES)]) / n
    g = generated.reshape(n, -1).astype(np.float64)
    m = measured.reshape(n, -1).astype(np.float64)
    g, m = g - g.mean(axis=0), m - m.mean(axis=0)  # r is shift-invariant: centring first keeps sums exact
    mg, mm = counts @ g, counts @ m
    cov = counts @ (g * m) - mg * mm
    var = (counts @ (g * g) - mg ** 2) * (counts @ (m * m) - mm ** 2)
    means = np.divide(cov, np.sqrt(np.clip(var, 0, None)), out=np.zeros_like(cov), where=var > 1e-24).mean(axis=1)
    out.update(r_across_images_lo=float(np.quantile(means, 0.025)), r_across_images_hi=float(np.quantile(means, 0.975)))
    return out


def noise_ceiling(data: BrainDataset, seed: int = 0) -> dict:
    """The split-half ceilings of the flattened per-image r and of the across-image r (its mean over
    channels x time; the map itself comes from ``across_image_ceiling``)."""
    trials = data.normalizer(data.test_repetitions())
    out = split_half_reliability(trials, seed=seed)
    out["r_across_images_ceiling"] = float(np.nanmean(across_image_ceiling(trials, seed=seed))) \
        if trials.shape[1] >= 2 else float("nan")
    return out


def with_ceiling(metrics: dict, ceiling: dict) -> dict:
    out = {**metrics, "pcc_fraction_of_ceiling": fraction_of_ceiling(metrics["pcc"], ceiling["noise_ceiling"], "pcc")}
    if "r_across_images" in metrics and "r_across_images_ceiling" in ceiling:
        out["r_across_images_fraction"] = fraction_of_ceiling(
            metrics["r_across_images"], ceiling["r_across_images_ceiling"], "r_across_images")
    return out
