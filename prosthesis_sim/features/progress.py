"""Progress of long loops (feature extraction, training) that also reaches log files.

tqdm draws a bar on a terminal only (``disable=None`` turns it off elsewhere), so a cluster job or a
run piped into a file saw nothing between loading and the results. ``progress()`` returns a tqdm bar
when stderr is a terminal, and otherwise a ``LogProgress`` that writes a log line (logger
``prosthesis_sim.progress``, level INFO; Hydra apps log INFO to the console and to the run's .log
file) every ``LOG_EVERY_FRACTION`` of the total and at least every ``LOG_EVERY_S`` seconds.
"""
from __future__ import annotations

import logging
import sys
import time

from tqdm.auto import tqdm

log = logging.getLogger("prosthesis_sim.progress")

LOG_EVERY_FRACTION = 0.1  # a line at every 10 % of the total ...
LOG_EVERY_S = 60.0  # ... and at least once a minute while something advances


def progress(total: int, desc: str, unit: str = "it", enabled: bool = True, initial: int = 0):
    """A tqdm bar on a terminal, periodic log lines otherwise, nothing when not ``enabled``.

    Both have ``update(n)``, ``set_postfix(**values)`` and ``close()``, and work as context managers.
    """
    if enabled and not _is_terminal():
        return LogProgress(total, desc, unit, initial)
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False, disable=not enabled)


def _is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


class LogProgress:
    """Logs ``desc: done/total unit (pct %), rate, eta, postfix`` at every ``every_fraction`` of the
    total, when ``every_s`` seconds have passed since the last line, and once at ``close()``."""

    def __init__(self, total: int, desc: str, unit: str = "it", initial: int = 0,
                 every_fraction: float | None = None, every_s: float | None = None):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.n = self._start_n = int(initial)
        self.every_fraction = LOG_EVERY_FRACTION if every_fraction is None else every_fraction
        self.every_s = LOG_EVERY_S if every_s is None else every_s
        self.postfix: dict[str, object] = {}
        self._start = self._last_time = time.monotonic()
        self._last_n = self.n
        self._closed = False
        log.info("%s: %d/%d %s", desc, self.n, self.total, unit)

    def update(self, n: int = 1) -> None:
        self.n += n
        step = max(1, round(self.total * self.every_fraction)) if self.total > 0 else None
        crossed = step is not None and self.n // step > self._last_n // step
        if crossed or self.n >= self.total or time.monotonic() - self._last_time >= self.every_s:
            self._emit()

    def set_postfix(self, **values) -> None:
        self.postfix = values

    def close(self) -> None:
        if not self._closed and self.n != self._last_n:
            self._emit()
        self._closed = True

    def _emit(self) -> None:
        now = time.monotonic()
        elapsed = now - self._start
        done = self.n - self._start_n
        line = f"{self.desc}: {self.n}/{self.total} {self.unit}"
        if self.total > 0:
            line += f" ({100 * self.n / self.total:.0f} %)"
        line += f", {_duration(elapsed)}"
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            line += f", {rate:.3g} {self.unit}/s" if rate >= 1 else f", {1 / rate:.3g} s/{self.unit}"
            if 0 < self.n < self.total:
                line += f", eta {_duration((self.total - self.n) / rate)}"
        if self.postfix:
            line += ", " + " ".join(f"{k}={v}" for k, v in self.postfix.items())
        log.info(line)
        self._last_time, self._last_n = now, self.n

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"
