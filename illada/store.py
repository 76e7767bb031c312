"""The results store of a sweep: one directory, one record per point, safe with many concurrent jobs.

Layout of a sweep directory (every file is written whole, flushed, then renamed into place; nothing is
appended and there is no shared database, so jobs on many nodes of a shared filesystem never corrupt each
other; files get the usual ``0o666`` minus the umask, so teammates can read a sweep the umask shares)::

    plan.json              the current plan: the keys of the points the last ``illada-sweep`` run planned
    points/{key}.json      every point ever planned: settings + the overrides that made it
    records/{key}.json     the point's record (illada.records): status "ok" or "failed" (+ cause, log path)
    records/{key}.items.parquet
    running/{key}.json     marker while a job evaluates the point (host, job id, pid + process start, start
                           time); its mtime is the holder's heartbeat (illada.markers)
    jobs/{job}.json        one file per job attempt: host, GPUs, load and evaluation seconds (GPU-hours)
    archive/               failure records set aside when their points are run again (``rerun_failed``), and
                           unreadable records (``*.json.corrupt``) set aside when their points are run again
    .submitit/             submitit's job folders (scripts, stdout/stderr; hydra.launcher.submitit_folder)
    multirun.yaml          the config of the Hydra multirun that last ran here

A point is *done* when its record says ok, *failed* when its record says failed, *corrupt* when its record
cannot be read (cut short by a crash: it runs again), *running* while its marker exists, and *missing*
otherwise. Records are keyed by ``ResolvedPoint.key``, the content hash of the resolved settings, so running
the same sweep again finds what is finished whatever the job layout was. Where ``plan.json`` exists, only its
points are counted; records of other points (e.g. of a checkpoint since replaced, whose hash changed) are
*superseded*: kept and shown apart. Reading never fails on a damaged file: it is reported with its path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from illada.atomic import atomic_write_text, create_temp
from illada.markers import Liveness, age_of, holder, liveness
from illada.records import CorruptFileError, items_path, now, read_json, read_summary, summary_path, write_record

DONE, FAILED, RUNNING, MISSING, CORRUPT = "done", "failed", "running", "missing", "corrupt"
PLAN_FILE = "plan.json"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2, default=str))


def _read_json(path: Path) -> dict[str, Any] | None:
    """The file's JSON object; None when it does not exist; :class:`CorruptFileError` when it is unreadable."""
    try:
        return read_json(path)
    except FileNotFoundError:
        return None


def _keys(folder: Path) -> set[str]:
    """Keys of the ``{key}.json`` files of a folder (none when it does not exist), one listing, no reads."""
    try:
        return {e.name[:-5] for e in os.scandir(folder) if e.name.endswith(".json") and not e.name.startswith(".")}
    except FileNotFoundError:
        return set()


@dataclass
class SweepStatus:
    """Keys of a sweep's points by state, plus the GPU-hours its jobs spent.

    With a current plan (``plan.json``), only its points are counted; records and markers of other points
    (planned by an earlier version of the sweep) are listed apart as ``superseded``."""

    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # running markers whose process is gone (or unreadable)
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)  # an unreadable record: the point runs again
    superseded: list[str] = field(default_factory=list)  # records / markers of points outside the current plan
    unreadable: list[CorruptFileError] = field(default_factory=list)  # every damaged file seen, with its path
    gpu_hours: float = 0.0
    jobs: int = 0

    @property
    def total(self) -> int:
        return len(self.done) + len(self.failed) + len(self.running) + len(self.missing) + len(self.corrupt)

    def line(self) -> str:
        stale = f" ({len(self.stale)} stale)" if self.stale else ""
        corrupt = f", {len(self.corrupt)} corrupt" if self.corrupt else ""
        superseded = (f"; {len(self.superseded)} superseded (records of points no longer in the plan, kept)"
                      if self.superseded else "")
        return (f"{self.total} points: {len(self.done)} done, {len(self.failed)} failed, "
                f"{len(self.running)} running{stale}, {len(self.missing)} missing{corrupt}; "
                f"{self.gpu_hours:.3f} GPU-hours in {self.jobs} job attempts{superseded}")


