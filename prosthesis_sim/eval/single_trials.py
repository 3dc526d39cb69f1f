"""Do generated single trials look like measured single trials? (issue 9, section 4)

Three measures, each computed for generated trials against the measured test trials, and for one half
of the measured trials against the other half (what a perfect generator would score, given the
finite number of trials):

- ``log_spectral_distance``: per channel, the root-mean-square difference in dB between the mean
  Welch power spectra (scipy.signal.welch), averaged over channels.
- ``covariance_distance``: the affine-invariant Riemannian distance between the spatial noise
  covariances (trials minus their image's mean; Ledoit-Wolf shrinkage from scikit-learn, so the
  average-referenced, rank-deficient EEG covariance is invertible).
- ``two_sample_accuracy``: a classifier two-sample test (Lopez-Paz & Oquab 2017): the cross-validated
  accuracy of a logistic regression telling generated from measured trials, on what an M/EEG
  researcher would look at (the trial's leading spatio-temporal components and the log band power of
  spatial components). 0.5: indistinguishable. Folds are grouped by image, so no image is in the
  training and the test fold at once. The same test on each block of features alone
  (``two_sample_waveform``, ``two_sample_band_power``) says what gives generated trials away: their
  waveforms (evoked response, its variability) or the power of their rhythms.

Baselines (``gaussian_trials``): a deterministic encoder's mean plus Gaussian noise with the training
noise covariance, either spatial only (white in time, what ``mne.compute_covariance`` estimates) or
separable in space and time (the Kronecker model of de Munck et al. 2002, Bijma et al. 2003);
``spectral_gaussian_trials``: stationary Gaussian noise with the training cross-spectra, the whole
second-order model (what ``encoder.whiten=spectral`` gives a diffusion encoder before it learns anything).
"""
from __future__ import annotations

import numpy as np
from scipy import linalg, signal
from sklearn.compose import ColumnTransformer
from sklearn.covariance import ledoit_wolf
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..noise import apply_spectral, spectral_whitening, trial_residuals

BANDS = ((1, 4), (4, 8), (8, 13), (13, 30), (30, 45))  # delta, theta, alpha, beta, low gamma (Hz)


def _check(trials: np.ndarray, name: str) -> np.ndarray:
    trials = np.asarray(trials, dtype=np.float64)
    if trials.ndim != 4 or trials.shape[1] < 2:
        raise ValueError(f"{name}: expected single trials (n_images, n_trials >= 2, n_channels, n_times), "
                         f"got shape {trials.shape}")
    if not np.isfinite(trials).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return trials


