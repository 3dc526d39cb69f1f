"""Encoders learn: each trained model must beat the mean-ERP floor on held-out identification."""
import copy

import numpy as np
import torch
import pytest
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from prosthesis_sim.checkpoint import fit_cached, load_component, save_component
from prosthesis_sim.data.dataset import load_image
from prosthesis_sim.evaluate import evaluate_encoder, load_test_images

pytestmark = pytest.mark.slow  # trains models: make test-fast leaves this module out


def make(encoder, *overrides):
    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        cfg = compose("train", overrides=[f"encoder={encoder}", "train.checkpoint_dir=null", *overrides])
    return cfg.encoder


def beats_chance(n_test: int, p_value: float = 1e-3) -> float:
    """The top-1 accuracy that a guess at random (1 / n_test per image) reaches with probability under
    ``p_value`` (binomial tail): 6 of 20 test images (p = 3e-4); 2 of 20 happen by chance a quarter of the time."""
    from scipy.stats import binom

    k = next(k for k in range(n_test + 1) if binom.sf(k - 1, n_test, 1 / n_test) < p_value)
    return k / n_test


@pytest.fixture(scope="module")
def images(small_data):
    return load_test_images(small_data)


@pytest.fixture(scope="module")
def floor(small_data, images):
    enc = instantiate(make("mean_erp"))
    enc.fit(small_data)
    return enc, evaluate_encoder(enc, small_data, images)


def test_mean_erp_is_the_training_average(small_data, floor):
    enc, metrics = floor
    np.testing.assert_allclose(enc.generate([None, None])[1], small_data.train.mean((0, 1)), rtol=1e-5)
    assert metrics["top1"] == pytest.approx(1 / len(small_data.test))


def test_ridge_beats_mean_erp(small_data, images, floor):
    enc = instantiate(make("ridge"))
    enc.fit(small_data)
    metrics = evaluate_encoder(enc, small_data, images)
    assert beats_chance(len(small_data.test)) == 6 / 20
    assert metrics["top1"] >= beats_chance(len(small_data.test)), metrics
    assert metrics["pcc"] > floor[1]["pcc"]


@pytest.fixture(scope="module")
def trained_dit(small_data, tmp_path_factory):
    """The full-size ``dit`` config (63 x 250), trained briefly: for the mechanics below (fit cache, round
    trip, seeds, samplers). That it learns is tests/test_learning.py's (a permutation test per model)."""
    cfg = make("dit", "train.epochs=20", "train.batch_size=32")
    enc, directory = fit_cached(cfg, small_data, tmp_path_factory.mktemp("cache"), "dit")
    return cfg, enc, directory


def test_dit_training_lowers_its_loss(trained_dit):
    _, enc, _ = trained_dit
    assert len(enc.history) == 20 * 4 and enc.history[-1] < 0.8 * enc.history[0]  # a loss per step: 120 images / 32


def test_dit_checkpoint_round_trip(small_data, images, trained_dit, tmp_path):
    cfg, enc, directory = trained_dit
    assert (directory / "weights.safetensors").is_file() and (directory / "config.yaml").is_file()
    again, _ = fit_cached(cfg, small_data, directory.parent, "dit")  # cached: loads, does not refit
    assert again.history == []
    a = enc.generate(images[:3], seed=7)
    np.testing.assert_allclose(again.generate(images[:3], seed=7), a, atol=1e-5)
    assert not np.allclose(enc.generate(images[:3], seed=8), a)  # the seed matters
    assert a.shape == (3, 63, 250) and a.dtype == np.float32


def test_samplers_are_swappable(trained_dit, images):
    _, enc, _ = trained_dit
    saved = enc.sampler, enc.sampling_steps, enc.n_samples, enc.guidance_scale
    try:
        for sampler, steps, n, g in (("ddpm", 20, 1, 1.0), ("dpmsolver++", 10, 2, 2.0)):
            enc.sampler, enc.sampling_steps, enc.n_samples, enc.guidance_scale = sampler, steps, n, g
            out = enc.generate(images[:2], seed=0)
            assert np.isfinite(out).all() and out.shape == (2, 63, 250)
    finally:
        enc.sampler, enc.sampling_steps, enc.n_samples, enc.guidance_scale = saved


