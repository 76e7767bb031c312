"""Progress of a running sweep or search: done / failed / running over the total, with an ETA.

The one progress display of ``illada-sweep`` (grid sweeps in process, on ``submitit_local`` and on Slurm) and of
the Pareto search. It writes to stderr (stdout carries the result lines):

* on a terminal, a tqdm bar redrawn at each update, at most every 0.5 s
  (``sweep:  40%|####      | 16/40 points [02:11, 14 done, 2 failed, 4 running, ETA 03:17]``);
* otherwise (a log file, a pipe), a plain line at most every ``ILLADA_PROGRESS_INTERVAL`` seconds (default 30;
  ``inf``: none but the final line), and one final line.

The ETA is the time left at the rate points (or trials) finished since the display started; "ETA unknown" until
one has. The counts of a sweep come from its store (:class:`StoreCounts`), the one source of truth whoever
evaluates the points: each update lists ``records/`` and ``running/`` once and reads each new record once.
"""

from __future__ import annotations

import io
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterable, TextIO

from tqdm import tqdm

from illada.store import SweepStore, _keys

INTERVAL_ENV = "ILLADA_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 30.0
BAR_REFRESH_S = 0.5  # a bar is redrawn (and the store listed) at most this often


@dataclass(frozen=True)
class Counts:
    """How many of the units (points, trials) have finished well, failed, or are being evaluated."""

    done: int = 0
    failed: int = 0
    running: int = 0

    @property
    def finished(self) -> int:
        return self.done + self.failed


def interval_s() -> float:
    """Seconds between two plain progress lines: ``$ILLADA_PROGRESS_INTERVAL``, else 30. A value that is not a
    number is reported once on stderr and the default used (progress must never stop a sweep)."""
    raw = os.environ.get(INTERVAL_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_INTERVAL_S
    try:
        return max(0.0, float(raw))
    except ValueError:
        print(f"warning: {INTERVAL_ENV}={raw!r} is not a number of seconds; progress lines every "
              f"{DEFAULT_INTERVAL_S:g} s", file=sys.stderr)
        return DEFAULT_INTERVAL_S


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _terminal_size(stream: TextIO) -> tuple[int | None, int | None]:
    """The terminal's columns and lines; None when it cannot be asked."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None, None
    return size.columns, size.lines


def pause_bars() -> ContextManager[None]:
    """Write a log line while a bar is shown: the bar is cleared and redrawn below the line."""
    return tqdm.external_write_mode(file=sys.stdout)


class Progress:
    """Shows ``count()`` against ``total``: a bar on a terminal, throttled plain lines elsewhere.

    ``tick()`` after each unit finishes (or each poll); ``close()`` once at the end (or use it as a context
    manager). ``count`` is only called when something will be shown, so a throttled tick costs nothing."""

    def __init__(self, total: int, count: Callable[[], Counts], label: str = "sweep", unit: str = "points",
                 stream: TextIO | None = None, interval: float | None = None) -> None:
        self.total, self.count, self.label, self.unit = total, count, label, unit
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval_s() if interval is None else interval
        self.started = self.last_line = time.monotonic()
        self.counts = Counts()
        self._count()
        self.baseline = self.counts.finished  # finished before the display started: not part of the rate
        self.bar: tqdm | None = None
        if _isatty(self.stream):
            cols, rows = _terminal_size(self.stream)  # a terminal that reports a size of 0 would get no bar
            self.bar = tqdm(total=total, initial=self.counts.finished, file=self.stream, desc=label, unit=unit,
                            dynamic_ncols=cols != 0, ncols=100 if cols == 0 else None, nrows=20 if rows == 0 else None,
                            leave=True, mininterval=0, postfix=self._postfix(),
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} "
                                       "[{elapsed}{postfix}]")
        self.closed = False

    # ------------------------------------------------------------------------------------------- updates
    def tick(self) -> None:
        """Count and show, when due: on a terminal every :data:`BAR_REFRESH_S` seconds (or ``interval``, if
        shorter), otherwise every ``interval`` seconds."""
        if self.closed:
            return
        since = time.monotonic() - self.last_line
        if self.bar is not None and since >= min(self.interval, BAR_REFRESH_S):
            self._count()
            self._draw()
        elif self.bar is None and since >= self.interval:
            self._count()
            self._line()

    def close(self) -> None:
        """Show the final counts (the final line, or the bar left in its last state)."""
        if self.closed:
            return
        self.closed = True
        self._count()
        if self.bar is not None:
            self._draw()
            self.bar.close()
        else:
            self._line(final=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _count(self) -> None:
        try:
            self.counts = self.count()
        except OSError:  # a shared filesystem that does not answer for a moment: show the last counts
            pass

    # --------------------------------------------------------------------------------------------- text
    def eta(self) -> str:
        """Time left at the rate of the units finished since the display started."""
        c = self.counts
        left = max(0, self.total - c.finished)
        if left == 0:
            return "ETA 00:00"
        new = c.finished - self.baseline
        if new <= 0:
            return "ETA unknown"
        return "ETA " + tqdm.format_interval(left * (time.monotonic() - self.started) / new)

    def summary(self) -> str:
        c = self.counts
        return f"{c.done} done, {c.failed} failed, {c.running} running"

    def _postfix(self) -> str:
        return f"{self.summary()}, {self.eta()}"

    def _draw(self) -> None:
        assert self.bar is not None
        self.bar.n = self.counts.finished
        self.bar.set_postfix_str(self._postfix(), refresh=False)
        self.bar.refresh()
        self.last_line = time.monotonic()

    def _line(self, final: bool = False) -> None:
        c, now = self.counts, time.monotonic()
        elapsed = tqdm.format_interval(now - self.started)
        tail = f"{elapsed} elapsed" + ("" if final else f", {self.eta()}")
        print(f"{self.label}: {c.finished}/{self.total} {self.unit} finished ({self.summary()}); {tail}",
              file=self.stream, flush=True)
        self.last_line = now


class StoreCounts:
    """Counts of some points of a sweep store: one listing of ``records/`` and of ``running/`` per call; a
    record is read once, when it first appears (its status is then known for good)."""

    def __init__(self, store: SweepStore, keys: Iterable[str]) -> None:
        self.store, self.keys = store, set(keys)
        self.ok: dict[str, bool] = {}  # key -> its record says ok

    def __call__(self) -> Counts:
        for key in (_keys(self.store.records_dir) & self.keys) - self.ok.keys():
            record = self.store.record(key)
            if record is not None:  # None: unreadable for now (it is counted once it can be read)
                self.ok[key] = record.get("status") == "ok"
        running = len((_keys(self.store.running_dir) & self.keys) - self.ok.keys())
        done = sum(self.ok.values())
        return Counts(done, len(self.ok) - done, running)


def store_progress(store: SweepStore, keys: Iterable[str], label: str = "sweep", stream: TextIO | None = None,
                   interval: float | None = None) -> Progress:
    """The progress of the points ``keys`` of ``store`` (what a sweep runs), counted from the store."""
    keys = set(keys)
    return Progress(len(keys), StoreCounts(store, keys), label=label, unit="points", stream=stream, interval=interval)
