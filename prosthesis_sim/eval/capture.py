"""How much of each component of the simulated brain's response a signal captures (synthetic data only).

psim-synth writes each test image's noise-free response split by where its image-specific part comes
from (``BrainDataset.test_truth_components``: ``early`` linear in image statistics, ``concept`` shared
by a concept's exemplars, ``nonlinear`` image-feature combinations, ``semantic`` the semantic latent and
category components (version 3 data), ``retinotopic`` visual-field sources, and ``shared`` what every
image evokes). A signal's across-image variation (each channel and
time point minus its mean over the test images, z-scored per channel) is regressed on the components'
across-image variation, all at once (least squares over images x channels x times): coefficient 1 is a
component fully reproduced at its true strength, 0 one that is absent. The truth scores 1 on every
component by construction; the measured average scores about 1 up to its noise. No recording allows
this diagnostic: it says *which* part of the brain an encoder learned, not only how much.
"""
from __future__ import annotations

import numpy as np

#: components with an image-specific part, in the order of the columns (``shared`` has none)
COMPONENTS = ("early", "concept", "nonlinear", "semantic", "retinotopic")


def capture(signals: np.ndarray, components: dict[str, np.ndarray], normalise) -> dict[str, float]:
    """``capture_<component>``: the joint least-squares coefficient of each component in ``signals``
    (n_images, channels, times), across images; ``normalise`` maps signals to z units."""
    names = [c for c in COMPONENTS if c in components]

    def across(x):
        x = np.asarray(normalise(np.asarray(x, dtype=np.float32)), dtype=np.float64)
        return (x - x.mean(axis=0, keepdims=True)).ravel()

    # components in the signals' z units too (the per-channel offset cancels across images), so a
    # coefficient is a share of the component at the strength the brain writes it
    design = np.stack([across(components[c]) for c in names], axis=1)
    coef, *_ = np.linalg.lstsq(design, across(signals), rcond=None)
    return {f"capture_{c}": float(b) for c, b in zip(names, coef)}