def test_fit_cache_refits_when_the_data_change(small_data, tmp_path):
    cfg = make("mean_erp")
    _, first = fit_cached(cfg, small_data, tmp_path, "floor")
    _, same = fit_cached(cfg, small_data, tmp_path, "floor")
    changed = copy.copy(small_data)
    changed.train = small_data.train[:-1]
    _, other = fit_cached(cfg, changed, tmp_path, "floor")
    assert first == same and other != first


def test_ridge_pixels_decoder_reads_measured_signals(small_data):
    from prosthesis_sim.decoders.ridge_pixels import RidgePixels, grey_thumbnail

    dec = RidgePixels(size=(16, 16))
    dec.fit(small_data)
    decoded = dec.decode(small_data.test_average())
    truth = np.stack([grey_thumbnail(img, (16, 16)) for img in load_test_images(small_data)])
    err = np.mean((decoded - truth) ** 2)
    mean_image = np.stack([grey_thumbnail(img, (16, 16)) for img in map(load_image, small_data.train_images)]).mean(0)
    assert decoded.shape == (len(truth), 16, 16) and decoded.min() >= 0 and decoded.max() <= 1
    assert err < np.mean((mean_image - truth) ** 2)  # beats guessing the mean training image



def test_region_position_groups_channels_by_region():
    from prosthesis_sim.encoders.dit import DiT
    from prosthesis_sim.data.regions import REGIONS, region_ids
    from tests.fixtures.nice import CH63

    ids = region_ids(CH63)
    dit = DiT(63, 250, 4, 5, 6, region_ids=ids, patch=(8, 25), position="region")
    share = dit.region_share
    assert share.shape == (8, len(REGIONS)) and torch.allclose(share.sum(1), torch.ones(8))
    assert share[-1, REGIONS.index("occipital")] == 1  # the last group: PO4 PO8 O1 Oz O2 (+1 padded row)
    with pytest.raises(ValueError, match="region id per channel"):
        DiT(63, 250, 4, 5, 6, patch=(8, 25), position="region")


class PathRecordingGabor:
    """A path-aware extractor (like caption features) that records which files it was asked about."""

    uses_paths = True

    def __init__(self):
        from prosthesis_sim.features.gabor import GaborFeatures

        self.inner, self.seen = GaborFeatures(), []
        self.cache_id = "recording-" + self.inner.cache_id

    def __call__(self, images, paths=None):
        self.seen.append(None if paths is None else list(paths))
        return self.inner(images)


def test_evaluation_gives_path_aware_features_the_test_files(small_data, tmp_path):
    from prosthesis_sim.encoders.ridge import RidgeEncoder

    extractor = PathRecordingGabor()
    enc = RidgeEncoder(extractor)
    enc.fit(small_data)
    assert extractor.seen[-1] is not None  # training images come with their files
    evaluate_encoder(enc, small_data)
    assert extractor.seen[-1] == list(small_data.test_images)  # so do test images, for their captions
    enc.generate(load_test_images(small_data)[:1])
    assert extractor.seen[-1] is None  # a camera frame has no file


def test_streamed_tokens_train_the_same_model(small_data, monkeypatch):
    """Token arrays too large for memory are read per batch from the cache: same model as in memory."""
    import prosthesis_sim.encoders.diffusion as diffusion
    import prosthesis_sim.encoders.diffusion_parts as diffusion_parts

    cfg = make("dit", "encoder.denoiser.hidden=32", "encoder.denoiser.depth=1", "train.epochs=2",
               "train.batch_size=16")
    in_memory = instantiate(cfg)
    in_memory.fit(small_data)
    reads = []
    read = diffusion.DiffusionEncoder._read_tokens
    monkeypatch.setattr(diffusion, "STREAM_TOKENS_BYTES", 0)
    monkeypatch.setattr(diffusion_parts, "STAT_CHUNK", 7)  # statistics over several chunks, the last one short
    monkeypatch.setattr(diffusion.DiffusionEncoder, "_read_tokens", lambda self, *a: reads.append(1) or read(self, *a))
    streamed = instantiate(cfg)
    streamed.fit(small_data)
    assert len(reads) == len(streamed.history) > 0  # every training step read its batch from the array
    np.testing.assert_allclose(streamed.token_std, in_memory.token_std, rtol=1e-5)
    a, b = in_memory.model.state_dict(), streamed.model.state_dict()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-5, msg=k)


