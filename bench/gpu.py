"""The GPU path in one command: per-stage loop latency, throughput and training-step time of the
default DiT and the paper models, in fp32, fp16 and compiled with CUDA graphs.

Usage: python bench/gpu.py [--tiny] [--device cuda|cpu|auto] [--json FILE] [--md FILE] [--only NAME ...]
                           [--budget-s S] [--reps N] [--threads N] [--cpu-compile eager|inductor]

A speed bench, not a quality one: every model has random weights of the right shapes and nothing
is fitted or downloaded. The models are built from the repository's own classes and configs
(configs/encoder/*.yaml: denoiser sizes, scheduler, samples, guidance, sample batch size), and the
stages run through the same calls the loop makes (``prosthesis_sim.loop.Loop.step``):

- features:  ``features_for_images`` on 224 x 224 uint8 RGB frames. ``dit`` (the default encoder,
  dit_residual): ``GaborFeatures`` (CPU, float32: the extractor has no device). The paper models:
  CLIP ViT-L/14 (hidden 1024, 24 layers, 16 heads, patch 14, image 224, projection 768) built by
  ``transformers`` from a config, image processor on the CPU as ``ClipFeatures`` uses it;
  ``dit_paper`` with ``clip_text`` shapes (``ClipImageTextFeatures``: 257 image + 77 text tokens of
  768, the text tower runs on every frame's caption; the caption source is the default concept
  captions, which give camera frames a neutral caption, tokenised by a character-level CLIP
  tokenizer, because the BPE vocabulary is a download: the text tower sees 77 tokens either way);
  ``unet_paper`` with ``clip`` (``ClipFeatures``, pooled vector only, as its ``inputs: pooled``).
- encode:    ``DiffusionEncoder.generate_from_features`` with the config's samples, guidance and
  sample batch size; the paper configs' 50 DDIM / 1000 DDPM steps are replaced by DDIM with 4
  trailing steps (the table says so). ``dit`` includes its ridge mean model (random coefficients).
- decode:    ``prosthesis_sim.decoders.ridge_pixels.RidgePixels`` (32 x 32 grey, time_bin 5) with random
  coefficients, on the CPU as in the loop.
- phosphene: ``TorchPhospheneModel`` (configs/phosphene/torch_argus.yaml, Argus II) on the device,
  float32; batch 1 through ``__call__`` (the loop's call), larger batches through ``render``.

Signals: EEG 63 channels x 250 samples, MEG 271 x 201. Models: ``dit`` (EEG), ``dit_paper_eeg``,
``dit_paper_meg``, ``unet_paper`` (EEG). Precisions:
- fp32:     float32 everywhere (torch defaults: TF32 matmul off).
- fp16:     the encoder's fp16 path (``torch.autocast(float16)`` in sampling and training; on the CPU
            the encoder turns it off, so the bench forces it on to run the same code) and CLIP in
            float16 (``features.dtype=float16``).
- compiled: fp16 with the denoiser and CLIP's vision and text towers wrapped in
            ``torch.compile(mode="reduce-overhead", fullgraph=True, dynamic=False)``: CUDA graphs,
            static shapes (one compilation per batch shape), and an error rather than a graph
            break. Compilation and CUDA graph capture (the warm-up calls' time beyond the calls'
            own median) are reported separately as ``compile s``; ``meta.dynamo`` counts graphs,
            graph breaks and CUDA graph skips. On the CPU (``--tiny``) the default backend is
            ``eager``: dynamo traces every model with fullgraph=True, so a graph break fails here
            too, but no C++ code is generated (inductor works here, with gcc, but takes ~30 s per
            batch shape even for the tiny dit_paper; ``--cpu-compile inductor`` uses it); CUDA
            graphs are CUDA only.
Batches 1, 8 and 32 frames: at batch 1 the per-stage medians and the loop's fps (1000 / median of
features + encode + decode + phosphene); at 8 and 32 frames/s = batch x 1000 / median loop ms.
Single trials (``bench/gpu_trials.py``): the loop with ``loop.signal=trials`` at batch 1 in fp16, N = 1,
4 and 16 trials of a frame in one batched call (DPM-Solver++, 4 steps from 0.2 T, as dit_trials), with
the targets EEG >= 100 and MEG >= 30 loop fps for single trials.
Training: one step of ``DiffusionEncoder.fit`` (noise, forward under its autocast, MSE, backward,
gradient clipping, AdamW with GradScaler, cosine schedule, EMA update; the loss is the encoder's
``diffusion_loss``, the optimiser step is fit's) at batch 32, for dit_paper (EEG, clip_text tokens) and
unet_paper (EEG, pooled CLIP), in fp32 and fp16 (fp16 training is CUDA only, as in ``fit``).

Timing: warm-up calls first, ``torch.cuda.synchronize()`` around every timer, the median of the
timed calls (as many as fit in ~2 s per row: 3-30 at batch 1, 2-10 above; ``--reps`` fixes it).
Budget: rows run in order of importance (batch 1 eager, batch 1 compiled with the fps targets
first, training, batches 8 and 32 eager, then compiled); a row that would start after
``--budget-s`` seconds (default 270, for the < 5 min goal; compiled rows need 60 s left) is
recorded as skipped with the reason. A row that fails (out of memory, a graph break) is recorded
with ``skipped: "failed: ..."`` and the run goes on. SIGTERM (``timeout``) stops the run: the rows
measured so far are printed and saved, and ``meta.interrupted`` says so.

Without a GPU, the full sizes (CLIP ViT-L/14, a 161 M parameter UNet, MEG with 2168 tokens) stop
with a message (exit 2): run ``--tiny`` (every model shrunk: 2-layer CLIP of width 32, DiT of width
32 and depth 2, a UNet of widths 8-32, 8 x 50 EEG and 12 x 50 MEG, at most 2 samples per frame, 1-2
timed calls per row, one torch thread unless ``--threads``; under a minute on two cores, and the test
suite runs it, so the bench cannot rot), or force the full sizes on the CPU with ``--device cpu``
(slow: minutes per row).
Exit status 3 when interrupted, else 0 (failed rows are in the table and the JSON).

``--json FILE`` writes {"meta": ..., "rows": [...]} after every row (a killed run keeps what it
measured); ``--md FILE`` writes the printed tables. Inference rows: kind "loop", model, config,
signal, shape, features, sampler, steps, samples, guidance, sample_batch_size, precision, batch,
features_ms, encode_ms, decode_ms, phosphene_ms, loop_ms, fps, reps, warmup, compile_s, backend,
dtype, params, target_fps, note, skipped (null or the reason), row_s (the row's wall time). Training
rows: kind "train", model, config, signal, shape, precision, batch, step_ms, reps, params, note,
skipped, row_s. ``meta``: device, torch, sizes, setup_s, params, dynamo counters, interrupted, total_s.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import signal
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: gpu_models beside this script
from gpu_trials import TRIAL_REPETITIONS, trial_row, trial_table  # noqa: E402
from gpu_models import (FRAME_SIZE, PAPER_STEPS, SIGNALS, SPECS, TINY_SIGNALS, ClipBundle,
                        Model, Settings, build_gabor, build_model, build_phosphene, log)

MODEL_NAMES = ("dit", "dit_paper_eeg", "dit_paper_meg", "unet_paper")
PRECISIONS = ("fp32", "fp16", "compiled")
BATCHES = (1, 8, 32)
TRAIN_MODELS = ("dit_paper_eeg", "unet_paper")
TRAIN_BATCH = 32
TARGET_FPS = {"dit_paper_eeg": 100.0, "dit_paper_meg": 30.0, "unet_paper": 30.0}  # batch 1, one H100-class GPU
COMPILE_RESERVE_S = 60.0  # a compiled row starts only with this much of the budget left


def compile_fn(settings: Settings):
    """torch.compile as the compiled rows use it: CUDA graphs (reduce-overhead), static shapes, no graph
    breaks; on the CPU the ``--cpu-compile`` backend (eager: dynamo's full-graph trace only)."""
    import torch._dynamo

    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                 "accumulated_cache_size_limit"):
        if hasattr(torch._dynamo.config, name):  # one code object (DiT.forward) serves several models and shapes
            setattr(torch._dynamo.config, name, 256)
    if settings.cuda:
        return functools.partial(torch.compile, mode="reduce-overhead", fullgraph=True, dynamic=False), \
            "inductor, reduce-overhead (CUDA graphs)"
    if settings.cpu_compile == "inductor":
        return functools.partial(torch.compile, fullgraph=True, dynamic=False), "inductor (CPU: no CUDA graphs)"
    return functools.partial(torch.compile, backend="eager", fullgraph=True, dynamic=False), \
        "eager (CPU: dynamo full-graph trace, no code generation)"


