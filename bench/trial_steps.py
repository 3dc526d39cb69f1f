"""Few-step single trials: sampler x steps x two-sample accuracy x ms per trial (issue 21, section 2).

    python bench/trial_steps.py ENCODER_DIR [--root outputs/synth] [--subject 1] [--meg]
        [--grid "dpmsolver++:25,4;ddim:4"] [--json FILE]

ENCODER_DIR is a saved trial encoder (``psim-train encoder=dit_trials dataset.average_train=false``'s
``encoder/`` folder). Each cell samples as many trials per test image as were measured (the test
trials of the dataset, single trials) with one sampler and number of network evaluations, and scores
them with psim-train's classifier two-sample test against the measured trials (0.5: indistinguishable;
``prosthesis_sim.eval.single_trials``), with the measured halves and the cross-spectral Gaussian
baseline as references. ``N@s`` in the grid starts the reverse process at s x T (``encoder.trial_start``,
a truncated process) instead of at T. ms per trial: wall time of ``sample_trials`` over all images /
trials, one CPU thread.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prosthesis_sim.checkpoint import load_component  # noqa: E402
from prosthesis_sim.data.things_eeg2 import load_things_eeg2  # noqa: E402
from prosthesis_sim.eval import single_trials as st  # noqa: E402
from prosthesis_sim.evaluate import load_test_images  # noqa: E402

DEFAULT_GRID = ("dpmsolver++:25,4,4@0.5,4@0.3,4@0.2,4@0.1,2@0.2,2@0.1;unipc:4;sde-dpmsolver++:4,4@0.2;"
                "euler_ancestral:4;ddpm:4,4@0.2;ddim:4")


def parse_grid(text: str) -> list[tuple[str, int, float]]:
    """"sampler:steps[@start],...;..." -> (sampler, steps, trial_start) cells (start 1: the whole process)."""
    cells = []
    for part in text.split(";"):
        sampler, steps = part.split(":")
        for cell in steps.split(","):
            n, _, start = cell.partition("@")
            cells.append((sampler.strip(), int(n), float(start or 1.0)))
    return cells


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("encoder_dir", type=Path)
    parser.add_argument("--root", default="outputs/synth")
    parser.add_argument("--subject", type=int, default=1)
    parser.add_argument("--meg", action="store_true", help="a THINGS-MEG-format dataset (psim-synth modality=meg)")
    parser.add_argument("--grid", default=DEFAULT_GRID)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.meg:
        from prosthesis_sim.data.things_meg import load_things_meg

        data = load_things_meg(args.root, subject=args.subject, average_train=False)
    else:
        data = load_things_eeg2(args.root, subject=args.subject, average_train=False)
    encoder = load_component(args.encoder_dir, data)
    images = load_test_images(data)
    norm = data.normalizer
    train = norm(data.train).astype(np.float64)
    measured = norm(data.test_repetitions())
    n_trials = measured.shape[1]
    spatial = st.spatial_components(train)
    acc = lambda x: st.two_sample_accuracy(x, measured, spatial, data.sfreq, seed=0)  # noqa: E731
    ref_a, ref_b = st.half_split(measured, 0)
    rows = [{"sampler": "measured halves (reference)", "steps": 0, "nfe": 0,
             "two_sample_accuracy": st.two_sample_accuracy(ref_a, ref_b, spatial, data.sfreq, seed=0),
             "ms_per_trial": 0.0}]
    mean = norm(encoder.generate(images, seed=0, paths=data.test_images))  # the expected response
    rows.append({"sampler": "cross-spectral Gaussian (baseline)", "steps": 0, "nfe": 0,
                 "two_sample_accuracy": acc(st.spectral_gaussian_trials(mean, train, n_trials, seed=0)),
                 "ms_per_trial": 0.0})
    for sampler, steps, start in parse_grid(args.grid):
        encoder.sampler, encoder.trial_steps, encoder.trial_start = sampler, steps, start
        began = time.perf_counter()
        trials = encoder.sample_trials(images, n_trials, seed=0, paths=data.test_images)
        ms = 1000 * (time.perf_counter() - began) / (len(images) * n_trials)
        rows.append({"sampler": sampler, "steps": steps, "start": start, "nfe": encoder.network_evaluations(steps),
                     "two_sample_accuracy": acc(norm(trials)), "ms_per_trial": ms})
        print(f"{sampler:>20} {steps:>3} steps from {start:.2f} T {rows[-1]['nfe']:>3} NFE  two-sample {rows[-1]['two_sample_accuracy']:.3f}"
              f"  {ms:.2f} ms/trial", flush=True)
    print(f"\n{data.description} {data.subject}: {len(images)} test images x {n_trials} trials, 1 CPU thread\n")
    print("| sampler | steps | from (x T) | network evaluations | two-sample accuracy | ms per trial |\n"
          "|---|---|---|---|---|---|")
    for r in rows:
        start = f"{r['start']:.2f}" if "start" in r else "—"
        print(f"| {r['sampler']} | {r['steps'] or '—'} | {start} | {r['nfe']} | {r['two_sample_accuracy']:.3f} | "
              f"{r['ms_per_trial']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"dataset": data.description, "subject": data.subject, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
