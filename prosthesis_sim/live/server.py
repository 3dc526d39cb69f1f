"""``loop.display=web``: the loop serves its own page (page.html) from a background thread.

Stack: starlette (routes, WebSocket) on uvicorn (the ASGI server) with the websockets package for the
protocol. Why: the smallest standard ASGI stack, pure Python wheels, no build step, and a server that
runs in a thread of the loop's own process (no second process to start or to stop). The page is one
static file with no CDN, so it works on a GPU machine with no internet and through an SSH tunnel.

The page's WebSocket (``/ws``), one connection per open page:
- server -> page, text (JSON): ``hello`` (camera settings or null), ``status`` (its text and the stage
  names), ``frames`` (each frame's scores, latency, fps and counters), ``ended`` (why, and summary.json);
- server -> page, binary: the newest panels as a JPEG;
- page -> server, binary: a camera frame as a JPEG (``source=browser``; one page holds the camera);
  text ``{"type": "stop"}``: the page's stop button.

Only the page itself may connect (a browser's Origin must be the server's own host), so another site
open in the same browser cannot watch the loop or send it frames. The loop never waits for a page:
``show`` stores the newest panels and the frame's record and wakes the pages' senders. A sender sends
the records it has not sent yet (of the last ``RECORDS``) and only the newest panels, so a slow page
skips stale panels instead of slowing the loop.
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import logging
import math
import socket
import sys
import threading
import time
from collections import deque
from importlib import resources
from urllib.parse import urlsplit

import cv2
import numpy as np

from ..errors import PsimError

log = logging.getLogger(__name__)

RECORDS = 300        # frame records kept for pages that fall behind (and for the page's plot)
FPS_WINDOW_S = 2.0   # fps is measured over the frames of the last 2 s
JPEG_QUALITY = 85


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def jsonable(value):
    """``value`` with numpy numbers as Python numbers and NaN/Inf as None (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


class LiveServer:
    """The page, its WebSocket and the newest state of the run; a view for ``LiveViews``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, stages: dict | None = None, camera=None):
        self.host, self.port = str(host), int(port)
        self.stages = dict(stages or {})
        self.camera = camera  # a BrowserSource, or None
        self._lock = threading.Lock()
        self._records: deque = deque(maxlen=RECORDS)
        self._seq = 0
        self._panel, self._panel_seq = None, 0
        self._jpeg: tuple[int, bytes] = (0, b"")
        self._status = "loading the models"
        self._ended: dict | None = None
        self._times: deque = deque()
        self._started_at = time.perf_counter()
        self._wakes: set = set()        # one asyncio.Event per open page
        self._camera_owner = None       # the Event of the page that streams the camera
        self._aloop = None
        self._server = None
        self._thread = None

    # --- the loop's side (its own thread) -----------------------------------------------------------

    @property
    def wants_panels(self) -> bool:
        return bool(self._wakes)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/"

    def start(self) -> LiveServer:
        """Bind (a port in use is a PsimError naming it), then serve in a daemon thread."""
        import uvicorn

        sock = self._bind()
        self.port = sock.getsockname()[1]
        if not is_loopback(self.host):
            what = "the live view" + (" and the camera of its page" if self.camera else "")
            print(f"WARNING: loop.web.host={self.host}: {what} are open to every machine that can reach this one "
                  f"on port {self.port}, with no password and no encryption; the default 127.0.0.1 with an SSH "
                  "tunnel is safer (docs/loop.md, Live view)", file=sys.stderr, flush=True)
        config = uvicorn.Config(self._app(), log_config=None, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)

        def serve():
            async def main():
                self._aloop = asyncio.get_running_loop()
                await self._server.serve(sockets=[sock])
            asyncio.run(main())

        self._thread = threading.Thread(target=serve, name="live-view", daemon=True)
        self._thread.start()
        deadline = time.perf_counter() + 15
        while not self._server.started and self._thread.is_alive() and time.perf_counter() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            self._server.should_exit = True
            sock.close()
            raise PsimError(f"loop.web.port={self.port}: the live view's server did not start (see the log above)")
        print(f"live view: {self.url}", flush=True)
        return self

    def _bind(self) -> socket.socket:
        try:
            family, kind, proto, _, address = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM,
                                                                 flags=socket.AI_PASSIVE)[0]
        except socket.gaierror as err:
            raise PsimError(f"loop.web.host={self.host}: not an address of this machine ({err.strerror})") from err
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
            sock.listen(16)
        except OSError as err:
            sock.close()
            if err.errno == errno.EADDRINUSE:
                raise PsimError(f"loop.web.port={self.port} is in use; stop what uses it or choose another port "
                                "(loop.web.port=0 takes any free one)") from err
            if err.errno == errno.EACCES:
                raise PsimError(f"loop.web.port={self.port}: permission denied (ports below 1024 need root); "
                                "choose a port from 1024 up") from err
            raise PsimError(f"loop.web.host={self.host}: cannot listen there ({err.strerror or err})") from err
        return sock

    def running(self, stages: dict) -> None:
        """The models are ready; stage names the config did not give come from the loop's objects."""
        with self._lock:
            self.stages = {**stages, **self.stages}
            self._status = "waiting for the page's camera" if self.camera is not None else "waiting for frames"
        self._wake()

    def show(self, panel: np.ndarray | None, record: dict, counters: dict) -> None:
        now = time.perf_counter()
        with self._lock:
            self._times.append(now)
            while now - self._times[0] > FPS_WINDOW_S:
                self._times.popleft()
            span = now - self._times[0]
            self._seq += 1
            rec = {"seq": self._seq, "frame": record["frame"], "t": now - self._started_at,
                   "fps": (len(self._times) - 1) / span if span > 0 else None, "scores": record["scores"],
                   "latency": record["latency"], "queue_ms": record.get("queue_ms"),
                   "evaluated": record.get("evaluated", True), **counters}
            if self.camera is not None:
                rec.update(camera_received=self.camera.received, camera_lost=self.camera.lost)
            self._records.append(jsonable(rec))
            if panel is not None:
                self._panel, self._panel_seq = panel, self._seq
            self._status = "running"
        self._wake()

    def end_capture(self) -> None:
        if self.camera is not None:
            self.camera.end()

    def close(self, reason: str | None = None, summary: dict | None = None) -> None:
        """Send how the run ended to the open pages (up to 1 s), then stop the server."""
        if self._thread is None:
            return
        if reason == "source ended" and getattr(self.camera, "end_reason", None):
            reason = "the camera was stopped in the page"
        with self._lock:
            self._ended = {"reason": reason or "the loop ended", "summary": jsonable(summary)}
            self._status = f"ended: {self._ended['reason']}"
        self._wake()
        deadline = time.perf_counter() + 1.0
        while self._wakes and time.perf_counter() < deadline:  # pages close their connection after 'ended'
            time.sleep(0.02)
        self._server.force_exit = bool(self._wakes)  # a page that stopped reading: do not wait for it
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._thread = None

    def state(self) -> dict:
        """What /state.json reports (for scripts and a quick look with curl)."""
        with self._lock:
            last = self._records[-1] if self._records else None
            return jsonable({"status": self._status, "stages": self.stages, "frames": self._seq,
                             "pages": len(self._wakes), "last": last, "ended": self._ended})

    def _wake(self) -> None:
        if self._aloop is not None:
            try:
                self._aloop.call_soon_threadsafe(self._wake_pages)
            except RuntimeError:  # the server's event loop has closed
                pass

    # --- the server's side (its event loop, in the server thread) -----------------------------------

    def _wake_pages(self) -> None:
        for wake in list(self._wakes):
            wake.set()

    def _app(self):
        from starlette.applications import Starlette
        from starlette.responses import HTMLResponse, JSONResponse
        from starlette.routing import Route, WebSocketRoute

        page = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")

        async def index(request):
            return HTMLResponse(page, headers={"Cache-Control": "no-store"})

        async def state(request):
            return JSONResponse(self.state())

        return Starlette(routes=[Route("/", index), Route("/state.json", state), WebSocketRoute("/ws", self._page)])

    async def _page(self, ws) -> None:
        origin = ws.headers.get("origin")
        if origin and urlsplit(origin).netloc != ws.headers.get("host"):
            # another site open in the same browser must not watch the loop or feed it frames
            await ws.close(code=1008)
            return
        await ws.accept()
        wake = asyncio.Event()
        wake.set()  # send the current state at once
        camera = self.camera is not None and self._camera_owner is None and self._ended is None
        if camera:
            self._camera_owner = wake
        self._wakes.add(wake)
        sender = asyncio.create_task(self._send(ws, wake, camera))
        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                if msg.get("bytes") is not None:
                    if self._camera_owner is wake:
                        self.camera.push(msg["bytes"])
                elif msg.get("text"):
                    self._command(msg["text"], wake)
        except Exception as err:  # the page went away mid-message, or the server closed it after 'ended'
            log.debug("a page's connection ended: %r", err)
        finally:
            self._wakes.discard(wake)
            if self._camera_owner is wake:
                self._camera_owner = None
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    def _command(self, text: str, wake) -> None:
        try:
            command = json.loads(text)
        except ValueError:
            return
        if isinstance(command, dict) and command.get("type") == "stop" and self._camera_owner is wake:
            self.camera.end("the page's stop button stopped the camera; the loop finishes its outputs")
            with self._lock:
                self._status = "camera stopped: the loop finishes its outputs"
            self._wake_pages()

    async def _send(self, ws, wake, camera: bool) -> None:
        hello = {"type": "hello", "camera": self.camera.settings() if camera else None,
                 "camera_elsewhere": self.camera is not None and not camera, "keep": RECORDS}
        await ws.send_text(json.dumps(hello))
        sent_seq, sent_panel, sent_status = 0, 0, None
        while True:
            await wake.wait()
            wake.clear()
            with self._lock:
                status = (self._status, dict(self.stages))
                records = [r for r in self._records if r["seq"] > sent_seq]
                panel_seq, panel, ended = self._panel_seq, self._panel, self._ended
            if status != sent_status:
                await ws.send_text(json.dumps({"type": "status", "text": status[0], "stages": jsonable(status[1])}))
                sent_status = status
            if records:
                await ws.send_text(json.dumps({"type": "frames", "records": records}))
                sent_seq = records[-1]["seq"]
            if panel is not None and panel_seq > sent_panel:
                await ws.send_bytes(await self._encode(panel_seq, panel))
                sent_panel = panel_seq
            if ended is not None:
                await ws.send_text(json.dumps({"type": "ended", **ended}))
                await ws.close(1000)
                return

    async def _encode(self, seq: int, panel: np.ndarray) -> bytes:
        """The panels as JPEG, encoded once per frame whatever the number of pages (off the event loop)."""
        if self._jpeg[0] != seq:
            ok, buf = await asyncio.to_thread(cv2.imencode, ".jpg", panel, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            self._jpeg = (seq, buf.tobytes() if ok else b"")
        return self._jpeg[1]