def dynamo_counts() -> dict:
    """What torch.compile did in this process: graphs compiled, graph breaks (fullgraph=True turns
    one into an error), CUDA graph skips (inductor ran a graph without CUDA graphs, e.g. a CPU tensor)."""
    from torch._dynamo.utils import counters

    return {"unique_graphs": int(counters["stats"]["unique_graphs"]),
            "graph_breaks": int(sum(counters["graph_break"].values())),
            "cudagraph_skips": int(sum(counters["inductor"].get(k, 0) for k in counters["inductor"]
                                       if "cudagraph_skip" in k))}


# -- timing -------------------------------------------------------------------------------------------


def frames_for(batch: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8) for _ in range(batch)]


def loop_call(model: Model, extractor, frames: list[np.ndarray], settings: Settings) -> dict[str, float]:
    """One pass of the loop's stages over ``frames``: ms per stage (synchronised around each)."""
    from prosthesis_sim.features.cache import features_for_images

    enc, times = model.encoder, {}
    if settings.cuda and enc.model is model.compiled_model:
        torch.compiler.cudagraph_mark_step_begin()  # a new loop iteration: the last one's outputs are copied out

    def stage(name, fn):
        return settings.timed(times, name, fn)

    feats = stage("features", lambda: features_for_images(extractor, frames, tokens=enc.needs_tokens()))
    signals = stage("encode", lambda: enc.generate_from_features(feats, seed=0))
    decoded = stage("decode", lambda: model.decoder.decode(signals))
    if len(frames) == 1:
        stage("phosphene", lambda: model.phosphene(decoded[0]))
    else:
        def render():
            with torch.no_grad():
                return model.phosphene.render(torch.from_numpy(decoded)).float().clamp(0, 1).cpu().numpy()
        stage("phosphene", render)
    times["loop"] = sum(times[s] for s in ("features", "encode", "decode", "phosphene"))
    return times


