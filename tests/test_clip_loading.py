"""CLIP checkpoints as users have them (issue 12): a full CLIPModel folder (what the hub holds) loads
its vision tower quietly, a wrong folder is a clear error, shapes come without the weights, new
weights in the same folder compute features afresh, and pooled-only features skip the tokens."""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from prosthesis_sim.features.cache import cached_features
from prosthesis_sim.features.clip import ClipFeatures, ClipWeightsNotFound

VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
              patch_size=8)
DIM = 16  # projection_dim: the full model keeps it on the outer config, the vision tower's says 512


def _processor(folder: Path) -> None:
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)


@pytest.fixture(scope="module")
def full_clip(tmp_path_factory) -> Path:
    """A random-weight full CLIPModel (vision + text) saved like the hub's checkpoint folder."""
    from transformers import CLIPConfig, CLIPModel

    folder = tmp_path_factory.mktemp("full_clip")
    config = CLIPConfig(text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, max_position_embeddings=16),
                        vision_config=VISION, projection_dim=DIM)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    _processor(folder)
    return folder


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()]


def test_full_clip_folder_loads_the_vision_tower_quietly(full_clip, photos, caplog, capfd):
    from transformers import AutoImageProcessor, CLIPModel

    with caplog.at_level(logging.INFO):
        feats = ClipFeatures(model=str(full_clip), batch_size=2)(photos)
    out, err = capfd.readouterr()
    reports = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not reports and "UNEXPECTED" not in out + err and "LOAD REPORT" not in out + err, reports
    assert feats.tokens.shape == (3, 17, 32) and feats.pooled.shape == (3, DIM)

    clip = CLIPModel.from_pretrained(full_clip, local_files_only=True).eval()  # the vision tower's weights
    pixels = AutoImageProcessor.from_pretrained(full_clip, local_files_only=True)(
        images=photos, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        vision = clip.vision_model(pixel_values=pixels)
        embeds = clip.visual_projection(vision.pooler_output)
    np.testing.assert_allclose(feats.tokens, vision.last_hidden_state.numpy(), atol=1e-5)
    np.testing.assert_allclose(feats.pooled, embeds.numpy(), atol=1e-5)


def test_vision_folder_without_projection_is_a_clear_error(tmp_path, photos):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    folder = tmp_path / "vision_only"
    CLIPVisionModel(CLIPVisionConfig(**VISION)).save_pretrained(folder)
    _processor(folder)
    with pytest.raises(ValueError) as err:
        ClipFeatures(model=str(folder))(photos[:1])
    assert str(folder) in str(err.value) and "visual_projection" in str(err.value)


def test_missing_weights_and_missing_folder_name_the_path(tmp_path, full_clip, photos):
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (no_weights / name).write_bytes((full_clip / name).read_bytes())
    with pytest.raises(ClipWeightsNotFound, match=str(no_weights)):
        ClipFeatures(model=str(no_weights))(photos[:1])
    with pytest.raises(ClipWeightsNotFound, match=str(tmp_path / "nowhere")):
        ClipFeatures(model=str(tmp_path / "nowhere"))(photos[:1])


def test_shapes_come_from_the_config_without_loading_weights(full_clip):
    from prosthesis_sim.features.cache import feature_shapes

    clip = ClipFeatures(model=str(full_clip))
    shapes = feature_shapes(clip)
    assert shapes.tokens.shape == (0, 17, 32) and shapes.pooled.shape == (0, DIM)
    assert clip._model is None


def test_pooled_only_clip_features_match_the_full_ones(tmp_path, full_clip, photos):
    paths = []
    for i, img in enumerate(photos):
        paths.append(tmp_path / f"img{i}.png")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    clip = ClipFeatures(model=str(full_clip), batch_size=2)
    pooled = cached_features(clip, paths, tmp_path / "cache", progress=False, tokens=False)
    assert pooled.tokens.shape == (3, 0, 0)
    assert sum(p.stat().st_size for p in (tmp_path / "cache").glob("*.npy")) < 1000  # 3 x 16 floats
    full = clip(photos)
    np.testing.assert_allclose(pooled.pooled, full.pooled, atol=1e-5)


def test_new_weights_in_the_same_folder_compute_features_afresh(tmp_path, full_clip, photos):
    import shutil

    from transformers import CLIPModel

    folder = tmp_path / "clip"
    shutil.copytree(full_clip, folder)
    paths = [tmp_path / "img.png"]
    cv2.imwrite(str(paths[0]), cv2.cvtColor(photos[0], cv2.COLOR_RGB2BGR))
    before = np.array(cached_features(ClipFeatures(model=str(folder)), paths, tmp_path / "cache",
                                      progress=False).pooled)
    copied = shutil.copytree(folder, tmp_path / "copy")  # a copy (new mtimes) keeps its identity
    assert ClipFeatures(model=str(copied)).weights_id == ClipFeatures(model=str(folder)).weights_id

    model = CLIPModel.from_pretrained(folder, local_files_only=True)
    with torch.no_grad():
        model.visual_projection.weight.mul_(-1)  # "fine-tuned": same shapes, same file size
    model.save_pretrained(folder)
    after = cached_features(ClipFeatures(model=str(folder)), paths, tmp_path / "cache", progress=False).pooled
    np.testing.assert_allclose(after, -before, atol=1e-5)
