"""The closed loop: frame -> encoder -> generated signal -> decoder -> phosphene model -> score.

Three paths are scored against every frame, at the percept's resolution:
- path:    frame -> encoder -> decoder -> phosphenes (what the toolkit simulates);
- floor:   the same with the mean-ERP encoder (no image information reaches the decoder);
- ceiling: frame (grey) straight to the implant (the best any brain-encoding path can reach).
Latency is reported per stage; ``loop`` is encode + decode + phosphene (what a device would run),
``evaluate`` is the floor and ceiling paths and the scores, and ``total`` is everything.
The normalised loop score is (path - floor) / (ceiling - floor), computed from the mean scores.

A run never loses its outputs and never destroys an earlier run's: frames.jsonl and panels.mp4 are
streamed to hidden temporary names in ``out`` and moved into place, with summary.json written last,
once the run has processed at least one frame, however it ends (source ended, ``max_frames``,
SIGINT/SIGTERM, a source failing mid-run, a stage raising). A run that processes no frame leaves
the folder as it was. The summary is accumulated frame by frame in fixed memory.
What a run shows while it runs (``loop.display``: a window, a web page) lives in ``live/``.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from .checkpoint import atomic_write_text
from .data.dataset import Normalizer
from .errors import PsimError, SourceError
from .live import LiveViews, open_views, resolve_display  # noqa: F401 (resolve_display: for callers)
from .live.window import has_display  # noqa: F401
from .render import PanelRenderer
from .scores import image_scores, normalised_score, to_grey
from .sources import FrameGrabber, check_frame

log = logging.getLogger(__name__)

STAGES = ("encode", "decode", "phosphene", "evaluate")  # the loop itself is the first three
SCORES = ("ssim", "pearson")


class ClosedLoop:
    """All models are given ready (fitted, phosphene model built); ``step`` processes one frame."""

    def __init__(self, encoder, floor, decoder, phosphene, norm: Normalizer, seed: int = 0):
        self.encoder, self.floor, self.decoder, self.phosphene = encoder, floor, decoder, phosphene
        self.norm, self.seed = norm, seed
        # A phosphene model with temporal state sees three streams (path, floor, ceiling): each
        # gets its own state, sharing the built model (``fork()``); a stateless one is shared.
        fork = getattr(phosphene, "fork", None)
        self._streams = {name: fork() if fork else phosphene for name in ("floor", "ceiling")}

    def _decode(self, signal: np.ndarray) -> np.ndarray:
        """One signal -> the decoder's grey image, of whatever size the decoder makes (checked, not assumed)."""
        decoded = np.asarray(self.decoder.decode(signal[None]))
        if decoded.ndim != 3 or len(decoded) != 1:
            raise ValueError(f"{type(self.decoder).__name__}.decode must return grey images (n, height, width), "
                             f"got shape {decoded.shape} for one signal")
        if not np.isfinite(decoded).all():
            raise ValueError(f"{type(self.decoder).__name__}.decode returned NaN or Inf")
        return decoded[0]

    def step(self, frame: np.ndarray) -> dict:
        """One frame through the loop (encode, decode, phosphene), then its evaluation (floor, ceiling)."""
        t = [time.perf_counter()]
        signal = self.encoder.generate([frame], seed=self.seed)[0]
        t.append(time.perf_counter())
        decoded = self._decode(signal)
        t.append(time.perf_counter())
        percept = self.phosphene(decoded)
        t.append(time.perf_counter())
        floor = self._streams["floor"](self._decode(self.floor.generate([frame], seed=self.seed)[0]))
        ceiling = self._streams["ceiling"](to_grey(frame))
        scores = {}
        for name, p in (("path", percept), ("floor", floor), ("ceiling", ceiling)):
            scores.update({f"{name}_{k}": v for k, v in image_scores(frame, p).items()})
        t.append(time.perf_counter())
        latency = {f"{s}_ms": 1000 * (b - a) for s, a, b in zip(STAGES, t[:-1], t[1:])}
        return {"signal": signal, "decoded": decoded, "percept": percept, "scores": scores, "latency": latency}


