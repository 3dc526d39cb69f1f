"""Few-step trials by a truncated reverse process (encoder.trial_start, dit_trials' default).

The mechanism, shown on the exact model of a white Gaussian target: a v-prediction network that outputs
0 (the optimum when the whitened data are N(0, I)). Then every noise level's marginal is N(0, I) and an
exact sampler keeps unit variance; a 4-step solver from T takes steps so large that it shrinks the
samples (what gave few-step trials away by their band power), while 4 steps from 0.2 T keep them."""
import numpy as np
import pytest
import torch

from prosthesis_sim.protocols import Features
from tests.test_sampling import DIM, N_TOK, tiny_encoder


def zero_v_encoder(**kw):
    enc = tiny_encoder(prediction_type="v_prediction", sampler="dpmsolver++", guidance_scale=1.0, **kw)
    with torch.no_grad():
        for p in enc.model.parameters():
            p.zero_()
    return enc


def trial_variance(enc, n_trials=64):
    rng = np.random.default_rng(1)
    feats = Features(rng.standard_normal((4, N_TOK, DIM)).astype(np.float32),
                     rng.standard_normal((4, DIM)).astype(np.float32))
    return float(enc.sample_trials_from_features(feats, n_trials, seed=0).var())


def test_truncated_process_keeps_the_variance_few_steps_from_t_lose():
    full = trial_variance(zero_v_encoder(trial_steps=25, trial_start=1.0))
    four_from_t = trial_variance(zero_v_encoder(trial_steps=4, trial_start=1.0))
    four_truncated = trial_variance(zero_v_encoder(trial_steps=4, trial_start=0.2))
    assert full == pytest.approx(1.0, abs=0.08) and four_truncated == pytest.approx(1.0, abs=0.08)
    assert four_from_t < 0.85 * four_truncated


def test_truncated_timesteps_and_bad_settings():
    enc = zero_v_encoder(trial_steps=4, trial_start=0.2)
    sampler = enc.make_sampler(4, 0.2)
    assert [int(t) for t in sampler.timesteps] == [199, 149, 99, 49]  # trailing spacing within [0, 0.2 T)
    assert enc.network_evaluations(4) == 4
    enc.sampler = "ddim"  # DDIM's set_timesteps takes no custom timesteps
    with pytest.raises(ValueError, match="trial_start < 1 needs a sampler that takes custom timesteps"):
        enc.make_sampler(4, 0.2)
    with pytest.raises(ValueError, match=r"trial_start must be in \(0, 1\]"):
        zero_v_encoder(trial_start=0.0)
