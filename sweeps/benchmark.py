"""Measured figures of the sweep machinery (issue 5): README sweep wall time, per-point overhead with and
without grouping, and a 100-point Slurm sweep with injected failures.

    python -m sweeps.benchmark overhead [--model PATH] [--limit 200]  # 64-point local sweep, grouped vs not
    python -m sweeps.benchmark slurm [--model PATH] [--cancel 2]       # 100 points on the local Slurm cluster

Overhead = (wall time - sum of the points' evaluation seconds) / sum of evaluation seconds: everything a point
costs besides evaluating it. ``overhead_vs_eval`` takes the jobs' wall time (model and data loads, records,
markers, job accounting), as this benchmark always has; ``sweep_overhead_vs_eval`` takes the whole
``illada-sweep -m`` multirun in this process (hydra/launcher=basic): also Hydra composing the master config
and every point, validating each, writing the plan, the status. The process is warmed up first by one model
load (torch's lazy imports on the first model it builds, ~2 s, paid once per process whatever the sweep;
reported as ``process_warmup_s``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cloudpickle

from illada.runner import PointGroup
from illada.store import SweepStore
from sweeps.app import grid_sweeper, plan_sweep, run

GRID_64 = ["sampler.steps=8,4,2,1", "sampler.remasking=low_confidence,random,topk_margin,entropy",
           "sampler.seed=0,1,2,3"]
GRID_100 = ["sampler.steps=8,4,2,1", "sampler.seed=0,1,2,3,4", "sampler.temperature=0.0,0.25,0.5,0.75,1.0"]


def _eval_seconds(store: SweepStore) -> float:
    return sum(r["cost"]["eval_seconds"] for r in store.records("ok"))


def overhead(model: str, limit: int, root: Path, process_points: int = 8) -> dict:
    """The 64-point sweep run grouped (one job, one model load) and one point per job, in this process, and --
    what Hydra's basic sweeper with a submitit launcher does -- one process per point (``process_points`` of
    them, extrapolated per point)."""
    from illada.loading import load

    base = [f"model.path={model}", f"task.limit={limit}", "threads=1", "hydra.sweeper.plot=false", *GRID_64]
    start = time.perf_counter()
    load(model)
    out: dict = {"process_warmup_s": round(time.perf_counter() - start, 2)}
    for ppj in (64, 1):
        store = SweepStore(root / f"ppj{ppj}")
        start = time.perf_counter()
        with grid_sweeper([*base, f"sweep_dir={store.root}", f"hydra.sweeper.points_per_job={ppj}"]) as (sweeper, args):
            sweeper.run(args)
        sweep_wall = time.perf_counter() - start
        wall = sweeper.counts["seconds"]  # the jobs
        ev = _eval_seconds(store)
        jobs = [json.loads(p.read_text()) for p in store.jobs_dir.glob("*.json")]
        load = sum(j["load_seconds"] for j in jobs)
        n = len(store.records("ok"))
        out[f"in-process, points_per_job={ppj}"] = {
            "points": n, "jobs": len(jobs), "jobs_wall_s": round(wall, 2), "sweep_wall_s": round(sweep_wall, 2),
            "eval_s": round(ev, 2), "model_load_s": round(load, 2),
            "overhead_s_per_point": round((wall - ev) / n, 4),
            "overhead_vs_eval": round((wall - ev) / ev, 4),
            "overhead_vs_eval_without_model_loads": round((wall - ev - load) / ev, 4),
            "sweep_overhead_s_per_point": round((sweep_wall - ev) / n, 4),
            "sweep_overhead_vs_eval": round((sweep_wall - ev) / ev, 4)}
    points = [p.resolved for p in plan_sweep([*base, f"sweep_dir={root / 'process_per_point'}"]).points]
    store = SweepStore(root / "process_per_point")
    start = time.perf_counter()
    for point in points[:process_points]:
        with tempfile.NamedTemporaryFile(suffix=".pkl", delete=False) as f:
            cloudpickle.dump(PointGroup(store.root, [point], threads=1), f)
        subprocess.run([sys.executable, "-c", f"import pickle; pickle.load(open({f.name!r}, 'rb'))()"], check=True)
    wall = time.perf_counter() - start
    ev = _eval_seconds(store)
    out["one process per point"] = {"points": process_points, "wall_s": round(wall, 2), "eval_s": round(ev, 2),
                                    "overhead_s_per_point": round((wall - ev) / process_points, 4),
                                    "overhead_vs_eval": round((wall - ev) / ev, 4)}
    return out


def slurm(model: str, root: Path, cancel: int, limit: int) -> dict:
    """100 points (25 jobs of 4) on the local cluster; ``cancel`` running jobs are killed (SIGKILL) while
    the sweep runs (the cluster is this host: a job's pid is in its running marker), then the same command
    with hydra.sweeper.rerun_failed=true recovers their points."""
    args = [f"model.path={model}", f"sweep_dir={root / 'slurm100'}", f"task.limit={limit}", *GRID_100,
            "hydra/launcher=submitit_slurm", "hydra.launcher.mem_gb=1", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.gpus_per_node=1", "hydra.sweeper.plot=false", "hydra.sweeper.points_per_job=4",
            "hydra.sweeper.poll_s=2", "hydra.sweeper.lost_after_s=20"]
    store = SweepStore(root / "slurm100")
    killed: list[str] = []

    def killer():
        # SIGKILL to the job's Python process, as the kernel's OOM killer would do it (plain scancel sends
        # SIGTERM, which submitit ignores, and a short job finishes its points within KillWait)
        while len(killed) < cancel:
            for p in (store.running_dir.glob("*.json") if store.running_dir.is_dir() else []):
                try:
                    marker = json.loads(p.read_text())
                except (FileNotFoundError, json.JSONDecodeError):
                    continue
                if marker["job_id"] not in killed:
                    try:
                        os.kill(marker["pid"], signal.SIGKILL)
                    except ProcessLookupError:
                        continue
                    killed.append(marker["job_id"])
                    break
            time.sleep(0.2)

    threading.Thread(target=killer, daemon=True).start()
    start = time.perf_counter()
    run(args)
    first = time.perf_counter() - start
    st = store.status()
    failed_first = len(st.failed)
    start = time.perf_counter()
    run(args + ["hydra.sweeper.rerun_failed=true"])
    recover = time.perf_counter() - start
    st = store.status()
    return {"points": st.total, "time_to_all_records_s": round(first, 1), "jobs_killed": killed,
            "failed_after_first_pass": failed_first, "recover_wall_s": round(recover, 1),
            "done_after_rerun": len(st.done), "failed_after_rerun": len(st.failed),
            "gpu_hours": round(st.gpu_hours, 4)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["overhead", "slurm"], help="which figure to measure")
    parser.add_argument("--model", default=None, help="checkpoint directory (default: the embedded model)")
    parser.add_argument("--limit", type=int, default=200, help="items per point (the README sweep uses 200)")
    parser.add_argument("--cancel", type=int, default=2, help="slurm: jobs to kill while the sweep runs")
    parser.add_argument("--out", type=Path, default=None, help="where the benchmark's sweeps go (default: a temp dir)")
    args = parser.parse_args(argv)
    root = args.out or Path(tempfile.mkdtemp(prefix="illada_sweep_bench_"))
    model = args.model or "default"
    if args.what == "overhead":
        result = overhead(model, args.limit, root)
    else:
        result = slurm(model, root, args.cancel, args.limit)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