class Quantiles:
    """Quantiles of a stream of positive values (ms) in fixed memory: counts on log-spaced bins.

    Bins are 0.5 % wide from 1 us to 1000 s, so a median is exact to 0.25 % however long the run.
    """

    EDGES = np.geomspace(1e-3, 1e6, 4001)

    def __init__(self):
        self.counts = np.zeros(len(self.EDGES) + 1, np.int64)

    def add(self, value: float) -> None:
        self.counts[np.searchsorted(self.EDGES, value)] += 1

    def quantile(self, q: float) -> float:
        n = int(self.counts.sum())
        if n == 0:
            return float("nan")
        i = int(np.searchsorted(np.cumsum(self.counts), max(1, np.ceil(q * n))))
        if i == 0:
            return 0.0
        if i == len(self.EDGES):
            return float(self.EDGES[-1])
        return float(np.sqrt(self.EDGES[i - 1] * self.EDGES[i]))


class RunningSummary:
    """What summary.json reports, accumulated one frame at a time (no per-frame list is kept)."""

    def __init__(self):
        self.frames = 0
        self.constant_frames = 0
        self.sums: dict[str, float] = {}
        self.latency = {s: Quantiles() for s in (*STAGES, "loop", "total")}

    def add(self, record: dict, constant_frame: bool) -> None:
        self.frames += 1
        self.constant_frames += bool(constant_frame)
        for k, v in record["scores"].items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        lat = record["latency"]
        for s in STAGES:
            self.latency[s].add(lat[f"{s}_ms"])
        self.latency["loop"].add(sum(lat[f"{s}_ms"] for s in STAGES[:3]))
        self.latency["total"].add(sum(lat.values()))

    def result(self, wall_s: float, **extra) -> dict:
        means = {k: v / self.frames for k, v in self.sums.items()}
        normalised, undefined = {}, {}
        for k in SCORES:
            value = normalised_score(means[f"path_{k}"], means[f"floor_{k}"], means[f"ceiling_{k}"])
            normalised[k] = None if np.isnan(value) else value
            if normalised[k] is None:
                undefined[k] = ("the ceiling's mean equals the floor's" + (
                    f" ({self.constant_frames} of {self.frames} frames are uniform: no pattern to correlate, "
                    "r is 0 by definition)" if self.constant_frames else ""))
        out = {
            "frames": self.frames,
            "wall_s": wall_s,
            "fps": self.frames / wall_s if wall_s > 0 else None,
            "median_latency_ms": {s: q.quantile(0.5) for s, q in self.latency.items()},
            "mean_scores": {name: {k: means[f"{name}_{k}"] for k in SCORES} for name in ("path", "floor", "ceiling")},
            "normalised_score": normalised,
            "constant_frames": self.constant_frames,
            **extra,
        }
        if undefined:
            out["normalised_score_undefined"] = undefined
        return out


