"""The closed loop: frame -> encoder -> generated signal -> decoder -> phosphene model -> score.

Three paths are scored against every frame, at the percept's resolution:
- path:    frame -> encoder -> decoder -> phosphenes (what the toolkit simulates);
- floor:   the same with the mean-ERP encoder (no image information reaches the decoder);
- ceiling: frame (grey) straight to the implant (the best any brain-encoding path can reach).
Latency is reported per stage; ``loop`` is encode + decode + phosphene (what a device would run),
``evaluate`` is the floor and ceiling paths and the scores, and ``total`` is everything.
The normalised loop score is (path - floor) / (ceiling - floor), computed from the mean scores.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from .checkpoint import atomic_write_text
from .data.dataset import Normalizer
from .render import PanelRenderer
from .scores import image_scores, normalised_score, to_grey
from .sources import FrameGrabber

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


def has_display() -> bool:
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        return False
    return re.search(r"GUI:\s+NONE", cv2.getBuildInformation()) is None


def summarise(records: list[dict], wall_s: float, dropped: int) -> dict:
    lat = {s: float(np.median([r["latency"][f"{s}_ms"] for r in records])) for s in STAGES}
    lat["loop"] = float(np.median([sum(r["latency"][f"{s}_ms"] for s in STAGES[:3]) for r in records]))
    means = {k: float(np.mean([r["scores"][k] for r in records])) for k in records[0]["scores"]}
    normalised = {
        k: normalised_score(means[f"path_{k}"], means[f"floor_{k}"], means[f"ceiling_{k}"]) for k in SCORES
    }
    return {
        "frames": len(records),
        "dropped_frames": dropped,
        "wall_s": wall_s,
        "fps": len(records) / wall_s if wall_s > 0 else float("nan"),
        "median_latency_ms": {**lat, "total": float(np.median([sum(r["latency"].values()) for r in records]))},
        "mean_scores": {
            name: {k: means[f"{name}_{k}"] for k in SCORES} for name in ("path", "floor", "ceiling")
        },
        "normalised_score": normalised,
    }


def run_loop(loop: ClosedLoop, source, renderer: PanelRenderer, out: Path, display: bool | str = "auto",
             max_frames: int | None = None, queue_size: int = 2, realtime: bool = True,
             write_video: bool = True) -> dict:
    """Run until the source ends (or ``max_frames``); write frames.jsonl, summary.json and panels.mp4."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    show = has_display() if display == "auto" else bool(display)
    if show and not has_display():
        raise RuntimeError("loop.display=true but no display is available (or OpenCV was built without GUI: "
                           "install opencv-python instead of opencv-python-headless)")
    grabber = FrameGrabber(source, queue_size=queue_size, realtime=realtime).start()
    writer, records = None, []
    fps_out = getattr(source, "fps", None) or 10.0
    start = time.perf_counter()
    try:
        with open(out / "frames.jsonl", "w") as jl:
            for index, captured_at, frame in tqdm(grabber, desc="loop", unit="frame", total=max_frames, leave=False,
                                                   disable=None):
                res = loop.step(frame)
                rec = {"frame": index, "queue_ms": 1000 * (time.perf_counter() - captured_at) - sum(res["latency"].values()),
                       "latency": res["latency"], "scores": res["scores"]}
                records.append(rec)
                jl.write(json.dumps(rec) + "\n")
                panel = renderer.compose(frame, loop.norm(res["signal"][None])[0], res["decoded"], res["percept"],
                                         res["scores"])
                if write_video:
                    if writer is None:
                        h, w = panel.shape[:2]
                        writer = cv2.VideoWriter(str(out / "panels.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps_out, (w, h))
                    writer.write(panel)
                if show:
                    cv2.imshow("prosthesis-sim", panel)
                    if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                        break
                if max_frames is not None and len(records) >= max_frames:
                    break
    finally:
        grabber.stop()
        if writer is not None:
            writer.release()
        if show:
            cv2.destroyAllWindows()
    if not records:
        raise RuntimeError("the frame source produced no frames")
    summary = summarise(records, time.perf_counter() - start, grabber.dropped)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary
