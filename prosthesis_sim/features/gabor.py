"""A weight-free, V1-like image feature extractor: Gabor energy pooled over a coarse grid.

It needs no checkpoint and no download, so the whole loop runs (and tests run) anywhere; CLIP
(``features/clip.py``) is the paper's choice when weights are available.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from skimage.filters import gabor_kernel

from prosthesis_sim.protocols import Features

# Fixed (never fitted) affine maps that bring each feature group to roughly zero mean and unit
# variance on natural photographs (chosen once on scikit-image's sample photos). Fixed constants
# keep features comparable across datasets and make the extractor a pure function of the image.
_LOG_ENERGY_EPS = 1e-6  # energy floor: below 8-bit quantisation noise for [0, 1] images
_LOG_ENERGY = (-9.5, 1.8)  # (centre, scale); one pair for all frequencies, because constant-octave
# filters see about the same energy at every scale of a natural (1/f-spectrum) image
_LUMINANCE = (0.45, 0.2)
_CONTRAST = (0.13, 0.09)
_OPPONENT = (0.0, 0.12)
_COLOURFULNESS = (0.0, 0.1)


def centre_square(img: np.ndarray) -> np.ndarray:
    """The largest centred square of a uint8 RGB image (the framing CLIP uses); a clear error otherwise."""
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB (H, W, 3) images, got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return img[top : top + side, left : left + side]


def _standardise(x: torch.Tensor, centre_scale: tuple[float, float]) -> torch.Tensor:
    centre, scale = centre_scale
    return (x - centre) / scale


class GaborFeatures:
    """Complex-cell (quadrature-pair) Gabor energy, pooled over a ``grid`` x ``grid`` layout.

    Images are centre-cropped to a square (the framing CLIP uses) and resized to ``image_size``.
    One token per grid cell (row-major from the top left), with features, in order:
    log-energy for each (frequency, orientation), frequency-major; mean luminance; RMS contrast;
    and, if ``colour``, mean R-G and B-Y opponent signals. ``token_names`` lists them.
    Orientation k has wave vector angle k*pi/n_orientations: k=0 responds to vertical stripes
    (luminance varying along x). Frequencies are in cycles per pixel at ``image_size``.
    pooled = [mean over tokens, std over tokens (spatial heterogeneity), global RMS contrast,
    colourfulness if ``colour``]; ``pooled_names`` lists them.
    """

    def __init__(
        self,
        image_size: int = 96,
        grid: int = 4,
        frequencies: Sequence[float] = (0.08, 0.16, 0.32),
        n_orientations: int = 4,
        colour: bool = True,
    ):
        self.image_size = int(image_size)
        self.grid = int(grid)
        self.frequencies = tuple(float(f) for f in frequencies)
        self.n_orientations = int(n_orientations)
        self.colour = bool(colour)
        if not 0 < self.grid <= self.image_size:
            raise ValueError(f"grid must be in 1..image_size, got {grid}")
        if not all(0 < f <= 0.5 for f in self.frequencies):
            raise ValueError(f"frequencies must be in (0, 0.5] cycles/pixel, got {self.frequencies}")
        self.cache_id = (
            f"gabor-s{self.image_size}-g{self.grid}-f{'_'.join(f'{f:g}' for f in self.frequencies)}"
            f"-o{self.n_orientations}-c{int(self.colour)}"
        )
        self._pad, self._kernel_fft = self._build_bank()

        channels = [f"energy_f{f:g}_o{o}" for f in self.frequencies for o in range(self.n_orientations)]
        channels += ["luminance", "contrast"] + (["red_green", "blue_yellow"] if self.colour else [])
        self.token_names = channels
        self.pooled_names = (
            [f"mean_{c}" for c in channels] + [f"std_{c}" for c in channels] + ["global_contrast"]
            + (["colourfulness"] if self.colour else [])
        )

    @property
    def n_tokens(self) -> int:
        return self.grid * self.grid

    def _build_bank(self) -> tuple[int, torch.Tensor]:
        """Complex Gabor kernels, zero-padded to one FFT size and transformed once.

        Each complex kernel is a quadrature pair (even = real part, odd = imaginary part), so
        |response|^2 is the phase-invariant complex-cell energy. The even part's mean is removed
        so that uniform luminance leaks into luminance only, not into energy.
        """
        kernels = [
            gabor_kernel(f, theta=np.pi * o / self.n_orientations)
            for f in self.frequencies
            for o in range(self.n_orientations)
        ]
        pad = max(k.shape[0] for k in kernels) // 2
        if pad >= self.image_size:
            raise ValueError(f"image_size {self.image_size} is too small for frequency {min(self.frequencies)}: "
                             f"its kernel needs image_size > {pad}")
        size = self.image_size + 2 * pad
        bank = np.zeros((len(kernels), size, size), np.complex128)
        for i, k in enumerate(kernels):
            k = k - k.real.mean()
            r = k.shape[0] // 2
            bank[i, : k.shape[0], : k.shape[1]] = k
            bank[i] = np.roll(bank[i], (-r, -r), axis=(0, 1))  # kernel centre at the origin
        return pad, torch.from_numpy(np.fft.fft2(bank)).to(torch.complex64)

    def _prepare(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 RGB images of any size -> float (n, 3, s, s) in [0, 1], centre-cropped square."""
        out = np.empty((len(images), self.image_size, self.image_size, 3), np.uint8)
        for i, img in enumerate(images):
            square = centre_square(img)
            side = square.shape[0]
            interp = cv2.INTER_AREA if side >= self.image_size else cv2.INTER_LINEAR
            out[i] = cv2.resize(square, (self.image_size, self.image_size), interpolation=interp)
        return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255.0

    @torch.inference_mode()
    def __call__(self, images: Sequence[np.ndarray]) -> Features:
        if len(images) == 0:
            return Features(np.zeros((0, self.n_tokens, len(self.token_names)), np.float32),
                            np.zeros((0, len(self.pooled_names)), np.float32))
        rgb = self._prepare(images)
        r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
        grey = 0.299 * r + 0.587 * g + 0.114 * b  # (n, 1, s, s)

        # Filtering by FFT: reflect padding by half the largest kernel keeps the circular
        # convolution's wrap-around outside the cropped image.
        p, s = self._pad, self.image_size
        padded = F.pad(grey, (p, p, p, p), mode="reflect")
        response = torch.fft.ifft2(torch.fft.fft2(padded) * self._kernel_fft)[..., p : p + s, p : p + s]
        energy = response.real.square() + response.imag.square()  # (n, n_filters, s, s)

        def cells(x: torch.Tensor) -> torch.Tensor:
            return F.adaptive_avg_pool2d(x, self.grid)

        log_energy = torch.log(cells(energy) + _LOG_ENERGY_EPS)
        mean_grey = cells(grey)
        contrast = (cells(grey.square()) - mean_grey.square()).clamp_min(0).sqrt()
        maps = [
            _standardise(log_energy, _LOG_ENERGY),
            _standardise(mean_grey, _LUMINANCE),
            _standardise(contrast, _CONTRAST),
        ]
        global_stats = [_standardise(grey.flatten(1).std(dim=1, correction=0), _CONTRAST)]
        if self.colour:
            red_green, blue_yellow = r - g, b - 0.5 * (r + g)
            maps += [_standardise(cells(red_green), _OPPONENT), _standardise(cells(blue_yellow), _OPPONENT)]
            # Hasler & Suesstrunk-style colourfulness: the spread of the opponent signals
            spread = (red_green.flatten(1).var(dim=1, correction=0)
                      + blue_yellow.flatten(1).var(dim=1, correction=0)).sqrt()
            global_stats.append(_standardise(spread, _COLOURFULNESS))
        tokens = torch.cat(maps, dim=1).flatten(2).transpose(1, 2)  # (n, grid*grid, n_features)
        pooled = torch.cat(
            [tokens.mean(dim=1), tokens.std(dim=1, correction=0), torch.stack(global_stats, dim=1)], dim=1
        )
        return Features(tokens.numpy().astype(np.float32), pooled.numpy().astype(np.float32))

    def __repr__(self) -> str:
        return f"GaborFeatures({self.cache_id})"
