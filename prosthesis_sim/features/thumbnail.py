"""Layout features: an area-averaged luminance (and colour-opponent) thumbnail on a grid.

The decoders' default target space. Why not the encoders' Gabor features: a decoder trained into the
space an encoder is conditioned on reads that encoder's features back out of its signals, and scores
it above any real brain (the circularity trap, docs/eval.md). A thumbnail is what the prosthesis
needs from a decoder (where light and dark are) and is not what any encoder is conditioned on; psim-eval
warns when a decoder's space and an encoder's features are the same configuration.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from prosthesis_sim.features.gabor import centre_square
from prosthesis_sim.protocols import Features

_LUMINANCE = (0.45, 0.2)  # fixed (never fitted) centre and scale, the same as the Gabor features' luminance
_OPPONENT = (0.0, 0.12)


class ThumbnailFeatures:
    """One token per cell of a ``grid`` x ``grid`` thumbnail of the centre-cropped square image (row-major
    from the top left): standardised mean luminance, and the R-G and B-Y opponent means if ``colour``.
    pooled: the luminance cells flattened (the layout itself), then the mean of each opponent channel."""

    def __init__(self, grid: int = 8, colour: bool = True):
        self.grid, self.colour = int(grid), bool(colour)
        if self.grid < 1:
            raise ValueError(f"features.grid must be >= 1, got {grid}")
        self.cache_id = f"thumbnail-g{self.grid}-c{int(self.colour)}"
        self.token_names = ["luminance"] + (["red_green", "blue_yellow"] if self.colour else [])
        self.pooled_names = [f"luminance_{i}" for i in range(self.grid * self.grid)] + (
            ["mean_red_green", "mean_blue_yellow"] if self.colour else [])

    def _cells(self, image: np.ndarray) -> np.ndarray:
        square = centre_square(image).astype(np.float32) / 255.0
        return cv2.resize(square, (self.grid, self.grid), interpolation=cv2.INTER_AREA).reshape(-1, 3)

    def __call__(self, images: Sequence[np.ndarray]) -> Features:
        n_tok, n_feat = self.grid * self.grid, len(self.token_names)
        if len(images) == 0:
            return Features(np.zeros((0, n_tok, n_feat), np.float32), np.zeros((0, len(self.pooled_names)), np.float32))
        rgb = np.stack([self._cells(img) for img in images])  # (n, cells, 3)
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        maps = [(0.299 * r + 0.587 * g + 0.114 * b - _LUMINANCE[0]) / _LUMINANCE[1]]
        if self.colour:
            maps += [(r - g - _OPPONENT[0]) / _OPPONENT[1], (b - 0.5 * (r + g) - _OPPONENT[0]) / _OPPONENT[1]]
        tokens = np.stack(maps, axis=-1).astype(np.float32)
        pooled = np.concatenate([tokens[..., 0], tokens[..., 1:].mean(axis=1)], axis=1).astype(np.float32)
        return Features(tokens, pooled)

    def __repr__(self) -> str:
        return f"ThumbnailFeatures({self.cache_id})"
