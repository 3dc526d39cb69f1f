"""Metric definitions on signals whose answers are known."""
import numpy as np
import pytest

from prosthesis_sim.metrics import identification, signal_metrics, split_half_reliability


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
    out = identification(generated, measured, ks=(1, 2))
    assert out["top1"] == 0.5


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
