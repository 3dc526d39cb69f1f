"""The torch phosphene renderer: agreement with pulse2percept, batching, fp16, gradients, dynamics."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from pulse2percept.implants.cortex import Orion
from pulse2percept.implants.retina import ArgusII
from pulse2percept.models.cortex import ScoreboardModel as CorticalScoreboard
from pulse2percept.models.retina import AxonMapModel, ScoreboardModel
from skimage import data

from prosthesis_sim.phosphenes import TorchPhospheneModel
from prosthesis_sim.phosphenes.implants import neuralink_threads
from prosthesis_sim.phosphenes.temporal import LeakyIntegrator
from prosthesis_sim.scores import to_grey
from tests.test_phosphenes import load  # one config loader for the phosphene tests

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "phosphene"

#: Scoreboards the renderer must reproduce: a retinal and two cortical implants (one across a split).
IMPLANTS = {
    "argus_ii": lambda: TorchPhospheneModel(partial(ScoreboardModel, rho=200, step=0.1), ArgusII()),
    "orion": lambda: TorchPhospheneModel(
        partial(CorticalScoreboard, rho=1000, step=0.05, implant_position=(20000, -5000)), Orion()),
    "neuralink": lambda: TorchPhospheneModel(
        partial(CorticalScoreboard, rho=200, step=0.05, implant_position=(25000, 0)), neuralink_threads()),
}


@pytest.mark.parametrize("implant", sorted(IMPLANTS))
def test_agrees_with_pulse2percept_scoreboard(implant):
    """Pearson r >= 0.99 per percept against pulse2percept's ScoreboardModel, 100 random stimuli."""
    model = IMPLANTS[implant]().build()
    reference = model.reference.model  # the pulse2percept model, built on the same grid
    rng = np.random.default_rng(0)
    n = model.implant.n_electrodes
    amplitudes = rng.uniform(0, 50, (100, n)) * (rng.random((100, n)) < rng.uniform(0.1, 0.9, (100, 1)))
    ours = model.render_stimulus(torch.from_numpy(amplitudes)).numpy()
    rs = [np.corrcoef(reference.predict_percept(a).data[..., 0].ravel(), o.ravel())[0, 1]
          for a, o in zip(amplitudes, ours)]
    assert min(rs) >= 0.99, (implant, min(rs))
    # Same units too: the brightest pixel agrees within 1 %.
    peak = reference.predict_percept(amplitudes[0]).data.max()
    assert ours[0].max() == pytest.approx(peak, rel=0.01)


@pytest.mark.parametrize("name", ["torch_argus", "torch_orion"])
def test_image_path_matches_the_pulse2percept_adapter(name, tmp_path):
    model = load(name, tmp_path)
    for frame in (data.astronaut(), data.camera()):
        ours, theirs = model(to_grey(frame)), model.reference(to_grey(frame))
        assert ours.shape == theirs.shape == model.field_shape
        assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.999
        np.testing.assert_allclose(ours, theirs, atol=0.02)


def test_batched_equals_one_by_one_and_fp16_is_close(tmp_path):
    model = load("torch_argus", tmp_path)
    frames = [to_grey(f) for f in (data.astronaut(), data.coffee(), data.chelsea())]
    frames = [np.asarray(f[:300, :400]) for f in frames]
    with torch.no_grad():
        batch = model.render(torch.from_numpy(np.stack(frames))).numpy()
    for frame, percept in zip(frames, batch):
        np.testing.assert_allclose(percept, model(frame), atol=1e-5)
    half = load("torch_argus", tmp_path, dtype="float16")
    assert half.kernel.dtype == torch.float16
    np.testing.assert_allclose(half(frames[0]), model(frames[0]), atol=5e-3)


def test_differentiable_in_the_image_and_the_stimulus(tmp_path):
    model = load("torch_argus", tmp_path)
    image = torch.from_numpy(to_grey(data.camera())[::4, ::4].copy()).requires_grad_()
    target = torch.rand(model.field_shape, generator=torch.Generator().manual_seed(0))
    loss = (model.render(image[None])[0] - target).square().mean()
    loss.backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    # The stimulus gradient of the summed percept is the kernel's column sums (linear model).
    amplitudes = torch.zeros(1, model.implant.n_electrodes, requires_grad=True)
    model.render_stimulus(amplitudes).sum().backward()
    torch.testing.assert_close(amplitudes.grad[0], model.dense_kernel().sum(dim=0), rtol=1e-4, atol=0)
    # A gradient step on the image lowers the loss: usable for end-to-end optimisation.
    with torch.no_grad():
        stepped = (image - 50.0 * image.grad).clamp(0, 1)
        assert (model.render(stepped[None])[0] - target).square().mean() < loss


def test_temporal_leaky_integrator(tmp_path):
    static = load("torch_argus", tmp_path)
    model = load("torch_argus", tmp_path, temporal={"tau_ms": 100.0, "fps": 30.0})
    frame = to_grey(data.astronaut())
    decay = np.exp(-1000 / (30 * 100))
    first = model(frame)
    np.testing.assert_allclose(first, (1 - decay) * static(frame), atol=1e-5)  # fades in from rest
    for _ in range(60):
        steady = model(frame)
    np.testing.assert_allclose(steady, static(frame), atol=1e-4)  # a still converges to its percept
    after = model(np.zeros_like(frame))
    assert 0 < after.max() < steady.max()  # and lingers after the image goes
    model.reset()
    np.testing.assert_allclose(model(frame), first, atol=1e-6)
    twin = model.fork()  # shares the kernel, starts from rest
    assert twin.kernel is model.kernel
    np.testing.assert_allclose(twin(frame), first, atol=1e-6)
    with pytest.raises(ValueError, match="tau_ms"):
        LeakyIntegrator(tau_ms=0)


def test_clear_errors(monkeypatch):
    with pytest.raises(TypeError, match="scoreboard"):
        TorchPhospheneModel(partial(AxonMapModel, rho=200), ArgusII())
    with pytest.raises(ValueError, match="dtype"):
        TorchPhospheneModel(partial(ScoreboardModel), ArgusII(), dtype="float64")
    # device=cuda on a machine without CUDA: checked on every machine, a GPU one included
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        TorchPhospheneModel(partial(ScoreboardModel), ArgusII(), device="cuda")