class RunOutputs:
    """frames.jsonl and panels.mp4 streamed to hidden temporary names in ``out``, moved into place by
    ``commit`` (summary.json last); ``discard`` removes them, leaving an earlier run's files untouched."""

    FILES = ("frames.jsonl", "panels.mp4")

    def __init__(self, out: Path, video: bool, fps: float):
        self.out, self.video, self.fps = out, video, fps
        self.tmp = {name: out / f".{Path(name).stem}.partial{Path(name).suffix}" for name in self.FILES}
        self.jsonl = open(self.tmp["frames.jsonl"], "w", buffering=1)  # line-buffered: whole lines on disk
        self.writer = None

    def write(self, record: dict, panel: np.ndarray | None) -> None:
        self.jsonl.write(json.dumps(record) + "\n")
        if panel is not None:
            if self.writer is None:
                h, w = panel.shape[:2]
                self.writer = cv2.VideoWriter(str(self.tmp["panels.mp4"]), cv2.VideoWriter_fourcc(*"mp4v"),
                                              self.fps, (w, h))
                if not self.writer.isOpened():
                    raise PsimError(f"{self.tmp['panels.mp4']}: OpenCV cannot write an mp4v video here "
                                    "(loop.video=false turns the video off)")
            self.writer.write(panel)

    def _close(self) -> None:
        if not self.jsonl.closed:
            self.jsonl.close()
        if self.writer is not None:
            self.writer.release()  # writes the mp4 index (moov atom): without it no player opens the file
            self.writer = None

    def commit(self, summary: dict) -> None:
        self._close()
        if self.video:
            os.replace(self.tmp["panels.mp4"], self.out / "panels.mp4")
        elif (self.out / "panels.mp4").exists():  # an earlier run's video would contradict this run's summary
            log.info("removing %s of an earlier run (loop.video=false)", self.out / "panels.mp4")
            (self.out / "panels.mp4").unlink()
        os.replace(self.tmp["frames.jsonl"], self.out / "frames.jsonl")
        atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2))

    def discard(self) -> None:
        self._close()
        for path in self.tmp.values():
            path.unlink(missing_ok=True)


class _ForcedStop(Exception):
    """A second SIGINT/SIGTERM while a frame is in progress: stop now instead of after the frame."""