# --- issue 12: cached test features, pooled only, progress in logs, size check -----------------


class CountingGabor:
    """Gabor features with their own cache key, counting the images computed; ``big_tokens`` pads the
    tokens to CLIP-like size (over ridge's 'auto' limit) and, like CLIP, can skip them."""

    skips_tokens = True

    def __init__(self, big_tokens: bool = False):
        from prosthesis_sim.features.gabor import GaborFeatures

        self.inner, self.big_tokens, self.images, self.asked_tokens = GaborFeatures(), big_tokens, 0, []
        self.cache_id = f"counting{int(big_tokens)}-" + self.inner.cache_id

    def __call__(self, images, tokens=True):
        from prosthesis_sim.protocols import Features

        self.images += len(images)
        if len(images):  # a call on no images asks for the shapes only
            self.asked_tokens.append(tokens)
        feats = self.inner(images)
        if not tokens:
            return Features(np.zeros((len(images), 0, 0), np.float32), feats.pooled)
        if self.big_tokens:  # 16 x 320 = 5120 values per image
            return Features(np.tile(feats.tokens, (1, 1, 20)), feats.pooled)
        return feats


def _own_cache(data, tmp_path):
    """The dataset with a feature cache of the test's own (the session's dataset is shared)."""
    data = copy.copy(data)
    data.cache_dir = tmp_path / "features"
    return data


def test_test_features_are_cached_for_evaluations_and_reports(small_data, tmp_path):
    from prosthesis_sim.encoders.ridge import RidgeEncoder
    from prosthesis_sim.report.scoring import _Recording

    data = _own_cache(small_data, tmp_path)
    extractor = CountingGabor()
    enc = RidgeEncoder(extractor)
    enc.fit(data)
    assert extractor.images == len(data.train_images)
    first = evaluate_encoder(enc, data)
    assert extractor.images == len(data.train_images) + len(data.test_images)
    again = evaluate_encoder(enc, data)  # a second evaluation ...
    report = evaluate_encoder(_Recording(enc), data)  # ... and a report rebuild read the cached features
    assert extractor.images == len(data.train_images) + len(data.test_images)
    assert again["pcc"] == pytest.approx(first["pcc"]) and report["top1"] == first["top1"]
    # camera frames have no file: computed, never cached
    enc.generate(load_test_images(data)[:2])
    assert extractor.images == len(data.train_images) + len(data.test_images) + 2


def test_ridge_on_large_tokens_computes_and_caches_pooled_only(small_data, tmp_path):
    from prosthesis_sim.encoders.ridge import RidgeEncoder

    data = _own_cache(small_data, tmp_path)
    extractor = CountingGabor(big_tokens=True)
    enc = RidgeEncoder(extractor)  # inputs=auto: 5120 token values per image is over the limit -> pooled
    enc.fit(data)
    evaluate_encoder(enc, data)
    assert enc.inputs_used == "pooled" and extractor.asked_tokens and not any(extractor.asked_tokens)
    files = sorted(p.name.split(".")[-2] for p in data.cache_dir.glob("*.npy"))
    assert files == ["pooled", "pooled"]  # training and test images: no token arrays on disk
    save_component(enc, tmp_path / "ridge", {"_target_": "prosthesis_sim.encoders.ridge.RidgeEncoder",
                                             "features": {"_target_": "prosthesis_sim.features.gabor.GaborFeatures"}})
    assert load_component(tmp_path / "ridge").inputs_used == "pooled"


