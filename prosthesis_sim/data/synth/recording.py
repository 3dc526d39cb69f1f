"""How the brain is recorded: EEG (THINGS-EEG2 NICE files) or MEG (THINGS-MEG ATM pickles)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mne
import numpy as np
import scipy.signal
from mne.io.constants import FIFF

from prosthesis_sim.data.things_meg import FILES as MEG_FILES
from prosthesis_sim.data.things_meg import ctf_positions, make_meg_info, tangent_frame, things_meg_channels

from .common import _write_pickle
from .geometry import (CH_NAMES, CORTEX_RADIUS, ORIENTATION_SD, SFREQ, _dipole_field, _electrode_positions,
                       _meg_noise_mixing, _noise_mixing, _sphere_centre, _topography, eeg_info)

N_TIMES = 250  # 0 .. 0.996 s, as in the NICE files
N_BASE = 50  # -0.2 .. 0 s, simulated for the baseline correction and then cropped
N_EPOCH = N_BASE + N_TIMES
RESPONSE_S = 1.2  # one image's response is simulated over 1.2 s; every component has decayed by then
SOA = 50  # RSVP at 5 Hz: a new image every 200 ms
NEIGHBOURS = (-4, -3, -2, -1, 1, 2, 3, 4)  # RSVP positions of the other images overlapping an epoch

PINK_SD, ALPHA_SD, WHITE_SD = 0.7, 2.0, 0.25

# MEG as the THINGS-MEG files hold it (official preprocessing, then ATM's crop to 0..1.0 s).
MEG_SFREQ = 200.0
MEG_N_TIMES = 201  # 0 .. 1.0 s
MEG_N_BASE = 20  # -0.1 .. 0 s: the official epochs' baseline (z-scored), simulated and then cropped
MEG_LOWPASS = 40.0  # Hz, the official band-pass's upper edge (its 0.1 Hz high-pass is moot within an epoch)

MEG_PINK_SD, MEG_ALPHA_SD, MEG_WHITE_SD = 1.2, 3.3, 0.45

# ------------------------------------------------------------------------------------- recordings


@dataclass(frozen=True)
class _Recording:
    """How the brain is recorded: sensors, sampling, paradigm, noise, preprocessing and file format.
    The brain, the subjects' sources (placed at 10-05 electrode anchors) and the trials are shared."""

    ch_names: tuple[str, ...]
    sensors: np.ndarray  # (n_channels, 3) m
    anchors: dict  # 10-05 electrode name -> position (m) around which a source is placed
    noise_mix: np.ndarray  # (n_channels, n_channels): spatial mixing of the 1/f noise
    sfreq: float
    n_base: int  # samples before onset, simulated for the baseline and then cropped
    n_times: int  # samples written, from onset
    neighbours: tuple[int, ...]  # onsets (samples) of the other images whose responses overlap an epoch
    pink_sd: float
    alpha_sd: float
    white_sd: float
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)  # m: the head sphere's centre in the sensor frame

    @property
    def posterior(self) -> np.ndarray:
        """Unit vector from the head centre towards Oz: where the occipital pole lies."""
        oz = self.anchors["Oz"] - np.asarray(self.centre)
        return oz / np.linalg.norm(oz)

    @property
    def scalp_radius(self) -> float:
        """m: mean distance of the 10-05 anchors from the head centre."""
        anchors = np.array(list(self.anchors.values())) - np.asarray(self.centre)
        return float(np.linalg.norm(anchors, axis=1).mean())

    def _dipoles(self, positions: np.ndarray, orientations: np.ndarray) -> mne.Dipole:
        k = len(positions)
        return mne.Dipole(np.arange(k) / 1000.0, positions + np.asarray(self.centre), np.ones(k), orientations,
                          np.ones(k))

    @property
    def n_epoch(self) -> int:
        return self.n_base + self.n_times

    @property
    def n_resp(self) -> int:
        return round(RESPONSE_S * self.sfreq)


class _EEG(_Recording):
    """The NICE files: 63 electrodes, average reference, RSVP at 5 Hz, baseline-mean corrected."""

    def topography(self, rng: np.random.Generator, centres: np.ndarray, width: float) -> np.ndarray:
        return _topography(self.sensors, centres, width)

    def forward(self, positions: np.ndarray, orientations: np.ndarray) -> np.ndarray:
        """(63, k) average-referenced potentials of unit current dipoles (sphere-centred positions, m) in
        MNE's layered sphere head model (its default four layers) fitted to the montage."""
        info = eeg_info()
        radius = float(np.linalg.norm(self.sensors - np.asarray(self.centre), axis=1).mean())
        sphere = mne.make_sphere_model(r0=tuple(self.centre), head_radius=radius, info=info, verbose=False)
        fwd, _ = mne.make_forward_dipole(self._dipoles(positions, orientations), sphere, info, verbose=False)
        gain = fwd["sol"]["data"]
        return gain - gain.mean(axis=0)

    zscored = False  # the preprocessing is linear: the expected response is the preprocessed expectation

    def preprocess(self, x: np.ndarray) -> np.ndarray:
        x -= x[..., : self.n_base].mean(axis=-1, keepdims=True)
        return x[..., self.n_base :]

    def expected(self, x: np.ndarray, scale=None) -> np.ndarray:
        """The preprocessed expectation of trials whose raw expectation is ``x`` (linear: exact)."""
        return self.preprocess(x)

    def write(self, folder: Path, split: str, data: np.ndarray, per_concept: int) -> None:
        _write_pickle(folder / f"preprocessed_eeg_{split}.npy", {
            "preprocessed_eeg_data": data, "ch_names": list(self.ch_names),
            "times": np.round(np.arange(self.n_times) / self.sfreq, 3)})


