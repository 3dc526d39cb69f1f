"""Conditional diffusion image-to-brain encoder: one training and sampling path for any denoiser.

The denoiser (``prosthesis_sim.encoders.dit.DiT`` or ``prosthesis_sim.encoders.unet.UNetDenoiser``) predicts the clean z-scored
signal (or the noise, or v) given the noisy signal, the step and the image features. Training: DDPM
forward process from diffusers' ``DDPMScheduler``, MSE on the prediction, AdamW, cosine schedule with warm-up, EMA weights,
optional condition dropout (for classifier-free guidance). With ``train.checkpoint_dir`` the full
training state (weights, EMA, optimiser, LR schedule, RNG, data order) is written atomically every
``train.checkpoint_every`` steps, and a rerun resumes exactly where it stopped. Under torchrun the
training runs data-parallel (DDP, ``prosthesis_sim.distributed``): every process takes its slice of
the same global batch, so the result does not depend on the number of processes. Token arrays over
``STREAM_TOKENS_BYTES`` stay memory-mapped and are read per batch. ``prediction_type`` picks what the
denoiser predicts: the clean signal x0 by default (``sample``, as the configs and docs/encoders.md say:
a patch wider than the hidden width cannot carry white noise), or epsilon (the paper's loss), or v. Sampling: any
diffusers scheduler made from the training scheduler's config (DDIM by default), with
``timestep_spacing="trailing"`` (the first step at t = T-1), built once per encoder and sampler and
used the way diffusers' pipelines use it; every image draws its noise from a generator of its own,
so its sample depends on the seed and the image only (``generate_from_features``). fp16 autocast on
CUDA, float32 on CPU.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from diffusers import DDPMScheduler
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.utils.torch_utils import randn_tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from prosthesis_sim import distributed
from prosthesis_sim.checkpoint import atomic_write
from prosthesis_sim.data.dataset import Normalizer
from prosthesis_sim.features.cache import cached_features, features_for_images
from prosthesis_sim.features.progress import progress
from prosthesis_sim.noise import apply_spectral, spectral_whitening, zca_whitening

from .diffusion_parts import (SAMPLER_OPTIONS, SAMPLERS, _mean_std, _region_ids, _sensor_positions,  # noqa: F401
                              image_generators, optimizer_step, set_timesteps)
from .residual import residual_gain, validation_split

log = logging.getLogger(__name__)
# encoder.whiten: the DiT models its target as is (false), ZCA-whitened (spatial; true, as before) or
# whitened per frequency with the training cross-spectra (spectral; prosthesis_sim.noise)
WHITENINGS = {"false": None, "none": None, "true": "spatial", "spatial": "spatial", "spectral": "spectral"}

# Token arrays larger than this stay memory-mapped during training and are read batch by batch
# (CLIP ViT-L/14 tokens of the 16,540 THINGS-EEG2 training images take 17 GB); smaller ones are
# standardised once and kept on the device.
STREAM_TOKENS_BYTES = 2 << 30

VALIDATION_SAMPLES = 8  # draws averaged into the residual mean when residual_gain='auto' sets the gain
# How the sampler spreads its steps over the training timesteps (diffusers' ``timestep_spacing``).
# "trailing" starts at t = T-1 for any number of steps (Lin et al. 2024, "Common diffusion noise
# schedules and sample steps are flawed"); "leading" (the training scheduler's default) starts at
# T - T/steps + 1, far from pure noise with few steps (t=750 for 4 steps, 500 for 2).
TIMESTEP_SPACINGS = ("trailing", "leading", "linspace")


class DiffusionEncoder:
    """Image -> M/EEG by conditional diffusion. ``denoiser`` is a partial taking the data's shapes."""

    # Constructor arguments that leave the fitted weights unchanged (fit caches ignore them, see
    # prosthesis_sim.checkpoint.fit_key): how to sample, where to run (device and fp16 change rounding
    # only) and where training checkpoints go (a resumed run ends bit-identical). ``seed`` is not
    # listed: it also seeds training.
    not_fitted = ("sampler", "sampling_steps", "trial_steps", "trial_start", "timestep_spacing", "guidance_scale", "n_samples", "sample_batch_size",
                  "device", "fp16", "train.checkpoint_dir", "train.checkpoint_every", "train.resume")

    def __init__(
        self,
        denoiser: Callable[..., torch.nn.Module],
        features,
        inputs: str = "tokens",
        train: dict | None = None,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "squaredcos_cap_v2",
        prediction_type: str = "sample",
        sampler: str = "ddim",
        sampling_steps: int = 25,
        trial_steps: int = 25,
        trial_start: float = 1.0,
        timestep_spacing: str = "trailing",
        guidance_scale: float = 1.0,
        n_samples: int = 1,
        sample_batch_size: int = 64,
        seed: int = 0,
        device: str = "auto",
        fp16: bool = True,
        mean_model=None,
        residual_gain: float | str = 1.0,
        validation_fraction: float = 0.1,
        whiten: bool | str = False,
    ):
        if sampler not in SAMPLERS:
            raise ValueError(f"encoder.sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
        if prediction_type not in ("epsilon", "sample", "v_prediction"):
            raise ValueError(f"encoder.prediction_type must be epsilon, sample or v_prediction, got {prediction_type!r}")
        if timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"encoder.timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {timestep_spacing!r}")
        if residual_gain != "auto" and not (isinstance(residual_gain, (int, float)) and residual_gain >= 0):
            raise ValueError(f"encoder.residual_gain must be 'auto' or a number >= 0, got {residual_gain!r}")
        if residual_gain == "auto" and mean_model is None:
            raise ValueError("encoder.residual_gain='auto' validates what the diffusion adds to encoder.mean_model; "
                             "set a mean_model (e.g. encoder=dit_residual) or a number")
        if inputs not in ("tokens", "pooled"):
            raise ValueError(f"encoder.inputs must be 'tokens' or 'pooled', got {inputs!r}")
        check = getattr(getattr(denoiser, "func", None), "check_settings", None)  # a partial config
        if check is not None:  # a bad model size fails now, not after hours of feature extraction
            check(**denoiser.keywords)
        self.make_denoiser, self.features, self.inputs = denoiser, features, inputs
        self.train_cfg = {"epochs": 50, "batch_size": 64, "lr": 3e-4, "weight_decay": 1e-5, "warmup_steps": 100,
                          "ema_decay": 0.995, "cond_dropout": 0.1, "grad_clip": 1.0,
                          "checkpoint_dir": None, "checkpoint_every": 0, "resume": True, **dict(train or {})}
        self.noise_scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule, clip_sample=False,
            prediction_type=prediction_type,
        )
        self.sampler, self.sampling_steps, self.guidance_scale = sampler, sampling_steps, guidance_scale
        self.trial_steps = trial_steps
        if not 0 < float(trial_start) <= 1:
            raise ValueError(f"encoder.trial_start must be in (0, 1] (a fraction of the noise schedule), got {trial_start!r}")
        self.trial_start = float(trial_start)
        self.timestep_spacing = timestep_spacing
        self._samplers: dict[tuple[str, str], object] = {}  # (sampler, timestep_spacing) -> scheduler, built once
        self.n_samples, self.sample_batch_size, self.seed = n_samples, sample_batch_size, seed
        self.device = distributed.local_device(device)
        self.amp = fp16 and self.device.type == "cuda"
        self.model: torch.nn.Module | None = None
        self.history: list[float] = []
        # Regression plus diffusion (CorrDiff, Mardani et al. 2024): a deterministic model of the
        # conditional mean (e.g. encoders.ridge.RidgeEncoder, fitted first on the same data) and
        # diffusion on what it leaves, scaled to unit variance. The mean is never worse than the
        # regression's; the diffusion adds what regression cannot (trial variability, non-linear
        # structure). None: diffusion on the signal itself.
        self.mean_model = mean_model
        self.residual_scale = 1.0
        # The share of the diffusion's residual mean in the expected response (encoders/residual.py):
        # a number, or 'auto': decided on held-out training concepts (validation_fraction of them, left
        # out of the diffusion's training), so ridge + g * residual is no worse than ridge where it counts.
        self.residual_gain_setting, self.validation_fraction = residual_gain, float(validation_fraction)
        self.residual_gain = 1.0 if residual_gain == "auto" else float(residual_gain)
        self.gain_validation: dict = {}
        # Spatial whitening of the diffusion target (ZCA with its Ledoit-Wolf training covariance),
        # undone after sampling: the network's errors are then relative to each spatial direction's
        # own variance, so low-variance directions of the measured noise are not swamped by them.
        # 'spectral': per frequency, with the training cross-spectra (prosthesis_sim.noise.spectral_whitening).
        if str(whiten).lower() not in WHITENINGS:
            raise ValueError(f"encoder.whiten must be one of {sorted(WHITENINGS)}, got {whiten!r}")
        self.whiten = WHITENINGS[str(whiten).lower()]
        # whitened -> target space: (channels, channels) real (spatial) or (freqs, channels, channels) complex
        self.colour: np.ndarray | None = None

    # -- conditioning -------------------------------------------------------------------------------
    def _cond(self, feats) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardise features with training statistics; 'pooled' makes the pooled vector the only token."""
        pooled = (feats.pooled - self.pooled_mean) / self.pooled_std
        tokens = pooled[:, None] if self.inputs == "pooled" else (feats.tokens - self.token_mean) / self.token_std
        return self._tensor(tokens), self._tensor(pooled)

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32, device=self.device)

    def _read_tokens(self, tokens: np.ndarray, img: torch.Tensor) -> torch.Tensor:
        """Standardised tokens of the images ``img`` read from a (memory-mapped) array, in ``img`` order."""
        unique, inverse = np.unique(img.cpu().numpy(), return_inverse=True)
        block = self._tensor((np.asarray(tokens[unique]) - self.token_mean) / self.token_std)
        return block[torch.as_tensor(inverse, device=self.device)]

    def _build(self, n_channels: int, n_times: int, n_tokens: int, token_dim: int, pooled_dim: int,
               region_ids: list[int] | None = None, sensor_positions: list[list[float]] | None = None) -> None:
        self.dims = {"n_channels": n_channels, "n_times": n_times, "n_tokens": n_tokens,
                     "token_dim": token_dim, "pooled_dim": pooled_dim, "region_ids": region_ids}
        if sensor_positions is not None and "sensor_positions" in inspect.signature(self.make_denoiser).parameters:
            self.dims["sensor_positions"] = sensor_positions  # saved with the weights, so a load rebuilds it
        self.model = self.make_denoiser(**self.dims).to(self.device)

    def build_untrained(self, n_channels: int, n_times: int, n_tokens: int, token_dim: int, pooled_dim: int,
                        norm: Normalizer, region_ids: list[int] | None = None,
                        sensor_positions: list[list[float]] | None = None) -> None:
        """A ready-to-sample encoder of the given shapes with its initial weights and identity feature
        statistics, without data: for speed benchmarks (bench/gpu.py) and smoke tests, which need the
        real sampling path at real sizes, not a fitted model. ``n_tokens`` / ``token_dim`` are the
        conditioning tokens as the denoiser sees them (with ``inputs='pooled'``: 1 x pooled_dim)."""
        raw_dim = token_dim if self.inputs == "tokens" else 1
        self.token_mean, self.token_std = np.zeros(raw_dim, np.float32), np.ones(raw_dim, np.float32)
        self.pooled_mean, self.pooled_std = np.zeros(pooled_dim, np.float32), np.ones(pooled_dim, np.float32)
        self.norm = norm
        self._build(n_channels, n_times, n_tokens, token_dim, pooled_dim, region_ids, sensor_positions)
        self.model.eval()

    def diffusion_loss(self, net: torch.nn.Module, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                       tokens: torch.Tensor, pooled: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """The training loss of one batch: ``x0`` noised to step ``t``, the denoiser's prediction (under
        fp16 autocast where the encoder uses it) against the prediction type's target. ``fit`` uses it;
        so does bench/gpu.py's training-step timing."""
        xt = self.noise_scheduler.add_noise(x0, noise, t)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            pred = net(xt, t, tokens, pooled).float()
        return torch.nn.functional.mse_loss(pred, self._target(x0, noise, t), reduction=reduction)

    # -- training -----------------------------------------------------------------------------------
    def fit(self, data) -> None:
        ctx, joined = distributed.setup(self.device)
        try:
            self._fit(data, ctx)
        finally:
            distributed.teardown(joined)

    def _fit(self, data, ctx: distributed.Context) -> None:
        cfg = self.train_cfg
        torch.manual_seed(self.seed)
        if self.mean_model is not None:
            self.mean_model.fit(data)  # first: what it reads decides whether tokens are loaded
        with ctx.main_first():  # one process fills the feature cache, the others read it
            feats = cached_features(self.features, data.train_images, data.cache_dir,
                                    tokens=self.needs_tokens(), progress=ctx.main)
        mean_z = self._mean_of(feats) if self.mean_model is not None else None
        # Cached features are memory-mapped; only what the conditioning uses is read into memory, and
        # token arrays over STREAM_TOKENS_BYTES not even that: they are read per batch.
        raw = feats.tokens if self.inputs == "tokens" else np.zeros((len(feats), 1, 1), np.float32)
        stream = raw.nbytes > STREAM_TOKENS_BYTES
        if not stream:
            raw = np.asarray(raw)
        self.token_mean, self.token_std = _mean_std(raw, STREAM_TOKENS_BYTES)
        feats = type(feats)(raw, np.asarray(feats.pooled))
        self.pooled_mean, self.pooled_std = feats.pooled.mean(0), feats.pooled.std(0) + 1e-6
        self.norm = data.normalizer
        n_img, n_rep, n_ch, n_t = data.train.shape
        rows, held = np.arange(n_img), None  # images the diffusion trains on; held out to set the gain
        if self.residual_gain_setting == "auto":
            rows, held = validation_split(data.train_concepts, n_img, self.validation_fraction, self.seed)
        target = self.norm(data.train[rows])
        if mean_z is not None:
            target = target - mean_z[rows, None]
            self.residual_scale = float(target.std()) or 1.0
            target = target / self.residual_scale
            log.info("residual diffusion: %s leaves a residual of std %.3f (z units)",
                     type(self.mean_model).__name__, self.residual_scale)
        if self.whiten == "spatial":
            white, self.colour = zca_whitening(target)
            target = np.einsum("ij,nrjt->nrit", white, target).astype(np.float32)
        elif self.whiten == "spectral":
            white, self.colour = spectral_whitening(target)
            target = apply_spectral(white, target)
        y = torch.as_tensor(target.reshape(len(rows) * n_rep, n_ch, n_t), device=self.device)
        if stream:
            pooled = self._tensor((feats.pooled - self.pooled_mean) / self.pooled_std)
            tokens_of = lambda img: self._read_tokens(raw, img)
            n_tokens, token_dim = raw.shape[1:]
        else:
            tokens, pooled = self._cond(feats)
            tokens_of = lambda img: tokens[img]
            n_tokens, token_dim = tokens.shape[1:]
        img_index = torch.as_tensor(rows, device=self.device).repeat_interleave(n_rep)
        self._build(n_ch, n_t, n_tokens, token_dim, pooled.shape[-1], _region_ids(data.ch_names),
                    _sensor_positions(data.info))
        model = self.model.train()
        # DDP averages the gradients of the processes; the unwrapped model is what is saved and averaged.
        # static_graph: the same parameters are used every step, and some never are (e.g. the pooled
        # projection of a cross-attention-only DiT), which plain DDP refuses.
        ddp = model if ctx.world == 1 else torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None, static_graph=True)
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg["ema_decay"]))
        opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        steps_per_epoch = math.ceil(len(y) / cfg["batch_size"])
        total = cfg["epochs"] * steps_per_epoch
        sched = get_cosine_schedule_with_warmup(opt, min(cfg["warmup_steps"], total // 10), total)
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        T = self.noise_scheduler.config.num_train_timesteps
        state_path = Path(cfg["checkpoint_dir"]) / "train_state.pt" if cfg.get("checkpoint_dir") else None
        fingerprint = self._fingerprint(data)
        step, epoch0, batch0, order = 0, 0, 0, None
        self.history = []
        started, before = time.perf_counter(), 0.0  # training seconds of earlier sessions of a resumed run
        if state_path is not None and cfg.get("resume", True) and state_path.is_file():
            st = torch.load(state_path, map_location=self.device, weights_only=False)
            if st["fingerprint"] != fingerprint:
                raise ValueError(f"{state_path} holds a training run with other settings or data; delete it, "
                                 "point train.checkpoint_dir elsewhere, or set train.resume=false")
            model.load_state_dict(st["model"])
            ema.load_state_dict(st["ema"])
            opt.load_state_dict(st["opt"])
            sched.load_state_dict(st["sched"])
            if st["scaler"]:  # empty when saved without fp16 (on CPU): the scaler starts afresh
                scaler.load_state_dict(st["scaler"])
            gen.set_state(st["gen"].cpu())  # map_location moved it to the device; generators take CPU bytes
            step, epoch0, batch0, order, self.history = st["step"], st["epoch"], st["batch"], st["order"], st["history"]
            before = float(st.get("train_seconds", 0.0))  # states written before it was recorded: unknown, 0
            log.info("resuming from %s at step %d of %d", state_path, step, total)

        def save_state(epoch: int, batch: int) -> None:
            state = {"fingerprint": fingerprint, "model": model.state_dict(), "ema": ema.state_dict(),
                     "opt": opt.state_dict(), "sched": sched.state_dict(), "scaler": scaler.state_dict(),
                     "gen": gen.get_state(), "step": step, "epoch": epoch, "batch": batch, "order": order,
                     "history": self.history, "train_seconds": before + time.perf_counter() - started}
            atomic_write(state_path, lambda tmp: torch.save(state, tmp))

        # a bar on a terminal, log lines in a log file (a cluster job would otherwise show nothing)
        bar = progress(total, f"train {type(model).__name__}", "step", enabled=ctx.main, initial=step)
        self.rank_samples = 0  # signals this process trained on (a 1/world share of each batch)
        for epoch in range(epoch0, cfg["epochs"]):
            if epoch != epoch0 or order is None:
                order = torch.randperm(len(y), generator=gen).to(self.device)
            for batch in range(batch0 if epoch == epoch0 else 0, steps_per_epoch):
                idx = order[batch * cfg["batch_size"] : (batch + 1) * cfg["batch_size"]]
                n = len(idx)  # the global batch: every process draws its numbers (one stream), keeps its slice
                noise = torch.randn((n, n_ch, n_t), generator=gen)
                t = torch.randint(0, T, (n,), generator=gen)
                drop = torch.rand(n, generator=gen) < cfg["cond_dropout"]
                mine = slice(ctx.rank, None, ctx.world)
                # a batch with fewer signals than processes leaves some empty: they run the first
                # signal with weight 0 (every process must take part; fp16 kernels refuse batch 0)
                weight = 1.0 if len(idx[mine]) else 0.0
                mine = mine if weight else slice(0, 1)
                idx = idx[mine]
                noise, t, drop = (a[mine].to(self.device) for a in (noise, t, drop))
                x0, img = y[idx], img_index[idx]
                tok, pool = tokens_of(img), pooled[img]
                tok = torch.where(drop[:, None, None], torch.zeros_like(tok), tok)
                pool = torch.where(drop[:, None], torch.zeros_like(pool), pool)
                self.rank_samples += len(idx) if weight else 0
                if ctx.world == 1:
                    loss = self.diffusion_loss(ddp, x0, noise, t, tok, pool)
                else:  # DDP averages gradients over processes: scale so that equals the global batch mean
                    loss = (self.diffusion_loss(ddp, x0, noise, t, tok, pool, reduction="sum")
                            * (weight * ctx.world / (n * n_ch * n_t)))
                optimizer_step(loss, model, opt, scaler, sched, ema, cfg["grad_clip"])
                self.history.append(distributed.mean_over_processes(loss, ctx).item())
                step += 1
                bar.set_postfix(epoch=f"{epoch + 1}/{cfg['epochs']}", loss=f"{np.mean(self.history[-50:]):.4f}")
                bar.update()
                if state_path is not None and cfg.get("checkpoint_every") and step % cfg["checkpoint_every"] == 0:
                    if ctx.main:
                        save_state(epoch, batch + 1)
        bar.close()
        if state_path is not None and ctx.main:
            save_state(cfg["epochs"], 0)
        self.world_size = ctx.world
        self.train_seconds = before + time.perf_counter() - started  # every session of a resumed run
        self.model.load_state_dict(ema.module.state_dict())
        self.model.eval()
        if held is not None:
            self._set_gain(feats, data, held)

    def _set_gain(self, feats, data, held: np.ndarray) -> None:
        """``residual_gain='auto'``: the gain of the residual mean (its one-step estimate, averaged over
        VALIDATION_SAMPLES draws) against the held-out images' measured residuals from the mean model's
        leave-one-out predictions (encoders/residual.py)."""
        loo = getattr(self.mean_model, "held_out_predictions", None)
        if loo is None:
            raise ValueError(f"residual_gain='auto' needs a mean_model with held_out_predictions() (predictions of "
                             f"each training image by a fit without it); {type(self.mean_model).__name__} has none")
        observed = self.norm(data.train_average()[held]) - loo()[held]
        predicted = self.residual_scale * self._coloured(
            self._samples(feats[held], self.seed, None, VALIDATION_SAMPLES, steps=1).mean(axis=1))
        self.gain_validation = {"held_out_images": int(len(held)), **residual_gain(predicted, observed)}
        self.residual_gain = self.gain_validation["gain"]
        v = self.gain_validation
        log.info("residual gain %.3f (held-out images %d: r %.3f [%.3f, %.3f], MSE %.4f -> %.4f)", self.residual_gain,
                 len(held), v["r"], *v["r_ci"], v["mse_regression"], v["mse_with_gain"])

    def _fingerprint(self, data) -> str:
        """What a resumed run must share with the run it continues: settings, shapes and data."""
        keep = {k: v for k, v in self.train_cfg.items() if k not in ("checkpoint_dir", "checkpoint_every", "resume")}
        # skip private keys: "_use_default_values" is a set, listed in a different order by each process
        sched = {k: v for k, v in self.noise_scheduler.config.items() if not k.startswith("_")}
        text = json.dumps([keep, sched, self.dims, self.inputs, self.seed, self.residual_gain_setting,
                           self.validation_fraction,
                           self.features.cache_id, data.signature()], sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()

    def _target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        kind = self.noise_scheduler.config.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "sample":
            return x0
        return self.noise_scheduler.get_velocity(x0, noise, t)

    # -- sampling -----------------------------------------------------------------------------------
    def make_sampler(self, steps: int | None = None, start: float = 1.0):
        """The scheduler for the current ``sampler`` and ``timestep_spacing``, set to ``steps``
        (``sampling_steps`` by default).

        Built once per encoder and setting (``from_config`` of the training scheduler, whose betas and
        prediction type it shares) and kept; like a diffusers pipeline, each sampling pass calls
        ``set_timesteps``, which also resets the multistep state (DPM-Solver++'s history). One pass at a
        time: two threads sampling with one encoder would share that state.
        """
        key = (self.sampler, self.timestep_spacing)
        if key not in self._samplers:
            if self.sampler not in SAMPLERS:
                raise ValueError(f"encoder.sampler must be one of {sorted(SAMPLERS)}, got {self.sampler!r}")
            self._samplers[key] = SAMPLERS[self.sampler].from_config(
                self.noise_scheduler.config, timestep_spacing=self.timestep_spacing,
                **SAMPLER_OPTIONS.get(self.sampler, {}))
        sampler = self._samplers[key]
        set_timesteps(sampler, self.sampler, int(self.sampling_steps if steps is None else steps), start,
                      self.noise_scheduler.config.num_train_timesteps, self.device)
        return sampler

    def _noise_keys(self, feats) -> list[bytes]:
        """Per image: a digest of the features the model is conditioned on (a function of the image alone)."""
        keys = []
        for i in range(len(feats)):
            h = hashlib.sha1(np.ascontiguousarray(feats.pooled[i], dtype=np.float32).tobytes())
            if self.inputs == "tokens":
                h.update(np.ascontiguousarray(feats.tokens[i], dtype=np.float32).tobytes())
            keys.append(h.digest())
        return keys

    def generate_from_features(self, feats, seed: int | None = None, keys: Sequence | None = None) -> np.ndarray:
        """Signals (n, channels, times): the mean of ``n_samples`` samples per image.

        Noise: every image has a generator of its own, seeded from (``seed``, its key), and draws its
        initial noise (and DDPM's step noise) from it with ``randn_tensor``; the key is by default a
        digest of the image's features. An image's signal therefore depends on the seed, the image and
        the sampling settings only: not on its position, the other images of the call, or
        ``sample_batch_size`` (up to float rounding of batched kernels). ``keys`` (one hashable per
        image) replaces the digest, e.g. to give different images the same noise.

        In the loop (``prosthesis_sim.loop``: one frame per call, a fixed seed, no keys) every frame
        draws the noise of its own features: a frame equal to a test image gets exactly that image's
        evaluated signal, and an unchanged scene an unchanged signal, while a changed frame gets fresh
        noise (averaged over ``n_samples``). One noise for every frame is a call with ``keys=[0]``.
        """
        if self.mean_model is not None and self.residual_gain == 0.0:
            return self.norm.inverse(self._mean_of(feats))  # validated gain 0: the regression's mean, no sampling
        z = self._coloured(self._samples(feats, seed, keys, self.n_samples).mean(axis=1))
        if self.mean_model is not None:
            z = self._mean_of(feats) + self.residual_gain * self.residual_scale * z
        return self.norm.inverse(z)

    def sample_trials_from_features(self, feats, n_trials: int, seed: int | None = None,
                                    keys: Sequence | None = None) -> np.ndarray:
        """Single trials (n_images, n_trials, channels, times): ``n_trials`` samples per image, not
        averaged (with ``mean_model``, its prediction plus each residual sample). The noise follows the
        rules of ``generate_from_features``; trial r of an image is its r-th sample. With a residual gain
        g != 1 the samples are moved by (g - 1) x the residual mean estimate of ``generate``, so the
        trials vary around the expected response that ``generate`` returns."""
        z = self._coloured(self._samples(feats, seed, keys, int(n_trials), steps=self.trial_steps,
                                         start=self.trial_start))
        if self.mean_model is not None:
            if self.residual_gain != 1.0:
                z = z + (self.residual_gain - 1.0) * self._coloured(
                    self._samples(feats, seed, keys, self.n_samples).mean(axis=1))[:, None]
            z = self._mean_of(feats)[:, None] + self.residual_scale * z
        return self.norm.inverse(z)

    def sample_trials(self, images: Sequence[np.ndarray], n_trials: int, seed: int | None = None, paths=None,
                      cache_dir=None) -> np.ndarray:
        """Single trials of images (optional encoder method, ``prosthesis_sim.protocols``)."""
        feats = features_for_images(self.features, images, paths=paths, tokens=self.needs_tokens(),
                                    cache_dir=cache_dir, progress=cache_dir is not None)
        return self.sample_trials_from_features(feats, n_trials, seed)

    @torch.inference_mode()
    def _samples(self, feats, seed: int | None, keys: Sequence | None, n: int, steps: int | None = None,
                 start: float = 1.0) -> np.ndarray:
        """n z-scored samples per image: (n_images, n, channels, times), n of an image in one batch."""
        if self.model is None:
            raise RuntimeError("DiffusionEncoder.generate called before fit() or load")
        seed = self.seed if seed is None else seed
        keys = self._noise_keys(feats) if keys is None else list(keys)
        if len(keys) != len(feats):
            raise ValueError(f"generate: {len(keys)} noise keys for {len(feats)} images")
        out = []
        per_batch = max(1, self.sample_batch_size // n)
        for first in range(0, len(feats), per_batch):
            tokens, pooled = self._cond(feats[first : first + per_batch])
            gens = image_generators(seed, keys[first : first + per_batch], n)
            # all n samples of every image in one batch: one pass of the sampler, not n
            x = self._sample(tokens.repeat_interleave(n, 0), pooled.repeat_interleave(n, 0), gens, steps, start)
            out.append(x.reshape(len(tokens), n, *x.shape[1:]).float().cpu().numpy())
        return np.concatenate(out)

    def _coloured(self, z: np.ndarray) -> np.ndarray:
        """Undo the target's whitening (``whiten``); channels are the second-to-last axis."""
        if self.colour is None:
            return z
        if self.whiten == "spectral":
            return apply_spectral(self.colour, z)
        return np.einsum("ij,...jt->...it", self.colour, z).astype(np.float32)

    def _mean_of(self, feats) -> np.ndarray:
        """The mean model's z-scored prediction (n, channels, times) for these features."""
        return np.asarray(self.mean_model.predict(feats), dtype=np.float32)

    def _guided(self) -> bool:
        """Whether the sampler runs the unconditional pass: guidance 1 is the conditional model alone."""
        return self.guidance_scale != 1.0

    def _sample(self, tokens: torch.Tensor, pooled: torch.Tensor, gens: list[torch.Generator],
                steps: int | None = None, start: float = 1.0) -> torch.Tensor:
        """One sampler pass over a batch; ``gens`` holds one generator per row (``image_generators``).

        Classifier-free guidance (Ho & Salimans 2022): eps = uncond + s (cond - uncond), where uncond is
        the model given the null condition, the zero vector for both tokens and pooled vector, which is
        what training puts in place of the condition with probability ``train.cond_dropout``. Why a zero
        vector rather than a learned null token (DiT's extra label embedding): the features are
        standardised with training statistics, so zero is the mean training image, a point the
        network can tell apart from any real image and learns the unconditional prediction at; a
        learned vector would be one more input embedding for a continuous condition whose first
        projection can already map the constant to whatever it needs. It also works unchanged for
        every denoiser (DiT and the diffusers UNet) and keeps every saved model valid.
        Guidance 1 skips the unconditional pass (the conditional-only path).
        """
        sampler = self.make_sampler(steps, start)
        shape = (len(tokens), self.dims["n_channels"], self.dims["n_times"])
        x = randn_tensor(shape, generator=gens, device=self.device, dtype=torch.float32) * sampler.init_noise_sigma
        guided = self._guided()
        if guided:
            tokens = torch.cat([torch.zeros_like(tokens), tokens])
            pooled = torch.cat([torch.zeros_like(pooled), pooled])
        for t in sampler.timesteps:
            xin = sampler.scale_model_input(torch.cat([x, x]) if guided else x, t)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                eps = self.model(xin, t.expand(len(xin)), tokens, pooled).float()
            if guided:
                uncond, cond = eps.chunk(2)
                eps = uncond + self.guidance_scale * (cond - uncond)
            # the step's own noise (stochastic samplers) from the images' generators, where the scheduler takes one
            # (diffusers pipelines' prepare_extra_step_kwargs)
            extra = {"generator": gens} if "generator" in inspect.signature(sampler.step).parameters else {}
            x = sampler.step(eps, t, x, **extra).prev_sample
        return x

    def network_evaluations(self, steps: int | None = None) -> int:
        """Network passes per sample: one per step, two with classifier-free guidance (on one batch)."""
        steps = int(self.sampling_steps if steps is None else steps)
        return steps * (2 if self._guided() else 1)

    def generate(self, images: Sequence[np.ndarray], seed: int | None = None, paths=None,
                 keys: Sequence | None = None, cache_dir=None) -> np.ndarray:
        """Signals of images; see ``generate_from_features`` for the noise each image draws. With
        ``paths`` and ``cache_dir`` (a dataset's test images) the features are cached like the
        training features, so evaluating again does not run the extractor."""
        feats = features_for_images(self.features, images, paths=paths, tokens=self.needs_tokens(),
                                    cache_dir=cache_dir, progress=cache_dir is not None)
        return self.generate_from_features(feats, seed, keys)

    def needs_tokens(self) -> bool:
        """Token sequences are computed when the denoiser or the mean model reads them."""
        mean_tokens = getattr(self.mean_model, "needs_tokens", lambda: False)() if self.mean_model is not None else False
        return self.inputs == "tokens" or bool(mean_tokens)

    # -- persistence --------------------------------------------------------------------------------
    def state(self):
        arrays = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        arrays.update(self.norm.state_dict())
        arrays.update(token_mean=self.token_mean, token_std=self.token_std,
                      pooled_mean=self.pooled_mean, pooled_std=self.pooled_std)
        meta = {"dims": self.dims, "final_loss": float(np.mean(self.history[-50:])) if self.history else None}
        if self.mean_model is not None:
            mean_arrays, mean_meta = self.mean_model.state()
            arrays.update({f"mean_model.{k}": v for k, v in mean_arrays.items()})
            meta.update(mean_model=mean_meta, residual_scale=self.residual_scale, residual_gain=self.residual_gain,
                        gain_validation=self.gain_validation)
        if self.whiten == "spatial":
            arrays["colour"] = self.colour
        elif self.whiten == "spectral":  # safetensors holds no complex numbers
            arrays.update(colour_re=self.colour.real.copy(), colour_im=self.colour.imag.copy())
        if hasattr(self, "world_size"):  # how the last fit() ran: processes, and signals seen by the main one
            meta.update(train_processes=self.world_size, rank_samples=self.rank_samples)
        return arrays, meta

    def load_state(self, arrays, meta) -> None:
        self.norm = Normalizer.from_state_dict(arrays)
        for k in ("token_mean", "token_std", "pooled_mean", "pooled_std"):
            setattr(self, k, arrays[k])
        if self.mean_model is not None:
            if "mean_model" not in meta:
                raise ValueError("this diffusion encoder has a mean_model, but the saved weights were fitted without one")
            self.mean_model.load_state({k.removeprefix("mean_model."): v for k, v in arrays.items()
                                        if k.startswith("mean_model.")}, meta["mean_model"])
            self.residual_scale = float(meta["residual_scale"])
            self.residual_gain = float(meta.get("residual_gain", 1.0))  # saved before the gain existed: 1
            self.gain_validation = dict(meta.get("gain_validation", {}))
        saved = "spatial" if "colour" in arrays else "spectral" if "colour_re" in arrays else None
        if self.whiten != saved:
            raise ValueError(f"encoder.whiten={self.whiten or False}, but the saved weights were fitted with "
                             f"whiten={saved or False}")
        self.colour = (None if saved is None else np.asarray(arrays["colour"], np.float32) if saved == "spatial"
                       else (np.asarray(arrays["colour_re"]) + 1j * np.asarray(arrays["colour_im"])).astype(np.complex64))
        self._build(**meta["dims"])
        self.model.load_state_dict(
            {k.removeprefix("model."): torch.as_tensor(v) for k, v in arrays.items() if k.startswith("model.")})
        self.model.eval()
