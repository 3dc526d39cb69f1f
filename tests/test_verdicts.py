"""psim-eval's verdicts against hand-computed cases: identification (a known ranking, a constant query at
chance, a perfect one at 1), bootstrap intervals (coverage of a known value, pairing, zero width), the
comparisons and the above-truth flag, the circularity check and the decoders' thumbnail space."""
import numpy as np
import pytest

from prosthesis_sim.eval.circularity import feature_spaces, shared_spaces
from prosthesis_sim.eval.decodability import identification
from prosthesis_sim.eval.identify import chance, identify, identify_sets, similarity
from prosthesis_sim.eval.intervals import (correlation_interval, diff_interval, excludes_zero, mean_interval,
                                          normalised_interval)
from prosthesis_sim.eval.verdicts import comparisons, flag_above_truth
from prosthesis_sim.features.thumbnail import ThumbnailFeatures


# --- identification ----------------------------------------------------------------------------------------

def test_known_ranking_by_hand():
    # row i: query i's similarity to candidates 0..3; the diagonal is the true candidate
    sim = np.array([[0.9, 0.1, 0.2, 0.3],   # best of 4: 2-way 3/3, top-1 1
                    [0.5, 0.4, 0.1, 0.0],   # beaten by candidate 0: 2-way 2/3, top-1 0
                    [0.1, 0.7, 0.2, 0.9],   # beaten by 1 and 3: 2-way 1/3, top-1 0
                    [0.2, 0.2, 0.2, 0.2]])  # ties with all 3: 2-way 0.5, top-1 1/4 (random tie-break)
    got = identify(sim, ks=(1, 2))
    np.testing.assert_allclose(got["two_way"], [1, 2 / 3, 1 / 3, 0.5])
    np.testing.assert_allclose(got["top1"], [1, 0, 0, 0.25])
    np.testing.assert_allclose(got["top2"], [1, 1, 0, 0.5])  # query 1 ranks 2nd; query 3: rank 1..4 uniform


def test_constant_query_is_at_chance_and_perfect_is_one():
    rng = np.random.default_rng(0)
    candidates = rng.normal(size=(30, 8, 8))
    constant = np.repeat(rng.normal(size=(1, 8, 8)), 30, axis=0)  # the same percept for every image
    for centre in (True, False):
        got = identify_sets(constant, candidates, centre=centre)
        assert got["two_way"].mean() == pytest.approx(0.5, abs=1e-12)
        assert got["top1"].mean() == pytest.approx(1 / 30, abs=1e-12)
    # centred, a constant set ties everywhere: every image individually at chance (zero variance)
    np.testing.assert_allclose(identify_sets(constant, candidates)["two_way"], 0.5)
    perfect = identify_sets(candidates, candidates)
    assert perfect["two_way"].min() == 1 and perfect["top1"].min() == 1
    assert chance(30) == {"two_way": 0.5, "top1": 1 / 30}


def test_centring_removes_what_every_image_shares():
    rng = np.random.default_rng(1)
    specific = rng.normal(size=(40, 100))
    shared = 20 * rng.normal(size=(1, 100))  # a large common component (the evoked response)
    queries = shared + specific + rng.normal(size=specific.shape)
    raw = identify(similarity(queries, specific, centre=False))["top1"].mean()
    centred = identify(similarity(queries, specific, centre=True))["top1"].mean()
    assert centred > 0.9 and centred >= raw
    with pytest.raises(ValueError, match="one candidate per query"):
        similarity(queries[:3], specific)


def test_embedding_identification_breaks_ties_at_random():
    images = np.eye(4)
    signals = np.array([[1, 0, 0, 0],     # right
                        [1, 0, 0, 0],     # wrong: image 0 is more similar (ties with 2 and 3 below it)
                        [0, 0, 1, 1],     # ties with image 3: top-1 1/2
                        [0, 0, 0, 2.0]])  # right (length does not matter: cosine)
    got = identification(signals, images, ks=(1, 2))
    assert got["top1"] == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert got["top2"] == pytest.approx((1 + 1 / 3 + 1 + 1) / 4)  # query 1: rank 2..4 uniform -> 1/3
    assert got["chance_top1"] == 0.25 and got["chance_top2"] == 0.5
    with pytest.raises(ValueError, match="same shape"):
        identification(signals[:3], images)


