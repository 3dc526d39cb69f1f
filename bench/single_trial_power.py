"""Why generated single trials are told apart from measured ones: per leading spatial component, their
variance around each image's mean and their log band power, against the measured test trials; then
the realism measures with the trials' deviations scaled, or drawn by other samplers.

Usage (a psim-train run trained on single trials, e.g. outputs/table/trials-dit_residual-s1):
    python bench/single_trial_power.py run=DIR [scales=1,1.2,1.3] [samplers=ddpm:50] [noise=1]

noise=1 adds two rows that need no model: the measured test average plus resampled measured training
residuals (real noise: what a generator that gets the mean and the noise right scores), and plus the
same residuals phase-randomised (one random phase per frequency, shared by the channels: the same
cross-spectra, nothing beyond second order): the gap between them is what non-Gaussian noise (bursty
alpha) adds to the test.
"""
import json
import sys

import numpy as np

from prosthesis_sim.checkpoint import load_component
from prosthesis_sim.eval import single_trials as st
from prosthesis_sim.evaluate import load_test_images
from prosthesis_sim.noise import trial_residuals
from prosthesis_sim.report import dataset_config, load_dataset


def main(args: list[str]) -> None:
    opts = dict(a.split("=", 1) for a in args)
    run = opts["run"]
    data = load_dataset(dataset_config(json.loads(open(f"{run}/metrics.json").read())))
    enc, images, norm = load_component(f"{run}/encoder"), load_test_images(data), data.normalizer
    measured = norm(data.test_repetitions())
    spatial = st.spatial_components(norm(data.train).astype(np.float64))

    def generate():
        return norm(enc.sample_trials(images, measured.shape[1], seed=0, paths=data.test_images))

    gen = generate()
    (_, pg), (_, pm) = st.trial_features(gen, spatial, data.sfreq), st.trial_features(measured, spatial, data.sfreq)
    bands = [f"{lo}-{hi} Hz" for lo, hi in st.BANDS if hi <= data.sfreq / 2][: pg.shape[1] // len(spatial)]

    def comp_var(x):
        return np.einsum("kc,nrct->nrkt", spatial, x - x.mean(1, keepdims=True)).var(axis=(0, 1, 3))

    print(f"{run}: {len(images)} test images x {measured.shape[1]} trials")
    print("| component | variance generated / measured | " + " | ".join(f"log power {b}" for b in bands) + " |")
    print("|---|---|" + "---|" * len(bands))
    ratio, diff = comp_var(gen) / comp_var(measured), (pg.mean(0) - pm.mean(0)).reshape(len(spatial), -1)
    for k in range(len(spatial)):
        print(f"| {k + 1} | {ratio[k]:.2f} | " + " | ".join(f"{d:+.2f}" for d in diff[k]) + " |")
    print("\n| trials | log-spectral distance (dB) | covariance distance | two-sample accuracy |\n|---|---|---|---|")
    for scale in [float(s) for s in opts.get("scales", "1").split(",")]:
        x = gen.mean(1, keepdims=True) + scale * (gen - gen.mean(1, keepdims=True))
        r = st.realism(x, measured, spatial, data.sfreq)
        name = f"as sampled ({enc.sampler}, {enc.trial_steps} steps)" if scale == 1 else f"deviations x {scale:g}"
        print(f"| {name} | {r['log_spectral_distance_db']:.2f} | {r['covariance_distance']:.2f} | "
              f"{r['two_sample_accuracy']:.3f} |", flush=True)
    if opts.get("noise") == "1":
        resid = trial_residuals(norm(data.train).astype(np.float64)).reshape(-1, *measured.shape[2:])
        rng = np.random.default_rng(0)
        real = resid[rng.integers(len(resid), size=measured.shape[0] * measured.shape[1])].reshape(measured.shape)
        spec = np.fft.rfft(real, axis=-1)
        phase = np.exp(1j * rng.uniform(0, 2 * np.pi, (*spec.shape[:2], 1, spec.shape[-1])))
        phase[..., 0] = 1  # the mean (DC) stays real
        surrogate = np.fft.irfft(spec * phase, n=real.shape[-1], axis=-1)
        for name, noise in (("measured mean + training residuals", real),
                            ("measured mean + phase-randomised residuals", surrogate)):
            r = st.realism(measured.mean(1, keepdims=True) + noise, measured, spatial, data.sfreq)
            print(f"| {name} | {r['log_spectral_distance_db']:.2f} | {r['covariance_distance']:.2f} | "
                  f"{r['two_sample_accuracy']:.3f} |", flush=True)
    for spec in [s for s in opts.get("samplers", "").split(",") if s]:
        enc.sampler, enc.trial_steps = spec.split(":")[0], int(spec.split(":")[1])
        r = st.realism(generate(), measured, spatial, data.sfreq)
        print(f"| sampler {spec} | {r['log_spectral_distance_db']:.2f} | {r['covariance_distance']:.2f} | "
              f"{r['two_sample_accuracy']:.3f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
