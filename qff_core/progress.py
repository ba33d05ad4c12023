"""Progress lines for long work: one line per finished chunk with done/total, failures and ETA."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


class ProgressReporter:
    """Callable ``(done, total, failed)`` that writes ``[label] 12/40 samples (30%), 1 failed,
    14 s elapsed, ETA 33 s`` to stderr (``echo``) and hands it to ``also`` (e.g. a logger).

    The ETA extrapolates the rate since the first report (so worker start-up does not count),
    or, at the first report, the mean time per finished sample (seconds).
    """

    def __init__(self, label: str = "qff", *, echo: bool = True, also: Callable[[str], None] | None = None,
                 unit: str = "samples") -> None:
        self.label = label
        self.echo = echo
        self.also = also
        self.unit = unit
        self._t0 = time.monotonic()
        self._first: tuple[float, int] | None = None  # (time, done) of the first report

    def line(self, done: int, total: int, failed: int) -> str:
        """The progress line for these counts (no I/O)."""
        now = time.monotonic()
        elapsed = now - self._t0
        percent = 100.0 * done / total if total else 100.0
        if self._first is None:
            self._first = (now, done)
        t_first, done_first = self._first
        if done >= total:
            eta = "done"
        elif done > done_first:
            eta = f"ETA {_duration((now - t_first) / (done - done_first) * (total - done))}"
        else:
            eta = f"ETA {_duration(elapsed / done * (total - done))}" if done else "ETA unknown"
        return (f"[{self.label}] {done}/{total} {self.unit} ({percent:.0f}%), {failed} failed, "
                f"{_duration(elapsed)} elapsed, {eta}")

    def __call__(self, done: int, total: int, failed: int = 0) -> None:
        text = self.line(done, total, failed)
        if self.echo:  # write(), not print(): Prefect's log_prints would divert a print into its logger
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
        if self.also is not None:
            self.also(text)


def _duration(seconds: float) -> str:
    """12 s, 3 min 04 s, 2 h 05 min."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s // 60 % 60:02d} min"
