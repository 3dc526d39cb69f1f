"""The declared epoch: loaders say what the time axis is, crop and resample it on request (MNE), and a
saved model refuses data on another epoch with both named."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from omegaconf import OmegaConf

from prosthesis_sim.encoders.mean_erp import MeanERP
from prosthesis_sim.checkpoint import load_component, save_component, saved_epoch
from prosthesis_sim.data.dataset import Epoch
from prosthesis_sim.data.things_eeg2 import load_things_eeg2
from tests.fixtures.nice import write_dataset

GIFFORD_TIMES = np.arange(100) / 100 - 0.2  # Gifford et al.'s release: -0.2..0.79 s at 100 Hz


def test_baseline_epoch_is_named_and_cropped_on_request(tmp_path, caplog):
    write_dataset(tmp_path, n_t=100, sfreq=100.0, times=GIFFORD_TIMES)
    with caplog.at_level(logging.WARNING):
        data = load_things_eeg2(tmp_path)
    assert data.epoch == Epoch(-0.2, 0.79, 100.0, 100)
    assert "starts 0.200 s before stimulus onset" in caplog.text and "dataset.tmin=0 crops it" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        cropped = load_things_eeg2(tmp_path, tmin=0)
    assert not caplog.text
    assert cropped.epoch == Epoch(0.0, 0.79, 100.0, 80) and cropped.train.shape[-1] == 80
    np.testing.assert_array_equal(cropped.test_repetitions(), data.test_repetitions()[..., 20:])
    assert "cropped to 0.000..0.790 s" in cropped.description


def test_resampled_with_mne_keeps_the_signal(tmp_path):
    write_dataset(tmp_path, n_t=100, sfreq=100.0, times=np.arange(100) / 100)
    data = load_things_eeg2(tmp_path)
    t = data.times
    slow = np.sin(2 * np.pi * 3 * t).astype(np.float32)  # 3 Hz: well inside both rates
    data.train[:] = slow
    data.conform(sfreq=250)
    assert data.epoch == Epoch(0.0, 0.996, 250.0, 250) and data.info["sfreq"] == 250
    expected = np.sin(2 * np.pi * 3 * data.times)
    # FFT resampling of a non-periodic segment rings at the edges; the middle is the signal
    np.testing.assert_allclose(data.train[0, 0, 0, 25:-25], expected[25:-25], atol=0.05)
    with pytest.raises(ValueError, match="dataset.tmin=2, dataset.tmax=None keep 0 samples"):
        data.conform(tmin=2)


def test_a_model_refuses_data_on_another_epoch(tmp_path):
    write_dataset(tmp_path / "a", n_t=100, sfreq=100.0, times=GIFFORD_TIMES)
    data = load_things_eeg2(tmp_path / "a")
    model = MeanERP()
    model.fit(data)
    save_component(model, tmp_path / "model", OmegaConf.create({"_target_": "prosthesis_sim.encoders.mean_erp.MeanERP"}), data.epoch)
    assert saved_epoch(tmp_path / "model") == data.epoch
    load_component(tmp_path / "model", data)  # the same epoch loads
    other = load_things_eeg2(tmp_path / "a", tmin=0)
    with pytest.raises(ValueError, match=r"fitted on the epoch -0.200..0.790 s at 100 Hz \(100 samples\), but "
                                         r".* has 0.000..0.790 s.*dataset.tmin=-0.2 dataset.tmax=0.79 dataset.sfreq=100"):
        load_component(tmp_path / "model", other)
    # conformed as the message says, the data loads on the model's epoch again
    write_dataset(tmp_path / "b", n_t=250, sfreq=250.0, times=np.arange(250) / 250 - 0.2)
    again = load_things_eeg2(tmp_path / "b", tmax=0.79, sfreq=100)
    assert again.epoch == data.epoch
    load_component(tmp_path / "model", again)
