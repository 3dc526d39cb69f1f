"""THINGS-EEG2 loader: round trips of tiny files in the exact on-disk format, and every error case."""
import logging
import pickle

import numpy as np
import pytest

from prosthesis_sim.data.dataset import Normalizer
from prosthesis_sim.data.things_eeg2 import DataFormatError, load_things_eeg2
from tests.fixtures.nice import CH63, GIFFORD17, write_dataset



@pytest.mark.parametrize("as_object_array", [False, True])
@pytest.mark.parametrize("metadata", [True, False])
def test_round_trip(tmp_path, as_object_array, metadata):
    train, test = write_dataset(tmp_path, as_object_array=as_object_array, metadata=metadata)
    data = load_things_eeg2(tmp_path, subject=1, average_train=False, average_test=True)
    np.testing.assert_array_equal(data.train, train)
    np.testing.assert_allclose(data.test[:, 0], test.mean(1), rtol=1e-6)
    np.testing.assert_array_equal(data.test_repetitions(), test)
    assert data.ch_names == CH63 and data.sfreq == 250.0
    assert data.info.get_montage() is not None and len(data.info.get_montage().ch_names) == 63
    assert len(data.train_images) == 6 and all(p.is_file() for p in data.train_images + data.test_images)
    assert data.train_concepts[:3] == ["thing0_training"] * 2 + ["thing1_training"]
    assert data.test_images[2].parent.name == "00003_thing2_test"
    assert data.subject == "sub-01" and "NICE" in data.description


def test_averaging_keeps_a_repetition_axis(tmp_path):
    train, _ = write_dataset(tmp_path)
    data = load_things_eeg2(tmp_path, subject="sub-01")
    assert data.train.shape == (6, 1, 63, 20)
    np.testing.assert_allclose(data.train_average(), train.mean(1), rtol=1e-5)


def test_times_quirk_is_aligned_and_reported(tmp_path, caplog):
    times = np.arange(-5, 20) / 250.0  # 25 values for 20 samples, as a crop applied to the data only
    write_dataset(tmp_path, times=times)
    with caplog.at_level(logging.WARNING):
        data = load_things_eeg2(tmp_path)
    assert len(data.times) == 20 and data.times[0] == 0.0
    assert "crop was applied to the data only" in caplog.text


def test_gifford_release_recognised(tmp_path):
    write_dataset(tmp_path, ch=GIFFORD17, n_t=10, sfreq=100.0, times=np.arange(10) / 100.0 - 0.2)
    data = load_things_eeg2(tmp_path)
    assert "Gifford" in data.description and data.sfreq == 100.0 and len(data.ch_names) == 17


def test_normaliser_uses_train_statistics(tmp_path):
    write_dataset(tmp_path)
    data = load_things_eeg2(tmp_path, average_train=False)
    z = Normalizer.fit(data.train)(data.train)
    np.testing.assert_allclose(z.transpose(2, 0, 1, 3).reshape(63, -1).mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(z.transpose(2, 0, 1, 3).reshape(63, -1).std(1), 1, atol=1e-4)


def _rewrite(path, **changes):
    d = np.load(path, allow_pickle=True)
    d.update(changes)
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=4)


def test_missing_subject_names_folder(tmp_path):
    write_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="sub-02"):
        load_things_eeg2(tmp_path, subject=2)


def test_missing_file_named(tmp_path):
    write_dataset(tmp_path)
    (tmp_path / "sub-01" / "preprocessed_eeg_test.npy").unlink()
    with pytest.raises(FileNotFoundError, match="preprocessed_eeg_test.npy"):
        load_things_eeg2(tmp_path)


def test_missing_key_named(tmp_path):
    write_dataset(tmp_path)
    path = tmp_path / "sub-01" / "preprocessed_eeg_training.npy"
    d = np.load(path, allow_pickle=True)
    del d["times"]
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=4)
    with pytest.raises(DataFormatError, match=r"preprocessed_eeg_training.npy.*'times'"):
        load_things_eeg2(tmp_path)


