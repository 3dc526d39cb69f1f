"""The diffusion encoder's parts that need no encoder: per-image noise generators, the samplers and their
(truncated) timesteps, the denoiser's sensor inputs from mne.Info, and the optimiser step that ``fit``
takes (and bench/gpu.py times).
``encoders.diffusion`` re-exports them; the whitening of its targets is ``prosthesis_sim.noise``'s."""
from __future__ import annotations

import hashlib
import inspect
from typing import Sequence

import numpy as np
import torch
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       UniPCMultistepScheduler)

from prosthesis_sim.data.regions import region_ids
from prosthesis_sim.features.progress import progress

STAT_CHUNK = 64  # images per chunk when computing statistics of a streamed array


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


SAMPLERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpmsolver++": DPMSolverMultistepScheduler,
            "sde-dpmsolver++": DPMSolverMultistepScheduler, "unipc": UniPCMultistepScheduler,
            "euler_ancestral": EulerAncestralDiscreteScheduler}
#: settings a sampler name adds to its scheduler's config (the stochastic DPM-Solver++ of Lu et al. 2022)
SAMPLER_OPTIONS = {"sde-dpmsolver++": {"algorithm_type": "sde-dpmsolver++"}}


def set_timesteps(sampler, name: str, steps: int, start: float, num_train_timesteps: int, device) -> None:
    """``steps`` timesteps from T (``start`` 1, the scheduler's own spacing), or a truncated reverse
    process from ``start`` x T (Zheng et al. 2023, TDPM): for a spectrally whitened target, close to white
    Gaussian, the marginal at every noise level is close to N(0, I), so a sampler may start low and its
    few steps only correct what is not Gaussian. Trailing spacing within [0, start x T)."""
    if start >= 1.0:
        sampler.set_timesteps(steps, device=device)
        return
    if "timesteps" not in inspect.signature(sampler.set_timesteps).parameters:
        raise ValueError(f"encoder.trial_start < 1 needs a sampler that takes custom timesteps (dpmsolver++, "
                         f"sde-dpmsolver++, ddpm), not {name!r}")
    top = start * num_train_timesteps
    timesteps = np.unique(np.round(np.arange(top, 0, -top / steps)).astype(int) - 1)[::-1]
    sampler.set_timesteps(timesteps=[int(t) for t in timesteps], device=device)


def _mean_std(tokens: np.ndarray, in_memory_bytes: int = 2 << 30) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over images and tokens, per feature; in chunks (float64 sums) for streamed arrays."""
    if tokens.nbytes <= in_memory_bytes:
        return tokens.mean((0, 1)), tokens.std((0, 1)) + 1e-6
    total, squares = np.zeros(tokens.shape[-1]), np.zeros(tokens.shape[-1])
    with progress(len(tokens), "token statistics", "img") as bar:
        for start in range(0, len(tokens), STAT_CHUNK):
            block = np.asarray(tokens[start : start + STAT_CHUNK], dtype=np.float64)
            total += block.sum((0, 1))
            squares += np.square(block, out=block).sum((0, 1))
            bar.update(len(block))
    count = len(tokens) * tokens.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0))
    return mean.astype(np.float32), (std + 1e-6).astype(np.float32)


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
