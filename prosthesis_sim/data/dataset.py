"""The in-memory dataset every stage fits on, and the per-channel normalisation saved with models."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import mne
import numpy as np


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

    @classmethod
    def from_trials(cls, train: np.ndarray, test: np.ndarray, average_train: bool, average_test: bool,
                    root: Path, cache_dir: str | Path | None = None, **fields) -> "BrainDataset":
        """Build from single trials, averaging repetitions where asked; test trials stay on ``test_raw``."""
        test = np.ascontiguousarray(test)
        return cls(
            train=train.mean(axis=1, keepdims=True) if average_train else np.ascontiguousarray(train),
            test=test.mean(axis=1, keepdims=True) if average_test else test,
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
        return ((signals - self.mean) / self.std).astype(np.float32)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return (z * self.std + self.mean).astype(np.float32)

    def state_dict(self, prefix: str = "norm.") -> dict[str, np.ndarray]:
        return {prefix + "mean": self.mean, prefix + "std": self.std}

    @classmethod
    def from_state_dict(cls, state: dict, prefix: str = "norm.") -> "Normalizer":
        return cls(np.asarray(state[prefix + "mean"]), np.asarray(state[prefix + "std"]))


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
