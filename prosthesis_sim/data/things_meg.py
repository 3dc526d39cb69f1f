"""THINGS-MEG loader: ATM-style pickles or the official MNE epochs file (real or synthetic files alike).

See ../shared/data-formats.md and docs/meg.md. Errors name the file and the field, as in the EEG loader.
The sensors get template positions from MNE's CTF-275 layout, so every THINGS-MEG source (pickles carry
channel names only) yields the same mne.Info and the same topomaps.
"""
from __future__ import annotations

import logging
import re
from functools import lru_cache
from pathlib import Path, PurePosixPath

import mne
import numpy as np
from mne.io.constants import FIFF

from .dataset import BrainDataset, declare_epoch, read_trial_context, read_truth, read_truth_components, to_float32
from .things_eeg2 import (DataFormatError, _align_times, _image_lists, check_finite, image_folder,
                          read_pickled_dict, subject_dir_name)

log = logging.getLogger(__name__)

KEYS = ("meg_data", "ch_names", "times")
DATA_KEYS = ("meg_data", "preprocessed_meg_data")  # ATM writes the first; other scripts the second
FILES = {"training": "preprocessed_meg_training.pkl", "test": "preprocessed_meg_zs_test.pkl"}
RANDOM_TEST_FILE = "preprocessed_meg_test.pkl"  # BrainFLORA / ATM "new split": 200 random test concepts
SPLITS = ("auto", "zero_shot", "random200")
EPOCHS_FILE = "preprocessed_P{n}-epo.fif"
METADATA = ("trial_type", "image_path")  # epochs metadata columns the loader needs
CONCEPT_FIELD = "things_category_nr"  # the THINGS concept number (1..1854) of exp and test trials
TRIAL_TYPES = {"exp": "training", "test": "test"}  # trial_type -> split
SKIPPED_TRIAL_TYPES = ("catch",)  # attention-check trials (images_catch_meg/...): no THINGS image
WINDOW = (0.0, 1.0)  # s: the epochs are cropped to this, as the ATM pickles are
EPOCHS_PER_READ = 1024  # epochs read from the .fif at once (the real file is 27,000 epochs)

LAYOUT = "CTF-275"
ABSENT = ("MLF25", "MRF43", "MRO13")  # CTF-275 sensors the NIH system that recorded THINGS-MEG lacks
DROPPED = ("MRO11",)  # malfunctioning; dropped by the official preprocessing
SERIAL = "1609"  # the system's suffix on every channel name ('MLC11-1609')
SENSOR_RADIUS = 0.11  # m from the head centre: the template helmet
LAYOUT_SPAN = np.radians(110)  # polar angle (from the vertex) of the layout's outermost sensor


def things_meg_channels() -> list[str]:
    """The 271 channel names of the THINGS-MEG files, in their order (CTF-275 minus 4)."""
    return [f"{name}-{SERIAL}" for name in _layout_xy() if name not in ABSENT + DROPPED]


def _sensor(ch_name: str) -> str:
    """CTF sensor name without the system serial: 'MLC11-1609' and 'MLC11-2622' are both 'MLC11'."""
    return ch_name.split("-")[0].strip()


@lru_cache(maxsize=1)
def _layout_xy() -> dict[str, np.ndarray]:
    """CTF-275 layout box centres by sensor name, centred on the layout's bounding box."""
    layout = mne.channels.read_layout(LAYOUT)
    xy = layout.pos[:, :2] + layout.pos[:, 2:] / 2
    xy -= (xy.min(axis=0) + xy.max(axis=0)) / 2
    return {_sensor(name): p for name, p in zip(layout.names, xy)}


