"""Decoders learn: each must beat a baseline (chance identification, the mean training image) on the
held-out test images of the small synthetic dataset, and save/load/seed like every other stage."""
import shutil

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from skimage.metrics import structural_similarity

from prosthesis_sim.decoders.losses import ssim
from prosthesis_sim.decoders.ridge_pixels import grey_thumbnail
from prosthesis_sim.checkpoint import fit_cached, load_component, save_component
from prosthesis_sim.data.dataset import load_image
from prosthesis_sim.evaluate import load_test_images
from prosthesis_sim.metrics import pearson_rows
from prosthesis_sim.protocols import BrainDecoder, can_embed

pytestmark = pytest.mark.slow  # trains models: make test-fast leaves this module out


def decoder_cfg(name, *overrides):
    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        return compose("loop", overrides=[f"decoder={name}", *overrides]).decoder


def identification(signal_emb, image_emb, ks=(1, 5)):
    """Top-k identification by cosine similarity; ties count against (as prosthesis_sim.metrics)."""
    sim = signal_emb @ image_emb.T
    rank = (sim >= np.diag(sim)[:, None]).sum(axis=1) - 1
    return {f"top{k}": float(np.mean(rank < k)) for k in ks}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are small: one thread fits them fastest, and two threads on a shared 2-core machine
    were measured 7x slower (oversubscription)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images(small_data):
    return load_test_images(small_data)


def truth_and_mean(data, images, size):
    """True test thumbnails and the mean training thumbnail (the baseline every decoder must beat)."""
    truth = np.stack([grey_thumbnail(img, size) for img in images])
    mean = np.stack([grey_thumbnail(load_image(p), size) for p in data.train_images]).mean(0)
    return truth, mean


def beats_mean_image(decoded, truth, mean):
    """Lower MSE than the mean training thumbnail, and higher mean pixel correlation."""
    baseline = np.broadcast_to(mean, truth.shape)
    mse, mse0 = np.mean((decoded - truth) ** 2), np.mean((baseline - truth) ** 2)
    r, r0 = pearson_rows(decoded, truth).mean(), pearson_rows(baseline, truth).mean()
    return mse < mse0 and r > r0, dict(mse=mse, mse_mean=mse0, r=r, r_mean=r0)


@pytest.fixture(scope="module")
def embedding(small_data):
    dec = instantiate(decoder_cfg("embedding"))
    dec.fit(small_data)
    return dec


@pytest.fixture(scope="module")
def retrieval(small_data):
    # a fixed epoch count (no held-out selection run) keeps the test fast
    dec = instantiate(decoder_cfg("retrieval", "decoder.size=[24,24]", "decoder.embedding.val_fraction=0",
                                  "decoder.embedding.epochs=100"))
    dec.fit(small_data)
    return dec


# -- losses ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(32, 32), (16, 24)])
def test_ssim_matches_scikit_image_gaussian_ssim(shape):
    rng = np.random.default_rng(0)
    a = rng.random((3, *shape))
    b = np.clip(a + 0.3 * rng.standard_normal(a.shape), 0, 1)
    ours = ssim(torch.as_tensor(a), torch.as_tensor(b)).numpy()
    ref = [structural_similarity(x, y, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False) for x, y in zip(a, b)]
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    assert ssim(torch.as_tensor(a), torch.as_tensor(a)).numpy() == pytest.approx(1.0)


# -- ridge_pixels ------------------------------------------------------------------------------------
def test_ridge_pixels_size_is_selectable_and_beats_the_mean_image(small_data, images):
    dec = instantiate(decoder_cfg("ridge_pixels", "decoder.size=[12,20]"))
    dec.fit(small_data)
    decoded = dec.decode(small_data.test_average())
    assert decoded.shape == (len(images), 12, 20) and decoded.dtype == np.float32
    assert decoded.min() >= 0 and decoded.max() <= 1
    ok, scores = beats_mean_image(decoded, *truth_and_mean(small_data, images, (12, 20)))
    assert ok, scores
    assert not can_embed(dec)


# -- embedding -------------------------------------------------------------------------------------
def test_embedding_identifies_test_images_above_chance(small_data, images, embedding):
    emb, gallery = embedding.embed(small_data.test_average()), embedding.embed_images(images)
    assert emb.shape == gallery.shape and emb.dtype == gallery.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(gallery, axis=1), 1, atol=1e-5)
    scores = identification(emb, gallery)
    # chance: top-5 among 20 = 0.25, top-1 = 0.05; measured 0.85 / 0.45 (seed 0)
    assert scores["top5"] >= 0.5 and scores["top1"] >= 0.15, scores
    # the image side is a fixed transform: files (cached features) and arrays give the same embedding
    np.testing.assert_allclose(embedding.embed_files(small_data.test_images), gallery, atol=1e-5)


def assert_grey_images_beat_the_mean(decoded, small_data, images, size):
    """Decoded test images: float32 (n, *size) in [0, 1], closer to the true thumbnails than the mean image."""
    assert decoded.shape == (len(images), *size) and decoded.dtype == np.float32
    assert decoded.min() >= 0 and decoded.max() <= 1
    ok, scores = beats_mean_image(decoded, *truth_and_mean(small_data, images, size))
    assert ok, scores


def test_embedding_image_head_beats_the_mean_image(small_data, images, embedding):
    assert_grey_images_beat_the_mean(embedding.decode(small_data.test_average()), small_data, images, (32, 32))


def test_embedding_is_an_embedding_decoder(embedding):
    assert isinstance(embedding, BrainDecoder) and can_embed(embedding)
    assert set(embedding.best_epochs) == {"embed", "image"} and min(embedding.best_epochs.values()) >= 1
    assert 1 <= embedding.inverse_temperature <= 100  # CLIP's learnable temperature, capped at 100


def test_embedding_save_load_round_trip(small_data, images, embedding, tmp_path):
    cfg = decoder_cfg("embedding")
    save_component(embedding, tmp_path / "dec", cfg)
    loaded = load_component(tmp_path / "dec")
    signals = small_data.test_average()
    np.testing.assert_array_equal(loaded.decode(signals), embedding.decode(signals))
    np.testing.assert_array_equal(loaded.embed(signals), embedding.embed(signals))
    np.testing.assert_array_equal(loaded.embed_images(images[:3]), embedding.embed_images(images[:3]))


def test_embedding_same_seed_same_weights(small_data):
    def fit(seed):
        dec = instantiate(decoder_cfg("embedding", "decoder.epochs=4", "decoder.patience=2", "decoder.hidden=32",
                                      f"seed={seed}"))
        dec.fit(small_data)
        return dec.state()[0]

    first, again, other = fit(0), fit(0), fit(1)
    assert first.keys() == again.keys()
    for k in first:
        np.testing.assert_array_equal(np.asarray(first[k]), np.asarray(again[k]), err_msg=k)
    assert not np.array_equal(first["model.embedder.input.weight"], other["model.embedder.input.weight"])


def test_embedding_bad_input_gives_clear_errors(small_data, embedding):
    fresh = instantiate(decoder_cfg("embedding"))
    with pytest.raises(RuntimeError, match="before fit"):
        fresh.decode(small_data.test_average())
    with pytest.raises(RuntimeError, match="before fit"):
        fresh.embed_images([np.zeros((8, 8, 3), np.uint8)])
    n_ch, n_t = small_data.signal_shape
    with pytest.raises(ValueError, match=rf"\(n, {n_ch}, {n_t}\).*got shape \(2, {n_ch - 1}, {n_t}\)"):
        embedding.decode(small_data.test_average()[:2, 1:])
    with pytest.raises(ValueError, match="got shape"):
        embedding.embed(small_data.test_average()[0])
    for override, field in [("decoder.inputs=pixels", "decoder.inputs"), ("decoder.size=[2,32]", "decoder.size"),
                            ("decoder.n_components=0", "decoder.n_components"),
                            ("decoder.val_fraction=1", "decoder.val_fraction")]:
        with pytest.raises(InstantiationException, match=field.replace(".", r"\.")):
            instantiate(decoder_cfg("embedding", override))


def test_embedding_load_refuses_other_features(embedding, tmp_path):
    save_component(embedding, tmp_path / "dec", decoder_cfg("embedding", "decoder_features.grid=2"))
    with pytest.raises(ValueError, match="fitted on features"):
        load_component(tmp_path / "dec")


