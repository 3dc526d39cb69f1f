"""Second-order models of M/EEG noise, as whitening and colouring transforms: spatial (ZCA with the
Ledoit-Wolf covariance) and cross-spectral (per frequency). The diffusion encoder models its target
whitened (``encoder.whiten``) and single-trial realism uses the cross-spectral model as a baseline."""
from __future__ import annotations

import numpy as np

CHUNK = 2048  # trials per step of the spectral transforms (a bounded working set; results do not depend on it)


def zca_whitening(target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ZCA whitening and colouring matrices (channels x channels) of ``target`` (..., channels, times)
    from its Ledoit-Wolf spatial covariance (shrinkage keeps a rank-deficient montage invertible)."""
    from sklearn.covariance import ledoit_wolf

    x = np.moveaxis(target, -1, -2).reshape(-1, target.shape[-2]).astype(np.float64)
    x = x[:: max(1, len(x) // 200_000)]  # a subsample is plenty for a channels x channels covariance
    cov = ledoit_wolf(x, assume_centered=True)[0]
    vals, vecs = np.linalg.eigh(cov)
    vals = np.clip(vals, vals.max() * 1e-6, None)
    return ((vecs / np.sqrt(vals)) @ vecs.T).astype(np.float32), ((vecs * np.sqrt(vals)) @ vecs.T).astype(np.float32)


def spectral_whitening(target: np.ndarray, shrinkage: float = 1e-3, rtol: float = 1e-6
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Whitening and colouring of ``target`` (..., channels, times) per frequency: for each rfft bin f,
    the channels x channels cross-spectral matrix S(f) of the training targets (its eigenvalues raised
    by ``shrinkage`` x their mean), W(f) = S(f)^-1/2 and C(f) = S(f)^1/2, complex
    (n_freqs, channels, channels).

    Why: it is the second-order model of stationary M/EEG noise (the cross-spectra; de Munck's
    Kronecker model is its separable special case). A target whitened this way has unit variance
    in every channel direction and frequency, so the network only has to learn how the data
    deviate from that Gaussian (evoked variability, bursty rhythms), and with v prediction its
    optimum for a white Gaussian target is 0: an untrained part of the model samples the measured
    cross-spectra rather than a shrunken, wrongly coloured noise. Directions with (almost) no power
    (the average reference's null direction) are mapped to 0 both ways, so coloured samples stay
    in the data's subspace."""
    x = target.reshape(-1, *target.shape[-2:])
    n_ch, n_t = x.shape[1:]
    cross = np.zeros((n_t // 2 + 1, n_ch, n_ch), np.complex128)
    for i in range(0, len(x), CHUNK):  # in float64 chunks: THINGS-size single trials are 3 GB in float32
        spec = np.fft.rfft(x[i:i + CHUNK].astype(np.float64), axis=-1, norm="ortho")  # white noise -> E|X|^2 = 1
        cross += np.einsum("ncf,ndf->fcd", spec, spec.conj())
    cross /= len(x)
    white = np.zeros_like(cross)
    colour = np.zeros_like(cross)
    for f, s in enumerate(cross):
        vals, vecs = np.linalg.eigh(s)
        keep = vals > rtol * max(vals.max(), 1e-300)
        vals = np.where(keep, vals + shrinkage * vals[keep].mean() if keep.any() else 0.0, 1.0)
        white[f] = (vecs * np.where(keep, 1 / np.sqrt(vals), 0.0)) @ vecs.conj().T
        colour[f] = (vecs * np.where(keep, np.sqrt(vals), 0.0)) @ vecs.conj().T
    return white.astype(np.complex64), colour.astype(np.complex64)


def apply_spectral(matrices: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``x`` (..., channels, times) with each frequency's channels mixed by ``matrices`` (freqs, channels,
    channels), e.g. ``spectral_whitening``'s W or C."""
    x = np.asarray(x)
    flat = x.reshape(-1, *x.shape[-2:])
    out = np.empty(flat.shape, np.float32)
    for i in range(0, len(flat), CHUNK):  # chunked: the complex spectra of all trials at once are 2x their size
        spec = np.fft.rfft(np.asarray(flat[i:i + CHUNK], np.float32), axis=-1, norm="ortho")
        out[i:i + CHUNK] = np.fft.irfft(np.einsum("fcd,ndf->ncf", matrices, spec), n=x.shape[-1], axis=-1,
                                        norm="ortho")
    return out.reshape(x.shape)


def trial_residuals(trials: np.ndarray) -> np.ndarray:
    """Single trials (n_images, n_trials >= 2, channels, times) minus their image's mean, scaled by
    sqrt(n / (n - 1)) so that their variance is unbiased around a sample mean: the trial-to-trial noise."""
    n = trials.shape[1]
    return (trials - trials.mean(axis=1, keepdims=True)) * np.sqrt(n / (n - 1))
