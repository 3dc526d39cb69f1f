"""Seeded synthetic THINGS-EEG2-like (NICE format) or THINGS-MEG-like (ATM pickles) dataset.

Images are crops of the photos shipped inside scikit-image plus procedural patterns; the EEG or MEG is
what a small generative "brain" gives for them: a shared evoked response, early occipital components
driven by low-level image statistics, later occipito-temporal components driven by the concept and by
nonlinear feature combinations, subject-specific gains/latencies/topographies, 1/f noise, alpha bursts;
RSVP overlap for EEG. The modalities share the brain and the sources and differ in how they are
recorded (sensors, forward model, sampling, paradigm, noise, preprocessing, file format).
The model and its measured reliability are described in docs/synthetic-data.md.
"""
from __future__ import annotations

import json
import pickle
import shutil
import warnings
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import scipy.fft
import scipy.signal
import skimage
import skimage.io
from scipy import ndimage
from tqdm import tqdm

from prosthesis_sim.data.dataset import make_info
from prosthesis_sim.data.things_meg import FILES as MEG_FILES
from prosthesis_sim.data.things_meg import ctf_positions, tangent_frame, things_meg_channels

VERSION = 1
SFREQ = 250.0
N_TIMES = 250  # 0 .. 0.996 s, as in the NICE files
N_BASE = 50  # -0.2 .. 0 s, simulated for the baseline correction and then cropped
N_EPOCH = N_BASE + N_TIMES
RESPONSE_S = 1.2  # one image's response is simulated over 1.2 s; every component has decayed by then
SOA = 50  # RSVP at 5 Hz: a new image every 200 ms
NEIGHBOURS = (-4, -3, -2, -1, 1, 2, 3, 4)  # RSVP positions of the other images overlapping an epoch
NEIGHBOUR_GAIN = 0.5  # their responses' scale (calibration: at full scale they would cap reliability)
TRIALS_PER_CHUNK = 512  # trials simulated at once (bounds memory, whatever the dataset size)
N_REFERENCE = 256  # images that fix the brain's feature normalisation (never written out)

CH_NAMES = (
    "Fp1 Fp2 AF7 AF3 AFz AF4 AF8 F7 F5 F3 F1 F2 F4 F6 F8 FT9 FT7 FC5 FC3 FC1 FCz FC2 FC4 FC6 FT8 FT10 "
    "T7 C5 C3 C1 Cz C2 C4 C6 T8 TP9 TP7 CP5 CP3 CP1 CPz CP2 CP4 CP6 TP8 TP10 P7 P5 P3 P1 Pz P2 P4 P6 P8 "
    "PO7 PO3 POz PO4 PO8 O1 Oz O2"
).split()

PHOTOS = {  # file in skimage/data -> concept stem
    "astronaut.png": "astronaut", "chelsea.png": "cat", "coffee.png": "coffee_cup", "rocket.jpg": "rocket",
    "camera.png": "cameraman", "coins.png": "coins", "horse.png": "horse", "hubble_deep_field.jpg": "galaxies",
    "ihc.png": "tissue_stain", "motorcycle_left.png": "motorcycle", "retina.jpg": "retina",
    "brick.png": "brick_wall", "grass.png": "grass", "gravel.png": "gravel", "moon.png": "moon_surface",
    "page.png": "printed_page", "text.png": "handwriting", "color.png": "colour_wheel",
    "phantom.png": "head_phantom", "logo.png": "logo",
}
PATTERNS = ("grating", "checkerboard", "blobs", "shape")
SHAPES = ("disk", "square", "triangle", "ring", "cross")
PATTERN_SHARE = 0.25  # fraction of concepts that are procedural patterns rather than photo regions
IDENTITY = {"zoom": 1.0, "angle": 0.0, "shift": [0.0, 0.0], "flip": False, "gain": [1.0, 1.0, 1.0],
            "brightness": 0.0, "contrast": 1.0}  # the variant that renders a concept's prototype

STAT_NAMES = (
    "luminance", "contrast", "red_green", "blue_yellow", "saturation", "energy_low", "energy_mid",
    "energy_high", "horizontal_vs_vertical", "oblique", "energy_left", "energy_right", "energy_upper_vs_lower",
)
LAYOUT = 3  # the concept descriptor adds the prototype's LAYOUT x LAYOUT luminance layout

