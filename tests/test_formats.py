"""Formats users commonly have: UBP's .pt files (EEG and MEG), BrainFLORA's random-split MEG pickles,
the 'preprocessed_meg_data' key, and a 'train_images' folder. Fixtures: tests/fixtures/ubp.py and
tests/fixtures/brainflora.py, written as the upstream scripts write them."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from prosthesis_sim.data.things_eeg2 import DataFormatError, load_things_eeg2
from prosthesis_sim.data.things_meg import load_things_meg
from tests.fixtures.brainflora import write_new_split
from tests.fixtures.ubp import EEG_CHANNELS, write_ubp
from tests.fixtures.nice import write_dataset


def test_ubp_eeg_loads_with_its_times_quirk_and_train_images_folder(tmp_path, caplog):
    sub = write_ubp(tmp_path / "ubp", tmp_path / "Image_set_Resize")
    saved = {name: torch.load(sub / f"{name}.pt", weights_only=False) for name in ("train", "test")}
    data = load_things_eeg2(tmp_path / "ubp", image_root=tmp_path / "Image_set_Resize", subject=1)
    assert "UBP" in data.description and "250 Hz" in data.description
    assert data.ch_names == EEG_CHANNELS and data.sfreq == pytest.approx(250.0)
    assert data.train.shape == (6, 1, 8, 250) and data.test_repetitions().shape == (4, 8, 8, 250)
    # float16 on disk, averaged over the 4 repetitions in float32
    np.testing.assert_allclose(data.train[:, 0], saved["train"]["eeg"].astype(np.float32).mean(1), rtol=1e-6)
    # 'times' holds the whole -0.2..1.0 s epoch; the data are its last 250 samples
    assert data.times[0] == pytest.approx(1.2 / 300) and data.times[-1] == pytest.approx(1.0)
    assert "the crop was applied to the data only" in caplog.text
    assert data.train_images[0].parts[-3:] == ("train_images", "00001_aardvark", "aardvark_01b.jpg")
    assert data.train_concepts[:3] == ["aardvark", "aardvark", "bat"] and data.test_concepts[0] == "dog"


def test_ubp_meg_loads_through_things_meg(tmp_path):
    write_ubp(tmp_path / "ubp", tmp_path / "images", modality="meg")
    data = load_things_meg(tmp_path / "ubp", image_root=tmp_path / "images", subject=1)
    assert data.description.startswith("THINGS-MEG UBP") and len(data.ch_names) == 271
    assert data.train.shape == (6, 1, 271, 200) and data.test_repetitions().shape == (4, 12, 271, 200)
    assert data.times[0] == pytest.approx(0.005)


def test_ubp_errors_name_file_and_field(tmp_path):
    sub = write_ubp(tmp_path / "ubp", tmp_path / "images", modality="meg")
    with pytest.raises(DataFormatError, match="train.pt: 'ch_names' are not EEG 10-05 names.*dataset=things_meg"):
        load_things_eeg2(tmp_path / "ubp", image_root=tmp_path / "images")
    payload = torch.load(sub / "test.pt", weights_only=False)
    del payload["img"]
    torch.save(payload, sub / "test.pt")
    with pytest.raises(DataFormatError, match=r"test.pt: missing field\(s\) \['img'\]"):
        load_things_meg(tmp_path / "ubp", image_root=tmp_path / "images")
    payload["img"] = np.array([["test_images/x.jpg", "test_images/y.jpg"]] * 4)
    torch.save(payload, sub / "test.pt")
    with pytest.raises(DataFormatError, match="names different images across the repetitions of row 0"):
        load_things_meg(tmp_path / "ubp", image_root=tmp_path / "images")


@pytest.mark.parametrize("data_key", ["meg_data", "preprocessed_meg_data"])
def test_brainflora_random_split(tmp_path, data_key):
    write_new_split(tmp_path / "meg", tmp_path / "meg" / "images", data_key=data_key)
    with open(tmp_path / "meg" / "sub-01" / "preprocessed_meg_test.pkl", "rb") as f:
        test = pickle.load(f)[data_key]
    data = load_things_meg(tmp_path / "meg", subject=1)
    assert "random 200-concept split" in data.description
    # every epoch a different image seen once, rows in sorted concept-folder order
    assert data.train.shape == (9, 1, 271, 200) and data.test.shape == (6, 1, 271, 200)
    np.testing.assert_allclose(data.test[:, 0], test[:, :, 1:].astype(np.float32))
    assert data.test_concepts == ["elk"] * 3 + ["fox"] * 3
    assert load_things_meg(tmp_path / "meg", split="random200").test.shape == data.test.shape
    with pytest.raises(ValueError, match="dataset.split=zero_shot, but .* no preprocessed_meg_zs_test.pkl, only "
                                         r"preprocessed_meg_test.pkl \(random 200-concept split\)"):
        load_things_meg(tmp_path / "meg", split="zero_shot")
    with pytest.raises(ValueError, match="dataset.split='nope'"):
        load_things_meg(tmp_path / "meg", split="nope")


def test_brainflora_mixed_dimensions_named(tmp_path):
    sub = write_new_split(tmp_path / "meg", tmp_path / "meg" / "images")
    with open(sub / "preprocessed_meg_test.pkl", "rb") as f:
        payload = pickle.load(f)
    payload["meg_data"] = payload["meg_data"][:, None, None]  # 5-D, like ATM's zero-shot file
    with open(sub / "preprocessed_meg_test.pkl", "wb") as f:
        pickle.dump(payload, f)
    with pytest.raises(DataFormatError, match="preprocessed_meg_test.pkl: a 5-D array, but .* 3-D one"):
        load_things_meg(tmp_path / "meg")


def test_nice_format_with_a_train_images_folder(tmp_path):
    train, _ = write_dataset(tmp_path)
    (tmp_path / "images" / "training_images").rename(tmp_path / "images" / "train_images")
    data = load_things_eeg2(tmp_path, average_train=False)
    np.testing.assert_array_equal(data.train, train)
    assert data.train_images[0].parent.parent.name == "train_images" and data.train_images[0].is_file()


def test_zero_shot_split_is_what_the_other_meg_sources_hold(tmp_path):
    write_ubp(tmp_path / "ubp", tmp_path / "images", modality="meg")
    assert load_things_meg(tmp_path / "ubp", image_root=tmp_path / "images", split="zero_shot").test.shape[0] == 4
    with pytest.raises(ValueError, match="dataset.split=random200, but .* holds THINGS-MEG UBP"):
        load_things_meg(tmp_path / "ubp", image_root=tmp_path / "images", split="random200")
