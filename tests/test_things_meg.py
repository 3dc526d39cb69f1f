"""THINGS-MEG: loader round trips of tiny files in both on-disk forms (ATM pickles, MNE epochs), every
error case, topomaps on the template sensor positions, and the synthetic MEG generator."""
import json
import pickle

import matplotlib
import cv2
import mne
import numpy as np
import pandas as pd
import pytest

from prosthesis_sim.data.synth import synthesize
from prosthesis_sim.data.things_eeg2 import DataFormatError
from prosthesis_sim.data.things_meg import load_things_meg, make_meg_info
from prosthesis_sim.render import mne_topomap_geometry
from tests.fixtures import things_meg_epochs as release
from tests.fixtures.atm import ALL, CH, N_T, SFREQ, TEST, TRAIN, signals, write_images, write_pickles

matplotlib.use("Agg")

SYNTH = dict(n_subjects=1, n_train_concepts=3, images_per_concept=2, n_test=12, train_reps=1, test_reps=12,
             image_size=32, seed=0, progress=False, modality="meg")


def write_epochs(path, train, test, rows, tmin=-0.1, n_samples=281, metadata=True, seed=0):
    """An epochs file (-0.1..1.3 s, 11 magnetometers + a trigger channel) holding train/test (images,
    reps, channels, 201) in 0..1.0 s, images shuffled within each repetition (as sessions present them),
    plus a catch trial and a training trial of a test concept (both skipped). Its metadata has only
    `trial_type` and `image_path` (paths as in the release: flat for test images), so the loader takes
    concepts from file names; tests/fixtures/things_meg_epochs.py writes the release's full layout."""
    rng = np.random.default_rng(seed)
    trials = [(r, "exp", f"images_meg/{c}/{f}", x)
              for (c, f), reps in zip(rows["training"], train) for r, x in enumerate(reps)]
    trials += [(r, "test", f"images_test_meg/{f}", x)
               for (c, f), reps in zip(rows["test"], test) for r, x in enumerate(reps)]
    trials += [(0, "catch", "images_catch_meg/catch001.jpg", signals(train.shape[2:], 5)),
               (0, "exp", "images_meg/novel1/novel1_01b.jpg", train[0, 0])]
    order = np.lexsort((rng.random(len(trials)), [r for r, *_ in trials]))
    trials = [trials[i] for i in order]
    start = int(round(-tmin * SFREQ))
    data = rng.standard_normal((len(trials), len(CH) + 1, n_samples)).astype(np.float32)
    for k, (*_, x) in enumerate(trials):
        data[k, : len(CH), start : start + x.shape[-1]] = x[:, : n_samples - start]
    info = mne.create_info(CH + ["UPPT001"], SFREQ, ["mag"] * len(CH) + ["stim"])
    meta = pd.DataFrame({"trial_type": [t for _, t, *_ in trials], "image_path": [p for *_, p, _ in trials]})
    epochs = mne.EpochsArray(data, info, tmin=tmin, metadata=meta if metadata else None, verbose="error")
    path.parent.mkdir(parents=True, exist_ok=True)
    epochs.save(path, fmt="single", overwrite=True, verbose="error")


@pytest.fixture(scope="module")
def synth_meg(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("synth_meg") / "meg", **SYNTH)


# ----------------------------------------------------------------------------------- ATM pickles


def test_pickle_round_trip_normalises_axes_and_drops_first_sample(tmp_path):
    tr, te = write_pickles(tmp_path)
    data = load_things_meg(tmp_path, subject=1, average_train=False, average_test=True)
    # (concepts, images per concept, reps, ...) -> (images, reps, ...): images in row-major order
    np.testing.assert_array_equal(data.train, tr.reshape(6, 1, len(CH), N_T)[..., 1:].astype(np.float32))
    np.testing.assert_array_equal(data.train[3, 0], tr[1, 1, 0, :, 1:].astype(np.float32))
    np.testing.assert_array_equal(data.test_repetitions(), te[:, 0, ..., 1:].astype(np.float32))
    np.testing.assert_allclose(data.test[:, 0], te[:, 0, ..., 1:].mean(1), rtol=1e-5, atol=1e-6)
    assert data.train.dtype == np.float32 and data.test.shape == (4, 1, len(CH), 200)
    assert len(data.times) == 200 and data.times[0] == pytest.approx(0.005) and data.times[-1] == pytest.approx(1.0)
    assert data.ch_names == CH and data.sfreq == 200.0 and data.subject == "sub-01"
    assert "ATM pickles" in data.description
    assert [p.name for p in data.train_images[:3]] == ["thing0_01b.jpg", "thing0_02b.jpg", "thing1_01b.jpg"]
    assert data.train_concepts[:3] == ["thing0", "thing0", "thing1"] and data.test_concepts[0] == "novel0"


