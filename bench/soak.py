"""Endurance: 10,000 frames through the closed loop with cheap stages, and the process's memory (RSS).

Why: a webcam loop is left running for hours, so its memory must not grow with the frame count. The
stages are stand-ins (a brightness-following signal, a 16 x 16 decoded image, a 24 x 24 percept) so
that what is measured is the loop itself: capture thread and queue, scores, summary accumulation, panels,
frames.jsonl and panels.mp4. RSS is read every 1,000 frames; the table gives RSS at 10 % and 100 % of the
run and the growth per 1,000 frames between them (target: under 5 % from 10 % to 100 %).

Run: `python bench/soak.py [--frames 10000] [--json FILE] [--no-video]`.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from prosthesis_sim.data.dataset import Normalizer, make_info
from prosthesis_sim.data.synth.geometry import CH_NAMES, SFREQ
from prosthesis_sim.loop import ClosedLoop, run_loop
from prosthesis_sim.render import PanelRenderer


def rss_mb() -> float:
    """Resident set size now (Linux /proc), else the peak (other systems)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024


class Encoder:
    """A signal that follows the frame's brightness; also the RSS probe (called once per frame)."""

    def __init__(self, n_channels: int, n_times: int, every: int | None = None):
        self.shape, self.every, self.calls, self.rss = (n_channels, n_times), every, 0, {}

    def generate(self, images, seed=0):
        self.calls += 1
        if self.every and self.calls % self.every == 0:
            self.rss[self.calls] = rss_mb()
        return np.stack([np.full(self.shape, img.mean() / 255, np.float32) + np.linspace(-1, 1, self.shape[1])
                         for img in images])


class Decoder:
    def decode(self, signals):
        base = signals.mean(axis=(1, 2))[:, None, None]
        return np.clip(base + np.linspace(0, 0.5, 16)[None, None] * np.linspace(0, 1, 16)[None, :, None], 0, 1)


def phosphene(img):
    return cv2.resize(np.asarray(img, np.float32), (24, 24), interpolation=cv2.INTER_AREA)


class MovingFrames:
    """``n`` frames of a bright square moving over noise: a file-like source (not paced, none dropped)."""

    fps = 30.0

    def __init__(self, n: int, size: int = 96):
        self.n, self.size = n, size

    def __iter__(self):
        rng = np.random.default_rng(0)
        noise = rng.integers(0, 80, (self.size, self.size, 3), dtype=np.uint8)
        for i in range(self.n):
            frame = noise.copy()
            x = (3 * i) % (self.size - 24)
            frame[20:44, x : x + 24] = 230
            yield frame


def soak(frames: int, video: bool, out: Path, panel_size: int = 160) -> dict:
    n_times = int(SFREQ)
    info = make_info(list(CH_NAMES), SFREQ)
    norm = Normalizer(np.zeros((len(CH_NAMES), 1), np.float32), np.ones((len(CH_NAMES), 1), np.float32))
    every = max(1, frames // 10)
    encoder = Encoder(len(CH_NAMES), n_times, every=every)
    loop = ClosedLoop(encoder, Encoder(len(CH_NAMES), n_times), Decoder(), phosphene, norm)
    renderer = PanelRenderer(info, np.arange(n_times) / SFREQ, size=panel_size)
    start_rss, start = rss_mb(), time.perf_counter()
    summary = run_loop(loop, MovingFrames(frames), renderer, out, write_video=video)
    wall = time.perf_counter() - start
    at10, at100 = encoder.rss[every], encoder.rss[max(encoder.rss)]
    span = (max(encoder.rss) - every) / 1000
    return {
        "frames": summary["frames"], "dropped_frames": summary["dropped_frames"], "video": video, "wall_s": wall,
        "fps": summary["frames"] / wall, "rss_start_mb": start_rss, "rss_10pct_mb": at10, "rss_100pct_mb": at100,
        "rss_end_mb": rss_mb(), "growth_10_to_100_pct": 100 * (at100 - at10) / at10,
        "growth_mb_per_1000_frames": (at100 - at10) / span if span else 0.0,
        "rss_every_mb": {str(k): v for k, v in sorted(encoder.rss.items())},
    }


def table(r: dict) -> str:
    rows = [("frames", f"{r['frames']} (dropped {r['dropped_frames']})"), ("panels.mp4", "yes" if r["video"] else "no"),
            ("loop rate", f"{r['fps']:.0f} frames/s ({r['wall_s']:.0f} s)"),
            ("RSS before the loop", f"{r['rss_start_mb']:.1f} MB"), ("RSS at 10 %", f"{r['rss_10pct_mb']:.1f} MB"),
            ("RSS at 100 %", f"{r['rss_100pct_mb']:.1f} MB"),
            ("growth 10 % -> 100 %", f"{r['growth_10_to_100_pct']:+.2f} % (target < 5 %)"),
            ("growth per 1,000 frames", f"{1024 * r['growth_mb_per_1000_frames']:+.0f} kB")]
    return "\n".join(["| measure | value |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--no-video", action="store_true", help="do not write panels.mp4")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    parser.add_argument("--out", type=Path, help="the loop's output folder (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.frames < 10:
        parser.error("--frames must be at least 10")
    with tempfile.TemporaryDirectory() as tmp:
        result = soak(args.frames, not args.no_video, args.out or Path(tmp))
    print(table(result))
    print("RSS every 10 % (MB): " + "  ".join(f"{int(k)}: {v:.1f}" for k, v in result["rss_every_mb"].items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
