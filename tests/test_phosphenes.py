"""Phosphene adapter (pulse2percept) and image scores: shapes, orientation, scale, ceiling path."""
from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import hydra
import numpy as np
import pytest
from omegaconf import OmegaConf
from pulse2percept.implants.retina import PRIMAPivotal
from pulse2percept.models.retina import ScoreboardModel
from skimage import data

from prosthesis_sim.phosphenes import Pulse2PerceptModel
from prosthesis_sim.scores import image_scores, normalised_score, to_grey

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "phosphene"
NAMES = ["argus_scoreboard", "argus_axonmap"]


def load(name: str, cache_dir: Path) -> Pulse2PerceptModel:
    cfg = OmegaConf.load(CONFIGS / f"{name}.yaml")
    cfg.cache_dir = str(cache_dir)
    return hydra.utils.instantiate(cfg).build()


@pytest.fixture(scope="module", params=NAMES)
def model(request, tmp_path_factory):
    return load(request.param, tmp_path_factory.mktemp("cache"))


def quadrants(p: np.ndarray) -> dict[str, float]:
    h, w = p.shape
    return {"tl": p[:h // 2, :w // 2].mean(), "tr": p[:h // 2, w // 2:].mean(),
            "bl": p[h // 2:, :w // 2].mean(), "br": p[h // 2:, w // 2:].mean()}


def top_left_square(h=120, w=160) -> np.ndarray:
    image = np.zeros((h, w), np.float32)
    image[: h // 2, : w // 2] = 1.0
    return image


def test_output_shape_dtype_range(model):
    assert model.electrode_grid == (6, 10)
    percept = model(np.random.default_rng(0).random((96, 128), dtype=np.float32))
    assert percept.shape == model.field_shape
    assert min(model.field_shape) >= 50
    assert percept.dtype == np.float32
    assert 0.0 <= percept.min() and percept.max() <= 1.0


def test_orientation_top_left(model):
    q = quadrants(model(top_left_square()))
    # Brightest in the top-left quadrant: catches a flip of either axis.
    assert q["tl"] == max(q.values())
    assert q["tl"] > 5 * max(q["tr"], q["bl"]) and q["br"] < 0.01


def test_fixed_scale_and_monotone(model):
    means = [model(np.full((40, 60), g, np.float32)).mean() for g in (0.25, 0.5, 1.0)]
    assert means[0] < means[1] < means[2]
    # Linear models under a fixed scale: half the grey level, half the percept (no per-frame max).
    assert means[1] == pytest.approx(means[2] / 2, rel=1e-3)
    assert model(np.ones((40, 60), np.float32)).max() == pytest.approx(1.0, abs=1e-6)
    assert model(np.zeros((40, 60), np.float32)).max() < 1e-6


def test_ceiling_path_prefers_the_true_frame(model):
    frames = {"astronaut": data.astronaut(), "camera": data.camera(), "coffee": data.coffee()}
    for name, frame in frames.items():
        percept = model(to_grey(frame))
        own = image_scores(frame, percept)["pearson"]
        for other_name, other in frames.items():
            if other_name != name:
                assert own > image_scores(other, percept)["pearson"], (name, other_name)


def test_axon_pickle_goes_to_cache_dir(tmp_path, monkeypatch):
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    monkeypatch.chdir(work)
    first = load("argus_axonmap", cache)
    assert not list(work.iterdir())
    assert len(list(cache.glob("axons-*.pickle"))) == 1
    # A second build reads the cached axon map and gives the same percept.
    image = top_left_square()
    np.testing.assert_allclose(load("argus_axonmap", cache)(image), first(image))
    assert len(list(cache.glob("axons-*.pickle"))) == 1


def test_prima_model_instance_and_dimensionless_drive():
    model = Pulse2PerceptModel(ScoreboardModel(PRIMAPivotal(), rho=25, step=0.1),
                               PRIMAPivotal()).build()
    assert model.electrode_grid == (19, 22)
    q = quadrants(model(top_left_square()))
    assert q["tl"] == max(q.values())
    assert model(np.zeros((20, 20))).max() < 1e-6


def test_use_before_build_raises():
    cfg = OmegaConf.load(CONFIGS / "argus_scoreboard.yaml")
    with pytest.raises(RuntimeError, match="build"):
        hydra.utils.instantiate(cfg)(np.zeros((8, 8)))


def test_image_scores_identical_and_resized():
    frame = data.astronaut()
    grey = to_grey(frame)
    assert grey.shape == frame.shape[:2] and grey.dtype == np.float32
    scores = image_scores(grey, grey)
    assert scores["ssim"] == pytest.approx(1.0) and scores["pearson"] == pytest.approx(1.0)
    # An RGB frame is area-averaged to the percept's (h, w), here not square.
    small = cv2.resize(grey, (64, 48), interpolation=cv2.INTER_AREA)
    scores = image_scores(frame, small)
    assert scores["ssim"] == pytest.approx(1.0) and scores["pearson"] == pytest.approx(1.0)
    # Percepts smaller than the 11-tap Gaussian SSIM window still get a score (the crop narrows).
    assert np.isfinite(image_scores(frame, np.random.default_rng(0).random((5, 6)))["ssim"])


def test_constant_image_gives_zero_pearson_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = image_scores(data.camera(), np.full((40, 50), 0.3, np.float32))
        assert scores["pearson"] == 0.0
        assert np.isfinite(scores["ssim"])
        assert image_scores(np.zeros((30, 30)), np.zeros((30, 30)))["pearson"] == 0.0


def test_normalised_score():
    assert normalised_score(0.5, 0.0, 1.0) == pytest.approx(0.5)
    assert normalised_score(0.3, 0.1, 0.5) == pytest.approx(0.5)
    assert normalised_score(0.0, 0.1, 0.5) == pytest.approx(-0.25)  # below the floor stays < 0
    np.testing.assert_allclose(normalised_score(np.array([0.1, 0.5]), 0.1, 0.5), [0.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(normalised_score(0.4, 0.2, 0.2))
        assert np.isnan(normalised_score(np.nan, 0.0, 1.0))
