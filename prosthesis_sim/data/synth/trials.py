"""Single trials: each image's response with trial-to-trial gain and latency jitter, RSVP overlap, 1/f
noise, alpha bursts and sensor noise, then the recording's preprocessing."""
from __future__ import annotations

import numpy as np
import scipy.fft

from .common import _bump, _mix_channels, _rng
from .recording import _Recording
from .subject import _Subject

NEIGHBOUR_GAIN = 0.5  # their responses' scale (calibration: at full scale they would cap reliability)
TRIALS_PER_CHUNK = 512  # trials simulated at once (bounds memory, whatever the dataset size)

# ------------------------------------------------------------------------------------------ trials


def _simulate_split(seed: int, s: int, split: str, subject: _Subject, drives: np.ndarray, lags: np.ndarray,
                    reps: int, bar, fields: np.ndarray | None = None) -> np.ndarray:
    """(n_images, reps, n_channels, n_times) float32 single trials, simulated in chunks of trials.
    ``fields``: per image the visual-field activations of the retinotopic sources (None: none)."""
    def part(a, idx):
        return None if a is None else a[idx]

    n, rec = len(drives), subject.rec
    pool = None  # responses of the images that overlap as paradigm neighbours
    if rec.neighbours:
        pool_idx = _rng(seed, "rsvp", s, split).choice(n, min(n, 256), replace=False)
        pool = NEIGHBOUR_GAIN * subject.responses(drives[pool_idx], lags[pool_idx], part(fields, pool_idx))
    data = np.empty((n, reps, len(rec.ch_names), rec.n_times), np.float32)
    per_chunk = max(1, TRIALS_PER_CHUNK // reps)
    for c, start in enumerate(range(0, n, per_chunk)):
        sl = slice(start, start + per_chunk)
        own = subject.responses(drives[sl], lags[sl], part(fields, sl))
        data[sl] = _trials(_rng(seed, "trials", s, split, c), own, reps, pool, subject).reshape(
            -1, reps, len(rec.ch_names), rec.n_times)
        bar.update(len(own))
    return data


def _trials(rng: np.random.Generator, own: np.ndarray, reps: int, pool: np.ndarray | None,
            subject: _Subject) -> np.ndarray:
    """(len(own) * reps, n_channels, n_times) single trials as the dataset's preprocessing leaves them:
    own response (trial gain and latency jitter) + overlapping neighbours (EEG RSVP) + 1/f noise + alpha
    + sensor noise, preprocessed (baseline, crop to the written window)."""
    rec = subject.rec
    n = len(own) * reps
    x = np.zeros((n, len(rec.ch_names), rec.n_epoch), np.float32)
    _add_shifted(x, own, np.repeat(np.arange(len(own)), reps), rec.n_base + rng.integers(-2, 3, n))
    x *= rng.lognormal(0, 0.2, n).astype(np.float32)[:, None, None]
    for onset in rec.neighbours:
        _add_shifted(x, pool, rng.integers(len(pool), size=n), rec.n_base + onset + rng.integers(-2, 3, n))
    x += subject.noise_sd * (rec.pink_sd * _pink(rng, n, rec) + _alpha(rng, n, subject))
    x += rec.white_sd * rng.standard_normal(x.shape, dtype=np.float32)
    return rec.preprocess(x)


def _add_shifted(x: np.ndarray, resp: np.ndarray, which: np.ndarray, onset: np.ndarray) -> None:
    """x[i] += resp[which[i]] starting at epoch sample onset[i] (nothing before it, cut at the epoch end)."""
    for o in np.unique(onset):
        rows = np.flatnonzero(onset == o)
        lo, hi = max(o, 0), min(o + resp.shape[-1], x.shape[-1])
        if lo < hi:
            x[rows, :, lo:hi] += resp[which[rows], :, lo - o:hi - o]


def _pink(rng: np.random.Generator, n: int, rec: _Recording) -> np.ndarray:
    """(n, n_channels, n_epoch) spatially correlated 1/f noise, unit variance per channel."""
    def shape(f):
        return 1 / np.sqrt(np.maximum(np.abs(f), 1.0))

    n_epoch, sfreq = rec.n_epoch, rec.sfreq
    norm = np.sqrt(np.mean(shape(scipy.fft.fftfreq(n_epoch, 1 / sfreq)) ** 2))
    spectrum = scipy.fft.rfft(rng.standard_normal((n, len(rec.noise_mix), n_epoch), dtype=np.float32), axis=-1)
    pink = scipy.fft.irfft(spectrum * (shape(scipy.fft.rfftfreq(n_epoch, 1 / sfreq)) / norm).astype(np.float32),
                           n=n_epoch, axis=-1)
    return _mix_channels(rec.noise_mix, pink)


def _alpha(rng: np.random.Generator, n: int, subject: _Subject) -> np.ndarray:
    """(n, n_channels, n_epoch) posterior alpha: per trial a frequency near the subject's peak, a random
    phase and two bursts with random timing, duration and strength."""
    rec = subject.rec
    t = (np.arange(rec.n_epoch) - rec.n_base) / rec.sfreq
    freq = subject.alpha_freq + rng.normal(0, 0.4, (n, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    centre, width = rng.uniform(t[0], t[-1], (n, 2, 1)), rng.uniform(0.1, 0.3, (n, 2, 1))
    envelope = (rng.lognormal(0, 0.5, (n, 2, 1)) * _bump(t, centre, width)).sum(axis=1)
    wave = (envelope * np.cos(2 * np.pi * freq * t + phase)).astype(np.float32)
    return wave[:, None, :] * subject.alpha_topo[None, :, None]