def test_wrong_shape_named(tmp_path):
    write_dataset(tmp_path)
    path = tmp_path / "sub-01" / "preprocessed_eeg_test.npy"
    _rewrite(path, preprocessed_eeg_data=np.zeros((4, 63, 20), np.float32))
    with pytest.raises(DataFormatError, match=r"preprocessed_eeg_test.npy.*4-D"):
        load_things_eeg2(tmp_path)


def test_channel_count_mismatch(tmp_path):
    write_dataset(tmp_path)
    _rewrite(tmp_path / "sub-01" / "preprocessed_eeg_training.npy", ch_names=CH63[:-1])
    with pytest.raises(DataFormatError, match="62"):
        load_things_eeg2(tmp_path)


def test_channel_names_differ_between_files(tmp_path):
    write_dataset(tmp_path)
    swapped = CH63[1:2] + CH63[:1] + CH63[2:]
    _rewrite(tmp_path / "sub-01" / "preprocessed_eeg_test.npy", ch_names=swapped)
    with pytest.raises(DataFormatError, match="ch_names"):
        load_things_eeg2(tmp_path)


def test_unknown_channel_name(tmp_path):
    write_dataset(tmp_path, ch=CH63[:-1] + ["XYZ"])
    with pytest.raises(DataFormatError, match="standard_1005"):
        load_things_eeg2(tmp_path)


def test_nan_reported_with_index(tmp_path):
    train, _ = write_dataset(tmp_path)
    train[2, 1, 5, 7] = np.nan
    _rewrite(tmp_path / "sub-01" / "preprocessed_eeg_training.npy", preprocessed_eeg_data=train)
    with pytest.raises(DataFormatError, match=r"NaN/Inf.*\(2, 1, 5, 7\)"):
        load_things_eeg2(tmp_path)


def test_image_count_mismatch(tmp_path):
    write_dataset(tmp_path, metadata=False)
    img = next((tmp_path / "images" / "test_images").glob("*/*.jpg"))
    img.unlink()
    with pytest.raises(DataFormatError, match="test_images.*3 images.*4 rows"):
        load_things_eeg2(tmp_path)


def test_not_a_dict(tmp_path):
    write_dataset(tmp_path)
    np.save(tmp_path / "sub-01" / "preprocessed_eeg_training.npy", np.zeros(3))
    with pytest.raises(DataFormatError, match="expected a pickled dict"):
        load_things_eeg2(tmp_path)


def test_metadata_sets_the_row_order(tmp_path):
    write_dataset(tmp_path)
    meta_path = tmp_path / "images" / "image_metadata.npy"
    meta = np.load(meta_path, allow_pickle=True).item()
    order = [3, 0, 5, 1, 4, 2]  # rows of the EEG array need not follow sorted folder order
    for key in ("train_img_concepts", "train_img_files"):
        meta[key] = [meta[key][i] for i in order]
    np.save(meta_path, meta, allow_pickle=True)
    data = load_things_eeg2(tmp_path)
    assert [p.name for p in data.train_images] == meta["train_img_files"]
    assert data.train_concepts[0] == "thing1_training"


def test_missing_metadata_key_named(tmp_path):
    write_dataset(tmp_path)
    meta_path = tmp_path / "images" / "image_metadata.npy"
    meta = np.load(meta_path, allow_pickle=True).item()
    del meta["test_img_files"]
    np.save(meta_path, meta, allow_pickle=True)
    with pytest.raises(DataFormatError, match="image_metadata.npy.*test_img_files"):
        load_things_eeg2(tmp_path)


def test_times_shorter_than_data(tmp_path):
    write_dataset(tmp_path, times=np.arange(10) / 250.0)
    with pytest.raises(DataFormatError, match="'times' has 10 values but the data has 20"):
        load_things_eeg2(tmp_path)