def test_diffusion_training_reports_progress_to_logs_and_caches_test_features(small_data, tmp_path, caplog,
                                                                              monkeypatch):
    import io
    import sys

    data = _own_cache(small_data, tmp_path)
    cfg = make("dit", "encoder.denoiser.hidden=32", "encoder.denoiser.depth=1", "train.epochs=2",
               "train.batch_size=16", "encoder.sampling_steps=2", "encoder.n_samples=1")
    enc = instantiate(cfg)
    enc.features = extractor = CountingGabor()
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # output to a log file, not a terminal
    with caplog.at_level("INFO", logger="prosthesis_sim.progress"):
        enc.fit(data)
    lines = [r.getMessage() for r in caplog.records if r.name == "prosthesis_sim.progress"]
    train = [line for line in lines if line.startswith("train DiT:")]
    assert any(line.startswith(f"features {extractor.cache_id}:") for line in lines)
    assert len(train) >= 5 and "(100 %)" in train[-1] and "loss=" in train[-1] and "epoch=2/2" in train[-1], lines
    evaluate_encoder(enc, data)
    counted = extractor.images
    evaluate_encoder(enc, data)
    assert extractor.images == counted == len(data.train_images) + len(data.test_images)


def test_dit_size_is_checked_with_a_message():
    from prosthesis_sim.encoders.dit import DiT

    dims = dict(n_channels=63, n_times=250, n_tokens=16, token_dim=16, pooled_dim=34)
    with pytest.raises(ValueError, match=r"hidden=64 is not divisible by encoder.denoiser.heads=6.*hidden=60 or 66"):
        DiT(**dims, hidden=64, heads=6)
    with pytest.raises(ValueError, match=r"encoder.denoiser.heads=0: must be a positive integer"):
        DiT(**dims, hidden=64, heads=0)
    with pytest.raises(ValueError, match=r"encoder.denoiser.depth=0"):
        DiT(**dims, hidden=64, heads=4, depth=0)
    dit = DiT(**dims, hidden=66, heads=6, depth=1)  # the width the message suggests: 6 heads of 11
    out = dit(torch.zeros(2, 63, 250), torch.tensor([0, 999]), torch.zeros(2, 16, 16), torch.zeros(2, 34))
    assert out.shape == (2, 63, 250) and torch.isfinite(out).all()
    # from the config: at construction, before any feature is computed
    with pytest.raises(Exception, match=r"encoder.denoiser.hidden=64 is not divisible by encoder.denoiser.heads=6"):
        instantiate(make("dit_paper", "encoder.denoiser.hidden=64"))


def test_residual_diffusion_keeps_the_regression_mean(small_data, images, floor, tmp_path):
    """CorrDiff-style: ridge plus diffusion on its residual is never far from ridge's mean, beats the
    floor, and round-trips through save/load (ridge state included)."""
    ridge = instantiate(make("ridge"))
    ridge.fit(small_data)
    ridge_scores = evaluate_encoder(ridge, small_data, images)
    cfg = make("dit_residual", "encoder.denoiser.hidden=32", "encoder.denoiser.depth=1", "encoder.denoiser.heads=2",
               "encoder.sampling_steps=4", "encoder.n_samples=4", "train.epochs=8", "train.batch_size=32")
    enc = instantiate(cfg)
    enc.fit(small_data)
    assert 0 < enc.residual_scale < 1  # ridge explains part of the signal; the DiT models the rest
    scores = evaluate_encoder(enc, small_data, images)
    assert scores["mse"] < floor[1]["mse"] and scores["top1"] >= beats_chance(len(small_data.test)), scores
    # the mean is ridge's plus the validated share of the residual's: never worse than ridge (here, with
    # no residual to learn, within 2 % of its error and as image-specific)
    assert scores["mse"] <= 1.02 * ridge_scores["mse"] and scores["r_across_images"] >= 0.9 * ridge_scores["r_across_images"]
    save_component(enc, tmp_path / "res", cfg)
    again = load_component(tmp_path / "res")
    np.testing.assert_allclose(again.generate(images[:2], seed=1), enc.generate(images[:2], seed=1), atol=1e-5)
