"""``source=browser``: frames from the camera of the page the loop serves, sent as JPEG over its WebSocket.

Why: the loop runs where the GPU is, often a machine with no camera; through an SSH tunnel the user's
own browser sends its camera. The page asks for the camera when it opens (``getUserMedia``), scales
each frame to ``max_side`` pixels on its longer side and sends at most ``fps`` frames a second.

It is a live source, like a webcam: ``FrameGrabber`` puts its frames into the same bounded queue and
drops the oldest when the loop is slower (``dropped_frames`` in summary.json). Between the server
thread and the capture thread a frame waits in a two-frame inbox that never blocks the server: if the
capture thread falls behind even that (it only decodes JPEG), the oldest waiting frame is dropped and
counted in ``lost``. The page's stop button ends the source, and so the run, with its outputs written;
a page that merely closes can be opened again and goes on.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator

import cv2
import numpy as np

from ..sources import put_drop_oldest

log = logging.getLogger(__name__)


class BrowserSource:
    """The page's camera; needs the loop's web server (``open_views`` attaches it: ``needs_page``)."""

    live = True
    needs_page = True

    def __init__(self, fps: float = 15.0, max_side: int = 320, quality: float = 0.8):
        self.fps, self.max_side, self.quality = float(fps), int(max_side), float(quality)
        self._inbox: queue.Queue = queue.Queue(maxsize=2)
        self._ended = threading.Event()
        self.end_reason: str | None = None
        self.received = 0   # JPEG frames the page sent
        self.lost = 0       # dropped before the capture queue (the capture thread fell behind)
        self.undecodable = 0

    def settings(self) -> dict:
        """What the page needs to know to send frames."""
        return {"fps": self.fps, "max_side": self.max_side, "quality": self.quality}

    def push(self, jpeg: bytes) -> None:
        """A frame from the page (server thread); never blocks."""
        if self._ended.is_set():
            return
        self.received += 1
        self.lost += put_drop_oldest(self._inbox, jpeg)

    def end(self, reason: str | None = None) -> None:
        """No more frames: the iteration ends (the page's stop button says why; the loop stopping does not)."""
        if not self._ended.is_set():
            self.end_reason = reason
            self._ended.set()

    def __iter__(self) -> Iterator[np.ndarray]:
        while not self._ended.is_set():
            try:
                data = self._inbox.get(timeout=0.05)
            except queue.Empty:
                continue
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:  # a damaged message: skip it, as a camera driver skips a bad frame
                self.undecodable += 1
                if self.undecodable == 1:
                    log.warning("source=browser: a frame from the page is not a JPEG OpenCV can decode; skipped")
                continue
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if self.end_reason:
            log.warning("source=browser: %s", self.end_reason)
