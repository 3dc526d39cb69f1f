"""Low-level image statistics the simulated brain responds to (plain numpy/FFT on purpose: not a Gabor
bank, not a network, so the simulator is not a copy of any feature extractor the toolkit fits)."""
from __future__ import annotations

import cv2
import numpy as np
import scipy.fft
from scipy import ndimage

STAT_NAMES = (
    "luminance", "contrast", "red_green", "blue_yellow", "saturation", "energy_low", "energy_mid",
    "energy_high", "horizontal_vs_vertical", "oblique", "energy_left", "energy_right", "energy_upper_vs_lower",
)
LAYOUT = 3  # the concept descriptor adds the prototype's LAYOUT x LAYOUT luminance layout

# --------------------------------------------------------------------------------- image statistics


def _descriptor(imgs: np.ndarray) -> np.ndarray:
    """(n, len(STAT_NAMES) + LAYOUT**2): low-level statistics of RGB images in [0, 1], then the coarse
    luminance layout. Plain numpy/FFT on purpose (not a Gabor bank, not a network), so the simulator
    is not a copy of any feature extractor the toolkit fits."""
    size = imgs.shape[1]
    r, g, b = np.moveaxis(imgs, -1, 0)
    lum = 0.299 * r + 0.587 * g + 0.114 * b
    dev = lum - lum.mean(axis=(1, 2), keepdims=True)
    window = np.hanning(size).astype(np.float32)
    power = np.abs(scipy.fft.fft2(dev * np.outer(window, window))) ** 2 / size**4
    f = scipy.fft.fftfreq(size, 1 / size)  # cycles per image
    fy, fx = np.meshgrid(f, f, indexing="ij")
    radius, total = np.hypot(fx, fy), power.sum(axis=(1, 2)) + 1e-12

    def mean(a):
        return a.mean(axis=(1, 2))

    def band(mask):
        return np.log((power * mask).sum(axis=(1, 2)) + 1e-8)

    local = (lum - ndimage.gaussian_filter(lum, (0, size / 32, size / 32))) ** 2  # local contrast energy
    half = size // 2
    stats = {
        "luminance": mean(lum), "contrast": lum.std(axis=(1, 2)),
        "red_green": mean(r - g), "blue_yellow": mean(b - (r + g) / 2),
        "saturation": mean(imgs.max(-1) - imgs.min(-1)),
        "energy_low": band((radius >= 1) & (radius < 4)), "energy_mid": band((radius >= 4) & (radius < 16)),
        "energy_high": band(radius >= 16),
        # horizontal structure puts energy on the vertical-frequency axis
        "horizontal_vs_vertical": (power * np.sign(np.abs(fy) - np.abs(fx))).sum(axis=(1, 2)) / total,
        "oblique": -(power * np.cos(4 * np.arctan2(fy, fx))).sum(axis=(1, 2)) / total,
        "energy_left": np.log(mean(local[:, :, :half]) + 1e-8),
        "energy_right": np.log(mean(local[:, :, half:]) + 1e-8),
        "energy_upper_vs_lower": np.log(mean(local[:, :half]) + 1e-8) - np.log(mean(local[:, half:]) + 1e-8),
    }
    stats = np.stack([stats[name] for name in STAT_NAMES], axis=1)
    layout = np.stack([cv2.resize(x, (LAYOUT, LAYOUT), interpolation=cv2.INTER_AREA).ravel() for x in lum])
    return np.concatenate([stats, layout - lum.mean(axis=(1, 2))[:, None]], axis=1).astype(np.float32)

