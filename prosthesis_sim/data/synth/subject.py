"""One simulated subject: their own topographies, gains, latencies, ERP, alpha rhythm and noise level."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .brain import EARLY, ERP, LATE, SOURCE_WIDTH
from .common import _bump, _mix_channels
from .recording import _Recording
from .retinotopy import RetinotopicSources
from .semantics import CategorySources


@dataclass
class _Subject:
    """What makes one subject's recordings their own: source topographies (jittered positions), gains,
    latency shifts and an idiosyncratic mixing of drives, their ERP, alpha rhythm and noise level."""

    rec: _Recording
    topo: np.ndarray  # (n_channels, n_sources)
    latency: np.ndarray  # (n_sources,) s
    width: np.ndarray  # (n_sources,) s
    mixing: np.ndarray  # (n_sources, n_sources): drives -> source amplitudes
    erp: np.ndarray  # (n_channels, n_resp)
    alpha_topo: np.ndarray  # (n_channels,)
    alpha_freq: float
    noise_sd: float
    retino: RetinotopicSources | None = None  # retinotopic C1/P1/N1 sources (None: the version-1 brain)
    category: CategorySources | None = None  # category-selective sources (None: the version-2 brain)

    @classmethod
    def sample(cls, rng: np.random.Generator, rec: _Recording) -> "_Subject":
        shift = rng.normal(0, 0.007)  # the whole subject is a little faster or slower

        def place(anchor):
            return rec.anchors[anchor] + rng.normal(0, 0.007, 3)

        sources = [("early", a, lat, w) for a, lat, w, _ in EARLY] + [("late", a, lat, w) for a, lat, w in LATE]
        topo = np.stack([rec.topography(rng, place(a)[None], SOURCE_WIDTH[kind]) for kind, a, *_ in sources], 1)
        spread = np.array([0.005 if kind == "early" else 0.010 for kind, *_ in sources])
        latency = np.array([lat for *_, lat, _ in sources]) + np.clip(shift + rng.normal(0, spread), -0.02, 0.02)
        n = len(sources)
        mixing = (np.eye(n) + rng.normal(0, 0.5 / np.sqrt(n), (n, n))) * rng.lognormal(0, 0.35, n)
        t = np.arange(rec.n_resp) / rec.sfreq
        erp = sum(
            amp * rng.lognormal(0, 0.2) * np.outer(
                rec.topography(rng, np.stack([place(a) for a in anchors]), SOURCE_WIDTH["late"]),
                _bump(t, lat + shift + rng.normal(0, 0.005), w))
            for anchors, lat, w, amp in ERP)
        alpha_topo = rec.alpha_sd * rng.lognormal(0, 0.3) * rec.topography(rng, place("POz")[None], 0.05)
        return cls(rec, topo.astype(np.float32), latency, np.array([w for *_, w in sources]),
                   mixing.astype(np.float32), erp.astype(np.float32), alpha_topo.astype(np.float32),
                   float(rng.uniform(9, 11)), float(rng.lognormal(0, 0.1)))

    def responses(self, drives: np.ndarray, lags: np.ndarray, fields: np.ndarray | None = None,
                  attrs: np.ndarray | None = None) -> np.ndarray:
        """(n, n_channels, n_resp) noise-free responses (ERP + image-dependent sources) from onset;
        ``fields`` (n, n_cells, n_kinds) are the visual-field activations that drive the retinotopic sources,
        ``attrs`` (n, n_attributes) the category attributes that drive the category sources."""
        t = np.arange(self.rec.n_resp, dtype=np.float32) / self.rec.sfreq
        waves = _bump(t, (self.latency + lags)[..., None], self.width[:, None]).astype(np.float32)
        out = (_mix_channels(self.topo, (drives @ self.mixing)[..., None] * waves) + self.erp).astype(np.float32)
        if self.retino is not None and fields is not None:
            out += self.retino.responses(fields, t)
        if self.category is not None and attrs is not None:
            out += self.category.responses(attrs, t)
        return out

    def component_responses(self, parts: dict[str, np.ndarray], lags: np.ndarray,
                            fields: np.ndarray | None = None, attrs: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``responses`` split by where the image-specific drive comes from: each drive part of
        ``_Brain.drive_parts`` through the sources, ``retinotopic`` (the visual-field sources) and
        ``shared`` (the ERP, the same for every image); the category sources join the ``semantic`` part.
        Linear in the drives, so the parts sum to ``responses(sum of parts, lags, fields, attrs)``."""
        t = np.arange(self.rec.n_resp, dtype=np.float32) / self.rec.sfreq
        waves = _bump(t, (self.latency + lags)[..., None], self.width[:, None]).astype(np.float32)
        out = {name: _mix_channels(self.topo, (d @ self.mixing)[..., None] * waves).astype(np.float32)
               for name, d in parts.items()}
        n = len(lags)
        out["retinotopic"] = (self.retino.responses(fields, t) if self.retino is not None and fields is not None
                              else np.zeros((n, *self.erp.shape), np.float32)).astype(np.float32)
        if self.category is not None and attrs is not None:
            out["semantic"] = out.get("semantic", 0) + self.category.responses(attrs, t)
        out["shared"] = np.broadcast_to(self.erp, (n, *self.erp.shape)).astype(np.float32)
        return out

