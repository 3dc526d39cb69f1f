"""Single trials: each image's response with trial-to-trial gain and latency jitter, RSVP overlap, 1/f
noise, alpha bursts and sensor noise, then the recording's preprocessing."""
from __future__ import annotations

import numpy as np
import scipy.fft

from .common import _bump, _mix_channels, _rng
from .recording import _Recording
from .subject import _Subject

NEIGHBOUR_GAIN = 0.5  # their responses' scale (calibration: at full scale they would cap reliability)
LATENCY_JITTER = 2  # samples: each trial's onset is shifted uniformly by -2 .. +2
TRIAL_GAIN_SD = 0.2  # log-normal trial gain, sigma of the log
NOISE_TRIALS_FOR_TRUTH = 256  # noise-only trials that estimate the expected MEG baseline scaling
ALPHA_STATE_SD = 0.5  # sd of a trial's log alpha amplitude around the subject's level (with state_gain)
TRIALS_PER_CHUNK = 512  # trials simulated at once (bounds memory, whatever the dataset size)

# ------------------------------------------------------------------------------------------ trials


def _simulate_split(seed: int, s: int, split: str, subject: _Subject, drives: np.ndarray, lags: np.ndarray,
                    reps: int, bar, fields: np.ndarray | None = None, truth: bool = False,
                    parts: dict[str, np.ndarray] | None = None, attrs: np.ndarray | None = None,
                    adaptation: float = 0.0, state_gain: float = 0.0, noise_gain: float = 1.0):
    """(trials, truth, components, context): (n_images, reps, n_channels, n_times) float32 single trials,
    simulated in chunks of trials, and what was asked for beside them (None otherwise).
    ``fields``: per image the visual-field activations of the retinotopic sources (None: none);
    ``attrs``: per image the category attributes of the category sources (None: none).
    ``truth``: also each image's noise-free expected response (n_images, n_channels, n_times),
    what an infinite number of repetitions would average to (``_expected``); with the drives' ``parts``
    (``_Brain.drive_parts``) also its components (early, concept, nonlinear, [semantic,] retinotopic,
    shared: the ERP and the RSVP neighbours), each (n_images, n_channels, n_times), which sum to it.
    ``adaptation`` and ``state_gain`` (``_trials``) also give each trial's context: ``previous`` (the
    row of the image shown 200 ms before, -1 without adaptation), ``similarity`` (``_similarity`` of
    the two, NaN without) and ``alpha_state`` (0 without), each (n_images, reps)."""
    def part(a, idx):
        return None if a is None else a[idx]

    n, rec = len(drives), subject.rec
    pool = pool_idx = None  # responses of the images that overlap as paradigm neighbours
    if rec.neighbours:
        pool_idx = _rng(seed, "rsvp", s, split).choice(n, min(n, 256), replace=False)
        pool = NEIGHBOUR_GAIN * subject.responses(drives[pool_idx], lags[pool_idx], part(fields, pool_idx),
                                                  part(attrs, pool_idx))
    adapt = adaptation if pool is not None else 0.0  # no overlap (MEG, 1.5 s apart): no adaptation modelled
    data = np.empty((n, reps, len(rec.ch_names), rec.n_times), np.float32)
    context = {"previous": np.full((n, reps), -1, np.int32), "similarity": np.full((n, reps), np.nan, np.float32),
               "alpha_state": np.zeros((n, reps), np.float32)}
    expected = np.empty((n, len(rec.ch_names), rec.n_times), np.float32) if truth else None
    components: dict[str, np.ndarray] = {}
    scale = _baseline_scale(_rng(seed, "truth", s, split), subject, noise_gain) if truth else None
    per_chunk = max(1, TRIALS_PER_CHUNK // reps)
    for c, start in enumerate(range(0, n, per_chunk)):
        sl = slice(start, start + per_chunk)
        own = subject.responses(drives[sl], lags[sl], part(fields, sl), part(attrs, sl))
        sim = _similarity(drives[sl], drives[pool_idx]) if adapt else None
        trials, previous, state = _trials(_rng(seed, "trials", s, split, c), own, reps, pool, subject, adapt, sim,
                                          state_gain, _rng(seed, "state", s, split, c), noise_gain)
        data[sl] = trials.reshape(-1, reps, len(rec.ch_names), rec.n_times)
        if previous is not None:
            context["previous"][sl] = pool_idx[previous].reshape(-1, reps)
            context["similarity"][sl] = sim[np.repeat(np.arange(len(own)), reps), previous].reshape(-1, reps)
        if state is not None:
            context["alpha_state"][sl] = state.reshape(-1, reps)
        own_gain = 1 - adapt * sim.mean(axis=1) if adapt else None  # E[adaptation] over the preceding image
        if truth:
            expected[sl] = _expected(own, pool, subject, scale, own_gain)
        if truth and parts is not None:
            chunk = subject.component_responses({k: v[sl] for k, v in parts.items()}, lags[sl], part(fields, sl),
                                                part(attrs, sl))
            for name, resp in chunk.items():
                out = components.setdefault(name, np.empty_like(expected))
                out[sl] = _expected(resp, pool if name == "shared" else None, subject, scale, own_gain)
        bar.update(len(own))
    return (data, expected, components if truth and parts is not None else None,
            context if adapt or state_gain else None)


def _similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) in [0, 1]: 0.5 + 0.5 x the cosine of the images' drive vectors (how alike the
    brain represents them): 1 for the same image, 0 for opposite representations."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return 0.5 + 0.5 * a @ b.T


