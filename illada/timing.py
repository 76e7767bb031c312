"""Honest timing: device synchronisation, warm-up, median of repeats, peak memory."""

from __future__ import annotations

import statistics
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

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
