"""UBP's format (Wu et al. 2025, "Uncertainty-aware Blur Prior"): ``sub-XX/{train,test}.pt``.

UBP's ``preprocess/process_eeg_whiten.py`` writes, per subject, two ``torch.save`` dicts (pickle
protocol 5) of numpy arrays:

- ``eeg``: float16 (images, repetitions, channels, times); for THINGS-EEG2 (16540, 4, 63, 250) and
  (200, 80, 63, 250): the last 250 samples of a -0.2..1.0 s epoch at 250 Hz;
- ``img``: (images, repetitions) str, each image's path relative to UBP's image folder
  (``train_images/00001_aardvark/aardvark_01b.jpg``, ``test_images/...``), repeated per repetition;
- ``label``, ``text``, ``session``: (images, repetitions) concept index, concept name, session;
- ``ch_names``; ``times``: the whole epoch's times (301 values for 250 samples: the crop was applied
  to the data only, the NICE quirk).

The MEG files (THINGS-MEG through the same pipeline) have the same keys with the 271 CTF channels.
Reading a pickle runs code from the file: load only files you trust (as for every pickle format).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .dataset import to_float32
from .things_eeg2 import DataFormatError, _align_times, check_finite, concept_name, image_folder

log = logging.getLogger(__name__)

FILES = {"training": "train.pt", "test": "test.pt"}
KEYS = ("eeg", "img", "ch_names", "times")


def ubp_files(sub_dir: Path) -> dict[str, Path]:
    return {split: sub_dir / name for split, name in FILES.items()}


def read_ubp(sub_dir: Path, image_root: Path, average: dict[str, bool]):
    """(ch_names, times, {split: (float32 trials, image paths, concepts)}, description).

    ``average[split]`` averages the repetitions while converting (one float32 copy of the average,
    never of every repetition), as ``BrainDataset.from_trials`` would.
    """
    import torch

    paths = ubp_files(sub_dir)
    payload = {}
    for split, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"missing data file {path} (UBP format: train.pt and test.pt)")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # torch and pickle raise many types for a damaged or foreign file
            raise DataFormatError(f"{path}: cannot be read with torch.load ({err})") from err
        if not isinstance(obj, dict):
            raise DataFormatError(f"{path}: expected a torch.save dict with keys {KEYS}, found {type(obj).__name__}")
        missing = [k for k in KEYS if k not in obj]
        if missing:
            raise DataFormatError(f"{path}: missing field(s) {missing}; found {sorted(obj)}")
        payload[split] = obj
    ch_names = [str(c) for c in payload["training"]["ch_names"]]
    if [str(c) for c in payload["test"]["ch_names"]] != ch_names:
        raise DataFormatError(f"{paths['test']}: 'ch_names' differ from those in {paths['training']}")
    splits, n_times = {}, None
    for split, obj in payload.items():
        eeg = _as_array(obj["eeg"])
        if eeg.ndim != 4 or eeg.shape[2] != len(ch_names):
            raise DataFormatError(
                f"{paths[split]}: field 'eeg' must be (images, repetitions, {len(ch_names)} channels, times), "
                f"got shape {eeg.shape}")
        if n_times is not None and eeg.shape[3] != n_times:
            raise DataFormatError(f"{paths[split]}: {eeg.shape[3]} time samples, but {paths['training']} has {n_times}")
        n_times = eeg.shape[3]
        images, concepts = _images(paths[split], obj, len(eeg), image_root, split)
        check_finite(paths[split], "eeg", eeg)
        data = to_float32(eeg, average[split])
        splits[split] = (data, images, concepts)
        del obj["eeg"], eeg
    times = _align_times(paths["training"], payload["training"]["times"], n_times)
    return ch_names, times, splits, f"UBP torch.save format ({len(ch_names)} channels)"


def _as_array(value) -> np.ndarray:
    """A numpy view of a numpy array or a torch tensor (UBP saves numpy; a re-save may hold tensors)."""
    return value.numpy() if hasattr(value, "numpy") and not isinstance(value, np.ndarray) else np.asarray(value)


def _images(path: Path, obj: dict, n_images: int, image_root: Path, split: str) -> tuple[list[Path], list[str]]:
    """Image paths (one per row) from 'img', relative to ``image_root``; concepts from their folders."""
    img = np.asarray(_as_array(obj["img"]), dtype=object)
    if img.ndim == 1:
        img = img[:, None]
    if img.ndim != 2 or len(img) != n_images:
        raise DataFormatError(f"{path}: field 'img' must be (images, repetitions) with {n_images} rows, "
                              f"got shape {img.shape}")
    if not (img == img[:, :1]).all():
        row = int(np.flatnonzero(~(img == img[:, :1]).all(axis=1))[0])
        raise DataFormatError(f"{path}: field 'img' names different images across the repetitions of row {row}")
    relative = [str(p).replace("\\", "/") for p in img[:, 0]]
    paths = [_resolve(image_root, rel, split) for rel in relative]
    missing = [p for p in paths[:: max(1, len(paths) // 50)] if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"missing image file {missing[0]} ('img' of {path}, relative to "
                                f"dataset.image_root={image_root})")
    return paths, [concept_name(p.parent.name) for p in paths]


def _resolve(image_root: Path, relative: str, split: str) -> Path:
    """``image_root / relative``; UBP's ``train_images/`` also found as ``training_images/``."""
    path = image_root / relative
    head, _, rest = relative.partition("/")
    if not path.exists() and head in ("train_images", "training_images", "test_images") and rest:
        return image_folder(image_root, split) / rest
    return path
