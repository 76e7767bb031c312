"""Submit point groups as submitit jobs (Slurm arrays or local processes) and collect what they leave.

Jobs write their own records; this side only waits for them and, for a job that died without finishing
its points (cancelled, killed for memory, node failure, out of requeues), writes a failure record for each
point it left without one, naming the job's state and its log.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import submitit
from submitit.slurm.slurm import SlurmJob

from illada.evaluate import failure_summary
from illada.runner import PointGroup
from illada.store import SweepStore

SLURM_DEFAULT_MAX_ARRAY_SIZE = 1001


def slurm_max_array_size() -> int:
    """The cluster's ``MaxArraySize`` (``scontrol show config``); Slurm's default when it cannot be read.

    Array indices must stay below it, and submitit numbers an array 0..n-1, so an array holds at most this
    many tasks."""
    if shutil.which("scontrol") is None:
        return SLURM_DEFAULT_MAX_ARRAY_SIZE
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return SLURM_DEFAULT_MAX_ARRAY_SIZE
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(m.group(1)) if m else SLURM_DEFAULT_MAX_ARRAY_SIZE


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of at most ``size`` items."""
    for i in range(0, len(items), size):
        yield items[i:i + size]


@dataclass
class Submitted:
    """A submitted job and the group it runs."""

    job: submitit.Job
    group: PointGroup


def submit(executor: submitit.Executor, groups: Sequence[PointGroup], max_array_size: int) -> list[Submitted]:
    """Submit ``groups`` as job arrays of at most ``max_array_size`` tasks each."""
    out: list[Submitted] = []
    for part in chunks(groups, max(1, max_array_size)):
        with executor.batch():
            jobs = [executor.submit(group) for group in part]
        out.extend(Submitted(job, group) for job, group in zip(jobs, part))
    return out


def collect(submitted: Sequence[Submitted], store: SweepStore, poll_s: float = 5.0,
            lost_after_s: float = 60.0) -> dict[str, int]:
    """Wait for every job; a job that ended without finishing its points leaves failure records for them.

    submitit learns how a job ended from ``sacct``. An array task cancelled while still pending never
    reaches accounting, so submitit would wait for it forever: a Slurm job that has left ``squeue`` and
    still has no state after ``lost_after_s`` is taken as lost."""
    counts = {"done": 0, "failed": 0, "skipped": 0, "jobs_failed": 0}
    pending = list(submitted)
    gone_since: dict[int, float] = {}
    while pending:
        queued = slurm_queue() if any(isinstance(s.job, SlurmJob) for s in pending) else None
        waiting = []
        for s in pending:
            if s.job.done():
                _finish(s, store, counts)
            elif queued is not None and isinstance(s.job, SlurmJob) and s.job.job_id not in queued:
                if time.monotonic() - gone_since.setdefault(id(s), time.monotonic()) > lost_after_s:
                    _fail(s, store, counts, f"job {s.job.job_id} left the queue without a result or an "
                                            "accounting record (cancelled while pending?)")
                else:
                    waiting.append(s)
            else:
                gone_since.pop(id(s), None)
                waiting.append(s)
        pending = waiting
        if pending:
            time.sleep(poll_s)
    return counts


def _finish(s: Submitted, store: SweepStore, counts: dict[str, int]) -> None:
    try:
        for k, v in s.job.result().items():
            counts[k] += v
    except Exception as exc:  # noqa: BLE001 -- cancelled, killed, timed out: the points left need a record
        _fail(s, store, counts, f"job {s.job.job_id} ended in state {s.job.state} before this point finished: "
                                f"{type(exc).__name__}: {str(exc).strip()[-1500:]}")


def _fail(s: Submitted, store: SweepStore, counts: dict[str, int], cause: str) -> None:
    counts["jobs_failed"] += 1
    for point in s.group.points:
        if not store.has_record(point.key):
            store.write_failure(failure_summary(point, RuntimeError(cause), log_path=str(s.job.paths.stdout)))
            store.clear_running(point.key)
            counts["failed"] += 1


def slurm_queue() -> set[str] | None:
    """Ids of the jobs Slurm still holds (array tasks one by one); None when squeue does not answer."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return set(out.stdout.split()) if out.returncode == 0 else None
