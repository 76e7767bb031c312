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
import random
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from illada.benchmarks.engine import environment, markdown
from illada.benchmarks.output import add_report_options, report_path
from illada.fidelity import (DEFAULT_CONFIDENCE, DEFAULT_RUNGS, MIN_BATCHES, could_be_on_front, partial_latency,
                             rung_sizes)
from illada.forecast import job_accounts
from illada.store import SweepStore
from sweeps.plot import LATENCY
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


# ------------------------------------------------------------------------------- search and grid on replay
class Replay:
    """Every point of a search space, measured once with per-item outcomes (a grid in ``root``): a point
    "evaluated on k items" is read from its first k items in the fidelity order (:func:`ordered_items`)."""

    def __init__(self, root: Path, base, space: dict) -> None:
        import pandas as pd

        from illada.evaluate import _load_task
        from illada.fidelity import ordered_items
        from illada.records import items_path
        from illada.search import grid, parse_space
        from sweeps.plot import records_frame

        self.base, self.space, self.store = base, space, SweepStore(root)
        self.combos = grid(parse_space(space))
        self._keys: dict[tuple, str | None] = {}
        truth = records_frame(self.store).set_index("key")
        self.truth = truth[truth.index.isin({self._resolve(v) for v in self.combos})]  # this space's points only
        data = _load_task(base.task, base.split, base.limit, base.seed, base.num_fewshot, base.data_path)
        ids = [data.items[i].id for i in ordered_items(data, base.batch_size)]
        self.n = len(ids)
        self.outcomes, self.latency = {}, {}
        for key in self.truth.index:
            rows = pd.read_parquet(items_path(self.store.records_dir, key)).set_index("id").loc[ids]
            self.outcomes[key] = rows["exact_match"].astype(bool).to_numpy().cumsum()
            self.latency[key] = rows["latency_s"].to_numpy()

    def _resolve(self, values) -> str | None:
        from illada.evaluate import resolve
        from illada.search import to_point

        marker = tuple(sorted(values.items()))
        if marker not in self._keys:
            try:
                self._keys[marker] = resolve(to_point(self.base, values)).key
            except (ValueError, OSError):
                self._keys[marker] = None
        return self._keys[marker]

    def key(self, values) -> str | None:
        """The point's key when the grid measured it; None for an invalid point."""
        key = self._resolve(values)
        return key if key in self.outcomes else None

    def evidence(self, key: str, k: int):
        import statistics

        from illada.fidelity import evidence

        k = min(k, self.n)
        latency = (self.truth.loc[key, LATENCY] if k == self.n  # the record's own p50 (same median)
                   else partial_latency(self.latency[key][:k]))
        return evidence(key, int(self.outcomes[key][k - 1]), k, float(latency), self.n)

    def measure(self, values, k: int):
        key = self.key(values)
        if key is None:
            return None
        return key, (None if k == 0 else self.evidence(key, k))

    def hv(self, keys) -> float:
        from analysis.pareto import hypervolume

        keys = list(keys)
        return hypervolume(self.truth.loc[keys], x=LATENCY, ref=self.ref) if keys else 0.0

    @property
    def ref(self):
        return (1.1 * self.truth[LATENCY].max(), 0.0)


def today_curve(replay: Replay, seed: int, max_trials: int) -> list[tuple[int, float]]:
    """(items evaluated, hypervolume) after each trial of today's search (every new point on every item)."""
    from illada.search import ParetoSearch

    study_dir = Path(tempfile.mkdtemp(prefix="illada_costs_today_"))
    res = ParetoSearch(replay.store.root, replay.space, replay.base, n_trials=max_trials, sampler="tpe",
                       seed=seed, study_name=f"today-{seed}", storage=str(study_dir / "study.journal"), log=None,
                       objectives=["accuracy", LATENCY]).run()
    trials = res.study.trials
    shutil.rmtree(study_dir, ignore_errors=True)
    seen: list[str] = []
    curve = []
    for t in trials:
        key = t.user_attrs.get("key")
        if key and key not in seen and key in replay.outcomes:
            seen.append(key)
            curve.append((len(seen) * replay.n, replay.hv(seen)))
    return curve