def power_spectra(trials: np.ndarray, sfreq: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean Welch power spectrum per channel over all trials: (freqs, (n_channels, n_freqs))."""
    x = trials.reshape(-1, *trials.shape[-2:])
    freqs, psd = signal.welch(x, fs=sfreq, nperseg=min(x.shape[-1], int(sfreq)), axis=-1)
    return freqs, psd.mean(axis=0)


def log_spectral_distance(a: np.ndarray, b: np.ndarray, sfreq: float) -> float:
    """RMS difference of the per-channel power spectra in dB, averaged over channels (0 Hz excluded)."""
    _, pa = power_spectra(a, sfreq)
    _, pb = power_spectra(b, sfreq)
    tiny = 1e-30
    diff = 10 * np.log10(pa[:, 1:] + tiny) - 10 * np.log10(pb[:, 1:] + tiny)
    return float(np.sqrt((diff ** 2).mean(axis=1)).mean())


def noise_covariance(trials: np.ndarray) -> np.ndarray:
    """Spatial covariance of the trials around their image's mean (Ledoit-Wolf shrinkage)."""
    resid = trials - trials.mean(axis=1, keepdims=True)
    x = resid.transpose(0, 1, 3, 2).reshape(-1, trials.shape[2])  # (images x trials x times, channels)
    return ledoit_wolf(x, assume_centered=True)[0]


def covariance_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Affine-invariant Riemannian distance between the noise covariances: sqrt(sum log^2 eig(A^-1 B))."""
    eig = linalg.eigh(noise_covariance(a), noise_covariance(b), eigvals_only=True)
    return float(np.sqrt((np.log(np.clip(eig, 1e-12, None)) ** 2).sum()))


def trial_features(trials: np.ndarray, spatial: np.ndarray, sfreq: float) -> tuple[np.ndarray, np.ndarray]:
    """Per trial: the waveform of the spatial components ``spatial`` (n_components, n_channels),
    flattened (the classifier reduces it to its leading principal components), and their log power in
    each of BANDS below Nyquist."""
    x = trials.reshape(-1, *trials.shape[-2:])
    comps = np.einsum("kc,nct->nkt", spatial, x)
    freqs, psd = signal.welch(comps, fs=sfreq, nperseg=min(x.shape[-1], int(sfreq) // 2), axis=-1)
    power = [psd[..., (freqs >= lo) & (freqs < hi)].mean(-1) for lo, hi in BANDS
             if ((freqs >= lo) & (freqs < hi)).any()]
    logpow = np.log(np.stack(power, axis=-1) + 1e-30).reshape(len(x), -1)
    return comps.reshape(len(x), -1), logpow


def spatial_components(train_trials: np.ndarray, n: int = 8) -> np.ndarray:
    """The leading spatial principal components of (training) trials, fixed before any test trial is seen."""
    x = train_trials.reshape(-1, *train_trials.shape[-2:]).transpose(0, 2, 1).reshape(-1, train_trials.shape[-2])
    return PCA(n_components=min(n, x.shape[1]), random_state=0).fit(x).components_


BLOCKS = ("both", "waveform", "band_power")


def two_sample_accuracy(generated: np.ndarray, measured: np.ndarray, spatial: np.ndarray, sfreq: float,
                        folds: int = 5, seed: int = 0, blocks: str = "both", per_image: bool = False):
    """Cross-validated accuracy of telling ``generated`` from ``measured`` trials (0.5: indistinguishable).
    Both are (n_images, n_trials, channels, times) for the same images; folds are grouped by image.
    ``blocks``: the features the classifier sees (BLOCKS). ``per_image``: also each image's accuracy
    over its generated and measured trials (n_images,), so that two rows scored against the same
    measured trials can be compared paired over images (``paired_difference``)."""
    if blocks not in BLOCKS:
        raise ValueError(f"two_sample_accuracy: blocks must be one of {BLOCKS}, got {blocks!r}")
    n_img = measured.shape[0]
    if generated.shape[0] != n_img:
        raise ValueError(f"two_sample_accuracy: {generated.shape[0]} generated images, {n_img} measured")
    (wg, pg), (wm, pm) = trial_features(generated, spatial, sfreq), trial_features(measured, spatial, sfreq)
    wave, power = np.concatenate([wg, wm]), np.concatenate([pg, pm])
    feats = np.concatenate([wave, power], axis=1)
    labels = np.r_[np.ones(generated.shape[0] * generated.shape[1]), np.zeros(n_img * measured.shape[1])]
    groups = np.r_[np.repeat(np.arange(n_img), generated.shape[1]), np.repeat(np.arange(n_img), measured.shape[1])]
    n_comp = int(min(30, wave.shape[1], len(feats) * (folds - 1) // folds - 1))
    columns = ColumnTransformer([
        ("waveform", make_pipeline(StandardScaler(), PCA(n_components=n_comp, random_state=seed)),
         slice(0, wave.shape[1])),
        ("band_power", StandardScaler(), slice(wave.shape[1], feats.shape[1]))])
    if blocks != "both":
        columns.set_params(**{"waveform" if blocks == "band_power" else "band_power": "drop"})
    clf = make_pipeline(columns, StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    cv = StratifiedGroupKFold(n_splits=min(folds, n_img), shuffle=True, random_state=seed)
    splits = list(cv.split(feats, labels, groups))
    correct = cross_val_predict(clf, feats, labels, cv=splits) == labels
    accuracy = float(np.mean([correct[test].mean() for _, test in splits]))  # = cross_val_score's mean
    if not per_image:
        return accuracy
    return accuracy, np.bincount(groups, weights=correct, minlength=n_img) / np.bincount(groups, minlength=n_img)


def gaussian_trials(mean: np.ndarray, train_trials: np.ndarray, n_trials: int, separable: bool,
                    seed: int = 0, resid: np.ndarray | None = None) -> np.ndarray:
    """``mean`` (n_images, channels, times) plus Gaussian noise with the training noise covariance:
    spatial only (white in time), or separable (spatial x temporal, Kronecker). Returns
    (n_images, n_trials, channels, times). ``resid``: the training noise itself (``noise_residuals``),
    when it is not the trials around their image's mean (one repetition per image)."""
    rng = np.random.default_rng(seed)
    resid = trial_residuals(train_trials) if resid is None else resid
    n_ch, n_t = resid.shape[2:]
    x = resid.transpose(0, 1, 3, 2).reshape(-1, n_ch)
    cs = ledoit_wolf(x, assume_centered=True)[0]  # scale-equivariant: the unbiased residuals' covariance
    ls = linalg.cholesky(cs + 1e-9 * np.trace(cs) / n_ch * np.eye(n_ch), lower=True)
    white = rng.standard_normal((mean.shape[0], n_trials, n_ch, n_t))
    noise = np.einsum("ij,nrjt->nrit", ls, white)
    if separable:  # temporal correlation: the time x time covariance of the whitened residuals
        w = linalg.solve_triangular(ls, resid.reshape(-1, n_ch, n_t).transpose(1, 0, 2).reshape(n_ch, -1),
                                    lower=True).reshape(n_ch, -1, n_t).transpose(1, 0, 2).reshape(-1, n_t)
        ct = ledoit_wolf(w, assume_centered=True)[0]
        lt = linalg.cholesky(ct + 1e-9 * np.eye(n_t), lower=True)
        noise = np.einsum("nrct,st->nrcs", noise, lt)
    return (mean[:, None] + noise).astype(np.float32)


def spectral_gaussian_trials(mean: np.ndarray, train_trials: np.ndarray, n_trials: int, seed: int = 0,
                             resid: np.ndarray | None = None) -> np.ndarray:
    """``mean`` plus stationary Gaussian noise with the training noise's cross-spectra (every channel pair
    at every frequency; ``prosthesis_sim.noise.spectral_whitening``): the whole second-order model of
    the noise, not separable in space and time. What it lacks is anything beyond second order (bursty
    rhythms, trial-to-trial gain of the evoked response)."""
    rng = np.random.default_rng(seed)
    _, colour = spectral_whitening(trial_residuals(train_trials) if resid is None else resid)
    white = rng.standard_normal((mean.shape[0], n_trials, *mean.shape[1:]), dtype=np.float32)
    return (mean[:, None] + apply_spectral(colour, white)).astype(np.float32)


def half_split(trials: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of every image's trials (the measured-vs-measured reference)."""
    order = np.random.default_rng(seed).permutation(trials.shape[1])
    half = trials.shape[1] // 2
    return trials[:, order[:half]], trials[:, order[half: 2 * half]]


def realism(generated: np.ndarray, measured: np.ndarray, spatial: np.ndarray, sfreq: float, seed: int = 0) -> dict:
    """The three measures for ``generated`` against ``measured`` (both single trials of the same images)."""
    generated, measured = _check(generated, "generated trials"), _check(measured, "measured trials")
    if generated.shape[2:] != measured.shape[2:]:
        raise ValueError(f"generated trials have shape {generated.shape[2:]} per trial, measured {measured.shape[2:]}")
    accuracy, per_image = two_sample_accuracy(generated, measured, spatial, sfreq, seed=seed, per_image=True)
    return {"log_spectral_distance_db": log_spectral_distance(generated, measured, sfreq),
            "covariance_distance": covariance_distance(generated, measured),
            "two_sample_accuracy": accuracy, "two_sample_per_image": per_image.tolist(),
            **{f"two_sample_{b}": two_sample_accuracy(generated, measured, spatial, sfreq, seed=seed, blocks=b)
               for b in BLOCKS[1:]}}


CROSS_SPECTRAL = "baseline: mean + cross-spectral noise"  # the whole second-order model: what a generator must beat


def paired_difference(metrics: dict, row: str, reference: str = CROSS_SPECTRAL) -> dict:
    """Two-sample accuracy of ``row`` minus ``reference`` (rows of ``evaluate_single_trials``, scored
    against the same measured trials), with a 95 % bootstrap interval over test images, paired
    (``eval.intervals.diff_interval``): below 0, ``row``'s trials are the harder to tell from measured."""
    from .intervals import diff_interval

    a, b = (np.asarray(metrics[k]["two_sample_per_image"]) for k in (row, reference))
    value, low, high = diff_interval(a, b)
    return {"value": value, "ci": [low, high], "n_images": len(a), "resolved": not low <= 0 <= high}


def measured_reference(measured: np.ndarray, spatial: np.ndarray, sfreq: float, seed: int = 0) -> dict:
    """The measures between two halves of the measured trials: the best a generator can expect."""
    a, b = half_split(_check(measured, "measured trials"), seed)
    return realism(a, b, spatial, sfreq, seed)


def evaluate_single_trials(encoder, mean_encoder, data, images: list[np.ndarray], seed: int = 0,
                           kwargs: dict | None = None, max_noise_trials: int = 16384) -> tuple[dict, dict]:
    """Generate as many single trials per test image as were measured and score them, with the Gaussian
    baselines around ``mean_encoder``'s prediction and the measured split-half reference. With one
    training repetition per image (THINGS-MEG: every image seen once) the baselines' noise is the
    training trials around ``mean_encoder``'s prediction for them (noise plus what the mean model
    cannot predict), since there is no image mean to take it around.

    Everything is compared in the dataset's z-scored units (``data.normalizer``). The noise statistics
    (baselines, spatial components) come from at most ``max_noise_trials`` training trials, a seeded
    subset of images where there are more: the second-order model of 63 channels x 126 frequencies is
    pinned down long before, and all 52,928 THINGS-size trials in float64 take 7 GB per copy. Returns
    (metrics by row, arrays for the figure: spectra in dB averaged over channels, example trials).
    """
    norm, sfreq = data.normalizer, data.sfreq
    kwargs = kwargs or {}
    n_img, n_rep = data.train.shape[:2]
    keep = np.arange(n_img)
    if n_img * n_rep > max_noise_trials:
        keep = np.sort(np.random.default_rng(seed).choice(n_img, max(1, max_noise_trials // n_rep), replace=False))
    train = norm(data.train[keep] if len(keep) < n_img else data.train).astype(np.float64)
    resid = None
    if train.shape[1] < 2:  # each training image seen once (THINGS-MEG): the noise around the mean model
        from ..data.dataset import load_image

        paths = [data.train_images[i] for i in keep]
        fitted = norm(mean_encoder.generate([load_image(p) for p in paths], seed=seed, paths=paths, **kwargs))
        resid = train - np.asarray(fitted, dtype=np.float64)[:, None]
    measured = _check(norm(data.test_repetitions()), "measured test trials")
    n_trials = measured.shape[1]
    generated = norm(encoder.sample_trials(images, n_trials, seed=seed, paths=data.test_images, **kwargs))
    mean = norm(mean_encoder.generate(images, seed=seed, paths=data.test_images, **kwargs))
    spatial = spatial_components(train)
    rows = {"generated": generated,
            "baseline: mean + spatial noise": gaussian_trials(mean, train, n_trials, separable=False, seed=seed,
                                                              resid=resid),
            "baseline: mean + space x time noise": gaussian_trials(mean, train, n_trials, separable=True, seed=seed,
                                                                   resid=resid),
            CROSS_SPECTRAL: spectral_gaussian_trials(mean, train, n_trials, seed=seed, resid=resid)}
    metrics = {"measured halves (reference)": measured_reference(measured, spatial, sfreq, seed)}
    metrics.update({name: realism(x, measured, spatial, sfreq, seed) for name, x in rows.items()})
    channel = int(np.argmax(measured.mean(axis=(0, 1)).std(axis=-1)))  # the largest evoked response
    freqs, _ = power_spectra(measured[:1, :2], sfreq)
    figure = {"freqs": freqs, "times": np.asarray(data.times), "channel": data.ch_names[channel], "names": [],
              "spectra_db": [], "examples": []}
    for name, x in {"measured": measured, **rows}.items():
        figure["names"].append(name)
        figure["spectra_db"].append(10 * np.log10(power_spectra(x, sfreq)[1].mean(axis=0) + 1e-30))
        figure["examples"].append(np.asarray(x[0, :3, channel], dtype=np.float32))
    return metrics, figure


def save_figure_data(path, figure: dict) -> None:
    """The figure's arrays as .npz (names and channel as string arrays), so a report redraws it."""
    np.savez(path, freqs=figure["freqs"], times=figure["times"], channel=np.array(figure["channel"]),
             names=np.array(figure["names"]), spectra_db=np.stack(figure["spectra_db"]),
             examples=np.stack(figure["examples"]))
