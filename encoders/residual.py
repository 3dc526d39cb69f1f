"""How much of the diffusion's residual mean to add to the regression's (``residual_gain='auto'``).

Regression plus diffusion (CorrDiff) promises a mean never worse than the regression's. On our data
the DiT's estimate of the residual's mean is small and partly noise, so whether it helps on unseen
images is decided on training concepts the DiT did not see: the gain g in [0, 1] that minimises the
squared error of  ridge(image) + g * residual_mean(image)  on them, with the regression's exact
leave-one-out predictions standing in for its prediction of an unseen image. g = 0 makes the expected
response the regression's; single trials keep the diffusion's full variability around it.
"""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import GroupShuffleSplit

from prosthesis_sim.eval.intervals import correlation_interval


def validation_split(concepts, n_images: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) image indices; whole concepts are held out (the test split is zero-shot), or
    single images when the dataset names no concepts."""
    if not 0 < fraction < 1:
        raise ValueError(f"encoder.validation_fraction must be in (0, 1), got {fraction}")
    groups = list(concepts) if concepts is not None and len(concepts) == n_images else list(range(n_images))
    if len(set(groups)) < 2:
        raise ValueError("residual_gain='auto' needs training images of at least two concepts to hold some out")
    fit, held = next(GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed).split(
        np.zeros(n_images), groups=groups))
    return np.sort(fit), np.sort(held)


def residual_gain(predicted: np.ndarray, observed: np.ndarray) -> dict:
    """The least-squares gain of ``predicted`` residuals against ``observed`` ones (held-out images),
    clipped to [0, 1], with what it was decided on: the correlation of the two over images x channels x
    time (with its 95 % interval, held-out images resampled), and the held-out MSE without (g = 0) and
    with the gain (both in z units)."""
    d = np.asarray(predicted, np.float64).ravel()
    e = np.asarray(observed, np.float64).ravel()
    g = float(np.clip(d @ e / max(d @ d, 1e-12), 0.0, 1.0))
    if d.std() > 0 and e.std() > 0:
        r, low, high = correlation_interval(predicted, observed)
    else:
        r, low, high = 0.0, 0.0, 0.0
    return {"gain": g, "r": r, "r_ci": [low, high], "mse_regression": float(np.mean(e ** 2)),
            "mse_with_gain": float(np.mean((e - g * d) ** 2))}
