"""Learning curves: encoder accuracy against the truth vs the number of training concepts (issue 22, section 5).

    python bench/learning_curve.py [--concepts 50 400 1654] [--rows mean_erp ridge kernel_ridge dit_residual]
        [--out outputs/learning_curve] [--images-per-concept 8] [--n-test 200] [--seed 0]
        [--dit-steps 1500] [--json FILE] [--figure FILE.png]
    python bench/learning_curve.py --merge RUN1.json RUN2.json [--json FILE] [--figure FILE.png]

For each training size a synthetic THINGS-EEG2 set (one subject) is synthesized under ``--out`` (a
folder keyed by every argument that changes it, reused when complete), the rows are fitted on it and
their expected responses for the test images are scored against the TRUTH of those images (the
noise-free expected response the generator writes; no model reads it):

- R^2 = 1 - sum_i ||g_i - t_i||^2 / sum_i ||t_i - tbar||^2 over test images i x channels x times, with
  tbar the truth's mean over the test images: the share of the truth's across-image variation the
  generated signals g explain (0: no better than the right image-independent response; mean_erp's
  R^2 is minus its squared distance from that response, <= 0).
- Pearson r: per channel x time, the correlation over test images of generated and true signal,
  averaged over channels x times (0 where the generated signal is the same for every image).
- top-1: n_test-way identification (``eval.identify``, centred Pearson) of image i's truth among the
  generated signals of all test images; chance 1 / n_test, ties broken at random in expectation.

All in one fixed z-scored space: per-channel z-scoring with the mean and standard deviation of the
measured test trials, which are the same at every training size (a fixed test set), so the scale does
not move with the training set (R^2 and r ignore the offset; the weighting of channels is what it
sets). 95 % intervals: percentile bootstrap over test images (2,000 resamples, seed 0, as
``eval.intervals``), every statistic recomputed on each resample (R^2 with the resample's own tbar);
differences vs ridge are paired (the same resamples for both rows).

A fixed test set: ``synthesize`` splits its concepts by a seeded permutation of n_train + n_test, so
the test concepts (and their truth) would change with n_train_concepts. ``--test-set fixed`` (the
default) synthesizes with ``test_split="first"``: the first n_test concepts of the seed's concept
stream are the test concepts and the next n_train the training ones, so every size has the same 200
test images, trials and truth (checked: the JSON records the truth's checksum per size), and the
training concepts of a smaller size are a subset of a larger one's. ``--test-set native`` uses the
default permutation.

Rows: ``mean_erp`` (the floor), ``ridge`` (configs/encoder/ridge.yaml, Gabor features, alpha by
leave-one-out), ``kernel_ridge`` (RBF kernel ridge on the same standardised Gabor features, alpha x
gamma chosen by grouped (concept) k-fold cross-validation on the training images only),
``dit_residual`` (configs/encoder/dit_residual.yaml on the CPU with a step budget, its residual gain
validated on ``--dit-validation-fraction`` of the training concepts; the gain is reported) and
``dit_trials`` (not an expected response: ``trial_realism`` fits configs/encoder/dit_trials.yaml on the
single training trials with the same step budget and scores its test trials by the classifier
two-sample test beside the cross-spectral and white-in-time baselines; above --dit-max-concepts it is
listed as not run, like dit_residual).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prosthesis_sim.data.dataset import Normalizer  # noqa: E402
from prosthesis_sim.eval.identify import chance, identify_sets  # noqa: E402
from prosthesis_sim.eval.intervals import LEVEL, N_RESAMPLES, SEED  # noqa: E402
from prosthesis_sim.eval.single_trials import CROSS_SPECTRAL  # noqa: E402

def _preset_structure(name: str) -> dict:
    """The version-3 knobs as configs/preset/<name>.yaml sets them (one source of truth)."""
    import yaml

    from prosthesis_sim.data.synth import STRUCTURE

    preset = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "preset" / f"{name}.yaml").read_text())
    return {k: float(preset[k]) for k in STRUCTURE if k in preset}


STRUCTURES = {"off": {}, "things": _preset_structure("things")}
ROWS = ("mean_erp", "ridge", "kernel_ridge", "dit_residual", "dit_trials")
METRICS = (("r2", "R^2 vs truth"), ("pearson", "across-image r"), ("top1", "top-1"))
NOT_RUN: dict[str, str] = {}  # rows listed but not fitted (none now)
TRIAL_ROWS = ("generated", CROSS_SPECTRAL, "baseline: mean + spatial noise", "measured halves (reference)")
KRR_ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
KRR_GAMMA_FACTORS = (1 / 16, 1 / 4, 1.0, 4.0)  # x 1 / median squared distance between training images


# ------------------------------------------------------------------------------------------- data

def dataset_folder(out: Path, n_concepts: int, settings: dict) -> Path:
    s = settings
    knobs = "".join(f"_{k}{v:g}" for k, v in sorted((s.get("structure") or {}).items()) if v)
    return Path(out) / (f"c{n_concepts}_ipc{s['images_per_concept']}_test{s['n_test']}_reps{s['train_reps']}x"
                        f"{s['test_reps']}_px{s['image_size']}_seed{s['seed']}_{s['test_set']}{knobs}")


def make_dataset(out: Path, n_concepts: int, settings: dict) -> tuple[Path, float]:
    """The synthetic dataset of one training size: (folder, seconds spent synthesizing; 0 when reused)."""
    from prosthesis_sim.data.synth import is_complete, synthesize

    folder = dataset_folder(out, n_concepts, settings)
    if is_complete(folder):
        return folder, 0.0
    began = time.perf_counter()
    synthesize(folder, n_subjects=1, n_train_concepts=n_concepts, images_per_concept=settings["images_per_concept"],
               n_test=settings["n_test"], train_reps=settings["train_reps"], test_reps=settings["test_reps"],
               image_size=settings["image_size"], seed=settings["seed"], progress=settings.get("progress", False),
               test_split="first" if settings["test_set"] == "fixed" else "random", **(settings.get("structure") or {}))
    return folder, time.perf_counter() - began


# ----------------------------------------------------------------------------------- kernel ridge

class KernelRidgeEncoder:
    """RBF kernel ridge from the standardised Gabor design matrix (ridge's: pooled + tokens) to the
    z-scored training averages (every channel x time point), one (alpha, gamma) for all outputs chosen
    by grouped k-fold cross-validation over training concepts (the test split is zero-shot). With
    more than ``cv_max_images`` training images the choice is made on a subset of whole concepts."""

    def __init__(self, features, folds: int = 3, alphas=KRR_ALPHAS, gamma_factors=KRR_GAMMA_FACTORS,
                 cv_max_images: int = 3200, seed: int = 0):
        self.features, self.folds, self.alphas, self.gamma_factors = features, folds, alphas, gamma_factors
        self.cv_max_images, self.seed = cv_max_images, seed
        self.cv: list[dict] = []

    def _design(self, feats) -> np.ndarray:
        from prosthesis_sim.encoders.ridge import design_matrix

        return design_matrix(feats, "both")

    def fit(self, data) -> None:
        from scipy.linalg import eigh
        from sklearn.metrics.pairwise import euclidean_distances, rbf_kernel
        from sklearn.model_selection import GroupKFold

        from prosthesis_sim.features.cache import cached_features

        x = self._design(cached_features(self.features, data.train_images, data.cache_dir, progress=False))
        self.x_mean, self.x_std = x.mean(0), x.std(0) + 1e-8
        x = (x - self.x_mean) / self.x_std
        self.norm = data.normalizer
        self.shape = data.signal_shape
        y = self.norm(data.train_average()).reshape(len(x), -1)
        groups = np.asarray(data.train_concepts)
        rng = np.random.default_rng(self.seed)
        sub = np.arange(len(x))
        if len(x) > self.cv_max_images:  # choose on whole concepts, at most cv_max_images images
            names = rng.permutation(np.unique(groups))
            per = len(x) / len(names)
            sub = np.flatnonzero(np.isin(groups, names[: max(self.folds, int(self.cv_max_images // per))]))
        xs, gs = x[sub], groups[sub]
        # Targets reduced exactly: the rows of y lie in the span of its right singular vectors, so squared
        # errors of predictions that are linear combinations of training rows are the same in y @ V.
        ys = y[sub].astype(np.float64)
        gram = ys @ ys.T
        lam, u = np.linalg.eigh(gram)
        keep = lam > lam.max() * 1e-10
        yr = u[:, keep] * np.sqrt(lam[keep])
        median = float(np.median(euclidean_distances(xs, squared=True)[np.triu_indices(len(xs), 1)]))
        errors = np.zeros((len(self.gamma_factors), len(self.alphas)))
        for fit_rows, val_rows in GroupKFold(n_splits=self.folds).split(xs, groups=gs):
            y_fit = yr[fit_rows]
            mean = y_fit.mean(0)
            for gi, factor in enumerate(self.gamma_factors):
                gamma = factor / median
                k_ff = rbf_kernel(xs[fit_rows], gamma=gamma)
                k_vf = rbf_kernel(xs[val_rows], xs[fit_rows], gamma=gamma)
                ev, vecs = eigh(k_ff)
                b = k_vf @ vecs
                z = vecs.T @ (y_fit - mean)
                for ai, alpha in enumerate(self.alphas):
                    pred = mean + (b / (ev + alpha)) @ z
                    errors[gi, ai] += ((yr[val_rows] - pred) ** 2).sum()
        gi, ai = np.unravel_index(np.argmin(errors), errors.shape)
        self.alpha, self.gamma = float(self.alphas[ai]), float(self.gamma_factors[gi] / median)
        total = float(((ys - ys.mean(0)) ** 2).sum())  # the CV errors as a share of the targets' variance
        self.cv = [{"gamma_factor": float(g), "alpha": float(a), "cv_mse_share": float(errors[i, j] / total)}
                   for i, g in enumerate(self.gamma_factors) for j, a in enumerate(self.alphas)]
        self.cv_images = int(len(sub))
        self.x_train = x
        self.y_mean = y.mean(0)
        self.y_centred = (y - self.y_mean).astype(np.float32)
        from scipy.linalg import cho_factor

        k = rbf_kernel(x, x, gamma=self.gamma)
        k[np.diag_indices_from(k)] += self.alpha
        self.chol = cho_factor(k, lower=True, overwrite_a=True)

    def generate(self, images, seed=None, paths=None, cache_dir=None) -> np.ndarray:
        from scipy.linalg import cho_solve
        from sklearn.metrics.pairwise import rbf_kernel

        from prosthesis_sim.features.cache import features_for_images

        x = self._design(features_for_images(self.features, images, paths=paths, cache_dir=cache_dir))
        k_tx = rbf_kernel((x - self.x_mean) / self.x_std, self.x_train, gamma=self.gamma)
        coef = cho_solve(self.chol, k_tx.T)  # (n_train, n): K^-1 k(x), then its combination of training rows
        z = self.y_mean + (coef.T.astype(np.float32) @ self.y_centred)
        return self.norm.inverse(z.reshape(len(x), *self.shape).astype(np.float32))


# ------------------------------------------------------------------------------------------ scores

def _resample_weights(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n) counts of each test image in each bootstrap resample."""
    idx = np.random.default_rng(seed).integers(0, n, (n_resamples, n))
    w = np.zeros((n_resamples, n))
    np.add.at(w, (np.repeat(np.arange(n_resamples), n), idx.ravel()), 1.0)
    return w


def metric_samples(pred: np.ndarray, truth: np.ndarray, weights: np.ndarray, chunk: int = 200) -> dict:
    """Each metric on the full test set ('value') and on every bootstrap resample ('samples')."""
    n = len(truth)
    p, t = pred.reshape(n, -1).astype(np.float64), truth.reshape(n, -1).astype(np.float64)
    constant = np.ptp(p, axis=0) == 0  # the same for every image: r is 0 there (mean_erp everywhere)
    sse = ((p - t) ** 2).sum(1)
    top1 = identify_sets(t, p)["top1"]  # query: image i's truth; candidates: the generated signals
    pt, pp, tt = p * t, p * p, t * t

    def stats(w):  # w: (b, n) counts summing to n
        m = w.sum(1, keepdims=True)
        mp, mt = w @ p / m, w @ t / m
        cov, vp, vt = w @ pt / m - mp * mt, w @ pp / m - mp ** 2, w @ tt / m - mt ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(constant | (vp <= 0) | (vt <= 0), 0.0, cov / np.sqrt(np.maximum(vp * vt, 1e-300)))
        ss = (w @ tt.sum(1)) - m[:, 0] * (mt ** 2).sum(1)
        return {"r2": 1 - (w @ sse) / ss, "pearson": r.mean(1), "top1": (w @ top1) / m[:, 0]}

    value = {k: float(v[0]) for k, v in stats(np.ones((1, n))).items()}
    parts = [stats(weights[i:i + chunk]) for i in range(0, len(weights), chunk)]
    samples = {k: np.concatenate([s[k] for s in parts]) for k in value}
    return {"value": value, "samples": samples}


def _interval(samples: np.ndarray) -> tuple[float, float]:
    lo, hi = np.nanpercentile(samples, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return float(lo), float(hi)


def score_rows(preds: dict[str, np.ndarray], truth: np.ndarray, reference: str = "ridge",
               n_resamples: int = N_RESAMPLES, seed: int = SEED) -> tuple[dict, dict]:
    """Per row: each metric with its 95 % interval; per row but the reference: the paired difference."""
    weights = _resample_weights(len(truth), n_resamples, seed)
    raw = {name: metric_samples(p, truth, weights) for name, p in preds.items()}
    scores = {name: {k: {"value": s["value"][k], "ci": _interval(s["samples"][k])} for k in s["value"]}
              for name, s in raw.items()}
    diffs = {}
    if reference in raw:
        ref = raw[reference]
        for name, s in raw.items():
            if name == reference:
                continue
            diffs[name] = {}
            for k in s["value"]:
                lo, hi = _interval(s["samples"][k] - ref["samples"][k])
                diffs[name][k] = {"value": s["value"][k] - ref["value"][k], "ci": (lo, hi),
                                  "resolved": bool(lo > 0 or hi < 0)}
    return scores, diffs


# ------------------------------------------------------------------------------------------- rows

def bracket(ci) -> str:
    """'[low, high]' of an interval, '' where a result has none (runs before intervals were recorded)."""
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""


def _fit_images(data, fraction: float, seed: int) -> int:
    """How many training images a DiT fits: those outside its gain-validation concepts (the encoder's
    own split), which sets its optimiser steps per epoch."""
    from prosthesis_sim.encoders.residual import validation_split

    return len(validation_split(data.train_concepts, len(data.train_images), fraction, seed)[0])


def fit_row(name: str, data, settings: dict):
    """(fitted encoder, info dict) of one row, on ``data``."""
    if settings.get("model_cache") is None:  # a fresh cache folder per fit, so fit times are fit times
        import tempfile

        with tempfile.TemporaryDirectory(prefix="learning_curve_") as tmp:
            return fit_row(name, data, {**settings, "model_cache": Path(tmp)})
    import prosthesis_sim as psim

    seed = settings["seed"]
    cache = settings["model_cache"]
    if name in ("mean_erp", "ridge"):
        return psim.encoder(name, data, [f"seed={seed}"], cache_dir=cache), {}
    if name == "kernel_ridge":
        from hydra.utils import instantiate

        enc = KernelRidgeEncoder(instantiate(psim.config("loop", [f"seed={seed}"]).features),
                                 folds=settings["krr_folds"], cv_max_images=settings["krr_cv_max_images"], seed=seed)
        enc.fit(data)
        best = min(enc.cv, key=lambda c: c["cv_mse_share"])
        return enc, {"alpha": enc.alpha, "gamma_factor": best["gamma_factor"], "gamma": enc.gamma,
                     "cv_folds": enc.folds, "cv_images": enc.cv_images, "cv_mse_share": best["cv_mse_share"],
                     "cv_grid": enc.cv}
    if name == "dit_residual":
        import torch

        torch.set_num_threads(settings.get("torch_threads", 1))
        frac, batch = settings["dit_validation_fraction"], 64
        n_fit = _fit_images(data, frac, seed)
        epochs = max(1, math.ceil(settings["dit_steps"] / math.ceil(n_fit / batch)))
        overrides = [f"seed={seed}", f"train.epochs={epochs}", f"train.batch_size={batch}", "train.checkpoint_dir=null",
                     f"encoder.device={settings.get('device', 'cpu')}", f"encoder.validation_fraction={frac}",
                     "encoder.residual_gain=auto"]
        enc = psim.encoder("dit_residual", data, overrides, cache_dir=cache)
        return enc, {"epochs": epochs, "batch_size": batch, "steps": epochs * math.ceil(n_fit / batch),
                     "validation_fraction": frac, "residual_gain": enc.residual_gain,
                     "gain_validation": enc.gain_validation, "n_samples": enc.n_samples,
                     "sampling_steps": enc.sampling_steps}
    raise ValueError(f"unknown row {name!r}; rows: {', '.join(ROWS)}")


def trial_realism(folder: Path, settings: dict) -> dict:
    """dit_trials fitted on the single training trials (the step budget of --dit-steps), its trials
    for the test images scored by the classifier two-sample test against the measured test trials
    (``eval.single_trials``: 0.5 = indistinguishable), beside the cross-spectral and white-in-time
    Gaussian baselines and the measured halves. The difference generated - cross-spectral gets a 95 %
    bootstrap interval over test images, paired: both rows are told from the same measured trials
    (``eval.single_trials.paired_difference``)."""
    import torch
    from hydra.utils import instantiate

    import prosthesis_sim as psim
    from prosthesis_sim.eval.single_trials import evaluate_single_trials, paired_difference
    from prosthesis_sim.evaluate import load_test_images

    torch.set_num_threads(settings.get("torch_threads", 1))
    seed, batch, frac = settings["seed"], 64, settings["dit_validation_fraction"]
    data = psim.load_dataset(folder, average_train=False)
    n_rows = _fit_images(data, frac, seed) * data.train.shape[1]  # the training trials the DiT fits
    epochs = max(1, math.ceil(settings["dit_steps"] / math.ceil(n_rows / batch)))
    cfg = psim.config("train", ["encoder=dit_trials", "train.checkpoint_dir=null", f"train.epochs={epochs}",
                                f"train.batch_size={batch}", f"seed={seed}", f"encoder.device={settings.get('device', 'cpu')}",
                                f"encoder.validation_fraction={frac}"])
    began = time.perf_counter()
    enc, mean = instantiate(cfg.encoder), instantiate(cfg.single_trials.mean)
    enc.fit(data)
    mean.fit(data)
    fit_s = time.perf_counter() - began
    metrics, _ = evaluate_single_trials(enc, mean, data, load_test_images(data), seed=seed)
    n = 2 * data.test_repetitions().shape[0] * data.test_repetitions().shape[1]  # trials classified per row
    return {"fit_s": fit_s, "epochs": epochs, "steps": epochs * math.ceil(n_rows / batch),
            "n_train_trials": int(data.train.shape[0] * data.train.shape[1]), "n_trials_classified": n,
            "accuracy": {k: float(metrics[k]["two_sample_accuracy"]) for k in TRIAL_ROWS},
            "log_spectral_distance_db": {k: float(metrics[k]["log_spectral_distance_db"]) for k in TRIAL_ROWS},
            "generated_minus_cross_spectral": paired_difference(metrics, "generated")}


def learning_curve(concepts, rows, out, images_per_concept=8, n_test=200, train_reps=4, test_reps=4,
                   image_size=128, seed=0, test_set="fixed", dit_steps=1500, dit_validation_fraction=0.1,
                   krr_folds=3, krr_cv_max_images=3200, n_resamples=N_RESAMPLES, model_cache=None,
                   dit_max_concepts=None, progress=False, log=print, structure=None, device="cpu") -> dict:
    """Synthesize (or reuse) one dataset per training size, fit ``rows`` and score them against the
    truth of the test images. Returns {"settings", "sizes": [...]} (see ``main`` for the table)."""
    import prosthesis_sim as psim
    from prosthesis_sim.evaluate import load_test_images

    settings = dict(images_per_concept=images_per_concept, n_test=n_test, train_reps=train_reps, test_reps=test_reps,
                    image_size=image_size, seed=seed, test_set=test_set, dit_steps=dit_steps,
                    dit_validation_fraction=dit_validation_fraction, krr_folds=krr_folds,
                    krr_cv_max_images=krr_cv_max_images, n_resamples=n_resamples, progress=progress,
                    model_cache=None if model_cache is None else str(model_cache), dit_max_concepts=dit_max_concepts,
                    structure=dict(structure or {}), device=device)
    sizes = []
    for n_concepts in concepts:
        folder, synth_s = make_dataset(Path(out), n_concepts, settings)
        log(f"{n_concepts} concepts: {folder} ({'synthesized in %.0f s' % synth_s if synth_s else 'reused'})")
        data = psim.load_dataset(folder)
        images = load_test_images(data)
        scoring = Normalizer.fit(data.test_repetitions())  # the same at every size (fixed test set)
        truth = scoring(data.test_truth)
        size = {"n_train_concepts": n_concepts, "n_train_images": len(data.train_images), "n_test": len(images),
                "folder": str(folder), "synth_s": synth_s, "reused": synth_s == 0.0,
                "test_concepts_sha1": hashlib.sha1("|".join(data.test_concepts).encode()).hexdigest()[:12],
                "truth_sha1": hashlib.sha1(np.ascontiguousarray(data.test_truth).tobytes()).hexdigest()[:12],
                "rows": {}, "not_run": {}}
        preds = {}
        for name in rows:
            if name in NOT_RUN:
                size["not_run"][name] = NOT_RUN[name]
                continue
            if name == "dit_trials":  # realism, not an expected response: scored on its own (trial_realism)
                if dit_max_concepts is not None and n_concepts > dit_max_concepts:
                    size["not_run"][name] = f"DiT training skipped above --dit-max-concepts {dit_max_concepts} (CPU time)"
                    continue
                size["trials"] = trial_realism(folder, settings)
                t = size["trials"]
                log(f"  dit_trials: fit {t['fit_s']:.0f} s, two-sample accuracy {t['accuracy']['generated']:.3f} vs "
                    f"cross-spectral {t['accuracy'][CROSS_SPECTRAL]:.3f}")
                continue
            if name == "dit_residual" and dit_max_concepts is not None and n_concepts > dit_max_concepts:
                size["not_run"][name] = (f"DiT training skipped above --dit-max-concepts {dit_max_concepts} "
                                         "(CPU time)")
                continue
            began = time.perf_counter()
            enc, info = fit_row(name, data, settings)
            fit_s = time.perf_counter() - began
            began = time.perf_counter()
            kwargs = {"cache_dir": data.cache_dir} if name != "mean_erp" else {}
            preds[name] = scoring(enc.generate(images, seed=seed, paths=data.test_images, **kwargs))
            gen_s = time.perf_counter() - began
            size["rows"][name] = {"fit_s": fit_s, "generate_s": gen_s, **info}
            log(f"  {name}: fit {fit_s:.1f} s, generate {gen_s:.1f} s" +
                (f", gain {info['residual_gain']:.3f}" if "residual_gain" in info else ""))
            del enc
        scores, diffs = score_rows(preds, truth, n_resamples=n_resamples)
        for name, s in scores.items():
            size["rows"][name].update(s)
            if name in diffs:
                size["rows"][name]["vs_ridge"] = diffs[name]
        size["chance_top1"] = chance(len(images))["top1"]
        sizes.append(size)
        del data
    same = len({s["truth_sha1"] for s in sizes}) == 1
    return {"settings": {k: v for k, v in settings.items() if k != "progress"}, "rows": list(rows),
            "fixed_test_set": same, "sizes": sizes}


# ------------------------------------------------------------------------------------- report

def fmt(m: dict) -> str:
    lo, hi = m["ci"]
    return f"{m['value']:.3f} [{lo:.3f}, {hi:.3f}]"


def fmt_diff(m: dict) -> str:
    lo, hi = m["ci"]
    return f"{m['value']:+.3f} [{lo:+.3f}, {hi:+.3f}]" + (" *" if m["resolved"] else "")


def print_table(result: dict) -> None:
    s = result["settings"]
    same = "the same at every size" if result["fixed_test_set"] else "NOT the same across sizes"
    print(f"\nlearning curve: synthetic THINGS-EEG2, 1 subject, {s['images_per_concept']} images per training "
          f"concept, {s['n_test']} test images ({same}), seed {s['seed']}; scored against the truth; 95 % "
          "bootstrap intervals over test images\n")
    head = ["training concepts", "row"] + [t for _, t in METRICS] + [f"{t} - ridge" for _, t in METRICS] + ["fit s"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for size in result["sizes"]:
        for name, row in size["rows"].items():
            gain = f" (g={row['residual_gain']:.2f})" if "residual_gain" in row else ""
            cells = [str(size["n_train_concepts"]), name + gain]
            cells += [fmt(row[k]) for k, _ in METRICS]
            cells += [fmt_diff(row["vs_ridge"][k]) if "vs_ridge" in row else "—" for k, _ in METRICS]
            cells.append(f"{row['fit_s']:.0f}")
            print("| " + " | ".join(cells) + " |")
    print("\n* the paired interval excludes 0; top-1 chance: "
          + ", ".join(f"{z['chance_top1']:.3f} ({z['n_train_concepts']})" for z in result["sizes"]))
    for size in result["sizes"]:
        for name, why in size["not_run"].items():
            print(f"not run at {size['n_train_concepts']}: {name}: {why}")
        krr = size["rows"].get("kernel_ridge")
        if krr:
            print(f"kernel_ridge at {size['n_train_concepts']}: alpha {krr['alpha']}, gamma {krr['gamma_factor']} / "
                  f"median sq. distance, {krr['cv_folds']}-fold concept CV on {krr['cv_images']} training images")
        t = size.get("trials")
        if t:
            d = t["generated_minus_cross_spectral"]
            print(f"dit_trials at {size['n_train_concepts']}: {t['steps']} steps on {t['n_train_trials']} single trials; "
                  "two-sample accuracy (0.5: indistinguishable; " + ", ".join(
                      f"{k} {v:.3f}" for k, v in t["accuracy"].items()) +
                  f"); generated - cross-spectral {d['value']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"
                  + (" *" if d["resolved"] else "") + f" (paired over {d['n_images']} test images; "
                  f"{t['n_trials_classified']} trials classified per row)")
        dit = size["rows"].get("dit_residual")
        if dit:
            g = dit["gain_validation"]
            print(f"dit_residual at {size['n_train_concepts']}: {dit['steps']} steps ({dit['epochs']} epochs), gain "
                  f"{dit['residual_gain']:.3f} validated on {g.get('held_out_images')} held-out images "
                  f"({dit['validation_fraction']:.0%} of the concepts): r {g.get('r', float('nan')):.3f} "
                  f"{bracket(g.get('r_ci'))}, MSE "
                  f"{g.get('mse_regression', float('nan')):.4f} -> {g.get('mse_with_gain', float('nan')):.4f}")


def figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.6))
    names = list(dict.fromkeys(n for s in result["sizes"] for n in s["rows"]))
    for ax, (key, title) in zip(axes, METRICS):
        for j, name in enumerate(names):
            pts = [(s["n_train_concepts"], s["rows"][name][key]) for s in result["sizes"] if name in s["rows"]]
            x = np.array([p[0] for p in pts], float) * (1 + 0.03 * (j - len(names) / 2))  # dodge
            v = np.array([p[1]["value"] for p in pts])
            err = np.array([[p[1]["value"] - p[1]["ci"][0], p[1]["ci"][1] - p[1]["value"]] for p in pts]).T
            err = np.clip(err, 0, None)  # a percentile interval of a ratio can sit beside the full-set value
            ax.errorbar(x, v, yerr=err, marker="o", capsize=3, label=name)
        if key == "top1":
            ax.plot([s["n_train_concepts"] for s in result["sizes"]], [s["chance_top1"] for s in result["sizes"]],
                    "k:", label="chance")
        else:
            ax.axhline(0, color="k", lw=0.5)
        ax.set_xscale("log")
        ax.minorticks_off()
        ticks = [s["n_train_concepts"] for s in result["sizes"]]
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("training concepts")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    n = result["sizes"][0]["n_test"]
    fig.suptitle(f"learning curves vs the truth ({n} test images; 95 % bootstrap intervals over images)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concepts", type=int, nargs="+", default=[50, 400, 1654])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--out", type=Path, default=Path("outputs/learning_curve"), help="synthetic datasets (reused)")
    parser.add_argument("--images-per-concept", type=int, default=8)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--train-reps", type=int, default=4)
    parser.add_argument("--test-reps", type=int, default=4, help="test trials per image: the expected-response rows use only their z-scoring; dit_trials' "
                        "two-sample test classifies them (more: more power)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--test-set", choices=("fixed", "native"), default="fixed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dit-steps", type=int, default=1500, help="DiT optimisation steps per size (batch 64)")
    parser.add_argument("--dit-validation-fraction", type=float, default=0.1,
                        help="share of the training concepts held out of the DiT to validate its residual gain")
    parser.add_argument("--dit-max-concepts", type=int, default=400,
                        help="dit_residual is listed as not run above this many training concepts (0: no limit)")
    parser.add_argument("--krr-folds", type=int, default=3)
    parser.add_argument("--krr-cv-max-images", type=int, default=3200)
    parser.add_argument("--n-resamples", type=int, default=N_RESAMPLES)
    parser.add_argument("--model-cache", type=Path, help="fit cache of ridge/mean_erp/dit_residual (default: none, "
                        "every row is fitted afresh and its fit time measured; features stay cached with the data)")
    parser.add_argument("--structure", choices=("off", "things"), default="off",
                        help="the simulated brain's version-3 structure: off (version 2) or as preset=things sets it "
                        "(configs/preset/things.yaml: semantic, adaptation, state_gain, noise_gain)")
    parser.add_argument("--device", default="cpu", help="the DiT rows' torch device (cuda on a GPU machine: "
                        "bench/gpu_learning_curve.sh)")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--figure", type=Path)
    parser.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                        help="fit nothing: join the sizes of earlier --json runs (e.g. sizes run in parallel) "
                        "into one table, --json and --figure")
    args = parser.parse_args(argv)
    if args.merge:
        runs = [json.loads(path.read_text()) for path in args.merge]
        sizes = sorted((s for r in runs for s in r["sizes"]), key=lambda s: s["n_train_concepts"])
        result = {**runs[0], "sizes": sizes, "rows": list(dict.fromkeys(n for r in runs for n in r["rows"])),
                  "fixed_test_set": len({s["truth_sha1"] for s in sizes}) == 1,
                  "wall_s": sum(r.get("wall_s", 0.0) for r in runs)}
        print_table(result)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1, default=float))
        if args.figure:
            figure(result, args.figure)
        return 0
    began = time.perf_counter()
    result = learning_curve(args.concepts, args.rows, args.out, args.images_per_concept, args.n_test, args.train_reps,
                            args.test_reps, args.image_size, args.seed, args.test_set, args.dit_steps,
                            args.dit_validation_fraction, args.krr_folds, args.krr_cv_max_images, args.n_resamples,
                            args.model_cache, args.dit_max_concepts or None, args.progress,
                            log=lambda m: print(m, flush=True), structure=STRUCTURES[args.structure],
                            device=args.device)
    result["wall_s"] = time.perf_counter() - began
    print_table(result)
    print(f"\nwall time {result['wall_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float))
    if args.figure:
        figure(result, args.figure)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
