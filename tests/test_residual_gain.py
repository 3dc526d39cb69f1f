"""The residual gain of regression plus diffusion (encoders/residual.py, issue 9 section 3): exact
leave-one-out ridge predictions, the least-squares gain, whole concepts held out, and an encoder whose
expected response is ridge's plus the validated share of the diffusion's residual mean."""
import numpy as np
import pytest
from sklearn.linear_model import Ridge

from prosthesis_sim.encoders.residual import residual_gain, validation_split
from prosthesis_sim.encoders.ridge import leave_one_out


def test_leave_one_out_equals_refitting_without_the_image():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(25, 40))
    y = x[:, :6] @ rng.normal(size=(6, 9)) + rng.normal(size=(25, 9))
    loo = leave_one_out(x, y, alpha=5.0)
    for i in (0, 11, 24):
        keep = np.arange(25) != i
        refit = Ridge(alpha=5.0).fit(x[keep], y[keep]).predict(x[i:i + 1])[0]
        np.testing.assert_allclose(loo[i], refit, atol=1e-10)
    # and it is not the in-sample fit, which sees the image
    assert np.abs(loo - Ridge(alpha=5.0).fit(x, y).predict(x)).max() > 1e-3


def test_residual_gain_recovers_the_share_and_clips_to_0_1():
    rng = np.random.default_rng(1)
    d = rng.normal(size=(40, 8, 20))
    half = residual_gain(d, 0.5 * d + 0.3 * rng.normal(size=d.shape))
    assert half["gain"] == pytest.approx(0.5, abs=0.03) and half["r"] > 0.7
    assert half["mse_with_gain"] < half["mse_regression"]
    assert residual_gain(d, -d)["gain"] == 0.0  # a harmful residual is left out, not subtracted
    assert residual_gain(d, 3 * d)["gain"] == 1.0  # never more than the diffusion's own estimate
    noise = residual_gain(d, rng.normal(size=d.shape))
    assert noise["gain"] < 0.05 and noise["mse_with_gain"] <= noise["mse_regression"] + 1e-12


def test_validation_split_holds_out_whole_concepts():
    concepts = [f"c{i // 8}" for i in range(400)]  # 50 concepts x 8 images, as the synthetic default
    fit, held = validation_split(concepts, 400, 0.1, seed=0)
    assert len(fit) + len(held) == 400 and not set(fit) & set(held)
    assert len(held) == 40  # 5 whole concepts
    assert not {concepts[i] for i in fit} & {concepts[i] for i in held}
    assert not np.array_equal(held, validation_split(concepts, 400, 0.1, seed=1)[1])
    fit, held = validation_split([], 20, 0.25, seed=0)  # no concepts named: single images
    assert len(held) == 5
    with pytest.raises(ValueError, match="validation_fraction"):
        validation_split(concepts, 400, 0.0, seed=0)
    with pytest.raises(ValueError, match="two concepts"):
        validation_split(["a"] * 5, 5, 0.2, seed=0)


def test_a_bad_residual_gain_is_refused():
    from prosthesis_sim.encoders.diffusion import DiffusionEncoder

    with pytest.raises(ValueError, match="residual_gain='auto' validates"):
        DiffusionEncoder(denoiser=None, features=None, residual_gain="auto")
    with pytest.raises(ValueError, match="encoder.residual_gain must be"):
        DiffusionEncoder(denoiser=None, features=None, residual_gain="half")


@pytest.mark.slow
def test_auto_gain_is_decided_on_concepts_the_diffusion_did_not_see(small_data, tmp_path):
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    from prosthesis_sim.checkpoint import load_component, save_component
    from prosthesis_sim.evaluate import load_test_images

    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        cfg = compose("train", overrides=[
            "encoder=dit_residual", "train.checkpoint_dir=null", "encoder.denoiser.hidden=32",
            "encoder.denoiser.depth=1", "encoder.denoiser.heads=2", "encoder.n_samples=4", "train.epochs=4",
            "train.batch_size=32", "encoder.validation_fraction=0.25"]).encoder
    enc = instantiate(cfg)
    enc.fit(small_data)
    info = enc.gain_validation
    n_train = len(small_data.train_images)
    _, held = validation_split(small_data.train_concepts, n_train, 0.25, seed=cfg.seed)
    assert info["held_out_images"] == len(held) > 0
    # the DiT trained on the other concepts only: 4 epochs over their signals
    assert enc.rank_samples == 4 * (n_train - len(held)) * small_data.train.shape[1]
    assert enc.residual_gain == info["gain"]  # what generate uses is what the held-out images decided
    assert info["mse_with_gain"] <= info["mse_regression"] + 1e-9  # never worse than ridge where it was decided
    images = load_test_images(small_data)[:3]
    ridge = instantiate(cfg.mean_model)  # the regression alone, fitted apart from the encoder
    ridge.fit(small_data)
    full = enc.generate(images, seed=2)
    enc.residual_gain = 0.0  # g = 0: the expected response is the regression's, exactly
    np.testing.assert_allclose(enc.generate(images, seed=2), ridge.generate(images), rtol=1e-4, atol=1e-4)
    enc.residual_gain = info["gain"]
    save_component(enc, tmp_path / "res", cfg)
    again = load_component(tmp_path / "res")
    assert again.residual_gain == enc.residual_gain and again.gain_validation == info
    np.testing.assert_allclose(again.generate(images, seed=2), full, atol=1e-5)