@dataclass
class Triage:
    """What :meth:`SweepStore.triage` found among a plan's keys and did to them."""

    done: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # failure records kept: the point counts as finished
    rerun: list[str] = field(default_factory=list)  # failed points whose failure record went to archive/
    corrupt: list[str] = field(default_factory=list)  # unreadable records, moved to archive/ (*.corrupt)
    todo: list[str] = field(default_factory=list)  # what to run: missing + rerun + corrupt, in the plan's order


class SweepStore:
    """The directory of one sweep (see the module docstring for its layout)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.points_dir = self.root / "points"
        self.records_dir = self.root / "records"
        self.running_dir = self.root / "running"
        self.jobs_dir = self.root / "jobs"
        self.archive_dir = self.root / "archive"
        self.plan_path = self.root / PLAN_FILE

    # ---------------------------------------------------------------------------------------------- plan
    def plan(self, key: str, settings: dict[str, Any], overrides: Iterable[str] = (), fixed: Iterable[str] = ()
             ) -> None:
        """Add a point to the sweep's plan (what ``status`` counts as missing until it has a record), with the
        overrides that single it out and those the whole sweep shares. An unreadable plan file is rewritten."""
        path = self.points_dir / f"{key}.json"
        try:
            if _read_json(path) is not None:
                return
        except CorruptFileError:
            pass
        _write_json(path, {"key": key, "overrides": list(overrides), "fixed": list(fixed), "settings": settings})

    def plan_of(self, key: str) -> dict[str, Any]:
        """The planned point (settings and overrides); empty when the key was never planned or its file is
        unreadable."""
        try:
            return _read_json(self.points_dir / f"{key}.json") or {}
        except CorruptFileError:
            return {}

    def planned(self) -> list[str]:
        """Keys of every point ever planned here (``points/``), current or not."""
        return sorted(_keys(self.points_dir))

    def set_current_plan(self, keys: Iterable[str]) -> None:
        """Record the keys of the plan being run (``plan.json``): status and analysis count these points and
        list records of other points as superseded."""
        _write_json(self.plan_path, {"keys": sorted(set(keys)), "written_at": now()})

    def current_plan(self) -> list[str] | None:
        """The keys of the current plan; None for a sweep without ``plan.json`` (older sweeps, searches), where
        every planned or recorded point counts. :class:`CorruptFileError` when the file is unreadable."""
        data = _read_json(self.plan_path)
        if data is None:
            return None
        if not isinstance(data.get("keys"), list):
            raise CorruptFileError(self.plan_path, "no 'keys' list")
        return [str(k) for k in data["keys"]]

    # ------------------------------------------------------------------------------------------- records
    def _read_record(self, key: str) -> dict[str, Any] | None:
        """The record; None when there is none; :class:`CorruptFileError` when it is unreadable."""
        try:
            return read_summary(summary_path(self.records_dir, key))
        except FileNotFoundError:
            return None

    def record(self, key: str) -> dict[str, Any] | None:
        """The point's record, or None when it has none or its record is unreadable (see :meth:`state`)."""
        try:
            return self._read_record(key)
        except CorruptFileError:
            return None

    def records(self, status: str | None = "ok") -> list[dict[str, Any]]:
        """All readable records (of one ``status``; None: all)."""
        out = [self.record(key) for key in sorted(_keys(self.records_dir))]
        return [r for r in out if r is not None and (status is None or r.get("status") == status)]

    def has_record(self, key: str) -> bool:
        """True when the point is finished: it has a readable record (ok or failed)."""
        return self.record(key) is not None

    def write_failure(self, summary: dict[str, Any]) -> None:
        """Write a failure record (see :func:`illada.evaluate.failure_summary`) unless the point has a record."""
        if not self.has_record(summary["key"]):
            self._set_aside_corrupt(summary["key"])
            write_record(self.records_dir, summary)

    def triage(self, keys: Iterable[str], rerun_failed: bool = False) -> Triage:
        """Sort a plan's keys by what their records say and make the store ready to run what is left: an
        unreadable record is moved to ``archive/`` (suffix ``.corrupt``) and its point run again; with
        ``rerun_failed`` a failure record is moved to ``archive/`` too, so that the job that reruns the point
        does not take it for finished."""
        out = Triage()
        for key in keys:
            try:
                rec = self._read_record(key)
            except CorruptFileError:
                self._set_aside_corrupt(key)  # re-checks: another driver may have set it aside already
                out.corrupt.append(key)
                out.todo.append(key)
                continue
            if rec is None:
                out.missing.append(key)
                out.todo.append(key)
            elif rec.get("status") == "ok":
                out.done.append(key)
            elif rerun_failed:
                self._archive(key, "")
                out.rerun.append(key)
                out.todo.append(key)
            else:
                out.failed.append(key)
        return out

    def todo(self, keys: Iterable[str], rerun_failed: bool = False) -> list[str]:
        """The keys still to run: missing ones, ones whose record is unreadable, and failed ones with
        ``rerun_failed`` (see :meth:`triage`, which also says which is which)."""
        return self.triage(keys, rerun_failed).todo

    def _set_aside_corrupt(self, key: str) -> Path | None:
        """Move an unreadable record to ``archive/`` (never delete a file: it may be all that is left)."""
        try:
            self._read_record(key)
        except CorruptFileError:
            try:
                return self._archive(key, ".corrupt")
            except FileNotFoundError:  # another process set it aside first
                return None
        return None

    def _archive(self, key: str, suffix: str) -> Path:
        """Move the point's record (and its per-item table) to ``archive/{key}.{time}[.n].json{suffix}``."""
        self.archive_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        stem, n = f"{key}.{stamp}", 0
        while (self.archive_dir / f"{stem}.json{suffix}").exists():  # twice in one second: do not overwrite
            n += 1
            stem = f"{key}.{stamp}.{n}"
        target = self.archive_dir / f"{stem}.json{suffix}"
        items = items_path(self.records_dir, key)
        if items.exists():
            os.replace(items, self.archive_dir / f"{stem}.items.parquet")
        os.replace(summary_path(self.records_dir, key), target)
        return target

    # ------------------------------------------------------------------------------------------- markers
    def claim(self, key: str, job: dict[str, Any], stale: dict[str, Any] | None = None) -> bool:
        """Write the point's running marker only if it has none -- or, given the ``stale`` marker read
        before (:meth:`running`), only if the marker is still that one (taking over from a job that is gone).
        True when the caller now holds the point. Race-free between processes and hosts: the marker appears
        whole by a hard link, which fails when the name exists, and a stale marker is first renamed aside,
        which only one taker can do."""
        path = self.running_dir / f"{key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        if stale is not None:
            aside = path.with_name(f".{path.name}.{secrets.token_hex(6)}.stale")
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                pass  # released meanwhile: claim it as an absent one
            else:
                try:
                    fresh = _read_json(aside) != stale  # another taker put its own marker there meanwhile
                except CorruptFileError as e:
                    fresh = stale != {"key": key, "corrupt": e.reason}
                if fresh:
                    with contextlib.suppress(FileExistsError):
                        os.link(aside, path)
                aside.unlink()
                if fresh:
                    return False
        tmp = create_temp(path)
        tmp.write_text(json.dumps({**job, "key": key, "started_at": now()}, indent=2, default=str))
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink()
        self._set_aside_corrupt(key)  # an unreadable record: the one this job will write replaces it
        return True

    def clear_running(self, key: str) -> None:
        (self.running_dir / f"{key}.json").unlink(missing_ok=True)

    def running(self, key: str) -> dict[str, Any] | None:
        """The point's running marker, or None. An unreadable marker reads as ``{"key", "corrupt": reason}``,
        which :meth:`is_stale` takes for stale (so another job may take the point over)."""
        try:
            return _read_json(self.running_dir / f"{key}.json")
        except CorruptFileError as e:
            return {"key": key, "corrupt": e.reason}

    def liveness(self, key: str) -> Liveness:
        """Whether the holder of the point's running marker is alive (:func:`illada.markers.liveness`: its
        heartbeat, the marker file's mtime, is within the marker's bound and its process is not proven gone)."""
        return liveness(self.running(key) or {}, age_of(self.running_dir / f"{key}.json"))

    def is_stale(self, key: str) -> bool:
        """True when the point's running marker is unreadable, its holder is proven gone, or it has shown no
        sign of life for longer than its bound (:meth:`liveness`)."""
        return not self.liveness(key).alive

    def write_job(self, job_id: str, info: dict[str, Any]) -> None:
        """Job accounting, rewritten whole after each point so a killed job still leaves its last total."""
        _write_json(self.jobs_dir / f"{job_id}.json", info)

    # -------------------------------------------------------------------------------------------- status
    def state(self, key: str) -> str:
        """done / failed (its record says so), corrupt (its record is unreadable), running (a marker), missing."""
        return self._state_of(key, recorded=True, marked=True, unreadable=[])

    def states(self, keys: Iterable[str]) -> dict[str, str]:
        """:meth:`state` of many keys; ``records/`` and ``running/`` are listed once, not probed per key."""
        recorded, marked = _keys(self.records_dir), _keys(self.running_dir)
        return {key: self._state_of(key, key in recorded, key in marked, []) for key in keys}

    def status(self) -> SweepStatus:
        """Count the current plan's points by state (see :class:`SweepStatus`); never fails on a damaged file."""
        st = SweepStatus()
        try:
            current = self.current_plan()
        except CorruptFileError as e:
            st.unreadable.append(e)
            current = None
        recorded, marked = _keys(self.records_dir), _keys(self.running_dir)
        if current is None:  # no plan.json: every point planned, recorded or marked counts
            keys = set(self.planned()) | recorded | marked
        else:
            keys = set(current)
            st.superseded = sorted((recorded | marked) - keys)
        known = _recorded_statuses(self.root, recorded)
        for key in sorted(keys):
            status = known.get(key)  # a readable record's status, from the records' summary
            state = ((DONE if status == "ok" else FAILED) if status is not None
                     else self._state_of(key, key in recorded, key in marked, st.unreadable))
            getattr(st, state).append(key)
            if state == RUNNING and self.is_stale(key):
                st.stale.append(key)
        for job_id in sorted(_keys(self.jobs_dir)):
            try:
                job = _read_json(self.jobs_dir / f"{job_id}.json")
            except CorruptFileError as e:
                st.unreadable.append(e)
                continue
            if job is None:
                continue
            st.jobs += 1
            st.gpu_hours += job.get("gpus", 0) * (job.get("load_seconds", 0.0) + job.get("eval_seconds", 0.0)) / 3600
        return st

    def _state_of(self, key: str, recorded: bool, marked: bool, unreadable: list[CorruptFileError]) -> str:
        """:meth:`state`, reading only the files a directory listing showed (``recorded``, ``marked``) and
        noting damaged ones in ``unreadable``."""
        if recorded:
            try:
                rec = self._read_record(key)
            except CorruptFileError as e:
                unreadable.append(e)
                return CORRUPT
            if rec is not None:
                return DONE if rec.get("status") == "ok" else FAILED
        if marked:
            marker = self.running(key)
            if marker is not None:
                if marker.get("corrupt"):
                    unreadable.append(CorruptFileError(self.running_dir / f"{key}.json", marker["corrupt"]))
                return RUNNING
        return MISSING


