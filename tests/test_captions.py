"""Caption sources and CLIP image + caption text features, with a tiny random-weight CLIPModel."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from prosthesis_sim.features.cache import cached_features, features_for_images
from prosthesis_sim.features.captions import (NEUTRAL_CAPTION, ConceptCaptions, FileCaptions, VLMCaptions,
                                              VLMWeightsNotFound)
from prosthesis_sim.features.clip import ClipWeightsNotFound
from prosthesis_sim.features.multimodal import ClipImageTextFeatures, clip_score, load_clip
from prosthesis_sim.protocols import FeatureExtractor

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "features"
N_IMAGE, N_TEXT, DIM = 17, 48, 16  # (32 / 8)^2 + 1 image tokens, text tokens, projection_dim


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()]


@pytest.fixture(scope="module")
def things_files(tmp_path_factory, photos) -> list[Path]:
    """THINGS-EEG2-style files: images/<number>_<concept>/<concept>_<id>.png."""
    root = tmp_path_factory.mktemp("things") / "images"
    paths = []
    for folder, img in zip(["00001_aircraft_carrier", "00002_cat", "00003_coffee_cup"], photos):
        (root / folder).mkdir(parents=True)
        paths.append(root / folder / f"{folder[6:]}_01b.png")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return paths


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    """Random-weight CLIPModel (vision + text), image processor and a character-level CLIP tokenizer,
    saved like a real checkpoint folder; built offline in about a second."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    folder = tmp_path_factory.mktemp("tiny_clip_text")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz0123456789.,'-":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])  # no merges: one token per character
    tokenizer.save_pretrained(folder)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=DIM,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def features(tiny_clip, captions=None, **kw) -> ClipImageTextFeatures:
    return ClipImageTextFeatures(model=str(tiny_clip), captions=captions, device="cpu", batch_size=2,
                                 max_text_tokens=N_TEXT, **kw)


# --- caption sources -------------------------------------------------------------------------


def test_concept_captions(things_files, photos):
    captions = ConceptCaptions()
    assert captions(things_files, photos) == ["a photo of an aircraft carrier", "a photo of a cat",
                                              "a photo of a coffee cup"]
    assert ConceptCaptions("{concept}")([Path("/meg/images/ice_cream/ice_cream_03s.jpg")], None) == ["ice cream"]
    assert captions(None, photos[:2]) == [NEUTRAL_CAPTION] * 2  # camera frames: no concept
    with pytest.raises(ValueError, match="concept"):
        ConceptCaptions("a photo")


@pytest.mark.parametrize("path, caption", [
    ("images/training_images/00007_astronaut_02/astronaut_02_03b.jpg", "a photo of an astronaut"),  # synthetic
    ("object_images/bat2/bat2_01b.jpg", "a photo of a bat"),  # THINGS homonym number
    ("images_test_meg/coat_rack_13s.jpg", "a photo of a coat rack"),  # THINGS-MEG test images: a flat folder
    ("images_test_meg/umbrella_07s.jpg", "a photo of an umbrella"),
    ("images/00012_unicorn/unicorn_01b.jpg", "a photo of a unicorn"),  # a vowel letter, a consonant sound
    ("images/00013_hourglass/hourglass_02s.jpg", "a photo of an hourglass"),
    ("images/00014_ice_cream/ice_cream_03s.jpg", "a photo of an ice cream"),
])
def test_concept_captions_read_as_english(path, caption):
    assert ConceptCaptions()([Path("/data") / path], None) == [caption]


def test_concept_caption_template_stays_configurable():
    path = [Path("/data/images/00001_egg/egg_01b.jpg")]
    assert ConceptCaptions("An {concept} on a table, a {concept}")(path, None) == ["An egg on a table, an egg"]
    assert ConceptCaptions("a drawing of the {concept}")(path, None) == ["a drawing of the egg"]
    assert ConceptCaptions("{concept}")(path, None) == ["egg"]
    assert ConceptCaptions().cache_id != "concept(a photo of a {concept}|a photo)"  # old captions: new cache


