"""``loop.display=window``: the panels in an OpenCV window; q or Esc in the window ends the run.

Why a separate file: a window needs a display and a GUI build of OpenCV (``opencv-python``), while the
project installs the headless build (``opencv-python-headless``), which works everywhere else.
"""
from __future__ import annotations

import os
import re

import cv2
import numpy as np

TITLE = "prosthesis-sim"


def has_display() -> bool:
    """A display to open a window on, and an OpenCV built with a GUI backend."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        return False
    return re.search(r"GUI:\s+NONE", cv2.getBuildInformation()) is None


class WindowView:
    """Shows each frame's panels; a key q or Esc is the run's stop reason."""

    wants_panels = True

    def running(self, stages: dict) -> None:
        pass

    def show(self, panel: np.ndarray | None, record: dict, counters: dict) -> str | None:
        if panel is None:
            return None
        cv2.imshow(TITLE, panel)
        if cv2.waitKey(1) & 0xFF in (27, ord("q")):
            return "key pressed in the window"
        return None

    def end_capture(self) -> None:
        pass

    def close(self, reason: str | None = None, summary: dict | None = None) -> None:
        cv2.destroyAllWindows()
