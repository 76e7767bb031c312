"""``illada-sweep``: expand a sweep, validate every point, run what is not finished, plot the frontier.

    illada-sweep +ablation=frontier                              # the README's sweep, on this machine
    illada-sweep +ablation=steps_blocks launcher=slurm launcher.partition=gpu model=llada-8b-base
    illada-sweep sampler.steps=8,4,2 sampler.remasking=low_confidence,random task.limit=100
    illada-sweep +ablation=frontier --rerun-failed               # same command again: resume
    illada-sweep +ablation=frontier --dry-run                    # validate and show the plan only
    illada-sweep +ablation=frontier --cfg                        # print the composed base config

Why a driver and not ``-m`` with a Hydra launcher: Hydra launches one job per point and waits for a whole
batch, so points could not share a model load, a sweep could not be checked before submission, and one
killed job aborts the multirun. Here Hydra composes every point (same override grammar as ``-m``), all
points are resolved first, points of one model are grouped ``launcher.points_per_job`` to a job, and the jobs
are submitted with submitit (arrays below Slurm's MaxArraySize) and collected as they finish.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from illada.launch import collect, slurm_max_array_size, submit
from illada.runner import PointGroup, group_points, run_inprocess
from illada.store import FAILED, SweepStore, Triage
from sweeps.expand import Plan, SweepError, base_config, check_writable, os_error_line, plan_sweep
from sweeps.launchers import launcher_from_config

FLAGS = {"--rerun-failed": "rerun_failed=true", "--dry-run": "dry_run=true", "--no-wait": "launcher.wait=false",
         "--no-plot": "plot=false"}


def run(overrides: list[str]) -> SweepStore:
    """Run the sweep the overrides describe and return its store; raises :class:`SweepError`."""
    start = time.perf_counter()
    plan = plan_sweep(overrides)
    cfg = plan.base
    cfg.sweep_dir = str(Path(cfg.sweep_dir).resolve())  # jobs may start in another working directory
    launcher = launcher_from_config(cfg.launcher)
    store = SweepStore(cfg.sweep_dir)
    _report_plan(plan, time.perf_counter() - start)
    keys = [p.resolved.key for p in plan.points]
    if cfg.dry_run:
        for p in plan.points:
            print(f"  {p.resolved.key}  {store.state(p.resolved.key):8s} {' '.join(p.overrides)}")
        return store
    for p in plan.points:
        store.plan(p.resolved.key, p.resolved.settings, p.overrides, fixed=plan.fixed)
    store.set_current_plan(keys)  # status and analysis count these points; other records become superseded
    triage = store.triage(keys, rerun_failed=cfg.rerun_failed)
    _report_triage(store, triage, cfg.rerun_failed)
    todo = set(triage.todo)
    points = [p.resolved for p in plan.points if p.resolved.key in todo]
    groups = [PointGroup(store.root, g, threads=launcher.threads) for g in group_points(points, launcher.points_per_job)]
    print(f"{len(keys) - len(points)} points already have a record; running {len(points)} in {len(groups)} jobs "
          f"({launcher.cluster}) into {store.root}")
    if groups and launcher.cluster == "inprocess":
        run_inprocess(groups)
    elif groups:
        executor = launcher.executor()
        max_array = launcher.max_array_size or (slurm_max_array_size() if launcher.cluster == "slurm" else len(groups))
        submitted = submit(executor, groups, max_array)
        ids = sorted({s.job.job_id.split("_")[0] for s in submitted})
        print(f"submitted {len(submitted)} jobs in {len(ids)} arrays: {' '.join(ids)} (logs in {store.logs_dir})")
        if not launcher.wait:
            print(f"not waiting: follow with `illada-status {store.root}`, resume with the same command")
            return store
        counts = collect(submitted, store, poll_s=launcher.poll_s, lost_after_s=launcher.lost_after_s)
        if counts["jobs_failed"]:
            print(f"{counts['jobs_failed']} jobs ended early; their unfinished points have failure records")
    status = store.status()
    print(status.line())
    if status.failed:
        print(f"failed points: `illada-status {store.root} --failed`; rerun them with --rerun-failed")
    if cfg.plot:
        from sweeps.plot import pareto_plot

        path = pareto_plot(store)
        if path:
            print(f"Pareto plot: {path}")
    print(f"sweep wall time: {time.perf_counter() - start:.1f} s")
    return store


def _report_plan(plan: Plan, seconds: float) -> None:
    extra = ""
    if plan.invalid:
        extra += f"; skipped {len(plan.invalid)} invalid (on_invalid=skip):\n  " + "\n  ".join(plan.invalid[:5])
    if plan.duplicates:
        extra += (f"; {plan.duplicates} duplicates dropped (settings a task does not read, e.g. sampler.* for a "
                  "multiple-choice task)")
    print(f"sweep {plan.base.name}: {len(plan.points)} valid points (validated in {seconds:.1f} s){extra}")


def _report_triage(store: SweepStore, triage: Triage, rerun_failed: bool) -> None:
    """Say what the store was made to do before the run: damaged records set aside, failures to rerun."""
    if triage.corrupt:
        print(f"{len(triage.corrupt)} unreadable records (cut short by a crash?) moved to {store.archive_dir} "
              f"as *.corrupt; their points run again: {' '.join(triage.corrupt[:5])}")
    if not rerun_failed:
        return
    old = [k for k in store.status().superseded if store.state(k) == FAILED]
    left = (f"; {len(old)} failure records of superseded points (no longer in the plan) left as they are"
            if old else "")
    if triage.rerun:
        print(f"--rerun-failed: rerunning {len(triage.rerun)} failed points (their failure records moved to "
              f"{store.archive_dir}){left}")
    else:
        print(f"--rerun-failed: no failed point in the current plan, nothing to rerun{left}")


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--help" in args or "-h" in args:
        print(__doc__)
        return
    show_cfg = "--cfg" in args
    overrides = [FLAGS.get(a, a) for a in args if a != "--cfg"]
    unknown = [a for a in overrides if a.startswith("--")]
    if unknown:
        raise SystemExit(f"error: unknown flag {unknown[0]}; flags: --cfg {' '.join(FLAGS)}")
    sweep_dir = None
    try:
        if show_cfg:
            print(OmegaConf.to_yaml(plan_sweep(overrides).base, resolve=True))
            return
        base = base_config(overrides)
        sweep_dir = Path(base.sweep_dir).resolve()
        if not base.dry_run:  # before validating a large sweep or submitting anything
            check_writable(sweep_dir)
        run(overrides)
    except SweepError as e:
        raise SystemExit(f"error: {e}") from None
    except OSError as e:  # a full disk, a read-only or vanished sweep dir (ENOSPC, EROFS, EACCES, ...)
        raise SystemExit(f"error: {os_error_line(e, sweep_dir)}") from None


if __name__ == "__main__":
    main()
