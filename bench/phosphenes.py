"""Cost of the phosphene models: build time and ms per percept for every configs/phosphene/*.yaml.

Usage: python bench/phosphenes.py [--calls 20]
Builds each config twice in a fresh cache folder (cold: axon maps computed; cached: read back), then
times percepts of a real photo (skimage's astronaut). PRIMA (not a config) is added for comparison.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import hydra
import numpy as np
from omegaconf import OmegaConf
from pulse2percept.implants.retina import PRIMAPivotal
from pulse2percept.models.retina import ScoreboardModel
from skimage import data

from prosthesis_sim.phosphenes import Pulse2PerceptModel
from prosthesis_sim.scores import to_grey

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "phosphene"


def timed(make):
    start = time.perf_counter()
    result = make()
    return result, time.perf_counter() - start


def ms_per_percept(model, image: np.ndarray, calls: int) -> float:
    model(image)  # warm-up
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        model(image)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def candidates(cache: Path):
    """(name, factory) pairs; each factory returns an unbuilt Pulse2PerceptModel."""
    for path in sorted(CONFIGS.glob("*.yaml")):
        cfg = OmegaConf.load(path)
        cfg.cache_dir = str(cache)
        yield path.stem, lambda cfg=cfg: hydra.utils.instantiate(cfg)
    yield "(prima_scoreboard)", lambda: Pulse2PerceptModel(
        ScoreboardModel(PRIMAPivotal(), rho=25, step=0.05), PRIMAPivotal(), cache_dir=cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    image = to_grey(data.astronaut())
    header = ("config", "model", "implant", "electrodes", "build cold s", "build cached s",
              "ms/percept", "percept h x w")
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for name, make in candidates(Path(cache)):
            model, cold = timed(lambda: make().build())
            _, cached = timed(lambda: make().build())
            spatial = getattr(model.model, "spatial", model.model)
            rows.append((name, type(model.model).__name__, type(model.implant).__name__,
                         f"{model.implant.n_electrodes} ({model.electrode_grid[0]} x "
                         f"{model.electrode_grid[1]})",
                         f"{cold:.2f}", f"{cached:.2f}",
                         f"{ms_per_percept(model, image, args.calls):.1f}",
                         f"{model.field_shape[0]} x {model.field_shape[1]} "
                         f"(step {spatial.step:g} deg)"))
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |")


if __name__ == "__main__":
    main()
