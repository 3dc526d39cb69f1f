"""Version 3 of the simulated brain: a semantic latent with category-selective components, RSVP
adaptation that depends on the preceding image, and state-dependent gain. Each is present when its knob
is on and absent when it is off; the truth stays the exact expectation of the trials."""
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from prosthesis_sim.data.dataset import COMPONENTS_FILE, TRUTH_FILE
from prosthesis_sim.data.synth import VERSION, synthesize
from prosthesis_sim.data.synth.semantics import SemanticBrain, stem

BASE = dict(n_subjects=1, n_train_concepts=4, images_per_concept=1, train_reps=1, image_size=32, progress=False)
P7, P8 = 46, 54  # channel rows (tests/test_synth.py's CHANNELS)
N170 = slice(38, 48)  # 152-188 ms at 250 Hz


def _eeg(root: Path, split: str = "test") -> np.ndarray:
    with open(root / "sub-01" / f"preprocessed_eeg_{split}.npy", "rb") as f:
        return pickle.load(f)["preprocessed_eeg_data"]


def test_structure_off_writes_version_2_and_on_writes_version_3(tmp_path):
    off = synthesize(tmp_path / "off", n_test=3, test_reps=2, **BASE)
    on = synthesize(tmp_path / "on", n_test=3, test_reps=2, semantic=1, adaptation=0.3, state_gain=0.1, **BASE)
    record_off, record_on = (json.loads((d / "synth.json").read_text()) for d in (off, on))
    assert record_off["version"] == 2 and not {"semantic", "adaptation", "state_gain"} & set(record_off["args"])
    assert record_on["version"] == VERSION == 3
    assert {k: record_on["args"][k] for k in ("semantic", "adaptation", "state_gain")} == \
        {"semantic": 1.0, "adaptation": 0.3, "state_gain": 0.1}
    assert not list((off / "sub-01").glob("synthetic_trials_*")) and "semantic" not in np.load(off / "sub-01" / COMPONENTS_FILE)
    context = np.load(on / "sub-01" / "synthetic_trials_test.npz")
    assert context["previous"].shape == (3, 2) and context["previous"].min() >= 0
    with pytest.raises(ValueError, match="adaptation"):
        synthesize(tmp_path / "bad", n_test=3, test_reps=2, adaptation=1.0, **BASE)


def test_semantic_latent_is_the_concepts_and_shared_by_its_object():
    brain = SemanticBrain(0, 8)
    names = [f"{obj}_{k:02d}" for obj in ("cat", "horse", "brick_wall", "grating", "astronaut") for k in range(1, 7)]
    z = brain.latent(names)
    assert np.array_equal(brain.latent(names[:3]), z[:3])  # a concept's latent: its name alone, not the others
    r = np.corrcoef(z)
    same = np.equal.outer([stem(n) for n in names], [stem(n) for n in names]) & ~np.eye(len(names), dtype=bool)
    assert r[same].mean() > 0.6 and abs(r[~np.equal.outer([stem(n) for n in names], [stem(n) for n in names])].mean()) < 0.15
    np.testing.assert_allclose(brain.attributes(["astronaut_01", "cat_02", "printed_page_01", "grating_03"]),
                               [[1, 0, 1], [0.6, 0, 1], [0, 1, 0], [0, 0, 0]])


@pytest.fixture(scope="module")
def semantic(tmp_path_factory):
    """Test images include faces and print (seed 0's 60 test concepts)."""
    root = tmp_path_factory.mktemp("semantic")
    kw = dict(n_test=60, test_reps=2, test_split="first", **BASE)
    return synthesize(root / "on", semantic=1, **kw), synthesize(root / "off", **kw)


def test_face_n170_is_right_lateralised_and_print_left(semantic):
    on, off = semantic
    names = [c["name"] for c in json.loads((on / "synth.json").read_text())["test_concepts"]]
    attrs = SemanticBrain.attributes(names)
    face, text = attrs[:, 0] == 1, attrs[:, 1] == 1
    rest = ~face & ~text
    assert face.sum() >= 2 and text.sum() >= 2, "the fixture's test set must hold faces and print"
    truth_on, truth_off = (np.load(d / "sub-01" / TRUTH_FILE) for d in (on, off))
    comps, comps_off = (np.load(d / "sub-01" / COMPONENTS_FILE) for d in (on, off))
    # the knob adds exactly the semantic component (besides the RSVP neighbours' share, which carries it too)
    np.testing.assert_allclose((truth_on - comps["shared"]) - (truth_off - comps_off["shared"]), comps["semantic"],
                               atol=1e-4)
    np.testing.assert_allclose(sum(comps[k] for k in comps), truth_on, atol=1e-4)
    from prosthesis_sim.eval.capture import capture

    scores = capture(truth_on, dict(comps), normalise=lambda v: v)  # psim-eval's diagnostic reads it
    assert set(scores) >= {"capture_semantic"} and all(abs(v - 1) < 1e-3 for v in scores.values()), scores
    assert abs(capture(truth_off, dict(comps), normalise=lambda v: v)["capture_semantic"]) < 0.2
    x = comps["semantic"][:, :, N170].mean(-1)  # (images, channels)

    def effect(group, ch):  # the group's mean minus the other images' (units: the shared N1's peak is 4)
        return x[group, ch].mean() - x[rest, ch].mean()

    assert effect(face, P8) < -0.4 and effect(text, P7) < -0.4, (effect(face, P8), effect(text, P7))


