"""The same frame through every phosphene model: one figure (docs/phosphenes.md's gallery).

Usage: python bench/phosphene_gallery.py [--out docs/img/phosphene_models.png] [--image astronaut]

Each panel is one configs/phosphene/*.yaml: the percept of the frame mapped onto that implant's
field, titled with the config, electrodes, field size and ms per percept (median of 5, 2 CPU cores
when run here). The first panel is the frame itself.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import hydra
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from skimage import data  # noqa: E402

from prosthesis_sim.scores import to_grey  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "phosphene"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img/phosphene_models.png"))
    parser.add_argument("--image", default="astronaut", help="a scikit-image sample, e.g. camera")
    args = parser.parse_args()
    frame = getattr(data, args.image)()
    grey = to_grey(frame)
    names = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    cols = 5
    rows = -(-(len(names) + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows))
    axes = axes.ravel()
    axes[0].imshow(frame, cmap="gray")
    axes[0].set_title(f"frame ({args.image})", fontsize=9)
    with tempfile.TemporaryDirectory() as cache:
        for ax, name in zip(axes[1:], names):
            cfg = OmegaConf.load(CONFIGS / f"{name}.yaml")
            cfg.cache_dir = cache
            model = hydra.utils.instantiate(cfg).build()
            times = []
            for _ in range(6):
                start = time.perf_counter()
                percept = model(grey)
                times.append(time.perf_counter() - start)
            x0, x1, y0, y1 = model.field_deg
            ax.imshow(percept, cmap="gray", vmin=0, vmax=max(float(percept.max()), 1e-6),
                      extent=(x0, x1, y0, y1))
            ax.set_title(f"{name}\n{model.implant.n_electrodes} electrodes, "
                         f"{1e3 * statistics.median(times[1:]):.1f} ms", fontsize=9)
            ax.tick_params(labelsize=7)
            ax.set_xlabel("deg", fontsize=7)
    for ax in axes[len(names) + 1:]:
        ax.axis("off")
    axes[0].axis("off")
    fig.suptitle("The same frame through every phosphene model (each on its implant's own field, "
                 "brightness scaled to the panel's maximum)", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
