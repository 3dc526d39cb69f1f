"""The paper-size diffusion encoders (unet_paper, dit_paper), narrow: they train, save and load. In a
module of their own so that make test's second worker runs them beside test_encoders.py's DiT."""
import numpy as np
import pytest
from hydra.utils import instantiate

from prosthesis_sim.checkpoint import load_component, save_component
from prosthesis_sim.evaluate import load_test_images
from tests.test_encoders import make

pytestmark = pytest.mark.slow  # trains models: make test-fast leaves this module out


def test_unet_paper_narrow_variant_round_trips(small_data, tmp_path):
    """The paper's UNet on full-size signals (63 x 250): one epoch, saved and loaded, samples the same
    (that it learns is tests/test_learning.py's)."""
    cfg = make("unet_paper", "encoder.denoiser.block_out_channels=[8,16,32,32]", "encoder.denoiser.norm_num_groups=8",
               "encoder.denoiser.cross_attention_dim=32", "encoder.denoiser.layers_per_block=1",
               "encoder.sampling_steps=3", "encoder.sampler=ddim", "train.epochs=1", "train.batch_size=16")
    enc = instantiate(cfg)
    enc.fit(small_data)
    assert len(enc.history) == 8 and np.isfinite(enc.history).all()
    save_component(enc, tmp_path / "unet", cfg)
    imgs = load_test_images(small_data)[:2]
    out = load_component(tmp_path / "unet").generate(imgs, seed=1)
    assert out.shape == (2, 63, 250) and np.isfinite(out).all()
    np.testing.assert_allclose(out, enc.generate(imgs, seed=1), atol=1e-5)


@pytest.mark.parametrize("variant", [
    ["encoder.denoiser.patch=[8,25]", "encoder.denoiser.conditioning=[cross]"],  # 63 channels padded to 64
    ["encoder.denoiser.patch=[7,25]", "encoder.denoiser.conditioning=[add]"],
    ["encoder.denoiser.patch=[7,50]", "encoder.denoiser.conditioning=[concat]"],
    ["encoder.denoiser.patch=[7,25]", "encoder.denoiser.conditioning=[cross]", "encoder.inputs=pooled"],
])
def test_dit_paper_narrow_variants_train_and_round_trip(small_data, tmp_path, variant):
    cfg = make("dit_paper", "encoder.denoiser.hidden=32", "encoder.denoiser.depth=1", "encoder.denoiser.heads=2",
               "encoder.sampling_steps=3", "encoder.n_samples=2", "train.epochs=3", "train.batch_size=32", *variant)
    enc = instantiate(cfg)
    enc.fit(small_data)
    assert enc.model.position == "region" and enc.dims["region_ids"] is not None
    assert enc.model.sensor_proj is not None and len(enc.dims["sensor_positions"]) == small_data.train.shape[2]
    assert np.mean(enc.history[-3:]) < np.mean(enc.history[:3])
    save_component(enc, tmp_path / "dit", cfg)
    again = load_component(tmp_path / "dit")
    imgs = load_test_images(small_data)[:2]
    np.testing.assert_allclose(again.generate(imgs, seed=1), enc.generate(imgs, seed=1), atol=1e-5)
