"""Frame sources (video file, webcam, image folder, built-in sample clip) and the capture thread.

Every source yields RGB uint8 frames of at least ``MIN_FRAME_SIDE`` pixels a side. ``check()`` (where a
source has one) opens it and reads a first frame, so a missing camera or an unreadable file stops the
command before any model loads. ``FrameGrabber`` reads a source in its own thread into a small queue.
A live source (``live = True``: a camera) cannot wait, so when the loop is slower the oldest queued
frame is dropped and the loop always works on the newest one; a file source waits for the loop, so
every frame is processed, unless real-time pacing is asked for (then it is paced at its fps and
drops like a camera). ``source=browser`` (the camera of the loop's web page) is
``prosthesis_sim.live.browser_source.BrowserSource``, a live source like a camera.
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
from .errors import SourceError

MIN_FRAME_SIDE = 8  # smaller frames carry no spatial pattern to encode, decode or score
#: the default clip: photos from which no synthetic concept is cut (the synthetic images are regions of
#: the scikit-image photos in ``data.synth.images.PHOTOS``), so the demo scores images the encoder and
#: decoder never saw the like of: a portrait, a wrapped present, a clock, cells and a mosaic of faces
SAMPLE_PHOTOS = ("mpl:grace_hopper.jpg", "mpl:Minduka_Present_Blue_Pack.png", "clock", "cell", "lfw_faces")
#: the earlier clip, in distribution: every photo is one the synthetic training concepts are cut from
SEEN_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "retina", "coins", "immunohistochemistry")


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

    def check(self) -> None:
        cap = cv2.VideoCapture(str(self.path))
        ok, bgr = cap.read()
        cap.release()
        if not ok:
            raise SourceError(f"source.path={self.path}: OpenCV opens this file but decodes no frame from it")
        check_frame(bgr, f"source.path={self.path}: frame 0")

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
    """A camera by OpenCV device index; paced by the camera itself (live: frames are dropped, never queued up)."""

    fps = None
    live = True

    def __init__(self, index: int = 0, width: int | None = None, height: int | None = None):
        self.index, self.width, self.height = int(index), width, height
        self._cap = None

    def _open(self):
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # the message below says it once
        try:
            cap = cv2.VideoCapture(self.index)
        finally:
            cv2.utils.logging.setLogLevel(level)
        if not cap.isOpened():
            raise SourceError(f"source.index={self.index}: cannot open the camera (is one attached and free? "
                              "list cameras with `v4l2-ctl --list-devices` on Linux)")
        if self.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        return cap

    def check(self) -> None:
        """Open the camera and read one frame; the capture stays open for ``__iter__``."""
        cap = self._cap or self._open()
        ok, bgr = cap.read()
        if not ok:
            cap.release()
            raise SourceError(f"source.index={self.index}: the camera opens but delivers no frame")
        check_frame(bgr, f"source.index={self.index}: the camera's frame")
        self._cap = cap

    def __iter__(self) -> Iterator[np.ndarray]:
        cap, self._cap = self._cap or self._open(), None
        n = 0
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    raise SourceError(f"source.index={self.index}: the camera stopped delivering frames after "
                                      f"{n} (unplugged?)")
                n += 1
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

    def check(self) -> None:
        check_frame(load_image(self.paths[0]), str(self.paths[0]))

    def __iter__(self) -> Iterator[np.ndarray]:
        for p in self.paths:
            yield check_frame(load_image(p), str(p))


def check_frame(frame: np.ndarray, what: str) -> np.ndarray:
    """``frame`` if it is an image of at least MIN_FRAME_SIDE pixels a side; else a SourceError naming ``what``."""
    shape = np.shape(frame)
    if len(shape) not in (2, 3) or min(shape[:2]) < MIN_FRAME_SIDE:
        size = " x ".join(map(str, shape[:2][::-1])) if len(shape) >= 2 else str(shape)
        raise SourceError(f"{what} is {size} pixels: frames must be at least {MIN_FRAME_SIDE} x {MIN_FRAME_SIDE} "
                          "(a smaller image carries no pattern to encode or score)")
    return frame


def open_source(source):
    """``source`` after its own ``check()`` (open the camera, read a first frame), if it has one."""
    check = getattr(source, "check", None)
    if check is not None:
        check()
    return source


def _as_rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]


def sample_photo(name: str) -> np.ndarray:
    """An RGB uint8 photo shipped inside an installed package (no download): ``mpl:FILE`` from
    matplotlib's sample data, ``lfw_faces`` a 4 x 4 mosaic of scikit-image's LFW faces, else the
    ``skimage.data`` function of that name."""
    if name.startswith("mpl:"):
        from matplotlib import cbook

        img = load_image(cbook.get_sample_data(name[4:], asfileobj=False))
    elif name == "lfw_faces":
        import skimage.data

        faces = skimage.data.lfw_subset()[:16]
        img = (255 * np.clip(faces, 0, 1)).astype(np.uint8).reshape(4, 4, 25, 25).transpose(0, 2, 1, 3).reshape(100, 100)
    else:
        import skimage.data

        if not callable(getattr(skimage.data, name, None)):
            raise ValueError(f"source.photos: no sample photo {name!r} (a skimage.data name, mpl:FILE or lfw_faces)")
        img = getattr(skimage.data, name)()
    return _as_rgb(np.asarray(img))


class SampleClip:
    """The default clip: photos bundled with scikit-image and matplotlib with a slow zoom and pan (no
    download needed); ``photos`` names them (:func:`sample_photo`)."""

    def __init__(self, photos=SAMPLE_PHOTOS, frames_per_photo: int = 6, size: int = 160, fps: float = 6.0):
        self.images = [sample_photo(name) for name in photos]
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


def put_drop_oldest(q: queue.Queue, item) -> int:
    """Put ``item`` without blocking, dropping the oldest items while ``q`` is full (a camera's rule:
    the newest frame wins); returns how many were dropped."""
    dropped = 0
    while True:
        try:
            q.put_nowait(item)
            return dropped
        except queue.Full:
            try:
                q.get_nowait()
                dropped += 1
            except queue.Empty:
                pass


class FrameGrabber:
    """Reads a source in a background thread into a queue of ``queue_size`` frames.

    A live source (``source.live``), or any source with realtime=True, never waits for the loop: when the
    queue is full the oldest frame is dropped (``dropped``). realtime=True also paces a file source at its
    fps. Otherwise the reader waits, so every frame is processed. ``request_stop()`` ends the iteration
    at the next frame boundary (a signal handler may call it).
    """

    def __init__(self, source, queue_size: int = 2, realtime: bool = False):
        self.source, self.realtime = source, realtime
        self.live = bool(getattr(source, "live", False))
        self.drop_oldest = bool(realtime) or self.live
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, int(queue_size)))
        self.dropped = 0
        self.captured = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="frame-grabber", daemon=True)

    @property
    def drop_reason(self) -> str | None:
        """Why frames were dropped, in words for the terminal and summary.json; None when none were."""
        if not self.dropped:
            return None
        if self.live:
            return "the loop was slower than the camera (a live source: the newest frame is always processed)"
        return (f"loop.realtime=true paces this file at {self.source.fps:g} fps and the loop was slower "
                "(loop.realtime=false processes every frame)")

    def start(self) -> "FrameGrabber":
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Stop reading; the iteration ends at the next frame boundary. Safe from a signal handler."""
        self._stop.set()

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
        self.dropped += put_drop_oldest(self.queue, item)

    def _run(self) -> None:
        fps = getattr(self.source, "fps", None)
        period = 1.0 / fps if (self.realtime and fps and not self.live) else 0.0
        next_t = time.perf_counter()
        try:
            for frame in self.source:
                if self._stop.is_set():
                    break
                if period:  # a frame every period; after a stall, go on from now instead of bursting
                    time.sleep(max(0.0, next_t - time.perf_counter()))
                    next_t = max(next_t + period, time.perf_counter())
                self._put((self.captured, time.perf_counter(), frame), drop_oldest=self.drop_oldest)
                self.captured += 1
        except BaseException as err:  # surfaced to the consumer, not lost in the thread
            self.error = err
        finally:
            self._put(_END, drop_oldest=False)  # never dropped; gives up only once stop is asked for

    def __iter__(self):
        while not self._stop.is_set():
            try:
                item = self.queue.get(timeout=0.05)  # a timeout, so a stop request is seen while waiting
            except queue.Empty:
                continue
            if item is _END:
                if self.error is not None:
                    raise self.error
                return
            yield item
