"""
===========================================
Batch evaluation of encoder x decoder pairs
===========================================

``psim-eval`` scores every encoder x decoder x phosphene model over the dataset's test images; in
Python it is ``psim.batch_evaluate``. Every row carries a 95 % bootstrap interval over the test
images, every pair of rows a paired comparison, and the table is anchored: the *floor* (the mean-ERP
encoder), the *measured* signals (what a real decoder would read), and, on synthetic data, the
*truth* (the noise-free response; a generated signal read better than the truth is a leak).
"""

# %%
# Evaluate two encoders with one decoder
# --------------------------------------
# ``select`` picks a subset of the configured rows (the default also trains the diffusion encoder and
# the retrieval and embedding decoders, which takes minutes); any ``psim-eval`` override works here.
import matplotlib.pyplot as plt
import pandas as pd

import prosthesis_sim as psim

root = psim.synthesize("psim-examples/data", n_subjects=1, n_train_concepts=30, images_per_concept=4,
                       n_test=20, train_reps=2, test_reps=8, image_size=96)
result = psim.batch_evaluate(root, ["select.encoders=[mean_erp,ridge]", "select.decoders=[ridge_pixels]",
                                    "cache_dir=psim-examples/cache", "bootstrap.n_resamples=1000"],
                             out="psim-examples/eval")

# %%
# The rows
# --------
# One row per encoder (plus ``measured`` and ``truth``), decoder and phosphene model. ``percept_2way``
# is the 2-way identification of each test image's percept among the ceiling percepts (chance 0.5),
# with its interval over the 20 test images.
rows = pd.DataFrame(result.rows)
print(rows[["encoder", "decoder", "percept_2way", "percept_2way_lo", "percept_2way_hi"]].round(3).to_string())

# %%
# Paired comparisons
# ------------------
# Each row minus a reference, on the same test images: a difference whose interval contains 0 is no
# ranking.
comparisons = pd.DataFrame(result.comparisons)
ridge = comparisons[(comparisons.encoder_a == "ridge") & (comparisons.metric == "percept_2way")]
print(ridge[["decoder", "encoder_b", "diff", "lo", "hi", "resolved", "n_images"]].round(3).to_string())

# %%
# The verdict figure
# ------------------
# ``verdicts.png``: each path's value with its interval, chance dotted and the truth dashed.
img = plt.imread(result.files["verdicts"])
fig, ax = plt.subplots(figsize=(10, 10 * img.shape[0] / img.shape[1]))
ax.imshow(img)
ax.axis("off")
fig.tight_layout()
