"""Run a group of sweep points that share a model in one process, loading the model once.

A :class:`PointGroup` is what one job (a Slurm array task, a local process) executes. It is a submitit
``Checkpointable``: on preemption or timeout submitit pickles it and requeues the job, and because every
finished point already has its record in the store, the requeued job skips straight to the first point
without one. A point that raises leaves a failure record and the group goes on with the next point.

Before evaluating a point a job *claims* it: it creates the point's running marker only if there is none
(:meth:`SweepStore.claim`, atomic between processes and hosts). A point whose marker belongs to another job
that is still alive (two drivers of one sweep, a restarted driver while its old array still runs) is left to
that job: after its own points the group waits for the point's record and counts it, or takes the point over
once its holder is gone, saying every few seconds what it waits for. While a job evaluates a point it refreshes
the point's marker (a heartbeat, :mod:`illada.markers`); a marker silent for longer than ``stale_after_s`` is
taken over. Each point is thus evaluated once however many jobs list it, and none waits for ever.
"""

from __future__ import annotations

import functools
import itertools
import os
import socket
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import submitit
import torch

from illada.evaluate import ResolvedPoint, evaluate, failure_summary
from illada.fidelity import evaluate_early_stopped
from illada.interrupts import reraise_interrupt
from illada.loading import LoadedModel, check_host, load
from illada.markers import (DEFAULT_STALE_AFTER_S, Heartbeat, heartbeat_interval, holder, process_identity,
                            stale_bound)
from illada.progress import pause_bars, store_progress
from illada.records import now
from illada.slurm import slurm_queue
from illada.store import SweepStore


def model_key(point: ResolvedPoint) -> tuple[str, str, str]:
    """What a loaded model is reusable across: the checkpoint, its device and dtype (attention backends are
    switched on the loaded model)."""
    s = point.settings
    return s["model"], s["device"], s["dtype"]


