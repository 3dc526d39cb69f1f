"""Frame sources (video file, webcam, image folder, built-in sample clip) and the capture thread.

Every source yields RGB uint8 frames. ``FrameGrabber`` reads a source in its own thread into a small
queue that drops the oldest frame when full, so a slow loop always works on the newest frame instead
of falling further and further behind the camera.
"""
from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from .data.dataset import load_image

SAMPLE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "retina", "coins", "immunohistochemistry")


class VideoSource:
    """Any file OpenCV can read."""

    def __init__(self, path: str, max_frames: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"source.path={self.path}: no such video file")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise ValueError(f"source.path={self.path}: OpenCV cannot open this file as a video")
        self.fps = cap.get(cv2.CAP_PROP_FPS) or None
        cap.release()
        self.max_frames = max_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        cap = cv2.VideoCapture(str(self.path))
        try:
            n = 0
            while self.max_frames is None or n < self.max_frames:
                ok, bgr = cap.read()
                if not ok:
                    break
                n += 1
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()


class WebcamSource:
    """A camera by OpenCV device index; paced by the camera itself."""

    fps = None

    def __init__(self, index: int = 0, width: int | None = None, height: int | None = None):
        self.index, self.width, self.height = int(index), width, height

    def __iter__(self) -> Iterator[np.ndarray]:
        cap = cv2.VideoCapture(self.index)
        if not cap.isOpened():
            raise RuntimeError(f"source.index={self.index}: cannot open webcam (is a camera attached and free?)")
        if self.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()


class ImageFolderSource:
    """Every .jpg/.jpeg/.png in a folder, in sorted order, shown at ``fps``."""

    def __init__(self, folder: str, fps: float = 2.0):
        self.folder = Path(folder)
        self.paths = sorted(p for p in self.folder.glob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
        if not self.paths:
            raise FileNotFoundError(f"source.folder={self.folder}: no .jpg/.jpeg/.png images found")
        self.fps = fps

    def __iter__(self) -> Iterator[np.ndarray]:
        for p in self.paths:
            yield load_image(p)


def _as_rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]


class SampleClip:
    """The default clip: scikit-image's bundled photos with a slow zoom and pan (no download needed)."""

    def __init__(self, photos=SAMPLE_PHOTOS, frames_per_photo: int = 6, size: int = 160, fps: float = 6.0):
        import skimage.data

        self.images = [_as_rgb(getattr(skimage.data, name)()) for name in photos]
        self.frames_per_photo, self.size, self.fps = frames_per_photo, size, fps

    def __iter__(self) -> Iterator[np.ndarray]:
        for img in self.images:
            h, w = img.shape[:2]
            side = min(h, w)
            for k in range(self.frames_per_photo):
                frac = k / max(1, self.frames_per_photo - 1)
                crop = int(side * (1.0 - 0.3 * frac))  # zoom in by up to 30 %
                y0 = (h - crop) // 2
                x0 = int((w - crop) * (0.3 + 0.4 * frac))  # and pan left to right
                yield cv2.resize(img[y0 : y0 + crop, x0 : x0 + crop], (self.size, self.size), interpolation=cv2.INTER_AREA)


_END = object()


class FrameGrabber:
    """Reads a source in a background thread into a drop-oldest queue.

    realtime=True paces file sources at their native fps (a camera paces itself) and drops the oldest
    queued frame when the consumer is slower; realtime=False blocks instead, so every frame is processed.
    """

    def __init__(self, source, queue_size: int = 2, realtime: bool = True):
        self.source, self.realtime = source, realtime
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self.dropped = 0
        self.captured = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="frame-grabber", daemon=True)

    def start(self) -> "FrameGrabber":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reading and wait for the thread: drain the queue so a blocked put can finish."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self.queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()

    def _put(self, item, drop_oldest: bool) -> None:
        if not drop_oldest:
            while not self._stop.is_set():
                try:
                    self.queue.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue
            return
        while True:
            try:
                self.queue.put_nowait(item)
                return
            except queue.Full:
                try:
                    self.queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def _run(self) -> None:
        period = 1.0 / self.source.fps if (self.realtime and self.source.fps) else 0.0
        next_t = time.perf_counter()
        try:
            for frame in self.source:
                if self._stop.is_set():
                    break
                if period:  # a frame every period; after a stall, go on from now instead of bursting
                    time.sleep(max(0.0, next_t - time.perf_counter()))
                    next_t = max(next_t + period, time.perf_counter())
                self._put((self.captured, time.perf_counter(), frame), drop_oldest=self.realtime)
                self.captured += 1
        except BaseException as err:  # surfaced to the consumer, not lost in the thread
            self.error = err
        finally:
            self._put(_END, drop_oldest=False)  # never dropped; gives up only once stop() is called

    def __iter__(self):
        while True:
            item = self.queue.get()
            if item is _END:
                if self.error is not None:
                    raise self.error
                return
            yield item
