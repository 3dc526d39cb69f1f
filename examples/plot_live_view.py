"""
=============
The live view
=============

``psim-loop loop.display=web`` serves the loop's live view as a web page (http://127.0.0.1:8765/ by
default): the frame, the generated signal, the decoded image, the percept and the ceiling, with each
stage's latency and the running scores. ``source=browser`` feeds the loop from the camera of the
browser that opens the page (a laptop's webcam, over an SSH tunnel to a GPU machine).

In Python the same pieces are a ``ClosedLoop``, a ``PanelRenderer`` (the five panels) and
``run_loop`` with ``display="web"``. A script can read the page's state as JSON at ``/state.json``;
this example does so while twelve frames of the default clip run, then shows the panel the page drew.
"""

# %%
# The loop and its panels
# -----------------------
import json
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import matplotlib.pyplot as plt

import prosthesis_sim as psim
from prosthesis_sim.live.views import open_views
from prosthesis_sim.loop import run_loop
from prosthesis_sim.render import PanelRenderer
from prosthesis_sim.sources import SampleClip

root = psim.synthesize("psim-examples/data", n_subjects=1, n_train_concepts=30, images_per_concept=4,
                       n_test=20, train_reps=2, test_reps=8, image_size=96)
data = psim.load_dataset(root, subject=1)
loop = psim.closed_loop(psim.encoder("ridge", data), psim.decoder("ridge_pixels", data),
                        psim.phosphene("argus_scoreboard"), data)
renderer = PanelRenderer(data.info, data.times, size=240, decoder="ridge_pixels", phosphene="argus_scoreboard",
                         signal=loop.describe_signal(short=True))

# %%
# Serve the page while the loop runs
# ----------------------------------
# Port 0 picks a free port (the command's default is 8765). Open ``views.url`` in a browser to watch;
# here a thread reads ``/state.json`` once the first frames are through.
views = open_views("web", web={"host": "127.0.0.1", "port": 0})
print("live view at", views.url)
seen = {}


def watch():
    for _ in range(200):
        state = json.load(urllib.request.urlopen(views.url + "state.json", timeout=5))
        if state["frames"] >= 3:
            seen.update(state)
            return
        time.sleep(0.05)


watcher = threading.Thread(target=watch, daemon=True)
watcher.start()
out = Path("psim-examples/live")
summary = run_loop(loop, SampleClip(frames_per_photo=2), renderer, out, display=views, max_frames=12,
                   realtime=True)
watcher.join(timeout=10)
print("the page's state after", seen.get("frames"), "frames:", seen.get("status"), "| stages:", seen.get("stages"))
print("run summary:", {k: summary[k] for k in ("frames", "stopped") if k in summary})

# %%
# The panel the page shows
# ------------------------
# The same panels go to ``panels.mp4`` in the run's folder; here its last frame.
cap = cv2.VideoCapture(str(out / "panels.mp4"))
panel = None
while True:
    ok, bgr = cap.read()
    if not ok:
        break
    panel = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
cap.release()
fig, ax = plt.subplots(figsize=(12, 12 * panel.shape[0] / panel.shape[1]))
ax.imshow(panel)
ax.axis("off")
fig.tight_layout()