class _MEG(_Recording):
    """The THINGS-MEG files: 271 CTF sensors, one image every 1.5 s (no overlap), 40 Hz low-pass,
    baseline z-scored per trial and channel, ATM's 5-D pickles."""

    def topography(self, rng: np.random.Generator, centres: np.ndarray, width: float) -> np.ndarray:
        """Radial field of tangential dipoles at cortical depth under `centres`, pointing to the vertex
        turned by a random (subject-specific) angle; peak 1. `width` (the EEG's scalp spread) has no
        MEG counterpart: the field's spread follows from the depth."""
        dirs = centres / np.linalg.norm(centres, axis=1, keepdims=True)
        east, north = tangent_frame(dirs)
        turn = rng.normal(0, ORIENTATION_SD, (len(dirs), 1))
        field = _dipole_field(self.sensors, CORTEX_RADIUS * dirs, np.cos(turn) * north + np.sin(turn) * east)
        topo = field.sum(axis=1)
        return topo / np.abs(topo).max()

    def forward(self, positions: np.ndarray, orientations: np.ndarray) -> np.ndarray:
        """(271, k) fields of unit current dipoles at the CTF axial gradiometers (template positions,
        radial coils) in MNE's spherical conductor (Sarvas; only the sphere's centre matters for MEG)."""
        info = make_meg_info(list(self.ch_names), self.sfreq)
        info["dev_head_t"] = mne.transforms.Transform("meg", "head")  # template sensors in the head frame
        for ch in info["chs"]:
            ch["coil_type"] = FIFF.FIFFV_COIL_CTF_GRAD
        sphere = mne.make_sphere_model(r0=(0.0, 0.0, 0.0), head_radius=None, verbose=False)
        fwd, _ = mne.make_forward_dipole(self._dipoles(positions, orientations), sphere, info, verbose=False)
        return fwd["sol"]["data"]

    def preprocess(self, x: np.ndarray) -> np.ndarray:
        """The official pipeline: low-pass, baseline z-score (mne.baseline.rescale, mode='zscore'), crop."""
        x = self._lowpass(x)
        base = x[..., : self.n_base]
        x = (x - base.mean(axis=-1, keepdims=True)) / base.std(axis=-1, keepdims=True)
        return x[..., self.n_base :].astype(np.float32)

    zscored = True  # per-trial division by the baseline sd: the expectation needs its mean scaling

    def _lowpass(self, x: np.ndarray) -> np.ndarray:
        return scipy.signal.sosfiltfilt(scipy.signal.butter(4, MEG_LOWPASS, fs=self.sfreq, output="sos"), x, axis=-1)

    def baseline_sd(self, x: np.ndarray) -> np.ndarray:
        """(n, channels) baseline standard deviation after the low-pass, as ``preprocess`` divides by it."""
        return self._lowpass(x)[..., : self.n_base].std(axis=-1)

    def expected(self, x: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Low-pass and baseline removal (linear), then the mean 1 / baseline-sd of noise-only trials
        per channel in place of each trial's own (an approximation: the sd is taken as independent of the
        response, which starts after the baseline)."""
        x = self._lowpass(x)
        x = (x - x[..., : self.n_base].mean(axis=-1, keepdims=True)) * scale[None, :, None]
        return x[..., self.n_base :].astype(np.float32)

    def write(self, folder: Path, split: str, data: np.ndarray, per_concept: int) -> None:
        """(concepts, images per concept, repetitions, channels, times), as ATM reshapes the epochs."""
        _write_pickle(folder / MEG_FILES[split], {
            "meg_data": data.reshape(-1, per_concept, *data.shape[1:]), "ch_names": list(self.ch_names),
            "times": np.round(np.arange(self.n_times) / self.sfreq, 3)})


def _eeg() -> _EEG:
    positions = _electrode_positions()
    return _EEG(CH_NAMES, positions, dict(zip(CH_NAMES, positions)), _noise_mixing(positions), SFREQ, N_BASE,
                N_TIMES, tuple(SOA * k for k in NEIGHBOURS), PINK_SD, ALPHA_SD, WHITE_SD,
                tuple(_sphere_centre(positions)))


def _meg() -> _MEG:
    """Sources sit under the same 10-05 anchors as for EEG (electrodes re-centred on their sphere)."""
    electrodes = _electrode_positions()
    ch_names = tuple(things_meg_channels())
    sensors = ctf_positions(ch_names)
    return _MEG(ch_names, sensors, dict(zip(CH_NAMES, electrodes - _sphere_centre(electrodes))),
                _meg_noise_mixing(sensors), MEG_SFREQ, MEG_N_BASE, MEG_N_TIMES, (), MEG_PINK_SD, MEG_ALPHA_SD,
                MEG_WHITE_SD)


RECORDINGS = {"eeg": _eeg, "meg": _meg}