# --- intervals ---------------------------------------------------------------------------------------------

def test_interval_covers_a_known_mean_at_its_level():
    rng = np.random.default_rng(2)
    covered = [lo <= 0.3 <= hi for lo, hi in
               (mean_interval(rng.normal(0.3, 1.0, 60), n_resamples=1000, seed=s)[1:] for s in range(300))]
    assert 0.90 <= np.mean(covered) <= 0.99  # percentile bootstrap, n = 60: close to its nominal 0.95


def test_pairing_resolves_what_unpaired_intervals_cannot():
    rng = np.random.default_rng(3)
    image_effect = rng.normal(0, 1.0, 50)  # most variance is between images, shared by both rows
    a = image_effect + 0.1 + rng.normal(0, 0.05, 50)
    b = image_effect + rng.normal(0, 0.05, 50)
    diff, lo, hi = diff_interval(a, b)
    assert lo > 0 and excludes_zero(lo, hi) and lo < diff < hi
    (_, alo, ahi), (_, blo, bhi) = mean_interval(a), mean_interval(b)
    assert alo < bhi and blo < ahi  # the unpaired intervals overlap: no verdict without pairing


def test_correlation_interval_is_the_pooled_r_and_resolves_a_weak_one():
    """The r of all values, as np.corrcoef gives it; images resampled: a weak true correlation (0.1) is
    resolved from 1,000 values x 300 images, an absent one is not."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 10, 100))
    b = 0.1 * a + rng.normal(size=a.shape) + 2.0
    r, low, high = correlation_interval(a, b)
    assert np.isclose(r, np.corrcoef(a.ravel(), b.ravel())[0, 1], atol=1e-12)
    assert 0 < low < r < high and low < 0.1 / np.sqrt(1.01) < high
    r0, low0, high0 = correlation_interval(rng.normal(size=a.shape), b)
    assert not excludes_zero(low0, high0) and excludes_zero(low, high)
    with pytest.raises(ValueError, match="one shape"):
        correlation_interval(a, b[:, :5])


def test_constant_values_give_a_zero_width_interval_and_the_normalised_value():
    assert mean_interval(np.full(20, 0.5)) == (0.5, 0.5, 0.5)
    score, floor, ceiling = np.full(10, 0.3), np.full(10, 0.1), np.full(10, 0.5)
    assert normalised_interval(score, floor, ceiling) == pytest.approx((0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="one value per test image"):
        diff_interval(np.ones(3), np.ones(4))


# --- comparisons and the flag --------------------------------------------------------------------------------

def _per_image(n, row_seed, **means):
    """Per-image values around ``means``: an image effect every row shares, plus the row's own noise."""
    base = np.random.default_rng(4).normal(0, 0.1, n)
    rng = np.random.default_rng(row_seed)
    return {k: np.clip(v + base + rng.normal(0, 0.05, n), 0, 1) for k, v in means.items()}


def test_comparisons_and_the_above_truth_flag():
    n = 50
    rows, per_image = [], {}
    for seed, (enc, level) in enumerate((("mean_erp", 0.5), ("truth", 0.56), ("leaky", 0.7), ("honest", 0.555))):
        per_image[(enc, "d", "p")] = _per_image(n, seed, percept_2way=level, pearson=level / 2)
        rows.append({"encoder": enc, "decoder": "d", "phosphene": "p"})
    ceilings = {"p": {"pearson": np.ones(n)}}
    compared = comparisons(rows, per_image, "mean_erp", ["mean_erp", "truth"], ceilings, 500, 0)
    got = {(c["encoder_a"], c["encoder_b"], c["metric"]): c for c in compared}
    leak = got[("leaky", "truth", "percept_2way")]
    assert leak["diff"] == pytest.approx(0.7 - 0.56, abs=0.03) and leak["lo"] > 0 and leak["resolved"] == "a > b"
    assert got[("honest", "truth", "percept_2way")]["resolved"] == "unresolved"
    assert got[("truth", "mean_erp", "percept_2way")]["resolved"] == "a > b"
    assert ("mean_erp", "mean_erp", "percept_2way") not in got  # never against itself
    flag_above_truth(rows, compared)
    assert {r["encoder"]: r["above_truth"] for r in rows} == {
        "mean_erp": False, "truth": False, "leaky": True, "honest": False}


