"""Fault injection on the one-node Slurm cluster (``.ci/slurm/setup.sh``): a sweep of many points in array tasks
while tasks are requeued, signalled (USR2, TERM; some within the first second of a task) and cancelled (pending
and running) at random, then resumed (``--rerun-failed``) until every point is done. Prints what it injected and
what it cost: failure records (each with its cause), points evaluated twice, points whose work was lost and had
to run again, and the wall time to 100% done.

    cd REPO && PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python -m tests.slurm.inject_faults [--points 500]

It runs the ``sweeps.app`` of the current directory (PYTHONPATH), so the same script measures another checkout:
``cd OTHER && PYTHONPATH=$PWD python /path/to/inject_faults.py --sweep-dir /tmp/x``. It only signals and cancels
the tasks of the arrays its own sweep submitted. Not a test (not collected by pytest): a measurement.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

KINDS = ("requeue", "usr2_early", "usr2", "term_early", "term", "cancel_pending", "cancel_running")


def _sh(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The command's outcome; one Slurm does not answer within ``timeout`` seconds fails."""
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(list(cmd), 124, "", f"no answer within {timeout:g} s")


def _queue(arrays: set[str]) -> dict[str, str]:
    """Task id -> squeue state (PENDING, RUNNING, ...) of this sweep's arrays."""
    if not arrays:
        return {}
    out = _sh("squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(sorted(arrays))).stdout
    return dict(line.split() for line in out.splitlines() if len(line.split()) == 2)


def _arrays(sweep_dir: Path) -> set[str]:
    return {p.name.split("_")[0] for p in (sweep_dir / ".submitit").glob("*_*") if p.is_dir()}


def _starting(sweep_dir: Path, task: str) -> bool:
    """The task's Python process has started and is still importing/unpickling (submitit's "Loading pickle"
    line, and none of the job's own lines after it): a signal now lands within its first second or so."""
    try:  # submitit logs INFO lines to stdout, as the job prints its own
        text = (sweep_dir / ".submitit" / task / f"{task}_0_log.out").read_text()
    except FileNotFoundError:
        return False
    return text.rfind("Loading pickle") > max(text.rfind(" points of model "), text.rfind("] finished: "))


class Injector(threading.Thread):
    """Injects one fault every ``every_s`` seconds (on average) into this sweep's tasks, kinds at random."""

    def __init__(self, sweep_dir: Path, every_s: float, seed: int, kinds: tuple[str, ...] = KINDS) -> None:
        super().__init__(daemon=True)
        self.sweep_dir, self.every_s, self.rng, self.kinds = sweep_dir, every_s, random.Random(seed), kinds
        self.injected: collections.Counter[str] = collections.Counter()
        self.refused: collections.Counter[str] = collections.Counter()  # Slurm answered with an error
        self.log: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.rng.expovariate(1 / self.every_s)):
            kind = self.rng.choice(self.kinds)
            task = self._pick(kind)
            if task is None:
                continue
            cmd = {"requeue": ["scontrol", "requeue", task], "usr2_early": ["scancel", "--signal=USR2", task],
                   "usr2": ["scancel", "--signal=USR2", task], "term_early": ["scancel", "--signal=TERM", task],
                   "term": ["scancel", "--signal=TERM", task], "cancel_pending": ["scancel", task],
                   "cancel_running": ["scancel", task]}[kind]
            # counted even when Slurm answers with an error ("Job can not be altered now"): the signal may
            # have landed all the same; the log says which
            # scancel retries for a minute while Slurm answers "Job can not be altered now" (a task starting or
            # being requeued, often by this very signal): 10 s is enough to have sent it
            sent = time.strftime('%H:%M:%S')
            done = _sh(*cmd, timeout=10)
            self.injected[kind] += 1
            self.refused[kind] += done.returncode != 0
            error = (done.stderr.strip().splitlines() or [""])[-1] if done.returncode else ""
            self.log.append(f"{sent} {kind} {task}" + (f" (refused: {error})" if error else ""))

    def _pick(self, kind: str) -> str | None:
        """A task of this sweep in the state the fault needs (for *_early: one that is starting, waited for
        up to 30 s), or None."""
        want = "PENDING" if kind == "cancel_pending" else "RUNNING"
        deadline = time.monotonic() + (30 if kind.endswith("_early") else 0)
        while not self.stop.is_set():
            tasks = [t for t, state in _queue(_arrays(self.sweep_dir)).items() if state == want and "[" not in t]
            if kind.endswith("_early"):
                tasks = [t for t in tasks if _starting(self.sweep_dir, t)]
            if tasks:
                return self.rng.choice(sorted(tasks))
            if time.monotonic() > deadline:
                return None
            time.sleep(0.3)
        return None


