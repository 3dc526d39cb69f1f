"""The live views without a browser: display choices, the web server (its port, host, page, protocol,
slow pages) and the browser source's queue rules. tests/test_live_view.py drives a real browser."""
import json
import socket
import threading
import time
import urllib.request

import cv2
import numpy as np
import pytest
from hydra import compose, initialize_config_module
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from prosthesis_sim.errors import ConfigError, PsimError, describe
from prosthesis_sim.live import open_views, resolve_display
from prosthesis_sim.live.browser_source import BrowserSource
from prosthesis_sim.live.server import LiveServer
from prosthesis_sim.loop import run_loop
from prosthesis_sim.sources import FrameGrabber
from prosthesis_sim.validate import validate
from tests.test_loop_safety import (
    Frames,
    renderer,  # noqa: F401 (fixture)
    stand_in_loop,
)


def jpeg(seed=0, size=(48, 64)) -> bytes:
    img = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", img)[1].tobytes()


def ws_url(views) -> str:
    return views.url.replace("http://", "ws://") + "ws"


def messages(ws, until: str, timeout: float = 20) -> list:
    """Messages from the page's WebSocket (text as dicts, binary as bytes) up to one of type ``until``."""
    got, deadline = [], time.time() + timeout
    while time.time() < deadline:
        msg = ws.recv(timeout=deadline - time.time())
        got.append(msg if isinstance(msg, bytes) else json.loads(msg))
        if isinstance(got[-1], dict) and got[-1]["type"] == until:
            return got
    raise AssertionError(f"no {until!r} message in {timeout} s: {[m if isinstance(m, dict) else len(m) for m in got]}")


# --- choosing the views ------------------------------------------------------------------------------