# -- retrieval -------------------------------------------------------------------------------------
def test_retrieval_returns_blended_thumbnails_that_beat_the_mean_image(small_data, images, retrieval):
    assert_grey_images_beat_the_mean(retrieval.decode(small_data.test_average()), small_data, images, (24, 24))
    idx, w = retrieval.retrieve(small_data.test_average())
    assert idx.shape == w.shape == (len(images), 5)
    np.testing.assert_allclose(w.sum(1), 1, atol=1e-6)
    sim = np.take_along_axis(retrieval.embed(small_data.test_average()) @ retrieval.gallery_embeddings.T, idx, 1)
    expected = np.exp(retrieval.embedding.inverse_temperature * (sim - sim[:, :1]))
    np.testing.assert_allclose(w, expected / expected.sum(1, keepdims=True), rtol=1e-4)  # softmax of similarity
    assert np.ptp(w, axis=1).max() > 1e-3  # ... and not uniform where the similarities differ
    assert can_embed(retrieval)


def test_retrieval_from_a_folder_gallery_identifies_test_images(small_data, images, retrieval, tmp_path):
    """A gallery of the test images (nested folders, a non-image file): top-1 retrieval is identification."""
    folder = tmp_path / "gallery"
    for i, path in enumerate(small_data.test_images):
        (folder / f"group{i % 3}").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / f"group{i % 3}" / f"{i:03d}{path.suffix}")
    (folder / "notes.txt").write_text("not an image")
    order = np.argsort([f"group{i % 3}/{i:03d}" for i in range(len(images))])  # the sorted file order
    dec = instantiate(decoder_cfg("retrieval", f"decoder.gallery={folder}", "decoder.top_k=1",
                                  "decoder.embedding.val_fraction=0", "decoder.embedding.epochs=100"))
    dec.fit(small_data)
    assert len(dec.gallery_embeddings) == len(images)
    idx, _ = dec.retrieve(small_data.test_average())
    hits = np.mean(order[idx[:, 0]] == np.arange(len(images)))
    assert hits >= 0.15, hits  # chance 1/20 = 0.05
    decoded = dec.decode(small_data.test_average()[:2])  # top_k=1 returns a gallery thumbnail itself
    np.testing.assert_allclose(decoded, dec.gallery_thumbnails[idx[:2, 0]], atol=1e-6)


def test_retrieval_top_k_is_validated(small_data):
    with pytest.raises(InstantiationException, match="top_k must be >= 1"):
        instantiate(decoder_cfg("retrieval", "decoder.top_k=0"))
    dec = instantiate(decoder_cfg("retrieval", f"decoder.top_k={len(small_data.train_images) + 1}"))
    with pytest.raises(ValueError, match=f"exceeds the gallery's {len(small_data.train_images)} images"):
        dec.fit(small_data)
    with pytest.raises(RuntimeError, match="before fit"):
        dec.decode(small_data.test_average())


def test_retrieval_save_load_round_trip(small_data, images, retrieval, tmp_path):
    cfg = decoder_cfg("retrieval", "decoder.size=[24,24]")
    save_component(retrieval, tmp_path / "dec", cfg)
    loaded = load_component(tmp_path / "dec")
    signals = small_data.test_average()
    np.testing.assert_array_equal(loaded.decode(signals), retrieval.decode(signals))
    np.testing.assert_array_equal(loaded.embed(signals), retrieval.embed(signals))


def test_retrieval_decode_settings_reuse_the_fit_cache(small_data, tmp_path):
    """top_k and weighting act at decode time only: changing them loads the cached fit, not a refit."""
    quick = ["decoder.embedding.val_fraction=0", "decoder.embedding.epochs=3", "decoder.embedding.hidden=16"]
    first, where = fit_cached(decoder_cfg("retrieval", *quick), small_data, tmp_path, "decoder")
    again, same = fit_cached(decoder_cfg("retrieval", *quick, "decoder.top_k=2", "decoder.weighting=uniform"),
                             small_data, tmp_path, "decoder")
    _, other = fit_cached(decoder_cfg("retrieval", *quick, "decoder.size=[8,8]"), small_data, tmp_path, "decoder")
    assert same == where and other != where
    assert (again.top_k, again.weighting) == (2, "uniform")
    np.testing.assert_array_equal(again.gallery_embeddings, first.gallery_embeddings)
    assert again.retrieve(small_data.test_average()[:3])[0].shape == (3, 2)
