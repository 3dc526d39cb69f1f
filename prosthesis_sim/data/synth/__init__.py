"""Seeded synthetic THINGS-EEG2-like (NICE format) or THINGS-MEG-like (ATM pickles) dataset.

Images are crops of the photos shipped inside scikit-image plus procedural patterns (``images``); the
EEG or MEG is what a small generative "brain" gives for them: a shared evoked response, retinotopic
early visual sources (``retinotopy``: C1 from V1/V2 placed by a cortical map, contralateral P1 and N1),
early occipital components driven by low-level image statistics (``stats``), later occipito-temporal
components driven by the concept and by nonlinear feature combinations (``brain``), subject-specific
gains/latencies/topographies (``subject``), 1/f noise, alpha bursts and RSVP overlap for EEG
(``trials``). The modalities share the brain and the sources and differ in how they are recorded
(``recording``: sensors, forward model, sampling, paradigm, noise, preprocessing, file format).
The model and its measured reliability are described in docs/synthetic-data.md.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .brain import EARLY, LATE, N1_PEAK, SOURCE_WIDTH, _Brain
from .common import _rng
from .images import _sample_concepts, _write_images
from .recording import RECORDINGS
from .retinotopy import RetinotopicSources, calibrate
from .semantics import CategorySources, SemanticBrain
from .subject import _Subject
from .trials import _simulate_split

VERSION = 3  # 2: retinotopic sources (retinotopy=False: version 1); 3: semantics, adaptation, state (all 0: version 2)
STRUCTURE = {"semantic": 0.0, "adaptation": 0.0, "state_gain": 0.0, "noise_gain": 1.0}  # version 3's knobs and
# their version-2 values; recorded in synth.json only when set otherwise
from ..dataset import COMPONENTS_FILE, TRIALS_FILE, TRUTH_FILE  # the truth, by component; each trial's context


def version_for(args: dict) -> int:
    """The generator version that data written with ``args`` carries: the oldest that wrote the same."""
    if any(args.get(k, v) != v for k, v in STRUCTURE.items()):
        return 3
    return 2 if args.get("retinotopy", True) else 1


def synthesize(
    out,
    n_subjects=2,
    n_train_concepts=50,
    images_per_concept=8,
    n_test=50,
    train_reps=4,
    test_reps=24,
    image_size=128,
    seed=0,
    progress=True,
    modality="eeg",
    retinotopy=True,
    retinotopy_gain=1.0,
    test_split="random",
    semantic=0.0,
    adaptation=0.0,
    state_gain=0.0,
    noise_gain=1.0,
) -> Path:
    """Write a THINGS-EEG2-format (modality="eeg", NICE preprocessing) or THINGS-MEG-format
    (modality="meg", ATM-style pickles) dataset to `out` and return `out` as a Path.

    Layout: sub-XX/preprocessed_eeg_{training,test}.npy (pickled dicts) or
    sub-XX/preprocessed_meg_{training,zs_test}.pkl, images/{training,test}_images/,
    images/image_metadata.npy, synth.json (modality, arguments and generator version). Fully determined
    by the arguments; seed must be >= 0. A run that was interrupted resumes in the same folder with the same
    arguments: the images and every finished subject are kept (``synth.json``'s ``done``), the rest is
    made. ``retinotopy=False`` leaves out the retinotopic sources and
    reproduces the version-1 dataset; ``retinotopy_gain`` scales their published strengths (a
    sensitivity knob: 1 is the calibrated brain). ``test_split="first"``: the first ``n_test`` concepts of
    the seed's concept stream are the test concepts and the next ``n_train_concepts`` the training ones
    (the stream does not depend on its length), so datasets that differ only in ``n_train_concepts``
    share their test images, trials and truth, and a smaller training set is a subset of a larger one
    (learning curves, bench/learning_curve.py); ``"random"`` (default) splits by a seeded permutation.

    Version 3's structure (docs/synthetic-data.md; all 0, the default, writes version 2's data):
    ``semantic`` scales the semantic latent and the category-selective components (``semantics``; 1 is
    the published strength); ``adaptation`` (EEG RSVP only, in [0, 1)) is the repetition suppression of
    a response right after an identical image; ``state_gain`` how much a trial's alpha state lowers its
    evoked response (``trials._trials``); ``noise_gain`` scales every noise source of the single trials
    (1/f, alpha, sensor), the calibration knob of the single-trial SNR. With adaptation or state_gain,
    ``sub-XX/synthetic_trials_*.npz`` holds each trial's preceding image and alpha state.
    """
    if min(n_subjects, n_train_concepts, images_per_concept, n_test, train_reps, test_reps) < 1 or image_size < 32:
        raise ValueError("synthesize: every count must be >= 1 and image_size >= 32")
    if retinotopy_gain < 0:
        raise ValueError(f"synthesize: retinotopy_gain must be >= 0, got {retinotopy_gain}")
    if min(semantic, state_gain) < 0 or not 0 <= adaptation < 1 or noise_gain <= 0:
        raise ValueError(f"synthesize: semantic and state_gain must be >= 0, adaptation in [0, 1) and noise_gain > 0, "
                         f"got {semantic}, {state_gain}, {adaptation}, {noise_gain}")
    if test_split not in ("random", "first"):
        raise ValueError(f"synthesize: test_split must be 'random' or 'first', got {test_split!r}")
    if modality not in RECORDINGS:
        raise ValueError(f"synthesize: modality must be one of {sorted(RECORDINGS)}, got {modality!r}")
    args = dict(out=str(out), n_subjects=n_subjects, n_train_concepts=n_train_concepts,
                images_per_concept=images_per_concept, n_test=n_test, train_reps=train_reps,
                test_reps=test_reps, image_size=image_size, seed=seed, progress=progress,
                retinotopy=bool(retinotopy), retinotopy_gain=float(retinotopy_gain))
    if test_split != "random":  # recorded only when set, so datasets written before the option still match
        args["test_split"] = test_split
    for key, value in zip(STRUCTURE, (semantic, adaptation, state_gain, noise_gain)):
        if value != STRUCTURE[key]:  # likewise: version-2 datasets keep matching their arguments
            args[key] = float(value)
    out = Path(out)
    resumed = _resumable(out, args, modality)
    if resumed is None:
        _prepare_out(out)

    concepts = _sample_concepts(_rng(seed, "concepts"), n_train_concepts + n_test)
    if test_split == "first":
        order = np.r_[np.arange(n_test, len(concepts)), np.arange(n_test)]
    else:
        order = _rng(seed, "split").permutation(len(concepts))
    train = sorted((concepts[i] for i in order[:n_train_concepts]), key=lambda c: c["name"])
    test = sorted((concepts[i] for i in order[n_train_concepts:]), key=lambda c: c["name"])
    record = {"generator": "prosthesis_sim.data.synth", "version": version_for(args), "modality": modality, "args": args,
              "complete": False, "train_concepts": train, "test_concepts": test,
              "done": (resumed or {}).get("done", {"images": False, "subjects": []})}
    _write_record(out, record)  # marks the folder as ours from the start

    inputs = out / INPUTS_FILE  # the brain's inputs of every image: what a resumed run needs of the images
    if record["done"]["images"] and inputs.is_file():
        train_desc, train_fields, test_desc, test_fields = _load_inputs(inputs)
    else:
        shutil.rmtree(out / "images", ignore_errors=True)  # an interrupted run's partial images
        with tqdm(total=len(train) * images_per_concept + len(test), desc="images", disable=not progress) as bar:
            *train_desc, train_fields, train_folders, train_files = _write_images(
                out, "training", train, images_per_concept, "b", image_size, seed, bar)
            *test_desc, test_fields, test_folders, test_files = _write_images(
                out, "test", test, 1, "s", image_size, seed, bar)
        np.save(out / "images" / "image_metadata.npy", {
            "train_img_concepts": train_folders, "train_img_files": train_files,
            "test_img_concepts": test_folders, "test_img_files": test_files})
        _save_inputs(inputs, train_desc, train_fields, test_desc, test_fields)
        record["done"]["images"] = True
        _write_record(out, record)

    brain = _Brain(seed, image_size)
    rec = RECORDINGS[modality]()
    test_parts, _ = brain.drive_parts(*test_desc)  # the test drives by component, for the per-component truth
    train_names = [c["name"] for c in train for _ in range(images_per_concept)]
    test_names = [c["name"] for c in test]
    train_drives, test_drives = brain.drives(*train_desc), brain.drives(*test_desc)
    attrs = {"training": None, "test": None}
    if semantic:  # the semantic latent adds to the late sources' drive; the attributes drive the category sources
        sem = SemanticBrain(seed, len(LATE))

        def semantic_part(names):
            part = np.zeros((len(names), len(EARLY) + len(LATE)), np.float32)
            part[:, len(EARLY):] = semantic * sem.late_drive(names)
            return part

        test_parts["semantic"] = semantic_part(test_names)
        train_drives = (train_drives[0] + semantic_part(train_names), train_drives[1])
        test_drives = (test_drives[0] + test_parts["semantic"], test_drives[1])
        attrs = {"training": semantic * sem.attributes(train_names), "test": semantic * sem.attributes(test_names)}
    splits = (("training", train_drives, train_reps, images_per_concept, train_fields),
              ("test", test_drives, test_reps, 1, test_fields))
    n_images = sum(len(drives) for _, (drives, _), *_ in splits)
    scale = None
    if retinotopy:  # strengths from the population template, so each subject's anatomy varies around them
        template = RetinotopicSources.build(rec.forward, rec.posterior, rec.scalp_radius)
        scale = {k: retinotopy_gain * v for k, v in calibrate(template, n1_amplitude=N1_PEAK, sfreq=rec.sfreq).items()}
    todo = [s for s in range(n_subjects) if s + 1 not in record["done"]["subjects"]]
    with tqdm(total=len(todo) * n_images, desc=modality.upper(), disable=not progress) as bar:
        for s in range(n_subjects):
            subject = _Subject.sample(_rng(seed, "subject", s), rec)
            if retinotopy:
                subject.retino = RetinotopicSources.build(
                    rec.forward, rec.posterior, rec.scalp_radius, _rng(seed, "retinotopy", s)).scaled(scale)
            if semantic:
                subject.category = CategorySources.sample(_rng(seed, "category", s), rec, N1_PEAK,
                                                          SOURCE_WIDTH["late"])
            if s not in todo:  # written by an earlier, interrupted run (each subject's rng is its own)
                continue
            for split, (drives, lags), reps, per_concept, fields in splits:
                data, truth, components, context = _simulate_split(
                    seed, s, split, subject, drives, lags, reps, bar, fields if retinotopy else None,
                    truth=split == "test", parts=test_parts if split == "test" else None, attrs=attrs[split],
                    adaptation=adaptation if modality == "eeg" else 0.0, state_gain=state_gain, noise_gain=noise_gain)
                folder = out / f"sub-{s + 1:02d}"
                if truth is not None:
                    atomic_save_npy(folder / TRUTH_FILE, truth)
                    atomic_save_npz(folder / COMPONENTS_FILE, components)
                if context is not None:
                    atomic_save_npz(folder / TRIALS_FILE.format(split=split), context, keep_dtype=True)
                rec.write(folder, split, data, per_concept)
                del data
            record["done"]["subjects"].append(s + 1)
            _write_record(out, record)
    inputs.unlink(missing_ok=True)
    tmp = out / "synth.json.tmp"
    tmp.write_text(json.dumps({**record, "complete": True}, indent=1))
    tmp.replace(out / "synth.json")  # only a finished run says complete: an interrupted one is redone
    return out


INPUTS_FILE = ".synth_inputs.npz"  # removed when the dataset is complete


def _write_record(out: Path, record: dict) -> None:
    tmp = out / "synth.json.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(out / "synth.json")


def _resumable(out: Path, args: dict, modality: str) -> dict | None:
    """The record of an interrupted run with the same arguments in ``out`` (its images and finished
    subjects are kept and the rest is done), else None (the folder is started afresh)."""
    try:
        record = json.loads((out / "synth.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    same = {k: v for k, v in record.get("args", {}).items() if k != "progress"} == \
        {k: v for k, v in args.items() if k != "progress"}
    if record.get("complete") or not same or record.get("modality") != modality or "done" not in record \
            or record.get("version") != version_for(args):
        return None
    return record


def _save_inputs(path: Path, train_desc, train_fields, test_desc, test_fields) -> None:
    arrays = {"train_shown": train_desc[0], "train_protos": train_desc[1], "train_fields": train_fields,
              "test_shown": test_desc[0], "test_protos": test_desc[1], "test_fields": test_fields}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    tmp.replace(path)


def _load_inputs(path: Path):
    with np.load(path) as f:
        return ((f["train_shown"], f["train_protos"]), f["train_fields"], (f["test_shown"], f["test_protos"]),
                f["test_fields"])


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array, dtype=np.float32))
    tmp.replace(path)


def atomic_save_npz(path: Path, arrays: dict[str, np.ndarray], keep_dtype: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **{k: np.ascontiguousarray(v, dtype=None if keep_dtype else np.float32) for k, v in arrays.items()})
    tmp.replace(path)


def is_complete(out: str | Path, version: int | None | str = "current") -> bool:
    """True when ``out`` holds a synthetic dataset whose generation ran to the end, written by generator
    ``version`` (None: any; "current": the version this generator gives its recorded arguments), so a
    dataset from an older generator is made again rather than reused."""
    try:
        record = json.loads((Path(out) / "synth.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    if version == "current":
        version = version_for(record.get("args", {}))
    return bool(record.get("complete")) and (version is None or record.get("version") == version)


def _prepare_out(out: Path) -> None:
    """Start clean: stale concept folders from a larger earlier run would silently join the dataset."""
    ours = [out / "images", *out.glob("sub-[0-9][0-9]")]
    if any(p.exists() for p in ours):
        if not (out / "synth.json").exists():
            raise FileExistsError(f"{out} holds data this generator did not write; choose another folder")
        for p in ours:
            shutil.rmtree(p)
    out.mkdir(parents=True, exist_ok=True)

