"""Measured figures of the Pareto search (issue 6): how well it searches, and how busy it keeps the workers.

    python -m sweeps.benchmark_search hypervolume [--seeds 5] [--budget 60]  # search vs exhaustive grid vs random
    python -m sweeps.benchmark_search utilisation [--workers 4 8]            # asynchronous vs batch-synchronous

Both use the space of ``illada-sweep -m +ablation=search`` (ablations/search.yaml: 240 valid points on the
embedded model) and write sections of ``bench_out/search.md`` (``--report``); ``--update-results`` writes them
into the committed ``illada/benchmarks/results/search.md`` instead.

* **hypervolume**: every point of the space is evaluated once (the ground truth, in ``--out``/grid; a rerun
  reuses it). Each search then runs with that store as its results store, so a trial's objectives are the
  grid's measured record for its point (a cache hit, as in a real search that meets a computed point): the
  searches differ only in which points they ask for. Hypervolume (accuracy up, latency p50 down;
  reference: accuracy 0 and 1.1 x the grid's slowest point) of the front found within k evaluations, as a
  fraction of the grid's, over seeds. An evaluation is a distinct point, i.e. a job a real search would have
  run (invalid trials and repeats of a computed point cost none, so the budget is counted in evaluations).
* **utilisation**: N workers (threads standing in for GPUs). Each launched trial keeps its worker busy for
  0.3 to 3 s (a 10x range), linear in its setting's measured latency on the grid, then leaves the grid's
  record of that setting (``sampler.seed`` joins the space so that every trial is a new point, i.e. a job).
  Utilisation = sum of the jobs' own busy time / (N x search wall time), for the asynchronous search and
  for the same search with a batch barrier (``synchronous``: ask N, wait for all).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from analysis.pareto import hypervolume, pareto_front
from illada.benchmarks.engine import environment, markdown
from illada.benchmarks.output import add_report_options, report_path
from illada.evaluate import resolve
from illada.search import ParetoSearch, grid, parse_space
from illada.store import SweepStore
from sweeps.expand import CONF_DIR, register_ablations
from sweeps.expand import to_point as config_to_point
from sweeps.plot import LATENCY, records_frame

REPORT = "search.md"
optuna.logging.set_verbosity(optuna.logging.WARNING)


def frontier_search(overrides: list[str] = ()) -> tuple[Any, dict]:
    """The base point and the ``hydra.sweeper`` block of ``illada-sweep -m +ablation=search``."""
    register_ablations()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose("config", overrides=["+ablation=search", *overrides], return_hydra_config=True)
    return config_to_point(cfg), OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)


def ground_truth(root: Path, base, space: dict) -> pd.DataFrame:
    """Evaluate every point of the space into ``root`` (what is there already is reused)."""
    points = grid(parse_space(space))
    start = time.perf_counter()
    ParetoSearch(root, space, base, n_trials=len(points), sampler="random", enqueue=points, study_name="grid",
                 storage=str(root / "grid.journal"), threads=1, log=None).run()
    frame = records_frame(SweepStore(root))
    print(f"grid: {len(points)} combinations, {len(frame)} valid points evaluated "
          f"({time.perf_counter() - start:.0f} s incl. reused records)")
    return frame


def search_curve(root: Path, base, space: dict, sampler: str, seed: int, budget: int, ref, options=None) -> list:
    """(trials, distinct evaluations, hypervolume) after each trial of one search over the grid's records."""
    study_dir = Path(tempfile.mkdtemp(prefix="illada_search_bench_"))
    res = ParetoSearch(root, space, base, n_trials=budget, sampler=sampler, seed=seed, sampler_options=options,
                       study_name=f"{sampler}-{seed}", storage=str(study_dir / "study.journal"), log=None,
                       objectives=["accuracy", LATENCY]).run()
    trials = res.study.trials
    shutil.rmtree(study_dir, ignore_errors=True)
    rows, seen, done = [], set(), []
    for t in trials:
        if "key" in t.user_attrs:
            seen.add(t.user_attrs["key"])
        if t.state == optuna.trial.TrialState.COMPLETE:
            done.append({"accuracy": t.values[0], LATENCY: t.values[1]})
        hv = hypervolume(pd.DataFrame(done), x=LATENCY, ref=ref) if done else 0.0
        rows.append((t.number + 1, len(seen), hv))
    return rows


