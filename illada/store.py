"""The results store of a sweep: one directory, one record per point, safe with many concurrent jobs.

Layout of a sweep directory (every file is written whole, then renamed into place; nothing is appended and
there is no shared database, so jobs on many nodes of a shared filesystem never corrupt each other)::

    points/{key}.json      the sweep's plan: one file per point (settings + the overrides that made it)
    records/{key}.json     the point's record (illada.records): status "ok" or "failed" (+ cause, log path)
    records/{key}.items.parquet
    running/{key}.json     marker while a job evaluates the point (host, job id, pid, start time)
    jobs/{job}.json        one file per job attempt: host, GPUs, load and evaluation seconds (GPU-hours)
    archive/               failure records set aside when their points are run again (``rerun_failed``)
    logs/                  submitit's job folders (scripts, stdout/stderr)

A point is *done* when its record says ok, *failed* when its record says failed, *running* while its
marker exists, and *missing* otherwise. Records are keyed by ``ResolvedPoint.key``, the content hash of the
resolved settings, so running the same sweep again finds what is finished whatever the job layout was.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from illada.atomic import atomic_write_text
from illada.records import now, read_summary, summary_path, write_record

DONE, FAILED, RUNNING, MISSING = "done", "failed", "running", "missing"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2, default=str))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


@dataclass
class SweepStatus:
    """Counts of a sweep's points by state, plus the GPU-hours its jobs spent."""

    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # running markers whose process is gone (same host)
    missing: list[str] = field(default_factory=list)
    gpu_hours: float = 0.0
    jobs: int = 0

    @property
    def total(self) -> int:
        return len(self.done) + len(self.failed) + len(self.running) + len(self.missing)

    def line(self) -> str:
        stale = f" ({len(self.stale)} stale)" if self.stale else ""
        return (f"{self.total} points: {len(self.done)} done, {len(self.failed)} failed, "
                f"{len(self.running)} running{stale}, {len(self.missing)} missing; "
                f"{self.gpu_hours:.3f} GPU-hours in {self.jobs} job attempts")


