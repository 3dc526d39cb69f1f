"""THINGS-EEG2 loader (NICE / Song et al. preprocessed format; real or synthetic files alike).

See ../shared/data-formats.md for the layout. Every format problem is reported with the file and the
field it concerns, because a researcher pointing this at a 4 GB download needs to know which file is off.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .dataset import BrainDataset, declare_epoch, make_info, read_trial_context, read_truth, read_truth_components, to_float32

log = logging.getLogger(__name__)

KEYS = ("preprocessed_eeg_data", "ch_names", "times")
TRAIN_FILE = "preprocessed_eeg_training.npy"
TEST_FILE = "preprocessed_eeg_test.npy"
GIFFORD_N_CHANNELS = 17


class DataFormatError(ValueError):
    """A data file exists but does not hold what the format promises."""


def subject_dir_name(subject: int | str) -> str:
    if isinstance(subject, str) and subject.startswith("sub-"):
        return subject
    try:
        return f"sub-{int(subject):02d}"
    except ValueError:
        raise ValueError(f"subject must be a number such as 1 or a folder name such as 'sub-01', got {subject!r}") from None


def read_pickled_dict(path: Path, keys: tuple[str, ...] = KEYS) -> dict:
    """Load a pickled dict (a raw pickle, also behind a '.npy' name, or a 0-d object array) holding ``keys``."""
    if not path.is_file():
        raise FileNotFoundError(f"missing data file {path}")
    try:
        obj = np.load(path, allow_pickle=True)
    except Exception as err:  # pickle and numpy raise many types here
        raise DataFormatError(f"{path}: cannot be read as a pickled dict or .npy file ({err})") from err
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path}: expected a pickled dict with keys {keys}, found {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise DataFormatError(f"{path}: missing field(s) {missing}; found {sorted(obj)}")
    return obj


def _check_signals(path: Path, data, n_channels: int | None, average: bool = False) -> np.ndarray:
    """The 4-D signals as float32 (averaged over repetitions when asked, while converting)."""
    data = np.asarray(data)
    if data.ndim != 4:
        raise DataFormatError(
            f"{path}: field 'preprocessed_eeg_data' must be 4-D (images, repetitions, channels, times), "
            f"got shape {data.shape}"
        )
    if n_channels is not None and data.shape[2] != n_channels:
        raise DataFormatError(
            f"{path}: 'preprocessed_eeg_data' has {data.shape[2]} channels but 'ch_names' lists {n_channels}"
        )
    check_finite(path, "preprocessed_eeg_data", data)  # on the file's array, so the index is the file's
    return to_float32(data, average)


def check_finite(path: Path, field: str, data: np.ndarray) -> None:
    """Chunked over the first axis: the real training arrays are several GB."""
    for i in range(0, len(data), 256):
        bad = np.argwhere(~np.isfinite(data[i : i + 256]))
        if len(bad):
            bad[0, 0] += i
            raise DataFormatError(f"{path}: {field!r} holds NaN/Inf, first at index {tuple(int(b) for b in bad[0])}")


def _align_times(path: Path, times, n_times: int) -> np.ndarray:
    times = np.asarray(times, dtype=np.float64).ravel()
    if len(times) == n_times:
        return times
    if len(times) > n_times:
        # Known quirk: the epoch was cropped (e.g. -0.2..1.0 s -> 0..1.0 s) in the data only.
        aligned = times[-n_times:]
        log.warning(
            "%s: 'times' has %d values but the data has %d samples; the crop was applied to the data only, "
            "so using the last %d values (%.3f..%.3f s)",
            path, len(times), n_times, n_times, aligned[0], aligned[-1],
        )
        return aligned
    raise DataFormatError(f"{path}: 'times' has {len(times)} values but the data has {n_times} samples")


def image_folder(image_root: Path, split: str) -> Path:
    """``<image_root>/{training,test}_images``; the training folder is also found as ``train_images``
    (UBP's and others' name for it)."""
    folder = image_root / f"{split}_images"
    if split == "training" and not folder.exists() and (image_root / "train_images").is_dir():
        return image_root / "train_images"
    return folder


def concept_name(folder: str) -> str:
    """'00001_aardvark' -> 'aardvark' (THINGS-EEG2 numbers its concept folders); others unchanged."""
    return folder.split("_", 1)[1] if folder[:5].isdigit() and "_" in folder else folder


def _image_lists(image_root: Path, split: str, n_images: int | None) -> tuple[list[Path], list[str]]:
    """Image paths in row order: from image_metadata.npy when present, else sorted concept folders;
    exactly ``n_images`` of them (None: as many as listed, for a caller that selects among them)."""
    folder = image_folder(image_root, split)
    meta_path = image_root / "image_metadata.npy"
    if meta_path.is_file():
        meta = np.load(meta_path, allow_pickle=True)
        meta = meta.item() if isinstance(meta, np.ndarray) and meta.shape == () else meta
        key = "train" if split == "training" else split
        key_c, key_f = f"{key}_img_concepts", f"{key}_img_files"
        if key_c not in meta or key_f not in meta:
            raise DataFormatError(f"{meta_path}: missing field(s) {key_c!r} / {key_f!r}")
        concepts, files = list(meta[key_c]), list(meta[key_f])
        paths = [folder / c / f for c, f in zip(concepts, files)]
    else:
        if not folder.is_dir():
            raise FileNotFoundError(f"missing image folder {folder}")
        paths = sorted(p for p in folder.glob("*/*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
        concepts = [p.parent.name for p in paths]
    if n_images is not None and len(paths) != n_images:
        raise DataFormatError(
            f"{folder}: {len(paths)} images listed but the {split} data array has {n_images} rows"
        )
    missing = [p for p in paths[:: max(1, len(paths) // 50)] if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"missing image file {missing[0]} (listed for the {split} split)")
    return paths, [concept_name(c) for c in concepts]


def load_things_eeg2(
    root: str | Path,
    image_root: str | Path | None = None,
    subject: int | str = 1,
    average_train: bool = True,
    average_test: bool = True,
    cache_dir: str | Path | None = None,
    tmin: float | None = None,
    tmax: float | None = None,
    sfreq: float | None = None,
) -> BrainDataset:
    """Read one subject of THINGS-EEG2 into a BrainDataset: the NICE format (``preprocessed_eeg_
    {training,test}.npy``, also Gifford's 17-channel release) or UBP's ``{train,test}.pt``.

    average_train / average_test: average over repetitions (NICE practice). The unaveraged test trials
    are kept on ``test_raw`` for the split-half noise ceiling either way. ``cache_dir`` is where feature
    caches for this dataset go (default: ``<root>/.cache``). tmin / tmax / sfreq: crop and resample
    the epoch (MNE) to match a model fitted on another one; None keeps the file's.
    """
    root = Path(root)
    image_root = Path(image_root) if image_root is not None else root / "images"
    sub = subject_dir_name(subject)
    sfreq_out = sfreq  # the requested rate; `sfreq` below is the file's
    train_path, test_path = root / sub / TRAIN_FILE, root / sub / TEST_FILE
    if not (root / sub).is_dir():
        raise FileNotFoundError(f"missing subject folder {root / sub} (dataset.root={root}, dataset.subject={subject})")
    from .ubp import read_ubp, ubp_files

    ubp = ubp_files(root / sub)
    if not (train_path.is_file() or test_path.is_file()) and any(p.is_file() for p in ubp.values()):
        ch_names, times, splits, description = read_ubp(
            root / sub, image_root, {"training": average_train, "test": False})
        if not is_eeg(ch_names):
            raise DataFormatError(f"{ubp['training']}: 'ch_names' are not EEG 10-05 names ({ch_names[:3]} ...); "
                                  "for MEG use dataset=things_meg")
        sfreq = float(np.round(1.0 / np.median(np.diff(times)), 6))
        (train, train_images, train_concepts), (test, test_images, test_concepts) = splits["training"], splits["test"]
        description = f"THINGS-EEG2 {description}, {sfreq:g} Hz"
    else:
        tr = read_pickled_dict(train_path)
        ch_names = [str(c) for c in tr["ch_names"]]
        # Converted (and averaged) while the file's array is the only other copy, then dropped: the
        # NICE training file is 8.3 GB of float64.
        train = _check_signals(train_path, tr.pop("preprocessed_eeg_data"), len(ch_names), average_train)
        te = read_pickled_dict(test_path)
        test = _check_signals(test_path, te.pop("preprocessed_eeg_data"), len(te["ch_names"]))
        if [str(c) for c in te["ch_names"]] != ch_names:
            raise DataFormatError(f"{test_path}: 'ch_names' differ from those in {train_path}")
        if train.shape[3] != test.shape[3]:
            raise DataFormatError(f"{test_path}: {test.shape[3]} time samples, but {train_path} has {train.shape[3]}")
        times = _align_times(train_path, tr["times"], train.shape[3])
        sfreq = float(np.round(1.0 / np.median(np.diff(times)), 6))
        if len(ch_names) == GIFFORD_N_CHANNELS:
            description = f"THINGS-EEG2 Gifford et al. 2022 release ({len(ch_names)} occipito-parietal channels, {sfreq:g} Hz)"
        else:
            description = f"THINGS-EEG2 NICE format ({len(ch_names)} channels, {sfreq:g} Hz)"
        train_images, train_concepts = _image_lists(image_root, "training", len(train))
        test_images, test_concepts = _image_lists(image_root, "test", len(test))
    log.info("%s: found %s, train %s, test %s, epoch %.3f..%.3f s", root / sub, description, train.shape,
             test.shape, times[0], times[-1])
    try:
        info = make_info(ch_names, sfreq)
    except ValueError as err:
        raise DataFormatError(f"{root / sub}: 'ch_names' do not all have standard_1005 positions ({err})") from err
    return declare_epoch(BrainDataset.from_trials(
        train, test, average_train, average_test, root, cache_dir,
        info=info, times=times, train_images=train_images, test_images=test_images,
        train_concepts=train_concepts, test_concepts=test_concepts, subject=sub, description=description,
        test_truth=(truth := read_truth(root / sub, test.shape)),
        test_truth_components=read_truth_components(root / sub, truth),
        trial_context=read_trial_context(root / sub, train.shape, test.shape),
    ), tmin, tmax, sfreq_out)


def is_eeg(ch_names: list[str]) -> bool:
    """True when the names are 10-05 EEG names (not CTF MEG sensors such as 'MLC11-1609')."""
    import mne

    from .dataset import standard_montage_name

    known = set(mne.channels.make_standard_montage(standard_montage_name()).ch_names)
    return all(c in known for c in ch_names)
