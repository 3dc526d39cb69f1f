"""Head and sensor geometry: electrode positions, scalp topographies, dipole fields and the spatial
covariance of sensor noise."""
from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np

from prosthesis_sim.data.dataset import make_info
from prosthesis_sim.data.things_meg import tangent_frame

SFREQ = 250.0
CH_NAMES = (
    "Fp1 Fp2 AF7 AF3 AFz AF4 AF8 F7 F5 F3 F1 F2 F4 F6 F8 FT9 FT7 FC5 FC3 FC1 FCz FC2 FC4 FC6 FT8 FT10 "
    "T7 C5 C3 C1 Cz C2 C4 C6 T8 TP9 TP7 CP5 CP3 CP1 CPz CP2 CP4 CP6 TP8 TP10 P7 P5 P3 P1 Pz P2 P4 P6 P8 "
    "PO7 PO3 POz PO4 PO8 O1 Oz O2"
).split()

NOISE_LENGTH = 0.04  # m, correlation length of the 1/f sensor noise

CORTEX_RADIUS = 0.07  # m from the head centre: depth of the MEG source dipoles
ORIENTATION_SD = np.radians(45)  # subject-specific turn of a dipole away from pointing to the vertex
N_NOISE_DIPOLES = 600  # background-activity dipoles spread over the cortical shell (MEG noise covariance)

@lru_cache(maxsize=1)
def eeg_info():
    """The 63-channel mne.Info with MNE's standard_1005 montage (head frame, metres)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MNE renaming standard_1005; same positions
        return make_info(CH_NAMES, SFREQ)


def _electrode_positions() -> np.ndarray:
    """(63, 3) head-frame positions in metres from MNE's standard_1005 montage (via make_info)."""
    return np.array([ch["loc"][:3] for ch in eeg_info()["chs"]])


def _topography(positions: np.ndarray, centres: np.ndarray, width: float) -> np.ndarray:
    """(63,) average-referenced scalp pattern of sources at `centres` (k, 3), peak about 1."""
    d2 = ((positions[:, None, :] - centres[None]) ** 2).sum(-1)
    topo = np.exp(-d2 / (2 * width**2)).sum(axis=1)
    topo = topo / topo.max()
    return topo - topo.mean()


def _noise_mixing(positions: np.ndarray) -> np.ndarray:
    """Square root of a smooth spatial covariance (unit diagonal) from inter-electrode distances."""
    d2 = ((positions[:, None] - positions[None]) ** 2).sum(-1)
    return _sqrtm(0.9 * np.exp(-d2 / (2 * NOISE_LENGTH**2)) + 0.1 * np.eye(len(positions)))


def _sqrtm(cov: np.ndarray) -> np.ndarray:
    """Symmetric square root of a covariance matrix: the mixing that gives noise this covariance."""
    vals, vecs = np.linalg.eigh(cov)
    return ((vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T).astype(np.float32)


def _sphere_centre(points: np.ndarray) -> np.ndarray:
    """Least-squares centre of the sphere through `points` (|p|^2 = 2 p.c + k is linear in c and k)."""
    design = np.concatenate([2 * points, np.ones((len(points), 1))], axis=1)
    return np.linalg.lstsq(design, (points**2).sum(axis=1), rcond=None)[0][:3]


def _dipole_field(sensors: np.ndarray, positions: np.ndarray, moments: np.ndarray) -> np.ndarray:
    """(n_sensors, k) radial magnetic field of current dipoles (k, 3) in a spherical head centred at the
    origin: the volume currents add nothing to the radial component, so it is the free-space
    (q x (r - r0)) . r_hat / |r - r0|^3 (units dropped)."""
    d = sensors[:, None] - positions[None]
    radial = sensors / np.linalg.norm(sensors, axis=1, keepdims=True)
    return np.einsum("skc,sc->sk", np.cross(moments[None], d), radial) / np.linalg.norm(d, axis=-1) ** 3


def _shell_directions(n: int) -> np.ndarray:
    """About n near-uniform unit vectors (Fibonacci sphere) over the part of the head under the helmet."""
    z = 1 - 2 * (np.arange(n) + 0.5) / n
    phi = np.arange(n) * np.pi * (3 - np.sqrt(5))
    dirs = np.stack([np.sqrt(1 - z**2) * np.cos(phi), np.sqrt(1 - z**2) * np.sin(phi), z], axis=1)
    return dirs[z > -0.4]


def _meg_noise_mixing(sensors: np.ndarray) -> np.ndarray:
    """Square root of the MEG noise covariance (unit diagonal): background brain activity (tangential
    dipoles all over the cortical shell, seen through the field spread), uniform external fields the
    CTF synthetic gradiometry leaves, and independent sensor noise."""
    dirs = _shell_directions(N_NOISE_DIPOLES)
    fields = np.concatenate([_dipole_field(sensors, CORTEX_RADIUS * dirs, q) for q in tangent_frame(dirs)], axis=1)
    brain = fields @ fields.T
    brain /= np.sqrt(np.outer(np.diag(brain), np.diag(brain)))
    radial = sensors / np.linalg.norm(sensors, axis=1, keepdims=True)
    return _sqrtm(0.85 * brain + 0.05 * radial @ radial.T + 0.1 * np.eye(len(sensors)))

