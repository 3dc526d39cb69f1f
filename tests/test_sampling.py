"""Sampling the way diffusers intends (issue 10, section 1): trailing timesteps, per-image noise,
one scheduler per encoder and setting, init_noise_sigma / scale_model_input, and guidance 1 as the
conditional-only path. The fast tests use a tiny DiT with random weights (learning is not the point);
the slow one trains a tiny DiT for a handful of steps on the synthetic dataset."""
from functools import partial

import numpy as np
import pytest
import torch

from prosthesis_sim.encoders.diffusion import SAMPLERS, DiffusionEncoder
from prosthesis_sim.encoders.dit import DiT
from prosthesis_sim.data.dataset import Normalizer
from prosthesis_sim.protocols import Features

N_CH, N_T, N_TOK, DIM = 4, 20, 3, 6


def tiny_encoder(**kw) -> DiffusionEncoder:
    """A tiny DiT with random (not zero-initialised) weights, so the output depends on every input."""
    settings = dict(sampler="ddim", sampling_steps=4, guidance_scale=3.0, n_samples=2, sample_batch_size=64,
                    prediction_type="sample", device="cpu", fp16=False, seed=0)
    enc = DiffusionEncoder(partial(DiT, patch=(None, 5), hidden=16, depth=1, heads=2), features=None,
                           **{**settings, **kw})
    enc._build(N_CH, N_T, N_TOK, DIM, DIM)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in enc.model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    enc.model.eval()
    enc.norm = Normalizer(np.zeros((N_CH, 1), np.float32), np.ones((N_CH, 1), np.float32))
    enc.token_mean, enc.token_std = np.zeros(DIM, np.float32), np.ones(DIM, np.float32)
    enc.pooled_mean, enc.pooled_std = np.zeros(DIM, np.float32), np.ones(DIM, np.float32)
    return enc


@pytest.fixture(scope="module")
def feats() -> Features:
    rng = np.random.default_rng(0)
    return Features(rng.standard_normal((3, N_TOK, DIM)).astype(np.float32),
                    rng.standard_normal((3, DIM)).astype(np.float32))


@pytest.mark.parametrize("sampler", ["ddim", "dpmsolver++", "ddpm"])
@pytest.mark.parametrize("steps", [2, 4, 25])
def test_first_timestep_is_within_one_stride_of_T(sampler, steps):
    enc = tiny_encoder(sampler=sampler, sampling_steps=steps)
    T = enc.noise_scheduler.config.num_train_timesteps
    timesteps = enc.make_sampler().timesteps
    assert len(timesteps) == steps
    assert timesteps[0] >= T - 1 - T // steps  # within one stride of T-1
    assert timesteps[0] == T - 1  # trailing (the default) starts exactly there


def test_leading_spacing_stays_selectable():
    enc = tiny_encoder(sampling_steps=4, timestep_spacing="leading")
    assert enc.make_sampler().timesteps[0] == 750  # where today's few-step sampling started
    with pytest.raises(ValueError, match="timestep_spacing"):
        tiny_encoder(timestep_spacing="backwards")


@pytest.mark.parametrize("sampler", ["ddim", "dpmsolver++", "ddpm"])
def test_an_image_sample_does_not_depend_on_its_batch(feats, sampler):
    enc = tiny_encoder(sampler=sampler)
    all3 = enc.generate_from_features(feats, seed=5)
    alone = enc.generate_from_features(feats[[1]], seed=5)
    np.testing.assert_allclose(alone[0], all3[1], atol=1e-5)
    reordered = enc.generate_from_features(feats[[2, 0, 1]], seed=5)
    np.testing.assert_allclose(reordered, all3[[2, 0, 1]], atol=1e-5)
    for batch in (1, 2, 3):  # 1: one sample per pass (n_samples=2 > 1), 2: one image, 3: uneven chunks
        enc.sample_batch_size = batch
        np.testing.assert_allclose(enc.generate_from_features(feats, seed=5), all3, atol=1e-5)
    assert not np.allclose(enc.generate_from_features(feats, seed=6), all3)  # the seed matters
    assert not np.allclose(all3[0], all3[1])


