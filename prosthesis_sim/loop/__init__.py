"""The closed loop: frame -> encoder -> generated signal -> decoder -> phosphene model -> score.

Three paths are scored against the frames, at the percept's resolution:
- path:    frame -> encoder -> decoder -> phosphenes (what the toolkit simulates);
- floor:   the same with the mean-ERP encoder (no image information reaches the decoder);
- ceiling: frame (grey) straight to the implant (the best any brain-encoding path can reach).
The loop's thread runs only what a device would: encode, decode, phosphene (``loop`` latency, ``loop_fps``).
The evaluation (floor and ceiling paths, scores, panels, frames.jsonl, panels.mp4) runs on its own
thread and never holds the loop up: it evaluates the newest frame each time it is free and counts the
frames it passes over (``evaluator.py``; ``evaluate="every"`` evaluates every frame, the loop waiting).
A floor whose signal does not depend on the frame (``image_independent``, the mean ERP) is generated
and decoded once, when the loop is built; so is its percept when the phosphene model is stateless.
The normalised loop score is (path - floor) / (ceiling - floor), computed from the mean scores.

The signal the decoder reads is a setting (``signal``): ``mean``, the encoder's expected response (what
a test average estimates, noise-free), or ``trials``, the average of ``repetitions`` single trials the
encoder samples for the frame (1: a single trial), what a brain sends. Trials are drawn in one batched
call (one network pass per step for all repetitions) with a seed that changes with every frame, so the
same frame twice gives two different trials; the decoder and phosphene model run once, on the average.
The floor stays the mean ERP (it has no trials): the percept it gives is the same either way.

A run never loses its outputs and never destroys an earlier run's: frames.jsonl and panels.mp4 are
streamed to hidden temporary names in ``out`` and moved into place, with summary.json written last,
once the run has processed at least one frame, however it ends (source ended, ``max_frames``,
SIGINT/SIGTERM, a source failing mid-run, a stage or the evaluation raising). The evaluation thread
finishes the frames handed to it before the outputs are written, so summary.json, frames.jsonl (a row
per frame) and panels.mp4 (a panel per evaluated frame) always agree. A run that processes no frame
leaves the folder as it was. The summary is accumulated frame by frame in fixed memory.
What a run shows while it runs (``loop.display``: a window, a web page) lives in ``live/``.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.dataset import Normalizer
from ..errors import PsimError, SourceError
from ..live import LiveViews, open_views, resolve_display  # noqa: F401 (resolve_display: for callers)
from ..live.window import has_display  # noqa: F401
from ..protocols import can_sample_trials, has_temporal_state, is_image_independent
from ..render import PanelRenderer
from ..scores import image_scores, to_grey
from ..sources import FrameGrabber, check_frame
from .evaluator import BACKLOG, MODES, Evaluator, Item  # noqa: F401 (for callers)
from .outputs import LOOP_STAGES, SCORES, STAGES, Quantiles, RunningSummary, RunOutputs  # noqa: F401

log = logging.getLogger(__name__)

ANY_IMAGE = np.zeros((8, 8, 3), np.uint8)  # what an image-independent floor is generated from


class ClosedLoop:
    """All models are given ready (fitted, phosphene model built). ``run`` is the loop itself (one frame
    through encode, decode, phosphene), ``evaluate`` scores its percept, ``step`` does both."""

    def __init__(self, encoder, floor, decoder, phosphene, norm: Normalizer, seed: int = 0, signal: str = "mean",
                 repetitions: int = 1):
        self.encoder, self.floor, self.decoder, self.phosphene = encoder, floor, decoder, phosphene
        self.norm, self.seed = norm, seed
        check_signal(encoder, signal, repetitions)
        self.signal, self.repetitions = signal, int(repetitions)
        self._frames = 0  # frames through run(): each draws its trials with its own seed
        # A phosphene model with temporal state sees three streams (path, floor, ceiling): each
        # gets its own state, sharing the built model (``fork()``); a stateless one is shared.
        self.temporal = has_temporal_state(phosphene)
        fork = getattr(phosphene, "fork", None)
        self._streams = {name: fork() if fork else phosphene for name in ("floor", "ceiling")}
        # Frame-independent work once, here: a floor signal that is the same for every frame is generated
        # and decoded once; with a stateless phosphene model its percept is the same too.
        self._floor_decoded = self._floor_percept = None
        if is_image_independent(floor):
            self._floor_decoded = self._decode(floor.generate([ANY_IMAGE], seed=seed)[0])
            if not self.temporal:
                self._floor_percept = self._streams["floor"](self._floor_decoded)

    def _decode(self, signal: np.ndarray) -> np.ndarray:
        """One signal -> the decoder's grey image, of whatever size the decoder makes (checked, not assumed)."""
        decoded = np.asarray(self.decoder.decode(signal[None]))
        if decoded.ndim != 3 or len(decoded) != 1:
            raise ValueError(f"{type(self.decoder).__name__}.decode must return grey images (n, height, width), "
                             f"got shape {decoded.shape} for one signal")
        if not np.isfinite(decoded).all():
            raise ValueError(f"{type(self.decoder).__name__}.decode returned NaN or Inf")
        return decoded[0]

    def describe_signal(self, short: bool = False) -> str:
        """What the decoder reads, in words (live page, summary); ``short`` for the signal panel's title."""
        if self.signal == "mean":
            return "expected" if short else "expected response"
        if self.repetitions == 1:
            return "1 trial" if short else "single trial"
        return f"mean of {self.repetitions}" + ("" if short else " trials")

    def encode(self, frame: np.ndarray) -> np.ndarray:
        """The frame's signal (n_channels, n_times): the expected response, or the average of
        ``repetitions`` trials sampled in one batched call with a seed of this frame's own."""
        if self.signal == "mean":
            return self.encoder.generate([frame], seed=self.seed)[0]
        seed = int(np.random.SeedSequence([self.seed, self._frames]).generate_state(1)[0] >> 1)
        self._frames += 1
        trials = np.asarray(self.encoder.sample_trials([frame], self.repetitions, seed=seed))
        return trials[0].mean(axis=0)

    def run(self, frame: np.ndarray) -> dict:
        """One frame through the loop (what a device runs): signal, decoded, percept, latency per stage (ms)."""
        t = [time.perf_counter()]
        signal = self.encode(frame)
        t.append(time.perf_counter())
        decoded = self._decode(signal)
        t.append(time.perf_counter())
        percept = self.phosphene(decoded)
        t.append(time.perf_counter())
        latency = {f"{s}_ms": 1000 * (b - a) for s, a, b in zip(LOOP_STAGES, t[:-1], t[1:])}
        return {"signal": signal, "decoded": decoded, "percept": percept, "latency": latency}

    def _floor_image(self, frame: np.ndarray) -> np.ndarray:
        if self._floor_decoded is not None:
            return self._floor_decoded
        return self._decode(self.floor.generate([frame], seed=self.seed)[0])

    def evaluate(self, frame: np.ndarray, percept: np.ndarray) -> tuple[dict, float]:
        """The floor's and the ceiling's percepts for ``frame`` and the three paths' scores: (scores, ms)."""
        start = time.perf_counter()
        floor = self._floor_percept
        if floor is None:
            floor = self._streams["floor"](self._floor_image(frame))
        ceiling = self._streams["ceiling"](to_grey(frame))
        scores = {}
        for name, p in (("path", percept), ("floor", floor), ("ceiling", ceiling)):
            scores.update({f"{name}_{k}": v for k, v in image_scores(frame, p).items()})
        return scores, 1000 * (time.perf_counter() - start)

    def advance(self, frame: np.ndarray) -> None:
        """A frame that is not evaluated: a temporal model's floor and ceiling streams still see it, so that
        every stream sees every frame in order (nothing to do for a stateless model)."""
        if self.temporal:
            self._streams["floor"](self._floor_image(frame))
            self._streams["ceiling"](to_grey(frame))

    def step(self, frame: np.ndarray) -> dict:
        """``run`` then ``evaluate``, on this thread: signal, decoded, percept, scores, latency per stage."""
        res = self.run(frame)
        res["scores"], res["latency"]["evaluate_ms"] = self.evaluate(frame, res["percept"])
        return res


