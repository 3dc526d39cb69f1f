"""Sampler table: the speed/quality trade of a trained diffusion encoder, as Markdown.

For every (sampler, steps) the saved encoder generates the test split of its own dataset, with the
sampling settings it was saved with otherwise (guidance, number of averaged samples), and is scored
with the metrics of psim-train. Usage:
    python bench/sampler_table.py run=outputs/table/dit--s1 [samplers=ddim,dpmsolver++,ddpm] [steps=5,10,25,50]
"""
import json
import sys
import time
from pathlib import Path

from prosthesis_sim.checkpoint import load_component
from prosthesis_sim.evaluate import load_test_images
from prosthesis_sim.report import dataset_config, evaluate_sampler, load_dataset

KEYS = ("mse", "pcc", "r_across_images", "top1", "top5")


def main(args: list[str]) -> None:
    opts = dict(a.split("=", 1) for a in args)
    run = Path(opts["run"])
    samplers = opts.get("samplers", "ddim,dpmsolver++,ddpm").split(",")
    steps = [int(s) for s in opts.get("steps", "5,10,25,50").split(",")]
    metrics = json.loads((run / "metrics.json").read_text())
    data = load_dataset(dataset_config(metrics))  # older runs without dataset_config: THINGS-EEG2
    images = load_test_images(data)
    enc = load_component(run / "encoder")
    print(f"{run}: {data.description}, {data.subject}, {len(images)} test images; guidance {enc.guidance_scale}, "
          f"{enc.n_samples} samples averaged per image")
    print("| sampler | steps | " + " | ".join(KEYS) + " | s per image |")
    print("|---|---|" + "---|" * (len(KEYS) + 1))
    for sampler in samplers:
        for n in steps:
            m = evaluate_sampler(enc, data, images, sampler, n, seed=metrics.get("seed", 0))
            print(f"| {sampler} | {n} | " + " | ".join(f"{m[k]:.3f}" for k in KEYS)
                  + f" | {m['generate_s_per_image']:.3f} |", flush=True)


if __name__ == "__main__":
    start = time.perf_counter()
    main(sys.argv[1:])
    print(f"({time.perf_counter() - start:.0f} s)")
