"""The live view end to end in a real browser: ``psim-loop source=browser`` as a user runs it.

Headless Chromium (Debian's ``chromium``) opens the page the command serves, with a fake camera that
plays a Y4M file made here from a scikit-image photo. The page sends the camera's frames over its
WebSocket, the loop (ridge encoder, ridge_pixels decoder, fitted on the small synthetic data)
processes them, and the panels (with the percept) and the scores come back. It is checked in the page,
through the Chrome DevTools protocol (a tiny client on the websockets package): the panels image
has loaded, the score plot and the score, latency and fps cells are filled, the stage names are
shown. The test saves a screenshot of the page (to docs/img/live_view.png, which the README shows, with
PSIM_UPDATE_DOCS=1), then
presses the page's stop button: the loop must finish its outputs and the page must say it ended.
"""
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

pytestmark = pytest.mark.slow  # psim-loop fits three small models, then a browser: about 40 s on 2 cores

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
INSTALL = "apt-get install -y chromium (the install line in .ci/run)"
# The README's screenshot is refreshed only when asked (PSIM_UPDATE_DOCS=1), so a test run (CI included)
# never modifies a tracked file; otherwise it goes to the test's temporary folder.
DOCS_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "img" / "live_view.png"
BIN = Path(sys.executable).parent
PANEL = 240  # the default: the screenshot shows what a user sees
WIDTH, HEIGHT = 320, 240