SIGNALS = ("mean", "trials")


def check_signal(encoder, signal: str, repetitions: int, name: str | None = None) -> None:
    """``loop.signal`` / ``loop.repetitions`` against the encoder: trials need one that samples them.
    ``encoder`` None with ``name``: a class known not to sample trials, checked before it is fitted."""
    if signal not in SIGNALS:
        raise ValueError(f"loop.signal={signal!r}: expected one of {', '.join(SIGNALS)}")
    if not (isinstance(repetitions, (int, np.integer)) and not isinstance(repetitions, bool) and repetitions >= 1):
        raise ValueError(f"loop.repetitions={repetitions!r}: expected a whole number >= 1 (1: a single trial)")
    if signal == "trials" and (encoder is None or not can_sample_trials(encoder)):
        raise ValueError(f"loop.signal=trials: encoder {name or type(encoder).__name__} does not sample single trials; use "
                         "a diffusion encoder (encoder=dit_trials, fitted with dataset.average_train=false; or "
                         "dit_residual, dit, dit_paper, unet_paper) or loop.signal=mean")


class _ForcedStop(Exception):
    """A second SIGINT/SIGTERM while a frame is in progress: stop now instead of after the frame."""


@contextmanager
def graceful_signals(on_stop):
    """While active, the first SIGINT/SIGTERM calls ``on_stop(name)``, so the loop ends after the current
    frame; a second one raises ``_ForcedStop`` when ``state["armed"]`` (set around the long calls: waiting
    for a frame, a loop step, waiting for the evaluation). Off the main thread signals are left alone and
    the state is None."""
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
             write_video: bool = True, stages: dict | None = None, evaluate: str = "auto") -> dict:
    """Run until the source ends, ``max_frames``, q/Esc in the window, or SIGINT/SIGTERM; write
    frames.jsonl, panels.mp4 and summary.json (see the module docstring) and return the summary.

    ``display``: a ``loop.display`` value (auto, true, false, window, web) or the views ``open_views``
    started (psim-loop starts them before the models load); ``stages``: the stage names for the live
    view and summary.json (default: the classes' names); ``evaluate``: ``latest`` (the loop never waits
    for the evaluation), ``every`` (every frame evaluated; see ``evaluator.py``) or ``auto``: ``latest``
    where frames are dropped anyway (a camera, the browser, ``realtime``), ``every`` for a file processed
    frame by frame, so that a clip's mean scores do not depend on the machine's speed.

    A source that fails after some frames ends the run like the end of the source (the summary and the
    terminal say why); a stage or the evaluation that raises ends it too, after the outputs of the frames
    done are written, and its error is raised here.
    """
    if evaluate not in (*MODES, "auto"):
        raise ValueError(f"evaluate={evaluate!r}: expected one of {', '.join(MODES)} or auto")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    grabber = FrameGrabber(source, queue_size=queue_size, realtime=realtime)
    if evaluate == "auto":
        evaluate = "latest" if grabber.drop_oldest else "every"
    files = RunOutputs(out, write_video, getattr(source, "fps", None) or 10.0)
    try:
        views = open_views(display, source=source)
    except BaseException:
        files.discard()
        raise
    stages = {**_stage_names(loop, renderer, source), **(stages or {})}
    stages["signal"] = loop.describe_signal()
    views.running(stages)
    acc = RunningSummary()
    evaluator = Evaluator(loop, renderer, files, acc, mode=evaluate, video=write_video,
                          panels_for_views=lambda: views.wants_panels).start()

    def on_stop(name):
        log.warning("%s: finishing the current frame and writing the outputs (%s again stops at once)", name, name)
        grabber.request_stop()

    start, finishing = time.perf_counter(), False
    try:
        with graceful_signals(on_stop) as sig:
            sig = sig if sig is not None else {"signal": None, "armed": False}
            stopped = _process(loop, grabber, evaluator, sig, views, max_frames, source)
            views.end_capture()  # a source that waits on a view (the page's camera) stops waiting
            grabber.stop()
            stopped = _drain(evaluator, sig, stopped)
            _show(evaluator, views, grabber)
            finishing = True
            summary = _finish(acc, files, grabber, stopped, time.perf_counter() - start, realtime, stages, evaluate,
                              loop)
            views.close(stopped, summary)
            return summary
    except BaseException as err:
        views.end_capture()
        grabber.stop()
        evaluator.close(hurry=True)  # the frames handed over get their rows; the newest its evaluation
        if evaluator.error is not None and evaluator.error is not err:
            log.error("the evaluation failed too: %s: %s", type(evaluator.error).__name__, evaluator.error)
        if acc.frames and not finishing:  # keep what was done, then report the error
            _finish(acc, files, grabber, f"error: {type(err).__name__}: {err}", time.perf_counter() - start, realtime,
                    stages, evaluate, loop)
            log.warning("the loop failed after %d frames; their outputs are in %s", acc.frames, out)
        else:
            files.discard()
        views.close(f"failed: {type(err).__name__}: {err}")
        raise
    finally:
        views.close()


