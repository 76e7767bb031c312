"""What a sweep will cost, said before it is submitted: device-hours and wall time at the launcher's parallelism.

A point's cost is its item count times a per-item time. The per-item time comes, in this order, from

1. ``cost_per_item_s`` when the user gives one (``hydra.sweeper.cost_per_item_s``): it overrides records;
2. earlier records in the sweep root of the same model, device, dtype, task, method, decoder (or scorer),
   batch size and threads -- the *settings family* -- and among them those whose sampler (scorer) settings
   agree with the point's on the most fields (so that ``steps=2`` is priced from ``steps=2`` where there is
   one): the median of their ``eval_seconds / n``;
3. earlier records of the same model, device and task in any family (a coarser guess, said so);

and a point with none of these has no estimate (the forecast says which, and how to give one). Jobs also
pay for loading their model once: the median ``cost.load_seconds`` of earlier records of that model and
device. Wall time replays the jobs in submission order on ``parallelism`` slots (a Slurm array's
``array_parallelism``, the local job cap, 1 in process), each starting when a slot frees up.

Reading records only: no torch, so a dry run stays fast.
"""

from __future__ import annotations

import heapq
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

#: settings that make two points' per-item times comparable (beyond the sampler/scorer knobs)
FAMILY_FIELDS = ("model", "device", "dtype", "task", "method", "batch_size", "threads")


def family(settings: Mapping[str, Any]) -> tuple:
    """The settings family of a point: what must match for an earlier record to price it directly."""
    knobs = settings.get("sampler") or settings.get("scorer") or {}
    flavour = knobs.get("decoder") or knobs.get("name")
    return tuple(str(settings.get(f)) for f in FAMILY_FIELDS) + (str(flavour),)


def _knobs(settings: Mapping[str, Any]) -> dict[str, Any]:
    return dict(settings.get("sampler") or settings.get("scorer") or {})


def _scaled(seconds: float, settings: Mapping[str, Any], knobs: Mapping[str, Any]) -> float:
    """A record's per-item seconds carried over to a point that takes another number of denoising steps: time
    is linear in forward passes, and a sampler's forward passes in its ``steps`` (an upper bound for adaptive
    decoders, which the record's own settings already reflect)."""
    theirs, ours = _knobs(settings).get("steps"), knobs.get("steps")
    if isinstance(theirs, int) and isinstance(ours, int) and theirs > 0 and ours > 0:
        return seconds * ours / theirs
    return seconds


def per_item_seconds(record: Mapping[str, Any]) -> float | None:
    """Seconds one item took in a record (``eval_seconds / n``); None when the record does not say."""
    cost, quality = record.get("cost") or {}, record.get("quality") or {}
    seconds, n = cost.get("eval_seconds"), quality.get("n")
    if not isinstance(seconds, (int, float)) or not isinstance(n, int) or n < 1 or seconds <= 0:
        return None
    return seconds / n


@dataclass
class PointCost:
    """One point's forecast: items, seconds (None: no estimate) and what the per-item time came from."""

    key: str
    model: str
    device: str
    items: int | None
    seconds: float | None
    source: str


@dataclass
class Forecast:
    """A sweep's forecast: its points, its jobs' seconds (load included) and the totals."""

    points: list[PointCost]
    parallelism: int
    gpus_per_job: int = 1
    job_seconds: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0
    load_sources: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def device_seconds(self) -> float:
        """Seconds of device (GPU, or CPU job) time: every job's seconds times the devices it holds."""
        return sum(self.job_seconds) * self.gpus_per_job

    @property
    def unpriced(self) -> list[PointCost]:
        return [p for p in self.points if p.seconds is None]

    def lines(self) -> list[str]:
        """What to print: one line for the whole sweep, then one per model and device with its sources."""
        if not self.points:
            return ["cost forecast: nothing to run"]
        unit = "GPU-hours" if any(p.device.startswith("cuda") for p in self.points) else "CPU-hours (job-hours)"
        missing = (f"; {len(self.unpriced)} of {len(self.points)} points have no estimate (not counted)"
                   if self.unpriced else "")
        if len(self.unpriced) == len(self.points):
            return [f"cost forecast: no estimate for any of the {len(self.points)} points",
                    *(f"  {m} on {d}: {why}" for (m, d), why in sorted({(p.model, p.device): p.source
                                                                          for p in self.points}.items()))]
        head = (f"cost forecast: {self.device_seconds / 3600:.3g} {unit} ({_duration(self.device_seconds)}), "
                f"wall time {_duration(self.wall_seconds)} "
                f"at {self.parallelism} job{'s' if self.parallelism != 1 else ''} at a time "
                f"({len(self.job_seconds)} jobs, {sum(p.items or 0 for p in self.points)} items){missing}")
        out = [head]
        by: dict[tuple[str, str], list[PointCost]] = defaultdict(list)
        for p in self.points:
            by[(p.model, p.device)].append(p)
        for (model, device), points in sorted(by.items()):
            priced = [p for p in points if p.seconds is not None]
            sources = sorted({p.source for p in points})
            load = self.load_sources.get((model, device), "")
            out.append(f"  {model} on {device}: {len(points)} points, "
                       f"{sum(p.seconds for p in priced) / 3600:.3g} h of evaluation"
                       f"{'; ' + load if load else ''}; per-item time from: " + "; ".join(sources))
        return out


