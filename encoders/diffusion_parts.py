"""The diffusion encoder's parts that need no encoder: per-image noise generators, the denoiser's sensor
inputs from mne.Info, and the optimiser step that ``fit`` takes (and bench/gpu.py times).
``encoders.diffusion`` re-exports them; the whitening of its targets is ``prosthesis_sim.noise``'s."""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import torch

from prosthesis_sim.data.regions import region_ids


def image_generators(seed: int, keys: Sequence, n_samples: int) -> list[torch.Generator]:
    """One CPU generator per image, seeded from (``seed``, the image's key), repeated ``n_samples`` times
    in a row: the list ``randn_tensor`` takes for a batch of ``len(keys) * n_samples`` samples (image-major).
    The n samples of an image draw one after another from its generator, so what an image draws does
    not depend on the images sampled with it."""
    gens = []
    for key in keys:
        digest = hashlib.sha256(f"{int(seed)}:".encode() + (key if isinstance(key, bytes) else repr(key).encode()))
        gen = torch.Generator(device="cpu").manual_seed(int.from_bytes(digest.digest()[:8], "little") >> 1)
        gens.extend([gen] * n_samples)
    return gens


def _sensor_positions(info) -> list[list[float]] | None:
    """Each channel's position (m) from the dataset's mne.Info; None when a channel has none."""
    xyz = np.array([ch["loc"][:3] for ch in info["chs"]], dtype=np.float64)
    if not np.isfinite(xyz).all() or (np.abs(xyz).sum(axis=1) == 0).any():
        return None
    return np.round(xyz, 6).tolist()


def _region_ids(ch_names: list[str]) -> list[int] | None:
    """Brain region per channel for region position encodings; None when a name has no known region."""
    try:
        return region_ids(ch_names)
    except ValueError:
        return None


def optimizer_step(loss: torch.Tensor, model: torch.nn.Module, opt, scaler, sched, ema, grad_clip: float) -> None:
    """One optimiser step as ``fit`` takes it: scaled backward, gradient clipping, AdamW through the
    GradScaler, the learning-rate schedule and the EMA update (bench/gpu.py times the same step)."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(opt)
    scaler.update()
    sched.step()
    ema.update_parameters(model)