def _process(loop, grabber, evaluator, sig, views, max_frames, source) -> str:
    """The frame loop: each frame through the loop's stages, then handed to the evaluation; returns why
    it stopped."""
    grabber.start()
    frames = iter(grabber)
    done = 0
    with tqdm(desc="loop", unit="frame", total=max_frames, leave=False, disable=None) as bar:
        while True:
            try:
                sig["armed"] = True
                try:
                    index, captured_at, frame = next(frames)
                except StopIteration:
                    return sig["signal"] or "source ended"
                except Exception as err:
                    if done == 0:
                        raise SourceError(f"{_describe_source(source)}: {err}") from err
                    log.warning("%s failed after %d frames: %s; finishing the outputs", _describe_source(source),
                                done, err)
                    return f"source failed after {done} frames: {err}"
                check_frame(frame, f"frame {index} of {_describe_source(source)}")
                res = loop.run(frame)
                queue_ms = 1000 * (time.perf_counter() - captured_at) - sum(res["latency"].values())
                evaluator.submit(Item(index, queue_ms, res["latency"], frame, res["signal"], res["decoded"],
                                      res["percept"]))  # waits only in evaluate=every (or temporal state)
            except _ForcedStop as err:
                return f"{err} (a second signal: the frame in progress was dropped)"
            finally:
                sig["armed"] = False
            done += 1
            bar.update()
            stop = _show(evaluator, views, grabber)
            if stop:
                return stop
            if sig["signal"]:
                return sig["signal"]
            if max_frames is not None and done >= max_frames:
                return "max_frames"