class SweepStore:
    """The directory of one sweep (see the module docstring for its layout)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.points_dir = self.root / "points"
        self.records_dir = self.root / "records"
        self.running_dir = self.root / "running"
        self.jobs_dir = self.root / "jobs"
        self.archive_dir = self.root / "archive"
        self.logs_dir = self.root / "logs"

    # ---------------------------------------------------------------------------------------------- plan
    def plan(self, key: str, settings: dict[str, Any], overrides: Iterable[str] = (), fixed: Iterable[str] = ()
             ) -> None:
        """Add a point to the sweep's plan (what ``status`` counts as missing until it has a record), with the
        overrides that single it out and those the whole sweep shares."""
        path = self.points_dir / f"{key}.json"
        if not path.exists():
            _write_json(path, {"key": key, "overrides": list(overrides), "fixed": list(fixed), "settings": settings})

    def plan_of(self, key: str) -> dict[str, Any]:
        """The planned point (settings and overrides); empty when the key was never planned."""
        return _read_json(self.points_dir / f"{key}.json") or {}

    def planned(self) -> list[str]:
        return sorted(p.stem for p in self.points_dir.glob("*.json")) if self.points_dir.is_dir() else []

    # ------------------------------------------------------------------------------------------- records
    def record(self, key: str) -> dict[str, Any] | None:
        """The point's record, or None."""
        try:
            return read_summary(summary_path(self.records_dir, key))
        except FileNotFoundError:
            return None

    def records(self, status: str | None = "ok") -> list[dict[str, Any]]:
        """All records (of one ``status``; None: all)."""
        if not self.records_dir.is_dir():
            return []
        out = [read_summary(p) for p in sorted(self.records_dir.glob("*.json"))]
        return [r for r in out if status is None or r.get("status") == status]

    def has_record(self, key: str) -> bool:
        return summary_path(self.records_dir, key).exists()

    def write_failure(self, summary: dict[str, Any]) -> None:
        """Write a failure record (see :func:`illada.evaluate.failure_summary`) unless the point has a record."""
        if not self.has_record(summary["key"]):
            write_record(self.records_dir, summary)

    def todo(self, keys: Iterable[str], rerun_failed: bool = False) -> list[str]:
        """The keys still to run: missing ones, and failed ones with ``rerun_failed`` (their failure records
        move to ``archive/`` so that the job that reruns them does not take them for finished)."""
        out = []
        for key in keys:
            rec = self.record(key)
            if rec is None:
                out.append(key)
            elif rec.get("status") != "ok" and rerun_failed:
                self.archive_dir.mkdir(parents=True, exist_ok=True)
                stamp = time.strftime("%Y%m%dT%H%M%S")
                os.replace(summary_path(self.records_dir, key), self.archive_dir / f"{key}.{stamp}.json")
                out.append(key)
        return out

    # ------------------------------------------------------------------------------------------- markers
    def mark_running(self, key: str, job: dict[str, Any]) -> None:
        _write_json(self.running_dir / f"{key}.json", {**job, "key": key, "started_at": now()})

    def clear_running(self, key: str) -> None:
        (self.running_dir / f"{key}.json").unlink(missing_ok=True)

    def running(self, key: str) -> dict[str, Any] | None:
        return _read_json(self.running_dir / f"{key}.json")

    def is_stale(self, key: str) -> bool:
        """True when the point's running marker was left by a process of this host that no longer exists."""
        return _is_stale(self.running(key) or {})

    def write_job(self, job_id: str, info: dict[str, Any]) -> None:
        """Job accounting, rewritten whole after each point so a killed job still leaves its last total."""
        _write_json(self.jobs_dir / f"{job_id}.json", info)

    # -------------------------------------------------------------------------------------------- status
    def state(self, key: str) -> str:
        rec = self.record(key)
        if rec is not None:
            return DONE if rec.get("status") == "ok" else FAILED
        return RUNNING if self.running(key) is not None else MISSING

    def status(self) -> SweepStatus:
        st = SweepStatus()
        keys = set(self.planned())  # + records and markers of points an older version of the sweep planned
        for folder in (self.records_dir, self.running_dir):
            keys |= {p.name[:-5] for p in folder.glob("*.json")} if folder.is_dir() else set()
        for key in sorted(keys):
            state = self.state(key)
            getattr(st, state).append(key)
            if state == RUNNING and self.is_stale(key):
                st.stale.append(key)
        jobs = [_read_json(p) for p in self.jobs_dir.glob("*.json")] if self.jobs_dir.is_dir() else []
        jobs = [j for j in jobs if j]
        st.jobs = len(jobs)
        st.gpu_hours = sum(j.get("gpus", 0) * (j.get("load_seconds", 0.0) + j.get("eval_seconds", 0.0))
                           for j in jobs) / 3600
        return st


def _is_stale(marker: dict[str, Any]) -> bool:
    """A marker left by a process of this host that no longer exists (other hosts cannot be checked)."""
    if marker.get("host") != socket.gethostname() or not marker.get("pid"):
        return False
    try:
        os.kill(int(marker["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def main(argv: list[str] | None = None) -> None:
    """``illada-status SWEEP_DIR``: points done / failed / running / missing and GPU-hours spent."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--failed", action="store_true", help="also list each failed point's cause and log")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        raise SystemExit(f"error: {args.sweep_dir} is not a directory")
    store = SweepStore(args.sweep_dir)
    st = store.status()
    print(st.line())
    if args.failed:
        for key in st.failed:
            err = (store.record(key) or {}).get("error") or {}
            print(f"  {key}: {err.get('type')}: {err.get('message')}  (log: {err.get('log_path')})")


if __name__ == "__main__":
    main()
