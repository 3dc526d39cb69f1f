"""``loop.display`` -> the live views of a run, and the four calls ``run_loop`` makes on them.

Choices: ``auto`` (a window when there is a display and a GUI OpenCV, else none), ``window`` (``true``
is an alias), ``web`` (the page of ``server.py`` at http://<loop.web.host>:<loop.web.port>/) and
``false`` (none: headless). ``source=browser`` always starts the web page, whatever ``loop.display``
says, because that page is where its camera is.

Why checked and started here, before any model loads: a missing display or a port in use should stop
the command at once, and the page can show the stage names while the models load.
"""
from __future__ import annotations

import logging

import numpy as np

from ..errors import ConfigError, PsimError
from .window import WindowView, has_display

log = logging.getLogger(__name__)

DISPLAYS = ("auto", True, False, "window", "web")  # as validate.py lists them: true/false first


def resolve_display(display) -> str:
    """loop.display -> "window", "web" or "none"; a window asked for without a display is an error."""
    if display is False or display is None or display == "none":
        return "none"
    if display == "auto":
        return "window" if has_display() else "none"
    if display is True or display == "window":
        if not has_display():
            shown = "true" if display is True else display
            raise PsimError(f"loop.display={shown} but no display is available (DISPLAY is unset, or OpenCV was "
                            "built without GUI: see docs/loop.md for the GUI build), or use "
                            "loop.display=web (a page in your browser) or loop.display=false")
        return "window"
    if display == "web":
        return "web"
    raise ConfigError(f"loop.display={display!r}: expected one of auto, true, false, window, web")


class LiveViews:
    """The views of one run (none, a window, the web page, or a window and the page); ``run_loop`` calls
    ``running`` once, ``show`` per frame, ``end_capture`` when it wants no more frames and ``close``."""

    def __init__(self, views=()):
        self.views = list(views)
        self._closed = False

    @property
    def wants_panels(self) -> bool:
        """Whether a view shows this frame's panels (so they must be drawn even without a video)."""
        return any(v.wants_panels for v in self.views)

    @property
    def url(self) -> str | None:
        return next((v.url for v in self.views if hasattr(v, "url")), None)

    def running(self, stages: dict) -> None:
        for v in self.views:
            v.running(stages)

    def show(self, panel: np.ndarray | None, record: dict, counters: dict) -> str | None:
        """Show one frame; returns why the run should stop (a key in the window), else None."""
        for v in self.views:
            stop = v.show(panel, record, counters)
            if stop:
                return stop
        return None

    def end_capture(self) -> None:
        """The loop takes no more frames: a source that waits on a view (the page's camera) stops waiting."""
        for v in self.views:
            v.end_capture()

    def close(self, reason: str | None = None, summary: dict | None = None) -> None:
        """Tell the views how the run ended and close them; later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        for v in self.views:
            v.close(reason, summary)


def open_views(display, web=None, source=None, stages: dict | None = None) -> LiveViews:
    """The views for ``loop.display`` (a ready ``LiveViews`` is returned as it is); the web server starts
    here, bound to ``web`` (``loop.web``: host, port), and takes ``source``'s frames when it is the page's
    camera (``source.needs_page``)."""
    if isinstance(display, LiveViews):
        return display
    mode = resolve_display(display)
    needs_page = bool(getattr(source, "needs_page", False))
    views = [WindowView()] if mode == "window" else []
    if mode == "web" or needs_page:
        from .server import LiveServer  # starlette and uvicorn load only when a page is served

        web = dict(web or {})
        server = LiveServer(host=web.get("host", "127.0.0.1"), port=web.get("port", 8765), stages=stages,
                            camera=source if needs_page else None)
        server.start()
        views.append(server)
        if mode != "web":
            log.info("source=browser: serving its page at %s (loop.display=%s)", server.url,
                     str(display).lower())
    return LiveViews(views)