def hypervolume_benchmark(root: Path, seeds: int, budget: int, samplers: list[str], max_trials: int) -> str:
    base, sweeper = frontier_search()
    space = sweeper["space"]
    truth = ground_truth(root / "grid", base, space)
    ref = (1.1 * truth[LATENCY].max(), 0.0)
    hv_grid = hypervolume(truth, x=LATENCY, ref=ref)
    n = len(truth)
    budgets = sorted({max(1, round(budget * f)) for f in (0.25, 0.5, 0.75, 1.0)})
    rows, reach = [], []
    for name in samplers:
        sampler, options = VARIANTS[name]
        curves = []
        for seed in range(seeds):
            start = time.perf_counter()
            curve = search_curve(root / "grid", base, space, sampler, seed, max_trials, ref, options)
            curves.append([row for row in curve if row[1] <= budget])  # up to `budget` distinct evaluations
            t, e, hv = curves[-1][-1]
            print(f"{name} seed {seed}: {hv / hv_grid:.3f} of the grid's hypervolume with {e} evaluations in "
                  f"{t} trials ({time.perf_counter() - start:.1f} s)")
        for b in budgets:
            at = [[row for row in c if row[1] <= b][-1] for c in curves]  # the last trial within b evaluations
            ratios = [hv / hv_grid for _, _, hv in at]
            reached = sum(e == b for _, e, _ in at)
            rows.append({"sampler": name, "evaluations": b, "of the grid": f"{b / n:.1%}",
                         "seeds reaching it": f"{reached}/{seeds}",
                         "trials used (mean)": f"{statistics.mean(t for t, _, _ in at):.0f}",
                         "HV / grid HV (mean)": f"{statistics.mean(ratios):.3f}",
                         "min": f"{min(ratios):.3f}", "max": f"{max(ratios):.3f}"})
        firsts = [next((e for _, e, hv in c if hv >= 0.95 * hv_grid), None) for c in curves]
        reach.append({"sampler": name,
                      "seeds reaching 95% within the budget": f"{sum(f is not None for f in firsts)}/{seeds}",
                      "evaluations to 95% (per seed)": ", ".join(str(f) if f else f">{budget}" for f in firsts)})
    front = pareto_front(truth, by=())
    return "\n\n".join([
        f"## Hypervolume vs evaluations (`python -m sweeps.benchmark_search hypervolume --seeds {seeds} "
        f"--budget {budget} --max-trials {max_trials}`)", environment("cpu"),
        f"Space: `+ablation=search`, {len(grid(parse_space(space)))} combinations, {n} valid points, task "
        f"`{base.task}` limit {base.limit} on the embedded model; grid front: {len(front)} points; grid "
        f"hypervolume {hv_grid:.6g} (reference: {ref[0]:.6g} s/sample, accuracy 0). An evaluation is a distinct "
        f"point (a job); repeated and invalid trials cost none. Each search runs until {budget} evaluations or "
        f"{max_trials} trials; `seeds reaching it` counts the searches that got that many evaluations at all.",
        markdown(rows), markdown(reach)])


# "tpe" is illada's default (multivariate, group); "tpe-independent" is Optuna's own TPE default. GP does not
# model conditional parameters (it samples them at random, and says so for every trial: silenced here).
VARIANTS = {"tpe": ("tpe", None), "tpe-independent": ("tpe", {"multivariate": False, "group": False}),
            "nsga2": ("nsga2", {"population_size": 16}), "gp": ("gp", {"warn_independent_sampling": False}),
            "random": ("random", None)}


class _Replay:
    """A job that keeps its worker busy for ``seconds`` (its own clock), then leaves the grid's record of its
    setting under the trial's key."""

    def __init__(self, record: Path, store: SweepStore, key: str, seconds: float, busy: list) -> None:
        self.record, self.store, self.key, self.seconds, self.busy = record, store, key, seconds, busy

    def __call__(self) -> None:
        start = time.perf_counter()
        time.sleep(self.seconds)
        rec = {**json.loads(self.record.read_text()), "key": self.key}
        (self.store.records_dir / f"{self.key}.json").write_text(json.dumps(rec))
        self.busy.append(time.perf_counter() - start)