def ctf_positions(ch_names: list[str]) -> np.ndarray:
    """(n, 3) template sensor positions (m, head centre at the origin, x right, y front, z up).

    The 2-D layout is read as an azimuthal equidistant projection (the one MNE's topomaps use): distance
    from the centre -> polar angle (outermost sensor at LAYOUT_SPAN), on a sphere of SENSOR_RADIUS. So
    topomaps drawn from these positions reproduce the layout.
    """
    xy = _layout_xy()
    unknown = [c for c in ch_names if _sensor(c) not in xy]
    if unknown:
        raise ValueError(f"not {LAYOUT} sensor names: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
    flat = np.array([xy[_sensor(c)] for c in ch_names])
    theta = np.hypot(*flat.T) / max(np.hypot(*p) for p in xy.values()) * LAYOUT_SPAN
    phi = np.arctan2(flat[:, 1], flat[:, 0])
    return SENSOR_RADIUS * np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], 1)


def tangent_frame(directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (east, north) tangent to the sphere at unit `directions` (k, 3); north points
    towards the vertex (+z). At the vertex itself east is +x."""
    east = np.cross([0.0, 0.0, 1.0], directions)
    norm = np.linalg.norm(east, axis=1, keepdims=True)
    east = np.where(norm > 1e-9, east / np.maximum(norm, 1e-9), [1.0, 0.0, 0.0])
    return east, np.cross(directions, east)


def make_meg_info(ch_names: list[str], sfreq: float) -> mne.Info:
    """An mne.Info of magnetometers at the CTF-275 template positions (radial normals).

    Coil type 'point magnetometer', not CTF axial gradiometer: for CTF coils mne.channels.find_layout
    returns all 275 layout sensors whatever the info holds, while for these it derives the layout from
    the channels' own positions, so mne.viz.plot_topomap (and the loop's renderer, which reads its layout)
    gets one position per channel, in channel order.
    """
    positions = ctf_positions(ch_names)
    radial = positions / np.linalg.norm(positions, axis=1, keepdims=True)
    east, north = tangent_frame(radial)
    info = mne.create_info(list(ch_names), sfreq=sfreq, ch_types="mag")
    for ch, *frame in zip(info["chs"], positions, east, north, radial):
        ch["coil_type"] = FIFF.FIFFV_COIL_POINT_MAGNETOMETER
        ch["loc"][:12] = np.concatenate(frame)
    return info


# ------------------------------------------------------------------------------------------ loader


def load_things_meg(
    root: str | Path,
    image_root: str | Path | None = None,
    subject: int | str = 1,
    average_train: bool = True,
    average_test: bool = True,
    cache_dir: str | Path | None = None,
    drop_first_sample: bool = True,
    split: str = "auto",
    tmin: float | None = None,
    tmax: float | None = None,
    sfreq: float | None = None,
) -> BrainDataset:
    """Read one subject of THINGS-MEG into a BrainDataset, from whichever form is on disk.

    Looked for, in this order, in ``<root>/sub-XX/``: ATM pickles (``preprocessed_meg_training.pkl``
    with ``preprocessed_meg_zs_test.pkl``, the zero-shot split of the 200 test images, or with
    ``preprocessed_meg_test.pkl``, BrainFLORA's "new split" of 200 random concepts), UBP's
    ``train.pt`` / ``test.pt``, then ``preprocessed_P{n}-epo.fif`` there or in ``<root>/`` (the
    official release keeps all participants in one folder). ``split``: 'auto' (what the files hold),
    'zero_shot' or 'random200' (refused where the files do not hold it). All give 0..1.0 s at 200 Hz
    (201 samples); drop_first_sample drops t = 0, leaving the 200 samples the paper uses. Averaging,
    caches and tmin / tmax / sfreq (crop and resample with MNE) as in load_things_eeg2.
    """
    if split not in SPLITS:
        raise ValueError(f"dataset.split={split!r}; expected one of {', '.join(SPLITS)}")
    root = Path(root)
    image_root = Path(image_root) if image_root is not None else root / "images"
    sub = subject_dir_name(subject)
    pickles = {split_: root / sub / name for split_, name in FILES.items()}
    random_test = root / sub / RANDOM_TEST_FILE
    from .ubp import read_ubp, ubp_files

    ubp = ubp_files(root / sub)
    epochs = _epochs_candidates(root, sub)
    if pickles["training"].is_file() and (pickles["test"].is_file() or random_test.is_file()):
        wanted = {"zero_shot": pickles["test"], "random200": random_test}.get(split)
        if wanted is not None and not wanted.is_file():
            other = random_test if split == "zero_shot" else pickles["test"]
            raise ValueError(f"dataset.split={split}, but {root / sub} has no {wanted.name}, only {other.name} "
                             f"({'random 200-concept split' if split == 'zero_shot' else 'zero-shot split'})")
        if split == "random200" or (split == "auto" and not pickles["test"].is_file()):
            pickles["test"] = random_test
        ch_names, times, splits, description = _load_pickles(pickles, image_root)
    elif any(p.is_file() for p in ubp.values()):
        ch_names, times, splits, description = read_ubp(root / sub, image_root, {"training": False, "test": False})
        ch_names = _check_ch_names(ubp["training"], ch_names)
        description = f"THINGS-MEG {description}"
    elif any(p.is_file() for p in epochs):
        if split == "random200":
            raise ValueError(f"dataset.split=random200: the epochs file {next(p for p in epochs if p.is_file())} "
                             "holds the zero-shot split; BrainFLORA's random split comes as "
                             f"{FILES['training']} + {RANDOM_TEST_FILE}")
        ch_names, times, splits, description = _load_epochs(next(p for p in epochs if p.is_file()), image_root)
    else:
        looked = [str(p) for p in [*pickles.values(), random_test, *ubp.values(), *epochs]]
        raise FileNotFoundError(f"no THINGS-MEG files for dataset.subject={subject} under {root}; looked for {looked}")
    held = "random200" if "random 200-concept split" in description else "zero_shot"
    if split not in ("auto", held):
        raise ValueError(f"dataset.split={split}, but {root / sub} holds {description}")
    sfreq_out, sfreq = sfreq, float(np.round(1.0 / np.median(np.diff(times)), 6))
    first = 1 if drop_first_sample else 0
    (train, train_images, train_concepts), (test, test_images, test_concepts) = splits["training"], splits["test"]
    log.info("%s: %s, train %s, test %s, %d samples from %.3f s", root / sub, description, train.shape,
             test.shape, len(times) - first, times[first])
    return declare_epoch(BrainDataset.from_trials(
        train[..., first:], test[..., first:], average_train, average_test, root, cache_dir,
        info=make_meg_info(ch_names, sfreq), times=times[first:], train_images=train_images,
        test_images=test_images, train_concepts=train_concepts, test_concepts=test_concepts, subject=sub,
        description=f"{description}, {sfreq:g} Hz", test_truth=(truth := read_truth(root / sub, test.shape, slice(first, None))),
        test_truth_components=read_truth_components(root / sub, truth, slice(first, None)),
        trial_context=read_trial_context(root / sub, train.shape, test.shape),
    ), tmin, tmax, sfreq_out)


def _epochs_candidates(root: Path, sub: str) -> list[Path]:
    """Where the epochs file may be: it is named by participant number (sub-01 -> P1)."""
    number = re.search(r"(\d+)$", sub)
    if number is None:
        return []
    name = EPOCHS_FILE.format(n=int(number.group(1)))
    return [root / sub / name, root / name]


def _check_ch_names(path: Path, ch_names: list[str]) -> list[str]:
    try:
        ctf_positions(ch_names)
    except ValueError as err:
        raise DataFormatError(f"{path}: 'ch_names' are not all {LAYOUT} sensors ({err})") from err
    return ch_names


# ------------------------------------------------------------------------------------------ ATM pickles


def _pickled_signals(path: Path, data, n_channels: int) -> np.ndarray:
    """(images, repetitions, channels, times) float32 from the file's array.

    Both ATM zero-shot files are 5-D (concepts, images per concept, repetitions, channels, times):
    training (1654, 12, 1, ...) holds 12 images of a concept seen once, test (200, 1, 12, ...) one
    image seen 12 times. So images are concepts x images per concept, in row-major order, for both.
    BrainFLORA's random split is 3-D (epochs, channels, times): every epoch a different image, seen
    once, sorted by concept (12 per concept), so each epoch is one image with one repetition.
    """
    data = np.asarray(data)
    if data.ndim not in (3, 5):
        raise DataFormatError(
            f"{path}: field 'meg_data' must be 5-D (concepts, images per concept, repetitions, channels, "
            f"times; ATM) or 3-D (epochs, channels, times; BrainFLORA), got shape {data.shape}"
        )
    if data.shape[-2] != n_channels:
        raise DataFormatError(f"{path}: the data has {data.shape[-2]} channels but 'ch_names' lists {n_channels}")
    check_finite(path, "meg_data", data)  # on the file's array, so the index is the file's
    data = data[:, None] if data.ndim == 3 else data.reshape(-1, *data.shape[2:])
    return to_float32(data)  # a block at a time: the training file is 8.6 GB of float64


def _read_meg_pickle(path: Path) -> dict:
    """A pickled dict with the data under 'meg_data' or 'preprocessed_meg_data', plus ch_names, times."""
    payload = read_pickled_dict(path, ("ch_names", "times"))
    key = next((k for k in DATA_KEYS if k in payload), None)
    if key is None:
        raise DataFormatError(f"{path}: missing the data field (one of {list(DATA_KEYS)}); found {sorted(payload)}")
    payload["meg_data"] = payload.pop(key)
    return payload


def _load_pickles(paths: dict[str, Path], image_root: Path) -> tuple[list[str], np.ndarray, dict, str]:
    payload = {split: _read_meg_pickle(path) for split, path in paths.items()}
    names = {s: [str(c) for c in payload[s]["ch_names"]] for s in paths}
    dims = {s: np.ndim(payload[s]["meg_data"]) for s in paths}
    signals = {s: _pickled_signals(paths[s], payload[s].pop("meg_data"), len(names[s])) for s in paths}
    if dims["training"] != dims["test"]:
        raise DataFormatError(
            f"{paths['test']}: a {dims['test']}-D array, but {paths['training']} holds a {dims['training']}-D one: "
            f"ATM's zero-shot files are both 5-D, BrainFLORA's random split both 3-D")
    if names["test"] != names["training"]:
        raise DataFormatError(f"{paths['test']}: 'ch_names' differ from those in {paths['training']}")
    ch_names = _check_ch_names(paths["training"], names["training"])
    n_times = signals["training"].shape[3]
    if signals["test"].shape[3] != n_times:
        raise DataFormatError(
            f"{paths['test']}: {signals['test'].shape[3]} time samples, but {paths['training']} has {n_times}")
    times = _align_times(paths["training"], payload["training"]["times"], n_times)
    splits = {s: (x, *_image_lists(image_root, s, len(x))) for s, x in signals.items()}
    kind = "random 200-concept split" if dims["training"] == 3 else "zero-shot split"
    return ch_names, times, splits, f"THINGS-MEG ATM pickles ({kind}, {len(ch_names)} CTF channels)"


# ------------------------------------------------------------------------------------------ MNE epochs


def _load_epochs(path: Path, image_root: Path) -> tuple[list[str], np.ndarray, dict, str]:
    """The official epochs file. Its metadata (sample_attributes_P{n}.csv) says, per epoch, the split
    ('trial_type': exp = training, test = test, catch = skipped), the image ('image_path', whose file
    name identifies the image) and its concept ('things_category_nr'; test paths are flat, so no folder
    names it). As in the ATM pickles, training images of the test images' concepts are left out
    (zero-shot test: 1654 of 1854 training concepts in the release), whatever the image folders hold
    besides. Rows follow the image folders' order (image_metadata.npy or sorted folders, as for the
    pickles); repetitions follow the epochs' order and must be equally many for every image of a split."""
    try:
        epochs = mne.read_epochs(path, preload=False, verbose="error")
    except Exception as err:  # MNE raises many types for a damaged or foreign file
        raise DataFormatError(f"{path}: cannot be read with mne.read_epochs ({err})") from err
    meta = epochs.metadata
    missing = [c for c in METADATA if meta is None or c not in meta.columns]
    if missing:
        found = [] if meta is None else list(meta.columns)
        raise DataFormatError(f"{path}: epochs metadata lacks column(s) {missing}; found {found}")
    picks = mne.pick_types(epochs.info, meg="mag", ref_meg=False)
    if len(picks) == 0:
        raise DataFormatError(f"{path}: no magnetometer channels among {epochs.ch_names[:5]} ...")
    ch_names = _check_ch_names(path, [epochs.ch_names[p] for p in picks])
    window = _window(path, epochs.times, epochs.info["sfreq"])
    splits = {}
    for split, trials in _trials_by_image(path, meta).items():
        images, concepts = _epochs_images(path, image_root, split, trials)
        index = _trial_matrix(path, split, trials, images)
        data = _read_trials(epochs, picks, window, index)
        check_finite(path, f"{split} epochs data", data)
        splits[split] = (data, images, concepts)
    return ch_names, epochs.times[window], splits, f"THINGS-MEG MNE epochs {path.name} ({len(ch_names)} CTF channels)"


