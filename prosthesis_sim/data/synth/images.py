"""The synthetic stimuli: concepts (photo regions of scikit-image's sample photos, procedural patterns),
their jittered exemplars, and the JPEG files in the THINGS image layout."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import skimage
import skimage.io

from .common import _rng
from .retinotopy import field_activations, make_cells
from .stats import _descriptor

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
                  seed: int, bar) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]:
    """Render and save one split's JPEGs. Returns, per image in row order, the brain's input (the
    descriptor of the image as shown and of its concept's prototype, and the visual-field activations of
    the image as shown) and its folder and file name."""
    root = out / "images" / f"{split}_images"
    cells = make_cells()
    digits = max(2, len(str(per_concept)))
    shown, protos, fields, folders, files = [], [], [], [], []
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
        fields.append(field_activations(np.stack(images), cells))
        protos.append(_descriptor(_render(concept, size, IDENTITY)[None]).repeat(per_concept, axis=0))
    return np.concatenate(shown), np.concatenate(protos), np.concatenate(fields), folders, files

