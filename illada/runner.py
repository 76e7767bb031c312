"""Run a group of sweep points that share a model in one process, loading the model once.

A :class:`PointGroup` is what one job (a Slurm array task, a local process) executes. It is a submitit
``Checkpointable``: on preemption or timeout submitit pickles it and requeues the job, and because every
finished point already has its record in the store, the requeued job skips straight to the first point
without one. A point that raises leaves a failure record and the group goes on with the next point.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import submitit
import torch

from illada.evaluate import ResolvedPoint, evaluate, failure_summary
from illada.loading import LoadedModel, load
from illada.records import now
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
    return {"host": socket.gethostname(), "pid": os.getpid(), "job_id": job_id,
            "attempt": int(os.environ.get("SLURM_RESTART_COUNT", "0")), "log_path": log_path, "gpus": gpus}


class PointGroup(submitit.helpers.Checkpointable):
    """Points of one model, evaluated in order into ``sweep_dir``; points that have a record are skipped."""

    def __init__(self, sweep_dir: str | Path, points: Sequence[ResolvedPoint], threads: int | None = None) -> None:
        keys = {model_key(p) for p in points}
        if len(keys) > 1:
            raise ValueError(f"a PointGroup shares one model; got {sorted(keys)}")
        self.sweep_dir = str(sweep_dir)
        self.points = list(points)
        self.threads = threads

    def __call__(self) -> dict[str, int]:
        if self.threads:
            torch.set_num_threads(self.threads)
        store = SweepStore(self.sweep_dir)
        job = job_identity()
        marker = {k: job[k] for k in ("host", "pid", "job_id", "attempt", "log_path")}
        account = {**job, "started_at": now(), "load_seconds": 0.0, "eval_seconds": 0.0, "points": 0}
        job_file = f"{job['job_id']}.{job['attempt']}"
        counts = {"done": 0, "failed": 0, "skipped": 0}
        loaded: LoadedModel | None = None
        load_error: Exception | None = None
        for point in self.points:
            if store.has_record(point.key):  # finished by an earlier attempt of this job, or another job
                counts["skipped"] += 1
                continue
            store.mark_running(point.key, marker)
            started = now()
            try:
                if load_error is not None:  # every point of the group needs the model: fail them all alike
                    raise load_error
                if loaded is None:  # lazily: a requeued job with nothing left loads nothing
                    loaded, load_error = _load(point)
                    if load_error is not None:
                        raise load_error
                    account["load_seconds"] += loaded.load_seconds
                summary = evaluate(point, store.records_dir, loaded=loaded, progress=False)
                account["eval_seconds"] += summary["cost"]["eval_seconds"]
                counts["done"] += 1
            except Exception as exc:  # noqa: BLE001 -- any error of one point must not stop the others
                store.write_failure(failure_summary(point, exc, log_path=job["log_path"], started=started))
                counts["failed"] += 1
                if isinstance(exc, torch.cuda.OutOfMemoryError):
                    torch.cuda.empty_cache()
            finally:
                store.clear_running(point.key)
            account.update(points=account["points"] + 1, finished_at=now())
            store.write_job(job_file, account)
        return counts


def _load(point: ResolvedPoint) -> tuple[LoadedModel | None, Exception | None]:
    p = point.point
    try:
        return load(point.settings["model"], device=p.device, dtype=p.dtype, attn_backend=p.attn_backend), None
    except Exception as exc:  # noqa: BLE001 -- becomes every point's failure record
        return None, exc


def run_inprocess(groups: Sequence[PointGroup]) -> dict[str, int]:
    """Run groups one after another in this process (the local launcher); returns summed counts."""
    total = {"done": 0, "failed": 0, "skipped": 0}
    start = time.perf_counter()
    for group in groups:
        for k, v in group().items():
            total[k] += v
    total["seconds"] = time.perf_counter() - start
    return total
