"""``hydra/sweeper=illada_grid`` (the default of ``illada-sweep -m``): the grid, validated, grouped, resumable.

    illada-sweep -m sampler.steps=8,4,2 sampler.remasking=low_confidence,random task.limit=100
    illada-sweep -m +ablation=frontier                                  # an ablation's `sweep:` grids
    illada-sweep -m +ablation=scoring hydra/launcher=submitit_slurm hydra.launcher.partition=gpu

The points are the cartesian product of the sweep overrides (Hydra's grammar: ``a,b``, ``range()``,
``choice()``, ``glob()``) and of an ablation's ``sweep:`` block, as Hydra's basic sweeper would make them, but:

* every point is composed (as a Hydra job's config) and resolved before anything runs; errors name the point
  and the override behind them (``on_invalid=skip`` drops invalid points instead);
* points that share a model are grouped ``points_per_job`` to a job (:class:`illada.runner.PointGroup`), so a
  model loads once per job;
* jobs run where ``hydra/launcher`` says: in this process (``basic``), or as submitit jobs with the launcher's
  queue settings (``submitit_local``, ``submitit_slurm``, site profiles), in arrays below Slurm's MaxArraySize,
  collected as they finish (no batch barrier); a job that dies leaves failure records with its state and log;
* ``submitit_local`` runs at most ``max_in_flight`` jobs at a time (default: usable cores // threads per job,
  since jobs sharing cores inflate each other's latencies): the points are grouped into at most that many jobs
  (more only when more models than that are swept: those jobs then run in waves);
* an unnamed sweep (no ablation, no ``name=``, no ``sweep_dir=``) gets its own timestamped directory;
* the sweep ends with its front as a table (printed, and in ``front.csv`` / ``front.md``), the paths of what it
  wrote (``pareto.png`` too) and its wall time;
* the results store (``sweep_dir``) keeps one record per point: the same command runs only what has none;
* the exit status is 1, with one ``error:`` line, when every point of the plan failed (``fail_on=any``: when
  any did; ``never``: always 0);
* ``--dry-run`` prints totals by state, the first points (``--verbose``: all) and, on Slurm, whether the cluster
  would accept the job (``sbatch --test-only``); a queue setting Slurm refuses stops a real run the same way.
"""

from __future__ import annotations

import collections
import itertools
import time
from dataclasses import dataclass
from typing import Any, Optional

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from illada.markers import DEFAULT_STALE_AFTER_S
from sweeps.expand import Plan, PlannedPoint, SweepError, UnknownSettingError, culprit, grids, unused_group
from sweeps.sweeper import UNNAMED, IlladaSweeper


@dataclass
class GridSweeperConf:
    """``hydra.sweeper`` when ``hydra/sweeper=illada_grid``."""

    _target_: str = "hydra_plugins.illada_sweepers.GridSweeper"
    points_per_job: int = 16  # points of one model per job; each job loads its model once
    max_array_size: Optional[int] = None  # tasks per Slurm array; null: the cluster's MaxArraySize
    on_invalid: str = "error"  # error: an invalid point stops the sweep before anything runs; skip: drop it
    rerun_failed: bool = False  # also run points whose record is a failure (the old record is archived)
    dry_run: bool = False  # validate and print the plan with each point's state; run and write nothing
    verbose: bool = False  # list every point (dry run) and every invalid point, not the first SHOWN of each
    wait: bool = True  # false: submit and exit (`illada-status` follows; the same command resumes)
    poll_s: float = 5.0  # how often submitted jobs are checked
    lost_after_s: float = 60.0  # fallback: a Slurm job gone from squeue that sacct still does not know is lost
    plot: bool = True  # write SWEEP_DIR/pareto.png when the sweep has finished
    # submitit_local: jobs running at once (null: usable cores // threads per job); Slurm: array_parallelism
    max_in_flight: Optional[int] = None
    stale_after_s: float = DEFAULT_STALE_AFTER_S  # a running marker with no heartbeat this long is taken over
    fail_on: str = "all"  # exit status 1 when all points of the plan failed; any: when any did; never: always 0
    # seconds one item takes (overrides the estimate from earlier records in the cost forecast); null: estimated
    cost_per_item_s: Optional[float] = None
    # stop a point, after any batch of items, once a finished point's lower bound of quality beats its upper bound
    # (at this confidence) at a latency no worse; recorded with its items, interval and reason. false: off
    early_stop: Any = False  # false | true (95%) | a confidence level such as 0.9
    finish_stopped: bool = False  # run early-stopped points to the end (their items are kept)


