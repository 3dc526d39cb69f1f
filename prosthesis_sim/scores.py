"""Image-level scores of a percept against the camera frame it came from.

The whole frame is mapped onto the implant's visual field (see ``phosphenes.py``), so the whole
frame is compared with the whole percept, at the percept's resolution. Scores as the field computes
them: SSIM as Wang et al. (2004) define it (11-tap Gaussian window, sigma 1.5, population
covariance; scikit-image's settings for matching the paper) and Pearson r from the same function
the signal metrics use (``metrics.pearson_rows``).
"""
from __future__ import annotations

import cv2
import numpy as np
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity

from .metrics import pearson_rows

SSIM_SIGMA = 1.5  # Wang et al. 2004
SSIM_WINDOW = 11  # scikit-image's Gaussian window: 2 * int(3.5 * sigma + 0.5) + 1 taps
MIN_SSIM_SIDE = 3  # the smallest odd window that still compares local structure


def to_grey(image: np.ndarray) -> np.ndarray:
    """RGB(A) or grey, integer or float in [0, 1] -> float32 (H, W) in [0, 1].

    Integer images are scaled by their dtype's maximum (uint8: 255). Colour uses
    ``skimage.color.rgb2gray`` (Rec. 709 luma), as pulse2percept does for images.
    """
    image = np.asarray(image)
    if np.issubdtype(image.dtype, np.integer):
        image = image / np.iinfo(image.dtype).max
    if image.ndim == 3:
        image = rgb2gray(image[..., :3])
    if image.ndim != 2:
        raise ValueError(f"expected an image (H, W) or (H, W, 3), got shape {image.shape}")
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two equally sized arrays; 0.0 when either is constant (never NaN).

    The same implementation as the signal metrics (``metrics.pearson_rows``).
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.size != b.size:
        raise ValueError(f"pearson needs equally sized arrays, got shapes {a.shape} and {b.shape}")
    return float(pearson_rows(a.reshape(1, -1), b.reshape(1, -1))[0])


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two grey images in [0, 1] with Wang et al.'s Gaussian window (sigma 1.5, population covariance).

    scikit-image's rules: the Gaussian filter always has 11 taps (truncated at 3.5 sigma, reflected
    at the border), and the mean is taken over pixels at least half a window from the border. For an
    image smaller than 11 pixels on a side the crop shrinks to the largest odd size that fits (as
    scikit-image asks); below 3 x 3 there is no local structure to compare and this raises.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"SSIM compares two grey images of one shape, got {a.shape} and {b.shape}")
    side = min(a.shape)
    if side < MIN_SSIM_SIDE:
        raise ValueError(f"image of shape {a.shape} is too small for SSIM: each side must be at least "
                         f"{MIN_SSIM_SIDE} pixels (the Gaussian window is {SSIM_WINDOW} x {SSIM_WINDOW})")
    win = min(SSIM_WINDOW, side if side % 2 else side - 1)
    return float(structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=SSIM_SIGMA,
                                       use_sample_covariance=False, win_size=win))


def image_scores(frame: np.ndarray, percept: np.ndarray) -> dict[str, float]:
    """SSIM and Pearson r between a frame (resized to the percept's shape) and a percept.

    frame: RGB uint8 (H, W, 3) or grey float (H, W) in [0, 1]. percept: grey (h, w) in [0, 1].
    The frame is shrunk with INTER_AREA (an area average, no aliasing). SSIM: see :func:`ssim`.
    """
    percept = to_grey(percept)
    h, w = percept.shape
    if min(h, w) < MIN_SSIM_SIDE:
        raise ValueError(f"percept of shape {percept.shape} is too small to score: SSIM needs at least "
                         f"{MIN_SSIM_SIDE} x {MIN_SSIM_SIDE} pixels")
    target = cv2.resize(to_grey(frame), (w, h), interpolation=cv2.INTER_AREA)
    return {"ssim": ssim(target, percept), "pearson": pearson(target, percept)}


def normalised_score(path, floor, ceiling):
    """Where ``path`` lies between ``floor`` (0) and ``ceiling`` (1): (path - floor) / (ceiling - floor).

    Works on numbers or arrays. Where ceiling == floor the scale is undefined and the result is NaN,
    without a division warning; NaN inputs give NaN. Values below 0 or above 1 are kept (a path can
    do worse than the floor or better than the ceiling).
    """
    path, floor, ceiling = (np.asarray(v, dtype=np.float64) for v in (path, floor, ceiling))
    span = ceiling - floor
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(span == 0, np.nan, (path - floor) / span)
    return float(out) if out.ndim == 0 else out
