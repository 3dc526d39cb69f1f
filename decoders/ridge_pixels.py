"""Brain decoder: ridge regression from a measured M/EEG signal to a low-resolution grey image.

Fitted on measured (never generated) training signals, so the loop asks whether generated signals are
readable by a decoder of real brains. Signals are z-scored per channel and optionally averaged over
``time_bin`` samples (fewer inputs, same information at EEG bandwidths); the regularisation is chosen
by scikit-learn's efficient leave-one-out RidgeCV.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
from sklearn.linear_model import RidgeCV

from prosthesis_sim.data.dataset import Normalizer, load_image
from prosthesis_sim.scores import to_grey


def grey_thumbnail(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 -> grey float32 in [0, 1] at (height, width) = size, the same grey the loop is scored on."""
    return cv2.resize(to_grey(image), (size[1], size[0]), interpolation=cv2.INTER_AREA)


class RidgePixels:
    def __init__(self, size: Sequence[int] = (32, 32), time_bin: int = 5,
                 alphas: Sequence[float] = tuple(np.logspace(0, 7, 15))):
        self.size = (int(size[0]), int(size[1]))
        self.time_bin = int(time_bin)
        self.alphas = [float(a) for a in alphas]
        self.norm: Normalizer | None = None

    def _inputs(self, signals: np.ndarray) -> np.ndarray:
        n_channels = self.norm.mean.shape[0]
        if signals.ndim != 3 or signals.shape[1] != n_channels:
            raise ValueError(f"RidgePixels: signals must be (n, {n_channels} channels, n_times), got {signals.shape}")
        z = self.norm(signals)
        n, c, t = z.shape
        t_used = t - t % self.time_bin
        return z[:, :, :t_used].reshape(n, c, t_used // self.time_bin, self.time_bin).mean(-1).reshape(n, -1)

    def fit(self, data) -> None:
        self.norm = data.normalizer
        x = self._inputs(data.train_average())
        y = np.stack([grey_thumbnail(load_image(p), self.size).ravel() for p in data.train_images])
        model = RidgeCV(alphas=self.alphas).fit(x, y)
        self.alpha = float(model.alpha_)
        self.coef = model.coef_.T.astype(np.float32)
        self.intercept = model.intercept_.astype(np.float32)

    def decode(self, signals: np.ndarray) -> np.ndarray:
        if self.norm is None:
            raise RuntimeError("RidgePixels.decode called before fit()")
        out = self._inputs(signals) @ self.coef + self.intercept
        return np.clip(out, 0.0, 1.0).reshape(len(signals), *self.size).astype(np.float32)

    def state(self):
        return {"coef": self.coef, "intercept": self.intercept, **self.norm.state_dict()}, {"alpha": self.alpha}

    def load_state(self, arrays, meta) -> None:
        self.coef, self.intercept = arrays["coef"], arrays["intercept"]
        self.norm = Normalizer.from_state_dict(arrays)
        self.alpha = meta["alpha"]