SUMMARY_MIN_RECORDS = 200  # from this many records on, their statuses come from illada.summary


def _recorded_statuses(root: Path, recorded: set[str]) -> dict[str, str]:
    """Key -> status of the readable records of a large sweep, from the records' columnar summary (brought
    up to date with the records first); empty for a small sweep, whose records are read one by one."""
    if len(recorded) < SUMMARY_MIN_RECORDS:
        return {}
    from illada.summary import summarise

    statuses = summarise(root, "records", need_values=False).statuses
    return {name[:-5]: status for name, status in statuses.items() if status is not None}


def _what_happens(store: SweepStore, path: Path) -> str:
    """What a damaged file of the store means for the sweep, in a user's words."""
    folder = path.parent
    if folder == store.records_dir:
        return "record: its point counts as corrupt and runs again with the next illada-sweep (file kept in archive/)"
    if folder == store.running_dir:
        return "running marker: counted as stale, another job may take the point over"
    if folder == store.jobs_dir:
        return "job accounting: left out of the GPU-hours"
    if path == store.plan_path:
        return "current plan: every point ever planned is counted until the next illada-sweep rewrites it"
    return "ignored"


STORE_ENTRIES = (PLAN_FILE, "points", "records", "running", "jobs")


def is_sweep_dir(path: str | Path) -> bool:
    """True when ``path`` holds a sweep's files (a plan, planned points, records, markers or job files)."""
    return any((Path(path) / name).exists() for name in STORE_ENTRIES)


