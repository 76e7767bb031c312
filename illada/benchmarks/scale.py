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
import shutil
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


# ---------------------------------------------------------------------------------------------- records
LOAD = ("from analysis.load import load_sweeps; import sys; s = load_sweeps(sys.argv[1], cache=False); "
        "print(len(s.points), 'points,', len(s.failures), 'failures,', len(s.unreadable), 'unreadable')")


WRITE = ("from analysis.synthetic import write_generation_records; import sys; "
         "write_generation_records(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))")


def records_section(sizes: list[int], checkouts: list[tuple[str, Path | None]], tmp: Path) -> list[str]:
    """``illada-status`` and ``load_sweeps`` without the analysis cache, twice each (the first status of this
    checkout builds the records' summary, the first load the plans') on synthetic sweeps of each size; the
    report's section."""
    rows: dict[str, list[tuple[str, int, Run | None]]] = {}
    for size in sizes:
        root = tmp / f"records-{size}"
        # in a child: a forked child's peak memory counts its parent's, so this process stays small
        timed([sys.executable, "-c", WRITE, str(root), str(size - size // 50), str(size // 50)], None, Path.cwd())
        for who, source in reversed(checkouts):  # the other checkout first: it never sees a summary
            for what, command in (("illada-status, first", [sys.executable, "-m", "illada.store", str(root)]),
                                  ("illada-status, again", [sys.executable, "-m", "illada.store", str(root)]),
                                  ("load_sweeps(cache=False)", [sys.executable, "-c", LOAD, str(root)]),
                                  ("load_sweeps(cache=False), again", [sys.executable, "-c", LOAD, str(root)])):
                run = timed(command, source, tmp)
                print(f"{what}, {who}, {size} records: {run.wall_s:.1f} s wall, {run.cpu_s:.1f} s CPU, "
                      f"{run.peak_mb:.0f} MB ({run.last_line})", flush=True)
                rows.setdefault(what, []).append((who, size, run))
        shutil.rmtree(root)
    out = ["## `illada-status` and `analysis.load_sweeps` on N records",
           "Synthetic generation records in the real schema (`analysis.synthetic.write_generation_records`, 2% "
           "failures), a plan file per point and a current plan. This checkout's first `illada-status` builds "
           "the records' columnar summary (`SWEEP/summary/records.parquet`), the second finds it up to date; "
           "`load_sweeps` then reads records from their summary and builds the plans' (`points.parquet`), "
           "the second `load_sweeps` finds both up to date (the analysis cache is off). "
           "Target: under 10 s and 400 MB at 50,000 records."]
    for what, got in rows.items():
        got.sort(key=lambda row: (row[0] != "this checkout", row[1]))
        out += [f"### {what}", table(got, unit="record")]
    return out


# ----------------------------------------------------------------------------------------------- search
#: a space without repeats: a continuous threshold makes every proposal a new point
SEARCH_SPACE = {"sampler.threshold": {"type": "float", "low": 0.3, "high": 0.99},
                "sampler.remasking": {"choices": ["low_confidence", "random"]},
                "seed": {"type": "int", "low": 0, "high": 1000}}
OBJECTIVES = ["accuracy", "nfe_per_sample"]


class _Done:
    """A job that has finished: its record was written when it was launched."""

    def done(self) -> bool:
        return True

    def result(self) -> None:
        return None


def _record(resolved) -> dict:
    """A record in the real schema whose objectives follow from the point (deterministic, no evaluation)."""
    from illada.records import SCHEMA_VERSION

    s = resolved.settings["sampler"]
    accuracy = 0.9 - 0.4 * (1 - s["threshold"]) ** 1.5 - (0.05 if s["remasking"] == "random" else 0.0)
    nfe = 8 * (1.1 - s["threshold"]) + resolved.settings["seed"] % 7 / 100
    return {"schema": SCHEMA_VERSION, "key": resolved.key, "status": "ok", "settings": resolved.settings,
            "quality": {"metric": "exact_match", "value": accuracy, "ci_low": accuracy - 0.05,
                        "ci_high": accuracy + 0.05, "n": 100},
            "cost": {"nfe_per_sample": nfe, "latency_p50_s": nfe / 100}, "provenance": {}, "error": None}


def search_worker(kind: str, n_trials: int, out_dir: Path) -> list[float]:
    """CPU seconds of this process at which each of ``n_trials`` trials was proposed (CPU, not wall: the
    machine may be shared): by the search controller (``controller``,
    :class:`illada.search.ParetoSearch`, its jobs finishing at once) or by Optuna's own ask + tell loop
    (``optuna``) with the same sampler, space and journal storage."""
    import optuna

    from illada.evaluate import Point
    from illada.records import write_record
    from illada.search import ParetoSearch, make_sampler, make_storage, parse_space, suggest

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stamps: list[float] = []
    start = time.process_time()
    if kind == "optuna":
        study = optuna.create_study(storage=make_storage(out_dir), study_name="search", sampler=make_sampler(
            "tpe", 0), directions=["maximize", "minimize"])
        params = parse_space(SEARCH_SPACE)
        for _ in range(n_trials):
            trial = study.ask()
            values = suggest(trial, params)
            stamps.append(time.process_time() - start)
            threshold = values["sampler.threshold"]
            study.tell(trial, [0.9 - 0.4 * (1 - threshold) ** 1.5, 8 * (1.1 - threshold)])
        return stamps

    def launch(trial, resolved, overrides):
        stamps.append(time.process_time() - start)
        write_record(search.store.records_dir, _record(resolved))
        return _Done()

    search = ParetoSearch(sweep_dir=out_dir, space=SEARCH_SPACE, n_trials=n_trials, seed=0, log=None,
                          objectives=OBJECTIVES, base=Point(task="arithmetic", limit=100), launch=launch)
    search.run()
    return stamps


def per_proposal(stamps: list[float], at: int, window: int = 20) -> float:
    """Mean CPU seconds per proposal over the ``window`` proposals before the ``at``-th."""
    lo = max(1, at - window)
    return (stamps[at - 1] - stamps[lo - 1]) / (at - lo)


def search_costs(kind: str, n_trials: int, source: Path | None, tmp: Path) -> tuple[list[float], Run]:
    """Run :func:`search_worker` in a fresh process (``source``'s ``illada`` when given); its stamps and run."""
    import json

    out = tmp / f"search-{kind}-{n_trials}-{time.monotonic_ns()}"
    out.mkdir()
    stamps = out / "stamps.json"
    run = timed([sys.executable, str(Path(__file__).resolve()), "--search-worker", kind, str(n_trials), str(out)],
                source, tmp)
    return json.loads(stamps.read_text()), run


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
    parser.add_argument("--trials", default="200,500,1000", help="search sizes: proposals per search")
    parser.add_argument("--source-max-trials", type=int, default=500,
                        help="measure the other checkout's search controller only up to this many trials")
    parser.add_argument("--only", choices=["dry-run", "records", "search"], help="one part of the benchmark")
    parser.add_argument("--search-worker", nargs=3, metavar=("KIND", "TRIALS", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.search_worker:  # a child process of this benchmark (possibly another checkout's illada)
        import json

        kind, n, folder = args.search_worker
        stamps = search_worker(kind, int(n), Path(folder))
        (Path(folder) / "stamps.json").write_text(json.dumps(stamps))
        return
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
    try:
        trials = sorted(int(t) for t in args.trials.split(","))
    except ValueError:
        raise SystemExit(f"error: --trials {args.trials}: give trial counts separated by commas, e.g. 200,500")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = ["# Sweeps at scale", f"`{command_line('illada.benchmarks.scale', argv)}`",
                f"machine: {platform.machine()}, {os.cpu_count()} cores (shared), python "
                f"{platform.python_version()}, date {stamp}. CPU s = user + system seconds of the process (what it "
                "costs whatever the load); wall s as it was on this machine at the time."]
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "dry-run"):
            sections += dry_run_section(sizes, checkouts, args.source_max, Path(tmp))
        if args.only in (None, "records"):
            sections += records_section(sizes, checkouts, Path(tmp))
        if args.only in (None, "search"):
            sections += search_section(trials, checkouts, args.source_max_trials, Path(tmp))
    write_report(out, "\n\n".join(sections) + "\n")


def dry_run_section(sizes: list[int], checkouts: list[tuple[str, Path | None]], source_max: int, tmp: Path
                    ) -> list[str]:
    """Time the dry run of each size from each checkout; the report's section."""
    rows: list[tuple[str, int, Run | None]] = []
    for who, source in checkouts:
        for size in sizes:
            n = grid(size)[1]
            if source is not None and size > source_max:
                rows.append((who, n, None))
                continue
            n, run = dry_run(size, source, tmp)
            print(f"dry run, {who}, {n} points: {run.wall_s:.1f} s wall, {run.cpu_s:.1f} s CPU, "
                  f"{run.peak_mb:.0f} MB ({run.last_line})", flush=True)
            rows.append((who, n, run))
    return ["## Compose, validate and plan (`illada-sweep -m GRID --dry-run`)",
            f"Grid: `{' '.join(grid(1000)[0][:-1])} seed=range(0,S)` (24 x S points), an empty store. Target: "
            "50,000 points in under 30 s.", table(rows)]


def search_section(trials: list[int], checkouts: list[tuple[str, Path | None]], source_max: int, tmp: Path
                   ) -> list[str]:
    """One search of ``max(trials)`` trials per checkout and Optuna's own loop; seconds per proposal at each
    size (the 20 proposals before it), as the report's section."""
    runs = {"Optuna ask+tell": search_costs("optuna", trials[-1], None, tmp)}
    for who, source in checkouts:
        n = trials[-1] if source is None else max([t for t in trials if t <= source_max] or [trials[0]])
        runs[who] = search_costs("controller", n, source, tmp)
    for who, (stamps, run) in runs.items():
        print(f"search, {who}: {len(stamps)} proposals in {stamps[-1]:.1f} s CPU ({run.wall_s:.1f} s wall, "
              f"{run.peak_mb:.0f} MB)", flush=True)
    names = list(runs)
    head = ["trials"] + [f"{w} CPU s / proposal" for w in names] + [f"{w} / Optuna" for w in names[1:]]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in trials:
        cost = {w: per_proposal(stamps, t) if len(stamps) >= t else None for w, (stamps, _) in runs.items()}
        cells = [f"{t:,}"] + [f"{c:.4f}" if c is not None else "not run" for c in cost.values()]
        ref = cost[names[0]]
        cells += [f"{cost[w] / ref:.2f}x" if cost[w] is not None and ref else "" for w in names[1:]]
        rows.append("| " + " | ".join(cells) + " |")
    totals = ", ".join(f"{w}: {len(s):,} proposals in {s[-1]:.1f} s CPU ({r.wall_s:.1f} s wall, imports included)"
                       for w, (s, r) in runs.items())
    return ["## The search controller: seconds per proposal as the study grows",
            f"One search per checkout (`illada.search.ParetoSearch`, TPE, seed 0, a space of a continuous threshold, "
            f"a remasking choice and a seed: no repeats; each job's record is written as it is launched) and "
            f"Optuna's own ask + tell loop with the same sampler, space and journal storage; a figure is the mean "
            f"CPU time over the 20 proposals before that many trials. Target: within 1.3x of Optuna at 200, 500 and 1,000 "
            f"trials, never above 1 s per proposal. Totals: {totals}.",
            "\n".join(rows)]


if __name__ == "__main__":
    main()
