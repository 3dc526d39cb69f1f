"""Linear encoding model: ridge regression from image features to every channel x time point.

As in Gifford et al. 2022. The regularisation is chosen by efficient leave-one-out cross-validation
(scikit-learn's RidgeCV); the fitted coefficients are stored as plain arrays (no pickles).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.linear_model import RidgeCV

from prosthesis_sim.data.dataset import Normalizer
from prosthesis_sim.features.cache import cached_features, features_for_images


MAX_TOKEN_VALUES = 4096  # 'auto' flattens tokens only up to this size (Gabor: 256; CLIP ViT-L/14: 263,168)


def design_matrix(feats, inputs: str) -> np.ndarray:
    """Features -> (n, d): 'pooled' vector, 'tokens' flattened (keeps spatial layout), 'both', or 'auto'
    ('both' when the flattened tokens are small, else 'pooled')."""
    if inputs == "auto":
        inputs = "both" if np.prod(feats.tokens.shape[1:]) <= MAX_TOKEN_VALUES else "pooled"
    parts = {"pooled": [feats.pooled], "tokens": [feats.tokens.reshape(len(feats), -1)]}
    parts["both"] = parts["pooled"] + parts["tokens"]
    if inputs not in parts:
        raise ValueError(f"encoder.inputs must be one of {sorted(parts)}, got {inputs!r}")
    return np.concatenate(parts[inputs], axis=1).astype(np.float64)


class RidgeEncoder:
    def __init__(self, features, inputs: str = "auto", alphas: Sequence[float] = tuple(np.logspace(-1, 6, 15))):
        self.features = features
        self.inputs = inputs
        self.alphas = [float(a) for a in alphas]
        self.norm: Normalizer | None = None

    def fit(self, data) -> None:
        x = design_matrix(cached_features(self.features, data.train_images, data.cache_dir), self.inputs)
        self.x_mean, self.x_std = x.mean(0), x.std(0) + 1e-8
        self.norm = data.normalizer
        n, reps = data.train.shape[:2]
        y = self.norm(data.train_average()).reshape(n, -1)
        model = RidgeCV(alphas=self.alphas).fit((x - self.x_mean) / self.x_std, y)
        self.alpha = float(model.alpha_)
        self.coef = model.coef_.T.astype(np.float32)  # (d, n_channels * n_times)
        self.intercept = model.intercept_.astype(np.float32)
        self.shape = data.signal_shape

    def generate(self, images: Sequence[np.ndarray], seed: int | None = None, paths=None) -> np.ndarray:
        if self.norm is None:
            raise RuntimeError("RidgeEncoder.generate called before fit()")
        x = design_matrix(features_for_images(self.features, images, paths=paths), self.inputs)
        z = ((x - self.x_mean) / self.x_std).astype(np.float32) @ self.coef + self.intercept
        return self.norm.inverse(z.reshape(len(images), *self.shape))

    def state(self):
        arrays = {"coef": self.coef, "intercept": self.intercept, "x_mean": self.x_mean, "x_std": self.x_std}
        return {**arrays, **self.norm.state_dict()}, {"alpha": self.alpha, "shape": list(self.shape)}

    def load_state(self, arrays, meta) -> None:
        self.coef, self.intercept = arrays["coef"], arrays["intercept"]
        self.x_mean, self.x_std = arrays["x_mean"], arrays["x_std"]
        self.norm = Normalizer.from_state_dict(arrays)
        self.alpha, self.shape = meta["alpha"], tuple(meta["shape"])
