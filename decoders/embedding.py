"""Brain decoder: a NICE/UBP-style contrastive projector from M/EEG to image features, with an image head.

Architecture: UBP's "EEGProject" (Wu et al., CVPR 2025) -- flatten -> Linear -> residual (GELU ->
Linear -> Dropout) -> LayerNorm -- rather than NICE's temporal-spatial convolution. On hundreds of
training images the projector must be mostly linear and heavily regularised: UBP's two linear layers
with a residual reached the best published EEG identification with far fewer inductive assumptions
than TSConv, and a linear first layer over (channel x time bin) inputs is what pixel ridge already
shows works on this data. Signals are z-scored per channel (training statistics) and averaged over
``time_bin`` samples (20 ms at 250 Hz), which cuts the first layer's weights five-fold.

Two independent EEGProject branches read the same input (as ATM's high- and low-level branches):
- ``embed``: the contrastive branch, mapping to the *target space*, trained with CLIP's symmetric
  InfoNCE and a learnable temperature (``logit_scale``, initialised at 1/0.07, capped at 100, as CLIP).
  The target space is a fixed (fitted, never trained) transform of the configured extractor's features
  of the training images: tokens flattened (keeps the Gabor 4 x 4 layout: *where* things are, which the
  loop's image needs) plus the pooled vector when tokens are small, else the pooled vector alone
  (CLIP's 257 x 1024 tokens), each dimension standardised, then PCA (scikit-learn) to ``n_components``.
  Because images only pass through that fixed transform, ``embed_images`` is exact for any image,
  gallery or camera frame, and costs one feature extraction.
- ``decode``: the image branch, a low-resolution grey image (``size``) through a sigmoid, trained with
  MSE + (1 - SSIM) (``decoders.losses``) against the training images' grey thumbnails, starting from
  the mean training thumbnail.

Training: AdamW (no weight decay on biases, norms and the temperature), seeded (torch.Generator for
the data order and validation split, a forked global RNG for initial weights and dropout). Each
branch's epoch count is chosen on a held-out ``val_fraction`` of the training images (its lowest
validation loss; the run stops once neither branch improved for ``patience`` epochs); then a fresh
model is fitted on all training images, each branch kept as it was after its own count (measured:
the contrastive branch overfits within about 20 epochs on 400 images, the image branch needs about 60).
Fitted on measured training averages only; everything ``decode``/``embed`` need is in ``state()``.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from torch import nn
from tqdm.auto import tqdm

from prosthesis_sim.decoders.losses import image_loss, info_nce
from prosthesis_sim.decoders.ridge_pixels import grey_thumbnail
from prosthesis_sim.data.dataset import Normalizer, load_image
from prosthesis_sim.distributed import local_device
from prosthesis_sim.features.cache import cached_features, features_for_images

log = logging.getLogger(__name__)

MAX_TOKEN_VALUES = 4096  # 'auto' flattens tokens only up to this size (Gabor: 256; CLIP ViT-L/14: 263,168)
LOGIT_SCALE_INIT = math.log(1 / 0.07)  # CLIP's initial temperature
LOGIT_SCALE_MAX = math.log(100.0)  # CLIP's cap
INPUTS = ("auto", "pooled", "tokens", "both")


def feature_matrix(feats, inputs: str) -> tuple[np.ndarray, str]:
    """Features -> (n, d) float64 and the resolved choice: 'pooled', 'tokens' (flattened), 'both' or
    'auto' ('both' when the flattened tokens are small, else 'pooled')."""
    if inputs == "auto":
        inputs = "both" if np.prod(feats.tokens.shape[1:]) <= MAX_TOKEN_VALUES else "pooled"
    parts = {"pooled": [feats.pooled], "tokens": [np.reshape(feats.tokens, (len(feats), -1))]}
    parts["both"] = parts["pooled"] + parts["tokens"]
    if inputs not in parts:
        raise ValueError(f"decoder.inputs must be one of {list(INPUTS)}, got {inputs!r}")
    return np.concatenate([np.asarray(p, np.float64) for p in parts[inputs]], axis=1), inputs


class EEGProject(nn.Module):
    """UBP's projector: Linear -> residual (GELU -> Linear -> Dropout) -> LayerNorm, then a linear readout."""

    def __init__(self, n_inputs: int, hidden: int, n_out: int, dropout: float):
        super().__init__()
        self.input = nn.Linear(n_inputs, hidden)
        self.residual = nn.Sequential(nn.GELU(), nn.Linear(hidden, hidden), nn.Dropout(dropout))
        self.norm = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input(x)
        return self.out(self.drop(self.norm(h + self.residual(h))))