def plan_reps(seconds_per_call: float, batch: int, settings: Settings) -> int:
    if settings.reps is not None:
        return settings.reps
    if settings.tiny:  # the CPU check: that every row runs, not how fast
        return 2 if batch == 1 else 1
    lo, hi = (3, 30) if batch == 1 else (2, 10)
    return int(min(hi, max(lo, 2.0 // max(seconds_per_call, 1e-6))))


def time_loop(model: Model, precision: str, batch: int, settings: Settings) -> dict:
    enc = model.encoder
    extractor = model.extractors[precision]
    enc.amp = precision != "fp32"  # the encoder's fp16 autocast (it enables it on CUDA only; forced here)
    enc.model = model.compiled_model if precision == "compiled" else model.eager_model
    enc.features = extractor
    frames = frames_for(batch)
    try:
        with torch.inference_mode():
            warm_start = time.perf_counter()
            # compiled on CUDA: the call that compiles, then CUDA graph trees' warm-up run and capture run
            warmup = 3 if precision == "compiled" and settings.cuda else 1
            for _ in range(warmup):
                last = loop_call(model, extractor, frames, settings)
            warm_s = time.perf_counter() - warm_start
            if precision != "compiled" and last["loop"] < 1000 and settings.reps is None and not settings.tiny:
                last = loop_call(model, extractor, frames, settings)  # a second warm-up for cheap calls
                warmup += 1
            reps = plan_reps(last["loop"] / 1e3, batch, settings)
            calls = [loop_call(model, extractor, frames, settings) for _ in range(reps)]
    finally:
        enc.model = model.eager_model
    med = {k: statistics.median(c[k] for c in calls) for k in calls[0]}
    # compilation and CUDA graph capture: the warm-up calls' time beyond what the calls themselves take
    compile_s = max(warm_s - warmup * med["loop"] / 1e3, 1e-3) if precision == "compiled" else None
    return {**{f"{k}_ms": v for k, v in med.items()}, "fps": batch * 1e3 / med["loop"], "reps": reps,
            "warmup": warmup, "compile_s": compile_s}


def train_step_ms(model: Model, precision: str, settings: Settings) -> dict:
    """Median time of one training step as ``DiffusionEncoder.fit`` takes it: the encoder's own
    ``diffusion_loss``, then fit's optimiser step (AdamW, GradScaler, clipping, schedule, EMA)."""
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from prosthesis_sim.encoders.diffusion import optimizer_step

    enc = model.encoder
    cfg = enc.train_cfg
    amp = precision == "fp16"
    enc.amp = amp  # diffusion_loss autocasts as the encoder does
    torch.manual_seed(0)
    with torch.device(settings.device):
        net = enc.make_denoiser(**enc.dims).to(settings.device).train()
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(cfg["ema_decay"]))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    sched = get_cosine_schedule_with_warmup(opt, 10, 1000)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    n, (n_ch, n_t) = TRAIN_BATCH, model.shape
    gen = torch.Generator(device="cpu").manual_seed(0)
    y = torch.randn((n, n_ch, n_t), device=settings.device)
    n_tokens, token_dim = enc.dims["n_tokens"], enc.dims["token_dim"]
    tokens = torch.randn((n, n_tokens, token_dim), device=settings.device)
    pooled = torch.randn((n, enc.dims["pooled_dim"]), device=settings.device)
    T = enc.noise_scheduler.config.num_train_timesteps

    def step():
        noise = torch.randn((n, n_ch, n_t), generator=gen)
        t = torch.randint(0, T, (n,), generator=gen)
        drop = torch.rand(n, generator=gen) < cfg["cond_dropout"]
        noise, t, drop = (a.to(settings.device) for a in (noise, t, drop))
        tok = torch.where(drop[:, None, None], torch.zeros_like(tokens), tokens)
        pool = torch.where(drop[:, None], torch.zeros_like(pooled), pooled)
        loss = enc.diffusion_loss(net, y, noise, t, tok, pool)
        optimizer_step(loss, net, opt, scaler, sched, ema, cfg["grad_clip"])
        loss.item()  # the fit's history append: one sync per step

    def timed() -> float:
        settings.sync()
        start = time.perf_counter()
        step()
        settings.sync()
        return time.perf_counter() - start

    try:
        first = timed()
        if settings.reps is None and not settings.tiny:
            first = timed()  # a second warm-up: the AdamW state exists now
        if settings.reps is not None:
            reps = settings.reps
        else:
            reps = 2 if settings.tiny else int(min(10, max(3, 2.0 // max(first, 1e-6))))
        times = [timed() for _ in range(reps)]
    finally:
        opt.zero_grad(set_to_none=True)
        if settings.cuda:
            torch.cuda.empty_cache()
    return {"step_ms": 1e3 * statistics.median(times), "reps": reps}


# -- the run ------------------------------------------------------------------------------------------


def failure(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"failed: {type(err).__name__}: {text[:300]}"


def row_note(model: Model, precision: str, settings: Settings, backend: str) -> str:
    notes = []
    if precision != "fp32" and not settings.cuda:
        notes.append("CPU: float16 autocast forced on (the encoder enables it on CUDA only)"
                     + ("" if model.features_kind == "gabor" else ", CLIP in float16 on the CPU")
                     + ": the GPU's code path, timings without meaning")
    if precision == "compiled":
        notes.append(f"torch.compile backend: {backend}")
    if model.features_kind == "gabor" and precision != "fp32":
        notes.append("gabor features stay float32 on the CPU")
    return "; ".join(notes)


class Run:
    def __init__(self, settings: Settings, names: list[str], json_path: str | None, md_path: str | None):
        self.settings, self.names = settings, names
        self.json_path, self.md_path = json_path, md_path
        self.rows: list[dict] = []
        self.meta = {
            "device": str(settings.device),
            "device_name": torch.cuda.get_device_name(settings.device) if settings.cuda else "cpu",
            "torch": torch.__version__, "threads": torch.get_num_threads(), "tiny": settings.tiny,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "budget_s": settings.budget_s,
            "frame": [FRAME_SIZE, FRAME_SIZE, 3], "signals": TINY_SIGNALS if settings.tiny else SIGNALS,
            "paper_sampler": f"ddim {PAPER_STEPS} steps, trailing", "train_batch": TRAIN_BATCH,
            "models": list(names), "precisions": list(PRECISIONS), "batches": list(BATCHES),
            "train_models": [m for m in TRAIN_MODELS if m in names],
            "weights": "random (speed only: nothing fitted or downloaded)",
            "decoder": "ridge_pixels 32 x 32, random coefficients", "phosphene": "torch_argus (float32)",
        }

    def save(self) -> None:
        if self.json_path:
            self.meta["elapsed_s"] = round(self.settings.elapsed(), 1)
            Path(self.json_path).write_text(json.dumps({"meta": self.meta, "rows": self.rows}, indent=2, default=float))

    def over_budget(self, reserve: float = 0.0) -> str | None:
        used = self.settings.elapsed()
        if used + reserve > self.settings.budget_s:
            need = f" and {reserve:.0f} s for compilation" if reserve else ""
            return f"time budget: {used:.0f} s of --budget-s {self.settings.budget_s:.0f} used{need}"
        return None

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self.save()
        what = f"{row['kind']} {row['model']} {row['precision']} batch {row['batch']}"
        if row.get("skipped"):
            log(f"  {what}: skipped ({row['skipped']})")
        elif row["kind"] in ("loop", "trials"):
            extra = f", compile {row['compile_s']:.1f} s" if row.get("compile_s") is not None else ""
            extra += f", {row['repetitions']} trials" if row["kind"] == "trials" else ""
            log(f"  {what}: {row['loop_ms']:.1f} ms, {row['fps']:.1f} frames/s ({row['reps']} reps{extra})")
        else:
            log(f"  {what}: {row['step_ms']:.1f} ms per step ({row['reps']} reps)")


def loop_row(run: Run, model: Model, precision: str, batch: int, backend: str) -> None:
    s = run.settings
    enc = model.encoder
    row = {"kind": "loop", "model": model.name, "config": model.config, "signal": model.signal,
           "shape": list(model.shape), "features": model.features_kind, "sampler": model.sampler_text,
           "steps": enc.sampling_steps, "samples": enc.n_samples, "guidance": enc.guidance_scale,
           "sample_batch_size": enc.sample_batch_size, "precision": precision, "batch": batch,
           "dtype": "float32" if precision == "fp32" else "float16",
           "backend": backend if precision == "compiled" else "eager", "params": model.params,
           "target_fps": TARGET_FPS.get(model.name) if batch == 1 else None,
           "note": row_note(model, precision, s, backend), "skipped": None}
    reason = run.over_budget(COMPILE_RESERVE_S if precision == "compiled" else 0.0)
    if reason is None and precision == "compiled" and model.compiled_model is None:
        reason = getattr(model, "compile_error", None) or "failed: not compiled"
    started = time.perf_counter()
    if reason is None:
        try:
            row.update(time_loop(model, precision, batch, s))
        except Exception as err:  # OOM, a graph break, ...: recorded, the other rows still run
            traceback.print_exc(file=sys.stderr)
            reason = failure(err)
            if s.cuda:
                torch.cuda.empty_cache()
    row["skipped"] = reason
    row["row_s"] = round(time.perf_counter() - started, 2)  # wall time of the row, warm-up and compilation included
    run.add(row)


def train_row(run: Run, model: Model, precision: str) -> None:
    s = run.settings
    row = {"kind": "train", "model": model.name, "config": model.config, "signal": model.signal,
           "shape": list(model.shape), "features": model.features_kind, "precision": precision,
           "batch": TRAIN_BATCH, "params": model.params, "skipped": None,
           "note": "the fit's step: noise, forward, MSE, backward, grad clip, AdamW (GradScaler), "
                   "cosine schedule, EMA" + (", float16 autocast" if precision == "fp16" else "")}
    reason = run.over_budget()
    if reason is None and precision == "fp16" and not s.cuda:
        reason = "CPU: DiffusionEncoder.fit trains in float32 on the CPU (fp16 autocast + GradScaler are CUDA only)"
    started = time.perf_counter()
    if reason is None:
        try:
            row.update(train_step_ms(model, precision, s))
        except Exception as err:
            traceback.print_exc(file=sys.stderr)
            reason = failure(err)
            if s.cuda:
                torch.cuda.empty_cache()
    row["skipped"] = reason
    row["row_s"] = round(time.perf_counter() - started, 2)
    run.add(row)


def fmt(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def tables(run: Run) -> str:
    s, rows = run.settings, run.rows
    out = [f"device: {run.meta['device_name']} ({s.device}), torch {torch.__version__}, "
           f"{'tiny models' if s.tiny else 'full sizes'}, random weights, {FRAME_SIZE} x {FRAME_SIZE} frames; "
           f"decode: {run.meta['decoder']}; phosphene: {run.meta['phosphene']}", ""]
    order = {(m, p): i for i, (m, p) in enumerate((m, p) for m in MODEL_NAMES for p in PRECISIONS)}
    loops = sorted((r for r in rows if r["kind"] == "loop"), key=lambda r: order[r["model"], r["precision"]])
    out += ["Batch 1 (the live loop): median ms per stage, loop fps = 1000 / median loop ms", "",
            "| model | signal | features | sampler | precision | features ms | encode ms | decode ms | phosphene ms "
            "| loop ms | loop fps | target fps | compile s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in (r for r in loops if r["batch"] == 1):
        target = r.get("target_fps")
        if target is None or not s.cuda:
            target_text = "-" if target is None else f">= {target:g} (GPU)"
        elif r.get("skipped"):
            target_text = f">= {target:g}"
        else:
            target_text = f">= {target:g} {'met' if r['fps'] >= target else 'missed'}"
        if r.get("skipped"):
            status = "skipped" if r["skipped"].startswith("time budget") else "failed"
            out.append(f"| {r['model']} | {r['signal']} | {r['features']} | {r['sampler']} | {r['precision']} | "
                       f"{status} (notes) | - | - | - | - | - | {target_text} | - |")
            continue
        out.append(f"| {r['model']} | {r['signal']} | {r['features']} | {r['sampler']} | {r['precision']} | "
                   f"{fmt(r['features_ms'])} | {fmt(r['encode_ms'])} | {fmt(r['decode_ms'])} | "
                   f"{fmt(r['phosphene_ms'], 2)} | {fmt(r['loop_ms'])} | {fmt(r['fps'])} | {target_text} | "
                   f"{fmt(r.get('compile_s'))} |")
    out += ["", "Throughput: frames/s = batch x 1000 / median ms of the four stages over the batch", "",
            "| model | precision | batch 1 | batch 8 | batch 32 | compile s (8, 32) |", "|---|---|---|---|---|---|"]
    for name in run.names:
        for precision in PRECISIONS:
            cells, compiles = [], []
            for batch in BATCHES:
                r = next((r for r in loops if r["model"] == name and r["precision"] == precision
                          and r["batch"] == batch), None)
                if r is None:
                    cells.append("-")
                elif r.get("skipped"):
                    cells.append("skipped" if r["skipped"].startswith("time budget") else "failed")
                else:
                    cells.append(fmt(r["fps"]))
                if batch > 1 and r is not None and r.get("compile_s") is not None:
                    compiles.append(fmt(r["compile_s"]))
            out.append(f"| {name} | {precision} | {' | '.join(cells)} | {', '.join(compiles) or '-'} |")
    out += trial_table(run, fmt)
    trains = [r for r in rows if r["kind"] == "train"]
    if trains:
        out += ["", f"Training: one step of DiffusionEncoder.fit at batch {TRAIN_BATCH} (median ms)", "",
                "| model | signal | params (M) | precision | step ms | steps/s |", "|---|---|---|---|---|---|"]
        for r in trains:
            if r.get("skipped"):
                out.append(f"| {r['model']} | {r['signal']} | {r['params'] / 1e6:.1f} | {r['precision']} | "
                           f"skipped (notes) | - |")
            else:
                out.append(f"| {r['model']} | {r['signal']} | {r['params'] / 1e6:.1f} | {r['precision']} | "
                           f"{fmt(r['step_ms'])} | {fmt(1e3 / r['step_ms'], 2)} |")
    skipped = [r for r in rows if r.get("skipped")]
    notes = list(dict.fromkeys(part for r in rows for part in (r.get("note") or "").split("; ") if part))
    if run.meta.get("interrupted"):
        notes.append(f"interrupted: {run.meta['interrupted']}")
    dynamo = run.meta.get("dynamo")
    if dynamo:
        notes.append(f"torch.compile: {dynamo['unique_graphs']} graphs, {dynamo['graph_breaks']} graph breaks"
                     + (f", {dynamo['cudagraph_skips']} CUDA graph skips" if s.cuda else ""))
    if skipped or notes:
        out += ["", "Notes:"]
        out += [f"- {n}" for n in notes]
        out += [f"- skipped {r['kind']} {r['model']} {r['precision']} batch {r['batch']}: {r['skipped']}"
                for r in skipped]
    return "\n".join(out)


class Interrupted(BaseException):
    """SIGTERM (e.g. from `timeout`): stop measuring, print and save what was measured."""


def _interrupt(signum, frame):
    raise Interrupted()


def compile_model(model: Model, clip: ClipBundle | None, compile_with) -> None:
    """Give ``model`` its compiled denoiser and, for CLIP features, the compiled extractor."""
    try:
        model.compiled_model = compile_with(model.eager_model)
        if model.features_kind != "gabor":
            clip.compile(compile_with)
            model.extractors["compiled"] = clip.extractor(model.features_kind, "compiled")
    except Exception as err:  # torch.compile itself is lazy; this catches a refused configuration
        model.compiled_model = None
        model.compile_error = failure(err)


def main(argv: list[str] | None = None) -> Run:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="shrink every model (runs on a CPU in well under a minute)")
    parser.add_argument("--device", default="auto", help="cuda | cpu | auto (cuda when available)")
    parser.add_argument("--json", dest="json_path", help="write {meta, rows} to this file (after every row)")
    parser.add_argument("--md", dest="md_path", help="also write the tables to this file")
    parser.add_argument("--only", nargs="+", choices=MODEL_NAMES, metavar="NAME",
                        help=f"models to run, of {', '.join(MODEL_NAMES)} (default: all)")
    parser.add_argument("--budget-s", type=float, default=270.0,
                        help="rows that would start after this many seconds are recorded as skipped (default 270)")
    parser.add_argument("--reps", type=int, help="timed calls per row (default: as many as fit in about 2 s)")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default: 1 with --tiny on the CPU, else torch's choice)")
    parser.add_argument("--cpu-compile", choices=("eager", "inductor"), default="eager",
                        help="torch.compile backend of the compiled rows on the CPU (default eager)")
    args = parser.parse_args(argv)
    if args.device not in ("auto", "cpu", "cuda") and not args.device.startswith("cuda:"):
        parser.error(f"--device must be cuda, cpu or auto, got {args.device!r}")
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if device.type == "cpu" and not args.tiny:
            parser.exit(2, "bench/gpu.py: no GPU here (torch.cuda.is_available() is False). The full sizes (CLIP "
                           "ViT-L/14, a 161 M parameter UNet, 271-channel MEG) need a GPU: run --tiny for the "
                           "small CPU version, or --device cpu to force the full sizes on the CPU (slow).\n")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            parser.exit(2, f"bench/gpu.py: --device {args.device}, but CUDA is not available here\n")
    if args.reps is not None and args.reps < 1:
        parser.error("--reps must be >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.threads is None and args.tiny and device.type == "cpu":
        args.threads = 1  # tiny models gain nothing from threads, and on a shared machine they contend (4x slower)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    settings = Settings(device=device, tiny=args.tiny, budget_s=args.budget_s, reps=args.reps,
                        cpu_compile=args.cpu_compile)
    names = [n for n in MODEL_NAMES if args.only is None or n in args.only]
    run = Run(settings, names, args.json_path, args.md_path)
    if device.type == "cpu" and not args.tiny:
        log("bench/gpu.py: full sizes on the CPU, as asked (--device cpu): expect minutes per row")

    start = time.perf_counter()
    gabor = build_gabor()
    phosphene = build_phosphene(settings)
    needs_clip = any(SPECS[n][1] != "gabor" for n in names)
    clip = ClipBundle(settings) if needs_clip else None
    models = [build_model(n, settings, clip, phosphene, gabor) for n in names]
    run.meta["setup_s"] = round(time.perf_counter() - start, 1)
    run.meta["params"] = {m.name: m.params for m in models}
    if clip is not None:
        run.meta["params"].update({f"clip_{k}": v for k, v in clip.params.items()})
        run.meta["image_processor"] = type(clip.processor).__name__
    log(f"setup {run.meta['setup_s']:.1f} s on {device}: " +
        ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in run.meta["params"].items()))
    run.save()

    # What the budget cuts should be the least important, so: batch 1 eager (the live loop, cheap), batch
    # 1 compiled (the fps targets, targets first; a compilation per model), training, batches 8 and 32
    # eager, then compiled (a compilation per shape).
    compile_with, backend = compile_fn(settings)
    run.meta["compile_backend"] = backend
    by_target = sorted(models, key=lambda m: -TARGET_FPS.get(m.name, 0.0))
    interrupted = None
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `timeout` ends the run: the tables still print
    try:
        for model in models:
            for precision in ("fp32", "fp16"):
                loop_row(run, model, precision, 1, "eager")
        for model in models:  # the loop with single trials and repetition averages (issue 21)
            for repetitions in TRIAL_REPETITIONS:
                trial_row(run, model, repetitions, frames_for, plan_reps, failure)
        for model in models:
            compile_model(model, clip, compile_with)
        for model in by_target:
            loop_row(run, model, "compiled", 1, backend)
        for model in models:
            if model.name in TRAIN_MODELS:
                for precision in ("fp32", "fp16"):
                    train_row(run, model, precision)
        for precision in ("fp32", "fp16", "compiled"):
            for model in by_target if precision == "compiled" else models:
                for batch in BATCHES[1:]:
                    loop_row(run, model, precision, batch, backend if precision == "compiled" else "eager")
    except (Interrupted, KeyboardInterrupt) as err:
        interrupted = f"{type(err).__name__} after {settings.elapsed():.0f} s: the rows after it were not run"
        log(f"bench/gpu.py: {interrupted}")
    finally:
        signal.signal(signal.SIGTERM, previous)
    run.meta["interrupted"] = interrupted
    run.meta["dynamo"] = dynamo_counts()
    run.meta["total_s"] = round(run.settings.elapsed(), 1)
    run.save()
    text = tables(run)
    print(text)
    if args.md_path:
        Path(args.md_path).write_text(text + "\n")
    log(f"({run.meta['total_s']:.0f} s)")
    if args.json_path:
        log(f"rows written to {args.json_path}")
    return run


if __name__ == "__main__":
    sys.exit(3 if main().meta.get("interrupted") else 0)