# Early, image-dependent sources: (anchor electrode, latency s, width s, weights on image statistics).
EARLY = (
    ("Oz", 0.085, 0.012, {"energy_upper_vs_lower": 1.0}),  # C1-like: polarity follows upper vs lower field
    ("Oz", 0.100, 0.014, {"contrast": 1.0, "energy_mid": 0.5}),  # P1 contrast gain
    ("O2", 0.100, 0.014, {"energy_left": 1.0}),  # left visual field -> right occipital cortex
    ("O1", 0.100, 0.014, {"energy_right": 1.0}),  # right visual field -> left occipital cortex
    ("POz", 0.115, 0.016, {"luminance": 1.0, "horizontal_vs_vertical": 0.5, "oblique": 0.5}),
    ("O1", 0.120, 0.016, {"red_green": 1.0, "saturation": 0.5}),
    ("O2", 0.120, 0.016, {"blue_yellow": 1.0, "saturation": 0.5}),
    ("POz", 0.125, 0.016, {"energy_high": 1.0, "energy_low": -0.7}),
)
# Late, concept-dependent sources: (anchor electrode, latency s, width s).
LATE = (
    ("P7", 0.175, 0.025), ("P8", 0.175, 0.025), ("PO7", 0.220, 0.035), ("PO8", 0.220, 0.035),
    ("TP7", 0.290, 0.045), ("TP8", 0.290, 0.045), ("P7", 0.380, 0.090), ("P8", 0.380, 0.090),
)
# Shared ERP (the same for every image): (anchor electrodes, latency s, width s, amplitude).
ERP = (
    (("O1", "O2"), 0.100, 0.015, 3.0),  # P1
    (("P7", "P8", "PO7", "PO8"), 0.165, 0.020, -4.0),  # N1
    (("POz", "Pz"), 0.240, 0.030, 2.4),  # P2
    (("Pz", "CPz"), 0.380, 0.080, 1.6),  # late positivity
)
EARLY_GAIN = 2.6  # amplitude of an early source for a 1-sd image statistic (noise sd is about 1)
LATE_CONCEPT_GAIN = 2.6  # late sources: concept part ...
LATE_IMAGE_GAIN = 1.0  # ... and nonlinear image-feature part
LATENCY_BY_CONTRAST = 0.008  # s: high-contrast images drive the early sources this much earlier
SOURCE_WIDTH = {"early": 0.028, "late": 0.032}  # m, spatial spread of a source's scalp topography
NOISE_LENGTH = 0.04  # m, correlation length of the 1/f sensor noise
PINK_SD, ALPHA_SD, WHITE_SD = 0.7, 2.0, 0.25

