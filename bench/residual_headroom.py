"""Why the residual DiT's gain is 0: is there a residual that a learned model can find on the concepts
its gain is validated on, and how much of that residual is measurement noise? (issue 22)

    python bench/residual_headroom.py FOLDER [--dit-steps 1500 6000] [--seed 0] [--json FILE]

FOLDER is a synthetic dataset (e.g. one of ``bench/learning_curve.py``'s). The held-out concepts are
``dit_residual``'s own (``encoders/residual.validation_split``, 10 % of the training concepts, the
seed's split), and the observed residual is what its gain is fitted to: the z-scored training
average of each held-out image minus ridge's exact leave-one-out prediction. On those images:

- noise share: the part of the observed residual's variance that is the repetitions' noise (the
  within-image variance of the single trials / the number of repetitions). A predictor that knew
  every noise-free part of the residual would reach r = sqrt(1 - noise share) with it.
- kernel ridge (``bench/learning_curve.KernelRidgeEncoder``, fitted on the other 90 % of the
  concepts): its prediction minus ridge's, scored as the DiT's residual is (``residual_gain``: the
  least-squares gain in [0, 1], the correlation r with its 95 % interval over the held-out images, the
  MSE without and with the gain).
- ``dit_residual`` at each ``--dit-steps`` (batch 64, on the CPU unless ``--device``): the
  ``gain_validation`` it reports.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def headroom(folder: Path, dit_steps=(), seed: int = 0, fraction: float = 0.1, device: str = "cpu",
             log=print) -> dict:
    from hydra.utils import instantiate

    import prosthesis_sim as psim
    from learning_curve import KernelRidgeEncoder, fit_row
    from prosthesis_sim.data.dataset import load_image
    from prosthesis_sim.encoders.residual import residual_gain, validation_split

    trials = psim.load_dataset(folder, average_train=False)  # read once: the noise needs the single trials
    # the training averages, as bench/learning_curve.py fits every row but dit_trials (the loader's averaging)
    data = dataclasses.replace(trials, train=trials.train.mean(axis=1, keepdims=True))
    n_img = data.train.shape[0]
    fit, held = validation_split(data.train_concepts, n_img, fraction, seed)
    norm = data.normalizer
    held_trials = norm(trials.train[held])  # in the averages' z units
    n_rep = held_trials.shape[1]
    noise = float(held_trials.var(axis=1, ddof=1).mean() / n_rep)
    del trials, held_trials
    began = time.perf_counter()
    ridge = instantiate(psim.config("train", ["encoder=ridge", f"seed={seed}"]).encoder)
    ridge.fit(data)
    loo = ridge.held_out_predictions()[held]
    observed = norm(data.train_average()[held]) - loo
    share = noise / float(np.mean(observed ** 2))
    log(f"{folder.name}: {n_img} training images, {len(held)} held out; ridge alpha {ridge.alpha:g} "
        f"({time.perf_counter() - began:.0f} s); noise share of the observed residual {share:.3f}")
    result = {"folder": str(folder), "n_train_images": int(n_img), "n_reps": int(n_rep), "held_out_images": int(len(held)),
              "held_out_concepts": int(len(set(np.asarray(data.train_concepts)[held]))), "ridge_alpha": ridge.alpha,
              "residual_mse": float(np.mean(observed ** 2)), "noise_mse": noise, "noise_share": share,
              "max_r_noise_free": float(np.sqrt(max(0.0, 1 - share))), "rows": {}}

    began = time.perf_counter()
    sub = dataclasses.replace(data, train=data.train[fit], train_images=[data.train_images[i] for i in fit],
                              train_concepts=[data.train_concepts[i] for i in fit])
    krr = KernelRidgeEncoder(instantiate(psim.config("loop", [f"seed={seed}"]).features), seed=seed)
    krr.fit(sub)
    images = [load_image(data.train_images[i]) for i in held]
    predicted = norm(krr.generate(images)) - loo
    result["rows"]["kernel_ridge"] = {**residual_gain(predicted, observed), "alpha": krr.alpha, "gamma": krr.gamma,
                                      "fit_s": time.perf_counter() - began}
    log(f"  kernel ridge: {result['rows']['kernel_ridge']}")
    del sub, krr, predicted

    for steps in dit_steps:
        began = time.perf_counter()
        settings = {"seed": seed, "dit_steps": steps, "dit_validation_fraction": fraction, "device": device,
                    "model_cache": None}
        _, info = fit_row("dit_residual", data, settings)
        result["rows"][f"dit_residual_{steps}"] = {**info["gain_validation"], "steps": info["steps"],
                                                   "fit_s": time.perf_counter() - began}
        log(f"  dit_residual, {info['steps']} steps: {result['rows'][f'dit_residual_{steps}']}")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--dit-steps", type=int, nargs="*", default=[])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = headroom(args.folder, args.dit_steps, args.seed, args.validation_fraction, args.device)
    if args.json:
        from prosthesis_sim.checkpoint import atomic_write_text

        atomic_write_text(args.json, json.dumps(result, indent=1, default=float))
    from learning_curve import bracket

    print("| row | r with the observed residual [95 % interval, held-out images resampled] | gain | "
          "held-out MSE: ridge -> with gain |\n|---|---|---|---|")
    print(f"| (noise-free residual, the bound) | {result['max_r_noise_free']:.3f} | | |")
    for name, row in result["rows"].items():
        print(f"| {name} | {row['r']:+.3f} {bracket(row.get('r_ci'))} | {row['gain']:.3f} | "
              f"{row['mse_regression']:.4f} -> {row['mse_with_gain']:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
