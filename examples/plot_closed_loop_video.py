"""
==========================
The closed loop on a video
==========================

A video file goes through the whole loop frame by frame: the **encoder** generates the EEG response a
brain would give to the frame, the **decoder** reads an image back from that signal, and the
**phosphene model** turns the decoded image into what an Argus II user would see. Each percept is
scored against the frame, beside two references: the *floor* (the mean-ERP encoder, the same signal
for every frame) and the *ceiling* (the frame itself sent to the implant).

This is what ``psim-loop source=video source.path=clip.mp4`` does, in Python.
"""

# %%
# Data and stages
# ---------------
# A small synthetic dataset in the THINGS-EEG2 format (a few seconds; kept and reused on the next
# run). The encoder and decoder are fitted on it through the same cache as the commands use.
from pathlib import Path

import cv2
import matplotlib.pyplot as plt
import numpy as np

import prosthesis_sim as psim
from prosthesis_sim.scores import to_grey
from prosthesis_sim.sources import SampleClip, VideoSource

root = psim.synthesize("psim-examples/data", n_subjects=1, n_train_concepts=30, images_per_concept=4,
                       n_test=20, train_reps=2, test_reps=8, image_size=96)
data = psim.load_dataset(root, subject=1)
encoder = psim.encoder("ridge", data)            # configs/encoder/ridge.yaml
decoder = psim.decoder("ridge_pixels", data)     # configs/decoder/ridge_pixels.yaml
implant = psim.phosphene("argus_scoreboard")     # pulse2percept's Argus II, scoreboard model
loop = psim.closed_loop(encoder, decoder, implant, data)

# %%
# A video
# -------
# Any file OpenCV reads works; here the default demo clip (photos bundled with scikit-image and
# matplotlib, with a slow zoom and pan) is written to an MP4 file first.
video = Path("psim-examples/clip.mp4")
writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 6.0, (160, 160))
for frame in SampleClip(frames_per_photo=4):
    writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
writer.release()

frames = list(VideoSource(str(video)))
results = psim.run_frames(loop, frames)
print(f"{len(results)} frames; first frame's scores:")
print({k: round(v, 3) for k, v in results[0]["scores"].items()})

# %%
# What each stage made
# --------------------
# One row per stage for a few frames: the frame, the generated signal (channels x time), the decoded
# image and its percept; last, the ceiling: the frame itself through the implant. Argus II has 60
# electrodes, so even the ceiling keeps only the coarse layout; the path's percepts are close to uniform
# (each panel is scaled to its own range): at 60 electrodes little of the decoded images' contrast
# survives, which is what the path's scores, near the floor's, say.
shown = np.linspace(0, len(frames) - 1, 5).astype(int)
fig, axes = plt.subplots(5, len(shown), figsize=(2.2 * len(shown), 10.5))
for col, i in enumerate(shown):
    r = results[i]
    axes[0, col].imshow(frames[i])
    axes[1, col].imshow(r["signal"], aspect="auto", cmap="RdBu_r", vmin=-3, vmax=3)
    axes[2, col].imshow(r["decoded"], cmap="gray")
    axes[3, col].imshow(r["percept"], cmap="gray")
    axes[4, col].imshow(implant(to_grey(frames[i])), cmap="gray")
    axes[0, col].set_title(f"frame {i}")
for row, label in enumerate(["frame", "generated EEG", "decoded", "percept", "ceiling"]):
    axes[row, 0].set_ylabel(label)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()

# %%
# Scores over the video
# ---------------------
# Pearson correlation between each percept and its frame, for the path through the loop and for the
# two references. The path's distance above the floor is what the encoder and decoder add.
fig, ax = plt.subplots(figsize=(7, 3))
for name in ("ceiling", "path", "floor"):
    ax.plot([r["scores"][f"{name}_pearson"] for r in results], label=name)
ax.set_xlabel("frame")
ax.set_ylabel("Pearson (percept vs frame)")
ax.legend()
fig.tight_layout()
latency = {k: float(np.median([r["latency"][k] for r in results])) for k in results[0]["latency"]}
print("median latency per stage (ms):", {k: round(v, 1) for k, v in latency.items()})