def sweeps_under(path: str | Path, depth: int = 3, limit: int = 10) -> list[Path]:
    """Sweep directories under ``path`` (breadth first, at most ``depth`` levels down, at most ``limit``)."""
    found: list[Path] = []
    level = [Path(path)]
    for _ in range(depth):
        below = []
        for folder in level:
            try:
                children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError:
                continue
            for child in children:
                (found if is_sweep_dir(child) else below).append(child)
        if len(found) >= limit or not below:
            break
        level = below
    return found[:limit]


def _not_a_sweep(path: Path) -> str:
    """The error line for a folder that is not a sweep directory, naming the sweeps found under it."""
    found = sweeps_under(path, limit=11)
    more = ", ..." if len(found) > 10 else ""
    hint = (f"; sweeps under it: {', '.join(map(str, found[:10]))}{more}" if found
            else f"; no sweep directory under it either (illada-sweep writes them to runs/sweeps/NAME)")
    return f"error: {path} is not a sweep directory (no {PLAN_FILE}, points/ or records/){hint}"


def main(argv: list[str] | None = None) -> None:
    """``illada-status SWEEP_DIR``: points done / failed / running / missing and GPU-hours spent."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("sweep_dir", type=Path, help="the sweep's directory (e.g. runs/sweeps/frontier)")
    parser.add_argument("--failed", action="store_true", help="also list each failed point's cause and log")
    parser.add_argument("--running", action="store_true",
                        help="also list each running point: key, overrides, its holder (job id, host, pid), the "
                             "age of its last heartbeat, and alive or stale (stale: its holder is gone or silent "
                             "for longer than its bound; the next run takes it over)")
    parser.add_argument("--missing", action="store_true",
                        help="also list each point of the current plan with no record and no live job: key and "
                             "overrides (the next illada-sweep with the same command runs them)")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        raise SystemExit(f"error: {args.sweep_dir} is not a directory")
    if not is_sweep_dir(args.sweep_dir):
        print(_not_a_sweep(args.sweep_dir), file=sys.stderr)
        raise SystemExit(2)
    store = SweepStore(args.sweep_dir)
    st = store.status()
    print(st.line())
    if st.unreadable:
        print(f"warning: {len(st.unreadable)} unreadable files (cut short or damaged, e.g. by a node that crashed "
              "while writing):", file=sys.stderr)
        for e in st.unreadable:
            print(f"  {e.path}: {e.reason}\n    -> {_what_happens(store, e.path)}", file=sys.stderr)
    if args.failed:
        _print_failures(store, st.failed)
        superseded = [k for k in st.superseded if store.state(k) == FAILED]
        if superseded:
            print(f"failure records of superseded points (no longer in the plan; --rerun-failed leaves them):")
            _print_failures(store, superseded)
    if args.running:
        print(f"running ({len(st.running) - len(st.stale)} alive, {len(st.stale)} stale):")
        _print_running(store, st.running)
    if args.missing:
        print(f"missing ({len(st.missing) + len(st.stale)}):")
        for key in st.missing:
            print(f"  {key}: {_overrides(store, key)}")
        _print_running(store, st.stale, note="the next run takes the point over")


def _overrides(store: SweepStore, key: str) -> str:
    """The overrides that single the point out of its sweep, as one would type them."""
    planned = store.plan_of(key)
    return " ".join(planned.get("overrides") or []) or "(no overrides recorded)"


def _print_running(store: SweepStore, keys: list[str], note: str = "") -> None:
    """One line per marked point: key, overrides, holder, start, and alive/stale with its last sign of life."""
    for key in keys:
        marker = store.running(key) or {}
        verdict = store.liveness(key)
        where = (holder(marker) + (f", since {marker['started_at']}" if marker.get("started_at") else "")
                 + f"; {verdict.word}: {verdict.why}")
        print(f"  {key}: {_overrides(store, key)}  ({where}{'; ' + note if note else ''})")


def _print_failures(store: SweepStore, keys: list[str]) -> None:
    for key in keys:
        err = (store.record(key) or {}).get("error") or {}
        print(f"  {key}: {err.get('type')}: {err.get('message')}  (log: {err.get('log_path')})")


if __name__ == "__main__":
    main()
