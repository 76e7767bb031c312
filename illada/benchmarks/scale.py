"""Sweeps of 50,000 points: the cost of planning one, at 1k / 10k / 50k points, next to another checkout.

    python -m illada.benchmarks.scale                                   # this checkout, bench_out/scale.md
    python -m illada.benchmarks.scale --source /tmp/base                # and another checkout, in the same run
    python -m illada.benchmarks.scale --source /tmp/base --update-results   # the committed results/scale.md

Each figure is one fresh process (imports included), timed as a user waits for it (wall seconds) and as the
machine spends it (CPU seconds of the process: user + system, the figure that does not depend on how loaded the
machine is), with its peak memory (maximum resident set size). The growth column is the time's ratio to the
previous size: 10x the points should cost about 10x the time.

* ``dry-run``: ``illada-sweep -m GRID --dry-run``: compose, validate and plan the grid's points, then print the
  plan with each point's state (an empty store). The grid has two sampler config groups (a composition each),
  sampler values and seeds (``sampler=fixed,threshold sampler.steps=8,4,2 sampler.remasking=... seed=range(S)``,
  24 x S points).

The other checkout (``--source``) is slower; ``--source-max N`` measures it only up to N points (default 10,000:
today's main plans 50,000 points in about 17 minutes).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from illada.benchmarks.output import add_report_options, command_line, report_path, write_report

SIZES = (1_000, 10_000, 50_000)
REMASKING = ("low_confidence", "random", "topk_margin", "entropy")


@dataclass
class Run:
    """One timed process: wall and CPU seconds, peak resident memory, and its last line of output."""

    wall_s: float
    cpu_s: float
    peak_mb: float
    last_line: str


def timed(command: list[str], source: Path | None, cwd: Path) -> Run:
    """Run ``command`` in a fresh interpreter (``source``'s code ahead of this checkout's when given) and
    measure it; ``SystemExit`` with its output when it fails."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(source or Path.cwd())
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=source or cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} (from {source or 'this checkout'}) exited with "
                         f"{proc.returncode}:\n{out[-3000:]}")
    lines = [line for line in out.splitlines() if line.strip()]
    # ru_maxrss is in kilobytes on Linux
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, lines[-1] if lines else "")


def grid(points: int) -> tuple[list[str], int]:
    """The dry run's sweep overrides for about ``points`` points, and their exact number."""
    seeds = -(-points // (2 * 3 * len(REMASKING)))
    return (["sampler=fixed,threshold", "sampler.steps=8,4,2", f"sampler.remasking={','.join(REMASKING)}",
             f"seed=range(0,{seeds})"], 2 * 3 * len(REMASKING) * seeds)


def dry_run(points: int, source: Path | None, tmp: Path) -> tuple[int, Run]:
    """``illada-sweep -m GRID --dry-run`` of about ``points`` points: their exact number and the run."""
    overrides, n = grid(points)
    run = timed([sys.executable, "-m", "sweeps.app", "-m", *overrides, f"sweep_dir={tmp / 'dry'}", "--dry-run"],
                source, tmp)
    return n, run


def table(rows: list[tuple[str, int, Run | None]], unit: str = "point") -> str:
    """Markdown rows: checkout, size, wall / CPU seconds, CPU ms per ``unit``, growth of CPU time, peak MB."""
    out = [f"| checkout | {unit}s | wall s | CPU s | CPU ms / {unit} | CPU growth | peak MB |", "|---|---|---|---|---|---|---|"]
    previous: dict[str, tuple[int, float]] = {}
    for who, n, run in rows:
        if run is None:
            out.append(f"| {who} | {n:,} | not run | | | | |")
            continue
        growth = ""
        if who in previous:
            n0, cpu0 = previous[who]
            growth = f"{run.cpu_s / cpu0:.1f}x for {n / n0:.0f}x {unit}s"
        previous[who] = (n, run.cpu_s)
        out.append(f"| {who} | {n:,} | {run.wall_s:.1f} | {run.cpu_s:.1f} | {1000 * run.cpu_s / n:.2f} | {growth} "
                   f"| {run.peak_mb:.0f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, help="another checkout measured in the same run (e.g. today's main)")
    parser.add_argument("--source-max", type=int, default=10_000,
                        help="measure the other checkout only up to this many points (default 10,000)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="points per sweep (default 1k,10k,50k)")
    parser.add_argument("--quick", action="store_true", help="1,000 points only (a smoke run)")
    add_report_options(parser, "scale.md")
    args = parser.parse_args(argv)
    try:
        sizes = [1_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    except ValueError:
        raise SystemExit(f"error: --sizes {args.sizes}: give point counts separated by commas, e.g. 1000,10000")
    if args.source is not None and not (args.source / "sweeps" / "app.py").is_file():
        raise SystemExit(f"error: --source {args.source}: not an illada checkout (no sweeps/app.py)")
    out = report_path(args, "scale.md")
    checkouts: list[tuple[str, Path | None]] = [("this checkout", None)]
    if args.source is not None:
        checkouts.append((f"`{args.source}`", args.source))
    rows: list[tuple[str, int, Run | None]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for who, source in checkouts:
            for size in sizes:
                n = grid(size)[1]
                if source is not None and size > args.source_max:
                    rows.append((who, n, None))
                    continue
                n, run = dry_run(size, source, Path(tmp))
                print(f"dry run, {who}, {n} points: {run.wall_s:.1f} s wall, {run.cpu_s:.1f} s CPU, "
                      f"{run.peak_mb:.0f} MB ({run.last_line})", flush=True)
                rows.append((who, n, run))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    report = "\n\n".join([
        "# Sweeps at scale", f"`{command_line('illada.benchmarks.scale', argv)}`",
        f"machine: {platform.machine()}, {os.cpu_count()} cores (shared), python {platform.python_version()}, "
        f"date {stamp}. CPU s = user + system seconds of the process (what it costs whatever the load); wall s "
        "as it was on this machine at the time.",
        "## Compose, validate and plan (`illada-sweep -m GRID --dry-run`)",
        f"Grid: `{' '.join(grid(1000)[0][:-1])} seed=range(0,S)` (24 x S points), an empty store. Target: 50,000 "
        "points in under 30 s.",
        table(rows),
    ]) + "\n"
    write_report(out, report)


if __name__ == "__main__":
    main()