def test_first_sample_kept_on_request(tmp_path):
    tr, _ = write_pickles(tmp_path)
    data = load_things_meg(tmp_path, drop_first_sample=False)
    assert data.train.shape == (6, 1, len(CH), N_T) and data.times[0] == 0.0
    np.testing.assert_allclose(data.train_average(), tr.reshape(6, len(CH), N_T), rtol=1e-6)


def _rewrite(path, **changes):
    with open(path, "rb") as f:
        d = pickle.load(f)
    d.update(changes)
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=4)


def test_missing_subject_and_missing_file_named(tmp_path):
    write_pickles(tmp_path)
    with pytest.raises(FileNotFoundError, match="sub-02"):
        load_things_meg(tmp_path, subject=2)
    (tmp_path / "sub-01" / TEST).unlink()
    with pytest.raises(FileNotFoundError, match=TEST):
        load_things_meg(tmp_path)


@pytest.mark.parametrize("file, changes, match", [
    (TRAIN, {"meg_data": np.zeros((6, 1, len(CH), N_T))}, rf"{TRAIN}.*'meg_data' must be 5-D.*\(6, 1, 11, 201\)"),
    (TEST, {"ch_names": CH[:-1]}, rf"{TEST}.*11 channels but 'ch_names' lists 10"),
    (TEST, {"ch_names": CH[1:2] + CH[:1] + CH[2:]}, rf"{TEST}.*'ch_names' differ"),
    (TEST, {"meg_data": np.zeros((4, 1, 6, len(CH), 20))}, rf"{TEST}: 20 time samples"),
])
def test_format_errors_name_file_and_field(tmp_path, file, changes, match):
    write_pickles(tmp_path)
    _rewrite(tmp_path / "sub-01" / file, **changes)
    with pytest.raises(DataFormatError, match=match):
        load_things_meg(tmp_path)


def test_unknown_channel_names(tmp_path):
    write_pickles(tmp_path)
    for file in (TRAIN, TEST):
        _rewrite(tmp_path / "sub-01" / file, ch_names=CH[:-1] + ["EEG001"])
    with pytest.raises(DataFormatError, match=rf"{TRAIN}.*'ch_names' are not all CTF-275 sensors.*EEG001"):
        load_things_meg(tmp_path)


def test_missing_key_and_not_a_dict(tmp_path):
    write_pickles(tmp_path)
    path = tmp_path / "sub-01" / TRAIN
    with open(path, "rb") as f:
        d = pickle.load(f)
    del d["times"]
    with open(path, "wb") as f:
        pickle.dump(d, f)
    with pytest.raises(DataFormatError, match=rf"{TRAIN}.*missing field.*'times'"):
        load_things_meg(tmp_path)
    with open(path, "wb") as f:
        pickle.dump([1, 2], f)
    with pytest.raises(DataFormatError, match="expected a pickled dict"):
        load_things_meg(tmp_path)


def test_nan_reported_with_index_in_the_file(tmp_path):
    tr, _ = write_pickles(tmp_path)
    tr[2, 1, 0, 5, 7] = np.inf
    _rewrite(tmp_path / "sub-01" / TRAIN, meg_data=tr)
    with pytest.raises(DataFormatError, match=r"'meg_data' holds NaN/Inf, first at index \(2, 1, 0, 5, 7\)"):
        load_things_meg(tmp_path)


# ------------------------------------------------------------------------------------------ MNE epochs


def _as_arrays(tr, te):
    """The pickles' 5-D arrays as (images, reps, channels, times) float32."""
    return tr.reshape(-1, *tr.shape[2:]).astype(np.float32), te[:, 0].astype(np.float32)


