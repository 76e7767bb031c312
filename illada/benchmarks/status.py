"""Wall time of ``illada-status`` on a sweep of 5,000 records (a fresh process each time, imports included).

    python -m illada.benchmarks.status                       # this checkout
    python -m illada.benchmarks.status --source /tmp/old     # another checkout (e.g. ``git archive`` of HEAD)

The sweep is written with the store's own functions (``SweepStore.plan``, ``write_record``, ``write_job``,
``claim``, ``set_current_plan``): generation records in the real schema (``analysis.synthetic``), 2%
failures, one job file per 16 points and a few running markers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from analysis.synthetic import write_generation_sweep
from illada.store import SweepStore


def make_sweep(root: Path, n: int = 5000) -> Path:
    """A sweep directory of ``n`` records (no per-item tables: status never reads them)."""
    failures = n // 50
    write_generation_sweep(root, n_points=n - failures, n_items=50, items=False, failures=failures)
    store = SweepStore(root)
    keys = store.planned()
    for j in range(0, n, 16):
        store.write_job(f"{1000 + j // 16}_0.0", {"host": "node1", "gpus": 1, "load_seconds": 12.0,
                                                  "eval_seconds": 16 * 3.5, "points": 16})
    for i in range(3):  # points being evaluated: planned, a marker, no record yet
        key = f"{i:016x}"
        store.plan(key, {"task": "gsm8k"}, [f"seed={i}"])
        store.claim(key, {"host": "node2", "pid": 4242, "job_id": f"999_{i}"})
        keys.append(key)
    store.set_current_plan(keys)
    return root


def time_status(root: Path, source: Path | None, repeats: int) -> list[float]:
    """Seconds of ``python -m illada.store ROOT`` in a fresh interpreter, ``repeats`` times."""
    env = dict(os.environ)
    if source is not None:  # ahead of the editable install of this checkout
        env["PYTHONPATH"] = str(source)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "illada.store", str(root)], cwd=source or Path.cwd(), env=env,
                             capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - start)
    print(f"  {out.stdout.strip()}")
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=5000, help="records in the synthetic sweep")
    parser.add_argument("--repeats", type=int, default=5, help="illada-status runs timed (median reported)")
    parser.add_argument("--source", type=Path, help="run illada-status from this checkout instead")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        root = make_sweep(Path(tmp) / "sweep", args.records)
        print(f"wrote {args.records} records in {time.perf_counter() - start:.1f} s")
        times = time_status(root, args.source, args.repeats)
    print(f"illada-status on {args.records} records ({args.source or 'this checkout'}): median "
          f"{statistics.median(times):.2f} s, min {min(times):.2f} s over {args.repeats} runs")


if __name__ == "__main__":
    main()
