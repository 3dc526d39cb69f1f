"""Every phosphene config (pulse2percept and torch) and image scores: shapes, orientation, scale, ceiling path."""
from __future__ import annotations

import logging
import warnings
from functools import partial
from pathlib import Path

import cv2
import hydra
import numpy as np
import pytest
from omegaconf import OmegaConf
from pulse2percept.implants.cortex import Orion
from pulse2percept.implants.retina import ArgusII, PRIMAPivotal
from pulse2percept.models.cortex import DynaphosModel
from pulse2percept.models.cortex import ScoreboardModel as CorticalScoreboard
from pulse2percept.models.retina import ScoreboardModel
from pulse2percept.units import dva
from skimage import data

from prosthesis_sim.phosphenes import Pulse2PerceptModel
from prosthesis_sim.phosphenes.field import electrode_dva, tissue_xy
from prosthesis_sim.phosphenes.implants import neuralink_threads
from prosthesis_sim.scores import image_scores, normalised_score, to_grey

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "phosphene"
NAMES = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
#: Models whose brightness is linear in the drive: half the grey level gives half the percept.
NONLINEAR = {"orion_dynaphos", "icvp_dynaphos"}


def load(name: str, cache_dir: Path, **overrides):
    cfg = OmegaConf.load(CONFIGS / f"{name}.yaml")
    cfg.cache_dir = str(cache_dir)
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return hydra.utils.instantiate(cfg).build()


@pytest.fixture(scope="module", params=NAMES)
def model(request, tmp_path_factory):
    built = load(request.param, tmp_path_factory.mktemp("cache"))
    built.name = request.param
    return built