def test_display_choices(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert [resolve_display(d) for d in ("auto", False, "web")] == ["none", "none", "web"]
    for value, shown in ((True, "loop.display=true"), ("window", "loop.display=window")):
        with pytest.raises(PsimError) as err:
            resolve_display(value)
        assert shown in str(err.value) and "loop.display=web" in str(err.value)
    views = open_views(False)
    assert views.views == [] and not views.wants_panels and views.url is None


@pytest.mark.parametrize("override, expected", [
    ("loop.web.port=70000", "loop.web.port=70000: expected an integer from 0 to 65535"),
    ("loop.web.port=-1", "loop.web.port=-1: expected an integer from 0 to 65535"),
    ("loop.display=maybe", "expected one of auto, true, false, window, web"),
    ("loop.web.host=''", "loop.web.host='': expected a non-empty string"),
    ("source=browser source.quality=1.5", "source.quality=1.5: expected a number > 0 and <= 1"),
])
def test_bad_live_view_config_values(override, expected):
    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        cfg = compose("loop", overrides=override.split())
    with pytest.raises(ConfigError) as err:
        validate(cfg, "loop")
    assert expected in str(err.value)


def test_live_view_configs_are_valid():
    with initialize_config_module("prosthesis_sim.configs", version_base="1.3"):
        for overrides in (["loop.display=web"], ["source=browser"], ["loop.display=window"]):
            validate(compose("loop", overrides=overrides), "loop")


# --- the server ---------------------------------------------------------------------------------------

def test_port_in_use_is_one_line_naming_the_key():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(PsimError) as err:
            open_views("web", {"port": port})
    text, code = describe(err.value)
    assert text.startswith(f"loop.web.port={port} is in use;") and "loop.web.port=0" in text and code == 1


def test_another_interface_only_with_a_warning(capsys):
    server = LiveServer(host="0.0.0.0", port=0).start()
    try:
        err = capsys.readouterr().err
        assert "WARNING: loop.web.host=0.0.0.0" in err and "SSH tunnel" in err
        assert server.url == f"http://127.0.0.1:{server.port}/"
    finally:
        server.close()
    LiveServer(port=0).start().close()
    assert "WARNING" not in capsys.readouterr().err  # loopback, the default: no warning


def test_the_page_is_one_static_file_without_internet():
    server = LiveServer(port=0).start()
    try:
        page = urllib.request.urlopen(server.url, timeout=10).read().decode()
        state = json.load(urllib.request.urlopen(server.url + "state.json", timeout=10))
    finally:
        server.close()
    assert "getUserMedia" in page and "<canvas" in page and 'id="stop"' in page
    assert "<script src" not in page and "<link" not in page and "https://" not in page  # no CDN
    assert state["status"] == "loading the models" and state["frames"] == 0


def test_web_view_streams_panels_scores_and_the_end(small_data, renderer, tmp_path):  # noqa: F811
    views = open_views("web", {"port": 0}, stages={"encoder": "stand-in"})
    result = {}
    with connect(ws_url(views)) as ws:
        hello = json.loads(ws.recv(timeout=10))
        assert hello["type"] == "hello" and hello["camera"] is None  # no browser source: no camera asked for
        thread = threading.Thread(target=lambda: result.update(s=run_loop(
            stand_in_loop(small_data), Frames(8), renderer, tmp_path, display=views, write_video=False)))
        thread.start()
        got = messages(ws, until="ended")
        thread.join(20)
    frames = [r for m in got if isinstance(m, dict) and m["type"] == "frames" for r in m["records"]]
    panels = [m for m in got if isinstance(m, bytes)]
    summary = result["s"]
    assert [r["frame"] for r in frames] == list(range(8)) and len(panels) >= 1
    assert cv2.imdecode(np.frombuffer(panels[-1], np.uint8), cv2.IMREAD_COLOR).shape[1] == 5 * 160
    assert {f"{p}_pearson" for p in ("path", "floor", "ceiling")} <= set(frames[-1]["scores"])
    assert {"encode_ms", "decode_ms", "phosphene_ms", "evaluate_ms"} == set(frames[-1]["latency"])
    assert all(r["evaluated"] is True for r in frames)  # a file source evaluates every frame; the page's means use it
    statuses = [m for m in got if isinstance(m, dict) and m["type"] == "status"]
    assert statuses[-1]["stages"]["encoder"] == "stand-in" and statuses[-1]["stages"]["decoder"] == "Decoder"
    ended = got[-1]
    assert ended["reason"] == "source ended" and ended["summary"]["frames"] == summary["frames"] == 8
    assert summary["stages"]["source"] == "Frames"


def test_a_page_that_never_reads_does_not_slow_the_loop(small_data, renderer, tmp_path):  # noqa: F811
    """A stalled page: the loop goes on at full speed (stale panels are skipped) and still ends cleanly."""
    views = open_views("web", {"port": 0})
    with connect(ws_url(views), close_timeout=0.5) as stalled:  # connected, never reads a message
        start = time.perf_counter()
        summary = run_loop(stand_in_loop(small_data), Frames(150), renderer, tmp_path, display=views,
                           write_video=False)
        elapsed = time.perf_counter() - start
        assert summary["frames"] == 150 and summary["dropped_frames"] == 0
        assert elapsed < 60, elapsed
        assert stalled.protocol is not None


# --- the browser source --------------------------------------------------------------------------------

def test_browser_source_inbox_never_blocks_and_counts_what_it_drops():
    src = BrowserSource()
    for k in range(5):  # nobody reads: the two-frame inbox keeps the newest
        src.push(jpeg(k))
    assert src.received == 5 and src.lost == 3
    src.push(b"not a jpeg")
    assert src.lost == 4
    src.end("test")
    frames = list(src)  # ended: the iteration stops at once
    assert frames == [] and src.end_reason == "test"


def test_browser_frames_follow_the_camera_queue_rules():
    """In a FrameGrabber the page's camera is live: a slow loop drops the oldest queued frame, counted."""
    src = BrowserSource()
    grabber = FrameGrabber(src, queue_size=2).start()
    assert grabber.drop_oldest
    seen = []

    def feed():
        for k in range(40):
            src.push(jpeg(k))
            time.sleep(0.005)
        time.sleep(0.3)
        src.end("done")

    threading.Thread(target=feed).start()
    for index, _, frame in grabber:
        assert frame.shape == (48, 64, 3)
        seen.append(index)
        time.sleep(0.05)
    grabber.stop()
    assert grabber.dropped > 0 and "slower than the camera" in grabber.drop_reason
    assert seen == sorted(seen) and len(seen) + grabber.dropped + src.lost == 40


def test_browser_frames_dropped_before_the_capture_queue_are_in_the_summary(small_data, renderer, tmp_path):  # noqa: F811
    """Frames the page sent that the source's own inbox dropped (its capture thread fell behind) count in
    summary.json with those of the capture queue: delivered, dropped, and why."""
    src = BrowserSource()
    for k in range(5):  # before the loop reads any: the two-frame inbox keeps the newest two, 3 are lost
        src.push(jpeg(k))
    loop = stand_in_loop(small_data)
    decode, calls = loop.decoder.decode, []

    def decode_then_stop(signals):  # the page's stop button, during the loop's second frame
        if threading.current_thread() is threading.main_thread():
            calls.append(1)
            if len(calls) == 2:
                src.end("the camera was stopped in the page")
        return decode(signals)
    loop.decoder.decode = decode_then_stop
    views = open_views(False, {"port": 0}, source=src)
    summary = run_loop(loop, src, renderer, tmp_path, display=views, write_video=False)
    assert summary["frames"] == 2 and src.received == 5 and src.lost == 3
    assert summary["dropped_before_capture"] == 3 and summary["dropped_frames"] == 3
    assert summary["captured_frames"] == 5  # what the page delivered: processed + dropped
    assert "3 before the capture queue" in summary["dropped_reason"]
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


def test_the_page_camera_streams_until_its_stop_button(small_data, renderer, tmp_path):  # noqa: F811
    src = BrowserSource(fps=20.0)
    views = open_views(False, {"port": 0}, source=src)  # source=browser serves the page whatever loop.display
    assert views.url is not None
    result = {}
    thread = threading.Thread(target=lambda: result.update(s=run_loop(
        stand_in_loop(small_data), src, renderer, tmp_path, display=views, write_video=False)))
    thread.start()
    settings = {"fps": 20.0, "max_side": 320, "quality": 0.8}
    with connect(ws_url(views)) as first:
        assert json.loads(first.recv(timeout=10))["camera"] == settings
        with connect(ws_url(views), close_timeout=1) as second:
            hello = json.loads(second.recv(timeout=10))
            assert hello["camera"] is None and hello["camera_elsewhere"]  # one page holds the camera
            second.send(jpeg(99))  # ignored: not the camera's page
    time.sleep(0.3)
    assert views.views[0].state()["frames"] == 0
    with connect(ws_url(views)) as page:  # the camera's page closed without stopping: a new page takes it
        assert json.loads(page.recv(timeout=10))["camera"] == settings
        deadline = time.time() + 30
        k = 0
        while time.time() < deadline and views.views[0].state()["frames"] < 5:
            page.send(jpeg(k))
            k += 1
            time.sleep(0.03)
        page.send(json.dumps({"type": "stop"}))
        got = messages(page, until="ended")
    thread.join(20)
    summary = result["s"]
    assert got[-1]["reason"] == "the camera was stopped in the page" and summary["stopped"] == "source ended"
    assert summary["frames"] >= 5 and summary["captured_frames"] <= k
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved == summary


def test_another_site_cannot_connect_to_the_page_socket():
    """A page of another origin open in the same browser must not watch the loop or feed it frames."""
    server = LiveServer(port=0).start()
    url = server.url.replace("http://", "ws://") + "ws"
    try:
        with pytest.raises(InvalidStatus, match="403"):
            connect(url, origin="http://evil.example")
        with connect(url, origin=server.url.rstrip("/")) as ws:  # the page's own origin
            assert json.loads(ws.recv(timeout=5))["type"] == "hello"
    finally:
        server.close()
