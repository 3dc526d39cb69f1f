"""Per-stage latency of the closed loop at batch 1 (one camera frame at a time), as a table.

Uses the models of the demo config (fitted and cached on first use, like `make demo`), then varies
the diffusion sampler's cost knobs on the same trained encoder. Run: `python bench/loop_latency.py
[--json FILE]` (extra Hydra overrides are passed on, e.g. `phosphene=argus_axonmap`); --json also
writes the rows (signal, repetitions, sampler, steps, samples, cfg, encode_ms, decode_ms, phosphene_ms, loop_ms,
loop_fps, evaluate_ms, panel_ms, eval_ms, eval_fps; residual_gain for a regression-plus-diffusion encoder) to FILE.
An encoder that samples trials also gets the rows of ``loop.signal=trials`` with 1, 4 and 16 repetitions
(its own trial settings: ``encoder_dir=<psim-train encoder=dit_trials run>/encoder`` for dit_trials').

Columns as psim-loop runs them: the loop's thread does encode + decode + phosphene (`loop ms`,
`loop fps`: what a device would do); the evaluation thread does the floor and ceiling paths and the
scores (`evaluate ms`) and draws the panels (`panel ms`), so `eval fps` is how many frames a second it
can evaluate when it has a core to itself (the loop does not wait for it: it evaluates the newest
frame each time it is free). Stages are timed one after the other here; the last line runs the default
variant through `run_loop` itself (both threads at once) and gives what summary.json reports.
"""
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_module

from prosthesis_sim.loop import run_loop
from prosthesis_sim.protocols import can_sample_trials
from prosthesis_sim.pipeline import build_loop
from prosthesis_sim.sources import SampleClip

VARIANTS = [  # (residual gain, sampler, steps, n_samples, guidance); the first is the default dit_residual as
    # fitted (its validated gain: 0 means ridge's mean, no sampling); gain 1 adds the DiT's whole residual mean
    (None, "ddim", 1, 8, 1.0),
    (1.0, "ddim", 1, 8, 1.0),
    (1.0, "ddim", 1, 1, 1.0),
    (1.0, "ddim", 4, 8, 1.0),
    (1.0, "ddim", 25, 8, 1.0),
    (1.0, "ddim", 25, 8, 3.0),
]


