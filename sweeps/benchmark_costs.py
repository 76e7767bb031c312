"""Measured figures of what sweeps cost: the forecast against what the sweeps then spent.

    python -m sweeps.benchmark_costs forecast [--update-results]

* **forecast**: a small calibration sweep on the embedded model leaves records in a fresh sweep root; then
  three different sweeps (other limits, settings and a decoder the calibration did not run) each print their
  forecast and run, in process. Actual device-hours are the jobs' own accounting (``jobs/*.json``: load and
  evaluation seconds, what ``illada-status`` adds up as GPU-hours); actual wall time is the sweep command's
  from the first point's start to the last point's end.

Writes sections of ``bench_out/costs.md`` (``--report``); ``--update-results`` writes them into the committed
``illada/benchmarks/results/costs.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from illada.benchmarks.engine import environment, markdown
from illada.benchmarks.output import add_report_options, report_path
from illada.forecast import job_accounts
from sweeps.benchmark_search import write_section

REPORT = "costs.md"

CALIBRATION = ["sampler.steps=8,4", "sampler=fixed,threshold", "task.limit=100"]
SWEEPS = {
    "steps x remasking, limit 300": ["sampler.steps=8,4,2", "sampler.remasking=low_confidence,random",
                                     "task.limit=300"],
    "steps x block length, limit 400": ["sampler.steps=8,4", "sampler.block_length=8,4,2", "task.limit=400"],
    "threshold decoding, limit 500": ["sampler=threshold", "sampler.threshold=0.9,0.7,0.5", "task.limit=500"],
}
COMMON = ["hydra.sweeper.plot=false", "hydra.sweeper.points_per_job=64"]


def predicted(root: Path, overrides: list[str]):
    """The forecast ``illada-sweep -m OVERRIDES --dry-run`` prints (computed in this process)."""
    from sweeps.app import grid_sweeper

    with grid_sweeper([f"sweep_dir={root}", *COMMON, "hydra.sweeper.dry_run=true", *overrides]) as (sweeper, args):
        with contextlib.redirect_stdout(io.StringIO()):
            sweeper.sweep(args)
    return sweeper.last_forecast


def run_sweep(root: Path, overrides: list[str]) -> tuple[float, float]:
    """Run ``illada-sweep -m OVERRIDES`` (a fresh process, in process launcher) into ``root``: the seconds its
    jobs spent (load + evaluation, their own accounting) and their wall time (first start to last end)."""
    before = {j.get("job_id") for j in job_accounts(root / "jobs")}
    subprocess.run([sys.executable, "-m", "sweeps.app", "-m", f"sweep_dir={root}", *COMMON, *overrides],
                   check=True, capture_output=True, text=True)
    jobs = [j for j in job_accounts(root / "jobs") if j.get("job_id") not in before]
    spent = sum(j.get("load_seconds", 0.0) + j.get("eval_seconds", 0.0) for j in jobs)
    started = min(datetime.fromisoformat(j["started_at"]) for j in jobs)
    finished = max(datetime.fromisoformat(j["finished_at"]) for j in jobs)
    return spent, (finished - started).total_seconds()


def forecast_benchmark(root: Path) -> str:
    shutil.rmtree(root, ignore_errors=True)
    run_sweep(root, CALIBRATION)
    rows = []
    for name, overrides in SWEEPS.items():
        fc = predicted(root, overrides)
        spent, wall = run_sweep(root, overrides)
        sources = sorted({p.source for p in fc.points})
        rows.append({"sweep": name, "points": len(fc.points), "items": sum(p.items or 0 for p in fc.points),
                     "forecast CPU-hours": f"{fc.device_seconds / 3600:.5f}",
                     "actual CPU-hours": f"{spent / 3600:.5f}",
                     "error": f"{fc.device_seconds / spent - 1:+.0%}",
                     "forecast wall (s)": f"{fc.wall_seconds:.0f}", "actual wall (s)": f"{wall:.0f}",
                     "estimated from": "; ".join(sources)})
        print(rows[-1], flush=True)
    return "\n\n".join([
        "## Forecast vs actual (`python -m sweeps.benchmark_costs forecast`)", environment("cpu"),
        f"Calibration: `illada-sweep -m {' '.join(CALIBRATION)}` on the embedded model in a fresh sweep root; "
        "then each sweep below, in the same root: its forecast as `--dry-run` prints it, then the sweep run by "
        f"`illada-sweep -m ... {' '.join(COMMON)}` in a fresh process (in process launcher: 1 job at a time). "
        "Actual CPU-hours: the jobs' own accounting (model load + evaluation seconds, what `illada-status` "
        "sums); actual wall: first job start to last job end (whole seconds). The 2-core machine is shared, "
        "so per-item times vary with its load.",
        markdown(rows)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["forecast"])
    parser.add_argument("--out", type=Path, default=None, help="sweep roots (default: a temporary directory)")
    add_report_options(parser, REPORT, flag="--report")
    args = parser.parse_args(argv)
    report = report_path(args, REPORT, flag="--report")  # refused now, not after the benchmark
    out = args.out or Path(tempfile.mkdtemp(prefix="illada_costs_"))
    if not report.exists():
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text("# What sweeps cost: forecasts, multi-fidelity search, early stop\n")
    if args.what == "forecast":
        text = forecast_benchmark(out / "forecast")
        print(text)
        write_section(report, text, "Forecast vs actual")


if __name__ == "__main__":
    main()