def item_count(settings: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> int | None:
    """Items a point evaluates: its ``limit``, capped by the task's size where an earlier record of the task
    says it (``quality.n_total``); without a limit, that size; None when neither is known."""
    totals = [r["quality"]["n_total"] for r in records
              if r.get("settings", {}).get("task") == settings.get("task")
              and r.get("settings", {}).get("split") == settings.get("split")
              and isinstance((r.get("quality") or {}).get("n_total"), int)]
    total = max(totals) if totals else None
    limit = settings.get("limit")
    if limit is None:
        return total
    return min(limit, total) if total is not None else limit


def task_size(settings: Mapping[str, Any]) -> int | None:
    """The number of items of an illada task's split (loads the task's rows, not a model); None for a task it
    cannot read here (lm-eval tasks, data not on this machine)."""
    from illada.tasks import get_task

    try:
        task = get_task(str(settings["task"]))
        data = task.load(settings.get("split"), limit=None, seed=settings.get("seed", 0),
                         num_fewshot=settings.get("num_fewshot", 0), data_path=settings.get("data_path"))
    except Exception:  # noqa: BLE001 -- a forecast is advice: a task it cannot size is reported, not fatal
        return None
    return data.n_total


class Pricer:
    """Per-item seconds of points, from earlier records (see the module docstring) or an explicit figure."""

    def __init__(self, records: Iterable[Mapping[str, Any]], cost_per_item_s: float | None = None,
                 jobs: Iterable[Mapping[str, Any]] = ()) -> None:
        self.records = [r for r in records if r.get("status") == "ok" and per_item_seconds(r) is not None]
        self.cost_per_item_s = cost_per_item_s
        self.job_loads = [j["load_seconds"] for j in jobs
                          if isinstance(j.get("load_seconds"), (int, float)) and j["load_seconds"] > 0]
        self.by_family: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
        self.by_task: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
        for r in self.records:
            s = r["settings"]
            self.by_family[family(s)].append(r)
            self.by_task[(s.get("model"), s.get("device"), s.get("task"))].append(r)

    def per_item(self, settings: Mapping[str, Any]) -> tuple[float | None, str]:
        """(seconds per item, what it was estimated from); (None, why) when nothing prices the point."""
        if self.cost_per_item_s is not None:
            return self.cost_per_item_s, f"hydra.sweeper.cost_per_item_s={self.cost_per_item_s:g}"
        same = self.by_family.get(family(settings), [])
        if same:
            knobs = _knobs(settings)
            agree = [sum(_knobs(r["settings"]).get(k) == v for k, v in knobs.items()) for r in same]
            best = max(agree)
            closest = [r for r, a in zip(same, agree) if a == best]
            differ = len(knobs) - best
            knob = "1 knob differs" if differ == 1 else f"{differ} knobs differ"
            what = f"nearest settings ({knob})" if differ else "same settings"
            rate = statistics.median(_scaled(per_item_seconds(r), r["settings"], knobs) for r in closest)
            steps = "" if all(_knobs(r["settings"]).get("steps") == knobs.get("steps") for r in closest) else \
                ", scaled by steps"
            return rate, f"{len(closest)} earlier records of the same family, {what}{steps}"
        s = settings
        coarse = self.by_task.get((s.get("model"), s.get("device"), s.get("task")), [])
        if coarse:
            return (statistics.median(per_item_seconds(r) for r in coarse),
                    f"{len(coarse)} earlier records of the model on {s.get('device')} in other families (coarse)")
        return None, ("no earlier record of this model, device and task in the sweep root: pass "
                      "hydra.sweeper.cost_per_item_s=SECONDS")

    def load_seconds(self, model: str, device: str) -> tuple[float, str]:
        """Seconds a job spends loading its model: the median of earlier records of the model on the device
        that loaded it (a job's first point), else of earlier jobs in the sweep root; 0 when none say."""
        loads = [r["cost"].get("load_seconds") for r in self.records
                 if r["settings"].get("model") == model and r["settings"].get("device") == device]
        loads = [x for x in loads if isinstance(x, (int, float)) and x > 0]
        if loads:
            return statistics.median(loads), f"{statistics.median(loads):.1f} s per job to load the model"
        if self.job_loads:
            load = statistics.median(self.job_loads)
            return load, f"{load:.1f} s per job to load the model ({len(self.job_loads)} earlier jobs)"
        return 0.0, "model load time unknown (not counted)"


def forecast(groups: Sequence[Sequence[Mapping[str, Any]]], records: Iterable[Mapping[str, Any]], parallelism: int,
             cost_per_item_s: float | None = None, gpus_per_job: int = 1, items: Mapping[str, int] | None = None,
             jobs: Iterable[Mapping[str, Any]] = ()) -> Forecast:
    """The forecast of jobs (each a list of point settings, in submission order) run ``parallelism`` at a time.

    ``records`` and ``jobs`` are the sweep root's (``SweepStore.records()``, ``SweepStore.jobs()``).
    ``items`` maps a point's key to its item count where the caller knows it (e.g. a rung of a search);
    otherwise :func:`item_count` (and, failing that, :func:`task_size`) says."""
    from illada.records import settings_key

    records = list(records)
    pricer = Pricer(records, cost_per_item_s, jobs)
    out = Forecast(points=[], parallelism=max(1, int(parallelism)), gpus_per_job=max(1, int(gpus_per_job)))
    sizes: dict[tuple, int | None] = {}
    for group in groups:
        seconds = 0.0
        for s in group:
            key = settings_key(dict(s))
            n = (items or {}).get(key)
            if n is None:
                n = item_count(s, records)
            if n is None:
                task = (s.get("task"), s.get("split"), s.get("seed"), s.get("num_fewshot"), s.get("data_path"))
                if task not in sizes:
                    sizes[task] = task_size(s)
                n = sizes[task]
            rate, source = pricer.per_item(s)
            cost = None if rate is None or n is None else rate * n
            if n is None:
                source = "item count unknown (an lm-eval task, or data not here): not counted"
            out.points.append(PointCost(key, str(s.get("model")), str(s.get("device")), n, cost, source))
            seconds += cost or 0.0
        if group:
            model, device = str(group[0].get("model")), str(group[0].get("device"))
            load, said = pricer.load_seconds(model, device)
            out.load_sources[(model, device)] = said
            seconds += load
        out.job_seconds.append(seconds)
    out.wall_seconds = makespan(out.job_seconds, out.parallelism)
    return out


def job_accounts(jobs_dir: Path) -> list[dict[str, Any]]:
    """The readable job accounting files of a sweep root (``SweepStore.jobs_dir``); damaged ones are skipped
    (``illada-status`` reports them)."""
    from illada.records import CorruptFileError, read_json

    out = []
    for path in sorted(Path(jobs_dir).glob("*.json")):
        try:
            out.append(read_json(path))
        except (CorruptFileError, OSError):
            continue
    return out


def makespan(job_seconds: Sequence[float], slots: int) -> float:
    """When the last job ends if jobs start in order, each as soon as one of ``slots`` is free."""
    free = [0.0] * max(1, min(slots, len(job_seconds) or 1))
    end = 0.0
    for seconds in job_seconds:
        start = heapq.heappop(free)
        end = max(end, start + seconds)
        heapq.heappush(free, start + seconds)
    return end


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
