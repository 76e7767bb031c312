"""Whether the holder of a running marker (``running/{key}.json``) is alive, and the heartbeat that proves it.

A marker names its holder by more than a pid: host, pid, the process's start time (``/proc/PID/stat``) with
the host's boot id and pid namespace, and the Slurm job id. While the holder evaluates the point a daemon
thread refreshes the marker file's modification time every few seconds (:class:`Heartbeat`): that mtime is the
holder's last sign of life, and the marker says how long a silence means its holder is gone
(``stale_after_s``, set by the sweep: ``hydra.sweeper.stale_after_s``).

A marker is *stale* (its point may be taken over) when it is unreadable, when its holder is proven gone on
this host (its pid has exited, or now belongs to another process: another start time or another boot), or when
its last sign of life is older than its bound -- whatever the host, so a marker of a killed run on another
login node, or one eleven months old, never holds a point for ever. Markers written before heartbeats existed
are judged by their file's age alike. A live Slurm holder on another node is also checked against ``squeue``
by the runner (:func:`illada.runner.holder_gone`), which notices a cancelled job before its bound runs out.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

DEFAULT_STALE_AFTER_S = 300.0  # long enough for a filesystem's attribute cache and clock skew between hosts


def heartbeat_interval(stale_after_s: float) -> float:
    """How often a holder refreshes its marker: every few seconds, and at least six times per bound."""
    return max(0.01, min(5.0, stale_after_s / 6))


def _proc_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22); None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])  # the name, in parentheses, may hold spaces
    except (OSError, ValueError, IndexError):
        return None


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _pid_namespace() -> int | None:
    """The pid namespace of this process (containers on one host have their own): pids are only comparable
    inside one."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def process_identity(pid: int | None = None) -> dict[str, Any]:
    """What singles out a process beyond its pid (a pid is reused after exit and after a reboot): its start
    time, the host's boot id and the pid namespace. Fields are None where ``/proc`` does not say."""
    return {"pid_start": _proc_start(os.getpid() if pid is None else pid), "boot_id": _boot_id(),
            "pid_ns": _pid_namespace()}


@dataclass(frozen=True)
class Liveness:
    """The verdict on a marker: ``alive`` or not, why, and its last sign of life (seconds ago; None: unknown)."""

    alive: bool
    why: str
    age_s: float | None = None

    @property
    def word(self) -> str:
        return "alive" if self.alive else "stale"


def holder(marker: Mapping[str, Any]) -> str:
    """The holder in words: ``job 123_4 on node7 (pid 4242)``."""
    return f"job {marker.get('job_id', '?')} on {marker.get('host', '?')} (pid {marker.get('pid', '?')})"


def liveness(marker: Mapping[str, Any], age_s: float | None) -> Liveness:
    """Whether the holder of ``marker`` can be taken for alive, given the age of its last heartbeat (the marker
    file's mtime; None when the file is gone). See the module docstring for the rules."""
    if marker.get("corrupt"):
        return Liveness(False, f"unreadable marker ({marker['corrupt']})", age_s)
    dead = _proven_dead(marker)
    if dead:
        return Liveness(False, dead, age_s)
    bound = stale_bound(marker)
    if age_s is not None and age_s > bound:
        return Liveness(False, f"no sign of life for {age_s:.0f} s (stale after {bound:g} s)", age_s)
    return Liveness(True, "heartbeat" if age_s is None else f"last sign of life {age_s:.0f} s ago", age_s)


def stale_bound(marker: Mapping[str, Any]) -> float:
    """Seconds of silence after which the marker's holder counts as gone: the bound its holder wrote
    (``stale_after_s``), else :data:`DEFAULT_STALE_AFTER_S` (markers written before heartbeats)."""
    try:
        bound = float(marker.get("stale_after_s") or DEFAULT_STALE_AFTER_S)
    except (TypeError, ValueError):
        return DEFAULT_STALE_AFTER_S
    return bound if bound > 0 else DEFAULT_STALE_AFTER_S


def _proven_dead(marker: Mapping[str, Any]) -> str:
    """Why the marker's process is certainly gone, checked on its own host and pid namespace; "" otherwise."""
    if marker.get("host") != socket.gethostname() or not marker.get("pid"):
        return ""
    ns = marker.get("pid_ns")
    if ns is not None and ns != _pid_namespace():  # another container on this host: its pids are not ours
        return ""
    try:
        pid = int(marker["pid"])
        os.kill(pid, 0)
    except (ValueError, TypeError, OverflowError):
        return ""
    except ProcessLookupError:
        return f"process {marker['pid']} has exited"
    except PermissionError:
        pass  # another user's process exists: compare its start time below
    boot = marker.get("boot_id")
    if boot is not None and _boot_id() is not None and boot != _boot_id():
        return f"the host rebooted since (pid {pid} is another process now)"
    start = marker.get("pid_start")
    if start is not None and _proc_start(pid) not in (None, start):
        return f"pid {pid} now belongs to another process (another start time)"
    return ""


class Heartbeat:
    """While entered, a daemon thread refreshes the modification time of the marker at ``path`` every
    ``interval`` seconds. It holds the marker's file open and touches that file only, so a marker another job
    has put in its place (after taking the point over) is never refreshed by this one."""

    def __init__(self, path: Path, interval: float) -> None:
        self.path, self.interval = Path(path), interval
        self._stop = threading.Event()
        self._fd: int | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return self  # the marker is gone already: nothing to keep alive
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {self.path.name}", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                os.utime(self._fd)
            except OSError:  # a filesystem hiccup: the next beat tries again; the bound allows for several
                pass

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._fd is not None:
            os.close(self._fd)


def age_of(path: Path, now: float | None = None) -> float | None:
    """Seconds since the file was last modified (never negative: clocks of hosts differ); None when absent."""
    try:
        mtime = os.stat(path).st_mtime
    except FileNotFoundError:
        return None
    return max(0.0, (time.time() if now is None else now) - mtime)