def utilisation_benchmark(root: Path, workers: list[int], jobs_per_worker: int) -> str:
    base, sweeper = frontier_search()
    space = sweeper["space"]
    grid_store = SweepStore(root / "grid")
    truth = ground_truth(grid_store.root, base, space)
    lat = truth.set_index("key")[LATENCY]
    seconds = 0.3 + 2.7 * (lat - lat.min()) / (lat.max() - lat.min())  # 0.3 .. 3 s: a 10x range
    # the sampler's seed as one more (free) dimension makes each trial its own point, so every trial is a job;
    # its duration and record are those of the same setting on the grid (there without a seed)
    space = {**space, "sampler.seed": {"type": "int", "low": 0, "high": 10**6}}
    rows = []
    for n in workers:
        for synchronous in (False, True):
            store = SweepStore(Path(tempfile.mkdtemp(prefix="illada_util_")))
            store.records_dir.mkdir(parents=True)
            busy: list[float] = []
            with ThreadPoolExecutor(n) as pool:
                def launch(trial, resolved, overrides):
                    p = resolved.point
                    key = resolve(replace(p, sampler={**p.sampler, "seed": None})).key
                    return pool.submit(_Replay(grid_store.records_dir / f"{key}.json", store, resolved.key,
                                               float(seconds[key]), busy))

                res = ParetoSearch(store.root, space, base, n_trials=jobs_per_worker * n, max_in_flight=n,
                                   synchronous=synchronous, seed=0, poll_s=0.01, launch=launch, log=None).run()
            util = sum(busy) / (n * res.wall_seconds)
            rows.append({"workers": n, "mode": "batch-synchronous" if synchronous else "asynchronous",
                         "trials": len(res.study.trials), "jobs": res.launched,
                         "job durations (s)": f"{min(busy):.2f}-{max(busy):.2f}",
                         "busy (s)": f"{sum(busy):.1f}", "wall (s)": f"{res.wall_seconds:.1f}",
                         "utilisation": f"{util:.1%}"})
            print(rows[-1])
            shutil.rmtree(store.root, ignore_errors=True)
    return "\n\n".join([
        f"## Worker utilisation (`python -m sweeps.benchmark_search utilisation --jobs-per-worker "
        f"{jobs_per_worker}`)", environment("cpu"),
        "Trials of `+ablation=search` plus `sampler.seed` (TPE, seed 0, poll every 10 ms); each job holds its "
        "worker (a thread) for 0.3-3 s, linear in its setting's measured latency on the grid; utilisation = "
        "jobs' busy time / (workers x search wall time, from the study's creation to the last tell).",
        markdown(rows)])


def write_section(path: Path, text: str, title: str) -> None:
    """Replace (or add) the section of the report at ``path`` that starts with ``title``."""
    old = path.read_text() if path.exists() else "# Pareto search benchmarks\n"
    parts = old.split("\n## ")
    kept = [parts[0].rstrip()] + ["## " + p.rstrip() for p in parts[1:] if not p.startswith(title)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(kept + [text.rstrip()]) + "\n")
    print(f"wrote {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["hypervolume", "utilisation"])
    parser.add_argument("--seeds", type=int, default=5, help="searches per sampler (seeds 0..N-1)")
    parser.add_argument("--budget", type=int, default=60, help="evaluations per search (25%% of the 240-point grid)")
    parser.add_argument("--max-trials", type=int, default=300, help="trials per search at most")
    parser.add_argument("--samplers", nargs="+", default=list(VARIANTS), help="search variants to compare")
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 8], help="worker counts (utilisation)")
    parser.add_argument("--jobs-per-worker", type=int, default=25, help="trials per worker (utilisation)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/search"), help="grid records (reused)")
    add_report_options(parser, REPORT, flag="--report")
    args = parser.parse_args(argv)
    report = report_path(args, REPORT, flag="--report")  # refused now, not after the benchmark
    if args.what == "hypervolume":
        text = hypervolume_benchmark(args.out, args.seeds, args.budget, args.samplers, args.max_trials)
        print(text)
        write_section(report, text, "Hypervolume")
    else:
        text = utilisation_benchmark(args.out, args.workers, args.jobs_per_worker)
        print(text)
        write_section(report, text, "Worker utilisation")


if __name__ == "__main__":
    main()
