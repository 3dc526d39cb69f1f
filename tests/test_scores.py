"""Image scores as the field computes them: Wang et al.'s SSIM and one Pearson r for signals and images."""
import warnings

import numpy as np
import pytest
import scipy.stats
from skimage import data
from skimage.metrics import structural_similarity

from prosthesis_sim.metrics import correlation_matrix, pearson_rows
from prosthesis_sim.scores import image_scores, pearson, ssim, to_grey


@pytest.fixture(scope="module")
def pair():
    """A known pair: the camera image (48 x 64, area-shrunk) and a blurred, noisy copy."""
    import cv2

    grey = cv2.resize(to_grey(data.camera()), (64, 48), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    other = np.clip(cv2.GaussianBlur(grey, (5, 5), 1.0) + 0.1 * rng.standard_normal(grey.shape), 0, 1)
    return grey, other.astype(np.float32)


def test_ssim_is_wang_et_al_gaussian_window(pair):
    frame, percept = pair
    wang = structural_similarity(frame, percept, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)
    uniform_7x7 = structural_similarity(frame, percept, data_range=1.0, win_size=7)  # what the loop used before
    assert image_scores(frame, percept)["ssim"] == pytest.approx(wang, abs=1e-6)
    assert abs(wang - uniform_7x7) > 0.01  # the choice matters on this pair
    assert ssim(frame, frame) == pytest.approx(1.0)


def test_image_pearson_is_scipy_pearsonr(pair):
    frame, percept = pair
    expected = scipy.stats.pearsonr(frame.ravel().astype(np.float64), percept.ravel().astype(np.float64))[0]
    assert image_scores(frame, percept)["pearson"] == pytest.approx(expected, abs=1e-9)
    assert pearson(frame, percept) == pytest.approx(expected, abs=1e-9)


def test_one_pearson_for_signals_and_images():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 5, 63, 50))
    rows = pearson_rows(a, b)
    assert [pearson(x, y) for x, y in zip(a, b)] == pytest.approx(rows, abs=1e-12)
    assert np.diag(correlation_matrix(a, b)) == pytest.approx(rows, abs=1e-12)
    assert rows[0] == pytest.approx(scipy.stats.pearsonr(a[0].ravel(), b[0].ravel())[0], abs=1e-12)


def test_constant_input_gives_zero_everywhere():
    rng = np.random.default_rng(2)
    constant = np.full((40, 50), 0.3, np.float32)  # its float mean is not exactly 0.3: rounding must not leak
    noise = rng.random((40, 50)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pearson(constant, noise) == 0.0 and pearson(noise, constant) == 0.0
        assert pearson(constant, constant) == 0.0
        signals = np.stack([np.full((3, 7), 2.5), rng.standard_normal((3, 7))])
        assert pearson_rows(signals, signals[::-1]).tolist() == [0.0, 0.0]
        assert correlation_matrix(signals, signals)[0].tolist() == [0.0, 0.0]
        assert image_scores(noise, constant)["pearson"] == 0.0


def test_non_finite_input_is_not_reported_as_uncorrelated():
    a = np.arange(10.0)
    b = a.copy()
    b[3] = np.nan
    assert np.isnan(pearson(a, b))


def test_small_percepts_narrow_the_crop_and_tiny_ones_are_refused():
    frame = data.astronaut()
    small = np.random.default_rng(0).random((5, 6))
    assert np.isfinite(image_scores(frame, small)["ssim"])
    # scikit-image's rule for images under 11 px: the largest odd window that fits (here 5)
    expected = structural_similarity(to_grey(small), small.astype(np.float32), data_range=1.0,
                                     gaussian_weights=True, sigma=1.5, use_sample_covariance=False, win_size=5)
    assert ssim(to_grey(small), small.astype(np.float32)) == pytest.approx(expected)
    for shape in ((1, 1), (2, 40)):
        with pytest.raises(ValueError, match=rf"{shape[0]}, {shape[1]}.*at least 3"):
            image_scores(frame, np.zeros(shape))
    with pytest.raises(ValueError, match="equally sized"):
        pearson(np.zeros(3), np.zeros(4))