def main(overrides: list[str], json_path: str | None = None) -> None:
    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        cfg = compose("demo", overrides=overrides)
    loop, renderer = build_loop(cfg)
    frames = list(SampleClip(frames_per_photo=2))
    enc = loop.encoder
    print(f"device: {'cuda' if torch.cuda.is_available() else 'cpu'}, torch threads {torch.get_num_threads()}, "
          f"{len(frames)} frames of {frames[0].shape}, phosphene {type(loop.phosphene.model).__name__}")
    cols = ("signal", "gain", "sampler", "steps", "samples", "cfg", "encode ms", "decode ms", "phosphene ms", "loop ms", "loop fps",
            "evaluate ms", "panel ms", "eval fps")
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    rows = []
    fitted = getattr(enc, "residual_gain", None)
    defaults = tuple(getattr(enc, k, None) for k in ("sampler", "sampling_steps", "n_samples", "guidance_scale"))
    trials = [("trials", r) for r in (1, 4, 16)] if can_sample_trials(enc) else []
    for signal, reps, (gain, sampler, steps, n, g) in [*(("mean", 1, v) for v in VARIANTS),
                                                      *((sig, r, (None, *defaults)) for sig, r in trials)]:
        if fitted is None and gain is not None:
            continue  # no residual gain to vary: an encoder without a mean model
        loop.signal, loop.repetitions = signal, reps
        if signal == "trials":  # the encoder's own settings, and its trials' steps
            enc.sampler, enc.sampling_steps, enc.n_samples, enc.guidance_scale = defaults
            sampler, steps, n, g = enc.sampler, enc.trial_steps, reps, enc.guidance_scale
        else:
            enc.sampler, enc.sampling_steps, enc.n_samples, enc.guidance_scale = sampler, steps, n, g
        gain = fitted if gain is None else gain
        if fitted is not None:
            enc.residual_gain = gain
        loop.step(frames[0])  # warm-up
        lat = []
        for f in frames:  # what each thread does for one frame, timed one after the other
            res = loop.run(f)
            scores, res["latency"]["evaluate_ms"] = loop.evaluate(f, res["percept"])
            start = time.perf_counter()
            renderer.compose(f, loop.norm(res["signal"][None])[0], res["decoded"], res["percept"], scores)
            lat.append({**res["latency"], "panel_ms": 1000 * (time.perf_counter() - start)})
        med = {k: float(np.median([x[k] for x in lat])) for k in lat[0]}
        loop_ms = float(np.median([x["encode_ms"] + x["decode_ms"] + x["phosphene_ms"] for x in lat]))
        eval_ms = float(np.median([x["evaluate_ms"] + x["panel_ms"] for x in lat]))
        label = "mean" if signal == "mean" else f"trials x{reps}"
        if signal == "trials" and getattr(enc, "trial_start", 1.0) < 1:
            label += f" (from {enc.trial_start:g} T)"
        print(f"| {label} | {'-' if gain is None else f'{gain:g}'} | {sampler} | {steps} | {n} | {g:.1f} | {med['encode_ms']:.1f} | {med['decode_ms']:.1f} | "
              f"{med['phosphene_ms']:.1f} | {loop_ms:.1f} | {1000 / loop_ms:.1f} | {med['evaluate_ms']:.1f} | "
              f"{med['panel_ms']:.1f} | {1000 / eval_ms:.1f} |")
        rows.append({"signal": signal, "repetitions": reps, "residual_gain": gain, "sampler": sampler, "steps": steps, "samples": n, "cfg": g,
                     "encode_ms": med["encode_ms"],
                     "decode_ms": med["decode_ms"], "phosphene_ms": med["phosphene_ms"], "loop_ms": loop_ms,
                     "loop_fps": 1000 / loop_ms, "evaluate_ms": med["evaluate_ms"], "panel_ms": med["panel_ms"],
                     "eval_ms": eval_ms, "eval_fps": 1000 / eval_ms,
                     "device": "cuda" if torch.cuda.is_available() else "cpu", "threads": torch.get_num_threads()})
    _, sampler, steps, n, g = VARIANTS[0]  # the default, through run_loop: both threads at once, as with a camera
    enc.sampler, enc.sampling_steps, enc.n_samples, enc.guidance_scale = sampler, steps, n, g
    loop.signal, loop.repetitions = "mean", 1
    if fitted is not None:
        enc.residual_gain = fitted
    with tempfile.TemporaryDirectory() as out:
        s = run_loop(loop, frames, renderer, Path(out), evaluate="latest")
    lat = s["median_latency_ms"]
    print(f"run_loop ({sampler} {steps} x {n}, {s['frames']} frames, both threads): loop {lat['loop']:.1f} ms "
          f"(loop fps {s['loop_fps']:.1f}), fps {s['fps']:.1f}, evaluated {s['evaluated_frames']} of {s['frames']} "
          f"frames ({s['evaluated_fps']:.1f} / s), evaluate {lat['evaluate']:.1f} ms, "
          f"panel {lat.get('panel', 0):.1f} ms")
    rows.append({"run_loop": True, "signal": "mean", "repetitions": 1, "sampler": sampler, "steps": steps, "samples": n, "cfg": g, "frames": s["frames"],
                 "loop_ms": lat["loop"], "loop_fps": s["loop_fps"], "fps": s["fps"],
                 "evaluated_frames": s["evaluated_frames"], "evaluated_fps": s["evaluated_fps"],
                 "evaluate_ms": lat["evaluate"], "panel_ms": lat.get("panel")})
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=2))
        print(f"rows written to {json_path}")


if __name__ == "__main__":
    start = time.perf_counter()
    args = sys.argv[1:]
    json_path = None
    if "--json" in args:
        i = args.index("--json")
        if i + 1 >= len(args):
            sys.exit("--json needs a file name: python bench/loop_latency.py --json rows.json")
        json_path = args[i + 1]
        del args[i : i + 2]
    main(args, json_path)
    print(f"({time.perf_counter() - start:.0f} s)")
