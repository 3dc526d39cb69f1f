"""Metric definitions on signals whose answers are known."""
import numpy as np
import pytest

from prosthesis_sim.metrics import (_halves, across_image_ceiling, across_image_r, fraction_of_ceiling, identification,
                                    signal_metrics, split_half_reliability)


def test_perfect_prediction():
    rng = np.random.default_rng(0)
    m = rng.standard_normal((10, 4, 30))
    out = signal_metrics(m.copy(), m)
    assert out["mse"] == 0 and out["pcc"] == pytest.approx(1) and out["top1"] == 1 and out["pcc_channel"] == pytest.approx(1)


def test_constant_prediction_is_at_chance():
    rng = np.random.default_rng(0)
    m = rng.standard_normal((20, 4, 30))
    out = identification(np.repeat(m.mean(0, keepdims=True), 20, 0), m)
    assert out["top1"] == pytest.approx(1 / 20) and out["top5"] == pytest.approx(5 / 20)


def test_identification_counts_ranks():
    measured = np.eye(4)[:, :, None] * np.array([1.0, -1.0])  # 4 distinct patterns
    generated = measured[[0, 1, 3, 2]]  # images 2 and 3 swapped
    out = identification(generated, measured, ks=(1, 2, 3, 4))
    # 0 and 1 first; 2 and 3 correlate 1 with each other's pattern and 0 with the three others, their own
    # included: a tie counts against, so they rank fourth
    assert out == {"top1": 0.5, "top2": 0.5, "top3": 0.5, "top4": 1.0}


def test_identification_matches_a_direct_ranking():
    rng = np.random.default_rng(3)
    measured = rng.standard_normal((12, 3, 20))
    generated = measured + 4.0 * rng.standard_normal(measured.shape)
    r = np.array([[np.corrcoef(g.ravel(), m.ravel())[0, 1] for m in measured] for g in generated])
    place = np.array([np.sum(row > row[i]) for i, row in enumerate(r)])  # images ahead of the right one
    assert 0 < (place == 0).sum() < 12 and place.max() >= 5  # neither all right nor all in the first five
    assert identification(generated, measured, ks=(1, 2, 5)) == {f"top{k}": np.mean(place < k) for k in (1, 2, 5)}


def test_noise_ceiling_matches_known_reliability():
    rng = np.random.default_rng(1)
    signal = rng.standard_normal((40, 1, 8, 50))
    trials = signal + 2.0 * rng.standard_normal((40, 16, 8, 50))  # per-trial SNR 1/4; half-average of 8: 2
    out = split_half_reliability(trials, n_splits=10)
    expected_half_r = 2 / (2 + 1)  # var(signal) / (var(signal) + var(noise of an 8-trial mean))
    assert out["split_half_r"] == pytest.approx(expected_half_r, abs=0.03)
    full_rel = 4 / (4 + 1)
    assert out["reliability"] == pytest.approx(full_rel, abs=0.03)
    assert out["noise_ceiling"] == pytest.approx(np.sqrt(full_rel), abs=0.03)


def test_noise_ceiling_without_repetitions_is_nan_with_a_warning():
    with pytest.warns(UserWarning, match="needs >= 2 test repetitions, got 1: reported as NaN"):
        out = split_half_reliability(np.zeros((3, 1, 2, 5)))
    assert np.isnan(out["noise_ceiling"]) and out["n_repetitions"] == 1


def test_ties_and_constant_signals_are_not_identified():
    rng = np.random.default_rng(2)
    m = rng.standard_normal((10, 3, 20))
    assert identification(np.zeros_like(m), m)["top1"] == 0.0  # all r = 0: every image ties


def test_non_finite_generated_signals_are_refused():
    m = np.ones((4, 2, 5))
    bad = m.copy()
    bad[1, 0, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        signal_metrics(bad, m)


def _trials(n_images=40, n_rep=8, noise=1.0, seed=0):
    """Shared evoked response + image-specific signal + repetition noise; returns (trials, specific, shared)."""
    rng = np.random.default_rng(seed)
    shared = 3 * np.sin(np.linspace(0, 3, 30))[None, :] * np.ones((4, 1))  # (channels, times)
    specific = rng.standard_normal((n_images, 4, 30))
    trials = shared + specific[:, None] + noise * rng.standard_normal((n_images, n_rep, 4, 30))
    return trials, specific, shared


def test_across_image_r_ignores_the_shared_response():
    trials, specific, shared = _trials()
    measured = trials.mean(axis=1)
    mean_erp = np.broadcast_to(measured.mean(axis=0), measured.shape)  # the floor: one response for all
    floor = signal_metrics(mean_erp.copy(), measured, reference=shared)
    assert floor["pcc"] > 0.6  # flattened per-image r is dominated by the shared response ...
    assert floor["r_across_images"] == pytest.approx(0.0, abs=1e-9)  # ... the across-image r is not
    assert floor["top1_centered"] <= 1 / 40 + 1e-9
    good = signal_metrics(shared + specific, measured, reference=shared)
    assert good["r_across_images"] > 0.8 and good["top1_centered"] == 1.0


def test_across_image_ceiling_matches_the_signal_to_noise():
    n_rep, noise = 8, 2.0
    trials, specific, shared = _trials(n_images=200, n_rep=n_rep, noise=noise)
    ceiling = across_image_ceiling(trials)
    expected = np.sqrt(1 / (1 + noise ** 2 / n_rep))  # r of the noise-free signal with the full average
    assert ceiling.shape == (4, 30) and ceiling.mean() == pytest.approx(expected, abs=0.03)
    # the noise-free model reaches it
    assert across_image_r(shared + specific, trials.mean(axis=1)).mean() == pytest.approx(expected, abs=0.03)


def test_halves_are_equal_for_odd_counts_and_zero_ceilings_are_nan():
    a, b = _halves(np.random.default_rng(0), 5)
    assert len(a) == len(b) == 2 and not set(a) & set(b)
    assert np.isfinite(split_half_reliability(np.random.default_rng(0).standard_normal((6, 3, 2, 5)))["split_half_r"])
    with pytest.warns(UserWarning, match="noise ceiling is 0.0, so the fraction of it is NaN"):
        assert np.isnan(fraction_of_ceiling(0.3, 0.0, "pcc"))
    with pytest.warns(UserWarning, match="needs >= 2 test repetitions"):
        assert np.isnan(across_image_ceiling(np.zeros((3, 1, 2, 5)))).all()