def _epochs_images(path: Path, image_root: Path, split: str, trials: dict[str, list[int]]) -> tuple[list[Path], list[str]]:
    """The images of a split's epochs, in the image folders' row order, with their concepts. The folders
    may hold more (the THINGS database: every concept, the test concepts' training images and images
    no participant saw); the epochs say which are in the split, by file name, as they say which
    concepts are tested. Every image with epochs must be there, once."""
    listed, concepts = _image_lists(image_root, split, None)
    keep = [k for k, p in enumerate(listed) if p.name in trials]
    names = [listed[k].name for k in keep]
    if len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise DataFormatError(f"{image_folder(image_root, split)}: image {twice} is in two concept folders; "
                              f"{path.name} names its {split} images by file name")
    absent = sorted(set(trials) - set(names))
    if absent:
        raise DataFormatError(
            f"{path}: {len(absent)} {split} image(s) of its epochs are not in {image_folder(image_root, split)} "
            f"(metadata 'image_path'), e.g. {absent[0]}")
    if len(keep) < len(listed):
        log.info("%s: %d of the %d images listed have %s epochs in %s; the others (other concepts, the test "
                 "concepts' training images) are left out", image_folder(image_root, split), len(keep),
                 len(listed), split, path.name)
    return [listed[k] for k in keep], [concepts[k] for k in keep]


