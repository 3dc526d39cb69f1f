"""The loop never loses its outputs: signals, sources that end or fail, failed starts, dropped frames, memory;
and its evaluation runs off the loop's thread: frame-independent work once, a slow evaluation never holds
the loop up, an error in it surfaces, and the outputs agree however the run ends.

Most tests drive ``run_loop`` with cheap stand-in stages (no model is fitted); the command-line tests
send SIGINT and SIGTERM to a real ``psim-loop`` and read its video back.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from prosthesis_sim.errors import PsimError, SourceError
from prosthesis_sim.loop import BACKLOG, ClosedLoop, Quantiles, RunningSummary, run_loop
from prosthesis_sim.render import PanelRenderer
from prosthesis_sim.scores import to_grey

BIN = Path(sys.executable).parent


class Encoder:
    """A signal that follows the frame's brightness: cheap, and enough to draw the panels."""

    def __init__(self, n_channels, n_times):
        self.shape = (n_channels, n_times)

    def generate(self, images, seed=0):
        return np.stack([np.full(self.shape, img.mean() / 255, np.float32) + np.linspace(0, 1, self.shape[1])
                         for img in images])


class Decoder:
    def __init__(self, delay=0.0):
        self.delay = delay

    def decode(self, signals):
        time.sleep(self.delay)
        return np.clip(np.broadcast_to(signals.mean(axis=(1, 2))[:, None, None], (len(signals), 16, 16))
                       + np.linspace(0, 0.5, 16)[None, None], 0, 1)


