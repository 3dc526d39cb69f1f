"""The loop's evaluation on its own thread: floor, ceiling, scores, panels, frames.jsonl, panels.mp4.

Why: a device runs only encode -> decode -> phosphene. Scoring each frame against the floor and the
ceiling and drawing its panels cost about as much again, and on the loop's thread they halved its
rate. The loop hands each frame over (``submit``) and goes on; this thread takes the frames in order.

``mode`` says what happens when the evaluation is slower than the loop:

- ``latest`` (the default): the loop never waits for it. The worker evaluates a frame only when no
  newer one is waiting; a frame it passes over still gets its frames.jsonl row (the loop's latency,
  ``"evaluated": false``, no scores) and is counted (``skipped_evaluations`` in summary.json). The
  evaluated frames are thus the most recent ones, and as many as the machine affords.
- ``every``: every frame is evaluated, in order; the loop waits when ``BACKLOG`` frames are waiting.

A phosphene model with temporal state still steps its floor and ceiling streams with every frame, in
order (``ClosedLoop.advance`` for the frames passed over), so a frame it passes over keeps its image
until then, and the loop waits at ``BACKLOG`` frames in both modes if even that is slower than the loop.

The worker owns the outputs (``RunOutputs``, ``RunningSummary``) until ``close`` returns. The live
views are shown by the loop's thread (``take_shown``), as a window must be drawn from the main thread
on some systems. An exception in the worker stops it and is raised again, the same exception, on the
loop's thread at its next ``submit`` or ``check``.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

MODES = ("latest", "every")
BACKLOG = 8  # frames (with their images) waiting for the worker before the loop waits


@dataclass
class Item:
    """One frame the loop has done, waiting for its evaluation (the arrays are None once not needed)."""

    index: int
    queue_ms: float
    latency: dict
    frame: np.ndarray | None
    signal: np.ndarray | None = None
    decoded: np.ndarray | None = None
    percept: np.ndarray | None = None


class Evaluator:
    """The evaluation thread of one run; see the module docstring."""

    def __init__(self, loop, renderer, files, acc, mode: str = "latest", video: bool = True,
                 panels_for_views=lambda: False):
        if mode not in MODES:
            raise ValueError(f"evaluate={mode!r}: expected one of {', '.join(MODES)}")
        self.loop, self.renderer, self.files, self.acc, self.mode = loop, renderer, files, acc, mode
        self.video, self.panels_for_views = video, panels_for_views  # () -> whether a view shows panels now
        self.error: BaseException | None = None
        self._items: deque[Item] = deque()
        self._shown: deque = deque()  # (panel or None, record) for the live views, in frame order
        self._cond = threading.Condition()
        self._closing = self._hurry = False
        self._held: tuple[dict, float] | None = None  # the latest evaluation: what the views show meanwhile
        self._thread = threading.Thread(target=self._run, name="psim-evaluate", daemon=True)
        self._done = threading.Event()  # set by the worker as it ends (see close)

    def start(self) -> "Evaluator":
        self._thread.start()
        return self

    # --- the loop's thread -------------------------------------------------------------------------

    def submit(self, item: Item) -> None:
        """Hand a frame over. Waits only while BACKLOG frames with their images wait (``every``, or a
        phosphene model with temporal state); raises the worker's error."""
        with self._cond:
            if self.mode == "latest" and self._items:  # those waiting will be passed over: keep their rows only
                keep_frame = self.loop.temporal  # a temporal model's streams still need the frame
                for old in self._items:
                    old.signal = old.decoded = old.percept = None
                    if not keep_frame:
                        old.frame = None
            while sum(it.frame is not None for it in self._items) >= BACKLOG and self.error is None:
                if not self._thread.is_alive():  # never wait on a worker that is gone
                    raise RuntimeError("the loop's evaluation thread stopped without an error")
                self._cond.wait(0.1)
            self.check()
            self._items.append(item)
            self._cond.notify_all()

    def check(self) -> None:
        """Raise the worker's error, if it had one, on the calling thread."""
        if self.error is not None:
            raise self.error

    def take_shown(self) -> list:
        """The (panel, record) pairs done since the last call, for the live views, in frame order."""
        with self._cond:
            shown = list(self._shown)
            self._shown.clear()
        return shown

    def close(self, hurry: bool = False) -> None:
        """Let the worker finish the frames waiting and stop it (``hurry``: as ``latest`` does, whatever
        the mode: only the newest waiting frame is evaluated). Never raises: see ``check``."""
        with self._cond:
            self._closing = True
            self._hurry = self._hurry or hurry
            self._cond.notify_all()
        if self._thread.ident is None:  # never started
            return
        # In steps, so that a signal handler can run meanwhile. An Event, not Thread.join: on Python 3.11 a
        # signal handler raising during join(timeout) can mark the thread stopped while it still runs
        # (bpo-45274's fix releases the lock the running thread holds), and the outputs would be committed
        # while it writes to them.
        while not self._done.wait(0.1):
            pass
        self._thread.join()

    # --- the worker's thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._work()
        finally:
            self._done.set()

    def _work(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._items and not self._closing:
                        self._cond.wait()
                    if not self._items:
                        return
                    item = self._items.popleft()
                    newest = not self._items
                    every = self.mode == "every" and not self._hurry
                    self._cond.notify_all()  # room for the loop, if it waits
                self._handle(item, evaluate=item.percept is not None and (every or newest))
        except BaseException as err:  # raised again on the loop's thread (check)
            with self._cond:
                self.error = err
                self._items.clear()
                self._cond.notify_all()

    def _handle(self, item: Item, evaluate: bool) -> None:
        """One frames.jsonl row; the frame's evaluation (scores, panels) when ``evaluate``."""
        rec = {"frame": item.index, "queue_ms": item.queue_ms, "latency": dict(item.latency), "evaluated": evaluate}
        panel, constant, for_views = None, False, self.panels_for_views()
        if evaluate:
            scores, ms = self.loop.evaluate(item.frame, item.percept)
            rec["latency"]["evaluate_ms"] = ms
            rec["scores"] = scores
            if self.video or for_views:
                start = time.perf_counter()
                panel = self.renderer.compose(item.frame, self.loop.norm(item.signal[None])[0], item.decoded,
                                              item.percept, scores)
                rec["panel_ms"] = 1000 * (time.perf_counter() - start)
            constant = int(item.frame.min()) == int(item.frame.max())
            self._held = (scores, ms)
        elif item.frame is not None:
            self.loop.advance(item.frame)
        self.files.write(rec, panel if self.video else None)
        self.acc.add(rec, constant_frame=constant)
        if not evaluate:  # the views show the latest scores until the next evaluation (none before the first)
            scores, ms = self._held or ({f"{p}_{k}": None for p in ("path", "floor", "ceiling")
                                         for k in ("ssim", "pearson")}, None)
            rec = {**rec, "scores": scores, "latency": {**rec["latency"], "evaluate_ms": ms}}
        with self._cond:
            self._shown.append((panel if for_views else None, rec))