def write_y4m(path: Path, n: int = 30) -> Path:
    """A slow pan over scikit-image's astronaut, as Chromium's fake camera reads it (4:2:0, 15 fps)."""
    img = skimage.data.astronaut()
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F15:1 Ip A1:1 C420jpeg\n".encode())
        for k in range(n):
            x = int(k / n * (img.shape[1] - 400))
            frame = cv2.resize(img[40:340, x : x + 400], (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
            f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Chromium:
    """Headless Chromium with a fake camera, driven over the DevTools protocol."""

    def __init__(self, url: str, camera: Path, profile: Path):
        profile.mkdir()
        self.proc = subprocess.Popen([
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0",
            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={camera}", "--window-size=1360,1000", "--hide-scrollbars", url,
        ], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port_file = profile / "DevToolsActivePort"
        deadline = time.time() + 60
        while not (port_file.is_file() and port_file.read_text().count("\n") >= 1):
            if self.proc.poll() is not None or time.time() > deadline:
                raise AssertionError(f"chromium did not start: {self.proc.stderr.read()[-2000:]}")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        while True:
            pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
            page = next((p for p in pages if p.get("type") == "page" and p["url"].startswith(url)), None)
            if page or time.time() > deadline:
                break
            time.sleep(0.1)
        assert page, f"chromium opened no page at {url}: {pages}"
        from websockets.sync.client import connect

        self.cdp = connect(page["webSocketDebuggerUrl"], max_size=None)
        self.next_id = 0

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.cdp.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.cdp.recv(timeout=30))
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return msg["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"the page never showed {what}; it shows: {self.evaluate(PAGE_STATE)}")

    def close(self):
        try:
            self.cdp.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# What the page shows, read from its DOM (the checks below and the failure messages use it).
PAGE_STATE = """(() => {
  if (!document.getElementById('plot')) return {status: 'page not loaded', frames: 0, points: 0};
  const t = (id) => document.getElementById(id).textContent;
  const img = document.getElementById('panels');
  const stages = {};
  for (const td of document.querySelectorAll('[id^=stage-]')) stages[td.id.slice(6)] = td.textContent;
  return {status: t('status'), frames: Number(t('frames')), fps: t('fps'), dropped: t('dropped'),
          path: t('score-path'), floor: t('score-floor'), ceiling: t('score-ceiling'),
          normalised: t('score-normalised'), encode_ms: t('lat-encode'), loop_ms: t('lat-loop'),
          points: Number(document.getElementById('plot').dataset.points), camera: t('camera-state'),
          panels: img.hidden ? null : [img.naturalWidth, img.naturalHeight], stages, summary: t('summary')};
})()"""


def start_psim_loop(synth_root, tmp_path, port) -> tuple[subprocess.Popen, list[str]]:
    """psim-loop source=browser in its own process; its output lines are collected by a thread."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("PSIM_DEBUG", None)
    # loop.display=false: source=browser serves its page all the same
    args = [f"dataset.root={synth_root}", f"cache_dir={tmp_path / 'cache'}", "encoder=ridge", "decoder=ridge_pixels",
            "source=browser", "loop.display=false", f"loop.web.port={port}", f"out={tmp_path / 'run'}"]
    proc = subprocess.Popen([str(BIN / "psim-loop"), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    return proc, lines


def test_browser_camera_drives_the_loop_and_the_page_shows_the_results(synth_root, tmp_path):
    if CHROMIUM is None:
        pytest.fail(f"chromium is not installed: this test needs it; run `{INSTALL}`")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    proc, output = start_psim_loop(synth_root, tmp_path, port)
    browser = None
    try:
        deadline = time.time() + 120
        while not any(line.startswith(f"live view: {url}") for line in output):  # served before the models load
            assert proc.poll() is None and time.time() < deadline, "".join(output)[-3000:]
            time.sleep(0.1)
        start = time.perf_counter()
        browser = Chromium(url, write_y4m(tmp_path / "camera.y4m"), tmp_path / "profile")
        shown = browser.wait_for(f"(() => {{ const s = {PAGE_STATE}; return s.frames >= 12 && s.points >= 12 && "
                                 "s.panels && s.panels[0] > 0 && s.path !== '–' ? s : null; })()", 240,
                                 "12 frames with their panels and scores")
        # percepts: the panels image (frame | signal | topomap | decoded | percept) came back and loaded
        assert shown["panels"][0] == 5 * PANEL and shown["panels"][1] > PANEL, shown
        # scores: numbers in the legend, a plot of every frame received, latency and fps
        for key in ("path", "floor", "ceiling", "encode_ms", "loop_ms", "fps"):
            assert np.isfinite(float(shown[key])), (key, shown)
        assert shown["status"] == "running", shown
        # the camera: this page's, at the Y4M's size (max_side 320 keeps it)
        assert shown["camera"].startswith(f"sending {WIDTH} x {HEIGHT}"), shown
        assert shown["stages"] == {"encoder": "ridge", "decoder": "ridge_pixels", "phosphene": "argus_scoreboard",
                                   "source": "browser", "floor": "MeanERP", "signal": "expected response"}, shown
        time.sleep(1.0)  # a few more points for the screenshot
        png = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
        screenshot = DOCS_SCREENSHOT if os.environ.get("PSIM_UPDATE_DOCS") == "1" else tmp_path / "live_view.png"
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(png)
        assert screenshot.stat().st_size > 20_000  # a page with panels, not a blank one

        # the stop button ends the camera, and the run, with its outputs written and one exit code
        browser.evaluate("document.getElementById('stop').click()")
        ended = browser.wait_for(f"(() => {{ const s = {PAGE_STATE}; return s.status.startsWith('ended') && "
                                 "s.summary ? s : null; })()", 60, "that the run ended")
        assert proc.wait(60) == 0, "".join(output)[-3000:]
        elapsed = time.perf_counter() - start
    finally:
        if browser is not None:
            browser.close()
        if proc.poll() is None:
            proc.kill()
    text = "".join(output)
    assert "Traceback" not in text, text[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert ended["status"] == "ended: the camera was stopped in the page", ended
    assert f"summary.json: {summary['frames']} frames" in ended["summary"], ended
    assert summary["frames"] >= 12 and summary["stopped"] == "source ended" and "stopped: source ended" in text
    assert summary["stages"]["source"] == "browser"
    assert len((tmp_path / "run" / "frames.jsonl").read_text().splitlines()) == summary["frames"]
    # the frames were the photo (structure the ceiling path carries), not a blank camera
    assert summary["mean_scores"]["ceiling"]["pearson"] > 0.3, summary["mean_scores"]
    print(f"browser part: {elapsed:.1f} s, {summary['frames']} frames at {summary['fps']:.1f} fps, "
          f"{summary['dropped_frames']} dropped")