class GridSweeper(IlladaSweeper):
    """Composes and validates every point, then runs the missing ones in groups through the launcher."""

    def __init__(self, **conf: Any) -> None:
        super().__init__(**conf)
        self.counts: dict[str, float] = {}  # what the last run's jobs did (in process: also their wall seconds)
        self.status = None  # the plan's StoreStatus once a run has waited for its jobs
        self.last_forecast = None  # the cost forecast the last run printed (illada.forecast.Forecast)

    def sweep(self, arguments: list[str]) -> Any:
        """Hydra's entry: the sweep, then a non-zero exit with one line when its points failed as
        ``hydra.sweeper.fail_on`` says (so that a script or CI notices)."""
        result = super().sweep(arguments)
        line = failed_line(self.status, self.conf["fail_on"], self.root)
        if line:
            raise SystemExit(f"error: {line}")
        return result

    # ------------------------------------------------------------------------------------------ planning
    def plan(self, arguments: list[str]) -> Plan:
        """Compose and validate every point of the sweep; raise :class:`SweepError` listing what is wrong.
        The sweep directory is checked to be writable first (a dry run too: the check writes nothing)."""
        from illada.loading import DeviceUnavailableError

        self._check_options()
        parser = self.parser()
        try:
            parsed = parser.parse_overrides(list(arguments))
            fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
            base = self.compose(fixed)
            axes = grids(parser, base, parsed)
        except (HydraException, OmegaConfBaseException) as e:
            raise SweepError(str(e).strip()) from None
        self.sweep_root(base)  # before validating a large sweep
        plan = Plan(base=base, points=[], fixed=fixed)
        errors: list[str] = []
        causes: set[str] = set()
        seen: set[str] = set()
        combos = [combo for grid in axes for combo in itertools.product(*grid)]
        if not combos:  # an ablation's `sweep: []`: nothing to plan (an empty axis is named by grids())
            raise SweepError("the sweep has no points (its `sweep:` list of grids is empty); nothing was run or "
                             "written")
        for i, combo in enumerate(combos):
            own = list(combo)
            try:
                resolved = self.validate_point(self.point(fixed + own))
            except UnknownSettingError:  # a typo: every point has it, no point is worth running
                raise
            except (ValueError, OSError, DeviceUnavailableError) as e:
                message = str(e).strip()
                cause = f"caused by {culprit(message, fixed + own)!r}: {message}"
                causes.add(cause)
                errors.append(f"point {i + 1}/{len(combos)} [{' '.join(own) or 'no sweep overrides'}]: {cause}")
                continue
            if resolved.key in seen:
                plan.duplicates += 1
                unread = unused_group(resolved, own)
                if unread:
                    plan.unused.add((unread, resolved.settings["task"]))
                continue
            seen.add(resolved.key)
            plan.points.append(PlannedPoint(own, resolved))
        # skipping helps where some combinations of valid settings are invalid, not where every point is
        some = len(errors) < len(combos)
        skip = "pass hydra.sweeper.on_invalid=skip to drop invalid points"
        if errors and self.conf["on_invalid"] != "skip" and len(causes) == 1 and "\n" not in next(iter(causes)):
            # one cause (a model that cannot be described, a device that is not there): one line says it all
            raise SweepError(f"{'' if some else 'all '}{len(errors)} of {len(combos)} points are invalid, "
                             f"{next(iter(causes))}; nothing was run" + (f" ({skip})" if some else ""))
        if errors and self.conf["on_invalid"] != "skip":
            shown = "\n  ".join(errors[:10])
            more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
            raise SweepError(f"{len(errors)} of {len(combos)} points are invalid; nothing was run:\n  {shown}{more}\n"
                             f"(fix the overrides{f', or {skip}' if some else ''})")
        if not plan.points:  # every point dropped (on_invalid=skip): a sweep of nothing would rewrite plan.json
            raise SweepError(f"all {len(combos)} points are invalid (hydra.sweeper.on_invalid=skip dropped them), "
                             f"e.g. {errors[0] if errors else 'none'}; nothing was run or written")
        plan.invalid = errors
        return plan

    def dry_run(self, plan: Plan, store) -> None:
        """Print what the same command without ``--dry-run`` would do: totals by state, the points to run,
        the jobs; and on Slurm ask ``sbatch --test-only`` whether the cluster would accept the job."""
        from illada.runner import group_points
        from illada.store import CORRUPT, FAILED, MISSING

        c = self.conf
        states = store.states(p.resolved.key for p in plan.points)
        runs = {MISSING, CORRUPT} | ({FAILED} if c["rerun_failed"] else set())
        todo = [p for p in plan.points if states[p.resolved.key] in runs]
        jobs = len(group_points([p.resolved for p in todo], c["points_per_job"]))
        counts = collections.Counter(states.values())
        by_state = ", ".join(f"{counts[s]} {s}" for s in sorted(counts, key=lambda s: -counts[s]))
        print(f"dry run: {len(plan.points)} valid points ({by_state or 'none'}), {len(plan.invalid)} invalid; "
              f"would run {len(todo)} in {jobs} jobs ({self.cluster}) into {store.root}"
              + ("" if c["rerun_failed"] or not counts[FAILED] else f" (--rerun-failed would also rerun the "
                 f"{counts[FAILED]} failed)"))
        lines = [f"{p.resolved.key}  {states[p.resolved.key]:8s} {' '.join(p.overrides)}" for p in plan.points]
        print(f"points (key, state, overrides):{shown(lines, c['verbose'])}")
        self.forecast([p.resolved for p in todo], store)
        if todo and self.cluster == "slurm":
            print(self.check_submission(self._array_tasks(todo)))
        print("dry run: nothing was run or written")

    def forecast(self, points: list, store, groups: list | None = None, in_flight: int | None = None):
        """Print the cost forecast of running ``points`` (grouped into jobs as a real run groups them)."""
        from illada.runner import group_points
        from sweeps.costs import check_cost_per_item, parallelism, print_forecast
        from sweeps.sweeper import local_job_cap

        c = self.conf
        if groups is None:
            per_job = c["points_per_job"]
            if points and self.cluster == "local":
                in_flight = c.get("max_in_flight") or local_job_cap(self.config_threads())[0]
                per_job = points_per_job_for(points, per_job, in_flight)
            groups = group_points(points, per_job)
        slots, gpus = parallelism(self.cluster, self.launcher, in_flight)
        self.last_forecast = print_forecast(groups, store, slots, gpus, check_cost_per_item(c.get("cost_per_item_s")))
        return self.last_forecast

    def early_stop_confidence(self) -> float | None:
        """``hydra.sweeper.early_stop`` as a confidence level (None: off); a one-line error for a bad value."""
        from illada.fidelity import DEFAULT_CONFIDENCE, check_confidence

        value = self.conf.get("early_stop", False)
        if value is False or value is None:
            return None
        if value is True:
            return DEFAULT_CONFIDENCE
        try:
            return check_confidence(value, "hydra.sweeper.early_stop")
        except ValueError as e:
            raise SweepError(f"{e} (or true: 95%, false: off)") from None

    def config_threads(self):
        """The sweep's ``threads`` (torch threads per job) from its config, None when not set."""
        from omegaconf import OmegaConf

        return OmegaConf.select(self.config, "threads", default=None)

    def _array_tasks(self, points: list[PlannedPoint]) -> int:
        """Tasks of the first job array these points would be submitted as (for ``sbatch --test-only``)."""
        from illada.runner import group_points

        jobs = len(group_points([p.resolved for p in points], self.conf["points_per_job"]))
        return max(1, min(jobs, self.conf["max_array_size"] or jobs))

    def _check_options(self) -> None:
        c = self.conf
        if c["on_invalid"] not in ("error", "skip"):
            raise SweepError(f"hydra.sweeper.on_invalid={c['on_invalid']!r}: choose error or skip")
        if c["fail_on"] not in FAIL_ON:
            raise SweepError(f"hydra.sweeper.fail_on={c['fail_on']!r}: choose one of {', '.join(FAIL_ON)}")
        ppj = c["points_per_job"]
        if isinstance(ppj, bool) or not isinstance(ppj, int) or ppj < 1:
            raise SweepError(f"hydra.sweeper.points_per_job={ppj!r}: must be a positive integer")
        self.check_launcher("the illada_grid sweeper")
        self.check_settings()
        from sweeps.costs import check_cost_per_item

        check_cost_per_item(c.get("cost_per_item_s"))
        self.early_stop_confidence()

    # ------------------------------------------------------------------------------------------- running
    def run(self, arguments: list[str]) -> Any:
        """Run the sweep the overrides describe and return its :class:`~illada.store.SweepStore`."""
        from illada.launch import chunks, collect, slurm_max_array_size, submit
        from illada.runner import PointGroup, group_points, run_inprocess
        from illada.store import SweepStore

        start = time.perf_counter()
        plan = self.plan(arguments)
        c, cfg = self.conf, plan.base
        store = SweepStore(self.root)
        _report_plan(plan, time.perf_counter() - start, c["verbose"])
        if not c["dry_run"]:  # a dry run of an unnamed sweep has no directory to name: it writes nothing
            self.announce_dir()
        keys = [p.resolved.key for p in plan.points]
        if c["dry_run"]:
            self.dry_run(plan, store)
            return store
        if self.cluster == "slurm":  # a refused partition/account/qos: one line, before anything is written
            self.check_submission(self._array_tasks(plan.points))
        self.save_multirun(store.root)
        for p in plan.points:
            store.plan(p.resolved.key, p.resolved.settings, p.overrides, fixed=plan.fixed)
        store.set_current_plan(keys)  # status and analysis count these points; other records become superseded
        if c.get("finish_stopped"):
            from illada.fidelity import reopen_stopped

            reopened = reopen_stopped(store, keys)
            print(f"--finish-stopped: running {len(reopened)} early-stopped points to the end (their items kept)")
        triage = store.triage(keys, rerun_failed=c["rerun_failed"])
        _report_triage(store, triage, c["rerun_failed"])
        todo = set(triage.todo)
        points = [p.resolved for p in plan.points if p.resolved.key in todo]
        threads = cfg.get("threads")
        per_job = c["points_per_job"]
        in_flight = self.local_jobs(threads) if points and self.cluster == "local" else None
        if in_flight is not None:
            per_job = points_per_job_for(points, per_job, in_flight)
        early_stop = self.early_stop_confidence()
        groups = [PointGroup(store.root, g, threads=threads, stale_after_s=c["stale_after_s"], early_stop=early_stop)
                  for g in group_points(points, per_job)]
        more = (f" (points_per_job {per_job}: at most {in_flight} jobs at a time)"
                if per_job > c["points_per_job"] else "")
        self.forecast(points, store, groups=[g.points for g in groups], in_flight=in_flight)
        print(f"{len(keys) - len(points)} points already have a record; running {len(points)} in {len(groups)} jobs "
              f"({self.cluster}) into {store.root}{more}")
        if groups and self.in_process:
            self.counts = run_inprocess(groups)
        elif groups:
            executor = self.executor()
            max_array = c["max_array_size"] or (slurm_max_array_size() if self.cluster == "slurm" else len(groups))
            # local jobs beyond the cap (more models than it) wait for the wave before them
            waves = [groups] if in_flight is None else list(chunks(groups, in_flight))
            self.counts = collections.Counter()
            for i, wave in enumerate(waves):
                submitted = submit(executor, wave, max_array)
                ids = sorted({s.job.job_id.split("_")[0] for s in submitted})
                wave_of = f" (wave {i + 1} of {len(waves)})" if len(waves) > 1 else ""
                print(f"submitted {len(submitted)} jobs in {len(ids)} arrays{wave_of}: {' '.join(ids)} "
                      f"(logs in {executor.folder})")
                if not c["wait"]:
                    rest = f" (only the first of {len(waves)} waves of local jobs)" if len(waves) > 1 else ""
                    print(f"not waiting{rest}: follow with `illada-status {store.root}`, resume (and run the rest) "
                          f"with {self.resume_command() or 'the same command'}")
                    return store
                self.counts.update(collect(submitted, store, poll_s=c["poll_s"], lost_after_s=c["lost_after_s"]))
            if self.counts["jobs_failed"]:
                print(f"{self.counts['jobs_failed']} jobs ended early; their unfinished points have failure records")
        status = self.status = store.status()  # the current plan's points only: other records are superseded
        print(status.line())
        if status.failed:
            print(f"failed points: `illada-status {store.root} --failed`; rerun them with --rerun-failed")
        self.report_end(start)
        return store


