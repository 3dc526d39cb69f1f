"""The synthetic truth: each test image's noise-free expected response, written by psim-synth beside the
subject's files and read as ``BrainDataset.test_truth`` (psim-eval's `truth` row). Checked against what
it claims to be: the limit of the measured average as repetitions grow."""
import numpy as np
import pytest

from prosthesis_sim.data.synth import synthesize
from prosthesis_sim.data.things_eeg2 import load_things_eeg2
from prosthesis_sim.data.things_meg import load_things_meg
from prosthesis_sim.metrics import pearson_rows

SIZES = dict(n_subjects=1, n_train_concepts=6, images_per_concept=2, n_test=10, train_reps=2, image_size=48,
             seed=3, progress=False)


@pytest.fixture(scope="module")
def many_reps(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("truth"), test_reps=160, **SIZES)


def test_truth_is_what_the_average_converges_to(many_reps):
    data = load_things_eeg2(many_reps, subject=1)
    truth, trials = data.test_truth, data.test_repetitions()
    assert truth.shape == (10, *data.signal_shape) and truth.dtype == np.float32
    full = trials.mean(axis=1)
    # scale: the 160-trial average regresses on the truth with slope 1 (gain, jitter and neighbours in expectation)
    slope = float((truth * full).sum() / (truth * truth).sum())
    assert slope == pytest.approx(1.0, abs=0.03)
    assert pearson_rows(truth, full).mean() > 0.97
    # and the error shrinks like noise: 4 x the trials, about half the distance (never a fixed offset)
    err = [np.sqrt(np.mean((trials[:, :k].mean(axis=1) - truth) ** 2)) for k in (10, 40, 160)]
    assert err[0] > err[1] > err[2]
    assert err[0] / err[1] == pytest.approx(2.0, rel=0.25) and err[1] / err[2] == pytest.approx(2.0, rel=0.25)


@pytest.mark.slow  # MEG's 271 sensors: about 12 s
def test_meg_truth_matches_the_zscored_average(tmp_path):
    root = synthesize(tmp_path / "meg", modality="meg", test_reps=120, **SIZES)
    data = load_things_meg(root, subject=1)
    truth, full = data.test_truth, data.test_average()
    assert truth.shape == full.shape  # the loader's crop (the first sample) applies to the truth too
    slope = float((truth * full).sum() / (truth * truth).sum())
    assert slope == pytest.approx(1.0, abs=0.08)  # the z-scoring's mean 1/sd is an approximation
    assert pearson_rows(truth, full).mean() > 0.95


def test_truth_follows_the_epoch_and_is_checked(many_reps, tmp_path):
    cropped = load_things_eeg2(many_reps, subject=1, tmax=0.5)
    assert cropped.test_truth.shape[-1] == cropped.test.shape[-1] == len(cropped.times)
    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(many_reps, bad)
    np.save(bad / "sub-01" / "synthetic_truth_test.npy", np.zeros((3, 63, 250), np.float32))
    with pytest.raises(ValueError, match=r"synthetic_truth_test.npy: shape \(3, 63, 250\), expected \(10, 63, 250\)"):
        load_things_eeg2(bad, subject=1)
    (bad / "sub-01" / "synthetic_truth_test.npy").unlink()  # a real recording has none
    assert load_things_eeg2(bad, subject=1).test_truth is None


def test_components_sum_to_the_truth_and_capture_reads_them(many_reps):
    from prosthesis_sim.eval.capture import capture

    data = load_things_eeg2(many_reps, subject=1)
    parts = data.test_truth_components
    assert set(parts) == {"early", "concept", "nonlinear", "retinotopic", "shared"}
    np.testing.assert_allclose(sum(parts.values()), data.test_truth, atol=1e-4)
    shared = parts["shared"] - parts["shared"].mean(axis=0)
    assert np.abs(shared).max() < 1e-4  # the ERP and the neighbours: the same for every image
    for name in ("early", "concept", "nonlinear"):  # image-specific, each of them
        assert (parts[name] - parts[name].mean(axis=0)).std() > 0.05
    norm = data.normalizer
    got = capture(data.test_truth, parts, norm)
    assert got == pytest.approx({f"capture_{c}": 1.0 for c in ("early", "concept", "nonlinear", "retinotopic")},
                                abs=1e-3)
    # a signal holding the early component and half the concept one (on top of the shared response)
    half = capture(parts["shared"] + parts["early"] + 0.5 * parts["concept"], parts, norm)
    assert half["capture_early"] == pytest.approx(1, abs=1e-3) and half["capture_concept"] == pytest.approx(0.5, abs=1e-3)
    assert abs(half["capture_nonlinear"]) < 1e-3
    # the measured average: the truth plus noise, so about 1 on the large components
    measured = capture(data.test_average(), parts, norm)
    assert measured["capture_early"] == pytest.approx(1, abs=0.15) and measured["capture_concept"] == pytest.approx(1, abs=0.15)