def group_points(points: Sequence[ResolvedPoint], points_per_job: int) -> list[list[ResolvedPoint]]:
    """Points sharing a model, cut into jobs of at most ``points_per_job`` of near-equal size."""
    if points_per_job < 1:
        raise ValueError(f"points_per_job={points_per_job!r}: must be >= 1")
    by_model: dict[tuple, list[ResolvedPoint]] = defaultdict(list)
    for p in points:
        by_model[model_key(p)].append(p)
    groups = []
    for same in by_model.values():
        n_jobs = -(-len(same) // points_per_job)
        groups.extend(same[i::n_jobs] for i in range(n_jobs))  # interleave: each job gets cheap and costly points
    return groups


_LOCAL_JOBS = itertools.count()


def job_identity() -> dict[str, Any]:
    """Who is running: host, pid, job id (Slurm or submitit), attempt, log path, GPUs allocated."""
    job_id, log_path = None, None
    if os.environ.get("SUBMITIT_EXECUTOR"):
        env = submitit.JobEnvironment()
        job_id, log_path = env.job_id, str(env.paths.stdout)
    job_id = job_id or os.environ.get("SLURM_JOB_ID")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    gpus = len([d for d in visible.split(",") if d.strip()]) if visible else (
        torch.cuda.device_count() if torch.cuda.is_available() else 0)
    job_id = job_id or f"local-{os.getpid()}-{next(_LOCAL_JOBS)}"  # in-process jobs: one id per group
    cluster = os.environ.get("SUBMITIT_EXECUTOR") or ("slurm" if os.environ.get("SLURM_JOB_ID") else "inprocess")
    return {"host": socket.gethostname(), "pid": os.getpid(), "job_id": job_id, "cluster": cluster,
            "attempt": int(os.environ.get("SLURM_RESTART_COUNT", "0")), "log_path": log_path, "gpus": gpus}


MINE, RECORDED, HELD = "mine", "recorded", "held"


def holder_gone(store: SweepStore, key: str, marker: Mapping[str, Any],
                queue: Callable[[], set[str] | None] = slurm_queue) -> bool:
    """True when the job that wrote the point's running ``marker`` is gone: the marker is stale
    (:meth:`SweepStore.is_stale`: unreadable, its process exited or replaced on this host, or no heartbeat
    within its bound, whatever the host), or on another host its Slurm job has left the queue. ``queue``
    answers squeue; a caller checking many markers at once passes one snapshot (``functools.cache``) so that
    squeue is asked once, not once per point."""
    if store.is_stale(key):
        return True
    if marker.get("host") == socket.gethostname() or marker.get("cluster") != "slurm" or not marker.get("job_id"):
        return False
    queued = queue()
    return queued is not None and str(marker["job_id"]) not in queued


def claim_point(store: SweepStore, key: str, job: Mapping[str, Any],
                queue: Callable[[], set[str] | None] = slurm_queue) -> str:
    """Try to hold point ``key`` for ``job`` (a running marker): MINE (evaluate it), RECORDED (it has a record
    already) or HELD (a live other job evaluates it). A marker of this same job (an earlier attempt, before
    a requeue), of this process (left by an interrupted earlier group) or of a job that is gone is taken
    over."""
    for _ in range(5):  # each retry follows another job's move on this very point; a few suffice
        if store.has_record(key):
            return RECORDED
        marker = store.running(key)
        own = marker is not None and (marker.get("job_id") == job["job_id"] or
                                      (marker.get("host"), marker.get("pid")) == (job["host"], job["pid"]))
        if marker is not None and not own and not holder_gone(store, key, marker, queue):
            return HELD
        if store.claim(key, dict(job), stale=marker):
            if store.has_record(key):  # its holder finished between our look and our claim
                store.clear_running(key)
                return RECORDED
            return MINE
    return HELD


class PointGroup(submitit.helpers.Checkpointable):
    """Points of one model, evaluated in order into ``sweep_dir``; points that have a record are skipped,
    points another live job is evaluating are waited for (checked every ``wait_s`` seconds).

    A submitted job (submitit local or Slurm) prints one line per point to its log (stdout): ``log_points=None``
    decides so by where it runs; in process the sweep's progress display says it instead."""

    wait_s: float = 5.0
    log_points: bool | None = None  # class default: a group pickled before this attribute existed unpickles too
    stale_after_s: float = DEFAULT_STALE_AFTER_S  # a marker silent this long is taken over (ours too, by others)
    early_stop: float | None = None  # confidence of the early-stop rule (illada.fidelity); None: points run whole

    def __init__(self, sweep_dir: str | Path, points: Sequence[ResolvedPoint], threads: int | None = None,
                 log_points: bool | None = None, stale_after_s: float | None = None,
                 early_stop: float | None = None) -> None:
        keys = {model_key(p) for p in points}
        if len(keys) > 1:
            raise ValueError(f"a PointGroup shares one model; got {sorted(keys)}")
        self.sweep_dir = str(sweep_dir)
        self.points = list(points)
        self.threads = threads
        self.log_points = log_points
        if stale_after_s is not None:
            self.stale_after_s = float(stale_after_s)
        self.early_stop = early_stop

    def __call__(self) -> dict[str, int]:
        attempt = self.start()
        attempt.run_own()
        attempt.wait_held(self.wait_s)
        attempt.log_end()
        return attempt.counts

    def start(self) -> _Attempt:
        """This run of the group (its state lives there: submitit pickles the group itself on preemption)."""
        if self.threads:
            torch.set_num_threads(self.threads)
        job = job_identity()
        log = job["cluster"] != "inprocess" if self.log_points is None else self.log_points
        return _Attempt(SweepStore(self.sweep_dir), job, self.points, log=log, stale_after_s=self.stale_after_s,
                        early_stop=self.early_stop)


class _Attempt:
    """One run of a group: its store, identity, accounting and (lazily) loaded model."""

    def __init__(self, store: SweepStore, job: dict[str, Any], points: Sequence[ResolvedPoint],
                 log: bool = False, stale_after_s: float = DEFAULT_STALE_AFTER_S,
                 early_stop: float | None = None) -> None:
        self.store, self.job, self.points = store, job, list(points)
        self.counts = {"done": 0, "failed": 0, "skipped": 0}
        self.held: list[ResolvedPoint] = []  # points a live other job evaluates
        self.marker = {**{k: job[k] for k in ("host", "pid", "job_id", "cluster", "attempt", "log_path")},
                       **process_identity(), "stale_after_s": stale_after_s}
        self.account = {**job, "started_at": now(), "load_seconds": 0.0, "eval_seconds": 0.0, "points": 0}
        self.loaded: LoadedModel | None = None
        self.load_error: Exception | None = None
        self.host_errors: dict[tuple, Exception | None] = {}  # (device, attn_backend, dtype) -> what the host lacks
        self.error = ""  # the last failure, for the job's log
        self.log = log  # one line per point to stdout (the job's log)
        self.on_point: Callable[[], None] | None = None  # called as each point is settled (in-process progress)
        self.started = time.perf_counter()
        self.early_stop = early_stop  # see PointGroup.early_stop
        self._say(f"{len(self.points)} points of model {self.points[0].settings['model'] if self.points else '-'}, "
                  f"attempt {job['attempt']}, on {job['host']} (pid {job['pid']})")

    def _say(self, message: str) -> None:
        if self.log:
            print(f"[job {self.job['job_id']}] {message}", flush=True)

    def _settled(self, point: ResolvedPoint, outcome: str, note: str = "") -> None:
        """Count a point and say so: in the job's log (i/n, key, outcome, seconds, its overrides) and to the
        progress hook."""
        self.counts[outcome] += 1
        if self.log:
            overrides = " ".join(self.store.plan_of(point.key).get("overrides") or [])
            self._say(f"{sum(self.counts.values())}/{len(self.points)} {point.key} {outcome}{note}"
                      + (f" [{overrides}]" if overrides else ""))
        if self.on_point is not None:
            self.on_point()

    def _run(self, point: ResolvedPoint) -> None:
        """Evaluate a point this job holds, count it and say how it went and how long it took."""
        started, loading = time.perf_counter(), self.account["load_seconds"]
        path = self.store.running_dir / f"{point.key}.json"
        with Heartbeat(path, heartbeat_interval(self.marker["stale_after_s"])):  # proves this job alive meanwhile
            outcome = self.evaluate(point)
        loaded = self.account["load_seconds"] - loading
        note = f" in {time.perf_counter() - started:.1f} s" + (f" (model load {loaded:.1f} s)" if loaded else "")
        self._settled(point, outcome, note + (f": {self.error}" if outcome == "failed" else ""))

    def log_end(self) -> None:
        """The job's last log line: its counts and wall time."""
        c = self.counts
        self._say(f"finished: {c['done']} done, {c['failed']} failed, {c['skipped']} skipped of "
                  f"{len(self.points)} points in {time.perf_counter() - self.started:.1f} s")

    def run_own(self) -> None:
        """Evaluate the points this job can claim; set aside those a live other job holds."""
        for point in self.points:
            claim = claim_point(self.store, point.key, self.marker)
            if claim == MINE:
                self._run(point)
            elif claim == RECORDED:  # finished by an earlier attempt of this job, or another job
                self._settled(point, "skipped", note=" (it has a record already)")
            else:
                self.held.append(point)
                marker = self.store.running(point.key) or {}
                self._say(f"{point.key} is being evaluated by job {marker.get('job_id', '?')}: waiting for it "
                          "after this job's other points")
        self.loaded = None  # no model kept while waiting (a point taken over loads it again)

    def wait_held(self, wait_s: float) -> None:
        """Wait for the points other jobs hold: count their records, take over those their holder left."""
        while self.held:
            waiting = []
            queue = functools.cache(slurm_queue)  # one squeue per round, however many points are held
            for point in self.held:
                claim = claim_point(self.store, point.key, self.marker, queue)
                if claim == MINE:
                    self._run(point)
                elif claim == RECORDED:
                    ok = (self.store.record(point.key) or {}).get("status") == "ok"
                    self._settled(point, "done" if ok else "failed", note=" (by the job that held it)")
                else:
                    waiting.append(point)
            self.held = waiting
            if self.held:
                if self.on_point is not None:  # the display's periodic line is due while waiting, too
                    self.on_point()
                self._say_waiting()
                time.sleep(wait_s)

    def _say_waiting(self) -> None:
        """One line: the held point closest to being taken over (the oldest sign of life), its holder and the
        age of that sign; how many others are held. In a job's log, or on stderr in process."""
        seen = [(point, self.store.running(point.key) or {}, self.store.liveness(point.key)) for point in self.held]
        point, marker, verdict = max(seen, key=lambda s: -1.0 if s[2].age_s is None else s[2].age_s)
        overrides = " ".join(self.store.plan_of(point.key).get("overrides") or [])
        age = "unknown" if verdict.age_s is None else f"{verdict.age_s:.0f} s ago"
        more = f"; and {len(seen) - 1} more points other jobs hold" if len(seen) > 1 else ""
        line = (f"waiting for {point.key}" + (f" [{overrides}]" if overrides else "") + f": held by {holder(marker)}, "
                f"last sign of life {age} (taken over after {stale_bound(marker):g} s without one){more}")
        if self.log:
            self._say(line)
        else:
            with pause_bars():
                print(line, file=sys.stderr, flush=True)

    def check_host(self, point: ResolvedPoint) -> None:
        """Raise what this host lacks for ``point`` (its device, its attention backend's package), checked once
        per job and setting and before the model loads: a job without its GPU fails its points in seconds, each
        record naming the cause, and a point this host cannot run does not make the others' model load fail."""
        p = point.point
        setting = (p.device, p.attn_backend, p.dtype)
        if setting not in self.host_errors:
            try:
                check_host(*setting)
                self.host_errors[setting] = None
            except Exception as exc:  # noqa: BLE001 -- becomes the failure record of each point it concerns
                reraise_interrupt(exc)
                self.host_errors[setting] = exc
        if self.host_errors[setting] is not None:
            raise self.host_errors[setting]

    def evaluate(self, point: ResolvedPoint) -> str:
        """Evaluate a point this job holds; "done" or "failed" (then with its failure record)."""
        store, account = self.store, self.account
        started = now()
        try:
            self.check_host(point)
            if self.load_error is not None:  # every point of the group needs the model: fail them all alike
                raise self.load_error
            if self.loaded is None:  # lazily: a requeued job with nothing left loads nothing
                self.loaded, self.load_error = _load(point)
                if self.load_error is not None:
                    raise self.load_error
                account["load_seconds"] += self.loaded.load_seconds
            before = _partial_seconds(store, point.key)
            if self.early_stop is not None or before is not None:  # batch by batch, or continuing a stopped point
                summary = evaluate_early_stopped(point, store, self.loaded, self.early_stop)
                account["eval_seconds"] += summary["cost"]["eval_seconds"] - (before or 0.0)
            else:
                summary = evaluate(point, store.records_dir, loaded=self.loaded, progress=False)
                account["eval_seconds"] += summary["cost"]["eval_seconds"]
            outcome = "done"
        except Exception as exc:  # noqa: BLE001 -- any error of one point must not stop the others
            reraise_interrupt(exc)
            store.write_failure(failure_summary(point, exc, log_path=self.job["log_path"], started=started))
            outcome = "failed"
            self.error = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"
            if isinstance(exc, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
        finally:
            store.clear_running(point.key)
        account.update(points=account["points"] + 1, finished_at=now())
        store.write_job(f"{self.job['job_id']}.{self.job['attempt']}", account)
        return outcome


def _partial_seconds(store: SweepStore, key: str) -> float | None:
    """Evaluation seconds already spent on a point reopened in ``partial/`` (None: it has no partial record)."""
    from illada.fidelity import PARTIAL_DIR
    from illada.records import CorruptFileError, read_summary, summary_path

    try:
        return float(read_summary(summary_path(store.root / PARTIAL_DIR, key))["cost"]["eval_seconds"])
    except (FileNotFoundError, CorruptFileError, KeyError, TypeError, ValueError):
        return None


def _load(point: ResolvedPoint) -> tuple[LoadedModel | None, Exception | None]:
    p = point.point
    try:
        return load(point.settings["model"], device=p.device, dtype=p.dtype, attn_backend=p.attn_backend), None
    except Exception as exc:  # noqa: BLE001 -- becomes every point's failure record
        reraise_interrupt(exc)
        return None, exc


def run_inprocess(groups: Sequence[PointGroup]) -> dict[str, int]:
    """Run groups one after another in this process (the local launcher), then wait for the points other
    jobs held; returns summed counts. Progress (:mod:`illada.progress`) goes to stderr as each point settles."""
    total = {"done": 0, "failed": 0, "skipped": 0}
    start = time.perf_counter()
    if not groups:
        return {**total, "seconds": 0.0}
    attempts = [group.start() for group in groups]
    keys = [p.key for group in groups for p in group.points]
    with store_progress(SweepStore(groups[0].sweep_dir), keys) as progress:
        for attempt in attempts:
            attempt.on_point = progress.tick
        for attempt in attempts:  # every group's own points first: waiting in one must not hold up the next
            attempt.run_own()
        for group, attempt in zip(groups, attempts):
            attempt.wait_held(group.wait_s)
            for k, v in attempt.counts.items():
                total[k] += v
    total["seconds"] = time.perf_counter() - start
    return total