FAIL_ON = ("all", "any", "never")  # hydra.sweeper.fail_on


def failed_line(status, fail_on: str, root) -> str | None:
    """The one line a sweep exits non-zero with when its plan's points failed as ``fail_on`` says (``all``:
    every point, ``any``: at least one, ``never``), else None; ``status`` None (not waited for) is no failure."""
    if status is None or not status.failed or fail_on == "never":
        return None
    failed, total = len(status.failed), status.total
    if fail_on == "all" and failed < total:
        return None
    which = f"all {total} points" if failed == total else f"{failed} of {total} points"
    return (f"{which} failed (hydra.sweeper.fail_on={fail_on}); their causes: `illada-status {root} "
            "--failed`")


def points_per_job_for(points, points_per_job: int, jobs: int) -> int:
    """The smallest ``points_per_job`` (not below the one given) that groups ``points`` into at most ``jobs``
    jobs (:func:`illada.runner.group_points` makes ceil(n / points_per_job) jobs per model), or into one job
    per model where more models than that are swept."""
    import bisect

    from illada.runner import model_key

    sizes = collections.Counter(model_key(p) for p in points).values()
    target = max(jobs, len(sizes))
    n_jobs = lambda per_job: sum(-(-n // per_job) for n in sizes)  # noqa: E731 -- non-increasing in per_job
    candidates = range(points_per_job, max(points_per_job, *sizes) + 1)
    return candidates[bisect.bisect_left(candidates, True, key=lambda k: n_jobs(k) <= target)]


SHOWN = 20  # points (and invalid points) listed unless hydra.sweeper.verbose=true


def shown(lines: list[str], verbose: bool, limit: int = SHOWN) -> str:
    """The first ``limit`` lines (all with ``verbose``), indented, then how many are left out."""
    head = lines if verbose else lines[:limit]
    more = (f"\n  ... and {len(lines) - len(head)} more (--verbose = hydra.sweeper.verbose=true lists all)"
            if len(lines) > len(head) else "")
    return "\n  ".join(["", *head]) + more


def _report_plan(plan: Plan, seconds: float, verbose: bool = False) -> None:
    extra = ""
    if plan.invalid:  # asked for (an ablation's grid with cells that cannot run): not a failure
        n = len(plan.invalid)
        extra += (f"; {n} invalid grid {'cell' if n == 1 else 'cells'} left out as hydra.sweeper.on_invalid=skip "
                  "asks (no failure):" + shown(plan.invalid, verbose, 5))
    if plan.duplicates:
        kinds = {"scorer": "generation", "sampler": "multiple-choice"}
        unread = "; ".join(f"{group} settings are unused by the {kinds[group]} task {task!r}"
                           for group, task in sorted(plan.unused))
        extra += (f"; {plan.duplicates} duplicates dropped ("
                  + (unread or "settings a task does not read, e.g. sampler.* for a multiple-choice task") + ")")
    # an unnamed sweep is known by its directory (printed with "its records go to" when it was made)
    name = f"in {plan.base.get('sweep_dir')}" if plan.base.get("name") == UNNAMED else plan.base.name
    print(f"sweep {name}: {len(plan.points)} valid points (validated in {seconds:.1f} s){extra}")


def _report_triage(store, triage, rerun_failed: bool) -> None:
    """Say what the store was made to do before the run: damaged records set aside, failures to rerun."""
    from illada.store import FAILED

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