# MEG as the THINGS-MEG files hold it (official preprocessing, then ATM's crop to 0..1.0 s).
MEG_SFREQ = 200.0
MEG_N_TIMES = 201  # 0 .. 1.0 s
MEG_N_BASE = 20  # -0.1 .. 0 s: the official epochs' baseline (z-scored), simulated and then cropped
MEG_LOWPASS = 40.0  # Hz, the official band-pass's upper edge (its 0.1 Hz high-pass is moot within an epoch)
CORTEX_RADIUS = 0.07  # m from the head centre: depth of the MEG source dipoles
ORIENTATION_SD = np.radians(45)  # subject-specific turn of a dipole away from pointing to the vertex
N_NOISE_DIPOLES = 600  # background-activity dipoles spread over the cortical shell (MEG noise covariance)
MEG_PINK_SD, MEG_ALPHA_SD, MEG_WHITE_SD = 1.2, 3.3, 0.45


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
) -> Path:
    """Write a THINGS-EEG2-format (modality="eeg", NICE preprocessing) or THINGS-MEG-format
    (modality="meg", ATM-style pickles) dataset to `out` and return `out` as a Path.

    Layout: sub-XX/preprocessed_eeg_{training,test}.npy (pickled dicts) or
    sub-XX/preprocessed_meg_{training,zs_test}.pkl, images/{training,test}_images/,
    images/image_metadata.npy, synth.json (modality, arguments and generator version). Fully determined
    by the arguments; seed must be >= 0.
    """
    if min(n_subjects, n_train_concepts, images_per_concept, n_test, train_reps, test_reps) < 1 or image_size < 32:
        raise ValueError("synthesize: every count must be >= 1 and image_size >= 32")
    if modality not in RECORDINGS:
        raise ValueError(f"synthesize: modality must be one of {sorted(RECORDINGS)}, got {modality!r}")
    args = dict(out=str(out), n_subjects=n_subjects, n_train_concepts=n_train_concepts,
                images_per_concept=images_per_concept, n_test=n_test, train_reps=train_reps,
                test_reps=test_reps, image_size=image_size, seed=seed, progress=progress)
    out = Path(out)
    _prepare_out(out)

    concepts = _sample_concepts(_rng(seed, "concepts"), n_train_concepts + n_test)
    order = _rng(seed, "split").permutation(len(concepts))
    train = sorted((concepts[i] for i in order[:n_train_concepts]), key=lambda c: c["name"])
    test = sorted((concepts[i] for i in order[n_train_concepts:]), key=lambda c: c["name"])
    record = {"generator": "prosthesis_sim.data.synth", "version": VERSION, "modality": modality, "args": args,
              "complete": False, "train_concepts": train, "test_concepts": test}
    (out / "synth.json").write_text(json.dumps(record, indent=1))  # marks the folder as ours from the start

    with tqdm(total=len(train) * images_per_concept + len(test), desc="images", disable=not progress) as bar:
        *train_desc, train_folders, train_files = _write_images(
            out, "training", train, images_per_concept, "b", image_size, seed, bar)
        *test_desc, test_folders, test_files = _write_images(out, "test", test, 1, "s", image_size, seed, bar)
    np.save(out / "images" / "image_metadata.npy", {
        "train_img_concepts": train_folders, "train_img_files": train_files,
        "test_img_concepts": test_folders, "test_img_files": test_files})

    brain = _Brain(seed, image_size)
    rec = RECORDINGS[modality]()
    splits = (("training", brain.drives(*train_desc), train_reps, images_per_concept),
              ("test", brain.drives(*test_desc), test_reps, 1))
    n_images = sum(len(drives) for _, (drives, _), *_ in splits)
    with tqdm(total=n_subjects * n_images, desc=modality.upper(), disable=not progress) as bar:
        for s in range(n_subjects):
            subject = _Subject.sample(_rng(seed, "subject", s), rec)
            for split, (drives, lags), reps, per_concept in splits:
                data = _simulate_split(seed, s, split, subject, drives, lags, reps, bar)
                rec.write(out / f"sub-{s + 1:02d}", split, data, per_concept)
    tmp = out / "synth.json.tmp"
    tmp.write_text(json.dumps({**record, "complete": True}, indent=1))
    tmp.replace(out / "synth.json")  # only a finished run says complete: an interrupted one is redone
    return out


def is_complete(out: str | Path) -> bool:
    """True when ``out`` holds a synthetic dataset whose generation ran to the end."""
    try:
        return bool(json.loads((Path(out) / "synth.json").read_text()).get("complete"))
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def _rng(seed: int, *keys) -> np.random.Generator:
    """An independent stream per (seed, purpose, index ...), so each part is reproducible on its own."""
    ints = [k if isinstance(k, int) else zlib.crc32(str(k).encode()) for k in keys]
    return np.random.default_rng([seed, *ints])


def _prepare_out(out: Path) -> None:
    """Start clean: stale concept folders from a larger earlier run would silently join the dataset."""
    ours = [out / "images", *out.glob("sub-[0-9][0-9]")]
    if any(p.exists() for p in ours):
        if not (out / "synth.json").exists():
            raise FileExistsError(f"{out} holds data this generator did not write; choose another folder")
        for p in ours:
            shutil.rmtree(p)
    out.mkdir(parents=True, exist_ok=True)


# ----------------------------------------------------------------------------------------- images


@lru_cache(maxsize=None)
def _photo_pyramid(file: str) -> tuple[np.ndarray, ...]:
    """A skimage photo as RGB float32 in [0, 1] at successive halvings, so crops of any scale are
    sampled without aliasing. Read straight from skimage/data (the fetchers may try to download)."""
    img = skimage.io.imread(Path(skimage.__file__).parent / "data" / file).astype(np.float32) / 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.shape[-1] == 4:
        img = img[..., :3] * img[..., 3:] + (1 - img[..., 3:])  # transparent -> white
    levels = [np.ascontiguousarray(img)]
    while min(levels[-1].shape[:2]) > 64:
        levels.append(cv2.pyrDown(levels[-1]))
    return tuple(levels)