def _window(path: Path, times: np.ndarray, sfreq: float) -> np.ndarray:
    """Sample indices of WINDOW (to half a sample, so float times do not drop its last sample)."""
    half = 0.5 / sfreq
    if times[0] > WINDOW[0] + half or times[-1] < WINDOW[1] - half:
        raise DataFormatError(
            f"{path}: epochs span {times[0]:.3f}..{times[-1]:.3f} s; the loader needs {WINDOW[0]}..{WINDOW[1]} s")
    return np.flatnonzero((times > WINDOW[0] - half) & (times < WINDOW[1] + half))


def _trials_by_image(path: Path, meta) -> dict[str, dict[str, list[int]]]:
    """split -> image file name -> epoch indices, in epoch order (a test image's 12 repetitions are its
    12 sessions). Catch trials are skipped; training epochs of the test images' concepts are left out.

    The release's paths do not name a test image's concept by folder: training images are
    'images_meg/<concept>/<file>', test images 'images_test_meg/<file>' (flat) and catch trials
    'images_catch_meg/catchNNN.jpg'. So the concept is the metadata's CONCEPT_FIELD when present, else
    the file name without its exemplar suffix ('coat_rack_13s.jpg' -> 'coat_rack')."""
    kinds = [str(t).strip() for t in meta["trial_type"]]
    unknown = sorted(set(kinds) - set(TRIAL_TYPES) - set(SKIPPED_TRIAL_TYPES))
    if unknown:
        raise DataFormatError(
            f"{path}: metadata 'trial_type' has value(s) {unknown[:5]}; expected 'exp' (training), 'test' or "
            f"{', '.join(repr(t) for t in SKIPPED_TRIAL_TYPES)} (skipped)"
        )
    splits = [TRIAL_TYPES.get(t) for t in kinds]
    used = [i for i, s in enumerate(splits) if s is not None]
    paths = meta["image_path"].tolist()
    names = {}
    for i in used:
        if not isinstance(paths[i], str) or not paths[i].strip():
            raise DataFormatError(f"{path}: metadata 'image_path' of epoch {i} ({kinds[i]} trial) is {paths[i]!r}")
        names[i] = PurePosixPath(paths[i].strip().replace("\\", "/")).name
    concepts = _concepts(path, meta, used, names, kinds)
    test_concepts = {concepts[i] for i in used if splits[i] == "test"}
    trials: dict[str, dict[str, list[int]]] = {"training": {}, "test": {}}
    left_out = 0
    for i in used:
        if splits[i] == "training" and concepts[i] in test_concepts:
            left_out += 1
        else:
            trials[splits[i]].setdefault(names[i], []).append(i)
    if not trials["training"] or not trials["test"]:
        raise DataFormatError(f"{path}: metadata 'trial_type' must mark both 'exp' (training) and 'test' epochs")
    source = f"'{CONCEPT_FIELD}'" if CONCEPT_FIELD in meta.columns else "image file names"
    log.info("%s: %d training epochs of the %d test concepts left out (zero-shot test; concepts from %s); "
             "%d catch epochs skipped", path, left_out, len(test_concepts), source, len(kinds) - len(used))
    return trials


