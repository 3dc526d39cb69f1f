"""bench/gpu.py's single-trial rows (issue 21): the loop with ``loop.signal=trials`` at batch 1, fp16.

Each frame's signal is the average of N trials (N = 1, 4, 16) drawn in one batched call, as the loop
draws them (``DiffusionEncoder.sample_trials_from_features``): dit_trials' sampler, DPM-Solver++ with 4
steps from 0.2 T (``trial_steps``, ``trial_start``), whatever the model's config samples its mean with.
The targets (a lent GPU, paper sizes): EEG >= 100 loop fps and MEG >= 30 with single trials (N = 1).
Rows: kind "trials", model, signal, repetitions, precision "fp16", the stage medians, loop_ms, fps,
target_fps, skipped, row_s.
"""
from __future__ import annotations

import statistics
import time
import traceback

import torch

TRIAL_REPETITIONS = (1, 4, 16)
TRIAL_SAMPLER, TRIAL_STEPS, TRIAL_START = "dpmsolver++", 4, 0.2
TRIAL_TARGET_FPS = {"dit_paper_eeg": 100.0, "dit_paper_meg": 30.0}  # single trials, batch 1, one H100-class GPU


def trial_call(model, extractor, frame, repetitions: int, settings) -> dict[str, float]:
    """One frame through the loop with a trial signal: ms per stage (synchronised around each)."""
    from prosthesis_sim.features.cache import features_for_images

    enc, times = model.encoder, {}

    def stage(name, fn):
        return settings.timed(times, name, fn)

    feats = stage("features", lambda: features_for_images(extractor, [frame], tokens=enc.needs_tokens()))
    signal = stage("encode", lambda: enc.sample_trials_from_features(feats, repetitions, seed=0).mean(axis=1))
    decoded = stage("decode", lambda: model.decoder.decode(signal))
    stage("phosphene", lambda: model.phosphene(decoded[0]))
    times["loop"] = sum(times[s] for s in ("features", "encode", "decode", "phosphene"))
    return times


def trial_row(run, model, repetitions: int, frames_for, plan_reps, failure) -> None:
    """Time the loop with ``repetitions`` trials per frame (fp16) and add the row to ``run``."""
    s, enc = run.settings, model.encoder
    row = {"kind": "trials", "model": model.name, "signal": model.signal, "repetitions": repetitions,
           "sampler": f"{TRIAL_SAMPLER} {TRIAL_STEPS} steps from {TRIAL_START:g} T", "precision": "fp16",
           "batch": 1, "target_fps": TRIAL_TARGET_FPS.get(model.name) if repetitions == 1 else None, "skipped": None}
    reason = run.over_budget()
    started = time.perf_counter()
    saved = (enc.sampler, enc.trial_steps, getattr(enc, "trial_start", 1.0), enc.amp, enc.model, enc.features)
    if reason is None:
        try:
            enc.sampler, enc.trial_steps, enc.trial_start = TRIAL_SAMPLER, TRIAL_STEPS, TRIAL_START
            enc.amp, enc.model = True, model.eager_model
            extractor = enc.features = model.extractors["fp16"]
            frame = frames_for(1)[0]
            with torch.inference_mode():
                trial_call(model, extractor, frame, repetitions, s)  # warm-up
                reps = plan_reps(trial_call(model, extractor, frame, repetitions, s)["loop"] / 1e3, 1, s)
                calls = [trial_call(model, extractor, frame, repetitions, s) for _ in range(reps)]
            med = {k: statistics.median(c[k] for c in calls) for k in calls[0]}
            row.update({f"{k}_ms": v for k, v in med.items()}, fps=1e3 / med["loop"], reps=reps)
        except Exception as err:  # OOM ...: recorded, the other rows still run
            traceback.print_exc()
            reason = failure(err)
        finally:
            enc.sampler, enc.trial_steps, enc.trial_start, enc.amp, enc.model, enc.features = saved
    row["skipped"] = reason
    row["row_s"] = round(time.perf_counter() - started, 2)
    run.add(row)


def trial_table(run, fmt) -> list[str]:
    """The trial rows as a Markdown table (empty when there are none)."""
    rows = [r for r in run.rows if r["kind"] == "trials"]
    if not rows:
        return []
    out = ["", f"Single trials (loop.signal=trials): {TRIAL_SAMPLER}, {TRIAL_STEPS} steps from {TRIAL_START:g} T, "
                "fp16, batch 1; N trials of a frame in one batched call, averaged", "",
           "| model | signal | N | features ms | encode ms | decode ms | phosphene ms | loop ms | loop fps | target fps |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        target = r.get("target_fps")
        target_text = "-" if target is None else (f">= {target:g} (GPU)" if not run.settings.cuda or r.get("skipped")
                                                  else f">= {target:g} {'met' if r['fps'] >= target else 'missed'}")
        if r.get("skipped"):
            out.append(f"| {r['model']} | {r['signal']} | {r['repetitions']} | {r['skipped']} | - | - | - | - | - | "
                       f"{target_text} |")
        else:
            out.append(f"| {r['model']} | {r['signal']} | {r['repetitions']} | {fmt(r['features_ms'])} | "
                       f"{fmt(r['encode_ms'])} | {fmt(r['decode_ms'])} | {fmt(r['phosphene_ms'], 2)} | "
                       f"{fmt(r['loop_ms'])} | {fmt(r['fps'])} | {target_text} |")
    return out