def fidelity_curve(replay: Replay, seed: int, max_trials: int, rungs, confidence: float):
    """(items evaluated, hypervolume of the points measured on every item) after each measurement."""
    from illada.mfsearch import FidelitySearch

    res = FidelitySearch(replay.space, replay.measure, n_items=replay.n, batch_size=replay.base.batch_size,
                         rungs=rungs, confidence=confidence, seed=seed, n_trials=max_trials).run()
    curve, complete = [], []
    for step in res.steps:
        if step.evidence.complete and step.evidence.key not in complete:
            complete.append(step.evidence.key)
        curve.append((step.items_spent, replay.hv(complete)))
    return curve, res


def first_reaching(curve, target: float) -> int | None:
    return next((items for items, hv in curve if hv >= target), None)


def search_space(limit: int):
    """The base point and space of ``+ablation=search`` without the DKV / d2Cache caches and their knobs
    (312 combinations, 240 valid points: the space ``sweeps.benchmark_search`` measured its search on)."""
    from sweeps.benchmark_search import frontier_search

    base, sweeper = frontier_search([f"task.limit={limit}"])
    space = {k: v for k, v in sweeper["space"].items() if k not in ("sampler.current_k", "sampler.cache_steps")}
    space["sampler.cache"] = {**space["sampler.cache"], "choices": ["none", "prefix", "dual"]}
    return base, space


def search_benchmark(root: Path, seeds: int, max_trials: int, rungs, confidence: float, limit: int) -> str:
    import statistics

    from sweeps.benchmark_search import ground_truth

    base, space = search_space(limit)
    ground_truth(root, base, space)
    replay = Replay(root, base, space)
    hv_grid = replay.hv(replay.truth.index)
    grid_items = len(replay.truth) * replay.n
    rows, per_seed = [], []
    for seed in range(seeds):
        today = today_curve(replay, seed, max_trials)
        mf, res = fidelity_curve(replay, seed, max_trials, rungs, confidence)
        a, b = first_reaching(today, 0.95 * hv_grid), first_reaching(mf, 0.95 * hv_grid)
        stopped = sum(not e.complete for e in res.evidence.values())
        per_seed.append((a, b))
        rows.append({"seed": seed, "(a) today: items to 95%": a or f">{today[-1][0]}",
                     "(b) multi-fidelity: items to 95%": b or f">{mf[-1][0]}",
                     "(b) / (a)": f"{b / a:.1%}" if a and b else "-",
                     "(a) final HV / grid": f"{today[-1][1] / hv_grid:.3f} at {today[-1][0]} items",
                     "(b) final HV / grid": f"{mf[-1][1] / hv_grid:.3f} at {mf[-1][0]} items",
                     "(b) points: complete / stopped early": f"{len(res.evidence) - stopped} / {stopped}"})
        print(rows[-1], flush=True)
    both = [(a, b) for a, b in per_seed if a and b]
    summary = (f"mean (b)/(a) over the {len(both)} seeds where both reach 95%: "
               f"{statistics.mean(b / a for a, b in both):.1%}; (c) the full grid: {grid_items} items "
               f"({len(replay.truth)} points x {replay.n})" if both else "no seed where both reach 95%")
    return "\n\n".join([
        f"## Hypervolume vs items: today's search, multi-fidelity search, full grid (`python -m "
        f"sweeps.benchmark_costs search --seeds {seeds} --max-trials {max_trials} --limit {limit}`)",
        environment("cpu"),
        f"Space: `+ablation=search` without the dkv/d2cache caches ({len(replay.combos)} combinations, "
        f"{len(replay.truth)} valid points), task "
        f"`{base.task}` limit {limit}, batch size {base.batch_size}, on the embedded model. Every point was "
        "evaluated once with per-item outcomes; the searches replay those measurements (a point evaluated on k "
        "items reads its first k items in the fidelity order). (a) today's search (TPE; a new point costs "
        f"{replay.n} items); (b) the multi-fidelity search (TPE; rungs {', '.join(map(str, rungs))} of the items = "
        f"{rung_sizes(replay.n, rungs, base.batch_size)} items, promotion at {confidence:.0%}); hypervolume of "
        "the points measured on every item only (accuracy up, latency p50 down, reference 1.1 x the slowest "
        f"point's latency and accuracy 0), against the grid's {hv_grid:.6g}. Items to 95%: the items "
        "evaluated when the hypervolume first reaches 95% of the grid's.", markdown(rows), summary])