def _sample_concepts(rng: np.random.Generator, n: int) -> list[dict]:
    """n concepts with unique names: photo regions (centre and side in pixels), spread out over each
    photo by best-of-8 candidate sampling so no two regions coincide, plus procedural patterns."""
    taken: dict[str, list] = {}
    counts: dict[str, int] = {}
    concepts = []
    for _ in range(n):
        if rng.random() < PATTERN_SHARE:
            concept = _pattern_params(str(rng.choice(PATTERNS)), rng)
            stem = concept["kind"]
        else:
            file = str(rng.choice(sorted(PHOTOS)))
            concept = _photo_region(file, taken.setdefault(file, []), rng)
            stem = PHOTOS[file]
        counts[stem] = counts.get(stem, 0) + 1
        concepts.append({"name": f"{stem}_{counts[stem]:02d}", **concept})
    return concepts


def _photo_region(file: str, taken: list, rng: np.random.Generator) -> dict:
    """A square crop of the photo far (in normalised centre and log-scale) from the regions taken."""
    h, w = _photo_pyramid(file)[0].shape[:2]
    best, best_dist = None, -1.0
    for _ in range(8):
        frac = float(np.exp(rng.uniform(np.log(0.18), np.log(0.52))))
        side = frac * min(h, w)
        margin = 0.92 * side  # the most a variant reaches out (zoom, shift, rotation): no mirrored borders
        cx, cy = rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)
        key = np.array([cx / w, cy / h, np.log(frac)])
        dist = min((float(np.linalg.norm(key - t)) for t in taken), default=np.inf)
        if dist > best_dist:
            best, best_dist = (key, {"kind": "photo", "file": file, "centre": [cx, cy], "side": side}), dist
    taken.append(best[0])
    return best[1]


def _pattern_params(kind: str, rng: np.random.Generator) -> dict:
    """Parameters of a procedural concept; colours are RGB in [0, 1]."""
    params = {"kind": kind, "colours": rng.random((2, 3)).tolist()}
    if kind in ("grating", "checkerboard"):
        params.update(angle=rng.uniform(0, np.pi), freq=float(np.exp(rng.uniform(np.log(2), np.log(20)))),
                      sharp=rng.uniform(0.5, 6.0))
    elif kind == "blobs":
        k = int(rng.integers(3, 8))
        params.update(centres=rng.uniform(-0.8, 0.8, (k, 2)).tolist(), sigmas=rng.uniform(0.08, 0.35, k).tolist(),
                      blob_colours=rng.random((k, 3)).tolist())
    else:
        params.update(shape=str(rng.choice(SHAPES)), size=rng.uniform(0.3, 0.7), angle=rng.uniform(0, 2 * np.pi),
                      centre=rng.uniform(-0.3, 0.3, 2).tolist())
    return params


def _sample_variant(rng: np.random.Generator) -> dict:
    """An exemplar of a concept: crop jitter, zoom, flip, small rotation, colour/brightness jitter."""
    return {"zoom": float(np.exp(rng.uniform(np.log(0.75), np.log(1.33)))),
            "angle": float(np.clip(rng.normal(0, np.radians(8)), -np.radians(15), np.radians(15))),
            "shift": rng.uniform(-0.2, 0.2, 2).tolist(), "flip": bool(rng.random() < 0.5),
            "gain": (1 + rng.normal(0, 0.15, 3)).tolist(), "brightness": float(rng.normal(0, 0.1)),
            "contrast": float(np.exp(rng.normal(0, 0.3)))}


def _render(concept: dict, size: int, variant: dict) -> np.ndarray:
    """One (size, size, 3) float32 image in [0, 1]: the concept seen through the variant's jitter."""
    t = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    x, y = np.meshgrid(-t if variant["flip"] else t, t)
    c, s, z = np.cos(variant["angle"]), np.sin(variant["angle"]), variant["zoom"]
    x, y = (c * x - s * y) / z + variant["shift"][0], (s * x + c * y) / z + variant["shift"][1]
    if concept["kind"] == "photo":
        img = _sample_photo(concept, x, y, size / z)
    else:
        img = _pattern(concept, x, y)
    mean = img.mean()
    img = (img - mean) * variant["contrast"] + mean + variant["brightness"]
    return np.clip(img * np.asarray(variant["gain"], np.float32), 0, 1).astype(np.float32)