def test_noise_keys(feats):
    enc = tiny_encoder(guidance_scale=1.0)
    same = enc.generate_from_features(feats[[0, 0]], seed=1)
    np.testing.assert_allclose(same[0], same[1], atol=1e-6)  # the same image, the same noise, by default
    a = enc.generate_from_features(feats[[0]], seed=1, keys=[0])
    b = enc.generate_from_features(feats[[1, 0]], seed=1, keys=[7, 0])
    np.testing.assert_allclose(b[1], a[0], atol=1e-5)  # an explicit key: the noise follows the key
    assert not np.allclose(enc.generate_from_features(feats[[0]], seed=1, keys=[7])[0], a[0])
    assert not np.allclose(enc.generate_from_features(feats[[0]], seed=1)[0], a[0])  # default: the features
    with pytest.raises(ValueError, match="noise keys"):
        enc.generate_from_features(feats, seed=1, keys=[0])


def test_guidance_one_is_the_conditional_only_path(feats, monkeypatch):
    enc = tiny_encoder(guidance_scale=1.0, sampler="dpmsolver++")
    calls = []
    forward = enc.model.forward
    monkeypatch.setattr(enc.model, "forward", lambda x, t, tok, pool: calls.append(len(x)) or forward(x, t, tok, pool))
    plain = enc.generate_from_features(feats, seed=2)
    assert calls == [len(feats) * enc.n_samples] * enc.sampling_steps  # no unconditional pass
    monkeypatch.setattr(DiffusionEncoder, "_guided", lambda self: True)  # force uncond + 1 * (cond - uncond)
    calls.clear()
    forced = enc.generate_from_features(feats, seed=2)
    assert calls == [2 * len(feats) * enc.n_samples] * enc.sampling_steps
    np.testing.assert_allclose(forced, plain, atol=1e-5)
    enc.guidance_scale = 3.0
    assert not np.allclose(enc.generate_from_features(feats, seed=2), plain)


def test_the_sampler_is_built_once_per_setting(feats, monkeypatch):
    enc = tiny_encoder(sampler="dpmsolver++")
    built = []
    cls = SAMPLERS["dpmsolver++"]
    original = cls.from_config.__func__
    monkeypatch.setattr(cls, "from_config", classmethod(lambda c, *a, **k: built.append(1) or original(c, *a, **k)))
    first = enc.generate_from_features(feats, seed=3)
    sampler = enc.make_sampler()
    second = enc.generate_from_features(feats, seed=3)
    assert enc.make_sampler() is sampler and len(built) == 1
    np.testing.assert_array_equal(first, second)  # the multistep state is reset between passes
    enc.sampler = "ddim"
    assert enc.make_sampler() is not sampler
    enc.sampler, enc.sampling_steps = "dpmsolver++", 7
    assert enc.make_sampler() is sampler and len(enc.make_sampler().timesteps) == 7


def test_init_noise_sigma_and_scale_model_input_are_honoured(feats, monkeypatch):
    enc = tiny_encoder(guidance_scale=1.0)
    base = enc.generate_from_features(feats[[0]], seed=4)
    sampler = enc.make_sampler()
    scaled = []
    monkeypatch.setattr(sampler, "scale_model_input", lambda x, t: scaled.append(int(t)) or x)
    np.testing.assert_array_equal(enc.generate_from_features(feats[[0]], seed=4), base)
    assert scaled == [int(t) for t in sampler.timesteps]
    monkeypatch.setattr(sampler, "init_noise_sigma", 0.0)  # no initial noise: another result
    assert not np.allclose(enc.generate_from_features(feats[[0]], seed=4), base)


@pytest.mark.slow
def test_trained_dit_images_do_not_depend_on_their_batch(small_data):
    """The full path (images -> features -> sampler) of a tiny DiT trained for a handful of steps."""
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    from prosthesis_sim.evaluate import load_test_images

    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        cfg = compose("train", overrides=[
            "encoder=dit", "train.checkpoint_dir=null", "encoder.denoiser.hidden=32", "encoder.denoiser.depth=1",
            "encoder.sampling_steps=4", "encoder.n_samples=2", "train.epochs=1", "train.batch_size=64"])
    enc = instantiate(cfg.encoder)
    assert enc.timestep_spacing == "trailing"
    enc.fit(small_data)
    images = load_test_images(small_data)[:3]
    all3 = enc.generate(images, seed=0)
    np.testing.assert_allclose(enc.generate(images[1:2], seed=0)[0], all3[1], atol=1e-5)
    enc.sample_batch_size = 2
    np.testing.assert_allclose(enc.generate(images, seed=0), all3, atol=1e-5)
