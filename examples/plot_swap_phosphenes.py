"""
=========================
Swapping phosphene models
=========================

The phosphene model is one config: ``psim-loop phosphene=argus_axonmap`` swaps it on the command line,
``psim.phosphene("argus_axonmap")`` in Python. Here one frame goes through six of the shipped models
(retinal and cortical implants, pulse2percept's models and our torch renderer), twice: the *ceiling*
(the frame itself sent to the implant) and the *path* (the image decoded from the generated EEG).
Overrides change any parameter, as on the command line.
"""

# %%
# One frame, and the image the loop decodes from it
# -------------------------------------------------
import matplotlib.pyplot as plt

import prosthesis_sim as psim
from prosthesis_sim.scores import to_grey
from prosthesis_sim.sources import sample_photo

root = psim.synthesize("psim-examples/data", n_subjects=1, n_train_concepts=30, images_per_concept=4,
                       n_test=20, train_reps=2, test_reps=8, image_size=96)
data = psim.load_dataset(root, subject=1)
encoder = psim.encoder("ridge", data)
decoder = psim.decoder("ridge_pixels", data)
frame = sample_photo("astronaut")
decoded = decoder.decode(encoder.generate([frame], seed=0))[0]

# %%
# Six phosphene models
# --------------------
# Each call builds the model once (pulse2percept's ``build()``); the built model maps a grey image in
# [0, 1] to a percept. ``configs/phosphene/`` lists all fourteen.
names = ["argus_scoreboard", "argus_axonmap", "torch_prima", "orion_scoreboard", "icvp_dynaphos", "torch_neuralink"]
models = {name: psim.phosphene(name) for name in names}
# an override, as on the command line: a wider current spread on the same implant
models["argus_scoreboard rho=400"] = psim.phosphene("argus_scoreboard", ["phosphene.model.rho=400"])

fig, axes = plt.subplots(2, len(models) + 1, figsize=(2.4 * (len(models) + 1), 5.4))
axes[0, 0].imshow(to_grey(frame), cmap="gray")
axes[0, 0].set_title("frame")
axes[1, 0].imshow(decoded, cmap="gray")
axes[1, 0].set_title("decoded")
for col, (name, model) in enumerate(models.items(), start=1):
    axes[0, col].imshow(model(to_grey(frame)), cmap="gray")
    axes[1, col].imshow(model(decoded), cmap="gray")
    axes[0, col].set_title(name.replace("_", "\n", 1), fontsize=8)
axes[0, 1].set_ylabel("ceiling")
axes[1, 1].set_ylabel("path")
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()

# %%
# Scores per model
# ----------------
# The same loop with each model: the percept of the path against the frame, beside the ceiling.
for name in names:
    loop = psim.closed_loop(encoder, decoder, models[name], data)
    s = loop.step(frame)["scores"]
    print(f"{name:18s} path r={s['path_pearson']:.3f}  floor r={s['floor_pearson']:.3f}  "
          f"ceiling r={s['ceiling_pearson']:.3f}")
