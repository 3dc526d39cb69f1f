"""The loop never loses its outputs: signals, sources that end or fail, failed starts, dropped frames, memory.

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

from prosthesis_sim.errors import SourceError
from prosthesis_sim.loop import ClosedLoop, Quantiles, RunningSummary, run_loop
from prosthesis_sim.render import PanelRenderer

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


def test_file_source_processes_every_frame_by_default(small_data, renderer, tmp_path):
    """A 60-frame file at 200 fps through a slow loop: every frame, none dropped (pacing is opt-in)."""
    summary = run_loop(stand_in_loop(small_data, delay=0.01), Frames(60, fps=200.0), renderer, tmp_path)
    assert summary["frames"] == 60 and summary["dropped_frames"] == 0 and summary["stopped"] == "source ended"
    assert video_frames(tmp_path / "panels.mp4") == 60
    assert not list(tmp_path.glob(".*partial*"))


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
    saved, lines = outputs(tmp_path)
    assert saved == summary and [r["frame"] for r in lines] == [0, 1, 2, 3]
    assert video_frames(tmp_path / "panels.mp4") == 4


def test_failed_start_leaves_the_earlier_run_intact(small_data, renderer, tmp_path):
    run_loop(stand_in_loop(small_data), Frames(5), renderer, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(SourceError, match="camera unplugged"):
        run_loop(stand_in_loop(small_data), Frames(5, fail_at=0), renderer, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing new, nothing truncated


def test_stage_failing_mid_run_keeps_the_frames_done(small_data, renderer, tmp_path):
    loop = stand_in_loop(small_data)
    calls = {"n": 0}

    def flaky(img):
        calls["n"] += 1
        if calls["n"] > 9:  # three phosphene calls a frame: frame 3 fails
            raise ValueError("phosphene model broke")
        return phosphene(img)

    loop.phosphene = flaky
    loop._streams = {"floor": flaky, "ceiling": flaky}
    with pytest.raises(ValueError, match="broke"):
        run_loop(loop, Frames(10), renderer, tmp_path)
    summary, lines = outputs(tmp_path)
    assert summary["frames"] == 3 == len(lines) and "phosphene model broke" in summary["stopped"]
    assert video_frames(tmp_path / "panels.mp4") == 3


def test_a_run_without_video_removes_an_earlier_video(small_data, renderer, tmp_path):
    run_loop(stand_in_loop(small_data), Frames(3), renderer, tmp_path)
    run_loop(stand_in_loop(small_data), Frames(5), renderer, tmp_path, write_video=False)
    assert not (tmp_path / "panels.mp4").exists() and outputs(tmp_path)[0]["frames"] == 5


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_the_run_with_complete_outputs(sig, small_data, renderer, tmp_path):
    """The signal arrives while the loop works; the frame in progress finishes, then the outputs."""
    loop = stand_in_loop(small_data, delay=0.02)
    timer = threading.Timer(0.8, os.kill, (os.getpid(), sig))
    timer.start()
    try:
        summary = run_loop(loop, Frames(100_000), renderer, tmp_path)
    finally:
        timer.cancel()
    assert summary["stopped"] == signal.Signals(sig).name and 1 <= summary["frames"] < 100_000
    saved, lines = outputs(tmp_path)
    assert saved == summary and len(lines) == summary["frames"]
    assert video_frames(tmp_path / "panels.mp4") == summary["frames"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_a_second_signal_stops_inside_the_frame(small_data, renderer, tmp_path):
    loop = stand_in_loop(small_data, delay=0.3)
    timers = [threading.Timer(t, os.kill, (os.getpid(), signal.SIGINT)) for t in (1.0, 1.1)]  # frames take 0.6 s
    for t in timers:
        t.start()
    summary = run_loop(loop, Frames(1000), renderer, tmp_path)
    assert "second signal" in summary["stopped"] and summary["frames"] >= 1
    assert video_frames(tmp_path / "panels.mp4") == summary["frames"] == len(outputs(tmp_path)[1])


def test_constant_frames_give_a_defined_summary(small_data, renderer, tmp_path):
    class Grey:
        fps = None

        def __iter__(self):
            return iter([np.full((32, 32, 3), 100, np.uint8)] * 3)

    summary = run_loop(stand_in_loop(small_data), Grey(), renderer, tmp_path, write_video=False)
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
    assert video_frames(out / "panels.mp4") == summary["frames"]
    assert not list(out.glob(".*partial*"))


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
