"""Sampler table: the speed/quality trade of a trained diffusion encoder, as Markdown (and --json).

For every (sampler, steps, samples averaged, guidance) the saved encoder generates the test split of its
own dataset and is scored with the metrics of psim-train; settings not listed stay as saved. For a
regression-plus-diffusion encoder, ``residual_gain=1`` adds the DiT's full residual mean (the saved,
validated gain may be 0, which makes every row the regression's). Usage:
    python bench/sampler_table.py run=outputs/table/dit--s1 [samplers=ddim,dpmsolver++,ddpm] [steps=5,10,25,50]
        [samples=1,8] [guidance=1,3] [residual_gain=1] [--json FILE]
"""
import itertools
import json
import sys
import time
from pathlib import Path

from prosthesis_sim.checkpoint import load_component
from prosthesis_sim.evaluate import load_test_images
from prosthesis_sim.report import dataset_config, evaluate_sampler, load_dataset

KEYS = ("mse", "pcc", "r_across_images", "top1", "top5")


def main(args: list[str]) -> None:
    json_path = None
    if "--json" in args:
        i = args.index("--json")
        json_path, args = Path(args[i + 1]), args[:i] + args[i + 2:]
    opts = dict(a.split("=", 1) for a in args)
    run = Path(opts["run"])
    metrics = json.loads((run / "metrics.json").read_text())
    data = load_dataset(dataset_config(metrics))  # older runs without dataset_config: THINGS-EEG2
    images = load_test_images(data)
    enc = load_component(run / "encoder")
    if "residual_gain" in opts:
        enc.residual_gain = float(opts["residual_gain"])
    samplers = opts.get("samplers", "ddim,dpmsolver++,ddpm").split(",")
    steps = [int(s) for s in opts.get("steps", "5,10,25,50").split(",")]
    samples = [int(s) for s in opts.get("samples", str(enc.n_samples)).split(",")]
    guidance = [float(g) for g in opts.get("guidance", str(enc.guidance_scale)).split(",")]
    gain = getattr(enc, "residual_gain", None) if getattr(enc, "mean_model", None) is not None else None
    print(f"{run}: {data.description}, {data.subject}, {len(images)} test images"
          + (f"; residual gain {gain:g}" if gain is not None else ""))
    print("| sampler | steps | samples | guidance | " + " | ".join(KEYS) + " | s per image |")
    print("|---|---|---|---|" + "---|" * (len(KEYS) + 1))
    rows = []
    for sampler, n, k, g in itertools.product(samplers, steps, samples, guidance):
        enc.n_samples, enc.guidance_scale = k, g
        m = evaluate_sampler(enc, data, images, sampler, n, seed=metrics.get("seed", 0))
        rows.append({"run": str(run), "sampler": sampler, "steps": n, "samples": k, "guidance": g,
                     "residual_gain": gain, **{key: m[key] for key in KEYS},
                     "s_per_image": m["generate_s_per_image"]})
        print(f"| {sampler} | {n} | {k} | {g:g} | " + " | ".join(f"{m[key]:.3f}" for key in KEYS)
              + f" | {m['generate_s_per_image']:.3f} |", flush=True)
    if json_path is not None:
        json_path.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    start = time.perf_counter()
    main(sys.argv[1:])
    print(f"({time.perf_counter() - start:.0f} s)")
