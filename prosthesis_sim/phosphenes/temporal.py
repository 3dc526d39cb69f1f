"""Temporal dynamics for the torch renderer: a per-electrode leaky integrator (off by default).

dynaphos (van der Grinten et al. 2024) integrates each electrode's input into an activation that
decays with tau_act = 111 ms, so a phosphene fades in at onset and lingers after the stimulus
stops. This keeps that first-order part, discretised exactly at the frame interval:
``a_t = d a_{t-1} + (1 - d) x_t`` with ``d = exp(-dt / tau)``, so a steady input converges to
itself and a still image keeps its calibrated brightness. dynaphos's slower memory trace
(habituation over seconds) and current-dependent phosphene size are not modelled.
"""
from __future__ import annotations

import math

import torch


class LeakyIntegrator:
    """Stateful per-electrode low-pass filter; ``reset()`` forgets the past (a new video)."""

    def __init__(self, tau_ms: float = 111.1, fps: float = 30.0):
        if not tau_ms > 0 or not fps > 0:
            raise ValueError(f"temporal.tau_ms and temporal.fps must be positive, got {tau_ms}, {fps}")
        self.tau_ms, self.fps = float(tau_ms), float(fps)
        self.decay = math.exp(-1000.0 / (self.fps * self.tau_ms))
        self.state: torch.Tensor | None = None

    def reset(self) -> None:
        self.state = None

    def __call__(self, drive: torch.Tensor) -> torch.Tensor:
        """drive (T, n_electrodes): T consecutive frames -> activations (T, n_electrodes)."""
        out = []
        state = torch.zeros_like(drive[0]) if self.state is None else self.state
        for x in drive:
            state = self.decay * state + (1.0 - self.decay) * x
            out.append(state)
        self.state = state.detach()
        return torch.stack(out)