def _concepts(path: Path, meta, used: list[int], names: dict[int, str], kinds: list[str]) -> dict[int, object]:
    """Epoch index -> concept id for the exp and test epochs; one concept per image file."""
    if CONCEPT_FIELD in meta.columns:
        import pandas as pd  # MNE reads epochs metadata with pandas, so it is there when metadata is

        numbers = pd.to_numeric(meta[CONCEPT_FIELD], errors="coerce").to_numpy(dtype=float)
        bad = [i for i in used if not (np.isfinite(numbers[i]) and numbers[i] == np.round(numbers[i]))]
        if bad:
            i = bad[0]
            raise DataFormatError(
                f"{path}: metadata '{CONCEPT_FIELD}' of epoch {i} ({kinds[i]} trial, image {names[i]}) is "
                f"{meta[CONCEPT_FIELD].tolist()[i]!r}, not a concept number ({len(bad)} such exp/test epochs)"
            )
        concepts: dict[int, object] = {i: int(numbers[i]) for i in used}
    else:
        concepts = {i: names[i].rsplit(".", 1)[0].rsplit("_", 1)[0] for i in used}
    seen: dict[str, object] = {}
    for i in used:
        if seen.setdefault(names[i], concepts[i]) != concepts[i]:
            raise DataFormatError(
                f"{path}: metadata gives image {names[i]} two concepts ('{CONCEPT_FIELD}' "
                f"{seen[names[i]]!r} and {concepts[i]!r}, epoch {i})")
    return concepts


