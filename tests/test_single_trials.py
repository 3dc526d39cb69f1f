"""Single-trial realism (issue 9, section 4): the three measures tell realistic trials from unrealistic
ones, the Gaussian baselines carry the training noise covariance, and bad input is named."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from prosthesis_sim.eval import single_trials as st

SFREQ = 100.0
N_IMG, N_TR, N_CH, N_T = 12, 8, 6, 100


def brain_like(seed: int, alpha_gain: float = 1.0, jitter: bool = True) -> np.ndarray:
    """Trials with an evoked response, spatially mixed 1/f-like (AR(1)) noise and a 10 Hz rhythm whose
    power varies from trial to trial (as real alpha does)."""
    rng = np.random.default_rng(seed)
    t = np.arange(N_T) / SFREQ
    evoked = np.sin(2 * np.pi * 3 * t) * np.exp(-t / 0.3)
    mixing = np.random.default_rng(99).standard_normal((N_CH, N_CH))  # one head for every call
    white = rng.standard_normal((N_IMG, N_TR, N_CH, N_T))
    noise = signal.lfilter([1.0], [1.0, -0.9], white, axis=-1)
    amp = rng.lognormal(0.0, 0.8 if jitter else 0.0, (N_IMG, N_TR, 1, 1)) * alpha_gain
    alpha = amp * np.sin(2 * np.pi * 10 * t + rng.uniform(0, 2 * np.pi, (N_IMG, N_TR, 1, 1)))
    image_gain = rng.standard_normal((N_IMG, 1, N_CH, 1))
    return (image_gain * evoked + np.einsum("ij,nrjt->nrit", mixing, noise) * 0.3 + alpha).astype(np.float32)


@pytest.fixture(scope="module")
def measured():
    return brain_like(0)


@pytest.fixture(scope="module")
def spatial():
    return st.spatial_components(brain_like(5), n=4)


def test_same_process_is_indistinguishable_and_a_different_one_is_not(measured, spatial):
    same = st.realism(brain_like(1), measured, spatial, SFREQ)
    stronger_alpha = st.realism(brain_like(2, alpha_gain=5.0), measured, spatial, SFREQ)
    white = st.realism(st.gaussian_trials(measured.mean(axis=1), brain_like(3), N_TR, separable=False),
                       measured, spatial, SFREQ)
    assert same["two_sample_accuracy"] < 0.6
    assert stronger_alpha["two_sample_accuracy"] > 0.7
    assert white["two_sample_accuracy"] > 0.9  # white-in-time noise: a different spectrum
    assert same["log_spectral_distance_db"] < 1.0 < stronger_alpha["log_spectral_distance_db"]
    assert same["covariance_distance"] < stronger_alpha["covariance_distance"]
    # what gives them away: a rhythm's power, not the waveforms
    assert stronger_alpha["two_sample_band_power"] > 0.7 > stronger_alpha["two_sample_waveform"]


def test_the_feature_blocks_tell_waveforms_from_power(measured, spatial):
    shifted = brain_like(1)
    shifted[..., 20:40] += 3.0  # every trial carries an extra deflection: a waveform difference only
    res = st.realism(shifted, measured, spatial, SFREQ)
    assert res["two_sample_waveform"] > 0.9 and res["two_sample_accuracy"] > 0.9
    with pytest.raises(ValueError, match="blocks must be one of"):
        st.two_sample_accuracy(shifted, measured, spatial, SFREQ, blocks="spectra")


def test_identical_trials_have_zero_distances(measured):
    assert st.log_spectral_distance(measured, measured, SFREQ) == pytest.approx(0.0, abs=1e-9)
    assert st.covariance_distance(measured, measured) == pytest.approx(0.0, abs=1e-5)


def test_measured_halves_are_the_reference(measured, spatial):
    ref = st.measured_reference(measured, spatial, SFREQ)
    assert 0.3 < ref["two_sample_accuracy"] < 0.7
    assert ref["log_spectral_distance_db"] < 1.0


def test_separable_baseline_keeps_the_temporal_correlation_spatial_does_not(measured):
    mean = measured.mean(axis=1)
    lag1 = lambda x: float(np.mean([np.corrcoef(r[:-1], r[1:])[0, 1]
                                    for r in (x - x.mean(axis=1, keepdims=True)).reshape(-1, N_T)[:300]]))
    white = st.gaussian_trials(mean, measured, N_TR, separable=False)
    kron = st.gaussian_trials(mean, measured, N_TR, separable=True)
    assert white.shape == kron.shape == measured.shape
    assert abs(lag1(white)) < 0.1  # white in time
    assert abs(lag1(kron) - lag1(measured)) < 0.1  # the measured noise is strongly autocorrelated
    assert st.log_spectral_distance(kron, measured, SFREQ) < st.log_spectral_distance(white, measured, SFREQ)
    # both carry the spatial noise covariance
    for x in (white, kron):
        assert st.covariance_distance(x, measured) < 0.5 * st.covariance_distance(
            mean[:, None] + np.random.default_rng(0).standard_normal(measured.shape).astype(np.float32), measured)


def test_bad_input_is_named(measured, spatial):
    with pytest.raises(ValueError, match="single trials"):
        st.realism(measured[:, 0], measured, spatial, SFREQ)
    bad = measured.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="generated trials contain NaN"):
        st.realism(bad, measured, spatial, SFREQ)
    with pytest.raises(ValueError, match="per trial"):
        st.realism(measured[:, :, :3], measured, spatial, SFREQ)


@pytest.mark.slow
def test_psim_train_on_single_trials_scores_their_realism(synth_root, tmp_path):
    """dataset.average_train=false with a diffusion encoder: psim-train writes single_trials.json and the
    figure's arrays, the report draws them, and the trained model's trials have a more brain-like
    spectrum than the white-in-time baseline (it learned the noise's colour)."""
    from types import SimpleNamespace

    from hydra import compose, initialize_config_module

    from prosthesis_sim.pipeline import train_and_evaluate
    from prosthesis_sim.report.single_trials import single_trial_section

    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        cfg = compose("train", overrides=[
            f"dataset.root={synth_root}", "dataset.average_train=false", "encoder=dit_residual",
            "encoder.denoiser.hidden=32", "encoder.denoiser.depth=1", "encoder.trial_steps=10", "train.epochs=30",
            "train.batch_size=32", "train.checkpoint_dir=null", f"out={tmp_path}"])
    result = train_and_evaluate(cfg, tmp_path)
    rows = result["single_trials"]["rows"]
    assert set(rows) == {"measured halves (reference)", "generated", "baseline: mean + spatial noise",
                         "baseline: mean + space x time noise", "baseline: mean + cross-spectral noise"}
    assert result["single_trials"]["n_trials"] == 16
    white = rows["baseline: mean + spatial noise"]
    assert rows["generated"]["log_spectral_distance_db"] < white["log_spectral_distance_db"]
    assert white["two_sample_accuracy"] > 0.9  # the test sees white noise for what it is
    assert rows["measured halves (reference)"]["two_sample_accuracy"] < 0.7
    assert (tmp_path / "single_trials.json").is_file() and (tmp_path / "single_trials.npz").is_file()

    run = SimpleNamespace(path=tmp_path, label="dit_residual", subject="sub-01")
    lines, csv_rows = single_trial_section([run], tmp_path, "")
    assert "### Single trials" in lines and len(csv_rows) == 5
    assert any("minus the cross-spectral baseline" in line and "paired" in line for line in lines)
    assert (tmp_path / f"single_trials_{tmp_path.name}.png").stat().st_size > 10_000


def test_cross_spectral_baseline_has_the_training_spectra_and_covariance(measured):
    """The cross-spectral baseline carries the noise's colour per channel pair (closer spectra than the
    Kronecker model of the same trials) and its spatial covariance."""
    mean = measured.mean(axis=1)
    spectral = st.spectral_gaussian_trials(mean, measured, N_TR)
    kron = st.gaussian_trials(mean, measured, N_TR, separable=True)
    assert spectral.shape == measured.shape and spectral.dtype == np.float32
    assert st.log_spectral_distance(spectral, measured, SFREQ) < st.log_spectral_distance(kron, measured, SFREQ)
    assert st.covariance_distance(spectral, measured) < 1.0


def test_single_trials_need_single_training_trials(small_data, tmp_path):
    """An averaged training set cannot give the noise covariance of the baselines: a clear error (one
    repetition per image is single trials only when the dataset was not averaged: THINGS-MEG)."""
    from hydra import compose, initialize_config_module

    from prosthesis_sim.pipeline import single_trial_realism

    class Sampler:
        def sample_trials(self, images, n_trials, seed=None, paths=None):
            raise AssertionError("not reached")

    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        cfg = compose("train", overrides=["single_trials.enabled=true", "dataset.average_train=true"])
    with pytest.raises(ValueError, match="dataset.average_train=false"):
        single_trial_realism(cfg, Sampler(), small_data, [], tmp_path)


def test_zca_whitening_of_the_diffusion_target_is_undone_exactly():
    """encoder.whiten: the target is whitened with its own spatial covariance; colouring inverts it."""
    from prosthesis_sim.noise import zca_whitening

    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((N_CH, N_CH))
    target = np.einsum("ij,nrjt->nrit", mixing, rng.standard_normal((40, 4, N_CH, N_T))).astype(np.float32)
    white, colour = zca_whitening(target)
    w = np.einsum("ij,nrjt->nrit", white, target)
    cov = np.cov(np.moveaxis(w, -1, -2).reshape(-1, N_CH), rowvar=False)
    np.testing.assert_allclose(cov, np.eye(N_CH), atol=0.05)  # whitened (up to Ledoit-Wolf shrinkage)
    np.testing.assert_allclose(colour @ white, np.eye(N_CH), atol=1e-4)


def test_spectral_whitening_is_undone_exactly_and_its_colouring_gives_the_cross_spectra():
    """encoder.whiten=spectral: per frequency the target is whitened with its cross-spectral matrix, so the
    whitened target has unit variance in every channel; colouring inverts it, and coloured white noise has
    the target's power spectra (which white noise through the spatial ZCA colouring does not)."""
    from prosthesis_sim.noise import apply_spectral, spectral_whitening, zca_whitening

    x = brain_like(3, jitter=False)
    x = x - x.mean(axis=1, keepdims=True)  # the noise around each image's mean
    white, colour = spectral_whitening(x)
    w = apply_spectral(white, x)
    np.testing.assert_allclose(w.var(axis=(0, 1, 3)), np.ones(N_CH), atol=0.05)
    np.testing.assert_allclose(apply_spectral(colour, w), x, atol=1e-4 * np.abs(x).max())
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(x.shape).astype(np.float32)
    spectral = apply_spectral(colour, noise)
    spatial = np.einsum("ij,nrjt->nrit", zca_whitening(x)[1], noise)
    assert st.log_spectral_distance(spectral, x, SFREQ) < 1.0
    assert st.log_spectral_distance(spatial, x, SFREQ) > 3 * st.log_spectral_distance(spectral, x, SFREQ)


def test_spectral_whitening_keeps_a_rank_deficient_montage_in_its_subspace():
    """Average-referenced data have no power in the all-ones direction; coloured samples have none either."""
    from prosthesis_sim.noise import apply_spectral, spectral_whitening

    x = brain_like(4)
    x = x - x.mean(axis=2, keepdims=True)  # average reference
    _, colour = spectral_whitening(x)
    coloured = apply_spectral(colour, np.random.default_rng(2).standard_normal(x.shape).astype(np.float32))
    assert np.abs(coloured.sum(axis=2)).max() < 1e-4 * np.abs(coloured).max()


def test_the_spectral_transforms_work_in_chunks_with_the_same_result(monkeypatch):
    """THINGS-size single trials (52,928 x 63 x 250) are transformed in chunks of trials so the complex
    spectra never exist all at once; the chunk size changes nothing but memory."""
    import prosthesis_sim.noise as noise

    x = brain_like(5)
    white, colour = noise.spectral_whitening(x)
    whitened = noise.apply_spectral(white, x)
    monkeypatch.setattr(noise, "CHUNK", 7)  # not a divisor of the trial count: a ragged last chunk
    white7, colour7 = noise.spectral_whitening(x)
    np.testing.assert_allclose(white7, white, rtol=1e-5, atol=1e-6 * np.abs(white).max())
    np.testing.assert_allclose(colour7, colour, rtol=1e-5, atol=1e-6 * np.abs(colour).max())
    np.testing.assert_array_equal(noise.apply_spectral(white, x), whitened)
    assert noise.apply_spectral(white, x[0, 0]).shape == x.shape[2:]  # one trial: no leading axes


def test_two_sample_accuracy_per_image_and_the_paired_difference():
    """Per-image accuracies average to the accuracy (equal folds), and the paired difference of two rows
    resolves a real gap (white-in-time noise is told apart, cross-spectral noise much less) and calls
    two identical rows equal."""
    measured = brain_like(6)
    train = brain_like(7)
    mean = measured.mean(axis=1)
    spatial = st.spatial_components(train)
    rows = {"white": st.gaussian_trials(mean, train, N_TR, separable=False),
            "baseline: mean + cross-spectral noise": st.spectral_gaussian_trials(mean, train, N_TR)}
    metrics = {}
    for name, x in rows.items():
        acc, per_image = st.two_sample_accuracy(x, measured, spatial, SFREQ, per_image=True)
        assert per_image.shape == (N_IMG,) and acc == pytest.approx(per_image.mean(), abs=0.02)
        assert acc == st.two_sample_accuracy(x, measured, spatial, SFREQ)
        metrics[name] = {"two_sample_per_image": per_image.tolist()}
    d = st.paired_difference(metrics, "white")
    assert d["resolved"] and d["ci"][0] > 0 and d["n_images"] == N_IMG
    same = st.paired_difference(metrics, "white", reference="white")
    assert same["value"] == 0 and not same["resolved"]


def test_a_bad_whiten_setting_is_refused():
    from prosthesis_sim.encoders.diffusion import DiffusionEncoder

    with pytest.raises(ValueError, match="encoder.whiten must be one of"):
        DiffusionEncoder(denoiser=None, features=None, whiten="temporal")


@pytest.mark.slow
def test_a_spectrally_whitened_encoder_saves_its_colouring_and_samples_the_same_after_loading(small_data, tmp_path):
    """encoder.whiten=spectral: the complex colouring survives safetensors (as real and imaginary parts),
    the loaded encoder draws the same trials, and weights fitted with another whitening are refused."""
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    from prosthesis_sim.checkpoint import load_component, save_component
    from prosthesis_sim.evaluate import load_test_images

    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        cfg = compose("train", overrides=[
            "encoder=dit_residual", "encoder.whiten=spectral", "encoder.prediction_type=v_prediction",
            "train.checkpoint_dir=null", "encoder.denoiser.hidden=32", "encoder.denoiser.depth=1",
            "encoder.denoiser.heads=2", "encoder.trial_steps=4", "train.epochs=2", "train.batch_size=32",
            "encoder.residual_gain=0"]).encoder
    enc = instantiate(cfg)
    enc.fit(small_data)
    assert enc.colour.dtype == np.complex64 and enc.colour.shape[1:] == (small_data.train.shape[2],) * 2
    images = load_test_images(small_data)[:2]
    trials = enc.sample_trials(images, 3, seed=1)
    save_component(enc, tmp_path / "enc", cfg)
    np.testing.assert_allclose(load_component(tmp_path / "enc").sample_trials(images, 3, seed=1), trials, atol=1e-5)
    cfg.whiten = False
    save_component(enc, tmp_path / "other", cfg)  # the weights say spectral, the config says no whitening
    with pytest.raises(ValueError, match="fitted with whiten=spectral"):
        load_component(tmp_path / "other")


@pytest.mark.slow
def test_one_repetition_per_image_takes_the_noise_around_the_mean_model(tmp_path):
    """THINGS-MEG sees every training image once: the baselines' noise is then the training trials around
    the mean model's prediction, and the cross-spectral baseline still matches the measured spectra."""
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    from prosthesis_sim.data.synth import synthesize
    from prosthesis_sim.data.things_eeg2 import load_things_eeg2
    from prosthesis_sim.evaluate import load_test_images

    root = synthesize(tmp_path / "once", n_subjects=1, n_train_concepts=30, images_per_concept=4, n_test=10,
                      train_reps=1, test_reps=8, image_size=48, seed=2, progress=False)
    data = load_things_eeg2(root, subject=1, average_train=False)
    assert data.train.shape[1] == 1
    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        mean = instantiate(compose("train").single_trials.mean)
    mean.fit(data)

    class NoiseAroundMean:  # a stand-in trial sampler: the mean plus white noise (so it is told apart)
        def sample_trials(self, images, n_trials, seed=None, paths=None):
            m = mean.generate(images, paths=paths)
            return m[:, None] + np.random.default_rng(0).standard_normal((len(m), n_trials, *m.shape[1:]))

    for cap in (16384, 60):  # all 120 training trials; the noise statistics from a subset of 60 images
        metrics, _ = st.evaluate_single_trials(NoiseAroundMean(), mean, data, load_test_images(data),
                                               max_noise_trials=cap)
        spectral = metrics["baseline: mean + cross-spectral noise"]
        assert spectral["log_spectral_distance_db"] < 1.0  # the residual noise has the measured spectra
        assert spectral["two_sample_accuracy"] < metrics["generated"]["two_sample_accuracy"]


def test_the_baselines_mean_model_fits_once_through_the_fit_cache(synth_root, tmp_path, monkeypatch):
    """With fit_cache, the single-trial check's mean model (ridge) is fitted once per data and config; a
    second run loads it, with the same predictions (issue 20: the check refitted its own ridge every
    time). The realism measures themselves are tested above; here they are replaced by the mean's output."""
    from hydra import compose, initialize_config_module

    import prosthesis_sim.pipeline as pipeline
    from prosthesis_sim.data.things_eeg2 import load_things_eeg2
    from prosthesis_sim.encoders.ridge import RidgeEncoder

    data = load_things_eeg2(synth_root, subject=1, average_train=False, cache_dir=tmp_path / "features")
    images = [np.full((32, 32, 3), v, np.uint8) for v in (40, 200)]

    class Sampler:
        def generate(self, images, seed=None, paths=None):
            raise AssertionError("not reached: the measures are replaced")

        def sample_trials(self, images, n_trials, seed=None, paths=None):
            raise AssertionError("not reached: the measures are replaced")

    fits, means = [], []
    original = RidgeEncoder.fit
    monkeypatch.setattr(RidgeEncoder, "fit", lambda self, d: (fits.append(1), original(self, d))[1])
    monkeypatch.setattr(pipeline, "evaluate_single_trials",
                        lambda enc, mean, d, imgs, seed, kwargs: (means.append(mean.generate(imgs, seed=0)) or {}, {}))
    monkeypatch.setattr(pipeline, "save_figure_data", lambda path, figure: None)
    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        cfg = compose("train", overrides=["single_trials.enabled=true", "dataset.average_train=false",
                                          f"fit_cache={tmp_path / 'cache'}"])
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        pipeline.single_trial_realism(cfg, Sampler(), data, images, tmp_path / run)
    assert len(fits) == 1
    assert len(list((tmp_path / "cache").glob("single_trials_mean-*"))) == 1
    np.testing.assert_allclose(means[0], means[1], atol=1e-6)
    assert np.abs(means[0][0] - means[0][1]).max() > 0  # a fitted model: two images, two responses