def _drain(evaluator: Evaluator, sig: dict, stopped: str) -> str:
    """Wait for the evaluation of the frames handed over (a signal now hurries it: only the newest waiting
    frame is evaluated); raise its error; return why the run stopped."""
    try:
        sig["armed"] = True
        evaluator.close()
    except _ForcedStop as err:
        log.warning("%s: evaluating only the newest of the frames waiting", err)
        evaluator.close(hurry=True)
        stopped = f"{stopped} ({err} while evaluating: only the newest waiting frame was evaluated)"
    finally:
        sig["armed"] = False
    evaluator.check()
    return stopped


def _show(evaluator: Evaluator, views: LiveViews, grabber: FrameGrabber) -> str | None:
    """Show the frames the evaluation has done on the live views (on this thread); raise its error;
    return why the run should stop (a key in the window), else None."""
    evaluator.check()
    stop = None
    for panel, rec in evaluator.take_shown():
        counts = _drops(grabber)
        stop = views.show(panel, rec, {"dropped": counts["dropped_frames"], "captured": counts["captured_frames"]}) or stop
    return stop


def _drops(grabber: FrameGrabber) -> dict:
    """The frames the source delivered and those dropped, for summary.json and the live views: the capture
    queue's, plus those a source dropped before it (``lost``: source=browser's inbox, when its capture
    thread fell behind the page), which count as delivered and dropped."""
    lost = getattr(grabber.source, "lost", None)
    out = {"captured_frames": grabber.captured, "dropped_frames": grabber.dropped, "dropped_reason": grabber.drop_reason}
    if lost is None:
        return out
    lost = int(lost)
    out.update(captured_frames=grabber.captured + lost, dropped_frames=grabber.dropped + lost,
               dropped_before_capture=lost)
    if lost:
        before = f"{lost} before the capture queue (the source's own inbox: decoding fell behind the sender)"
        out["dropped_reason"] = before if not grabber.dropped else f"{grabber.drop_reason}; {before}"
    return out


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
            realtime: bool, stages: dict | None = None, evaluate: str = "latest", loop_signal=None) -> dict:
    """Write the outputs of the frames processed so far and say how the run ended and what it dropped."""
    if acc.frames == 0:
        files.discard()
        if stopped == "source ended":
            raise SourceError(f"{_describe_source(grabber.source)} produced no frames")
        raise PsimError(f"the loop stopped ({stopped}) before its first frame: nothing written, earlier outputs kept")
    drops = _drops(grabber)
    signal = {"signal": getattr(loop_signal, "signal", "mean"), "repetitions": getattr(loop_signal, "repetitions", 1)}
    summary = acc.result(wall_s, evaluation=evaluate, **drops, stopped=stopped, realtime=bool(realtime),
                         **signal, **({"stages": stages} if stages else {}))
    files.commit(summary)
    if drops["dropped_frames"]:
        log.warning("dropped %d of %d frames: %s", drops["dropped_frames"], drops["captured_frames"],
                    drops["dropped_reason"])
    if summary["skipped_evaluations"]:
        log.info("evaluated %d of %d frames (the loop does not wait for the evaluation: the others have their "
                 "loop latency in frames.jsonl, no scores)", summary["evaluated_frames"], summary["frames"])
    for k, why in summary.get("normalised_score_undefined", {}).items():
        log.warning("normalised %s score undefined: %s", k, why)
    return summary
