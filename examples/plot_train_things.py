"""
========================
Training on THINGS files
========================

The loaders read the files of the public releases as they are: THINGS-EEG2 (the NICE/ATM
preprocessed ``.npy`` files, or UBP's) and THINGS-MEG (ATM pickles or MNE epochs), beside a THINGS
image folder. The embedded synthetic data is written in exactly those formats, so this example runs
without a download: point ``root`` (and ``image_root``) at a real copy and nothing else changes.

``psim.train`` is ``psim-train``: it fits an encoder on one subject, saves it, and scores it and the
mean-ERP floor on the test split.
"""

# %%
# The files
# ---------
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import prosthesis_sim as psim
from prosthesis_sim.plots import topomap_grid

root = Path(psim.synthesize("psim-examples/data", n_subjects=1, n_train_concepts=30, images_per_concept=4,
                            n_test=20, train_reps=2, test_reps=8, image_size=96))
for path in sorted(root.rglob("*")):  # the layout of a THINGS-EEG2 download (one image folder shown per split)
    rel = path.relative_to(root)
    if not rel.parts[0].startswith(".") and (len(rel.parts) <= 2 or rel.parts[2].startswith("00001_")):
        print(rel)

# %%
# Load one subject
# ----------------
# ``image_root`` defaults to ``root/images``; give the THINGS image folder when it lives elsewhere. A
# ``BrainDataset`` holds the trials (images x repetitions x channels x times), an ``mne.Info`` with
# the montage, and the image paths.
data = psim.load_dataset(root, subject=1, image_root=root / "images")
print(data.description, data.subject, "train", data.train.shape, "test", data.test.shape)
print(data.info)

# %%
# Train and score an encoder
# --------------------------
# Any encoder config and override of ``psim-train`` (``dit_residual``, ``train.epochs=20`` ...);
# ridge fits in seconds on two cores.
metrics = psim.train(root, "ridge", out="psim-examples/train-ridge")
for row in ("encoder", "mean_erp"):  # ridge and the floor; top1: the generated signal's identification
    print(f"{row:9s}", {k: round(metrics[row][k], 3) for k in ("pcc", "r_across_images", "top1", "top1_lo", "top1_hi")})
print("noise ceiling", {k: round(v, 3) for k, v in metrics["noise_ceiling"].items() if isinstance(v, float)})

# %%
# The saved encoder
# -----------------
# ``out/encoder`` is a saved component (``config.yaml`` + ``weights.safetensors``); load it back and
# compare its generated response with the measured average for one test image, as scalp maps.
encoder = psim.load("psim-examples/train-ridge/encoder", data)
image = plt.imread(data.test_images[0])
generated = encoder.generate([image], seed=0)[0]
measured = data.normalizer(data.test[0].mean(axis=0))
maps = topomap_grid({"measured (z)": measured, "generated (z)": generated}, data.info, data.times, width=0.1,
                    title=f"test image 0: {data.test_concepts[0]}", unit="z")
maps.savefig("psim-examples/topomaps.png", dpi=110)  # a matplotlib Figure, as psim-report draws it
fig, ax = plt.subplots(figsize=(12, 4))
ax.imshow(plt.imread("psim-examples/topomaps.png"))
ax.axis("off")
fig.tight_layout()
