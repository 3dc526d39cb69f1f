"""Calibration statistics of a (synthetic or real) THINGS-EEG2-format dataset, to set beside the
published recordings' (issue 22, section 2; docs/synthetic-data.md "Calibration").

    python bench/calibration.py DATASET [--meg] [--subject 1] [--rows ceiling trials encoder decoder]
        [--decoder-epochs 300] [--json FILE] [--figure FILE.png]

Every statistic is computed the way the papers compute it, so a real THINGS-EEG2 folder gives the
numbers to compare with (the loader is the toolkit's; nothing reads the synthetic truth):

- **Noise ceiling over time** (Gifford et al. 2022): the test trials split into two halves (first
  and second half of the repetitions), each averaged; per channel and time point the Pearson r across
  the test images of the two half-averages (split-half reliability), Spearman-Brown corrected to all
  repetitions. Reported over time for the 17 occipito-parietal channels and all channels; the peak,
  its latency and the 0-50 ms mean (before any visual response: about 0 on real data).
- **Single-trial SNR and spectrum**: the evoked response (mean over all test trials) against the
  single-trial residual (trial minus its image's average): RMS of the evoked response over 0-0.5 s on
  the 17 channels over the residual's sd (amplitude SNR), and the image-specific SNR (across-image
  variance of the image averages, bias-corrected for their noise, over the single-trial noise
  variance). Residual power spectra (Welch, 1 s epochs, posterior channels): the aperiodic exponent
  (log-log line fit over 2-40 Hz without 7-14 Hz), the alpha peak frequency and its height over the fit.
- **Zero-shot identification with a linearising encoder** (Gifford et al. 2022): ridge from Gabor
  features (configs/encoder/ridge.yaml) fitted on the training averages synthesizes each test
  image's response; each measured test average (all repetitions) is identified among the 200
  synthesized responses (centred Pearson); top-1 with a bootstrap interval over images, chance 1/200.
  Also the encoding accuracy: per channel x time the r across images of synthesized vs measured,
  averaged on the 17 channels, and as a fraction of the noise ceiling.
- **200-way decoding** (NICE/UBP protocol): the toolkit's contrastive decoder (configs/decoder/
  embedding.yaml, UBP's EEGProject with InfoNCE) trained on the training averages into a Gabor-feature
  space; each test average is embedded and the 200 test images ranked by cosine; top-1 / top-5 with
  intervals, chance 0.5 % / 2.5 %. Not NICE's CLIP target: no CLIP weights here, so the comparison
  with 15.6 % / 42.8 % is of the protocol, not of the same decoder (docs say how that matters).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import scipy.signal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prosthesis_sim.metrics import _spearman_brown_ceiling, across_image_r  # noqa: E402

# Gifford et al.'s 17 occipito-parietal channels (tests/fixtures/nice.py)
POSTERIOR = ("P7", "P5", "P3", "P1", "Pz", "P2", "P4", "P6", "P8", "PO7", "PO3", "POz", "PO4", "PO8", "O1", "Oz", "O2")
MEG_POSTERIOR = ("MLO", "MRO", "MZO", "MLP", "MRP", "MZP")  # CTF occipital and parietal sensors
ALPHA_BAND = (7.0, 14.0)
APERIODIC_BAND = (2.0, 40.0)


def noise_ceiling(test: np.ndarray, times: np.ndarray, chans: list[int]) -> dict:
    """Split-half reliability over time of the test averages, Spearman-Brown corrected to all
    repetitions (``reliability_*``), and the noise ceiling of a model's r against the full average,
    its square root (``ceiling_*``): what a perfect encoder would reach."""
    half = test.shape[1] // 2
    r = across_image_r(test[:, :half].mean(1).astype(np.float64), test[:, half : 2 * half].mean(1).astype(np.float64))
    ceiling, reliability = _spearman_brown_ceiling(r)  # reliability of the full average, and its square root
    post, every = reliability[chans].mean(0), reliability.mean(0)
    ceil_post = ceiling[chans].mean(0)
    early = (times >= 0) & (times < 0.05)
    return {"n_images": int(test.shape[0]), "n_repetitions": int(test.shape[1]),
            "split_half_r_posterior_peak": float(r[chans].mean(0).max()),
            "reliability_posterior_peak": float(post.max()), "reliability_posterior_peak_s": float(times[post.argmax()]),
            "reliability_all_peak": float(every.max()), "reliability_posterior_0_50ms": float(post[early].mean()),
            "reliability_posterior_mean_0_1s": float(post.mean()),
            "ceiling_posterior_peak": float(ceil_post.max()),
            "curve_times": times.tolist(), "curve_posterior": post.tolist(), "curve_all": every.tolist(),
            "curve_ceiling_posterior": ceil_post.tolist()}


def single_trial(test: np.ndarray, times: np.ndarray, sfreq: float, chans: list[int]) -> dict:
    """SNRs and the residual spectrum of single test trials (images, reps, channels, times)."""
    n, reps = test.shape[:2]
    means = test.mean(1)
    resid = (test - means[:, None]).astype(np.float64) * np.sqrt(reps / (reps - 1))  # unbiased per-trial noise
    evoked = means.mean(0)
    window = (times >= 0) & (times <= 0.5)
    noise_sd = resid[:, :, chans].std()
    snr_evoked = float(np.sqrt((evoked[chans][:, window] ** 2).mean()) / noise_sd)
    across = means[:, chans][..., window].var(0).mean()  # includes noise variance / reps
    noise_var = (resid[:, :, chans][..., window] ** 2).mean()
    snr_image = float((across - noise_var / reps) / noise_var)
    f, p = scipy.signal.welch(resid[:, :, chans], fs=sfreq, nperseg=resid.shape[-1], axis=-1)
    p = p.mean(axis=(0, 1, 2))
    fit = (f >= APERIODIC_BAND[0]) & (f <= APERIODIC_BAND[1]) & ~((f >= ALPHA_BAND[0]) & (f <= ALPHA_BAND[1]))
    slope, intercept = np.polyfit(np.log10(f[fit]), np.log10(p[fit]), 1)
    band = (f >= ALPHA_BAND[0]) & (f <= ALPHA_BAND[1])
    above = np.log10(p[band]) - (intercept + slope * np.log10(f[band]))
    return {"evoked_snr": snr_evoked, "image_specific_snr": snr_image, "single_trial_sd": float(test.std()),
            "aperiodic_exponent": float(-slope), "alpha_peak_hz": float(f[band][above.argmax()]),
            "alpha_peak_over_aperiodic_db": float(10 * above.max()),
            "spectrum_hz": f.tolist(), "spectrum_power": p.tolist()}


def _identification(ids: dict) -> dict:
    """Top-1 / top-5 with 95 % bootstrap intervals over the test images (``eval.intervals``), and the
    per-image hits, so that two runs on the same images can be compared paired."""
    from prosthesis_sim.eval.intervals import mean_interval

    out = {}
    for k in ("top1", "top5"):
        value, low, high = mean_interval(ids[k])
        out.update({k: value, f"{k}_ci": [low, high], f"{k}_per_image": np.asarray(ids[k], int).tolist()})
    return out


def encoder_identification(data, seed: int, chans: list[int], ceiling: dict) -> dict:
    """Gifford et al.'s zero-shot identification with the toolkit's ridge (linearising) encoder."""
    import tempfile

    import prosthesis_sim as psim
    from prosthesis_sim.evaluate import load_test_images
    from prosthesis_sim.eval.identify import identify_sets

    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="calibration_") as tmp:
        enc = psim.encoder("ridge", data, [f"seed={seed}"], cache_dir=tmp)
        generated = enc.generate(load_test_images(data), seed=seed, paths=data.test_images, cache_dir=data.cache_dir)
    measured = data.test_average()
    ids = identify_sets(measured, generated, ks=(1, 5))
    r = across_image_r(generated.astype(np.float64), measured.astype(np.float64))[chans].mean(0)
    peak = int(r.argmax())
    return {"fit_s": time.perf_counter() - began, "n_candidates": len(measured),
            **_identification(ids), "encoding_r_posterior_peak": float(r[peak]), "encoding_r_peak_s": float(data.times[peak]),
            "encoding_r_over_ceiling_at_peak": float(r[peak] / max(ceiling["curve_ceiling_posterior"][peak], 1e-9)),
            "curve_encoding_r": r.tolist()}


def decoder_identification(data, seed: int, epochs: int) -> dict:
    """200-way top-1 / top-5 of the toolkit's contrastive decoder (configs/decoder/embedding.yaml, its
    target space Gabor features), NICE's protocol: each test average among the 200 test images, ranked
    as psim-eval ranks them (``eval.decodability``)."""
    import torch
    from hydra.utils import instantiate

    import prosthesis_sim as psim
    from prosthesis_sim.eval.decodability import identification_per_image

    torch.manual_seed(seed)
    cfg = psim.config("loop", ["decoder=embedding", "features@decoder_features=gabor", f"decoder.epochs={epochs}",
                               f"seed={seed}"])
    dec = instantiate(cfg.decoder)
    began = time.perf_counter()
    dec.fit(data)
    ids = identification_per_image(dec.embed(data.test_average()),
                                   dec.embed_files(data.test_images, cache_dir=data.cache_dir))
    return {"fit_s": time.perf_counter() - began, "features": type(dec.features).__name__,
            "best_epochs": dec.best_epochs, "n_candidates": len(ids["top1"]),
            **_identification(ids)}


def calibrate(root, subject: int = 1, seed: int = 0, decoder_epochs: int = 300, rows=("ceiling", "trials", "encoder", "decoder"),
              meg: bool = False, log=print) -> dict:
    import prosthesis_sim as psim

    began = time.perf_counter()
    data = psim.load_dataset(root, subject=subject, meg=meg)
    log(f"loaded {root} subject {subject} in {time.perf_counter() - began:.0f} s: train {data.train.shape}, "
        f"test trials {data.test_raw.shape}")
    if meg:
        chans = [i for i, c in enumerate(data.ch_names) if c.startswith(MEG_POSTERIOR)]
    else:
        chans = [data.ch_names.index(c) for c in POSTERIOR if c in data.ch_names]
    synth = Path(root) / "synth.json"
    result = {"dataset": str(root), "subject": subject, "seed": seed, "n_posterior_channels": len(chans),
              "generator": json.loads(synth.read_text()).get("args") if synth.is_file() else None,
              "version": json.loads(synth.read_text()).get("version") if synth.is_file() else None}
    test = data.test_raw
    result["ceiling"] = noise_ceiling(test, data.times, chans)
    log(f"split-half reliability (Spearman-Brown): {result['ceiling']['reliability_posterior_peak']:.3f} at "
        f"{result['ceiling']['reliability_posterior_peak_s']:.3f} s")
    if "trials" in rows:
        result["trials"] = single_trial(test, data.times, data.sfreq, chans)
        log("single trials: " + ", ".join(f"{k} {v:.3g}" for k, v in result["trials"].items() if not isinstance(v, list)))
    if "encoder" in rows:
        result["encoder"] = encoder_identification(data, seed, chans, result["ceiling"])
        log(f"ridge zero-shot identification: top-1 {result['encoder']['top1']:.3f} {result['encoder']['top1_ci']}")
    if "decoder" in rows:
        result["decoder"] = decoder_identification(data, seed, decoder_epochs)
        log(f"decoder 200-way: top-1 {result['decoder']['top1']:.3f}, top-5 {result['decoder']['top5']:.3f}")
    result["wall_s"] = time.perf_counter() - began
    return result


# Published values beside which the table sets the simulator's (source; what is not at hand says so).
PUBLISHED = {
    "eeg": {
        "decoder_top1": "NICE 15.6, ATM 28.5, UBP 50.9 % (subject means; Song et al. 2024, Li et al. 2024, Wu et al. 2025)",
        "decoder_top5": "NICE 42.8, ATM 60.4, UBP 79.7 %",
        "encoder_top1": "Gifford et al. 2022 (linearising encoders of DNN features): not at hand offline",
        "reliability": "Gifford et al. 2022 (noise ceiling over time): not at hand offline",
        "aperiodic": "about 1-2 in scalp EEG (Donoghue et al. 2020; literature range)",
        "alpha": "8-12 Hz, near 10 Hz in adults (Klimesch 1999; literature range)",
    },
    "meg": {
        "decoder_top1": "UBP 26.7 % (Wu et al. 2025)",
        "decoder_top5": "UBP 55.2 %",
        "reliability": "Hebart et al. 2023: not at hand offline",
        "aperiodic": "literature range as for EEG",
        "alpha": "8-12 Hz",
    },
}
TABLE_ROWS = (  # (label, section, key, format, published key)
    ("200-way decoding top-1, test averages (chance 0.5 %)", "decoder", "top1", "pct", "decoder_top1"),
    ("200-way decoding top-5 (chance 2.5 %)", "decoder", "top5", "pct", "decoder_top5"),
    ("zero-shot identification, ridge encoder, 200 candidates", "encoder", "top1", "pct", "encoder_top1"),
    ("split-half reliability of the test averages, posterior peak (latency)", "ceiling", "reliability_posterior_peak",
     "peak", "reliability"),
    ("the same, mean over 0-1 s", "ceiling", "reliability_posterior_mean_0_1s", "f3", "reliability"),
    ("single-trial evoked SNR (RMS of the ERP 0-0.5 s / noise sd)", "trials", "evoked_snr", "f3", None),
    ("single-trial image-specific SNR (variance ratio)", "trials", "image_specific_snr", "f3", None),
    ("aperiodic exponent of the residual spectrum (2-40 Hz)", "trials", "aperiodic_exponent", "f2", "aperiodic"),
    ("alpha peak (height over the aperiodic fit)", "trials", "alpha_peak_hz", "alpha", "alpha"),
)


def _cell(result: dict, section: str, key: str, fmt: str) -> str:
    part = result.get(section)
    if part is None:
        return "not run"
    v = part[key]
    if fmt == "pct":
        lo, hi = part[f"{key}_ci"]
        return f"{100 * v:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
    if fmt == "peak":
        return f"{v:.3f} ({1000 * part['reliability_posterior_peak_s']:.0f} ms)"
    if fmt == "alpha":
        return f"{v:.0f} Hz (+{part['alpha_peak_over_aperiodic_db']:.1f} dB)"
    return f"{v:.{fmt[1]}f}"


def table(results: list[dict], labels: list[str], modality: str = "eeg") -> str:
    """A markdown table: one row per statistic, the published value, then one column per run."""
    published = PUBLISHED[modality]
    lines = ["| statistic | published | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for label, section, key, fmt, pub in TABLE_ROWS:
        if all(section not in r for r in results):
            continue
        cells = [_cell(r, section, key, fmt) for r in results]
        lines.append(f"| {label} | {published.get(pub, '—') if pub else '—'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = result["ceiling"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    t = np.array(c["curve_times"]) * 1000
    axes[0].plot(t, c["curve_posterior"], label=f"split-half reliability (Spearman-Brown), {result['n_posterior_channels']} posterior sensors")
    axes[0].plot(t, c["curve_all"], label="the same, all sensors", alpha=0.7)
    axes[0].plot(t, c["curve_ceiling_posterior"], "k--", lw=1, label="noise ceiling of a model's r (its square root)")
    if "encoder" in result:
        axes[0].plot(t, result["encoder"]["curve_encoding_r"], label="ridge encoding r, posterior sensors")
    axes[0].set(xlabel="time after onset (ms)", ylabel="r across the test images",
                title=f"test averages of {c['n_repetitions']} repetitions, {c['n_images']} images")
    axes[0].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)
    if "trials" in result:
        s = result["trials"]
        f, p = np.array(s["spectrum_hz"]), np.array(s["spectrum_power"])
        keep = (f >= 1) & (f <= 100)
        axes[1].loglog(f[keep], p[keep])
        axes[1].set(xlabel="frequency (Hz)", ylabel="single-trial residual power",
                    title=f"exponent {s['aperiodic_exponent']:.2f}, alpha {s['alpha_peak_hz']:.0f} Hz "
                          f"(+{s['alpha_peak_over_aperiodic_db']:.1f} dB)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", type=Path, nargs="?")
    p.add_argument("--table", type=Path, nargs="+", metavar="JSON",
                   help="compute nothing: print the markdown table of earlier --json runs (columns in this order)")
    p.add_argument("--labels", nargs="+", help="column names for --table (default: the JSON files' names)")
    p.add_argument("--subject", type=int, default=1)
    p.add_argument("--meg", action="store_true", help="a THINGS-MEG-format dataset (posterior: CTF occipital and parietal sensors)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--decoder-epochs", type=int, default=300)
    p.add_argument("--rows", nargs="+", default=["ceiling", "trials", "encoder", "decoder"],
                   choices=["ceiling", "trials", "encoder", "decoder"])
    p.add_argument("--json", type=Path)
    p.add_argument("--figure", type=Path)
    args = p.parse_args(argv)
    if args.table:
        results = [json.loads(path.read_text()) for path in args.table]
        print(table(results, args.labels or [path.stem for path in args.table], "meg" if args.meg else "eeg"))
        if args.figure:  # the last run's curves
            figure(results[-1], args.figure)
        return 0
    if args.dataset is None:
        p.error("a DATASET folder (or --table JSON ...) is required")
    result = calibrate(args.dataset, args.subject, args.seed, args.decoder_epochs, args.rows, args.meg)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(args.json)
    if args.figure:
        figure(result, args.figure)
    summary = {k: {kk: vv for kk, vv in v.items() if not isinstance(vv, list) or kk.endswith("_ci")}
               if isinstance(v, dict) else v for k, v in result.items()}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
