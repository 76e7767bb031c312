"""Honest timing: device synchronisation, warm-up, median of repeats, peak memory, wall time of a block,
torch's thread count for a block, and the host's load while a measurement ran."""

from __future__ import annotations

import os
import statistics
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import psutil
import torch


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait for queued device work so wall-clock time covers it (a no-op on CPU)."""
    if device is not None and torch.device(device).type != "cuda":
        return
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    median_s: float
    min_s: float
    repeats: int
    peak_bytes: int  # CUDA max allocated, or peak process RSS (sampled) on CPU


def time_call(fn: Callable[[], object], device: torch.device | str = "cpu", warmup: int = 1,
              repeats: int = 5) -> Timing:
    """Median wall time of ``fn()`` after ``warmup`` calls, synchronising ``device`` around each call."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    with peak_memory(device) as peak:
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            synchronize(device)
            times.append(time.perf_counter() - start)
    return Timing(statistics.median(times), min(times), repeats, peak.value)


class _Peak:
    value = 0


@contextmanager
def peak_memory(device: torch.device | str = "cpu", interval_s: float = 0.002) -> Iterator[_Peak]:
    """Peak memory inside the block: CUDA max allocated, or the process RSS sampled every ``interval_s``."""
    peak = _Peak()
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield peak
        peak.value = torch.cuda.max_memory_allocated(device)
        return
    proc = psutil.Process()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak.value = max(peak.value, proc.memory_info().rss)
            stop.wait(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()
        peak.value = max(peak.value, proc.memory_info().rss)


class _Wall:
    seconds = 0.0


@contextmanager
def wall_time(device: torch.device | str = "cpu") -> Iterator[_Wall]:
    """Wall time of the block, synchronising ``device`` before and after it so queued work is counted."""
    wall = _Wall()
    synchronize(device)
    start = time.perf_counter()
    try:
        yield wall
    finally:
        synchronize(device)
        wall.seconds = time.perf_counter() - start


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads (None: as many as now), then restore the
    previous number."""
    before = torch.get_num_threads()
    if threads is not None and threads != before:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask: a Slurm allocation or a container's share), which
    can be fewer than the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def load_average() -> float | None:
    """The host's 1-minute load average (runnable processes), or None where the system has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


class HostLoad:
    """The load of the host while a measurement ran: the 1-minute load average read at the start and at the
    end (the larger one; a 1-minute average lags, so both ends are looked at), against :func:`cpu_count`.
    More runnable processes than CPUs means the measurement shared its cores: its times are inflated."""

    def __init__(self) -> None:
        self.cpu_count = cpu_count()
        self._loads = [load_average()]

    def finish(self) -> dict[str, Any]:
        """``{load_avg_1m, cpu_count, oversubscribed}`` for the record's provenance."""
        self._loads.append(load_average())
        known = [x for x in self._loads if x is not None]
        load = round(max(known), 2) if known else None
        return {"load_avg_1m": load, "cpu_count": self.cpu_count,
                "oversubscribed": None if load is None else load > self.cpu_count}