@pytest.mark.parametrize("folder", ["sub-01", "."])
def test_epochs_file_loads_like_the_pickles(tmp_path, folder):
    tr, te = write_pickles(tmp_path / "atm")
    train, test = _as_arrays(tr, te)
    rows = write_images(tmp_path / "fif")
    write_epochs(tmp_path / "fif" / folder / "preprocessed_P1-epo.fif", train, test, rows)
    a = load_things_meg(tmp_path / "atm", average_train=False)
    b = load_things_meg(tmp_path / "fif", subject="sub-01", average_train=False)
    np.testing.assert_array_equal(a.train, b.train)
    np.testing.assert_array_equal(a.test_repetitions(), b.test_repetitions())
    np.testing.assert_allclose(a.times, b.times)
    assert a.ch_names == b.ch_names == CH  # the trigger channel is not a magnetometer
    assert [p.name for p in a.train_images + a.test_images] == [p.name for p in b.train_images + b.test_images]
    assert a.test_concepts == b.test_concepts and "epochs preprocessed_P1-epo.fif" in b.description


@pytest.mark.parametrize("break_it, match", [
    ("metadata", r"metadata lacks column\(s\) \['trial_type', 'image_path'\]"),
    ("short", r"epochs span 0.000..0.495 s"),
    ("uneven", r"test images have 5 to 6 epochs each"),
    ("renamed", r"1 test image\(s\) of its epochs are not in .*test_images .*e.g. novel2_01s.jpg"),
])
def test_epochs_errors(tmp_path, break_it, match):
    tr, te = write_pickles(tmp_path / "atm")
    train, test = _as_arrays(tr, te)
    rows = write_images(tmp_path)
    path = tmp_path / "sub-01" / "preprocessed_P1-epo.fif"
    if break_it == "uneven":
        write_epochs(path, train, test, rows)
        epochs = mne.read_epochs(path, verbose="error")
        drop = np.flatnonzero(epochs.metadata["image_path"].str.endswith("novel0_01s.jpg").to_numpy())[0]
        epochs.drop([drop], verbose="error").save(path, fmt="single", overwrite=True, verbose="error")
    else:
        write_epochs(path, train, test, rows, metadata=break_it != "metadata",
                     **({"tmin": 0.0, "n_samples": 100} if break_it == "short" else {}))
    if break_it == "renamed":
        img = next((tmp_path / "images" / "test_images").glob("*/novel2_01s.jpg"))
        img.rename(img.with_name("novel2_01s_renamed.jpg"))
    with pytest.raises(DataFormatError, match=match):
        load_things_meg(tmp_path)


# ------------------------------------------------------------------- the release's epochs file and metadata

RELEASE_FIF = "preprocessed_P1-epo.fif"


def write_release(root, metadata=None, ch_names=CH, zero_shot_images=True):
    """preprocessed_P1-epo.fif in <root>/ (as derivatives/preprocessed/ holds it) + ATM-style image
    folders; returns (metadata as written, data as written)."""
    meta = release.sample_attributes() if metadata is None else metadata
    data = release.write_epochs_file(root / RELEASE_FIF, meta, ch_names)
    release.write_image_folders(root / "images", meta, zero_shot=zero_shot_images)
    return meta, data


def test_release_fixture_has_the_real_layout():
    """Guards the fixture itself: flat test paths, catch trials, 12 sessions of each test image."""
    meta = release.sample_attributes()
    kind = meta["trial_type"]
    assert set(kind) == {"exp", "test", "catch"} and meta.columns[8] == "image_path"
    assert all(p.count("/") == 1 and p.startswith("images_test_meg/") for p in meta.loc[kind == "test", "image_path"])
    assert all(p.count("/") == 2 and p.startswith("images_meg/") for p in meta.loc[kind == "exp", "image_path"])
    assert meta.loc[kind == "catch", "things_category_nr"].isna().all()
    test = meta[kind == "test"]
    assert test.groupby("image_path")["session_nr"].apply(sorted).tolist() == [list(range(1, 13))] * 2
    assert set(test["things_category_nr"]) <= set(meta.loc[kind == "exp", "things_category_nr"])


