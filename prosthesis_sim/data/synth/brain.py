"""The population-level brain shared by every subject: which sources exist (shared ERP, early
image-statistic sources, late concept sources) and how image and concept descriptors drive them."""
from __future__ import annotations

import numpy as np

from .common import _rng
from .images import IDENTITY, _render, _sample_concepts, _sample_variant
from .stats import LAYOUT, STAT_NAMES, _descriptor

N_REFERENCE = 256  # images that fix the brain's feature normalisation (never written out)


# Early, image-dependent sources: (anchor electrode, latency s, width s, weights on image statistics).
EARLY = (
    ("Oz", 0.085, 0.012, {"energy_upper_vs_lower": 1.0}),  # C1-like: polarity follows upper vs lower field
    ("Oz", 0.100, 0.014, {"contrast": 1.0, "energy_mid": 0.5}),  # P1 contrast gain
    ("O2", 0.100, 0.014, {"energy_left": 1.0}),  # left visual field -> right occipital cortex
    ("O1", 0.100, 0.014, {"energy_right": 1.0}),  # right visual field -> left occipital cortex
    ("POz", 0.115, 0.016, {"luminance": 1.0, "horizontal_vs_vertical": 0.5, "oblique": 0.5}),
    ("O1", 0.120, 0.016, {"red_green": 1.0, "saturation": 0.5}),
    ("O2", 0.120, 0.016, {"blue_yellow": 1.0, "saturation": 0.5}),
    ("POz", 0.125, 0.016, {"energy_high": 1.0, "energy_low": -0.7}),
)
# Late, concept-dependent sources: (anchor electrode, latency s, width s).
LATE = (
    ("P7", 0.175, 0.025), ("P8", 0.175, 0.025), ("PO7", 0.220, 0.035), ("PO8", 0.220, 0.035),
    ("TP7", 0.290, 0.045), ("TP8", 0.290, 0.045), ("P7", 0.380, 0.090), ("P8", 0.380, 0.090),
)
# Shared ERP (the same for every image): (anchor electrodes, latency s, width s, amplitude).
ERP = (
    (("O1", "O2"), 0.100, 0.015, 3.0),  # P1
    (("P7", "P8", "PO7", "PO8"), 0.165, 0.020, -4.0),  # N1
    (("POz", "Pz"), 0.240, 0.030, 2.4),  # P2
    (("Pz", "CPz"), 0.380, 0.080, 1.6),  # late positivity
)
N1_PEAK = abs(ERP[1][-1])  # the shared N1's peak: the scale retinotopic strengths are set against
EARLY_GAIN = 2.6  # amplitude of an early source for a 1-sd image statistic (noise sd is about 1)
LATE_CONCEPT_GAIN = 2.6  # late sources: concept part ...
LATE_IMAGE_GAIN = 1.0  # ... and nonlinear image-feature part
LATENCY_BY_CONTRAST = 0.008  # s: high-contrast images drive the early sources this much earlier
SOURCE_WIDTH = {"early": 0.028, "late": 0.032}  # m, spatial spread of a source's scalp topography

# ----------------------------------------------------------------------------------------- the brain


