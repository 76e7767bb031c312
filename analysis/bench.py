"""Time to load and plot a large sweep: ``python -m analysis.bench [--points 10000] [--keep DIR]``.

Writes a synthetic sweep of N generation points (real record schema, plans in ``points/``; no per-item tables,
which loading does not read), then times: loading from the JSON records, loading again from the Parquet cache,
pooling the replicates (the grid repeats over sampler seeds) and building the front table, and drawing +
saving the accuracy-vs-latency Pareto figure (PNG and SVG).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt

from analysis.figures import frontier_plot, save_figure
from analysis.fronts import front_table
from analysis.load import load_sweep
from analysis.replicates import pool_replicates
from analysis.synthetic import write_generation_sweep


def bench(points: int, root: Path) -> dict[str, float]:
    """Seconds for each stage (see the module docstring) on a sweep of ``points`` points under ``root``."""
    timings = {}
    start = time.perf_counter()
    write_generation_sweep(root / "sweep", n_points=points, items=False, failures=0)
    timings["write synthetic sweep"] = time.perf_counter() - start
    for stage in ("load records (no cache; writes it)", "load from Parquet cache"):
        start = time.perf_counter()
        sweep = load_sweep(root / "sweep", cache=True)
        timings[stage] = time.perf_counter() - start
    start = time.perf_counter()
    settings = pool_replicates(sweep.points)
    timings["pool replicates"] = time.perf_counter() - start
    start = time.perf_counter()
    front_table(settings)
    timings["front table (hypervolume, knee, AUP)"] = time.perf_counter() - start
    start = time.perf_counter()
    fig = frontier_plot(sweep.points)
    timings["draw Pareto figure"] = time.perf_counter() - start
    start = time.perf_counter()
    save_figure(fig, root, "pareto_latency")
    plt.close(fig)
    timings["save PNG + SVG"] = time.perf_counter() - start
    timings["load + plot (cold, total)"] = (timings["load records (no cache; writes it)"]
                                            + timings["draw Pareto figure"] + timings["save PNG + SVG"])
    timings["load + plot (cached, total)"] = (timings["load from Parquet cache"] + timings["draw Pareto figure"]
                                              + timings["save PNG + SVG"])
    assert len(sweep.points) == points, (len(sweep.points), points)
    return timings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="write the sweep and figure here and keep them")
    args = parser.parse_args(argv)
    plt.switch_backend("Agg")  # files only, even where a display is configured
    root = args.keep or Path(tempfile.mkdtemp(prefix="illada-bench-"))
    if args.keep:
        shutil.rmtree(root / "sweep", ignore_errors=True)
    try:
        timings = bench(args.points, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"| {args.points:,}-point sweep | seconds |\n|---|---|")
    for stage, seconds in timings.items():
        print(f"| {stage} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