@pytest.mark.parametrize("concept_field", [True, False], ids=["things_category_nr", "file_names"])
def test_release_split_leaves_out_exactly_the_test_concepts(tmp_path, caplog, concept_field):
    """The bug of issue 12: test paths are flat, so their folder ('images_test_meg') named no concept
    and nothing was left out. Concepts come from things_category_nr (or, without it, the file name)."""
    meta = release.sample_attributes()
    if not concept_field:
        meta = meta.drop(columns="things_category_nr")
    meta, data = write_release(tmp_path, meta, ch_names=ALL)
    with caplog.at_level("INFO", logger="prosthesis_sim.data.things_meg"):
        ds = load_things_meg(tmp_path, average_train=False, average_test=False)
    train_concepts = set(release.CONCEPTS) - set(release.TEST_CONCEPTS)
    assert set(ds.train_concepts) == train_concepts and ds.test_concepts == list(release.TEST_CONCEPTS)
    assert ds.train.shape == (2 * len(train_concepts), 1, 271, 200) and ds.test.shape == (2, 12, 271, 200)
    assert "4 training epochs of the 2 test concepts left out" in caplog.text  # 2 test concepts x 2 exemplars
    assert "24 catch epochs skipped" in caplog.text
    # every row holds its own image's epochs (0..1.0 s of -0.1..1.3 s, first sample dropped)
    window = slice(21, 221)
    paths = meta["image_path"].to_numpy()
    for k, image in enumerate(ds.train_images):
        (epoch,) = np.flatnonzero(paths == f"images_meg/{release.concept_of(image.name)}/{image.name}")
        np.testing.assert_array_equal(ds.train[k, 0], data[epoch, :, window])
    for k, image in enumerate(ds.test_images):
        epochs = np.flatnonzero(paths == f"images_test_meg/{image.name}")
        assert len(epochs) == 12 and meta["session_nr"].to_numpy()[epochs].tolist() == list(range(1, 13))
        np.testing.assert_array_equal(ds.test_repetitions()[k], data[epochs][:, :, window])


def test_release_beside_a_full_things_image_folder_takes_the_epochs_images(tmp_path, caplog):
    """Image folders of every concept (the THINGS database: test concepts' training images included) and
    of concepts no participant saw: the epochs select the training images (the test concepts' left out),
    giving the dataset the zero-shot folders give."""
    zero_shot = tmp_path / "zero_shot"
    meta, _ = write_release(zero_shot)
    full = tmp_path / "full"
    write_release(full, meta, zero_shot_images=False)  # the same epochs; folders of every concept
    for split, name in (("training", "yak_01b.jpg"), ("training", "yak_02s.jpg"), ("test", "yak_13s.jpg")):
        folder = full / "images" / f"{split}_images" / "00099_yak"  # a concept the epochs never show
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / name), np.zeros((8, 8, 3), np.uint8))
    n_listed = len(list((full / "images" / "training_images").glob("*/*.jpg")))
    with caplog.at_level("INFO", logger="prosthesis_sim.data.things_meg"):
        got = load_things_meg(full, average_train=False)
    want = load_things_meg(zero_shot, average_train=False)
    assert [p.name for p in got.train_images] == [p.name for p in want.train_images]
    assert got.train_concepts == want.train_concepts and not set(got.train_concepts) & set(release.TEST_CONCEPTS)
    assert [p.name for p in got.test_images] == [p.name for p in want.test_images]
    np.testing.assert_array_equal(got.train, want.train)
    np.testing.assert_array_equal(got.test_repetitions(), want.test_repetitions())
    assert n_listed == len(got.train_images) + 2 * len(release.TEST_CONCEPTS) + 2  # what was left out
    assert f"{len(got.train_images)} of the {n_listed} images listed have training epochs" in caplog.text


def test_release_with_an_image_missing_from_the_folders_says_which(tmp_path):
    write_release(tmp_path)
    missing = next((tmp_path / "images" / "training_images").glob("*/aardvark_02*.jpg"))
    missing.unlink()
    with pytest.raises(DataFormatError, match=rf"1 training image\(s\) of its epochs are not in .*{missing.name}"):
        load_things_meg(tmp_path)


def _edit(meta, **changes):
    meta = meta.copy()
    for column, (where, value) in changes.items():
        meta.loc[where(meta), column] = value
    return meta


def _first_test(m):
    return m.index == m.index[(m["trial_type"] == "test").to_numpy()][0]


def _first_exp(m):
    return m.index == m.index[(m["trial_type"] == "exp").to_numpy()][0]