def test_category_sources_are_lateralised_across_subjects():
    """Over 20 subjects' category sources alone (the latent adds object-specific variation on top):
    the face N170 is larger at P8 than P7, print larger at P7 than P8, in most subjects and on average."""
    from prosthesis_sim.data.synth.brain import N1_PEAK, SOURCE_WIDTH
    from prosthesis_sim.data.synth.common import _rng
    from prosthesis_sim.data.synth.recording import RECORDINGS
    from prosthesis_sim.data.synth.semantics import CategorySources

    rec, t = RECORDINGS["eeg"](), np.arange(300) / 250
    face, text = [], []
    for s in range(20):
        r = CategorySources.sample(_rng(0, "category", s), rec, N1_PEAK, SOURCE_WIDTH["late"]).responses(
            np.array([[1, 0, 0], [0, 1, 0]], np.float32), t)[:, :, N170].mean(-1)
        face.append(r[0, P8] - r[0, P7])
        text.append(r[1, P7] - r[1, P8])
    for lateralisation in (np.array(face), np.array(text)):
        assert lateralisation.mean() < -0.3 and (lateralisation < 0).mean() >= 0.75, lateralisation


@pytest.fixture(scope="module")
def rsvp(tmp_path_factory):
    """The same seed with and without adaptation and state gain (strong, for power): the draws are the
    same, so the two differ only by the knobs."""
    root = tmp_path_factory.mktemp("rsvp")
    kw = dict(n_test=30, test_reps=40, **BASE)
    return synthesize(root / "on", adaptation=0.5, state_gain=0.3, **kw), synthesize(root / "off", **kw)


def _amplitude(root: Path) -> np.ndarray:
    """(images, reps): each trial's least-squares gain on its image's expected response, over its mean."""
    x, truth = _eeg(root), np.load(root / "sub-01" / TRUTH_FILE)
    a = np.einsum("irct,ict->ir", x, truth) / np.einsum("ict,ict->i", truth, truth)[:, None]
    return a / a.mean(axis=1, keepdims=True)


def test_adaptation_depends_on_the_preceding_image(rsvp):
    on, off = rsvp
    context = np.load(on / "sub-01" / "synthetic_trials_test.npz")
    sim = context["similarity"].ravel()
    assert np.all((sim >= 0) & (sim <= 1)) and sim.std() > 0.05
    r_on = stats.spearmanr(sim, _amplitude(on).ravel()).statistic
    r_off = stats.spearmanr(sim, _amplitude(off).ravel()).statistic  # the same preceding images, no adaptation
    assert r_on < -0.15 and r_on < r_off - 0.1, (r_on, r_off)


def test_high_alpha_trials_have_smaller_responses(rsvp):
    on, off = rsvp
    state = np.load(on / "sub-01" / "synthetic_trials_test.npz")["alpha_state"].ravel()
    assert stats.spearmanr(state, _amplitude(on).ravel()).statistic < -0.3
    assert abs(stats.spearmanr(state, _amplitude(off).ravel()).statistic) < 0.15
    # the state is visible in the recording itself: alpha power (8-12 Hz, image mean removed)
    assert stats.spearmanr(state, _alpha_power(_eeg(on), 250).ravel()).statistic > 0.25


def _alpha_power(x: np.ndarray, sfreq: float) -> np.ndarray:
    """(images, reps): each trial's log alpha power (8-12 Hz), its image's mean removed."""
    f = np.fft.rfftfreq(x.shape[-1], 1 / sfreq)
    power = (np.abs(np.fft.rfft(x - x.mean(axis=1, keepdims=True), axis=-1)) ** 2)[..., (f >= 8) & (f <= 12)]
    return np.log(power.mean((-1, -2)))


