"""What the percept score can reach when a decoder knows the image: bounds for reading psim-eval.

For each test image of a dataset, the phosphene percept of (a) the image itself (the ceiling), (b) its
own grey thumbnail at 2 x 2, 4 x 4 and 8 x 8 (a decoder that recovered the coarse luminance layout
perfectly), (c) the blend of the k training thumbnails most correlated with it (the best a retrieval
decoder with that gallery can do) and (d) a constant grey (the floor), scored against the image with
the loop's Pearson r; normalised = (score - floor) / (ceiling - floor).

    python bench/percept_bounds.py [--root outputs/synth] [--subject 1] [--phosphene argus_scoreboard] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import OmegaConf

from prosthesis_sim import configs
from prosthesis_sim.decoders.ridge_pixels import grey_thumbnail
from prosthesis_sim.data.dataset import load_image
from prosthesis_sim.data.things_eeg2 import load_things_eeg2
from prosthesis_sim.metrics import correlation_matrix
from prosthesis_sim.scores import image_scores, to_grey


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="outputs/synth")
    parser.add_argument("--subject", type=int, default=1)
    parser.add_argument("--phosphene", default="argus_scoreboard")
    parser.add_argument("--json")
    args = parser.parse_args()
    data = load_things_eeg2(args.root, subject=args.subject)
    phosphene = instantiate(OmegaConf.load(Path(configs.__file__).parent / "phosphene" / f"{args.phosphene}.yaml")).build()
    images = [load_image(p) for p in data.test_images]
    train = np.stack([grey_thumbnail(load_image(p), (32, 32)) for p in data.train_images])

    def score(decoded) -> float:
        return float(np.mean([image_scores(im, phosphene(d))["pearson"] for im, d in zip(images, decoded)]))

    rows = {"ceiling (the image)": score([to_grey(im) for im in images]),
            "floor (constant grey)": score([np.full((32, 32), 0.5, np.float32)] * len(images))}
    for size in (2, 4, 8):
        rows[f"own {size} x {size} thumbnail"] = score([grey_thumbnail(im, (size, size)) for im in images])
    best = np.argsort(-correlation_matrix(np.stack([grey_thumbnail(im, (32, 32)) for im in images]), train), axis=1)
    for k in (1, 5, 20):
        rows[f"best {k} training thumbnails"] = score([train[idx[:k]].mean(0) for idx in best])
    floor, ceiling = rows["floor (constant grey)"], rows["ceiling (the image)"]
    print(f"{args.root} subject {args.subject}, {len(images)} test images, {args.phosphene}")
    print(f"{'percept of':<30}{'Pearson':>9}{'normalised':>12}")
    out = []
    for name, value in rows.items():
        norm = (value - floor) / (ceiling - floor)
        out.append({"percept_of": name, "pearson": value, "normalised": norm})
        print(f"{name:<30}{value:>9.3f}{norm:>12.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
