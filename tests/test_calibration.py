"""bench/calibration.py: its statistics return known answers on signals built to have them, and run
end to end on a small synthetic dataset."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("calibration", ROOT / "bench" / "calibration.py")
calibration = importlib.util.module_from_spec(spec)
spec.loader.exec_module(calibration)


def test_noise_ceiling_matches_the_reliability_theory():
    """Image signal variance s2, trial noise variance n2, R repetitions: the half-average reliability is
    s2 / (s2 + n2 / (R / 2)) and Spearman-Brown gives the full average's, s2 / (s2 + n2 / R)."""
    rng = np.random.default_rng(0)
    n_img, reps, s2, n2 = 400, 16, 1.0, 8.0
    signal = rng.normal(0, np.sqrt(s2), (n_img, 1, 4, 50))
    test = signal + rng.normal(0, np.sqrt(n2), (n_img, reps, 4, 50))
    times = np.arange(50) / 250
    c = calibration.noise_ceiling(test, times, [0, 1, 2, 3])
    assert c["curve_posterior"] == pytest.approx([s2 / (s2 + n2 / reps)] * 50, abs=0.06)
    assert np.mean(c["curve_posterior"]) == pytest.approx(s2 / (s2 + n2 / reps), abs=0.01)
    noise_only = calibration.noise_ceiling(test - signal, times, [0, 1, 2, 3])
    assert abs(np.mean(noise_only["curve_posterior"])) < 0.02


def test_single_trial_statistics_recover_a_built_spectrum_and_snr():
    """Noise with a 1/f^1.5 power spectrum plus a 10 Hz rhythm, and a known evoked response."""
    rng = np.random.default_rng(1)
    sfreq, n_t, n_img, reps = 250.0, 250, 60, 10
    f = np.fft.rfftfreq(n_t, 1 / sfreq)
    amp = np.where(f > 0, np.maximum(f, 1.0) ** -0.75, 0)
    spec_ = (rng.standard_normal((n_img, reps, 3, len(f))) + 1j * rng.standard_normal((n_img, reps, 3, len(f)))) * amp
    noise = np.fft.irfft(spec_, n=n_t, axis=-1)
    t = np.arange(n_t) / sfreq
    noise += 0.3 * noise.std() * np.cos(2 * np.pi * 10 * t + rng.uniform(0, 2 * np.pi, (n_img, reps, 3, 1)))
    evoked = 2 * noise.std() * np.exp(-0.5 * ((t - 0.15) / 0.03) ** 2)
    s = calibration.single_trial(noise + evoked, t, sfreq, [0, 1, 2])
    assert s["aperiodic_exponent"] == pytest.approx(1.5, abs=0.15)
    assert s["alpha_peak_hz"] == pytest.approx(10, abs=1)
    window = t <= 0.5
    assert s["evoked_snr"] == pytest.approx(np.sqrt((evoked[window] ** 2).mean()) / noise.std(), rel=0.1)
    assert abs(s["image_specific_snr"]) < 0.02  # every image evokes the same: nothing image-specific


@pytest.mark.slow
def test_calibration_runs_on_a_synthetic_dataset(tmp_path):
    from prosthesis_sim.data.synth import synthesize

    root = synthesize(tmp_path / "d", n_subjects=1, n_train_concepts=40, images_per_concept=2, n_test=30,
                      train_reps=2, test_reps=8, image_size=48, progress=False, semantic=1, adaptation=0.3,
                      state_gain=0.1)
    out = tmp_path / "cal.json"
    assert calibration.main([str(root), "--decoder-epochs", "5", "--json", str(out),
                             "--figure", str(tmp_path / "cal.png")]) == 0
    r = json.loads(out.read_text())
    assert r["version"] == 3 and r["n_posterior_channels"] == 17
    c = r["ceiling"]
    assert 0.3 < c["reliability_posterior_peak"] < 1 and 0.05 < c["reliability_posterior_peak_s"] < 0.4
    assert c["reliability_posterior_peak"] <= c["ceiling_posterior_peak"] <= 1
    assert 8 <= r["trials"]["alpha_peak_hz"] <= 12 and 0.5 < r["trials"]["aperiodic_exponent"] < 3
    assert r["encoder"]["top1"] > 3 / 30  # ridge identifies above chance (1/30)
    assert r["decoder"]["n_candidates"] == 30 and 0 <= r["decoder"]["top1"] <= r["decoder"]["top5"] <= 1
    for row in ("encoder", "decoder"):  # per-image hits kept for paired comparisons; intervals around the mean
        hits = np.asarray(r[row]["top1_per_image"])
        assert len(hits) == 30 and hits.mean() == pytest.approx(r[row]["top1"])
        low, high = r[row]["top1_ci"]
        assert low <= r[row]["top1"] <= high and high - low > 0
    assert (tmp_path / "cal.png").stat().st_size > 10_000


@pytest.mark.slow
def test_calibration_reads_a_meg_dataset(tmp_path):
    from prosthesis_sim.data.synth import synthesize

    root = synthesize(tmp_path / "m", n_subjects=1, n_train_concepts=20, images_per_concept=2, n_test=12,
                      train_reps=1, test_reps=6, image_size=48, progress=False, modality="meg", semantic=1,
                      state_gain=0.1)
    r = calibration.calibrate(root, rows=("ceiling", "trials", "decoder"), meg=True, decoder_epochs=3, log=lambda m: None)
    assert r["n_posterior_channels"] > 50 and "encoder" not in r  # CTF occipital + parietal sensors
    assert 0 < r["ceiling"]["reliability_posterior_peak"] < 1 and 8 <= r["trials"]["alpha_peak_hz"] <= 12
    assert r["decoder"]["n_candidates"] == 12
