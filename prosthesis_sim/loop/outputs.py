"""What a loop run writes: per-frame rows and panels (``RunOutputs``) and the summary (``RunningSummary``),
both in fixed memory however long the run. Written by the evaluation thread (``evaluator.py``) while the
run lasts, by the loop's thread once it has ended."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np

from ..checkpoint import atomic_write_text
from ..errors import PsimError
from ..scores import normalised_score

log = logging.getLogger(__name__)

STAGES = ("encode", "decode", "phosphene", "evaluate")  # the loop itself is the first three
LOOP_STAGES = STAGES[:3]
SCORES = ("ssim", "pearson")
PATHS = ("path", "floor", "ceiling")


class Quantiles:
    """Quantiles of a stream of positive values (ms) in fixed memory: counts on log-spaced bins.

    Bins are 0.5 % wide from 1 us to 1000 s, so a median is exact to 0.25 % however long the run.
    """

    EDGES = np.geomspace(1e-3, 1e6, 4001)

    def __init__(self):
        self.counts = np.zeros(len(self.EDGES) + 1, np.int64)

    def __len__(self) -> int:
        return int(self.counts.sum())

    def add(self, value: float) -> None:
        self.counts[np.searchsorted(self.EDGES, value)] += 1

    def quantile(self, q: float) -> float:
        n = len(self)
        if n == 0:
            return float("nan")
        i = int(np.searchsorted(np.cumsum(self.counts), max(1, np.ceil(q * n))))
        if i == 0:
            return 0.0
        if i == len(self.EDGES):
            return float(self.EDGES[-1])
        return float(np.sqrt(self.EDGES[i - 1] * self.EDGES[i]))


class RunningSummary:
    """What summary.json reports, accumulated one frames.jsonl row at a time (no per-frame list is kept).

    Every row counts for ``frames`` and the loop's latency; only evaluated rows (with ``scores``) count
    for the scores, ``constant_frames`` and the evaluation's latency."""

    def __init__(self):
        self.frames = 0
        self.evaluated = 0
        self.constant_frames = 0
        self.sums: dict[str, float] = {}
        # median_latency_ms in this order: the loop's stages and their sum, then the evaluation's
        self.latency = {s: Quantiles() for s in (*LOOP_STAGES, "loop", "evaluate", "panel", "total")}

    def add(self, record: dict, constant_frame: bool = False) -> None:
        self.frames += 1
        lat = record["latency"]
        for s in LOOP_STAGES:
            self.latency[s].add(lat[f"{s}_ms"])
        loop_ms = sum(lat[f"{s}_ms"] for s in LOOP_STAGES)
        self.latency["loop"].add(loop_ms)
        if record.get("scores") is None:
            return
        self.evaluated += 1
        self.constant_frames += bool(constant_frame)
        for k, v in record["scores"].items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.latency["evaluate"].add(lat["evaluate_ms"])
        self.latency["total"].add(loop_ms + lat["evaluate_ms"])
        if record.get("panel_ms") is not None:
            self.latency["panel"].add(record["panel_ms"])

    def result(self, wall_s: float, **extra) -> dict:
        n = self.evaluated
        means = {k: v / n for k, v in self.sums.items()}
        normalised, undefined = {}, {}
        for k in SCORES:
            value = (normalised_score(means[f"path_{k}"], means[f"floor_{k}"], means[f"ceiling_{k}"]) if n
                     else float("nan"))
            normalised[k] = None if np.isnan(value) else value
            if normalised[k] is None:
                undefined[k] = "no frame was evaluated" if not n else ("the ceiling's mean equals the floor's" + (
                    f" ({self.constant_frames} of {n} evaluated frames are uniform: no pattern to correlate, "
                    "r is 0 by definition)" if self.constant_frames else ""))
        median = {s: q.quantile(0.5) for s, q in self.latency.items() if len(q)}  # no NaN in the JSON
        out = {
            "frames": self.frames,
            "wall_s": wall_s,
            "fps": self.frames / wall_s if wall_s > 0 else None,
            "loop_fps": 1000 / median["loop"] if median.get("loop") else None,
            "evaluated_frames": n,
            "skipped_evaluations": self.frames - n,
            "evaluated_fps": n / wall_s if wall_s > 0 else None,
            "median_latency_ms": median,
            "mean_scores": {p: {k: means.get(f"{p}_{k}") for k in SCORES} for p in PATHS},
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
        """The panel first, then the row: a video that cannot be written leaves no row without its panel."""
        if panel is not None:
            if self.writer is None:
                h, w = panel.shape[:2]
                self.writer = cv2.VideoWriter(str(self.tmp["panels.mp4"]), cv2.VideoWriter_fourcc(*"mp4v"),
                                              self.fps, (w, h))
                if not self.writer.isOpened():
                    raise PsimError(f"{self.tmp['panels.mp4']}: OpenCV cannot write an mp4v video here "
                                    "(loop.video=false turns the video off)")
            self.writer.write(panel)
        self.jsonl.write(json.dumps(record) + "\n")

    def _close(self) -> None:
        if not self.jsonl.closed:
            self.jsonl.close()
        if self.writer is not None:
            self.writer.release()  # writes the mp4 index (moov atom): without it no player opens the file
            self.writer = None

    def commit(self, summary: dict) -> None:
        self._close()
        if self.video and self.tmp["panels.mp4"].exists():
            os.replace(self.tmp["panels.mp4"], self.out / "panels.mp4")
        elif (self.out / "panels.mp4").exists():  # an earlier run's video would contradict this run's summary
            log.info("removing %s of an earlier run (%s)", self.out / "panels.mp4",
                     "loop.video=false" if not self.video else "no frame was evaluated")
            (self.out / "panels.mp4").unlink()
        os.replace(self.tmp["frames.jsonl"], self.out / "frames.jsonl")
        atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2))

    def discard(self) -> None:
        self._close()
        for path in self.tmp.values():
            path.unlink(missing_ok=True)
