"""Feature extractors (Gabor, CLIP with a tiny random model) and the on-disk feature cache."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from omegaconf import OmegaConf

from hydra.utils import instantiate
from prosthesis_sim.features.cache import cached_features, features_for_images
from prosthesis_sim.features.clip import ClipFeatures
from prosthesis_sim.features.gabor import GaborFeatures
from prosthesis_sim.protocols import FeatureExtractor, Features

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "features"


def grating(vertical: bool, size: int = 128, period: float = 1 / 0.16 * 128 / 96) -> np.ndarray:
    """A full-contrast sinusoidal grating at the extractor's middle frequency (after resizing)."""
    coord = np.arange(size)[None, :] if vertical else np.arange(size)[:, None]
    lum = 0.5 + 0.5 * np.sin(2 * np.pi * coord / period)
    grey = np.broadcast_to(lum, (size, size))
    return np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()]


@pytest.fixture(scope="module")
def gabor() -> GaborFeatures:
    return GaborFeatures()


# --- Gabor -----------------------------------------------------------------------------------


def test_gabor_shapes_dtypes_and_id(gabor, photos):
    feats = gabor(photos)
    assert isinstance(gabor, FeatureExtractor)
    assert feats.tokens.shape == (3, 16, 16) and feats.tokens.dtype == np.float32
    assert feats.pooled.shape == (3, 34) and feats.pooled.dtype == np.float32
    assert len(gabor.token_names) == 16 and len(gabor.pooled_names) == 34
    assert np.isfinite(feats.tokens).all() and np.isfinite(feats.pooled).all()
    assert gabor.cache_id == "gabor-s96-g4-f0.08_0.16_0.32-o4-c1"

    grey = GaborFeatures(image_size=64, grid=2, frequencies=(0.1, 0.2), n_orientations=6, colour=False)
    feats = grey(photos[:2])
    assert feats.tokens.shape == (2, 4, 2 * 6 + 2) and feats.pooled.shape == (2, 2 * 14 + 1)
    assert grey.cache_id == "gabor-s64-g2-f0.1_0.2-o6-c0"


def test_gabor_standardised_scale(gabor, photos):
    """Fixed transforms put every token feature on a comparable, order-one scale for photos."""
    tokens = gabor(photos).tokens.reshape(-1, 16)
    assert np.abs(tokens.mean(axis=0)).max() < 2.5
    assert 0.3 < tokens.std(axis=0).min() and tokens.std(axis=0).max() < 2.5  # every feature varies, none explodes


def test_gabor_deterministic(gabor, photos):
    a, b = gabor(photos), GaborFeatures()(photos)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.pooled, b.pooled)


def test_gabor_orientation_selectivity(gabor):
    feats = gabor([grating(vertical=True), grating(vertical=False)])
    mid = 4  # the 0.16 cycles/pixel block of 4 orientations: o0 = vertical stripes, o2 = horizontal
    vertical, horizontal = feats.tokens[0, :, mid : mid + 4].mean(0), feats.tokens[1, :, mid : mid + 4].mean(0)
    # log-energy units of the standardised scale: 1 unit is a factor exp(1.8) in energy
    assert vertical[0] - vertical[2] > 3 and horizontal[2] - horizontal[0] > 3
    assert vertical.argmax() == 0 and horizontal.argmax() == 2
    # luminance/contrast/colour of the two gratings are the same up to phase
    np.testing.assert_allclose(feats.pooled[0, 12:16], feats.pooled[1, 12:16], atol=0.1)


def test_gabor_photos_differ_more_than_noise(gabor, photos):
    rng = np.random.default_rng(0)
    noisy = np.clip(photos[0] + rng.normal(0, 4, photos[0].shape), 0, 255).astype(np.uint8)
    feats = gabor([photos[0], noisy, photos[1]])
    flat = np.concatenate([feats.tokens.reshape(3, -1), feats.pooled], axis=1)
    assert np.linalg.norm(flat[0] - flat[1]) * 5 < np.linalg.norm(flat[0] - flat[2])


def test_gabor_batch_invariance(gabor, photos):
    alone = gabor([photos[1]])
    together = gabor([photos[0], photos[1], photos[2], grating(True)])
    np.testing.assert_allclose(together.tokens[1], alone.tokens[0], atol=1e-4)
    np.testing.assert_allclose(together.pooled[1], alone.pooled[0], atol=1e-4)


def test_gabor_rejects_non_uint8(gabor):
    with pytest.raises(ValueError, match="uint8 RGB"):
        gabor([np.zeros((32, 32), np.uint8)])


# --- CLIP ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    """A random-weight CLIP vision model and processor saved like a real checkpoint folder."""
    from transformers import AutoImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    folder = tmp_path_factory.mktemp("tiny_clip")
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=16)
    torch.manual_seed(0)
    CLIPVisionModelWithProjection(config).save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    assert AutoImageProcessor.from_pretrained(folder, local_files_only=True) is not None
    return folder


def test_clip_shapes_and_matches_direct_call(tiny_clip, photos):
    from transformers import AutoImageProcessor, CLIPVisionModelWithProjection

    clip = ClipFeatures(model=str(tiny_clip), batch_size=2)
    assert clip._model is None  # lazy: nothing loaded until the first call
    assert isinstance(clip, FeatureExtractor)
    assert str(tiny_clip) in clip.cache_id and "float32" in clip.cache_id
    feats = clip(photos)
    assert feats.tokens.shape == (3, 17, 32) and feats.tokens.dtype == np.float32
    assert feats.pooled.shape == (3, 16) and feats.pooled.dtype == np.float32

    model = CLIPVisionModelWithProjection.from_pretrained(tiny_clip, local_files_only=True).eval()
    pixels = AutoImageProcessor.from_pretrained(tiny_clip, local_files_only=True)(
        images=photos, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        out = model(pixel_values=pixels)
    np.testing.assert_allclose(feats.tokens, out.last_hidden_state.numpy(), atol=1e-5)
    np.testing.assert_allclose(feats.pooled, out.image_embeds.numpy(), atol=1e-5)


def test_clip_missing_checkpoint_is_a_clear_error(tmp_path, photos):
    missing = tmp_path / "no_such_clip"
    clip = ClipFeatures(model=str(missing))  # constructing is fine: loading is lazy
    with pytest.raises(FileNotFoundError) as err:
        clip(photos[:1])
    message = str(err.value)
    assert str(missing) in message
    assert "huggingface-cli download" in message and "features.model=" in message


def test_clip_rejects_fp16_on_cpu():
    with pytest.raises(ValueError, match="CUDA"):
        ClipFeatures(dtype="float16", device="cpu")


# --- cache -----------------------------------------------------------------------------------


class CountingExtractor:
    """Wraps an extractor and counts the images it is asked to process."""

    def __init__(self, inner):
        self.inner, self.cache_id, self.calls, self.images = inner, inner.cache_id, 0, 0

    def __call__(self, images):
        self.calls += 1
        self.images += len(images)
        return self.inner(images)


@pytest.fixture()
def image_files(tmp_path, photos) -> list[Path]:
    paths = []
    for i, img in enumerate(photos + [grating(True), grating(False)]):
        paths.append(tmp_path / f"img{i}.png")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return paths


def test_cache_round_trip_and_reuse(tmp_path, image_files, gabor):
    counting = CountingExtractor(gabor)
    cache = tmp_path / "cache"
    first = cached_features(counting, image_files, cache, batch_size=2, progress=False)
    assert counting.calls == 3 and counting.images == 5  # batches of 2, 2, 1
    assert len(list(cache.glob("*.npy"))) == 2 and not list(cache.glob("*.tmp"))

    second = cached_features(counting, image_files, cache, batch_size=2, progress=False)
    assert counting.calls == 3  # served from disk
    np.testing.assert_array_equal(first.tokens, second.tokens)
    np.testing.assert_array_equal(first.pooled, second.pooled)

    uncached = cached_features(gabor, [str(p) for p in image_files], None, progress=False)
    np.testing.assert_allclose(second.tokens, uncached.tokens, atol=1e-5)
    np.testing.assert_allclose(second.pooled, uncached.pooled, atol=1e-5)


def test_cache_invalidated_by_changed_file_or_settings(tmp_path, image_files, gabor):
    counting = CountingExtractor(gabor)
    cache = tmp_path / "cache"
    before = cached_features(counting, image_files, cache, progress=False)

    edited = image_files[0]
    stat = edited.stat()
    cv2.imwrite(str(edited), cv2.cvtColor(grating(False, size=96), cv2.COLOR_RGB2BGR))
    os.utime(edited, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = cached_features(counting, image_files, cache, progress=False)
    assert counting.calls == 2
    assert not np.allclose(before.tokens[0], after.tokens[0])
    np.testing.assert_array_equal(before.tokens[1:], after.tokens[1:])

    other = CountingExtractor(GaborFeatures(grid=2))
    assert cached_features(other, image_files, cache, progress=False).tokens.shape[1] == 4
    assert other.calls == 1


def test_features_for_images_batches(gabor, photos):
    counting = CountingExtractor(gabor)
    feats = features_for_images(counting, photos, batch_size=2)
    assert isinstance(feats, Features) and counting.calls == 2 and len(feats) == 3
    np.testing.assert_allclose(feats.tokens, gabor(photos).tokens, atol=1e-5)
    empty = features_for_images(gabor, [], batch_size=2)
    assert empty.tokens.shape == (0, 16, 16) and empty.pooled.shape == (0, 34)


# --- configs ---------------------------------------------------------------------------------


def test_configs_instantiate():
    gabor = instantiate(OmegaConf.load(CONFIGS / "gabor.yaml"))
    assert isinstance(gabor, GaborFeatures) and gabor.cache_id == GaborFeatures().cache_id
    clip = instantiate(OmegaConf.load(CONFIGS / "clip.yaml"))
    assert isinstance(clip, ClipFeatures) and clip._model is None
    assert clip.cache_id == "clip-openai/clip-vit-large-patch14-float32"


# --- pooled-only features, cached test images, progress in logs (issue 12) ---------------------


class TokenSkipping(CountingExtractor):
    """A counting extractor that can skip its tokens (like CLIP) and records how it was asked."""

    skips_tokens = True

    def __init__(self, inner):
        super().__init__(inner)
        self.asked_tokens = []

    def __call__(self, images, tokens=True):
        self.asked_tokens.append(tokens)
        feats = super().__call__(images)
        return feats if tokens else Features(np.zeros((len(images), 0, 0), np.float32), feats.pooled)


def test_pooled_only_cache_holds_no_tokens_and_is_not_taken_for_a_full_one(tmp_path, image_files, gabor):
    cache = tmp_path / "cache"
    extractor = TokenSkipping(gabor)
    pooled = cached_features(extractor, image_files, cache, progress=False, tokens=False)
    assert extractor.asked_tokens == [False]  # the extractor was told to skip its tokens
    assert pooled.tokens.shape == (5, 0, 0) and pooled.pooled.shape == (5, 34)
    assert [p.name.split(".")[-2] for p in cache.glob("*.npy")] == ["pooled"]  # no tokens file written
    np.testing.assert_allclose(pooled.pooled, gabor([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
                                                     for p in image_files]).pooled, atol=1e-5)

    assert len(cached_features(extractor, image_files, cache, progress=False, tokens=False)) == 5
    assert extractor.calls == 1  # the pooled-only cache is reused ...
    full = cached_features(extractor, image_files, cache, progress=False)
    assert extractor.calls == 2 and full.tokens.shape == (5, 16, 16)  # ... but never taken for a full one
    np.testing.assert_array_equal(full.pooled, pooled.pooled)

    other = tmp_path / "other"
    cached_features(extractor, image_files, other, progress=False)
    again = cached_features(extractor, image_files, other, progress=False, tokens=False)
    assert extractor.calls == 3 and again.tokens.shape == (5, 0, 0)  # a full cache serves pooled-only requests
    assert len(list(other.glob("*.npy"))) == 2


def test_pooled_only_from_an_extractor_that_cannot_skip_tokens(image_files, gabor, photos):
    feats = features_for_images(CountingExtractor(gabor), photos, tokens=False)  # tokens dropped per batch
    assert feats.tokens.shape == (3, 0, 0)
    np.testing.assert_allclose(feats.pooled, gabor(photos).pooled, atol=1e-5)


def test_features_of_test_images_are_cached_by_their_files(tmp_path, image_files, gabor):
    from prosthesis_sim.data.dataset import load_image

    images = [load_image(p) for p in image_files]
    counting = CountingExtractor(gabor)
    first = features_for_images(counting, images, paths=image_files, cache_dir=tmp_path / "cache")
    second = features_for_images(counting, images, paths=image_files, cache_dir=tmp_path / "cache")
    assert counting.calls == 1  # the second evaluation read the cache
    np.testing.assert_array_equal(first.pooled, second.pooled)
    np.testing.assert_allclose(second.tokens, gabor(images).tokens, atol=1e-5)
    # the same files as training images share the cache: one key, whatever the caller
    cached_features(counting, image_files, tmp_path / "cache", progress=False)
    assert counting.calls == 1
    with pytest.raises(ValueError, match="2 paths for 5 images"):
        features_for_images(counting, images, paths=image_files[:2], cache_dir=tmp_path / "cache")


def test_progress_reaches_logs_when_stderr_is_not_a_terminal(tmp_path, image_files, gabor, caplog, monkeypatch):
    import io
    import sys

    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file, a cluster job
    with caplog.at_level("INFO", logger="prosthesis_sim.progress"):
        cached_features(gabor, image_files, tmp_path / "cache", batch_size=1)
    lines = [r.getMessage() for r in caplog.records if r.name == "prosthesis_sim.progress"]
    assert lines[0].startswith(f"features {gabor.cache_id}: 0/5 img")
    assert any("5/5 img (100 %)" in line for line in lines), lines
    assert len(lines) == 6  # the start, then every tenth: here every one of the 5 images


def test_log_progress_every_fraction_and_every_seconds(caplog, monkeypatch):
    from prosthesis_sim.features import progress as progress_module

    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    with caplog.at_level("INFO", logger="prosthesis_sim.progress"):
        bar = progress_module.LogProgress(1000, "train DiT", "step", every_fraction=0.25, every_s=60)
        for step in range(1000):
            clock[0] += 0.01 if step < 500 else 1.0  # slow second half: a line at least every minute
            bar.set_postfix(loss="0.5")
            bar.update()
        bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "train DiT: 0/1000 step"
    assert any(line.startswith("train DiT: 250/1000 step (25 %)") for line in lines)
    assert any("eta" in line and "loss=0.5" in line for line in lines)
    assert lines[-1].startswith("train DiT: 1000/1000 step (100 %)")
    # 4 quarter marks + about 500 s / 60 s of time-based lines in the slow half + the first line
    assert 4 + 1 + 6 <= len(lines) <= 4 + 1 + 10, lines