def _sample_photo(concept: dict, x: np.ndarray, y: np.ndarray, out_pixels: float) -> np.ndarray:
    """Bilinear sampling of the photo at concept coordinates (x, y in [-1, 1] span the crop), from the
    pyramid level whose pixels are about the size of an output pixel."""
    levels = _photo_pyramid(concept["file"])
    level = int(np.clip(np.floor(np.log2(concept["side"] / out_pixels)), 0, len(levels) - 1))
    scale, half = 2.0**level, concept["side"] / 2
    mx = ((concept["centre"][0] + x * half + 0.5) / scale - 0.5).astype(np.float32)
    my = ((concept["centre"][1] + y * half + 0.5) / scale - 0.5).astype(np.float32)
    return cv2.remap(levels[level], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def _pattern(p: dict, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A procedural concept evaluated at coordinates (x, y); soft edges keep it free of aliasing."""
    kind = p["kind"]
    if kind == "blobs":
        img = np.broadcast_to(np.float32(p["colours"][0]), x.shape + (3,)).copy()
        for (cx, cy), sig, col in zip(p["centres"], p["sigmas"], p["blob_colours"]):
            a = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sig**2))[..., None]
            img = img * (1 - a) + a * np.float32(col)
        return img
    c, s = np.cos(p["angle"]), np.sin(p["angle"])
    if kind == "shape":
        u, v = x - p["centre"][0], y - p["centre"][1]
        u, v = c * u + s * v, -s * u + c * v
        level = 2 / (1 + np.exp(_shape_distance(p["shape"], u, v, p["size"]) / 0.02)) - 1
    else:
        u, v = c * x + s * y, -s * x + c * y
        level = np.tanh(p["sharp"] * np.sin(np.pi * p["freq"] * u)) / np.tanh(p["sharp"])
        if kind == "checkerboard":
            level = level * np.tanh(p["sharp"] * np.sin(np.pi * p["freq"] * v)) / np.tanh(p["sharp"])
    c0, c1 = np.float32(p["colours"][0]), np.float32(p["colours"][1])
    return (c0 + (c1 - c0) * ((level + 1) / 2)[..., None]).astype(np.float32)


def _shape_distance(shape: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Signed distance-like function: negative inside the shape of radius r."""
    if shape == "disk":
        return np.hypot(u, v) - r
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.8 * r
    if shape == "triangle":
        return np.max([u * np.cos(a) + v * np.sin(a) for a in np.radians([90, 210, 330])], axis=0) - r / 2
    if shape == "ring":
        return np.abs(np.hypot(u, v) - r) - 0.2 * r
    arm = 0.25 * r  # cross: union of a vertical and a horizontal bar
    return np.minimum(np.maximum(np.abs(u) - arm, np.abs(v) - r), np.maximum(np.abs(v) - arm, np.abs(u) - r))


def _write_images(out: Path, split: str, concepts: list[dict], per_concept: int, suffix: str, size: int,
                  seed: int, bar) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Render and save one split's JPEGs. Returns, per image in row order, the brain's input (the
    descriptor of the image as shown and of its concept's prototype) and its folder and file name."""
    root = out / "images" / f"{split}_images"
    digits = max(2, len(str(per_concept)))
    shown, protos, folders, files = [], [], [], []
    for k, concept in enumerate(concepts):
        folder = root / f"{k + 1:05d}_{concept['name']}"
        folder.mkdir(parents=True)
        images = []
        for j in range(per_concept):
            img8 = np.round(_render(concept, size, _sample_variant(_rng(seed, "variant", split, k, j))) * 255)
            img8 = img8.astype(np.uint8)
            name = f"{concept['name']}_{j + 1:0{digits}d}{suffix}.jpg"
            cv2.imwrite(str(folder / name), cv2.cvtColor(img8, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
            images.append(img8.astype(np.float32) / 255)  # the brain sees the image as shown
            folders.append(folder.name)
            files.append(name)
            bar.update()
        shown.append(_descriptor(np.stack(images)))
        protos.append(_descriptor(_render(concept, size, IDENTITY)[None]).repeat(per_concept, axis=0))
    return np.concatenate(shown), np.concatenate(protos), folders, files


# --------------------------------------------------------------------------------- image statistics


def _descriptor(imgs: np.ndarray) -> np.ndarray:
    """(n, len(STAT_NAMES) + LAYOUT**2): low-level statistics of RGB images in [0, 1], then the coarse
    luminance layout. Plain numpy/FFT on purpose (not a Gabor bank, not a network), so the simulator
    is not a copy of any feature extractor the toolkit fits."""
    size = imgs.shape[1]
    r, g, b = np.moveaxis(imgs, -1, 0)
    lum = 0.299 * r + 0.587 * g + 0.114 * b
    dev = lum - lum.mean(axis=(1, 2), keepdims=True)
    window = np.hanning(size).astype(np.float32)
    power = np.abs(scipy.fft.fft2(dev * np.outer(window, window))) ** 2 / size**4
    f = scipy.fft.fftfreq(size, 1 / size)  # cycles per image
    fy, fx = np.meshgrid(f, f, indexing="ij")
    radius, total = np.hypot(fx, fy), power.sum(axis=(1, 2)) + 1e-12

    def mean(a):
        return a.mean(axis=(1, 2))

    def band(mask):
        return np.log((power * mask).sum(axis=(1, 2)) + 1e-8)

    local = (lum - ndimage.gaussian_filter(lum, (0, size / 32, size / 32))) ** 2  # local contrast energy
    half = size // 2
    stats = {
        "luminance": mean(lum), "contrast": lum.std(axis=(1, 2)),
        "red_green": mean(r - g), "blue_yellow": mean(b - (r + g) / 2),
        "saturation": mean(imgs.max(-1) - imgs.min(-1)),
        "energy_low": band((radius >= 1) & (radius < 4)), "energy_mid": band((radius >= 4) & (radius < 16)),
        "energy_high": band(radius >= 16),
        # horizontal structure puts energy on the vertical-frequency axis
        "horizontal_vs_vertical": (power * np.sign(np.abs(fy) - np.abs(fx))).sum(axis=(1, 2)) / total,
        "oblique": -(power * np.cos(4 * np.arctan2(fy, fx))).sum(axis=(1, 2)) / total,
        "energy_left": np.log(mean(local[:, :, :half]) + 1e-8),
        "energy_right": np.log(mean(local[:, :, half:]) + 1e-8),
        "energy_upper_vs_lower": np.log(mean(local[:, :half]) + 1e-8) - np.log(mean(local[:, half:]) + 1e-8),
    }
    stats = np.stack([stats[name] for name in STAT_NAMES], axis=1)
    layout = np.stack([cv2.resize(x, (LAYOUT, LAYOUT), interpolation=cv2.INTER_AREA).ravel() for x in lum])
    return np.concatenate([stats, layout - lum.mean(axis=(1, 2))[:, None]], axis=1).astype(np.float32)


# ----------------------------------------------------------------------------------------- the brain


class _Brain:
    """Population-level tuning shared by all subjects: how image and concept descriptors drive each
    source. Descriptors and drives are standardised on a fixed reference set of images, so an image's
    response does not depend on which other images are in the dataset."""

    def __init__(self, seed: int, size: int):
        rng = _rng(seed, "brain")
        n_stat, n_desc, n_late = len(STAT_NAMES), len(STAT_NAMES) + LAYOUT**2, len(LATE)
        hand = np.zeros((n_stat, len(EARLY)))
        for k, (_, _, _, weights) in enumerate(EARLY):
            for name, w in weights.items():
                hand[STAT_NAMES.index(name), k] = w
        self.early_w = hand + rng.normal(0, 0.3 / np.sqrt(n_stat), hand.shape)
        self.hidden_w = rng.normal(0, 1.5 / np.sqrt(n_desc), (n_desc, 24))  # concept net: tanh hidden layer
        self.hidden_b = rng.normal(0, 0.5, 24)
        self.concept_w = rng.normal(0, 1 / np.sqrt(24), (24, n_late))
        self.pairs = np.array([rng.choice(n_stat, 2, replace=False) for _ in range(4)])  # products
        self.thresh_idx, self.thresh = rng.choice(n_stat, 4, replace=False), rng.uniform(-0.5, 1.0, 4)
        self.proj = rng.normal(0, 1.5 / np.sqrt(n_stat), (n_stat, 4))  # tanh of random projections
        self.image_w = rng.normal(0, 1 / np.sqrt(12), (12, n_late))

        ref = _rng(seed, "reference")
        concepts = _sample_concepts(ref, N_REFERENCE // 2)
        shown = _descriptor(np.stack([_render(c, size, _sample_variant(ref)) for c in concepts for _ in range(2)]))
        protos = _descriptor(np.stack([_render(c, size, IDENTITY) for c in concepts])).repeat(2, axis=0)
        self.desc_mean, self.desc_sd = shown.mean(axis=0), shown.std(axis=0) + 1e-6
        raw = self._raw(shown, protos)
        self.raw_mean, self.raw_sd = raw.mean(axis=0), raw.std(axis=0) + 1e-6

    def _raw(self, shown: np.ndarray, protos: np.ndarray) -> np.ndarray:
        """Unstandardised drives: early (linear in image statistics), late concept (a random tanh
        network of the prototype's descriptor), late image (products, thresholds, tanh projections)."""
        u = ((shown - self.desc_mean) / self.desc_sd)[:, : len(STAT_NAMES)]
        p = (protos - self.desc_mean) / self.desc_sd
        concept = np.tanh(p @ self.hidden_w + self.hidden_b) @ self.concept_w
        nonlinear = np.concatenate([
            u[:, self.pairs[:, 0]] * u[:, self.pairs[:, 1]],
            np.maximum(u[:, self.thresh_idx] - self.thresh, 0),
            np.tanh(u @ self.proj),
        ], axis=1)
        return np.concatenate([u @ self.early_w, concept, nonlinear @ self.image_w], axis=1)

    def drives(self, shown: np.ndarray, protos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per image and source (EARLY then LATE): amplitude drive and latency change in seconds."""
        z = (self._raw(shown, protos) - self.raw_mean) / self.raw_sd
        n_early, n_late = len(EARLY), len(LATE)
        amp = np.concatenate([
            EARLY_GAIN * z[:, :n_early],
            LATE_CONCEPT_GAIN * z[:, n_early:n_early + n_late] + LATE_IMAGE_GAIN * z[:, n_early + n_late:],
        ], axis=1)
        contrast = (shown[:, 1] - self.desc_mean[1]) / self.desc_sd[1]
        lag = np.zeros_like(amp)
        lag[:, :n_early] = -LATENCY_BY_CONTRAST * np.tanh(contrast)[:, None]
        return amp.astype(np.float32), lag.astype(np.float32)


def _electrode_positions() -> np.ndarray:
    """(63, 3) head-frame positions in metres from MNE's standard_1005 montage (via make_info)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MNE renaming standard_1005; same positions
        info = make_info(CH_NAMES, SFREQ)
    return np.array([ch["loc"][:3] for ch in info["chs"]])


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


def _mix_channels(matrix: np.ndarray, x: np.ndarray) -> np.ndarray:
    """matrix (c, k) applied to x (n, k, t) -> (n, c, t) as one GEMM: numpy's batched matmul makes one
    small BLAS call per trial, which threaded OpenBLAS turns into a crawl on a busy machine."""
    return np.moveaxis(np.tensordot(matrix, x, axes=(1, 1)), 0, 1)


def _bump(t: np.ndarray, latency, width) -> np.ndarray:
    """Gaussian time course: every ERP component and source waveform is one."""
    return np.exp(-0.5 * ((t - latency) / width) ** 2)


def _write_pickle(path: Path, payload: dict) -> None:
    """Both datasets' files are raw pickles (protocol 4) of a dict."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(payload, f, protocol=4)


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

    def preprocess(self, x: np.ndarray) -> np.ndarray:
        x -= x[..., : self.n_base].mean(axis=-1, keepdims=True)
        return x[..., self.n_base :]

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

    def preprocess(self, x: np.ndarray) -> np.ndarray:
        """The official pipeline: low-pass, baseline z-score (mne.baseline.rescale, mode='zscore'), crop."""
        x = scipy.signal.sosfiltfilt(scipy.signal.butter(4, MEG_LOWPASS, fs=self.sfreq, output="sos"), x, axis=-1)
        base = x[..., : self.n_base]
        x = (x - base.mean(axis=-1, keepdims=True)) / base.std(axis=-1, keepdims=True)
        return x[..., self.n_base :].astype(np.float32)

    def write(self, folder: Path, split: str, data: np.ndarray, per_concept: int) -> None:
        """(concepts, images per concept, repetitions, channels, times), as ATM reshapes the epochs."""
        _write_pickle(folder / MEG_FILES[split], {
            "meg_data": data.reshape(-1, per_concept, *data.shape[1:]), "ch_names": list(self.ch_names),
            "times": np.round(np.arange(self.n_times) / self.sfreq, 3)})


def _eeg() -> _EEG:
    positions = _electrode_positions()
    return _EEG(CH_NAMES, positions, dict(zip(CH_NAMES, positions)), _noise_mixing(positions), SFREQ, N_BASE,
                N_TIMES, tuple(SOA * k for k in NEIGHBOURS), PINK_SD, ALPHA_SD, WHITE_SD)


def _meg() -> _MEG:
    """Sources sit under the same 10-05 anchors as for EEG (electrodes re-centred on their sphere)."""
    electrodes = _electrode_positions()
    ch_names = tuple(things_meg_channels())
    sensors = ctf_positions(ch_names)
    return _MEG(ch_names, sensors, dict(zip(CH_NAMES, electrodes - _sphere_centre(electrodes))),
                _meg_noise_mixing(sensors), MEG_SFREQ, MEG_N_BASE, MEG_N_TIMES, (), MEG_PINK_SD, MEG_ALPHA_SD,
                MEG_WHITE_SD)


RECORDINGS = {"eeg": _eeg, "meg": _meg}


@dataclass
class _Subject:
    """What makes one subject's recordings their own: source topographies (jittered positions), gains,
    latency shifts and an idiosyncratic mixing of drives, their ERP, alpha rhythm and noise level."""

    rec: _Recording
    topo: np.ndarray  # (n_channels, n_sources)
    latency: np.ndarray  # (n_sources,) s
    width: np.ndarray  # (n_sources,) s
    mixing: np.ndarray  # (n_sources, n_sources): drives -> source amplitudes
    erp: np.ndarray  # (n_channels, n_resp)
    alpha_topo: np.ndarray  # (n_channels,)
    alpha_freq: float
    noise_sd: float

    @classmethod
    def sample(cls, rng: np.random.Generator, rec: _Recording) -> "_Subject":
        shift = rng.normal(0, 0.007)  # the whole subject is a little faster or slower

        def place(anchor):
            return rec.anchors[anchor] + rng.normal(0, 0.007, 3)

        sources = [("early", a, lat, w) for a, lat, w, _ in EARLY] + [("late", a, lat, w) for a, lat, w in LATE]
        topo = np.stack([rec.topography(rng, place(a)[None], SOURCE_WIDTH[kind]) for kind, a, *_ in sources], 1)
        spread = np.array([0.005 if kind == "early" else 0.010 for kind, *_ in sources])
        latency = np.array([lat for *_, lat, _ in sources]) + np.clip(shift + rng.normal(0, spread), -0.02, 0.02)
        n = len(sources)
        mixing = (np.eye(n) + rng.normal(0, 0.5 / np.sqrt(n), (n, n))) * rng.lognormal(0, 0.35, n)
        t = np.arange(rec.n_resp) / rec.sfreq
        erp = sum(
            amp * rng.lognormal(0, 0.2) * np.outer(
                rec.topography(rng, np.stack([place(a) for a in anchors]), SOURCE_WIDTH["late"]),
                _bump(t, lat + shift + rng.normal(0, 0.005), w))
            for anchors, lat, w, amp in ERP)
        alpha_topo = rec.alpha_sd * rng.lognormal(0, 0.3) * rec.topography(rng, place("POz")[None], 0.05)
        return cls(rec, topo.astype(np.float32), latency, np.array([w for *_, w in sources]),
                   mixing.astype(np.float32), erp.astype(np.float32), alpha_topo.astype(np.float32),
                   float(rng.uniform(9, 11)), float(rng.lognormal(0, 0.1)))

    def responses(self, drives: np.ndarray, lags: np.ndarray) -> np.ndarray:
        """(n, n_channels, n_resp) noise-free responses (ERP + image-dependent sources) from onset."""
        t = np.arange(self.rec.n_resp, dtype=np.float32) / self.rec.sfreq
        waves = _bump(t, (self.latency + lags)[..., None], self.width[:, None]).astype(np.float32)
        return (_mix_channels(self.topo, (drives @ self.mixing)[..., None] * waves) + self.erp).astype(np.float32)


# ------------------------------------------------------------------------------------------ trials


def _simulate_split(seed: int, s: int, split: str, subject: _Subject, drives: np.ndarray, lags: np.ndarray,
                    reps: int, bar) -> np.ndarray:
    """(n_images, reps, n_channels, n_times) float32 single trials, simulated in chunks of trials."""
    n, rec = len(drives), subject.rec
    pool = None  # responses of the images that overlap as paradigm neighbours
    if rec.neighbours:
        pool_idx = _rng(seed, "rsvp", s, split).choice(n, min(n, 256), replace=False)
        pool = NEIGHBOUR_GAIN * subject.responses(drives[pool_idx], lags[pool_idx])
    data = np.empty((n, reps, len(rec.ch_names), rec.n_times), np.float32)
    per_chunk = max(1, TRIALS_PER_CHUNK // reps)
    for c, start in enumerate(range(0, n, per_chunk)):
        sl = slice(start, start + per_chunk)
        own = subject.responses(drives[sl], lags[sl])
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
