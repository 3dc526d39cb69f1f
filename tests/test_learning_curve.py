"""bench/learning_curve.py on two tiny training sizes: the floor is the floor, ridge learns, the test set is fixed."""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_learning_curve", ROOT / "bench" / "learning_curve.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


lc = load_bench()
N_TEST = 24


@pytest.mark.slow  # 5 s: two sizes synthesized, three rows fitted and bootstrapped
def test_learning_curve_tiny(tmp_path):
    out = tmp_path / "json"
    argv = ["--concepts", "12", "24", "--images-per-concept", "4", "--n-test", str(N_TEST), "--train-reps", "2",
            "--test-reps", "2", "--image-size", "32", "--rows", "mean_erp", "ridge", "kernel_ridge", "dit_trials",
            "--out", str(tmp_path / "data"), "--n-resamples", "500", "--json", str(out), "--dit-max-concepts", "1"]
    assert lc.main(argv) == 0
    result = json.loads(out.read_text())
    sizes = result["sizes"]
    assert [s["n_train_concepts"] for s in sizes] == [12, 24]
    assert [s["n_train_images"] for s in sizes] == [48, 96]
    # the same test images (and truth) at both sizes: the split is fixed, not a permutation of n_train + n_test
    assert result["fixed_test_set"] and len({s["truth_sha1"] for s in sizes}) == 1
    chance = 1 / N_TEST
    for size in sizes:
        assert size["chance_top1"] == chance
        assert "dit_trials" in size["not_run"] and "dit_trials" not in size["rows"]
        rows = size["rows"]
        assert list(rows) == ["mean_erp", "ridge", "kernel_ridge"]
        for name, row in rows.items():
            for key, _ in lc.METRICS:
                value, (lo, hi) = row[key]["value"], row[key]["ci"]
                assert all(map(math.isfinite, (value, lo, hi))) and lo <= hi, (name, key, row[key])
            assert row["fit_s"] >= 0 and row["generate_s"] >= 0
        floor = rows["mean_erp"]
        # the image-independent floor: R^2 <= 0 (minus its distance from the truth's mean), r exactly 0 and
        # top-1 exactly at chance, with zero-width intervals (every candidate ties)
        assert floor["r2"]["value"] <= 1e-9 and floor["r2"]["ci"][1] <= 1e-9
        assert floor["pearson"]["value"] == 0 and floor["pearson"]["ci"] == [0, 0]
        assert np.allclose([floor["top1"]["value"], *floor["top1"]["ci"]], chance, rtol=1e-12, atol=0)
        # ridge beats it by a margin, resolved by the paired interval (mean_erp - ridge < 0)
        assert rows["ridge"]["r2"]["value"] > floor["r2"]["value"] + 0.05
        assert rows["ridge"]["pearson"]["value"] > 0.05
        assert floor["vs_ridge"]["pearson"]["resolved"] and floor["vs_ridge"]["pearson"]["ci"][1] < 0
        assert floor["vs_ridge"]["r2"]["ci"][1] < 0
        krr = rows["kernel_ridge"]
        assert krr["alpha"] in lc.KRR_ALPHAS and krr["gamma_factor"] in lc.KRR_GAMMA_FACTORS
        assert krr["cv_images"] == size["n_train_images"] and "vs_ridge" in krr
        assert krr["pearson"]["value"] > 0.05
    big = sizes[-1]["rows"]
    assert big["ridge"]["top1"]["value"] > 3 * chance
    # more training concepts: ridge explains more of the truth
    assert big["ridge"]["r2"]["value"] > sizes[0]["rows"]["ridge"]["r2"]["value"]


def test_metrics_on_known_signals():
    """R^2, r and top-1 of the truth itself, of a constant and of the truth plus an offset."""
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(30, 3, 8))
    weights = lc._resample_weights(30, 200, 0)
    perfect = lc.metric_samples(truth, truth, weights)["value"]
    assert np.isclose(perfect["r2"], 1) and np.isclose(perfect["pearson"], 1) and perfect["top1"] == 1
    mean = lc.metric_samples(np.repeat(truth.mean(0, keepdims=True), 30, axis=0), truth, weights)["value"]
    assert np.isclose(mean["r2"], 0) and mean["pearson"] == 0 and np.isclose(mean["top1"], 1 / 30)
    shifted = lc.metric_samples(truth + 1.0, truth, weights)["value"]  # r ignores the offset, R^2 does not
    assert np.isclose(shifted["pearson"], 1) and shifted["r2"] < 0


def test_structure_things_synthesizes_with_the_presets_knobs(tmp_path):
    """--structure things: the knobs of configs/preset/things.yaml, a folder of its own, version 3 data."""
    import yaml

    preset = yaml.safe_load((ROOT / "configs" / "preset" / "things.yaml").read_text())
    knobs = lc.STRUCTURES["things"]
    assert knobs and all(knobs[k] == float(preset[k]) for k in knobs)
    settings = dict(images_per_concept=1, n_test=3, train_reps=1, test_reps=2, image_size=32, seed=0,
                    test_set="fixed", structure=knobs)
    folder, _ = lc.make_dataset(tmp_path, 4, settings)
    assert folder != lc.dataset_folder(tmp_path, 4, {**settings, "structure": {}})
    record = json.loads((folder / "synth.json").read_text())
    from prosthesis_sim.data.synth import STRUCTURE

    assert record["version"] == 3 and all(record["args"][k] == v for k, v in knobs.items() if v != STRUCTURE[k])


@pytest.mark.slow
def test_trial_realism_scores_dit_trials_beside_its_baselines(tmp_path):
    """The dit_trials row on a tiny dataset (40 optimiser steps): every accuracy is a two-sample accuracy,
    the white-in-time baseline is told apart, the measured halves are not, and the difference with the
    cross-spectral baseline carries an interval."""
    settings = dict(images_per_concept=2, n_test=16, train_reps=4, test_reps=8, image_size=32, seed=0,
                    test_set="fixed", dit_steps=40, dit_validation_fraction=0.1)
    folder, _ = lc.make_dataset(tmp_path, 20, settings)
    t = lc.trial_realism(folder, settings)
    acc = t["accuracy"]
    assert set(acc) == set(lc.TRIAL_ROWS) and all(0 <= a <= 1 for a in acc.values())
    assert acc["baseline: mean + spatial noise"] > 0.8 and acc["measured halves (reference)"] < 0.7, acc
    d = t["generated_minus_cross_spectral"]
    assert d["ci"][0] < d["value"] < d["ci"][1] and t["n_trials_classified"] == 2 * 16 * 8 and d["n_images"] == 16
    assert t["n_train_trials"] == 20 * 2 * 4 and t["steps"] >= 40


@pytest.mark.slow
def test_residual_headroom_scores_on_the_dit_residuals_held_out_concepts(tmp_path):
    """bench/residual_headroom.py: kernel ridge and the residual DiT are scored against one observed
    residual, the DiT's own held-out concepts (same images, same MSE without the gain); the noise share
    is a share and sets the bound on r."""
    spec = importlib.util.spec_from_file_location("bench_residual_headroom", ROOT / "bench" / "residual_headroom.py")
    rh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rh)
    settings = dict(images_per_concept=4, n_test=8, train_reps=3, test_reps=2, image_size=32, seed=0,
                    test_set="fixed")
    folder, _ = lc.make_dataset(tmp_path, 30, settings)
    assert rh.main([str(folder), "--dit-steps", "4", "--json", str(tmp_path / "h.json")]) == 0
    result = json.loads((tmp_path / "h.json").read_text())
    krr, dit = result["rows"]["kernel_ridge"], result["rows"]["dit_residual_4"]
    assert result["held_out_images"] == dit["held_out_images"] == 4 * result["held_out_concepts"] > 0
    assert np.isclose(krr["mse_regression"], dit["mse_regression"], rtol=1e-9)
    assert np.isclose(krr["mse_regression"], result["residual_mse"], rtol=1e-6)
    assert 0 < result["noise_share"] < 1 and result["n_reps"] == 3
    assert np.isclose(result["max_r_noise_free"], np.sqrt(1 - result["noise_share"]))
    assert -1 <= krr["r"] <= 1 and 0 <= krr["gain"] <= 1 and krr["mse_with_gain"] <= krr["mse_regression"] + 1e-12
    for row in (krr, dit):  # each r with its interval over the held-out images
        assert row["r_ci"][0] <= row["r"] <= row["r_ci"][1]