def test_the_loader_reads_each_trials_context_in_the_trials_order(rsvp):
    """BrainDataset.trial_context: what a conditional trial model may read. Read back by the project's
    loader, it lines up with the loaded trials (the alpha state with each trial's alpha power)."""
    from prosthesis_sim.data.things_eeg2 import load_things_eeg2

    on, off = rsvp
    data = load_things_eeg2(on, subject=1, average_train=False, average_test=False)
    ctx = data.trial_context
    assert set(ctx) == {"train", "test"} and set(ctx["test"]) == {"previous", "similarity", "alpha_state"}
    assert ctx["test"]["alpha_state"].shape == data.test_repetitions().shape[:2]
    assert ctx["train"]["previous"].shape == data.train.shape[:2]
    state = ctx["test"]["alpha_state"].ravel()
    assert stats.spearmanr(state, _alpha_power(data.test_repetitions(), data.sfreq).ravel()).statistic > 0.25
    averaged = load_things_eeg2(on, subject=1)  # the context still describes the single trials in the files
    np.testing.assert_array_equal(averaged.trial_context["train"]["alpha_state"], ctx["train"]["alpha_state"])
    assert load_things_eeg2(off, subject=1).trial_context is None  # no knob on: no context written or read


@pytest.mark.slow
def test_truth_is_the_average_with_every_structure_on(tmp_path):
    root = synthesize(tmp_path / "d", n_test=12, test_reps=240, semantic=1, adaptation=0.3, state_gain=0.1,
                      **BASE)
    mean, truth = _eeg(root).mean(axis=1), np.load(root / "sub-01" / TRUTH_FILE)
    slope = np.sum(mean * truth) / np.sum(truth * truth)
    assert abs(slope - 1) < 0.03, slope
    assert np.corrcoef(mean.ravel(), truth.ravel())[0, 1] > 0.9


def test_meg_has_state_but_no_rsvp_adaptation(tmp_path):
    root = synthesize(tmp_path / "m", n_test=4, test_reps=3, modality="meg", semantic=1, adaptation=0.3,
                      state_gain=0.1, **BASE)
    context = np.load(root / "sub-01" / "synthetic_trials_test.npz")
    assert (context["previous"] == -1).all() and np.isnan(context["similarity"]).all()
    assert context["alpha_state"].std() > 0.5
    from prosthesis_sim.data.things_meg import load_things_meg

    data = load_things_meg(root, subject=1, average_test=False)
    np.testing.assert_array_equal(data.trial_context["test"]["alpha_state"], context["alpha_state"])
    assert data.trial_context["train"]["alpha_state"].shape == data.train.shape[:2]


def test_things_presets_turn_the_structure_on():
    from hydra import compose, initialize_config_module

    with initialize_config_module("prosthesis_sim.configs", version_base=None):
        default = compose("synth", overrides=["out=x"])
        eeg = compose("synth", overrides=["out=x", "preset=things"])
        meg = compose("synth", overrides=["out=x", "preset=things_meg"])
    assert (default.semantic, default.adaptation, default.state_gain, default.noise_gain) == (0, 0, 0, 1)
    assert (eeg.semantic, eeg.adaptation, eeg.state_gain, eeg.noise_gain, eeg.n_train_concepts, eeg.test_reps) == \
        (1, 0.3, 0.1, 2.0, 1654, 80)
    assert (meg.semantic, meg.adaptation, meg.state_gain, meg.noise_gain, meg.modality) == (1, 0, 0.1, 3.0, "meg")


def test_noise_gain_scales_the_single_trial_noise_only(tmp_path):
    kw = dict(n_test=6, test_reps=20, **BASE)
    one, two = synthesize(tmp_path / "one", **kw), synthesize(tmp_path / "two", noise_gain=2.0, **kw)
    assert json.loads((two / "synth.json").read_text())["version"] == 3
    truth_one, truth_two = (np.load(d / "sub-01" / TRUTH_FILE) for d in (one, two))
    np.testing.assert_allclose(truth_one, truth_two, atol=1e-5)  # the expected response is unchanged
    three = synthesize(tmp_path / "three", noise_gain=3.0, **kw)
    x1, x2, x3 = (_eeg(d).astype(np.float64) for d in (one, two, three))
    # the same draws: the trials differ by the noise alone, in proportion to the gain (EEG preprocessing is linear)
    np.testing.assert_allclose(x3 - x1, 2 * (x2 - x1), atol=1e-3)
    assert 0.5 < (x2 - x1).std() < 1.5  # the noise: about the single-trial sd