@contextmanager
def graceful_signals(on_stop):
    """While active, the first SIGINT/SIGTERM calls ``on_stop(name)``, so the loop ends after the current
    frame; a second one raises ``_ForcedStop`` when ``state["armed"]`` (set around the long calls: waiting
    for a frame, a loop step). Off the main thread signals are left alone and the state is None."""
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    state = {"signal": None, "armed": False}

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if state["signal"] is None:
            state["signal"] = name
            on_stop(name)
        elif state["armed"]:
            state["armed"] = False
            raise _ForcedStop(name)

    # a signal ignored by whoever started us (SIGINT in a script's background job) stays ignored
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield state
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_loop(loop: ClosedLoop, source, renderer: PanelRenderer, out: Path, display: bool | str | LiveViews = False,
             max_frames: int | None = None, queue_size: int = 2, realtime: bool = False,
             write_video: bool = True, stages: dict | None = None) -> dict:
    """Run until the source ends, ``max_frames``, q/Esc in the window, or SIGINT/SIGTERM; write
    frames.jsonl, panels.mp4 and summary.json (see the module docstring) and return the summary.

    ``display``: a ``loop.display`` value (auto, true, false, window, web) or the views ``open_views``
    started (psim-loop starts them before the models load); ``stages``: the stage names for the live
    view and summary.json (default: the classes' names).

    A source that fails after some frames ends the run like the end of the source (the summary and the
    terminal say why); a stage that raises ends it too, after the outputs of the frames done are written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    grabber = FrameGrabber(source, queue_size=queue_size, realtime=realtime)
    files = RunOutputs(out, write_video, getattr(source, "fps", None) or 10.0)
    try:
        views = open_views(display, source=source)
    except BaseException:
        files.discard()
        raise
    stages = {**_stage_names(loop, renderer, source), **(stages or {})}
    views.running(stages)
    acc = RunningSummary()

    def on_stop(name):
        log.warning("%s: finishing the current frame and writing the outputs (%s again stops at once)", name, name)
        grabber.request_stop()

    start, finishing = time.perf_counter(), False
    try:
        with graceful_signals(on_stop) as sig:
            stopped = _process(loop, grabber, renderer, files, acc, sig, views, max_frames, write_video, source)
            views.end_capture()  # a source that waits on a view (the page's camera) stops waiting
            grabber.stop()
            finishing = True
            summary = _finish(acc, files, grabber, stopped, time.perf_counter() - start, realtime, stages)
            views.close(stopped, summary)
            return summary
    except BaseException as err:
        views.end_capture()
        grabber.stop()
        if acc.frames and not finishing:  # keep what was done, then report the error
            _finish(acc, files, grabber, f"error: {type(err).__name__}: {err}", time.perf_counter() - start, realtime,
                    stages)
            log.warning("the loop failed after %d frames; their outputs are in %s", acc.frames, out)
        else:
            files.discard()
        views.close(f"failed: {type(err).__name__}: {err}")
        raise
    finally:
        views.close()


def _process(loop, grabber, renderer, files, acc, sig, views, max_frames, write_video, source) -> str:
    """The frame loop; returns why it stopped."""
    grabber.start()
    frames = iter(grabber)
    sig = sig if sig is not None else {"signal": None, "armed": False}
    with tqdm(desc="loop", unit="frame", total=max_frames, leave=False, disable=None) as bar:
        while True:
            try:
                sig["armed"] = True
                try:
                    index, captured_at, frame = next(frames)
                except StopIteration:
                    return sig["signal"] or "source ended"
                except Exception as err:
                    if acc.frames == 0:
                        raise SourceError(f"{_describe_source(source)}: {err}") from err
                    log.warning("%s failed after %d frames: %s; finishing the outputs", _describe_source(source),
                                acc.frames, err)
                    return f"source failed after {acc.frames} frames: {err}"
                check_frame(frame, f"frame {index} of {_describe_source(source)}")
                res = loop.step(frame)
            except _ForcedStop as err:
                return f"{err} (a second signal: the frame in progress was dropped)"
            finally:
                sig["armed"] = False
            queue_ms = 1000 * (time.perf_counter() - captured_at) - sum(res["latency"].values())
            rec = {"frame": index, "queue_ms": queue_ms, "latency": res["latency"], "scores": res["scores"]}
            panel = None
            if write_video or views.wants_panels:
                panel = renderer.compose(frame, loop.norm(res["signal"][None])[0], res["decoded"], res["percept"],
                                         res["scores"])
            files.write(rec, panel if write_video else None)
            acc.add(rec, constant_frame=int(frame.min()) == int(frame.max()))
            bar.update()
            stop = views.show(panel, rec, {"dropped": grabber.dropped, "captured": grabber.captured})
            if stop:
                return stop
            if sig["signal"]:
                return sig["signal"]
            if max_frames is not None and acc.frames >= max_frames:
                return "max_frames"


def _describe_source(source) -> str:
    for attr, key in (("path", "source.path"), ("folder", "source.folder"), ("index", "source.index")):
        if hasattr(source, attr):
            return f"{key}={getattr(source, attr)}"
    return f"source {type(source).__name__}"


def _stage_names(loop: ClosedLoop, renderer: PanelRenderer, source) -> dict:
    """The stages' class names (psim-loop passes the config options' names instead)."""
    names = {k: type(getattr(loop, k)).__name__ for k in ("encoder", "floor", "decoder")}
    names["phosphene"] = renderer.names.get("phosphene") or getattr(loop.phosphene, "__name__", None) or \
        type(loop.phosphene).__name__
    names["decoder"] = renderer.names.get("decoder") or names["decoder"]
    return {**names, "source": type(source).__name__}


def _finish(acc: RunningSummary, files: RunOutputs, grabber: FrameGrabber, stopped: str, wall_s: float,
            realtime: bool, stages: dict | None = None) -> dict:
    """Write the outputs of the frames processed so far and say how the run ended and what it dropped."""
    if acc.frames == 0:
        files.discard()
        if stopped == "source ended":
            raise SourceError(f"{_describe_source(grabber.source)} produced no frames")
        raise PsimError(f"the loop stopped ({stopped}) before its first frame: nothing written, earlier outputs kept")
    summary = acc.result(wall_s, captured_frames=grabber.captured, dropped_frames=grabber.dropped,
                         dropped_reason=grabber.drop_reason, stopped=stopped, realtime=bool(realtime),
                         **({"stages": stages} if stages else {}))
    files.commit(summary)
    if grabber.dropped:
        log.warning("dropped %d of %d frames: %s", grabber.dropped, grabber.captured, grabber.drop_reason)
    for k, why in summary.get("normalised_score_undefined", {}).items():
        log.warning("normalised %s score undefined: %s", k, why)
    return summary