def phosphene(img):
    return cv2.resize(np.asarray(img, np.float32), (24, 24), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def renderer(small_data):
    return PanelRenderer(small_data.info, small_data.times, size=160)


def stand_in_loop(small_data, delay=0.0):
    shape = small_data.signal_shape
    return ClosedLoop(Encoder(*shape), Encoder(*shape), Decoder(delay), phosphene, small_data.normalizer)


class Frames:
    """``n`` moving frames at ``fps``; ``fail_at`` raises there (a camera unplugged); ``live`` as a camera."""

    def __init__(self, n, fps=25.0, fail_at=None, live=False, size=48):
        self.n, self.fps, self.fail_at, self.live, self.size = n, fps, fail_at, live, size

    def __iter__(self):
        rng = np.random.default_rng(0)
        for i in range(self.n):
            if i == self.fail_at:
                raise OSError("camera unplugged")
            yield rng.integers(0, 255, (self.size, self.size, 3), dtype=np.uint8)


def video_frames(path) -> int:
    """Frames OpenCV decodes from ``path`` (a file without its mp4 index decodes none)."""
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def outputs(run) -> tuple[dict, list[dict]]:
    summary = json.loads((run / "summary.json").read_text())
    return summary, [json.loads(line) for line in (run / "frames.jsonl").read_text().splitlines()]


def check_agree(run, summary, video=True) -> list[dict]:
    """summary.json, frames.jsonl and panels.mp4 of a finished run agree: a row per frame in order, scores
    in exactly the evaluated rows, a panel per evaluated frame, the mean scores those rows' means."""
    saved, lines = outputs(run)
    assert saved == summary and len(lines) == summary["frames"] >= 1
    assert [r["frame"] for r in lines] == sorted(r["frame"] for r in lines)
    evaluated = [r for r in lines if r["evaluated"]]
    assert all(("scores" in r) == r["evaluated"] for r in lines) and "NaN" not in (run / "frames.jsonl").read_text()
    assert len(evaluated) == summary["evaluated_frames"] >= 1
    assert summary["skipped_evaluations"] == summary["frames"] - summary["evaluated_frames"]
    assert summary["mean_scores"]["path"]["pearson"] == pytest.approx(
        np.mean([r["scores"]["path_pearson"] for r in evaluated]))
    if video:
        assert video_frames(run / "panels.mp4") == summary["evaluated_frames"]
    assert not list(run.glob(".*partial*"))
    return lines


def test_file_source_processes_every_frame_by_default(small_data, renderer, tmp_path):
    """A 60-frame file at 200 fps through a slow loop: every frame, none dropped (pacing is opt-in)."""
    summary = run_loop(stand_in_loop(small_data, delay=0.01), Frames(60, fps=200.0), renderer, tmp_path)
    assert summary["frames"] == 60 and summary["dropped_frames"] == 0 and summary["stopped"] == "source ended"
    # loop.evaluate=auto: a file processed frame by frame is evaluated frame by frame too
    assert summary["evaluation"] == "every" and summary["evaluated_frames"] == 60
    assert [r["frame"] for r in check_agree(tmp_path, summary)] == list(range(60))
    latest = run_loop(stand_in_loop(small_data), Frames(20), renderer, tmp_path / "latest", evaluate="latest")
    assert latest["evaluation"] == "latest" and latest["frames"] == 20 and latest["evaluated_frames"] >= 1
    check_agree(tmp_path / "latest", latest)


def test_realtime_pacing_says_what_it_dropped(small_data, renderer, tmp_path, caplog):
    summary = run_loop(stand_in_loop(small_data, delay=0.02), Frames(60, fps=200.0), renderer, tmp_path,
                       realtime=True, write_video=False)
    assert summary["dropped_frames"] > 0 and summary["frames"] + summary["dropped_frames"] <= 60
    assert "loop.realtime=true" in summary["dropped_reason"]
    assert f"dropped {summary['dropped_frames']} of 60 frames" in caplog.text


def test_a_live_source_drops_instead_of_queueing(small_data, renderer, tmp_path):
    summary = run_loop(stand_in_loop(small_data, delay=0.02), Frames(40, fps=None, live=True), renderer, tmp_path,
                       write_video=False)
    assert summary["dropped_frames"] > 0 and "slower than the camera" in summary["dropped_reason"]


def test_source_failing_mid_run_finishes_the_outputs(small_data, renderer, tmp_path, caplog):
    summary = run_loop(stand_in_loop(small_data), Frames(10, fail_at=4), renderer, tmp_path)
    assert summary["frames"] == 4 and "source failed after 4 frames: camera unplugged" in summary["stopped"]
    assert "camera unplugged" in caplog.text
    assert [r["frame"] for r in check_agree(tmp_path, summary)] == [0, 1, 2, 3]


def test_failed_start_leaves_the_earlier_run_intact(small_data, renderer, tmp_path):
    run_loop(stand_in_loop(small_data), Frames(5), renderer, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(SourceError, match="camera unplugged"):
        run_loop(stand_in_loop(small_data), Frames(5, fail_at=0), renderer, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing new, nothing truncated


def flaky(fail_after: int, what: str, delay: float = 0.0):
    """The stand-in phosphene model, raising ``what`` from its (fail_after + 1)-th call."""
    calls = {"n": 0}

    def model(img):
        calls["n"] += 1
        time.sleep(delay)
        if calls["n"] > fail_after:
            raise ValueError(what)
        return phosphene(img)
    return model


def test_stage_failing_mid_run_keeps_the_frames_done(small_data, renderer, tmp_path):
    loop = stand_in_loop(small_data)
    loop.phosphene = flaky(3, "phosphene model broke")  # the loop's own stage: frame 3 fails
    with pytest.raises(ValueError, match="broke"):
        run_loop(loop, Frames(10), renderer, tmp_path)
    summary = outputs(tmp_path)[0]
    assert summary["frames"] == 3 and "phosphene model broke" in summary["stopped"]
    assert [r["frame"] for r in check_agree(tmp_path, summary)] == [0, 1, 2]


@pytest.mark.parametrize("mode", ["every", "latest"])
def test_an_evaluation_error_surfaces_with_the_frames_done(mode, small_data, renderer, tmp_path):
    """The evaluation thread fails (the ceiling's phosphene stream at its third frame): the same error is
    raised by run_loop, and the frames evaluated before it are written, consistent."""
    loop = stand_in_loop(small_data, delay=0.01)  # a few evaluations happen before the third fails
    loop._streams["ceiling"] = flaky(2, "ceiling stream broke", delay=0.05)
    with pytest.raises(ValueError, match="^ceiling stream broke$"):
        run_loop(loop, Frames(200), renderer, tmp_path, evaluate=mode)
    summary = outputs(tmp_path)[0]
    assert "error: ValueError: ceiling stream broke" == summary["stopped"] and summary["evaluated_frames"] == 2
    assert summary["frames"] < 200  # it stopped the run
    lines = check_agree(tmp_path, summary)
    if mode == "every":
        assert [r["frame"] for r in lines] == [0, 1]


def test_an_evaluation_failing_at_once_writes_nothing(small_data, renderer, tmp_path):
    """The first frame's evaluation fails: its error, with its type, and no outputs (as a failed start)."""
    def broken(img):
        raise PsimError("ceiling broke")

    loop = stand_in_loop(small_data)
    loop._streams["ceiling"] = broken
    with pytest.raises(PsimError, match="^ceiling broke$"):
        run_loop(loop, Frames(5), renderer, tmp_path, evaluate="every")
    assert list(tmp_path.iterdir()) == []


class Counting:
    """Counts the calls of a stand-in stage (``image_independent`` as the mean-ERP floor declares it)."""

    def __init__(self, stage, image_independent=False):
        self.stage, self.calls = stage, 0
        if image_independent:
            self.image_independent = True

    def generate(self, images, seed=0):
        self.calls += 1
        return self.stage.generate(images, seed=seed)

    def __call__(self, img):
        self.calls += 1
        return self.stage(img)


@pytest.mark.parametrize("independent", [True, False])
def test_a_frame_independent_floor_is_made_once(independent, small_data, renderer, tmp_path):
    """The mean-ERP floor's signal is the same for every frame: generated and decoded once, at build, and,
    with a stateless phosphene model, its percept too; a floor that depends on the frame is made per frame."""
    shape = small_data.signal_shape
    floor, model = Counting(Encoder(*shape), image_independent=independent), Counting(phosphene)
    loop = ClosedLoop(Encoder(*shape), floor, Decoder(), model, small_data.normalizer)
    built = (floor.calls, model.calls)
    summary = run_loop(loop, Frames(12), renderer, tmp_path, evaluate="every", write_video=False)
    assert summary["frames"] == summary["evaluated_frames"] == 12
    if independent:
        assert built == (1, 1) and floor.calls == 1
        assert model.calls == 1 + 12 + 12  # the floor once; path and ceiling per frame
    else:
        assert built == (0, 0) and floor.calls == 12 and model.calls == 3 * 12


class Temporal:
    """A phosphene model with temporal state: ``fork()`` gives each stream its own; it records what it saw."""

    temporal = "on"

    def __init__(self, name="path", delay=0.0):
        self.name, self.delay, self.seen = name, delay, []

    def fork(self):
        twin = Temporal(f"fork{len(FORKS)}", self.delay)
        FORKS.append(twin)
        return twin

    def __call__(self, img):
        time.sleep(self.delay)
        self.seen.append(float(np.mean(img)))
        return phosphene(img)


FORKS: list = []


def test_a_temporal_model_sees_every_frame_in_every_stream(small_data, renderer, tmp_path):
    """Frames whose evaluation is skipped still step a temporal model's floor and ceiling streams, in order."""
    FORKS.clear()
    shape = small_data.signal_shape
    floor = Counting(Encoder(*shape), image_independent=True)
    model = Temporal(delay=0.002)
    loop = ClosedLoop(Encoder(*shape), floor, Decoder(), model, small_data.normalizer)
    loop._streams["ceiling"].delay = 0.03  # a slow evaluation: frames are passed over
    summary = run_loop(loop, Frames(40), renderer, tmp_path, write_video=False)
    floor_stream, ceiling_stream = FORKS
    assert summary["frames"] == 40 and floor.calls == 1  # the floor signal still once
    assert len(model.seen) == len(floor_stream.seen) == len(ceiling_stream.seen) == 40
    frames = list(Frames(40))
    assert ceiling_stream.seen == [float(np.mean(to_grey(f))) for f in frames]  # every frame, in order
    check_agree(tmp_path, summary, video=False)


def test_the_loop_does_not_wait_for_a_slow_evaluation(small_data, renderer, tmp_path):
    """An evaluation 100 times slower than the loop: the loop goes on (every frame gets its row and loop
    latency), the frames passed over are counted, the newest frame is always evaluated at the end."""
    loop = stand_in_loop(small_data)
    loop._streams["ceiling"] = flaky(10**9, "", delay=0.15)
    summary = run_loop(loop, Frames(60), renderer, tmp_path, evaluate="latest")
    lat = summary["median_latency_ms"]
    assert summary["frames"] == 60 and 1 <= summary["evaluated_frames"] <= 30 and summary["skipped_evaluations"] >= 30
    assert lat["loop"] * 10 < lat["evaluate"] and summary["loop_fps"] > 10 * summary["evaluated_fps"]
    lines = check_agree(tmp_path, summary)
    assert lines[-1]["evaluated"] and all("encode_ms" in r["latency"] for r in lines)
    assert all(set(r["latency"]) == {"encode_ms", "decode_ms", "phosphene_ms"} for r in lines if not r["evaluated"])
    # evaluate="every": every frame evaluated, the loop held back to at most BACKLOG frames ahead
    loop._streams["ceiling"] = flaky(10**9, "", delay=0.02)
    summary = run_loop(loop, Frames(30), renderer, tmp_path / "every", evaluate="every", write_video=False)
    assert summary["evaluated_frames"] == 30 and BACKLOG >= 1
    check_agree(tmp_path / "every", summary, video=False)


def test_every_frame_evaluation_matches_the_synchronous_step(small_data, renderer, tmp_path):
    """The evaluation on its thread scores exactly what ``step`` (loop and evaluation on one thread) does."""
    summary = run_loop(stand_in_loop(small_data), Frames(10), renderer, tmp_path, evaluate="every", write_video=False)
    loop = stand_in_loop(small_data)
    steps = [loop.step(f)["scores"] for f in Frames(10)]
    lines = check_agree(tmp_path, summary, video=False)
    assert [r["scores"] for r in lines] == steps


def test_a_run_without_video_removes_an_earlier_video(small_data, renderer, tmp_path):
    run_loop(stand_in_loop(small_data), Frames(3), renderer, tmp_path)
    run_loop(stand_in_loop(small_data), Frames(5), renderer, tmp_path, write_video=False)
    assert not (tmp_path / "panels.mp4").exists() and outputs(tmp_path)[0]["frames"] == 5


class Signaller:
    """Sends signals to this process on events, never on a wall-clock timer: a helper thread waits for
    ``events[i]`` (set by a stage, on a frame or an evaluation in progress), then sends ``sigs[i]``.
    ``sent[i]`` is set once it is sent, so the stage that asked can wait for it before it returns: the
    signal then arrives while ``run_loop``'s handlers are in place, however slow the machine. Used as a
    context manager: leaving it (in a ``finally``) cancels every signal not sent yet, so none outlives its
    test (a late SIGINT or SIGTERM would abort or kill the whole pytest run)."""

    WAIT_S = 60  # how long a stage waits for its signal to be sent before the test fails (never reached)

    def __init__(self, *sigs):
        self.sigs = sigs
        self.events = [threading.Event() for _ in sigs]
        self.sent = [threading.Event() for _ in sigs]
        self._cancelled, self._lock = threading.Event(), threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        for sig, event, sent in zip(self.sigs, self.events, self.sent):
            while not event.wait(0.05):
                if self._cancelled.is_set():
                    return
            with self._lock:  # cancel() cannot slip in between the check and the kill
                if self._cancelled.is_set():
                    return
                os.kill(os.getpid(), sig)
            sent.set()

    def fire(self, i):
        """From a stage: send signal ``i`` now and wait until it is sent (the stage's work is in progress)."""
        self.events[i].set()
        assert self.sent[i].wait(self.WAIT_S), f"signal {i} was not sent"
        time.sleep(0.05)  # the main thread's handler runs here (a signal interrupts the sleep)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        with self._lock:
            self._cancelled.set()
        self._thread.join()


class SignallingDecoder(Decoder):
    """The stand-in decoder that, on the loop's frame ``at`` (1-based, main thread only), fires the
    signaller's signals ``which`` in turn, each once the one before has been handled."""

    def __init__(self, signaller, at, which=(0,), delay=0.0):
        super().__init__(delay)
        self.signaller, self.at, self.which, self.calls = signaller, at, which, 0

    def decode(self, signals):
        if threading.current_thread() is threading.main_thread():
            self.calls += 1
            if self.calls == self.at:
                for i in self.which:
                    self.signaller.fire(i)
        return super().decode(signals)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_the_run_with_complete_outputs(sig, small_data, renderer, tmp_path):
    """The signal arrives while the loop works on its third frame: that frame finishes, then the outputs."""
    loop = stand_in_loop(small_data, delay=0.02)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with Signaller(sig) as signaller:
        loop.decoder = SignallingDecoder(signaller, at=3, delay=0.02)
        summary = run_loop(loop, Frames(100_000), renderer, tmp_path)
    assert signaller.sent[0].is_set()
    assert summary["stopped"] == signal.Signals(sig).name and summary["frames"] == 3
    check_agree(tmp_path, summary)
    assert {s: signal.getsignal(s) for s in before} == before  # handlers restored


def test_a_second_signal_stops_inside_the_frame(small_data, renderer, tmp_path):
    """Two SIGINTs during the second frame: the first asks to stop after it, the second drops it at once."""
    loop = stand_in_loop(small_data)
    with Signaller(signal.SIGINT, signal.SIGINT) as signaller:
        loop.decoder = SignallingDecoder(signaller, at=2, which=(0, 1))
        summary = run_loop(loop, Frames(1000), renderer, tmp_path)
    assert all(s.is_set() for s in signaller.sent)
    assert "second signal" in summary["stopped"] and summary["frames"] == 1  # the frame in progress dropped
    check_agree(tmp_path, summary)


def test_a_signal_while_evaluating_every_frame_keeps_the_outputs_consistent(small_data, renderer, tmp_path):
    """evaluate=every with a slow evaluation: the first signal stops the loop and the frames waiting are
    evaluated; a second one, sent while the evaluation works on a frame after the first, then evaluates only
    the newest of them (or drops the frame in progress, if the loop still waits to hand it over). Either
    way the outputs agree."""
    loop = stand_in_loop(small_data)
    with Signaller(signal.SIGINT, signal.SIGINT) as signaller:
        loop.decoder = SignallingDecoder(signaller, at=BACKLOG + 2)  # the evaluation is BACKLOG frames behind
        slow = flaky(10**9, "", delay=0.4)

        def ceiling(img):  # the evaluation thread: the second signal once the first is handled
            if signaller.sent[0].is_set() and not signaller.events[1].is_set():
                signaller.events[1].set()
                assert signaller.sent[1].wait(Signaller.WAIT_S)
            return slow(img)
        loop._streams["ceiling"] = ceiling
        summary = run_loop(loop, Frames(1000), renderer, tmp_path, evaluate="every")
    assert all(s.is_set() for s in signaller.sent)
    stopped = summary["stopped"]
    assert stopped.startswith("SIGINT") and ("second signal" in stopped or "while evaluating" in stopped), stopped
    lines = check_agree(tmp_path, summary)
    assert lines[-1]["evaluated"] and summary["frames"] <= BACKLOG + 2


def test_constant_frames_give_a_defined_summary(small_data, renderer, tmp_path):
    class Grey:
        fps = None

        def __iter__(self):
            return iter([np.full((32, 32, 3), 100, np.uint8)] * 3)

    summary = run_loop(stand_in_loop(small_data), Grey(), renderer, tmp_path, write_video=False, evaluate="every")
    text = (tmp_path / "summary.json").read_text()
    assert "NaN" not in text and summary["normalised_score"]["pearson"] is None
    assert summary["constant_frames"] == 3 and "uniform" in summary["normalised_score_undefined"]["pearson"]


def test_summary_memory_does_not_grow_with_frames():
    acc = RunningSummary()
    rec = {"scores": {f"{p}_{k}": 0.5 for p in ("path", "floor", "ceiling") for k in ("ssim", "pearson")},
           "latency": {f"{s}_ms": 3.0 for s in ("encode", "decode", "phosphene", "evaluate")}}
    size = lambda: sum(q.counts.nbytes for q in acc.latency.values()) + len(acc.sums)
    acc.add(rec, False)
    first = size()
    for _ in range(5000):
        acc.add(rec, False)
    assert size() == first and acc.result(1.0)["frames"] == 5001
    acc.add({"latency": rec["latency"]})  # a frame whose evaluation was skipped: counted, no scores
    result = acc.result(1.0)
    assert result["frames"] == 5002 and result["evaluated_frames"] == 5001 and result["skipped_evaluations"] == 1


def test_streamed_median_matches_numpy():
    values = np.random.default_rng(1).lognormal(2, 1, 2001)
    q = Quantiles()
    for v in values:
        q.add(v)
    assert q.quantile(0.5) == pytest.approx(np.median(values), rel=3e-3)


# --- psim-loop on the command line ------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("loop-cli-cache")


def start_loop(synth_root, cache, out) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PSIM_DEBUG", None)
    args = [f"dataset.root={synth_root}", f"cache_dir={cache}", "encoder=ridge", "decoder=ridge_pixels",
            "loop.display=false", "source.frames_per_photo=200", "loop.panel_size=160", f"out={out}"]
    return subprocess.Popen([str(BIN / "psim-loop"), *args], cwd=out.parent, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_psim_loop_stops_cleanly_on_a_signal(sig, synth_root, cli_cache, tmp_path):
    """Ctrl-C or SIGTERM (timeout, job schedulers): one line, exit 0, every output complete and playable."""
    out = tmp_path / "run"
    proc = start_loop(synth_root, cli_cache, out)
    partial = out / ".frames.partial.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if partial.is_file() and partial.read_text().count("\n") >= 3:
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
    name = signal.Signals(sig).name
    assert f"{name}: finishing the current frame" in stdout + stderr and f"stopped: {name}" in stdout
    summary, lines = outputs(out)
    assert summary["stopped"] == name and 3 <= summary["frames"] == len(lines) < 1600
    cap = cv2.VideoCapture(str(out / "panels.mp4"))
    ok, panel = cap.read()
    assert ok and panel.shape[1] == 5 * 160
    check_agree(out, summary)


@pytest.mark.slow
def test_psim_loop_rerun_without_camera_keeps_the_earlier_outputs(synth_root, cli_cache, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    common = [f"dataset.root={synth_root}", f"cache_dir={cli_cache}", "encoder=ridge", "decoder=ridge_pixels",
              "loop.display=false", f"out={out}"]
    first = subprocess.run([str(BIN / "psim-loop"), *common, "loop.max_frames=4"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    before = {n: (out / n).read_bytes() for n in ("frames.jsonl", "summary.json", "panels.mp4")}
    again = subprocess.run([str(BIN / "psim-loop"), *common, "source=webcam", "source.index=9"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "source.index=9" in again.stderr and "Traceback" not in again.stderr
    assert {n: (out / n).read_bytes() for n in before} == before