class DecoderNet(nn.Module):
    """Two independent EEGProject branches (no shared weights), as ATM's high- and low-level branches:
    ``embedder`` (+ ``logit_scale``) for the contrastive embedding, ``imager`` for the grey image.
    Independent branches let each stop at its own best epoch (the contrastive one overfits within
    tens of epochs on hundreds of images, the image one needs more)."""

    BRANCHES = {"embed": ("embedder.", "logit_scale"), "image": ("imager.",)}

    def __init__(self, n_inputs: int, hidden: int, n_embed: int, n_pixels: int, dropout: float,
                 mean_image: np.ndarray | None = None):
        super().__init__()
        self.embedder = EEGProject(n_inputs, hidden, n_embed, dropout)
        self.imager = EEGProject(n_inputs, hidden, n_pixels, dropout)
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))
        if mean_image is not None:  # start from the mean training image: the branch learns deviations
            with torch.no_grad():
                p = np.clip(mean_image.ravel(), 1e-3, 1 - 1e-3)
                self.imager.out.bias.copy_(torch.as_tensor(np.log(p / (1 - p)), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.normalize(self.embedder(x), dim=-1), torch.sigmoid(self.imager(x))

    def branch_state(self, branch: str) -> dict[str, torch.Tensor]:
        """A copy of one branch's parameters (for keeping each branch at its own best epoch)."""
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k.startswith(self.BRANCHES[branch])}


class EmbeddingDecoder:
    """Signal -> (embedding in the extractor's feature space, low-resolution grey image).

    ``features`` is the image feature extractor (``features: ${features}``); ``size`` the decoded
    image's (height, width); ``epochs`` the most epochs of the held-out run (early stopping picks fewer).
    """

    not_fitted = ("device", "progress")  # constructor arguments that leave the fitted state alone (fit caches)

    def __init__(
        self,
        features,
        inputs: str = "auto",
        n_components: int | None = 64,
        size: Sequence[int] = (32, 32),
        time_bin: int = 5,
        hidden: int = 256,
        dropout: float = 0.5,
        epochs: int = 300,
        patience: int = 30,
        val_fraction: float = 0.1,
        batch_size: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        seed: int | None = 0,
        device: str = "cpu",
        progress: bool | None = None,
    ):
        if inputs not in INPUTS:
            raise ValueError(f"decoder.inputs must be one of {list(INPUTS)}, got {inputs!r}")
        if n_components is not None and int(n_components) < 1:
            raise ValueError(f"decoder.n_components must be >= 1 or null (no PCA), got {n_components}")
        if len(size) != 2 or min(int(s) for s in size) < 3:
            raise ValueError(f"decoder.size must be [height, width], each >= 3 (SSIM needs 3 x 3), got {list(size)}")
        if int(time_bin) < 1:
            raise ValueError(f"decoder.time_bin must be >= 1 sample, got {time_bin}")
        if not 0 <= float(val_fraction) < 1:
            raise ValueError(f"decoder.val_fraction must be in [0, 1), got {val_fraction}")
        if int(epochs) < 1 or int(batch_size) < 2:
            raise ValueError(f"decoder.epochs must be >= 1 and decoder.batch_size >= 2, got {epochs}, {batch_size}")
        self.features, self.inputs = features, inputs
        self.n_components = None if n_components is None else int(n_components)
        self.size = (int(size[0]), int(size[1]))
        self.time_bin, self.hidden, self.dropout = int(time_bin), int(hidden), float(dropout)
        self.epochs, self.patience, self.val_fraction = int(epochs), int(patience), float(val_fraction)
        self.batch_size, self.lr, self.weight_decay = int(batch_size), float(lr), float(weight_decay)
        self.seed = 0 if seed is None else int(seed)  # None (an unset global seed): still deterministic
        self.device = local_device(device)
        self.progress = progress
        self.model: DecoderNet | None = None
        self.history: dict[str, list[float]] = {}

    # -- inputs and targets -------------------------------------------------------------------------
    def _inputs(self, signals: np.ndarray) -> torch.Tensor:
        """Raw signals -> z-scored, time-binned, flattened float32 tensor on the device."""
        signals = np.asarray(signals)
        if signals.ndim != 3 or signals.shape[1:] != tuple(self.signal_shape):
            raise ValueError(f"signals must be (n, n_channels, n_times) = (n, {self.signal_shape[0]}, "
                             f"{self.signal_shape[1]}) as in training, got shape {signals.shape}")
        z = self.norm(signals)
        n, c, t = z.shape
        t_used = t - t % self.time_bin
        x = z[:, :, :t_used].reshape(n, c, t_used // self.time_bin, self.time_bin).mean(-1).reshape(n, -1)
        return torch.as_tensor(x, dtype=torch.float32, device=self.device)

    def _fit_target(self, feats) -> np.ndarray:
        """Fit the fixed image-side transform on the training images; return their targets (n, d)."""
        x, self.inputs_used = feature_matrix(feats, self.inputs)
        self.feat_mean, self.feat_std = x.mean(0), x.std(0) + 1e-6
        z = (x - self.feat_mean) / self.feat_std
        if self.n_components is None:
            self.pca_mean, self.pca_components = np.zeros(z.shape[1]), np.eye(z.shape[1])
        else:
            k = min(self.n_components, *z.shape)
            if k < self.n_components:
                log.warning("decoder.n_components=%d reduced to %d (training images x feature size %s)",
                            self.n_components, k, z.shape)
            pca = PCA(n_components=k, svd_solver="full", random_state=self.seed).fit(z)
            self.pca_mean, self.pca_components = pca.mean_, pca.components_
        return self._target(feats)

    def _target(self, feats) -> np.ndarray:
        x, _ = feature_matrix(feats, self.inputs_used)
        y = ((x - self.feat_mean) / self.feat_std - self.pca_mean) @ self.pca_components.T
        return (y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    # -- training -----------------------------------------------------------------------------------
    def fit(self, data) -> None:
        self.norm = data.normalizer
        self.signal_shape = tuple(int(v) for v in data.signal_shape)
        feats = cached_features(self.features, data.train_images, data.cache_dir)
        self.feature_id = self.features.cache_id
        target = self._fit_target(feats)
        thumbs = np.stack([grey_thumbnail(load_image(p), self.size) for p in data.train_images])
        x = self._inputs(data.train_average())
        y_emb = torch.as_tensor(target, device=self.device)
        y_img = torch.as_tensor(thumbs, device=self.device)
        self.dims = {"n_inputs": int(x.shape[1]), "hidden": self.hidden, "n_embed": int(target.shape[1]),
                     "n_pixels": self.size[0] * self.size[1]}
        mean_image = thumbs.mean(0)

        n = len(x)
        n_val = int(round(self.val_fraction * n))
        self.history = {}
        if n_val >= 2:  # choose each branch's epoch count on held-out training images, then refit on all
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed)).to(self.device)
            val, train = order[:n_val], order[n_val:]
            _, curves = self._train(x[train], y_emb[train], y_img[train], mean_image, self.epochs,
                                    val=(x[val], y_emb[val], y_img[val]), desc="choose epochs")
            self.best_epochs = {k: int(np.argmin(c)) + 1 for k, c in curves.items()}
            self.history.update({f"val_{k}": c for k, c in curves.items()})
        else:
            self.best_epochs = {"embed": self.epochs, "image": self.epochs}
        self.model, curves = self._train(x, y_emb, y_img, mean_image, self.best_epochs, desc="fit")
        self.history.update({f"train_{k}": c for k, c in curves.items()})

    def _train(self, x, y_emb, y_img, mean_image, epochs, val=None, desc=""):
        """Train a fresh model; returns it and per-branch loss curves (validation losses with ``val``).

        ``epochs``: with ``val``, the most epochs (stopping once neither branch improved for
        ``patience`` epochs); without, a dict {branch: epochs}, each branch kept as it was after its count.
        """
        stop_at = {"embed": epochs, "image": epochs} if isinstance(epochs, int) else dict(epochs)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)  # initial weights and dropout masks
            model = DecoderNet(**self.dims, dropout=self.dropout, mean_image=mean_image).to(self.device)
            decay = [p for p in model.parameters() if p.ndim > 1]  # no decay on biases, norms, temperature
            rest = [p for p in model.parameters() if p.ndim <= 1]
            opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.weight_decay},
                                     {"params": rest, "weight_decay": 0.0}], lr=self.lr)
            gen = torch.Generator().manual_seed(self.seed)  # data order
            curves = {"embed": [], "image": []}
            kept: dict[str, dict] = {}
            since_best = {"embed": 0, "image": 0}
            bar = tqdm(range(max(stop_at.values())), desc=f"{type(self).__name__} {desc}", unit="epoch",
                       leave=False, disable=None if self.progress is None else not self.progress)
            for epoch in bar:
                model.train()
                sums = {"embed": 0.0, "image": 0.0}
                order = torch.randperm(len(x), generator=gen).to(self.device)
                # a last batch under half the size joins the one before it (InfoNCE needs negatives)
                starts = list(range(0, len(x), self.batch_size))
                if len(starts) > 1 and len(x) - starts[-1] < self.batch_size // 2:
                    starts.pop()
                for i, start in enumerate(starts):
                    idx = order[start : starts[i + 1] if i + 1 < len(starts) else len(x)]
                    losses = self._losses(model, x[idx], y_emb[idx], y_img[idx])
                    opt.zero_grad(set_to_none=True)
                    sum(losses.values()).backward()  # the branches share no weights: each gets its own gradient
                    opt.step()
                    with torch.no_grad():
                        model.logit_scale.clamp_(0, LOGIT_SCALE_MAX)
                    for k, v in losses.items():
                        sums[k] += v.item() * len(idx)
                if val is None:
                    for k in curves:
                        curves[k].append(sums[k] / len(x))
                        if epoch + 1 == stop_at[k]:
                            kept[k] = model.branch_state(k)
                else:
                    model.eval()
                    with torch.no_grad():
                        losses = self._losses(model, *val)
                    for k, v in losses.items():
                        curves[k].append(v.item())
                        since_best[k] = 0 if curves[k][-1] <= min(curves[k]) else since_best[k] + 1
                bar.set_postfix({k: f"{c[-1]:.3f}" for k, c in curves.items()})
                if val is not None and min(since_best.values()) >= self.patience:
                    break
            bar.close()
        for branch in kept.values():
            model.load_state_dict(branch, strict=False)
        return model.eval(), curves

    def _losses(self, model, x, y_emb, y_img) -> dict[str, torch.Tensor]:
        emb, img = model(x)
        return {"embed": info_nce(emb, y_emb, model.logit_scale), "image": image_loss(img.reshape(y_img.shape), y_img)}

    # -- use ----------------------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self.model is not None

    def _check_fitted(self) -> None:
        if self.model is None:
            raise RuntimeError(f"{type(self).__name__} used before fit() or load_state(): fit it on a dataset first")

    @torch.inference_mode()
    def _forward(self, signals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check_fitted()
        x = self._inputs(signals)
        emb, img = self.model.eval()(x)
        return emb.cpu().numpy().astype(np.float32), img.cpu().numpy().astype(np.float32)

    def decode(self, signals: np.ndarray) -> np.ndarray:
        """Signals (n, channels, times) -> grey images (n, h, w) float32 in [0, 1] (the image head)."""
        return self._forward(signals)[1].reshape(len(signals), *self.size)

    def embed(self, signals: np.ndarray) -> np.ndarray:
        """Signals (n, channels, times) -> (n, d) float32, rows L2-normalised, in embed_images' space."""
        return self._forward(signals)[0]

    @property
    def inverse_temperature(self) -> float:
        """exp(logit_scale): the learned factor on cosine similarities (CLIP's 1 / temperature)."""
        self._check_fitted()
        return float(self.model.logit_scale.detach().exp())

    def embed_features(self, feats) -> np.ndarray:
        """Extractor features (of any images) -> (n, d) float32 targets, rows L2-normalised."""
        self._check_fitted()
        return self._target(feats)

    def embed_images(self, images: Sequence[np.ndarray], paths=None) -> np.ndarray:
        """RGB uint8 images -> (n, d) float32, rows L2-normalised, in the same space as ``embed``."""
        return self.embed_features(features_for_images(self.features, images, paths=paths))

    def embed_files(self, paths: Sequence[str | Path], cache_dir: str | Path | None = None) -> np.ndarray:
        """Image files -> (n, d) like ``embed_images``, their features cached under ``cache_dir``."""
        return self.embed_features(cached_features(self.features, paths, cache_dir))

    # -- persistence --------------------------------------------------------------------------------
    def state(self):
        self._check_fitted()
        arrays = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        arrays.update(self.norm.state_dict())
        arrays.update({"target.feat_mean": self.feat_mean, "target.feat_std": self.feat_std,
                       "target.pca_mean": self.pca_mean, "target.pca_components": self.pca_components})
        meta = {"dims": self.dims, "signal_shape": list(self.signal_shape), "inputs_used": self.inputs_used,
                "feature_id": self.feature_id, "best_epochs": self.best_epochs,
                "inverse_temperature": self.inverse_temperature}
        return arrays, meta

    def load_state(self, arrays, meta) -> None:
        if meta["feature_id"] != self.features.cache_id:
            raise ValueError(f"this decoder was fitted on features {meta['feature_id']!r} but is configured "
                             f"with {self.features.cache_id!r}: its embeddings would not match")
        self.norm = Normalizer.from_state_dict(arrays)
        self.feat_mean, self.feat_std = arrays["target.feat_mean"], arrays["target.feat_std"]
        self.pca_mean, self.pca_components = arrays["target.pca_mean"], arrays["target.pca_components"]
        self.dims, self.signal_shape = meta["dims"], tuple(meta["signal_shape"])
        self.inputs_used, self.feature_id, self.best_epochs = meta["inputs_used"], meta["feature_id"], meta["best_epochs"]
        self.model = DecoderNet(**self.dims, dropout=self.dropout).to(self.device)
        self.model.load_state_dict({k.removeprefix("model."): torch.as_tensor(np.asarray(v))
                                    for k, v in arrays.items() if k.startswith("model.")})
        self.model.eval()