@pytest.mark.parametrize("edit, match", [
    (lambda m: _edit(m, things_category_nr=(_first_test, np.nan)),
     r"metadata 'things_category_nr' of epoch \d+ \(test trial, image coat_rack_13s.jpg\) is nan, not a concept number"),
    (lambda m: _edit(m, trial_type=(lambda m: m["trial_type"] == "catch", "practice")),
     r"metadata 'trial_type' has value\(s\) \['practice'\]; expected 'exp' \(training\), 'test' or 'catch'"),
    (lambda m: _edit(m, things_category_nr=(_first_test, 6.0)),
     r"metadata gives image coat_rack_13s.jpg two concepts \('things_category_nr' 6 and 2"),
    (lambda m: m.drop(index=m.index[(m["trial_type"] == "test").to_numpy()][0]),
     r"test images have 11 to 12 epochs each"),
    (lambda m: _edit(m, image_path=(_first_exp, np.nan)),
     r"metadata 'image_path' of epoch \d+ \(exp trial\) is nan"),
], ids=["category_nan", "unknown_trial_type", "two_categories", "uneven_test_reps", "empty_image_path"])
def test_release_metadata_errors_name_file_and_field(tmp_path, edit, match):
    meta = release.sample_attributes()
    release.write_image_folders(tmp_path / "images", meta)
    release.write_epochs_file(tmp_path / RELEASE_FIF, edit(meta), CH)
    with pytest.raises(DataFormatError, match=rf"{RELEASE_FIF}: .*{match}"):
        load_things_meg(tmp_path)


# ------------------------------------------------------------------------------------------ sensors


def test_channel_list_is_things_meg():
    assert len(ALL) == 271 and len(set(ALL)) == 271 and all(c.endswith("-1609") for c in ALL)
    for dropped in ("MRO11", "MLF25", "MRF43", "MRO13"):
        assert f"{dropped}-1609" not in ALL
    assert ALL[0] == "MLC11-1609" and ALL[-1] == "MZP01-1609"


def test_info_positions_and_topomaps():
    info = make_meg_info(ALL, SFREQ)
    assert info.get_channel_types() == ["mag"] * 271
    pos = np.array([ch["loc"][:3] for ch in info["chs"]])
    assert np.allclose(np.linalg.norm(pos, axis=1), 0.11)  # on the template helmet sphere
    side = {name[:3]: pos[[i for i, c in enumerate(ALL) if c.startswith(name[:3])]].mean(0) for name in ALL}
    assert side["MLT"][0] < 0 < side["MRT"][0]  # left / right
    assert side["MZO"][1] < 0 < side["MZF"][1]  # back / front
    xy = mne_topomap_geometry(info)["xy"]  # the loop's renderer: one position per channel, in channel order
    assert xy.shape == (271, 2)
    assert xy[ALL.index("MZF01-1609"), 1] > 0 > xy[ALL.index("MZO03-1609"), 1]  # front up, back down
    im, _ = mne.viz.plot_topomap(pos[:, 1], info, show=False)  # publication figures
    assert im.get_array().count() > 100  # a filled map, not an empty axis
    matplotlib.pyplot.close("all")


# --------------------------------------------------------------------------------------- synthetic MEG


def test_synthetic_meg_files_are_atm_pickles(synth_meg):
    # the upstream pair, and the truth psim-eval scores (no loader hands it to a fit)
    assert sorted(p.name for p in (synth_meg / "sub-01").iterdir()) == sorted([TRAIN, TEST, "synthetic_truth_test.npy", "synthetic_truth_components_test.npz"])
    for name, shape in ((TRAIN, (3, 2, 1, 271, N_T)), (TEST, (12, 1, 12, 271, N_T))):
        path = synth_meg / "sub-01" / name
        assert path.read_bytes()[:2] == b"\x80\x05"  # a raw pickle, protocol 5
        with open(path, "rb") as f:
            payload = pickle.load(f)
        assert set(payload) == {"meg_data", "ch_names", "times"}
        assert payload["meg_data"].dtype == np.float32 and payload["meg_data"].shape == shape
        assert list(payload["ch_names"]) == ALL
        assert payload["times"][0] == 0 and payload["times"][-1] == pytest.approx(1.0)
    record = json.loads((synth_meg / "synth.json").read_text())
    assert record["modality"] == "meg" and record["complete"]


def test_synthetic_meg_is_deterministic(synth_meg, tmp_path):
    again = synthesize(tmp_path / "again", **SYNTH)
    for name in (TRAIN, TEST):
        assert (again / "sub-01" / name).read_bytes() == (synth_meg / "sub-01" / name).read_bytes()