def _trial_matrix(path: Path, split: str, trials: dict[str, list[int]], images: list[Path]) -> np.ndarray:
    """(n_images, repetitions) epoch indices, rows in the order of `images`."""
    counts = {len(t) for t in trials.values()}
    if len(counts) > 1:
        raise DataFormatError(
            f"{path}: {split} images have {min(counts)} to {max(counts)} epochs each; the loader needs the same "
            f"number for every image of a split"
        )
    missing = [im for im in images if im.name not in trials]
    if missing:
        raise DataFormatError(f"{path}: image {missing[0]} has no {split} epochs (metadata 'image_path')")
    return np.array([trials[im.name] for im in images])


def _read_trials(epochs: mne.BaseEpochs, picks: np.ndarray, window: np.ndarray, index: np.ndarray) -> np.ndarray:
    """index (n_images, reps) -> float32 (n_images, reps, channels, times), a block of epochs at a time."""
    flat = index.ravel()
    out = np.empty((len(flat), len(picks), len(window)), np.float32)
    for start in range(0, len(flat), EPOCHS_PER_READ):
        rows = flat[start : start + EPOCHS_PER_READ]
        out[start : start + len(rows)] = epochs.get_data(picks=picks, item=rows, verbose="error")[..., window]
    return out.reshape(*index.shape, len(picks), len(window))