@pytest.mark.parametrize("kind", ["json", "csv"])
def test_file_captions_match_fallback_and_error(tmp_path, things_files, photos, kind):
    entries = {
        str(things_files[0].resolve()): "a grey ship at sea",  # full path
        "00002_cat/cat_01b.png": "a cat, looking up",  # relative to a parent folder
    }
    if kind == "json":
        source = tmp_path / "captions.json"
        source.write_text(json.dumps(entries))
    else:
        source = tmp_path / "captions.csv"
        source.write_text("image,caption\n" + "".join(f'{k},"{v}"\n' for k, v in entries.items()))
    name_only = tmp_path / f"by_name.{kind}"  # a caption keyed by file name alone
    name_only.write_text(json.dumps({"coffee_cup_01b.png": "coffee"}) if kind == "json"
                         else "image,caption\ncoffee_cup_01b.png,coffee\n")

    assert FileCaptions(source)(things_files[:2], photos[:2]) == ["a grey ship at sea", "a cat, looking up"]
    assert FileCaptions(name_only)(things_files[2:], photos[2:]) == ["coffee"]
    assert FileCaptions(source, fallback="a photo")(things_files, photos)[2] == "a photo"
    with pytest.raises(KeyError) as err:
        FileCaptions(source)(things_files, photos)
    assert str(source) in str(err.value) and str(things_files[2]) in str(err.value)
    with pytest.raises(KeyError, match="fallback"):
        FileCaptions(source)(None, photos)
    # edited captions -> a new id, so cached features are recomputed
    before = FileCaptions(source).cache_id
    source.write_text(source.read_text().replace("grey", "blue"))
    assert FileCaptions(source).cache_id != before


