"""What a concept *is*, not how it looks: a semantic latent and category-selective components
(version 3; ``semantic=0`` leaves them out and reproduces version 2).

Every exemplar of a concept shares its semantics, whatever its jitter, because they depend on the
concept's identity (its name and the object it shows), never on image statistics:

- **Category-selective components** with published topographies and latencies: the face N170 at
  P7/P8, larger over the right hemisphere (Bentin et al. 1996; Rossion & Jacques 2008: about twice the
  objects' N170, so the face effect is set to the shared N1's size), the left-lateralised N170 to print (Maurer et al. 2005), and a sustained
  occipito-temporal animacy difference from about 150 ms (Carlson et al. 2013; Cichy et al. 2014).
- **A semantic latent** driving the late sources: an embedding per object (every concept cut from the
  same photo or of the same pattern kind shares it, as THINGS' exemplars share an object) plus a
  smaller part of each concept's own. The object part is learnable from other concepts of the object by
  a model that recognises it; the concept's own part is reliable but unpredictable for an unseen
  concept, as real recordings hold more reliable variance than any encoder explains.

The simulator's only tie to the images is the concept's name: nothing here is a feature a model fits.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .common import _bump, _mix_channels, _rng

# Category attributes of each object (the concept names' stems; patterns have none).
ATTRIBUTES = ("face", "print", "animate")
OBJECTS = {
    "astronaut": {"face": 1.0, "animate": 1.0}, "cameraman": {"face": 1.0, "animate": 1.0},
    "cat": {"face": 0.6, "animate": 1.0},  # animal faces evoke a smaller N170 than human ones
    "horse": {"animate": 1.0},
    "printed_page": {"print": 1.0}, "handwriting": {"print": 1.0}, "logo": {"print": 0.5},
}
# Category sources: (attribute, anchor electrode, latency s, width s, amplitude in units of the shared
# N1's peak; negative = same polarity as the N1).
CATEGORY_SOURCES = (
    ("face", "P8", 0.170, 0.018, -0.9), ("face", "P7", 0.170, 0.018, -0.6),
    ("print", "P7", 0.175, 0.020, -0.7), ("print", "P8", 0.175, 0.020, -0.25),
    ("animate", "PO8", 0.250, 0.060, 0.25), ("animate", "PO7", 0.250, 0.060, 0.25),
)
EMBED_DIM = 8  # the semantic latent's dimension
CONCEPT_SD = 0.5  # a concept's own semantic part, relative to its object's (unit sd)
FIRST_SEMANTIC_SOURCE = 2  # the latent drives the late sources from 220 ms on (brain.LATE[2:]): finer
# semantic distinctions are decodable later than categories (Cichy et al. 2014; Carlson et al. 2013)
SEMANTIC_GAIN = 1.2  # the latent's drive on the late sources for a 1-sd latent (concept drive: 2.6)


def stem(name: str) -> str:
    """The object a concept name shows: ``cat_03`` -> ``cat``, ``brick_wall_01`` -> ``brick_wall``."""
    return name.rsplit("_", 1)[0]


class SemanticBrain:
    """Population-level semantics: each object's embedding, each concept's own part, and the weights
    from the latent to the late sources. Everything is keyed by names, so a concept's semantics do not
    depend on which other concepts are in the dataset."""

    def __init__(self, seed: int, n_late: int):
        self.seed = seed
        self.weights = _rng(seed, "semantic-weights").normal(0, 1 / np.sqrt(EMBED_DIM), (EMBED_DIM, n_late))
        self.weights[:, :FIRST_SEMANTIC_SOURCE] = 0  # the N170-time sources carry categories, not the latent

    def latent(self, names: list[str]) -> np.ndarray:
        """(n, EMBED_DIM): object embedding + the concept's own part, scaled to unit sd per dimension."""
        cache: dict[str, np.ndarray] = {}

        def draw(*key):
            if key not in cache:
                cache[key] = _rng(self.seed, "semantic", *key).standard_normal(EMBED_DIM)
            return cache[key]

        z = np.stack([draw("object", stem(n)) + CONCEPT_SD * draw("concept", n) for n in names])
        return z / np.sqrt(1 + CONCEPT_SD**2)

    def late_drive(self, names: list[str]) -> np.ndarray:
        """(n, n_late): the latent's amplitude drive on the late sources, about unit sd per source."""
        return SEMANTIC_GAIN * self.latent(names) @ self.weights

    @staticmethod
    def attributes(names: list[str]) -> np.ndarray:
        """(n, len(ATTRIBUTES)) category attributes in [0, 1]."""
        return np.array([[OBJECTS.get(stem(n), {}).get(a, 0.0) for a in ATTRIBUTES] for n in names], np.float32)


@dataclass
class CategorySources:
    """One subject's category-selective sources: topographies (n_channels, k), latencies, gains."""

    topo: np.ndarray
    latency: np.ndarray
    width: np.ndarray
    amplitude: np.ndarray  # per source, times the subject's gain
    attribute: np.ndarray  # per source, index into ATTRIBUTES

    @classmethod
    def sample(cls, rng: np.random.Generator, rec, n1_peak: float, width_m: float) -> "CategorySources":
        """Positions jittered like the other sources (sd 7 mm), latencies (sd 8 ms) and gains (log-normal,
        sd 0.3) per subject; drawn from their own stream so the rest of the subject is unchanged."""
        topo = np.stack([rec.topography(rng, (rec.anchors[a] + rng.normal(0, 0.007, 3))[None], width_m)
                         for _, a, *_ in CATEGORY_SOURCES], 1)
        latency = np.array([lat for *_, lat, _, _ in CATEGORY_SOURCES]) + rng.normal(0, 0.008, len(CATEGORY_SOURCES))
        amplitude = np.array([amp for *_, amp in CATEGORY_SOURCES]) * n1_peak * rng.lognormal(0, 0.3, len(CATEGORY_SOURCES))
        return cls(topo.astype(np.float32), latency, np.array([w for *_, w, _ in CATEGORY_SOURCES]), amplitude,
                   np.array([ATTRIBUTES.index(a) for a, *_ in CATEGORY_SOURCES]))

    def responses(self, attrs: np.ndarray, t: np.ndarray) -> np.ndarray:
        """(n, n_channels, len(t)) noise-free category components for attributes ``attrs`` (n, n_attr)."""
        drive = attrs[:, self.attribute] * self.amplitude  # (n, k)
        waves = _bump(t, self.latency[:, None], self.width[:, None]).astype(np.float32)  # (k, t)
        return _mix_channels(self.topo, drive[..., None].astype(np.float32) * waves[None]).astype(np.float32)