def early_stop_benchmark(root: Path, seeds: int, confidence: float, limit: int) -> str:
    base, space = search_space(limit)
    replay = Replay(root, base, space)
    keys = list(replay.truth.index)
    full_front = set(pareto_front_keys(replay, keys))
    bs = base.batch_size
    rows = []
    for seed in range(seeds):
        order = list(keys)
        random.Random(seed).shuffle(order)
        finished, spent = [], 0
        for key in order:
            for k in range(bs, replay.n + bs, bs):
                ev = replay.evidence(key, k)
                if MIN_BATCHES * bs <= k < replay.n and not could_be_on_front(ev, finished):
                    break
            spent += ev.items
            if ev.complete:
                finished.append(ev)
        kept = set(pareto_front_keys(replay, [e.key for e in finished]))
        rows.append({"order (seed)": seed, "items without early stop": len(keys) * replay.n,
                     "items with early stop": spent, "of the full grid": f"{spent / (len(keys) * replay.n):.1%}",
                     "points stopped early": len(keys) - len(finished),
                     "full grid's front kept": f"{len(full_front & kept)}/{len(full_front)}",
                     "fronts equal": "yes" if kept == full_front else "no"})
        print(rows[-1], flush=True)
    return "\n\n".join([
        f"## Grid with and without early stop (`python -m sweeps.benchmark_costs early-stop --seeds {seeds} "
        f"--limit {limit}`)", environment("cpu"),
        f"The same {len(keys)} measured points, run one after another in a random order (one order per seed); "
        f"with early stop a point is checked after each batch of {bs} items (from its batch {MIN_BATCHES} on) and "
        f"stops once its upper bound at "
        f"{confidence:.0%} is beaten by a finished point's lower bound at a latency no worse (the rule of "
        "`illada.fidelity.could_be_on_front`). Replayed from the per-item records; points running at the same "
        "time (a real cluster) would see fewer finished points and stop later.", markdown(rows)])


def pareto_front_keys(replay: Replay, keys) -> list[str]:
    from analysis.pareto import pareto_front

    frame = replay.truth.loc[list(keys)].reset_index()
    return list(pareto_front(frame, by=())["key"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["forecast", "search", "early-stop"])
    parser.add_argument("--seeds", type=int, default=5, help="searches (and grid orders) per method")
    parser.add_argument("--max-trials", type=int, default=60, help="points measured per search")
    parser.add_argument("--limit", type=int, default=200, help="items per point (task.limit)")
    parser.add_argument("--rungs", type=float, nargs="+", default=list(DEFAULT_RUNGS), help="rung fractions")
    parser.add_argument("--confidence", type=float, default=DEFAULT_CONFIDENCE, help="promotion confidence")
    parser.add_argument("--grid", type=Path, default=Path("runs/bench/costs/grid"),
                        help="the space's per-item records (computed once, reused)")
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
    elif args.what == "search":
        text = search_benchmark(args.grid, args.seeds, args.max_trials, tuple(args.rungs), args.confidence,
                                args.limit)
        print(text)
        write_section(report, text, "Hypervolume vs items")
    else:
        text = early_stop_benchmark(args.grid, args.seeds, args.confidence, args.limit)
        print(text)
        write_section(report, text, "Grid with and without early stop")


if __name__ == "__main__":
    main()