def _evaluations(sweep_dir: Path) -> tuple[collections.Counter, int]:
    """From the jobs' logs: how many times each point was evaluated to the end (done or failed), and how many
    evaluations were cut short (an attempt that started a point, i.e. printed its header, then ended without
    its last line; its next point ran again in a later attempt)."""
    finished: collections.Counter[str] = collections.Counter()
    cut = 0
    settled = re.compile(r"^\[job \S+\] \d+/\d+ ([0-9a-f]{16}) (done|failed)")
    for log in (sweep_dir / ".submitit").glob("*/*_0_log.out"):
        attempts = re.split(r"(?m)^(?=\[job \S+\] \d+ points of model )", log.read_text())[1:]
        for text in attempts:
            keys = [m.group(1) for line in text.splitlines() if (m := settled.match(line))]
            finished.update(keys)
            total = int(re.match(r"\[job \S+\] (\d+) points", text).group(1))
            if "] finished: " not in text and len(re.findall(r"(?m)^\[job \S+\] \d+/", text)) < total:
                cut += 1
    return finished, cut


def _cause(message: str) -> str:
    """A failure record's cause without the ids and times in it (so that like causes group)."""
    message = re.sub(r"\bjob [0-9_]+\b", "job N", message)
    message = re.sub(r"after \d+(\.\d+)? s", "after T s", message)
    return message.split(" before this point finished")[0][:200]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=500, help="points (seeds of one setting)")
    ap.add_argument("--points-per-job", type=int, default=20)
    ap.add_argument("--every-s", type=float, default=4.0, help="mean seconds between two faults")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=4, help="at most this many runs of the sweep command")
    ap.add_argument("--sweep-dir", type=Path, default=Path("/tmp/illada_inject_faults"))
    ap.add_argument("--lost-after-s", type=float, default=120)
    ap.add_argument("--kinds", default=",".join(KINDS),
                    help=f"faults to draw from, comma-separated (default: all of {', '.join(KINDS)})")
    args = ap.parse_args(argv)

    from illada.store import SweepStore  # the checkout on PYTHONPATH

    if args.sweep_dir.exists():
        sys.exit(f"error: --sweep-dir {args.sweep_dir} exists; pass a new one")
    command = [sys.executable, "-m", "sweeps.app", "-m", "model.path=default", "task.limit=1",
               f"sampler.seed=range(0,{args.points})", f"sweep_dir={args.sweep_dir}", "hydra.sweeper.plot=false",
               f"hydra.sweeper.points_per_job={args.points_per_job}", "hydra/launcher=submitit_slurm",
               "hydra.launcher.mem_gb=1", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=30",
               "hydra.sweeper.poll_s=1", f"hydra.sweeper.lost_after_s={args.lost_after_s:g}"]
    kinds = tuple(k for k in args.kinds.split(",") if k)
    if not kinds or set(kinds) - set(KINDS):
        sys.exit(f"error: --kinds {args.kinds!r}: choose among {', '.join(KINDS)}")
    injector = Injector(args.sweep_dir, args.every_s, args.seed, kinds)
    start = time.monotonic()
    runs = []
    failures: list[tuple[str, str]] = []  # (key, cause) of every failure record any run left
    store = SweepStore(args.sweep_dir)
    for i in range(args.rounds):
        rerun = ["hydra.sweeper.rerun_failed=true"] if i else []
        if i == 0:
            injector.start()  # faults during the first run only: the resumes measure the repair
        t0 = time.monotonic()
        run = subprocess.run(command + rerun, capture_output=True, text=True)
        injector.stop.set()
        runs.append((time.monotonic() - t0, run.returncode))
        if run.returncode != 0:
            print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
        st = store.status()
        failures += [(k, _cause(store.record(k)["error"]["message"])) for k in st.failed]
        if len(st.done) == args.points:
            break
    wall = time.monotonic() - start
    st = store.status()
    finished, cut = _evaluations(args.sweep_dir)
    twice = sum(1 for n in finished.values() if n > 1)
    failed_keys = {k for k, _ in failures}
    print(f"\nfault injection: {args.points} points, {args.points_per_job} per job "
          f"({-(-args.points // args.points_per_job)} array tasks), a fault every {args.every_s:g} s on average "
          f"(seed {args.seed}), sweep dir {args.sweep_dir}")
    print("| measure | value |\n|---|---|")
    print(f"| points done at the end | {len(st.done)} of {args.points} ({len(st.failed)} failed, "
          f"{len(st.missing)} missing) |")
    print(f"| faults injected | {sum(injector.injected.values())}: "
          + ", ".join(f"{k} {injector.injected[k]}" for k in KINDS)
          + (f" ({sum(injector.refused.values())} answered with an error by Slurm, e.g. a task that was ending)"
             if sum(injector.refused.values()) else "") + " |")
    by_cause = collections.Counter(c for _, c in failures)
    print(f"| failure records | {len(failures)}" + "".join(f"<br>{n} × {c}" for c, n in by_cause.most_common())
          + " |")
    print(f"| points evaluated to the end twice or more | {twice} |")
    print(f"| evaluations cut short (work lost, run again) | {cut} |")
    print(f"| points failed by a fault and run again (--rerun-failed) | {len(failed_keys)} |")
    print(f"| runs of the sweep command | {len(runs)}: " + ", ".join(f"{s:.0f} s (exit {rc})" for s, rc in runs)
          + " |")
    print(f"| wall time to 100% done | {wall:.0f} s" + ("" if len(st.done) == args.points else " (not reached)")
          + " |")
    (args.sweep_dir / "injected.log").write_text("\n".join(injector.log) + "\n")
    return 0 if len(st.done) == args.points else 1


if __name__ == "__main__":
    sys.exit(main())
