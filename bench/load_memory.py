"""Peak memory and time of loading one full-size subject, per data format (synthetic content).

Usage: python bench/load_memory.py [--formats nice,meg_atm,ubp_eeg] [--workdir /tmp/psim-fullsize] [--json FILE]

The real files are not available offline, so this writes files of the real shapes and dtypes with
random content, the way the upstream scripts write them (see tests/fixtures and
../shared/data-formats.md), once into --workdir (about 22 GB of disk for all three), then loads each
in a fresh process with the toolkit's loader and reports the process's peak resident memory
(ru_maxrss, which includes about 0.4 GB of imported libraries) and the wall time:

- nice: THINGS-EEG2 NICE format, float64 pickles (16540, 4, 63, 250) + (200, 80, 63, 250);
- meg_atm: THINGS-MEG ATM pickles, float64 (1654, 12, 1, 271, 201) + (200, 1, 12, 271, 201);
- ubp_eeg: UBP's train.pt / test.pt, float16, the NICE shapes.
Each is loaded with the training repetitions averaged (the default) and kept (average_train=false).
"""
from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

NICE_CH = ("Fp1 Fp2 AF7 AF3 AFz AF4 AF8 F7 F5 F3 F1 F2 F4 F6 F8 FT9 FT7 FC5 FC3 FC1 FCz FC2 FC4 FC6 FT8 FT10 T7 C5 "
           "C3 C1 Cz C2 C4 C6 T8 TP9 TP7 CP5 CP3 CP1 CPz CP2 CP4 CP6 TP8 TP10 P7 P5 P3 P1 Pz P2 P4 P6 P8 PO7 PO3 POz "
           "PO4 PO8 O1 Oz O2").split()


def random_memmap(path: Path, shape: tuple, dtype, seed: int) -> np.memmap:
    """A file-backed array of the given shape filled with normal noise a block at a time."""
    out = np.memmap(path, dtype=dtype, mode="w+", shape=shape)
    rng = np.random.default_rng(seed)
    for i in range(0, shape[0], 256):
        out[i : i + 256] = rng.standard_normal((min(256, shape[0] - i), *shape[1:]), dtype=np.float32)
    out.flush()
    return out


def touch_images(root: Path, split: str, concepts: int, per_concept: int) -> None:
    """Empty files in the image folder layout (the loaders check that listed files exist)."""
    for c in range(concepts):
        folder = root / f"{split}_images" / f"{c + 1:05d}_concept{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_concept):
            (folder / f"concept{c}_{k + 1:02d}{'s' if split == 'test' else 'b'}.jpg").touch()


def write_nice(root: Path) -> None:
    sub = root / "sub-01"
    sub.mkdir(parents=True, exist_ok=True)
    for name, shape in (("training", (16540, 4, 63, 250)), ("test", (200, 80, 63, 250))):
        data = random_memmap(root / f"{name}.f64", shape, np.float64, seed=len(name))
        with open(sub / f"preprocessed_eeg_{name}.npy", "wb") as f:  # a pickle behind '.npy', as NICE writes
            pickle.dump({"preprocessed_eeg_data": data.view(np.ndarray), "ch_names": NICE_CH, "times": np.arange(250) / 250},
                        f, protocol=4)
        del data
        (root / f"{name}.f64").unlink()
    touch_images(root / "images", "training", 1654, 10)
    touch_images(root / "images", "test", 200, 1)


def write_meg_atm(root: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from prosthesis_sim.data.things_meg import things_meg_channels

    sub = root / "sub-01"
    sub.mkdir(parents=True, exist_ok=True)
    files = {"preprocessed_meg_training.pkl": (1654, 12, 1, 271, 201), "preprocessed_meg_zs_test.pkl": (200, 1, 12, 271, 201)}
    for name, shape in files.items():
        data = random_memmap(root / "data.f64", shape, np.float64, seed=len(name))
        with open(sub / name, "wb") as f:
            pickle.dump({"meg_data": data.view(np.ndarray), "ch_names": things_meg_channels(), "times": np.linspace(0, 1, 201)}, f)
        del data
        (root / "data.f64").unlink()
    touch_images(root / "images", "training", 1654, 12)
    touch_images(root / "images", "test", 200, 1)


def write_ubp_eeg(root: Path) -> None:
    import torch

    sub = root / "sub-01"
    sub.mkdir(parents=True, exist_ok=True)
    touch_images(root / "images", "train", 1654, 10)
    touch_images(root / "images", "test", 200, 1)
    for name, shape, folder in (("train", (16540, 4, 63, 250), "train_images"), ("test", (200, 80, 63, 250), "test_images")):
        rel = [str(p.relative_to(root / "images")) for c in sorted((root / "images" / folder).iterdir())
               for p in sorted(c.iterdir())]
        data = np.asarray(random_memmap(root / "data.f16", shape, np.float16, seed=len(name)))
        torch.save({"eeg": data, "img": np.tile(np.array(rel)[:, None], (1, shape[1])), "ch_names": NICE_CH,
                    "times": np.linspace(-0.2, 1.0, 301)}, sub / f"{name}.pt", pickle_protocol=5)
        del data
        (root / "data.f16").unlink()


FORMATS = {
    "nice": (write_nice, "prosthesis_sim.data.things_eeg2.load_things_eeg2", {}),
    "meg_atm": (write_meg_atm, "prosthesis_sim.data.things_meg.load_things_meg", {}),
    "ubp_eeg": (write_ubp_eeg, "prosthesis_sim.data.things_eeg2.load_things_eeg2", {}),
}

CHILD = """
import importlib, json, resource, sys, time
module, name = sys.argv[1].rsplit('.', 1)
load = getattr(importlib.import_module(module), name)
start = time.perf_counter()
data = load(sys.argv[2], subject=1, average_train=sys.argv[3] == 'true')
print(json.dumps({'seconds': time.perf_counter() - start, 'peak_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  'train': list(data.train.shape), 'test': list(data.test.shape), 'description': data.description}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/psim-fullsize"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--write", default=None, help=argparse.SUPPRESS)  # internal: write one format
    args = parser.parse_args()
    if args.write:
        FORMATS[args.write][0](args.workdir / args.write)
        (args.workdir / args.write / ".complete").touch()
        return
    rows = []
    for fmt in args.formats.split(","):
        _, loader, _ = FORMATS[fmt]
        root = args.workdir / fmt
        if not (root / ".complete").is_file():
            # Written in a child: a process's peak RSS is inherited by the processes it forks, so the
            # parent that starts the measured loaders must stay small.
            start = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--write", fmt, "--workdir", str(args.workdir)], check=True)
            print(f"{fmt}: wrote full-size files in {time.perf_counter() - start:.0f} s", flush=True)
        on_disk = sum(p.stat().st_size for p in (root / "sub-01").iterdir()) / 2**30
        for average in ("true", "false"):
            proc = subprocess.run([sys.executable, "-c", CHILD, loader, str(root), average],
                                  capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
            if proc.returncode != 0:
                raise SystemExit(f"{fmt} (average_train={average}) failed:\n{proc.stderr[-3000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append({"format": fmt, "average_train": average == "true", "files_gb": round(on_disk, 2), **result})
            print(rows[-1], flush=True)
    print("\n| format | files on disk GB | average_train | peak RSS GB | load s | train array | test array |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['format']} | {r['files_gb']:.1f} | {r['average_train']} | {r['peak_gb']:.1f} | {r['seconds']:.0f} | "
              f"{tuple(r['train'])} | {tuple(r['test'])} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
