"""The in-memory dataset every stage fits on, and the per-channel normalisation saved with models."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import mne
import numpy as np

#: written by psim-synth beside each subject's files (prosthesis_sim.data.synth); never in a real recording
TRUTH_FILE = "synthetic_truth_test.npy"
#: the same truth split by component (early, concept, nonlinear, retinotopic, shared), arrays that sum to it
COMPONENTS_FILE = "synthetic_truth_components_test.npz"
TRIALS_FILE = "synthetic_trials_{split}.npz"  # psim-synth's per-trial context (preceding image, alpha state)

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Epoch:
    """A dataset's time axis: first and last sample (s), sampling rate (Hz) and sample count.

    Models are fitted on one epoch and generate signals on it; a model, a metric or a comparison that
    meets another epoch stops with both named (``check``) instead of pairing samples that are not the
    same moments after stimulus onset.
    """

    tmin: float
    tmax: float
    sfreq: float
    n_times: int

    @classmethod
    def of(cls, times: np.ndarray) -> "Epoch":
        times = np.asarray(times, dtype=np.float64)
        sfreq = float(np.round(1.0 / np.median(np.diff(times)), 6)) if len(times) > 1 else 0.0
        return cls(round(float(times[0]), 6), round(float(times[-1]), 6), sfreq, len(times))

    def __str__(self) -> str:
        return f"{self.tmin:.3f}..{self.tmax:.3f} s at {self.sfreq:g} Hz ({self.n_times} samples)"

    def matches(self, other: "Epoch") -> bool:
        half = 0.5 / max(self.sfreq, other.sfreq, 1e-9)
        return (self.n_times == other.n_times and abs(self.sfreq - other.sfreq) < 1e-6 * self.sfreq
                and abs(self.tmin - other.tmin) < half)

    def check(self, other: "Epoch", what: str, where: str) -> None:
        """Raise a ValueError naming both epochs and the settings that conform a dataset to this one."""
        if not self.matches(other):
            raise ValueError(
                f"{what} was fitted on the epoch {self}, but {where} has {other}: samples would not be the "
                f"same moments after stimulus onset. Load the data on the model's epoch with "
                f"dataset.tmin={self.tmin:g} dataset.tmax={self.tmax:g} dataset.sfreq={self.sfreq:g} "
                f"(cropped and resampled with MNE), or fit the model on this data")


@dataclass
class BrainDataset:
    """Stimulus-locked M/EEG responses to images, split into train and test.

    train, test: float32 (n_images, n_repetitions, n_channels, n_times), in the file's units.
    Repetition averaging (when asked for) leaves a repetition axis of length 1, so shapes stay uniform.
    """

    info: mne.Info
    times: np.ndarray
    train: np.ndarray
    test: np.ndarray
    train_images: list[Path]
    test_images: list[Path]
    train_concepts: list[str]
    test_concepts: list[str]
    subject: str = ""
    description: str = ""
    cache_dir: Path | None = None
    test_raw: np.ndarray | None = field(default=None, repr=False)
    #: synthetic data only: each test image's noise-free expected response (n_test, channels, times), the
    #: truth that psim-eval scores as a reference row. No model may read it (it is not in any real recording).
    test_truth: np.ndarray | None = field(default=None, repr=False)
    #: synthetic data only: ``test_truth`` by component (``read_truth_components``), for psim-eval's capture table
    test_truth_components: dict | None = field(default=None, repr=False)
    #: synthetic data with adaptation or state gain: per split ("train", "test"), each single trial's
    #: preceding image ("previous", an index into the split's images), the brain's similarity to it and
    #: the pre-stimulus alpha state, (n_images, n_repetitions) each (``read_trial_context``). What a
    #: conditional trial model may read: a real recording has the presentation order too.
    trial_context: dict | None = field(default=None, repr=False)

    @classmethod
    def from_trials(cls, train: np.ndarray, test: np.ndarray, average_train: bool, average_test: bool,
                    root: Path, cache_dir: str | Path | None = None, **fields) -> "BrainDataset":
        """Build from single trials, averaging repetitions where asked; test trials stay on ``test_raw``."""
        test = np.ascontiguousarray(test)
        # A repetition axis of length 1 is already its average: no copy (the training arrays are GBs).
        return cls(
            train=train.mean(axis=1, keepdims=True) if average_train and train.shape[1] > 1 else np.ascontiguousarray(train),
            test=test.mean(axis=1, keepdims=True) if average_test and test.shape[1] > 1 else test,
            cache_dir=Path(cache_dir) if cache_dir is not None else Path(root) / ".cache",
            test_raw=test,
            **fields,
        )

    @property
    def ch_names(self) -> list[str]:
        return list(self.info["ch_names"])

    @property
    def sfreq(self) -> float:
        return float(self.info["sfreq"])

    @property
    def epoch(self) -> Epoch:
        return Epoch.of(self.times)

    def conform(self, tmin: float | None = None, tmax: float | None = None,
                sfreq: float | None = None) -> "BrainDataset":
        """Crop to [tmin, tmax] s and resample to ``sfreq`` Hz (MNE's FFT resampling), in place.

        None leaves a bound or the rate as loaded. Cropping keeps the samples within half a sample of
        the bounds; resampling follows cropping, so the new epoch starts at the first kept sample.
        """
        notes = []
        if tmin is not None or tmax is not None:
            lo = -np.inf if tmin is None else float(tmin)
            hi = np.inf if tmax is None else float(tmax)
            half = 0.5 / self.sfreq
            keep = np.flatnonzero((self.times >= lo - half) & (self.times <= hi + half))
            if len(keep) < 2:
                raise ValueError(f"dataset.tmin={tmin}, dataset.tmax={tmax} keep {len(keep)} samples of the epoch "
                                 f"{self.epoch} of {self.description}")
            if len(keep) < len(self.times):
                self._apply(lambda x: np.ascontiguousarray(x[..., keep]), self.times[keep])
                notes.append(f"cropped to {self.times[0]:.3f}..{self.times[-1]:.3f} s")
        if sfreq is not None and abs(float(sfreq) - self.sfreq) > 1e-6 * self.sfreq:
            import mne

            old, new = self.sfreq, float(sfreq)
            if not new > 0:
                raise ValueError(f"dataset.sfreq must be positive, got {sfreq}")

            def resample(x: np.ndarray) -> np.ndarray:
                out = [mne.filter.resample(x[i : i + 256].astype(np.float64), up=new, down=old, axis=-1,
                                           verbose="error").astype(np.float32) for i in range(0, len(x), 256)]
                return np.concatenate(out)

            n = int(round(len(self.times) * new / old))
            self._apply(resample, self.times[0] + np.arange(n) / new)
            self.info = _with_sfreq(self.info, new)
            notes.append(f"resampled {old:g} -> {new:g} Hz")
        if notes:
            self.description = f"{self.description}, {', '.join(notes)}"
        return self

    def _apply(self, fn, times: np.ndarray) -> None:
        """Apply ``fn`` to every signal array along time, and set the new time axis."""
        raw_is_test = self.test_raw is self.test
        self.train, self.test = fn(self.train), fn(self.test)
        if self.test_raw is not None:
            self.test_raw = self.test if raw_is_test else fn(self.test_raw)
        if self.test_truth is not None:
            self.test_truth = fn(self.test_truth)
        if self.test_truth_components is not None:
            self.test_truth_components = {k: fn(v) for k, v in self.test_truth_components.items()}
        self.times = np.asarray(times, dtype=np.float64)
        self.__dict__.pop("normalizer", None)

    @property
    def signal_shape(self) -> tuple[int, int]:
        return self.train.shape[2], self.train.shape[3]

    def train_average(self) -> np.ndarray:
        """(n_images, n_channels, n_times): each training image's repetition average."""
        return self.train.mean(axis=1)

    def test_average(self) -> np.ndarray:
        return self.test.mean(axis=1)

    def test_repetitions(self) -> np.ndarray:
        """Test trials before any averaging (for the split-half noise ceiling)."""
        return self.test_raw if self.test_raw is not None else self.test

    @cached_property
    def normalizer(self) -> "Normalizer":
        """Per-channel z-scoring with this dataset's training statistics (computed once)."""
        return Normalizer.fit(self.train)

    def signature(self) -> str:
        """A short string that changes when the data a model would fit on changes (for caches)."""
        return (
            f"{self.description}|{self.subject}|{self.train.shape}|{self.test.shape}|"
            f"{float(self.train[:, :, :, ::25].sum()):.6e}"
        )


@dataclass
class Normalizer:
    """Per-channel z-scoring with training statistics (mean and std over images, reps and time)."""

    mean: np.ndarray  # (n_channels, 1)
    std: np.ndarray  # (n_channels, 1)

    @classmethod
    def fit(cls, signals: np.ndarray) -> "Normalizer":
        """signals: (..., n_channels, n_times)."""
        flat = np.moveaxis(signals, -2, 0).reshape(signals.shape[-2], -1)
        mean = flat.mean(axis=1, keepdims=True).astype(np.float32)
        std = flat.std(axis=1, keepdims=True).astype(np.float32)
        std[std == 0] = 1.0
        return cls(mean, std)

    def __call__(self, signals: np.ndarray) -> np.ndarray:
        if np.ndim(signals) < 3:
            return ((signals - self.mean) / self.std).astype(np.float32)
        out = np.empty(np.shape(signals), np.float32)
        for i in range(0, len(out), 256):  # by blocks of images: no full-size temporaries at THINGS size
            out[i:i + 256] = (signals[i:i + 256] - self.mean) / self.std
        return out

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return (z * self.std + self.mean).astype(np.float32)

    def state_dict(self, prefix: str = "norm.") -> dict[str, np.ndarray]:
        return {prefix + "mean": self.mean, prefix + "std": self.std}

    @classmethod
    def from_state_dict(cls, state: dict, prefix: str = "norm.") -> "Normalizer":
        return cls(np.asarray(state[prefix + "mean"]), np.asarray(state[prefix + "std"]))


ROWS_PER_CONVERSION = 512  # images converted to float32 at a time (the training arrays are GBs)


def read_truth(folder: Path, test_shape: tuple, crop: slice = slice(None)) -> np.ndarray | None:
    """``<folder>/synthetic_truth_test.npy`` (written by psim-synth) as (n_test, channels, times) float32,
    or None when the folder has none (every real recording)."""
    path = Path(folder) / TRUTH_FILE
    if not path.is_file():
        return None
    truth = np.load(path)
    want = (test_shape[0], *test_shape[2:])
    if truth.shape != want:
        raise ValueError(f"{path}: shape {truth.shape}, expected {want} (test images x channels x times "
                         "of the test file beside it); re-run psim-synth")
    return np.ascontiguousarray(truth[..., crop], dtype=np.float32)


def read_truth_components(folder: Path, truth: np.ndarray | None, crop: slice = slice(None)) -> dict | None:
    """``<folder>/synthetic_truth_components_test.npz`` as {component: (n_test, channels, times)}, or None
    (no file, or no truth to check it against)."""
    path = Path(folder) / COMPONENTS_FILE
    if truth is None or not path.is_file():
        return None
    with np.load(path) as f:
        parts = {k: np.ascontiguousarray(f[k][..., crop], dtype=np.float32) for k in f.files}
    bad = {k: v.shape for k, v in parts.items() if v.shape != truth.shape}
    if bad:
        raise ValueError(f"{path}: components of shape {bad}, expected {truth.shape} as the truth beside it; re-run psim-synth")
    return parts


def read_trial_context(folder: Path, train_shape: tuple, test_shape: tuple) -> dict | None:
    """``<folder>/synthetic_trials_{training,test}.npz`` (psim-synth with adaptation or state_gain) as
    {"train": {...}, "test": {...}}, each array (n_images, n_repetitions) of the single trials in the
    files beside it (also when they were loaded averaged: ``*_shape`` with one repetition), or None when
    the folder has none."""
    out = {}
    for split, name, shape in (("train", "training", train_shape), ("test", "test", test_shape)):
        path = Path(folder) / TRIALS_FILE.format(split=name)
        if not path.is_file():
            return None
        with np.load(path) as f:
            out[split] = {k: np.asarray(f[k]) for k in f.files}
        bad = {k: v.shape for k, v in out[split].items()
               if v.ndim != 2 or v.shape[0] != shape[0] or shape[1] not in (1, v.shape[1])}
        if bad:
            raise ValueError(f"{path}: arrays of shape {bad}, expected {tuple(shape[:2])} (images x repetitions of "
                             "the single trials beside it); re-run psim-synth")
    return out


def to_float32(data: np.ndarray, average: bool = False) -> np.ndarray:
    """(n, reps, ch, t) of any float dtype -> float32, averaged over reps (keepdims) when asked.

    A block of images at a time, so the peak is the input plus the float32 result (never a float32
    copy of every repetition when only their average is kept). float32 input is returned as is.
    """
    if data.dtype == np.float32 and not (average and data.shape[1] > 1):
        return data
    n, reps = data.shape[:2]
    out = np.empty((n, 1 if average else reps, *data.shape[2:]), np.float32)
    for i in range(0, n, ROWS_PER_CONVERSION):
        block = np.asarray(data[i : i + ROWS_PER_CONVERSION], dtype=np.float32)
        out[i : i + len(block)] = block.mean(axis=1, keepdims=True) if average else block
    return out


def declare_epoch(data: BrainDataset, tmin: float | None, tmax: float | None, sfreq: float | None) -> BrainDataset:
    """The loaders' last step: conform to dataset.tmin/tmax/sfreq when given, and say what the epoch is.

    An epoch that starts before stimulus onset (Gifford's release, -0.2..0.79 s; an uncropped NICE
    file, 300 samples from -0.2 s) is legal but unusual here: models treat every sample as response
    and the paper uses 0..1 s, so the loader warns and names the setting that crops it.
    """
    data.conform(tmin, tmax, sfreq)
    epoch = data.epoch
    if epoch.tmin < -0.5 / epoch.sfreq and tmin is None:
        log.warning("%s %s: the epoch %s starts %.3f s before stimulus onset (a baseline); models and metrics "
                    "treat every sample as response and the paper uses 0..1 s: dataset.tmin=0 crops it",
                    data.description, data.subject, epoch, -epoch.tmin)
    else:
        log.info("%s %s: epoch %s", data.description, data.subject, epoch)
    return data


def _with_sfreq(info: mne.Info, sfreq: float) -> mne.Info:
    """A copy of ``info`` at another sampling rate (positions and channel types kept)."""
    info = info.copy()
    with info._unlock():
        info["sfreq"] = float(sfreq)
        info["lowpass"] = min(float(info["lowpass"]), sfreq / 2)
    return info


def standard_montage_name() -> str:
    """MNE's 10-05 template: 'standard_1005', renamed 'colin27_1005' in MNE 1.13 (same positions)."""
    return "colin27_1005" if "colin27_1005" in mne.channels.get_builtin_montages() else "standard_1005"


def make_info(ch_names: list[str], sfreq: float, ch_type: str = "eeg", montage: str | None = "auto") -> mne.Info:
    """An mne.Info with a montage set (EEG) so topomaps and channel positions come from MNE."""
    info = mne.create_info(list(ch_names), sfreq=sfreq, ch_types=ch_type)
    if montage is not None and ch_type == "eeg":
        name = standard_montage_name() if montage == "auto" else montage
        info.set_montage(mne.channels.make_standard_montage(name), on_missing="raise")
    return info


def load_image(path: Path | str) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3); a clear error if it cannot be read."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image file {path}: missing or not an image OpenCV can decode")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
