"""Scoring an image-to-brain encoder on a dataset's test split (definitions in metrics.py)."""
from __future__ import annotations

import time

import numpy as np

from .data.dataset import BrainDataset, load_image
from .metrics import signal_metrics, split_half_reliability


def load_test_images(data: BrainDataset) -> list[np.ndarray]:
    return [load_image(p) for p in data.test_images]


def evaluate_encoder(encoder, data: BrainDataset, images: list[np.ndarray] | None = None, seed: int = 0) -> dict:
    """Generate a signal for every test image and compare it with the measured test average."""
    norm = data.normalizer
    images = load_test_images(data) if images is None else images
    start = time.perf_counter()
    generated = encoder.generate(images, seed=seed, paths=data.test_images)
    seconds = time.perf_counter() - start
    out = signal_metrics(norm(generated), norm(data.test_average()))
    out["generate_s_per_image"] = seconds / len(images)
    return out


def noise_ceiling(data: BrainDataset, seed: int = 0) -> dict:
    norm = data.normalizer
    return split_half_reliability(norm(data.test_repetitions()), seed=seed)


def with_ceiling(metrics: dict, ceiling: dict) -> dict:
    return {**metrics, "pcc_fraction_of_ceiling": metrics["pcc"] / ceiling["noise_ceiling"]}
