"""Submit point groups as submitit jobs (Slurm arrays or local processes) and collect what they leave.

Jobs write their own records; this side only waits for them and, for a job that died without finishing
its points (cancelled, killed for memory, timed out, node failure, out of requeues), writes a failure record
for each point it left without one, naming how the job ended (Slurm's state and exit code) and its log.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import submitit
from submitit.slurm.slurm import SlurmJob

from illada.evaluate import ResolvedPoint, failure_summary
from illada.interrupts import reraise_interrupt
from illada.progress import store_progress
from illada.runner import PointGroup, holder_gone
from illada.slurm import CANCELLED_PENDING, slurm_accounting, slurm_queue
from illada.slurm import slurm_max_array_size  # noqa: F401 -- re-exported
from illada.store import SweepStore

Queue = Callable[[], "set[str] | None"]  # squeue's answer, asked at most once per poll


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

    Each poll asks ``squeue`` once and, for the Slurm jobs that have left the queue without a result,
    ``sacct`` once. A job Slurm accounts as COMPLETED is read; one that ended otherwise (CANCELLED, TIMEOUT,
    OUT_OF_MEMORY, NODE_FAIL, ...) gets its failure records at once, naming that state and exit code, without
    waiting for a result that will never come. A task cancelled while pending, which Slurm deletes without an
    accounting row, is recorded as cancelled once two polls in a row find it so (a task that has just ended
    may lack its row for a moment). A job that left the queue and that accounting still does not know after
    ``lost_after_s`` is taken as lost. A job Slurm requeues (preemption, ``scontrol requeue``, submitit's
    requeue on USR2) stays in the queue: it is waited for and leaves no failure record. A point of a failed
    job that a live other job holds (another driver of the same sweep) is watched until that job leaves its
    record.

    Progress (:mod:`illada.progress`, on stderr) is counted from the store once per poll."""
    with store_progress(store, [p.key for s in submitted for p in s.group.points]) as progress:
        return _collect(submitted, store, poll_s, lost_after_s, progress.tick)


def _collect(submitted: Sequence[Submitted], store: SweepStore, poll_s: float, lost_after_s: float,
             tick: Callable[[], None]) -> dict[str, int]:
    counts = {"done": 0, "failed": 0, "skipped": 0, "jobs_failed": 0}
    pending = list(submitted)
    watched: list[_Orphan] = []
    gone_since: dict[int, float] = {}
    unaccounted: set[int] = set()  # jobs found cancelled while pending (no sacct row) at the last poll
    while pending or watched:
        waiting = []
        queue = functools.cache(slurm_queue)  # one squeue per poll, for the jobs and the markers alike
        seen, unaccounted = unaccounted, set()
        for s, ended in _poll(pending, queue):
            if ended is None:
                waiting.append(s)
                gone_since.pop(id(s), None)
            elif CANCELLED_PENDING in ended and id(s) not in seen:  # twice in a row: not accounting's lag
                unaccounted.add(id(s))
                waiting.append(s)
            elif ended == "":  # left the queue, unknown to accounting so far
                if time.monotonic() - gone_since.setdefault(id(s), time.monotonic()) > lost_after_s:
                    watched += _fail(s, store, counts, f"job {s.job.job_id} left the queue and Slurm's accounting "
                                                       f"had no record of it after {lost_after_s:g} s", queue)
                else:
                    waiting.append(s)
            elif ended == "COMPLETED":
                watched += _finish(s, store, counts, queue)
            else:
                watched += _fail(s, store, counts, f"job {s.job.job_id} ended with {ended} before this point "
                                                   "finished", queue)
        pending = waiting
        watched = [o for o in watched if not o.settled(store, counts, queue)]
        if pending or watched:
            tick()
            time.sleep(poll_s)
    return counts


def _poll(pending: Sequence[Submitted], queue: Queue) -> list[tuple[Submitted, str | None]]:
    """Each job with how it ended: None (still running), "COMPLETED" (read its result), "" (left the queue,
    unknown to accounting) or how Slurm accounts its end ("Slurm state CANCELLED, exit code 0:15")."""
    out: list[tuple[Submitted, str | None]] = []
    slurm = []
    for s in pending:
        if not isinstance(s.job, SlurmJob):  # a local process: submitit knows whether it still runs
            out.append((s, "COMPLETED" if s.job.done() else None))
        elif s.job.paths.result_pickle.exists():  # not job.done(): that may call sacct for this job alone
            out.append((s, "COMPLETED"))
        else:
            slurm.append(s)
    queued = queue() if slurm else None
    left = [s for s in slurm if queued is not None and s.job.job_id not in queued]
    accounting = (slurm_accounting(s.job.job_id for s in left) if left else None) or {}
    out += [(s, None) for s in slurm if queued is None or s.job.job_id in queued]
    for s in left:
        acc = accounting.get(s.job.job_id)
        if acc is None or not acc.ended:  # accounting lags the queue by a few seconds
            out.append((s, ""))
        elif acc.note == CANCELLED_PENDING and _started(s):  # it ran: its own row is late, not missing
            out.append((s, ""))
        else:
            out.append((s, "COMPLETED" if acc.state == "COMPLETED" else str(acc)))
    return out


def _started(s: Submitted) -> bool:
    """Whether the job has started: Slurm creates its log as it starts, a task cancelled while pending has none."""
    return s.job.paths.stdout.exists() or s.job.paths.stderr.exists()


def _finish(s: Submitted, store: SweepStore, counts: dict[str, int], queue: Queue) -> list[_Orphan]:
    try:
        result = s.job.result()
    except Exception as exc:  # noqa: BLE001 -- the group raised, or left no result: the points left need a record
        reraise_interrupt(exc)
        return _fail(s, store, counts, f"job {s.job.job_id} ended in state {s.job.state} before this point "
                                       f"finished: {type(exc).__name__}: {str(exc).strip()[-1500:]}", queue)
    for k, v in result.items():
        counts[k] += v
    return []


@dataclass
class _Orphan:
    """A point of a failed job that a live other job holds: counted when it has a record, failed if its
    holder goes without leaving one."""

    point: ResolvedPoint
    cause: str
    log_path: str

    def settled(self, store: SweepStore, counts: dict[str, int], queue: Queue) -> bool:
        record = store.record(self.point.key)
        if record is not None:
            counts["done" if record.get("status") == "ok" else "failed"] += 1
            return True
        marker = store.running(self.point.key)
        if marker is None or holder_gone(store, self.point.key, marker, queue):
            _write_failure(store, self.point, self.cause, self.log_path, counts)
            return True
        return False


def _fail(s: Submitted, store: SweepStore, counts: dict[str, int], cause: str, queue: Queue) -> list[_Orphan]:
    """Failure records for the points ``s`` left without one; those a live other job holds are returned to
    be watched instead."""
    counts["jobs_failed"] += 1
    log_path = str(s.job.paths.stdout)
    orphans = []
    for point in s.group.points:
        if store.has_record(point.key):
            continue
        marker = store.running(point.key)
        if marker is not None and str(marker.get("job_id")) != s.job.job_id and \
                not holder_gone(store, point.key, marker, queue):
            orphans.append(_Orphan(point, cause, log_path))
        else:
            _write_failure(store, point, cause, log_path, counts)
    return orphans


def _write_failure(store: SweepStore, point: ResolvedPoint, cause: str, log_path: str,
                   counts: dict[str, int]) -> None:
    store.write_failure(failure_summary(point, RuntimeError(cause), log_path=log_path))
    store.clear_running(point.key)
    counts["failed"] += 1
