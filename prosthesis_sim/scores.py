"""Image-level scores of a percept against the camera frame it came from.

The whole frame is mapped onto the implant's visual field (see ``phosphenes.py``), so the whole
frame is compared with the whole percept, at the percept's resolution.
"""
from __future__ import annotations

import cv2
import numpy as np
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity


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
    """Pearson r of two equally sized arrays; 0.0 when either is constant (never NaN)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    a = a - a.mean()
    b = b - b.mean()
    norm = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / norm) if norm > 0 else 0.0


def image_scores(frame: np.ndarray, percept: np.ndarray) -> dict[str, float]:
    """SSIM and Pearson r between a frame (resized to the percept's shape) and a percept.

    frame: RGB uint8 (H, W, 3) or grey float (H, W) in [0, 1]. percept: grey (h, w) in [0, 1].
    The frame is shrunk with INTER_AREA (an area average, no aliasing). SSIM uses the default 7 x 7
    window, narrowed to the largest odd size that fits a smaller percept.
    """
    percept = to_grey(percept)
    h, w = percept.shape
    win = min(7, h, w)
    if win % 2 == 0:
        win -= 1
    if win < 3:
        raise ValueError(f"percept {percept.shape} is too small for SSIM (needs at least 3 x 3)")
    target = cv2.resize(to_grey(frame), (w, h), interpolation=cv2.INTER_AREA)
    ssim = structural_similarity(target, percept, data_range=1.0, win_size=win)
    return {"ssim": float(ssim), "pearson": pearson(target, percept)}


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
