"""Live views of the loop, picked by ``loop.display``, and the page's camera as a frame source.

- ``window.py``: the panels in an OpenCV window (needs a display and a GUI build of OpenCV);
- ``server.py`` + ``page.html``: a local web page served by the loop (starlette + uvicorn in a
  background thread) with the panels, a rolling score plot, latency, fps and the stage names;
- ``browser_source.py``: ``source=browser``, frames from that page's camera over its WebSocket;
- ``views.py``: ``loop.display`` -> the views a run shows, and what ``run_loop`` calls on them.

Why a web page: the loop usually runs where the GPU is, a machine without a screen; an SSH tunnel
brings its page, and the laptop's camera, to the user's browser.
"""
from .views import DISPLAYS, LiveViews, open_views, resolve_display

__all__ = ["DISPLAYS", "LiveViews", "open_views", "resolve_display"]