def _trials(rng: np.random.Generator, own: np.ndarray, reps: int, pool: np.ndarray | None,
            subject: _Subject, adaptation: float = 0.0, sim: np.ndarray | None = None, state_gain: float = 0.0,
            state_rng: np.random.Generator | None = None, noise_gain: float = 1.0
            ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(len(own) * reps, n_channels, n_times) single trials as the dataset's preprocessing leaves them:
    own response (trial gain and latency jitter) + overlapping neighbours (EEG RSVP) + 1/f noise + alpha
    + sensor noise, preprocessed (baseline, crop to the written window). Then, per trial, the preceding
    image's row in ``pool`` (None without ``adaptation``) and the alpha state (None without ``state_gain``).

    ``adaptation`` a: the own response is scaled by 1 - a x ``sim`` (own image, preceding image), so an
    image right after a similar one evokes less (stimulus-specific repetition suppression in RSVP).
    ``state_gain`` b: each trial has an alpha state z ~ N(0, 1) (from ``state_rng``, so the other draws
    are unchanged); its alpha amplitude is scaled by exp(ALPHA_STATE_SD z - ALPHA_STATE_SD^2) (mean
    power unchanged) and its evoked response by exp(-b z - b^2 / 2) (mean 1): high alpha, small response.
    ``noise_gain`` scales the 1/f, alpha and sensor noise together."""
    rec = subject.rec
    n = len(own) * reps
    x = np.zeros((n, len(rec.ch_names), rec.n_epoch), np.float32)
    jitter = (-LATENCY_JITTER, LATENCY_JITTER + 1)
    image = np.repeat(np.arange(len(own)), reps)
    onset = rec.n_base + rng.integers(*jitter, n)
    gain = rng.lognormal(0, TRIAL_GAIN_SD, n)
    neighbours = [(o, rng.integers(len(pool), size=n), rng.integers(*jitter, n)) for o in rec.neighbours]
    previous = state = None
    if adaptation:
        previous = next(w for o, w, _ in neighbours if o == max(o for o in rec.neighbours if o < 0))
        gain = gain * (1 - adaptation * sim[image, previous])
    if state_gain:
        state = state_rng.standard_normal(n)
        gain = gain * np.exp(-state_gain * state - state_gain**2 / 2)
    _add_shifted(x, own, image, onset)
    x *= gain.astype(np.float32)[:, None, None]
    for o, which, jit in neighbours:
        _add_shifted(x, pool, which, rec.n_base + o + jit)
    pink = _pink(rng, n, rec)
    alpha = _alpha(rng, n, subject)
    if state_gain:
        alpha *= np.exp(ALPHA_STATE_SD * state - ALPHA_STATE_SD**2).astype(np.float32)[:, None, None]
    x += (noise_gain * subject.noise_sd) * (rec.pink_sd * pink + alpha)  # 1.0 x a float is exact: version 2's bytes
    x += (noise_gain * rec.white_sd) * rng.standard_normal(x.shape, dtype=np.float32)
    return rec.preprocess(x), previous, state


def _expected(own: np.ndarray, pool: np.ndarray | None, subject: _Subject, scale: np.ndarray | None,
              own_gain: np.ndarray | None = None) -> np.ndarray:
    """(len(own), n_channels, n_times): E[trial | image] of ``_trials``, computed, not averaged. The
    jitter is averaged over its five shifts, the trial gain replaced by its mean, the neighbours by the
    pool's mean response at each onset, and the noise (zero-mean) dropped. EEG preprocessing is linear,
    so it applies to the expectation exactly; the MEG's per-trial z-scoring is not, and its division by
    the baseline standard deviation becomes a multiplication by the noise's mean 1 / sd (``scale``).
    ``own_gain``: per image, the mean adaptation over the preceding image (the alpha state's gain has
    mean 1 by construction)."""
    rec = subject.rec
    shifts = np.arange(-LATENCY_JITTER, LATENCY_JITTER + 1)
    x = np.zeros((len(own), len(rec.ch_names), rec.n_epoch), np.float32)
    for d in shifts:
        _add_shifted(x, own, np.arange(len(own)), np.full(len(own), rec.n_base + d))
    x *= np.exp(TRIAL_GAIN_SD ** 2 / 2) / len(shifts)
    if own_gain is not None:
        x *= own_gain.astype(np.float32)[:, None, None]
    if pool is not None:
        neighbours = np.zeros((1, len(rec.ch_names), rec.n_epoch), np.float32)
        for onset in rec.neighbours:
            for d in shifts:
                _add_shifted(neighbours, pool.mean(axis=0, keepdims=True), np.zeros(1, int),
                             np.full(1, rec.n_base + onset + d))
        x += neighbours / len(shifts)
    return rec.expected(x, scale)


def _baseline_scale(rng: np.random.Generator, subject: _Subject, noise_gain: float = 1.0) -> np.ndarray | None:
    """Per channel, the mean of 1 / (baseline sd) over noise-only trials: how the MEG's z-scoring scales
    a response on average (None for a recording whose preprocessing is linear)."""
    rec = subject.rec
    if not rec.zscored:
        return None
    x = subject.noise_sd * (rec.pink_sd * _pink(rng, NOISE_TRIALS_FOR_TRUTH, rec)
                            + _alpha(rng, NOISE_TRIALS_FOR_TRUTH, subject))
    x += rec.white_sd * rng.standard_normal(x.shape, dtype=np.float32)
    return np.mean(1.0 / (noise_gain * rec.baseline_sd(x)), axis=0)


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