class _Brain:
    """Population-level tuning shared by all subjects: how image and concept descriptors drive each
    source. Descriptors and drives are standardised on a fixed reference set of images, so an image's
    response does not depend on which other images are in the dataset."""

    def __init__(self, seed: int, size: int):
        rng = _rng(seed, "brain")
        n_stat, n_desc, n_late = len(STAT_NAMES), len(STAT_NAMES) + LAYOUT**2, len(LATE)
        hand = np.zeros((n_stat, len(EARLY)))
        for k, (_, _, _, weights) in enumerate(EARLY):
            for name, w in weights.items():
                hand[STAT_NAMES.index(name), k] = w
        self.early_w = hand + rng.normal(0, 0.3 / np.sqrt(n_stat), hand.shape)
        self.hidden_w = rng.normal(0, 1.5 / np.sqrt(n_desc), (n_desc, 24))  # concept net: tanh hidden layer
        self.hidden_b = rng.normal(0, 0.5, 24)
        self.concept_w = rng.normal(0, 1 / np.sqrt(24), (24, n_late))
        self.pairs = np.array([rng.choice(n_stat, 2, replace=False) for _ in range(4)])  # products
        self.thresh_idx, self.thresh = rng.choice(n_stat, 4, replace=False), rng.uniform(-0.5, 1.0, 4)
        self.proj = rng.normal(0, 1.5 / np.sqrt(n_stat), (n_stat, 4))  # tanh of random projections
        self.image_w = rng.normal(0, 1 / np.sqrt(12), (12, n_late))

        ref = _rng(seed, "reference")
        concepts = _sample_concepts(ref, N_REFERENCE // 2)
        shown = _descriptor(np.stack([_render(c, size, _sample_variant(ref)) for c in concepts for _ in range(2)]))
        protos = _descriptor(np.stack([_render(c, size, IDENTITY) for c in concepts])).repeat(2, axis=0)
        self.desc_mean, self.desc_sd = shown.mean(axis=0), shown.std(axis=0) + 1e-6
        raw = self._raw(shown, protos)
        self.raw_mean, self.raw_sd = raw.mean(axis=0), raw.std(axis=0) + 1e-6

    def _raw(self, shown: np.ndarray, protos: np.ndarray) -> np.ndarray:
        """Unstandardised drives: early (linear in image statistics), late concept (a random tanh
        network of the prototype's descriptor), late image (products, thresholds, tanh projections)."""
        u = ((shown - self.desc_mean) / self.desc_sd)[:, : len(STAT_NAMES)]
        p = (protos - self.desc_mean) / self.desc_sd
        concept = np.tanh(p @ self.hidden_w + self.hidden_b) @ self.concept_w
        nonlinear = np.concatenate([
            u[:, self.pairs[:, 0]] * u[:, self.pairs[:, 1]],
            np.maximum(u[:, self.thresh_idx] - self.thresh, 0),
            np.tanh(u @ self.proj),
        ], axis=1)
        return np.concatenate([u @ self.early_w, concept, nonlinear @ self.image_w], axis=1)

    def drive_parts(self, shown: np.ndarray, protos: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Per image and source (EARLY then LATE), the amplitude drive of each component, whose sum is
        ``drives``' amplitude: ``early`` (linear in image statistics), ``concept`` (the concept's prototype
        through the concept net, shared by a concept's exemplars) and ``nonlinear`` (products, thresholds
        and tanh projections of the image statistics); and the latency change in seconds."""
        z = (self._raw(shown, protos) - self.raw_mean) / self.raw_sd
        n_early, n_late = len(EARLY), len(LATE)
        parts = {name: np.zeros((len(z), n_early + n_late)) for name in ("early", "concept", "nonlinear")}
        parts["early"][:, :n_early] = EARLY_GAIN * z[:, :n_early]
        parts["concept"][:, n_early:] = LATE_CONCEPT_GAIN * z[:, n_early:n_early + n_late]
        parts["nonlinear"][:, n_early:] = LATE_IMAGE_GAIN * z[:, n_early + n_late:]
        contrast = (shown[:, 1] - self.desc_mean[1]) / self.desc_sd[1]
        lag = np.zeros((len(z), n_early + n_late))
        lag[:, :n_early] = -LATENCY_BY_CONTRAST * np.tanh(contrast)[:, None]
        return parts, lag.astype(np.float32)

    def drives(self, shown: np.ndarray, protos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per image and source (EARLY then LATE): amplitude drive and latency change in seconds."""
        parts, lag = self.drive_parts(shown, protos)
        return (parts["early"] + parts["concept"] + parts["nonlinear"]).astype(np.float32), lag