def quadrants(p: np.ndarray) -> dict[str, float]:
    h, w = p.shape
    return {"tl": p[:h // 2, :w // 2].mean(), "tr": p[:h // 2, w // 2:].mean(),
            "bl": p[h // 2:, :w // 2].mean(), "br": p[h // 2:, w // 2:].mean()}


def top_left_square(h=120, w=160) -> np.ndarray:
    image = np.zeros((h, w), np.float32)
    image[: h // 2, : w // 2] = 1.0
    return image


def test_every_config_is_tested():
    assert {"argus_scoreboard", "argus_axonmap", "prima_scoreboard", "alpha_ams_scoreboard",
            "suprachoroidal44_scoreboard", "orion_scoreboard", "orion_dynaphos", "icvp_scoreboard",
            "icvp_dynaphos", "neuralink_scoreboard", "torch_argus", "torch_orion"} <= set(NAMES)


def test_output_shape_dtype_range(model):
    percept = model(np.random.default_rng(0).random((96, 128), dtype=np.float32))
    assert percept.shape == model.field_shape
    assert min(model.field_shape) >= 30
    assert percept.dtype == np.float32
    assert 0.0 <= percept.min() and percept.max() <= 1.0
    assert percept.max() > 0.01


def test_orientation_top_left(model):
    q = quadrants(model(top_left_square()))
    # Brightest in the top-left quadrant: catches a flip of either axis.
    assert q["tl"] == max(q.values())
    assert q["tl"] > 5 * max(q["tr"], q["bl"]) and q["br"] < 0.05 * q["tl"]


def test_fixed_scale_and_monotone(model):
    means = [model(np.full((40, 60), g, np.float32)).mean() for g in (0.25, 0.5, 1.0)]
    assert means[0] < means[1] < means[2]
    if model.name not in NONLINEAR:
        # Linear models under a fixed scale: half the grey level, half the percept (no per-frame max).
        assert means[1] == pytest.approx(means[2] / 2, rel=1e-3)
    assert model(np.ones((40, 60), np.float32)).max() == pytest.approx(1.0, abs=1e-6)
    assert model(np.zeros((40, 60), np.float32)).max() < 1e-6


@pytest.mark.parametrize("name", ["argus_scoreboard", "argus_axonmap", "prima_scoreboard",
                                  "suprachoroidal44_scoreboard", "torch_argus"])
def test_ceiling_path_prefers_the_true_frame(name, tmp_path):
    """Retinal implants with a wide field carry enough of a photo to tell it from the others."""
    model = load(name, tmp_path)
    frames = {"astronaut": data.astronaut(), "camera": data.camera(), "coffee": data.coffee()}
    for frame_name, frame in frames.items():
        percept = model(to_grey(frame))
        own = image_scores(frame, percept)["pearson"]
        for other_name, other in frames.items():
            if other_name != frame_name:
                assert own > image_scores(other, percept)["pearson"], (frame_name, other_name)


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


def test_prima_is_driven_through_its_photovoltaic_encoder(tmp_path):
    model = load("prima_scoreboard", tmp_path)
    assert model.electrode_grid == (20, 19) and model.implant.n_electrodes == 378
    delivered = model.implant.prepare_stim(model.stimulus(top_left_square()))
    assert str(delivered.unit) == "mW/mm^2"  # irradiance from PRIMAEncoder, not a current
    # A model instance (not a partial) is rebound to the implant.
    direct = Pulse2PerceptModel(ScoreboardModel(PRIMAPivotal(), rho=25, step=0.1), PRIMAPivotal()).build()
    assert quadrants(direct(top_left_square()))["tl"] == max(quadrants(direct(top_left_square())).values())


def test_argus_field_and_prefilter_unchanged(tmp_path):
    model = load("argus_scoreboard", tmp_path)
    assert model.electrode_grid == (6, 10)  # one prefilter cell per electrode on a regular array
    np.testing.assert_allclose(model.field_deg, (-10.56, 10.56, -6.33, 6.33), atol=0.01)


def test_electrode_positions_match_pulse2percept_placement():
    """Our public-API placement agrees with pulse2percept's own (private) helpers."""
    retina = ScoreboardModel(ArgusII(), rho=200)
    _, xy = electrode_dva(retina.spatial)
    np.testing.assert_allclose(xy.T, retina.spatial._scene_sampling_points(), atol=1e-4)
    cortex = CorticalScoreboard(Orion(), rho=400, implant_position=(18000, -3000), implant_rotation=20)
    spatial = cortex.spatial
    expected = spatial._electrode_coords(spatial.implant.electrode_array, None,
                                         electrodes=spatial.implant.electrode_names)
    np.testing.assert_allclose(tissue_xy(spatial), np.column_stack(expected[:2]), atol=0.05)
    # A position in degrees is placed through the map, as pulse2percept does.
    in_dva = CorticalScoreboard(Orion(), rho=400, implant_position=(-4, 1) * dva).spatial
    expected = in_dva._electrode_coords(in_dva.implant.electrode_array, None,
                                        electrodes=in_dva.implant.electrode_names)
    np.testing.assert_allclose(tissue_xy(in_dva), np.column_stack(expected[:2]), atol=0.05)


def test_cortical_electrodes_off_the_map_are_dropped_with_a_log_line(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="prosthesis_sim.phosphenes.field"):
        model = load("orion_scoreboard", tmp_path)
    assert model.dropped == ["96"] and model.implant.n_electrodes == 59
    assert "1 of 60 electrodes lie outside Polimeni2006Map region 'v1'" in caplog.text
    with pytest.raises(ValueError, match="none of the 60 electrodes.*implant_position"):
        load("orion_scoreboard", tmp_path, **{"model.implant_position": [200000, 0]})


def test_icvp_reference_and_counter_electrodes_are_left_out(tmp_path):
    model = load("icvp_scoreboard", tmp_path)
    assert model.dropped == ["R", "C"] and model.implant.n_electrodes == 16


def test_dynaphos_needs_a_pulse_train():
    with pytest.raises(ValueError, match="pulse_train"):
        Pulse2PerceptModel(partial(DynaphosModel, implant_position=(20000, -5000)), Orion())


def test_use_before_build_raises():
    for name in ("argus_scoreboard", "torch_argus"):
        cfg = OmegaConf.load(CONFIGS / f"{name}.yaml")
        with pytest.raises(RuntimeError, match="build"):
            hydra.utils.instantiate(cfg)(np.zeros((8, 8)))


def test_neuralink_threads_checks_its_arguments():
    assert neuralink_threads(2, 3, electrodes_per_thread=2).n_electrodes == 12
    with pytest.raises(ValueError, match="rows, cols"):
        neuralink_threads(0, 3)


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


def test_excluded_electrodes_are_left_out_and_unknown_names_named(tmp_path):
    model = load("suprachoroidal44_scoreboard", tmp_path)
    assert model.dropped == ["R1", "R2"] and model.implant.n_electrodes == 44
    with pytest.raises(ValueError, match=r"exclude_electrodes: \['Z9'\] are not electrodes of ArgusII"):
        load("argus_scoreboard", tmp_path, exclude_electrodes=["Z9"])