# --- circularity and the decoders' space --------------------------------------------------------------------

def test_shared_feature_space_is_found_at_any_depth():
    gabor = {"_target_": "prosthesis_sim.features.gabor.GaborFeatures", "grid": 4}
    thumb = {"_target_": "prosthesis_sim.features.thumbnail.ThumbnailFeatures", "grid": 8}
    encoder = {"_target_": "Enc", "features": gabor, "mean_model": {"features": gabor}}
    retrieval = {"_target_": "Retrieval", "embedding": {"_target_": "Emb", "features": gabor}}
    assert shared_spaces(encoder, retrieval) == ["prosthesis_sim.features.gabor.GaborFeatures"]
    assert shared_spaces(encoder, {"embedding": {"features": thumb}}) == []
    assert shared_spaces(encoder, {"embedding": {"features": {**gabor, "grid": 8}}}) == []  # other settings
    assert len(feature_spaces(encoder)) == 1


def test_thumbnail_features_are_the_layout():
    img = np.zeros((40, 60, 3), np.uint8)
    img[:, 10:30] = 255  # the centre-cropped square (columns 10..49) is white on its left half
    f = ThumbnailFeatures(grid=2, colour=True)([img])
    assert f.tokens.shape == (1, 4, 3) and f.pooled.shape == (1, 4 + 2)
    luminance = f.tokens[0, :, 0] * 0.2 + 0.45
    np.testing.assert_allclose(luminance, [1, 0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(f.tokens[0, :, 1:], 0, atol=1e-6)  # grey: no colour opponency


def test_psim_train_metric_intervals_bracket_the_estimates():
    from prosthesis_sim.evaluate import metric_intervals
    from prosthesis_sim.metrics import across_image_r, identification as signal_identification

    rng = np.random.default_rng(5)
    measured = rng.normal(size=(40, 6, 20))
    generated = measured + rng.normal(0, 8.0, measured.shape)
    got = metric_intervals(generated, measured, n_resamples=500)
    r = across_image_r(generated, measured).mean()
    top1 = signal_identification(generated, measured)["top1"]
    assert got["r_across_images_lo"] < r < got["r_across_images_hi"]
    assert got["top1_lo"] <= top1 <= got["top1_hi"] and got["top1_hi"] - got["top1_lo"] > 0.05
    # the weighted resampling gives what recomputing on resampled images gives (one resample, by hand)
    idx = np.random.default_rng(0).integers(0, 40, 40)
    weights = np.bincount(idx, minlength=40) / 40
    g, m = generated.reshape(40, -1), measured.reshape(40, -1)
    mg, mm = weights @ g, weights @ m
    cov = weights @ ((g - mg) * (m - mm))
    by_weights = (cov / np.sqrt((weights @ (g - mg) ** 2) * (weights @ (m - mm) ** 2))).mean()
    assert by_weights == pytest.approx(across_image_r(generated[idx], measured[idx]).mean(), abs=1e-9)
    perfect = metric_intervals(measured, measured)
    assert perfect["top1_lo"] == perfect["top1_hi"] == 1.0


def test_the_shipped_configs_keep_decoders_out_of_the_encoders_space(caplog):
    """By default no encoder / decoder pair of psim-eval shares a feature space; asking for it is flagged."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from prosthesis_sim.eval.circularity import warn_circular

    def pairs(*overrides):
        with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
            cfg = compose("eval", overrides=list(overrides))
        encoders = {k: OmegaConf.to_container(v, resolve=True) for k, v in cfg.encoders.items()}
        decoders = {k: OmegaConf.to_container(v, resolve=True) for k, v in cfg.decoders.items()}
        return warn_circular(encoders, decoders)

    assert pairs() == {}
    with caplog.at_level("WARNING"):
        shared = pairs("features@decoder_features=gabor")  # the earlier default: both sides in the Gabor space
    assert set(shared) == {(e, d) for e in ("ridge", "dit_residual") for d in ("embedding", "retrieval")}
    assert "reads the encoder's conditioning back" in caplog.text