def test_file_captions_rejects_bad_csv(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("file,text\na.png,x\n")
    with pytest.raises(ValueError, match="image,caption"):
        FileCaptions(bad)


# --- image + text features -------------------------------------------------------------------


def test_tokens_are_image_then_text_in_joint_space(tiny_clip, things_files, photos):
    from transformers import CLIPModel

    feats_fn = features(tiny_clip)
    assert feats_fn._model is None and feats_fn.uses_paths and isinstance(feats_fn, FeatureExtractor)
    feats = feats_fn(photos, paths=things_files)
    assert feats.tokens.shape == (3, N_IMAGE + N_TEXT, DIM) and feats.tokens.dtype == np.float32
    assert feats.pooled.shape == (3, DIM) and feats.pooled.dtype == np.float32
    np.testing.assert_allclose(feats.tokens[:, 0], feats.pooled, atol=1e-6)  # image token 0 = image_embeds

    model, processor, tokenizer = load_clip(str(tiny_clip), True, "float32", "cpu")
    assert isinstance(model, CLIPModel)
    captions = ConceptCaptions()(things_files, photos)
    text = tokenizer(captions, padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = model(pixel_values=processor(images=photos, return_tensors="pt")["pixel_values"], **text)
    unit = feats.pooled / np.linalg.norm(feats.pooled, axis=1, keepdims=True)
    np.testing.assert_allclose(unit, out.image_embeds.numpy(), atol=1e-5)
    # text tokens: caption length + BOS/EOS are non-zero, the padding after them is zero
    lengths = text["attention_mask"].sum(1).numpy()
    for i, n in enumerate(lengths):
        assert np.abs(feats.tokens[i, N_IMAGE : N_IMAGE + n]).min(axis=1).max() > 0
        assert not feats.tokens[i, N_IMAGE + n :].any()
    # the EOS text token is the caption's text_projection(pooled) embedding, i.e. CLIP's text_embeds
    eos = np.stack([feats.tokens[i, N_IMAGE + n - 1] for i, n in enumerate(lengths)])
    np.testing.assert_allclose(eos / np.linalg.norm(eos, axis=1, keepdims=True), out.text_embeds.numpy(), atol=1e-5)


def test_captions_change_only_the_text_tokens(tiny_clip, things_files, photos):
    concept = features(tiny_clip)(photos, paths=things_files)
    other = features(tiny_clip, ConceptCaptions("a drawing of the {concept}"))(photos, paths=things_files)
    np.testing.assert_allclose(concept.tokens[:, :N_IMAGE], other.tokens[:, :N_IMAGE], atol=1e-6)
    np.testing.assert_allclose(concept.pooled, other.pooled, atol=1e-6)
    assert not np.allclose(concept.tokens[:, N_IMAGE:], other.tokens[:, N_IMAGE:], atol=1e-3)
    # in-memory images: neutral caption, so the text part is the same for every image
    frames = features_for_images(features(tiny_clip), photos, batch_size=2)
    np.testing.assert_allclose(frames.tokens[:, :N_IMAGE], concept.tokens[:, :N_IMAGE], atol=1e-6)
    np.testing.assert_allclose(frames.tokens[0, N_IMAGE:], frames.tokens[2, N_IMAGE:], atol=1e-6)


def test_flows_through_cached_features_with_paths(tmp_path, tiny_clip, things_files, photos):
    cache = tmp_path / "cache"
    feats_fn = features(tiny_clip)
    cached = cached_features(feats_fn, things_files, cache, batch_size=2, progress=False)
    direct = features(tiny_clip)(photos, paths=things_files)
    np.testing.assert_allclose(cached.tokens, direct.tokens, atol=1e-5)  # PNG round trip is lossless
    assert len(list(cache.glob("*.npy"))) == 2
    again = cached_features(features(tiny_clip), things_files, cache, batch_size=2, progress=False)
    np.testing.assert_array_equal(again.tokens, cached.tokens)
    assert len(list(cache.glob("*.npy"))) == 2  # same extractor and captions: served from disk

    other = features(tiny_clip, ConceptCaptions("a drawing of the {concept}"))
    assert other.cache_id != feats_fn.cache_id and "ConceptCaptions" in other.cache_id
    changed = cached_features(other, things_files, cache, batch_size=2, progress=False)
    assert len(list(cache.glob("*.npy"))) == 4  # a new caption source is a new cache entry
    assert not np.allclose(changed.tokens[:, N_IMAGE:], cached.tokens[:, N_IMAGE:], atol=1e-3)
    empty = features_for_images(features(tiny_clip), [])
    assert empty.tokens.shape == (0, N_IMAGE + N_TEXT, DIM) and empty.pooled.shape == (0, DIM)


def test_pooled_only_skips_captions_and_text(tiny_clip, things_files, photos):
    class NoCaptions:
        cache_id = "none"

        def __call__(self, paths, images):
            raise AssertionError("pooled-only features must not caption (a VLM would run for nothing)")

    full = features(tiny_clip)(photos, paths=things_files)
    pooled = features(tiny_clip, NoCaptions())(photos, paths=things_files, tokens=False)
    assert pooled.tokens.shape == (3, 0, 0)
    np.testing.assert_allclose(pooled.pooled, full.pooled, atol=1e-5)
    shapes = features(tiny_clip).empty()  # shapes from the config: no weights loaded
    assert shapes.tokens.shape == (0, N_IMAGE + N_TEXT, DIM) and shapes.pooled.shape == (0, DIM)


def test_missing_clip_and_too_many_text_tokens(tmp_path, tiny_clip, photos):
    missing = features(tmp_path / "no_such_clip")
    with pytest.raises(ClipWeightsNotFound) as err:
        missing(photos[:1])
    assert str(tmp_path / "no_such_clip") in str(err.value) and "CLIPModel" in str(err.value)
    with pytest.raises(ValueError, match="max_text_tokens"):
        ClipImageTextFeatures(model=str(tiny_clip), device="cpu", max_text_tokens=65)(photos[:1])


# --- VLM captions ----------------------------------------------------------------------------


def test_vlm_missing_model_is_a_clear_error(tmp_path, photos):
    vlm = VLMCaptions(model=str(tmp_path / "no_such_vlm"))  # lazy: constructing is fine
    with pytest.raises(VLMWeightsNotFound) as err:
        vlm(None, photos[:1])
    message = str(err.value)
    assert str(tmp_path / "no_such_vlm") in message and "hf download" in message
    assert "features.captions.model=" in message


class FakeCaptioner:
    """Stands in for a transformers image-to-text pipeline (no tiny VLM is built offline here)."""

    def __init__(self):
        self.images = 0

    def __call__(self, images, text=None, max_new_tokens=None):
        self.images += len(images)
        return [[{"generated_text": f" a picture {im.size[0]} wide "}] for im in images]


def reference_clip_score(folder: Path, photo, caption: str) -> float:
    """CLIPScore straight from transformers (no project code): CLIPModel's image-text logit divided by its
    learned temperature is the cosine of the two embeddings; x 100."""
    from PIL import Image
    from transformers import AutoImageProcessor, CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(folder).eval()
    pixels = AutoImageProcessor.from_pretrained(folder)(images=[Image.fromarray(photo)], return_tensors="pt")
    text = CLIPTokenizer.from_pretrained(folder)([caption], return_tensors="pt")
    with torch.no_grad():
        logits = model(pixel_values=pixels["pixel_values"], **text).logits_per_image
    return float(100 * logits[0, 0] / model.logit_scale.exp())


def test_vlm_captions_cached_with_clip_score(tmp_path, tiny_clip, things_files, photos):
    vlm = VLMCaptions(model="some/vlm", cache_dir=tmp_path / "captions", clip_model=str(tiny_clip))
    vlm._pipe = fake = FakeCaptioner()
    first = vlm(things_files[:2], photos[:2])
    assert first == [f"a picture {p.shape[1]} wide" for p in photos[:2]] and fake.images == 2
    assert vlm(things_files, photos)[:2] == first and fake.images == 3  # only the new image is captioned
    assert not list((tmp_path / "captions").glob("*.tmp"))

    stored = VLMCaptions(model="some/vlm", cache_dir=tmp_path / "captions").scores()  # a fresh instance reads it
    assert len(stored) == 3
    key = json.dumps([str(things_files[0].resolve()), things_files[0].stat().st_size,
                      things_files[0].stat().st_mtime_ns])
    assert stored[key]["caption"] == first[0]
    assert stored[key]["clip_score"] == pytest.approx(reference_clip_score(tiny_clip, photos[0], first[0]), abs=1e-3)
    assert -100 <= stored[key]["clip_score"] <= 100
    assert vlm(None, photos[:1]) == first[:1] and fake.images == 4  # in-memory images are not cached


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory) -> Path:
    """A random-weight BLIP captioner + processor (image-text-to-text pipeline), built offline."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    folder = tmp_path_factory.mktemp("tiny_blip")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "picture", "of", "cat", "dog", "photo"]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    tokenizer.bos_token = "[CLS]"
    BlipProcessor(image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}),
                  tokenizer=tokenizer).save_pretrained(folder)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = BlipConfig(text_config=dict(vocab_size=len(words), encoder_hidden_size=32, max_position_embeddings=64,
                                         bos_token_id=2, sep_token_id=3, pad_token_id=0, eos_token_id=3, **small),
                        vision_config=dict(image_size=32, patch_size=8, **small), projection_dim=16)
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    return folder


def test_vlm_captions_from_a_local_model(tmp_path, tiny_blip, tiny_clip, things_files, photos):
    vlm = VLMCaptions(model=str(tiny_blip), prompt=None, cache_dir=tmp_path, clip_model=str(tiny_clip),
                      max_new_tokens=4)
    captions = vlm(things_files, photos)
    assert len(captions) == 3 and all(isinstance(c, str) and c for c in captions)
    assert set(captions[0].split()) <= {"a", "picture", "of", "cat", "dog", "photo"}
    stored = vlm.scores()
    assert len(stored) == 3 and sorted(v["caption"] for v in stored.values()) == sorted(captions)
    assert all(isinstance(v["clip_score"], float) for v in stored.values())
    assert vlm(None, photos[:1]) == captions[:1]  # deterministic (greedy) and uncached for frames


# --- config ----------------------------------------------------------------------------------


def test_config_instantiates():
    feats = instantiate(OmegaConf.load(CONFIGS / "clip_text.yaml"))
    assert isinstance(feats, ClipImageTextFeatures) and feats._model is None
    assert isinstance(feats.captions, ConceptCaptions) and feats.max_text_tokens == 77
    assert feats.cache_id.startswith("clip_text-openai/clip-vit-large-patch14-ConceptCaptions")
