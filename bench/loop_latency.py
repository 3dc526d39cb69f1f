"""Per-stage latency of the closed loop at batch 1 (one camera frame at a time), as a table.

Uses the models of the demo config (fitted and cached on first use, like `make demo`), then varies
the diffusion sampler's cost knobs on the same trained encoder. Run: `python bench/loop_latency.py
[--json FILE]` (extra Hydra overrides are passed on, e.g. `phosphene=argus_axonmap`); --json also
writes the rows (sampler, steps, samples, cfg, encode_ms, decode_ms, phosphene_ms, loop_ms, loop_fps,
evaluate_ms) to FILE.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_module

from prosthesis_sim.pipeline import build_loop
from prosthesis_sim.sources import SampleClip

VARIANTS = [  # (sampler, steps, n_samples, guidance); the first is the default dit_residual's
    ("ddim", 1, 8, 1.0),
    ("ddim", 1, 1, 1.0),
    ("ddim", 4, 8, 1.0),
    ("ddim", 25, 8, 1.0),
    ("ddim", 25, 8, 3.0),
]


def main(overrides: list[str], json_path: str | None = None) -> None:
    with initialize_config_module("configs", version_base="1.3"):
        cfg = compose("demo", overrides=overrides)
    loop, _ = build_loop(cfg)
    frames = list(SampleClip(frames_per_photo=2))
    enc = loop.encoder
    print(f"device: {'cuda' if torch.cuda.is_available() else 'cpu'}, torch threads {torch.get_num_threads()}, "
          f"{len(frames)} frames of {frames[0].shape}, phosphene {type(loop.phosphene.model).__name__}")
    cols = ("sampler", "steps", "samples", "cfg", "encode ms", "decode ms", "phosphene ms", "loop ms", "loop fps",
            "evaluate ms")
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    rows = []
    for sampler, steps, n, g in VARIANTS:
        enc.sampler, enc.sampling_steps, enc.n_samples, enc.guidance_scale = sampler, steps, n, g
        loop.step(frames[0])  # warm-up
        lat = [loop.step(f)["latency"] for f in frames]
        med = {k: float(np.median([x[k] for x in lat])) for k in lat[0]}
        loop_ms = float(np.median([x["encode_ms"] + x["decode_ms"] + x["phosphene_ms"] for x in lat]))
        print(f"| {sampler} | {steps} | {n} | {g:.1f} | {med['encode_ms']:.1f} | {med['decode_ms']:.1f} | "
              f"{med['phosphene_ms']:.1f} | {loop_ms:.1f} | {1000 / loop_ms:.1f} | {med['evaluate_ms']:.1f} |")
        rows.append({"sampler": sampler, "steps": steps, "samples": n, "cfg": g, "encode_ms": med["encode_ms"],
                     "decode_ms": med["decode_ms"], "phosphene_ms": med["phosphene_ms"], "loop_ms": loop_ms,
                     "loop_fps": 1000 / loop_ms, "evaluate_ms": med["evaluate_ms"],
                     "device": "cuda" if torch.cuda.is_available() else "cpu", "threads": torch.get_num_threads()})
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
