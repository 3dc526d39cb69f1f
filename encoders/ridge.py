"""Linear encoding model: ridge regression from image features to every channel x time point.

As in Gifford et al. 2022. The regularisation is chosen by efficient leave-one-out cross-validation
(scikit-learn's RidgeCV); the fitted coefficients are stored as plain arrays (no pickles).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.linear_model import RidgeCV

from prosthesis_sim.data.dataset import Normalizer
from prosthesis_sim.features.cache import cached_features, feature_shapes, features_for_images


MAX_TOKEN_VALUES = 4096  # 'auto' flattens tokens only up to this size (Gabor: 256; CLIP ViT-L/14: 263,168)


INPUTS = ("auto", "pooled", "tokens", "both")


def resolve_inputs(inputs: str, token_shape: tuple[int, ...]) -> str:
    """'auto' -> 'both' when the flattened tokens (``token_shape`` per image) are few, else 'pooled'
    (also for pooled-only features, which have no tokens)."""
    if inputs not in INPUTS:
        raise ValueError(f"encoder.inputs must be one of {list(INPUTS)}, got {inputs!r}")
    if inputs == "auto":
        return "both" if 0 < np.prod(token_shape) <= MAX_TOKEN_VALUES else "pooled"
    return inputs


def design_matrix(feats, inputs: str) -> np.ndarray:
    """Features -> (n, d): 'pooled' vector, 'tokens' flattened (keeps spatial layout), 'both', or 'auto'
    ('both' when the flattened tokens are small, else 'pooled')."""
    inputs = resolve_inputs(inputs, feats.tokens.shape[1:])
    if inputs != "pooled" and feats.tokens.size == 0 and len(feats):
        raise ValueError(f"encoder.inputs={inputs!r} needs the token sequence, but these features are pooled only")
    parts = {"pooled": [feats.pooled], "tokens": [feats.tokens.reshape(len(feats), -1)]}
    parts["both"] = parts["pooled"] + parts["tokens"]
    return np.concatenate(parts[inputs], axis=1).astype(np.float64)


def leave_one_out(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Exact leave-one-out predictions of ridge with an unpenalised intercept (as RidgeCV fits it):
    y - (y - yhat) / (1 - h_ii), with the hat matrix 11'/n + Xc (Xc'Xc + alpha I)^-1 Xc' from the SVD
    of the centred design (n x n work, whatever the number of targets)."""
    xc = x - x.mean(0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    shrink = s ** 2 / (s ** 2 + alpha)
    y_mean = y.mean(0)
    fitted = y_mean + (u * shrink) @ (u.T @ (y - y_mean))
    h = 1.0 / len(x) + (u ** 2 * shrink).sum(1)
    return y - (y - fitted) / (1.0 - h)[:, None]


class RidgeEncoder:
    """Ridge from features to signals. ``inputs='auto'`` is resolved once, at fit, from the shapes the
    extractor gives (``feature_shapes``); when it resolves to 'pooled' (CLIP) the token sequence is
    neither computed into memory nor cached (``tokens=False``)."""

    def __init__(self, features, inputs: str = "auto", alphas: Sequence[float] = tuple(np.logspace(-1, 6, 15))):
        resolve_inputs(inputs, ())  # a typo fails at config time
        self.features = features
        self.inputs = inputs
        self.alphas = [float(a) for a in alphas]
        self.norm: Normalizer | None = None
        self.inputs_used: str | None = None

    def fit(self, data) -> None:
        self.inputs_used = resolve_inputs(self.inputs, feature_shapes(self.features).tokens.shape[1:])
        feats = cached_features(self.features, data.train_images, data.cache_dir, tokens=self.needs_tokens())
        x = design_matrix(feats, self.inputs_used)
        self.x_mean, self.x_std = x.mean(0), x.std(0) + 1e-8
        self.norm = data.normalizer
        n, reps = data.train.shape[:2]
        y = self.norm(data.train_average()).reshape(n, -1)
        xs = (x - self.x_mean) / self.x_std
        model = RidgeCV(alphas=self.alphas).fit(xs, y)
        self.alpha = float(model.alpha_)
        self.coef = model.coef_.T.astype(np.float32)  # (d, n_channels * n_times)
        self.intercept = model.intercept_.astype(np.float32)
        self.shape = data.signal_shape
        self._held_out = leave_one_out(xs, y, self.alpha).astype(np.float32).reshape(n, *self.shape)

    def held_out_predictions(self) -> np.ndarray:
        """z-scored predictions (n_train, channels, times) of each training image by the ridge fitted
        without it (exact leave-one-out): what the regression would say of an unseen image, for models
        that validate what they add to it (the diffusion encoder's ``residual_gain='auto'``)."""
        if getattr(self, "_held_out", None) is None:
            raise RuntimeError("RidgeEncoder.held_out_predictions needs fit() in this session (they are not saved)")
        return self._held_out

    def needs_tokens(self) -> bool:
        """Whether the design matrix needs the token sequence (else pooled vectors only are computed)."""
        return self.inputs_used != "pooled"

    def generate(self, images: Sequence[np.ndarray], seed: int | None = None, paths=None,
                 cache_dir=None) -> np.ndarray:
        """Signals of images. With ``paths`` and ``cache_dir`` (a dataset's test images) the features
        are cached like the training features, so evaluating again does not run the extractor."""
        if self.norm is None:
            raise RuntimeError("RidgeEncoder.generate called before fit()")
        if self.inputs_used is None:  # loaded from a checkpoint saved before inputs_used was kept
            self.inputs_used = resolve_inputs(self.inputs, feature_shapes(self.features).tokens.shape[1:])
        feats = features_for_images(self.features, images, paths=paths, tokens=self.needs_tokens(), cache_dir=cache_dir,
                                    progress=cache_dir is not None)
        return self.norm.inverse(self.predict(feats))

    def predict(self, feats) -> np.ndarray:
        """Features -> z-scored signals (n, channels, times): the regression alone, for models that
        build on it (the diffusion encoder's residual mode)."""
        x = design_matrix(feats, self.inputs_used)
        z = ((x - self.x_mean) / self.x_std).astype(np.float32) @ self.coef + self.intercept
        return z.reshape(len(feats), *self.shape)

    def state(self):
        arrays = {"coef": self.coef, "intercept": self.intercept, "x_mean": self.x_mean, "x_std": self.x_std}
        meta = {"alpha": self.alpha, "shape": list(self.shape), "inputs_used": self.inputs_used}
        return {**arrays, **self.norm.state_dict()}, meta

    def load_state(self, arrays, meta) -> None:
        self.coef, self.intercept = arrays["coef"], arrays["intercept"]
        self.x_mean, self.x_std = arrays["x_mean"], arrays["x_std"]
        self.norm = Normalizer.from_state_dict(arrays)
        self.alpha, self.shape = meta["alpha"], tuple(meta["shape"])
        self.inputs_used = meta.get("inputs_used")
