"""The loop's signal (issue 21): loop.signal=mean|trials, loop.repetitions=N.

A stand-in trial encoder makes the statistics known: trial = the frame's mean grey level + unit Gaussian
noise drawn from the seed, so a repetition average has variance 1 / N and two seeds differ."""
import json

import numpy as np
import pytest

from prosthesis_sim.data.dataset import Normalizer
from prosthesis_sim.errors import ConfigError
from prosthesis_sim.loop import ClosedLoop, check_signal

SHAPE = (3, 10)


class TrialStandIn:
    def __init__(self):
        self.calls = []

    def generate(self, images, seed=None, paths=None):
        return np.stack([np.full(SHAPE, img.mean() / 255, np.float32) for img in images])

    def sample_trials(self, images, n_trials, seed=None, paths=None):
        self.calls.append((len(images), n_trials, seed))
        rng = np.random.default_rng(seed)
        mean = self.generate(images)[:, None]
        return (mean + rng.standard_normal((len(images), n_trials, *SHAPE))).astype(np.float32)


class MeanOnly:
    def generate(self, images, seed=None, paths=None):
        return np.zeros((len(images), *SHAPE), np.float32)


class Flat:
    """Decoder and phosphene stand-ins: the loop's signal path is what is tested."""

    image_independent = True

    def generate(self, images, seed=None, paths=None):
        return np.zeros((len(images), *SHAPE), np.float32)

    def decode(self, signals):
        return np.full((len(signals), 8, 8), 0.5, np.float32)

    def __call__(self, image):
        return np.asarray(image, np.float32)


NORM = Normalizer(np.zeros((SHAPE[0], 1), np.float32), np.ones((SHAPE[0], 1), np.float32))


def make(encoder, **kw):
    flat = Flat()
    return ClosedLoop(encoder, flat, flat, flat, NORM, seed=3, **kw)


def test_trials_vary_across_frames_and_seeds_and_average_down():
    frame = np.full((16, 16, 3), 128, np.uint8)
    for reps in (1, 4, 16):
        enc = TrialStandIn()
        loop = make(enc, signal="trials", repetitions=reps)
        signals = np.stack([loop.encode(frame) for _ in range(200)])  # the same frame 200 times
        assert [c[:2] for c in enc.calls] == [(1, reps)] * 200  # one batched call per frame, N trials in it
        assert len({c[2] for c in enc.calls}) == 200  # every frame its own seed
        noise = signals - frame.mean() / 255
        assert noise.var() == pytest.approx(1 / reps, rel=0.1)  # the average of N trials: variance 1 / N
        assert abs(noise.mean()) < 4 * np.sqrt(1 / reps / noise.size)  # around the expected response
    # another loop seed, other trials; the same seed, the same trials (reproducible runs)
    first = make(TrialStandIn(), signal="trials").encode(frame)
    again = make(TrialStandIn(), signal="trials").encode(frame)
    other = ClosedLoop(TrialStandIn(), Flat(), Flat(), Flat(), NORM, seed=4, signal="trials").encode(frame)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_mean_signal_is_the_expected_response_and_is_described():
    frame = np.full((16, 16, 3), 64, np.uint8)
    enc = TrialStandIn()
    loop = make(enc)
    np.testing.assert_array_equal(loop.encode(frame), enc.generate([frame])[0])
    assert enc.calls == [] and loop.describe_signal() == "expected response"
    assert make(TrialStandIn(), signal="trials").describe_signal() == "single trial"
    assert make(TrialStandIn(), signal="trials", repetitions=4).describe_signal() == "mean of 4 trials"


def test_trials_need_an_encoder_that_samples_them():
    with pytest.raises(ValueError, match=r"loop.signal=trials: encoder MeanOnly does not sample single trials; "
                                         r"use a diffusion encoder \(encoder=dit_trials"):
        make(MeanOnly(), signal="trials")
    make(MeanOnly(), signal="mean")  # the expected response needs no trials
    for bad, match in ((dict(signal="noise", repetitions=1), "loop.signal='noise': expected one of mean, trials"),
                       (dict(signal="trials", repetitions=0), "loop.repetitions=0: expected a whole number >= 1")):
        with pytest.raises(ValueError, match=match):
            check_signal(TrialStandIn(), **bad)


def test_config_validation_names_the_settings():
    from hydra import compose, initialize_config_module

    from prosthesis_sim.validate import validate

    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        cfg = compose("loop", overrides=["loop.signal=noise", "loop.repetitions=0"])
    with pytest.raises(ConfigError, match=r"loop.signal='noise': expected one of .*loop.repetitions=0"):
        validate(cfg, "loop")


@pytest.mark.slow
def test_psim_loop_with_single_trials_writes_the_signal(synth_root, tmp_path):
    """The contract: a trial encoder's run with loop.signal=trials names the signal in summary.json, and a
    mean-only encoder is refused before anything is fitted."""
    from hydra import compose, initialize_config_module

    from prosthesis_sim.pipeline import run_configured_loop

    def cfg(*overrides, cache="cache"):
        with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
            return compose("loop", overrides=[
                f"dataset.root={synth_root}", f"cache_dir={tmp_path / cache}", "loop.display=false",
                "loop.max_frames=3", "decoder=ridge_pixels", "source.frames_per_photo=1", *overrides])

    out = tmp_path / "run"
    summary = run_configured_loop(cfg("encoder=dit_trials", "encoder.denoiser.hidden=32", "encoder.denoiser.depth=1",
                                      "encoder.denoiser.heads=2", "train.epochs=2", "loop.signal=trials",
                                      "loop.repetitions=2", f"out={out}"))
    written = json.loads((out / "summary.json").read_text())
    assert written["signal"] == summary["signal"] == "trials" and written["repetitions"] == 2
    assert written["frames"] == 3 and written["median_latency_ms"]["loop"] > 0
    assert written["stages"]["signal"] == "mean of 2 trials"
    with pytest.raises(ValueError, match="encoder RidgeEncoder does not sample single trials") as err:
        run_configured_loop(cfg("encoder=ridge", "loop.signal=trials", f"out={tmp_path / 'refused'}", cache="c2"))
    assert not (tmp_path / "c2").exists() and "dit_trials" in str(err.value)  # refused before any fit
