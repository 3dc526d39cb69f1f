"""The four pluggable stages of the loop, as small structural protocols.

Plug-ins in ``encoders/`` and ``decoders/`` (and phosphene adapters) satisfy these by shape, not by
inheritance; ``configs/`` wires them in with Hydra ``_target_``. Conventions shared by every stage:

- images are ``uint8`` RGB arrays of shape (H, W, 3) (frames from OpenCV are converted at the source);
- brain signals are ``float32`` arrays (n, n_channels, n_times) in the dataset's own units: every
  model keeps its own normalisation inside, so stages can be swapped freely;
- grey images (decoder output, percepts) are ``float32`` (H, W) in [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol, Sequence, runtime_checkable

import numpy as np


@dataclass
class Features:
    """Image features: a token sequence for cross-attention and a pooled vector.

    tokens: (n, n_tokens, dim) float32. pooled: (n, pooled_dim) float32.
    """

    tokens: np.ndarray
    pooled: np.ndarray

    def __len__(self) -> int:
        return len(self.pooled)

    def __getitem__(self, idx) -> "Features":
        return Features(self.tokens[idx], self.pooled[idx])


@runtime_checkable
class FeatureExtractor(Protocol):
    """Image -> Features. ``cache_id`` names the extractor and its settings (used as a cache key)."""

    cache_id: str

    def __call__(self, images: Sequence[np.ndarray]) -> Features: ...


@runtime_checkable
class FrameSource(Protocol):
    """An iterable of RGB uint8 frames; ``fps`` is the native rate (None when unknown)."""

    fps: float | None

    def __iter__(self) -> Iterator[np.ndarray]: ...


@runtime_checkable
class ImageToBrainEncoder(Protocol):
    """Fits on a BrainDataset; generates signals (n, n_channels, n_times) for a batch of images.

    ``paths`` (optional) names the images' files, for features that look images up (captions).
    ``generate`` returns the expected response (what the test average estimates). Optional, for
    encoders that model trial-to-trial variability (see :class:`TrialSampler`):
    ``sample_trials(images, n_trials, seed=None, paths=None) -> (n, n_trials, n_channels, n_times)``.
    Optional, for encoders whose signal does not depend on the image (a floor such as the mean ERP):
    ``image_independent = True`` (see :func:`is_image_independent`).
    """

    def fit(self, data) -> None: ...

    def generate(self, images: Sequence[np.ndarray], seed: int | None = None, paths=None) -> np.ndarray: ...


@runtime_checkable
class TrialSampler(Protocol):
    """An encoder that draws single trials, not only the mean (the diffusion encoders)."""

    def sample_trials(self, images: Sequence[np.ndarray], n_trials: int, seed: int | None = None,
                      paths=None) -> np.ndarray: ...


def can_sample_trials(encoder) -> bool:
    """Whether ``encoder`` draws single trials (single-trial realism applies only to those)."""
    return isinstance(encoder, TrialSampler)


def is_image_independent(encoder) -> bool:
    """Whether ``encoder.generate`` returns the same signal whatever the images (it declares
    ``image_independent = True``, as the mean-ERP floor does). Why: the loop then generates and decodes
    that signal once, when it is built, instead of once per frame."""
    return getattr(encoder, "image_independent", False) is True


@runtime_checkable
class BrainDecoder(Protocol):
    """Fits on measured signals of a BrainDataset; decodes signals to grey images in [0, 1].

    Required: ``fit(data)`` and ``decode(signals) -> (n, h, w)``. Saved decoders also implement
    ``state()`` / ``load_state(arrays, meta)`` (``prosthesis_sim.checkpoint``).
    Optional, for "decoders that embed" (see :class:`EmbeddingBrainDecoder`): ``embed(signals)`` and
    ``embed_images(images, paths=None)``, which map signals and images into one space, so test images
    can be identified from signals (identification applies only to decoders that have both).
    """

    def fit(self, data) -> None: ...

    def decode(self, signals: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class EmbeddingBrainDecoder(BrainDecoder, Protocol):
    """A decoder that embeds: signals and images map into one space, rows L2-normalised.

    ``embed(signals)``: (n, n_channels, n_times) -> (n, d) float32. ``embed_images(images, paths=None)``:
    RGB uint8 images -> (n, d) float32 in the same space (``paths`` names their files, when known).
    The cosine similarity ``embed(signals) @ embed_images(images).T`` ranks images for identification.
    """

    def embed(self, signals: np.ndarray) -> np.ndarray: ...

    def embed_images(self, images: Sequence[np.ndarray], paths=None) -> np.ndarray: ...


def can_embed(decoder) -> bool:
    """Whether ``decoder`` embeds (has ``embed`` and ``embed_images``), i.e. identification applies."""
    return isinstance(decoder, EmbeddingBrainDecoder)


@runtime_checkable
class PhospheneModel(Protocol):
    """Grey image in [0, 1] -> percept (h, w) in [0, 1], cropped to the implant's visual field.

    ``build()`` does all one-off work (model build, axon maps); calling the model must be cheap.
    Optional, for models with temporal state (a percept depends on the frames before it): ``fork()``
    returns the same built model with its own state, one per stream of frames; such a model whose
    ``temporal`` attribute is None has its dynamics switched off (see :func:`has_temporal_state`).
    """

    def build(self) -> "PhospheneModel": ...

    def __call__(self, image: np.ndarray) -> np.ndarray: ...


def has_temporal_state(model) -> bool:
    """Whether a phosphene model's percept depends on the frames before (``fork()``, and a ``temporal``
    attribute, when it has one, that is not None). Why: a stateless model gives the same percept for the
    same image, so the loop computes a constant floor's percept once; a temporal one must see every frame
    of a stream, in order."""
    return callable(getattr(model, "fork", None)) and getattr(model, "temporal", True) is not None