def test_synthetic_meg_loads_and_is_image_specific(synth_meg):
    data = load_things_meg(synth_meg, average_test=False)
    assert data.train.shape == (6, 1, 271, 200) and data.test.shape == (12, 12, 271, 200)
    assert len(data.train_images) == 6 and data.info["nchan"] == 271
    x = data.test
    a, b = x[:, :6].mean(1).reshape(12, -1), x[:, 6:].mean(1).reshape(12, -1)
    a, b = a - a.mean(0), b - b.mean(0)  # image-specific: the shared evoked response removed
    c = (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T
    assert np.diag(c).mean() > 0.3  # 0.42-0.64 over seeds 0-5
    assert (c.argmax(axis=1) == np.arange(12)).mean() > 0.5  # chance 1/12; 0.75-1.0 over seeds 0-5


def test_synthetic_meg_signal_is_where_the_sources_are(synth_meg):
    """Image-specific variance early over occipital sensors, later over occipital/temporal ones, and
    little over frontal sensors."""
    x = load_things_meg(synth_meg, average_test=False).test
    a, b = x[:, :6].mean(1), x[:, 6:].mean(1)
    var = ((a - a.mean(0)) * (b - b.mean(0))).mean(0)  # (271, 200): replicable across-image variance
    group = np.array([c[:3] for c in ALL])
    frontal = np.isin(group, ["MLF", "MRF", "MZF"])
    early, late = var[:, 15:25].mean(1), var[:, 30:80].mean(1)  # 80-125 ms, 155-400 ms
    assert ALL[int(early.argmax())][2] == "O" and early[frontal].mean() < 0.1 * early.max()
    assert ALL[int(late.argmax())][2] in "OTP" and late[frontal].mean() < 0.1 * late.max()


def test_dataset_config_instantiates(synth_meg):
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        cfg = compose("train", overrides=["dataset=things_meg", f"dataset.root={synth_meg}"])
    data = instantiate(cfg.dataset)
    assert data.signal_shape == (271, 200) and data.subject == "sub-01"


@pytest.mark.parametrize("encoder, overrides, tokens", [
    ("dit", [], 8),  # default patch: all 271 channels x 25 samples
    ("dit_paper", ["encoder.denoiser.patch=[16,25]", "encoder.denoiser.heads=2"], 17 * 8),
    ("unet_paper", ["encoder.denoiser.block_out_channels=[8,16,32,32]", "encoder.denoiser.norm_num_groups=8",
                    "encoder.denoiser.cross_attention_dim=32", "encoder.denoiser.layers_per_block=1",
                    # attention over the 68 x 50 third level costs seconds per step on CPU: deepest only
                    "encoder.denoiser.down_block_types=[DownBlock2D,DownBlock2D,DownBlock2D,CrossAttnDownBlock2D]",
                    "encoder.denoiser.up_block_types=[CrossAttnUpBlock2D,UpBlock2D,UpBlock2D,UpBlock2D]"], None),
])
def test_diffusion_encoders_train_on_meg(synth_meg, encoder, overrides, tokens):
    """Every diffusion encoder builds for 271 x 200 MEG (dit_paper with CTF brain regions) and generates it."""
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    from prosthesis_sim.data.regions import region_ids

    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        cfg = compose("train", overrides=["dataset=things_meg", f"dataset.root={synth_meg}", f"encoder={encoder}",
                                          "train.checkpoint_dir=null", "train.epochs=2", "train.batch_size=2",
                                          "encoder.sampling_steps=2", "encoder.n_samples=1", *overrides]
                      + ([] if encoder == "unet_paper" else ["encoder.denoiser.hidden=32", "encoder.denoiser.depth=1"]))
    data = instantiate(cfg.dataset)
    enc = instantiate(cfg.encoder)
    enc.fit(data)
    if tokens is not None:
        assert enc.model.grid[0] * enc.model.grid[1] == tokens
    if encoder == "dit_paper":
        assert enc.dims["region_ids"] == region_ids(data.ch_names) and enc.model.position == "region"
    out = enc.generate([np.zeros((32, 32, 3), np.uint8)] * 2)
    assert out.shape == (2, 271, 200) and np.isfinite(out).all()


def test_unknown_modality_refused(tmp_path):
    with pytest.raises(ValueError, match="modality"):
        synthesize(tmp_path, **{**SYNTH, "modality": "fmri"})
