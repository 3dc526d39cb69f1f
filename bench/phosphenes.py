"""Phosphene models: cost of every config, and the torch renderer against pulse2percept side by side.

Usage: python bench/phosphenes.py [--calls 20] [--stimuli 20] [--json FILE] [--big]

Table 1 (every configs/phosphene/*.yaml): build time (cold: axon maps computed; cached: read back)
and ms per percept of a real photo (skimage's astronaut, 512 x 512) through the whole stage.
Table 2 (torch vs pulse2percept, same implant, same grid, same random per-electrode stimuli):
ms per percept of pulse2percept's ScoreboardModel (it renders one at a time, so batch 64 is 64
calls) and of the torch renderer at batch 1 and 64, on the CPU and, when CUDA is present, on the
GPU in fp32 and fp16, with Pearson r of every torch percept against pulse2percept's. `--big` (always
on with CUDA) adds 10,000 phosphenes (a 100 x 100 array) at 256 x 256 pixels.
Table 2 has two paths: 'stimulus' (per-electrode amplitudes -> percept, the renderer proper) and
'image' (the astronaut photo -> prefilter -> percept, the whole stage; pulse2percept through our
adapter). `--json FILE` writes table 2's rows: model, implant, n_electrodes, batch, device,
ms_per_percept, r_vs_pulse2percept (plus path, renderer, dtype, pixels and speedup).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import OmegaConf
from pulse2percept.implants import DiskElectrode, ElectrodeGrid
from pulse2percept.implants.retina import RetinalImplant
from pulse2percept.models.retina import ScoreboardModel
from pulse2percept.stimuli import ImageStimulus, Stimulus
from skimage import data

from prosthesis_sim.phosphenes import TorchPhospheneModel
from prosthesis_sim.phosphenes.field import Field, electrode_dva, spatial_of
from prosthesis_sim.scores import to_grey

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "phosphene"
TORCH_CONFIGS = ("torch_argus", "torch_prima", "torch_orion", "torch_neuralink")


def timed(make):
    start = time.perf_counter()
    result = make()
    return result, time.perf_counter() - start


def median_ms(fn, calls: int, sync=lambda: None) -> float:
    fn()  # warm-up
    sync()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def print_table(header, rows) -> None:
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |")


def load(name: str, cache: Path, **overrides):
    cfg = OmegaConf.load(CONFIGS / f"{name}.yaml")
    cfg.cache_dir = str(cache)
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return hydra.utils.instantiate(cfg)


def config_table(image: np.ndarray, calls: int, cache: Path) -> None:
    header = ("config", "model", "implant", "electrodes", "build cold s", "build cached s",
              "ms/percept", "percept h x w")
    rows = []
    for path in sorted(CONFIGS.glob("*.yaml")):
        model, cold = timed(lambda: load(path.stem, cache).build())
        _, cached = timed(lambda: load(path.stem, cache).build())
        ref = getattr(model, "reference", model)
        spatial = spatial_of(ref.model)
        rows.append((path.stem, type(ref.model).__name__ + (" (torch)" if ref is not model else ""),
                     type(model.implant).__name__, model.implant.n_electrodes, f"{cold:.2f}",
                     f"{cached:.2f}", f"{median_ms(lambda: model(image), calls):.2f}",
                     f"{model.field_shape[0]} x {model.field_shape[1]} (step {spatial.step:g} deg)"))
    print_table(header, rows)


def big_array(device: str, pixels: int = 256) -> TorchPhospheneModel:
    """10,000 electrodes (100 x 100, 100 um pitch) on the retina, its field rendered at pixels^2.

    The dense kernel (65,536 x 10,000) is built on ``device``.
    """
    def implant():
        return RetinalImplant(ElectrodeGrid((100, 100), 100, electrode_type=DiskElectrode, radius=20))
    probe = ScoreboardModel(implant(), rho=50)
    box = Field.around(electrode_dva(probe.spatial)[1]).box
    step = (max(box[1] - box[0], box[3] - box[2]) / (pixels - 1)) * 1.0001
    return TorchPhospheneModel(partial(ScoreboardModel, rho=50, step=step), implant(), device=device)


def side_by_side(name: str, model: TorchPhospheneModel, devices: list[str], n_stimuli: int,
                 calls: int, p2p_calls: int, photo: np.ndarray | None = None) -> list[dict]:
    """Rows for one implant: pulse2percept, then torch per device/dtype at batch 1 and 64.

    path 'stimulus': per-electrode amplitudes -> percept (the renderer proper, what r compares);
    path 'image': a grey photo -> prefilter -> percept (the whole phosphene stage; pulse2percept
    through our adapter), when ``photo`` is given.
    """
    model.build()
    reference = model.reference.model
    n = model.implant.n_electrodes
    rng = np.random.default_rng(0)
    amps = rng.uniform(0, 50, (max(n_stimuli, 64), n)) * (rng.random((max(n_stimuli, 64), n)) < 0.5)
    def p2p(a):
        """PRIMA takes the grey drive through its PRIMAEncoder (quantised pulse widths), as in use."""
        if model.reference._drives_current:
            return reference.predict_percept(a)
        return reference.predict_percept(Stimulus(ImageStimulus(a[None] / 50),
                                                  electrodes=model.reference.electrode_names))
    truth = [p2p(a).data[..., 0] for a in amps[:n_stimuli]]
    base = {"model": type(spatial_of(reference)).__module__.split(".")[2] + "." +
            type(reference).__name__, "implant": name, "n_electrodes": n,
            "pixels": int(np.prod(model.field_shape))}
    p2p_ms = median_ms(lambda: p2p(amps[0]), p2p_calls)
    rows = [{**base, "path": "stimulus", "renderer": "pulse2percept", "device": "cpu",
             "dtype": "float32", "batch": b, "ms_per_percept": p2p_ms, "r_vs_pulse2percept": 1.0,
             "speedup": 1.0} for b in (1, 64)]
    if photo is not None:
        image_ms = median_ms(lambda: model.reference(photo), p2p_calls)
        rows += [{**base, "path": "image", "renderer": "pulse2percept", "device": "cpu",
                  "dtype": "float32", "batch": b, "ms_per_percept": image_ms,
                  "r_vs_pulse2percept": 1.0, "speedup": 1.0} for b in (1, 64)]
    for device in devices:
        for dtype in (["float32", "float16"] if device.startswith("cuda") else ["float32"]):
            twin = model.to(device, dtype)
            sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
            stim = torch.from_numpy(amps).to(device, getattr(torch, dtype))
            with torch.no_grad():
                ours = twin.render_stimulus(stim[:n_stimuli]).float().cpu().numpy()
            rs = [np.corrcoef(t.ravel(), o.ravel())[0, 1] for t, o in zip(truth, ours)]
            for batch in (1, 64):
                with torch.no_grad():
                    ms = median_ms(lambda: twin.render_stimulus(stim[:batch]), calls, sync) / batch
                rows.append({**base, "path": "stimulus", "renderer": "torch", "device": device,
                             "dtype": dtype, "batch": batch, "ms_per_percept": ms,
                             "r_vs_pulse2percept": float(min(rs)), "speedup": p2p_ms / ms})
                if photo is None:
                    continue
                images = torch.from_numpy(photo)[None].expand(batch, -1, -1).to(device)
                with torch.no_grad():
                    r_image = np.corrcoef(twin.render(images[:1])[0].float().cpu().numpy().ravel(),
                                          model.reference(photo).ravel())[0, 1]
                    ms = median_ms(lambda: twin.render(images), calls, sync) / batch
                rows.append({**base, "path": "image", "renderer": "torch", "device": device,
                             "dtype": dtype, "batch": batch, "ms_per_percept": ms,
                             "r_vs_pulse2percept": float(r_image), "speedup": image_ms / ms})
            del twin
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--stimuli", type=int, default=20, help="random stimuli for r per implant")
    parser.add_argument("--json", type=Path, default=None, help="also write table 2's rows here")
    parser.add_argument("--big", action="store_true", help="add 10,000 phosphenes at 256 x 256")
    parser.add_argument("--skip-configs", action="store_true", help="only table 2")
    args = parser.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, devices: {devices}")
    with tempfile.TemporaryDirectory() as cache:
        cache = Path(cache)
        photo = to_grey(data.astronaut())
        if not args.skip_configs:
            print("\n## Every config: image -> percept (astronaut, 512 x 512), batch 1\n")
            config_table(photo, args.calls, cache)
        rows = []
        for name in TORCH_CONFIGS:
            model = load(name, cache)
            rows += side_by_side(type(model.implant).__name__, model, devices, args.stimuli,
                                 args.calls, args.calls, photo)
        if args.big or torch.cuda.is_available():
            # pulse2percept takes seconds per percept here: few stimuli and calls for it.
            rows += side_by_side("100 x 100 array", big_array(devices[-1]), devices, 3, args.calls, 3)
    print("\n## Torch renderer vs pulse2percept, same implant and grid (stimulus: per-electrode "
          "amplitudes -> percept; image: the astronaut, 512 x 512 -> percept)\n")
    header = ("implant", "electrodes", "pixels", "path", "renderer", "device", "dtype", "batch",
              "ms/percept", "x pulse2percept", "min r vs p2p")
    print_table(header, [(r["implant"], r["n_electrodes"], r["pixels"], r["path"], r["renderer"], r["device"],
                          r["dtype"], r["batch"], f"{r['ms_per_percept']:.4f}", f"{r['speedup']:.1f}",
                          f"{r['r_vs_pulse2percept']:.5f}") for r in rows])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
        print(f"\nwrote {len(rows)} rows to {args.json}")


if __name__ == "__main__":
    main()
