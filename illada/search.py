"""Asynchronous multi-objective Pareto search with Optuna (ask/tell) over the sweep machinery.

One controller process owns the study (the only writer to its storage). It asks a trial, turns its
parameters into a :class:`illada.evaluate.Point`, validates it with :func:`illada.evaluate.resolve` (an
invalid trial is told FAIL with the reason and never launched), and runs it as a one-point
:class:`illada.runner.PointGroup` through an executor (a submitit executor -- Slurm or local -- or any
``concurrent.futures`` executor). Up to ``max_in_flight`` trials run at once; each finished trial is told
at once and a new one asked (no batch barrier). Trials share the results store of grid sweeps
(:class:`illada.store.SweepStore`), so a point already computed is a cache hit, not a new job. The Hydra
sweeper ``hydra/sweeper=illada_pareto`` (``sweeps/pareto_sweeper.py``, ``illada-sweep -m +ablation=search``) runs
this loop with Hydra composing the points and Hydra's submitit launcher running them.

Search space (plain dict; the YAML ``hydra.sweeper.space`` block has the same shape)::

    {"sampler.steps": {"type": "int", "low": 2, "high": 64, "log": True},
     "sampler.remasking": {"type": "categorical", "choices": ["low_confidence", "random"]},
     "_parallel": {"type": "categorical", "choices": ["off", "threshold"]},
     "sampler.threshold": {"type": "float", "low": 0.5, "high": 0.99, "when": {"_parallel": "threshold"}}}

Names are dotted paths into :class:`Point` (``sampler.*``, ``scorer.*`` or a top-level field); names that
start with ``_`` are switches the search uses only for conditions. ``when`` maps switch names to a value or
a list of values; a conditional parameter is only suggested when its condition holds.

Each trial is a point the study has not evaluated yet: the sampler proposes on an in-memory copy of the study
(kept up to date, not rebuilt for each proposal), a proposal whose point was evaluated (or is in flight, or is invalid) is asked again, and once the
sampler keeps repeating itself the unevaluated point of the discrete grid nearest to its proposal is taken;
only the chosen point becomes a trial of the study (enqueued). A point is met again only once none is left
(a repeat: told from its record, not an evaluation). A resumed search continues the sampler's sequence (its
seed is derived from ``seed`` and the number of trials already in the study) instead of replaying it. A torn
journal (a full disk) is repaired before the study is opened (:func:`repair_journal`).
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import random
import shutil
import time
import warnings
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import optuna
from optuna.trial import TrialState

from illada.atomic import atomic_target
from illada.evaluate import Point, ResolvedPoint, failure_summary, resolve
from illada.interrupts import reraise_interrupt
from illada.progress import Counts, Progress, pause_bars
from illada.runner import PointGroup, holder_gone
from illada.store import SweepStore

#: objectives a record provides: name -> (path in the record, default direction)
METRICS: dict[str, tuple[str, str]] = {
    "accuracy": ("quality.value", "maximize"),
    "latency_p50_s": ("cost.latency_p50_s", "minimize"),  # per request, at the point's batch_size
    "latency_p95_s": ("cost.latency_p95_s", "minimize"),
    "throughput_items_per_s": ("cost.throughput_items_per_s", "maximize"),
    "throughput_tokens_per_s": ("cost.throughput_tokens_per_s", "maximize"),  # generation only
    "nfe_per_sample": ("cost.nfe_per_sample", "minimize"),
    "peak_memory_bytes": ("cost.peak_memory_bytes", "minimize"),
}
DEFAULT_OBJECTIVES = ("accuracy", "latency_p50_s")
SAMPLERS = ("tpe", "nsga2", "gp", "random")
KIND_TYPES = ("int", "float", "categorical")
#: proposals asked of the sampler for one trial before an unevaluated grid point is taken instead (TPE asked
#: again on an unchanged study mostly proposes the same point again: the grid is what steers it away)
MAX_PROPOSALS = 4
SPACE_PROBES = 64  # random draws that must hold a valid point before a continuous space is searched
#: the largest discrete grid enumerated for unevaluated points (each combination is composed and resolved)
MAX_GRID = 4096
#: the sampler of a trial whose values were chosen already (it is never asked for one: every value is fixed)
_CHOSEN = optuna.samplers.RandomSampler(seed=0)


class SearchError(ValueError):
    """A search configuration that cannot run; the message names the offending key."""


# ------------------------------------------------------------------------------------------------ space
@dataclass(frozen=True)
class Param:
    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    when: Mapping[str, Any] = field(default_factory=dict)

    def active(self, values: Mapping[str, Any]) -> bool:
        for key, want in self.when.items():
            allowed = want if isinstance(want, (list, tuple)) else [want]
            if key not in values or values[key] not in allowed:
                return False
        return True

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        if self.type == "float":
            value = trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)
            # a stepped float comes back as low + k * step in binary (0.6000000000000001): the grid value is
            # what the point's key, and so the cache, must see
            return _on_grid(value) if self.step else value
        return trial.suggest_categorical(self.name, list(self.choices))

    def values(self) -> list[Any]:
        """Every value of a discrete parameter (categorical, int, or float with a step), in order."""
        if self.type == "categorical":
            return list(self.choices)
        step = self.step or (1 if self.type == "int" else None)
        if step is None:
            raise SearchError(f"search.space.{self.name}: a continuous float has no grid; give it a step")
        n = int(math.floor((self.high - self.low) / step + 1e-9)) + 1
        if self.type == "int":
            return [int(self.low) + i * int(step) for i in range(n)]
        return [_on_grid(self.low + i * step) for i in range(n)]


def _on_grid(value: float) -> float:
    return round(value, 12)


def parse_space(space: Mapping[str, Mapping[str, Any]]) -> list[Param]:
    """Validate a search-space dict; a condition must name a parameter defined before it."""
    if not space:
        raise SearchError("search.space: empty; give at least one parameter")
    params: list[Param] = []
    seen: set[str] = set()
    for name, spec in space.items():
        spec = dict(spec)
        kind = spec.pop("type", "categorical" if "choices" in spec else None)
        if kind not in KIND_TYPES:
            raise SearchError(f"search.space.{name}.type={kind!r}: choose one of {list(KIND_TYPES)}")
        when = dict(spec.pop("when", None) or {})
        for key in when:
            if key not in seen:
                raise SearchError(f"search.space.{name}.when.{key}: condition on an unknown or later parameter")
        if kind == "categorical":
            choices = tuple(spec.pop("choices", ()) or ())
            if not choices:
                raise SearchError(f"search.space.{name}.choices: a categorical needs choices")
            p = Param(name, kind, choices=choices, when=when)
        else:
            if "low" not in spec or "high" not in spec:
                raise SearchError(f"search.space.{name}: {kind} needs low and high")
            p = Param(name, kind, low=spec.pop("low"), high=spec.pop("high"), log=bool(spec.pop("log", False)),
                      step=spec.pop("step", None), when=when)
            if not p.low < p.high:
                raise SearchError(f"search.space.{name}: low={p.low!r} must be below high={p.high!r}")
            if p.log and p.low <= 0:
                raise SearchError(f"search.space.{name}.low={p.low!r}: a log scale needs low > 0")
        if spec:
            raise SearchError(f"search.space.{name}.{sorted(spec)[0]}: unknown key")
        params.append(p)
        seen.add(name)
    return params


def suggest(trial: optuna.Trial, params: Sequence[Param]) -> dict[str, Any]:
    """Suggest the active parameters of ``trial`` in order (conditions see earlier values)."""
    values: dict[str, Any] = {}
    for p in params:
        if p.active(values):
            values[p.name] = p.suggest(trial)
    return values


def grid(params: Sequence[Param]) -> list[dict[str, Any]]:
    """Every combination of a discrete space, conditions honoured: the exhaustive grid a search is measured
    against (``sweeps/benchmark_search.py``)."""
    combos: list[dict[str, Any]] = [{}]
    for p in params:
        values = p.values()
        combos = [{**c, p.name: v} for c in combos for v in values] if not p.when else [
            new for c in combos for new in ([{**c, p.name: v} for v in values] if p.active(c) else [c])]
    return combos


def small_grid(params: Sequence[Param], limit: int) -> list[dict[str, Any]] | None:
    """:func:`grid` when the space is discrete and has at most ``limit`` combinations, else None."""
    bound = 1
    for p in params:
        if p.type == "float" and not p.step:
            return None
        bound *= len(p.values()) + (1 if p.when else 0)  # +1: the combinations where the parameter is inactive
    if bound > 1000 * limit:  # conditions prune the product, but not by that much: do not build it
        return None
    combos = grid(params)
    return combos if len(combos) <= limit else None


def to_point(base: Point, values: Mapping[str, Any]) -> Point:
    """Apply dotted parameter values (switches starting with ``_`` are skipped) to ``base``."""
    sampler, scorer, top = dict(base.sampler), dict(base.scorer), {}
    for name, value in values.items():
        if name.startswith("_"):
            continue
        group, _, key = name.partition(".")
        if group == "sampler" and key:
            sampler[key] = value
        elif group == "scorer" and key:
            scorer[key] = value
        elif not key and name in Point.__dataclass_fields__:
            top[name] = value
        else:
            raise SearchError(f"search.space.{name}: not a Point field (sampler.*, scorer.* or a top-level field)")
    return replace(base, sampler=sampler, scorer=scorer, **top)


# ------------------------------------------------------------------------------------- objectives
@dataclass(frozen=True)
class Objective:
    name: str
    path: str
    direction: str

    def value(self, record: Mapping[str, Any]) -> float:
        node: Any = record
        for part in self.path.split("."):
            node = node[part]
        return float(node)


def parse_objectives(spec: Sequence[str | Mapping[str, Any]] | None) -> list[Objective]:
    """Names from :data:`METRICS`, or ``{name, path?, direction?}`` dicts."""
    out = []
    for item in spec or DEFAULT_OBJECTIVES:
        item = {"name": item} if isinstance(item, str) else dict(item)
        name = item.get("name")
        path, direction = METRICS.get(name, (None, None))
        path, direction = item.get("path", path), item.get("direction", direction)
        if path is None:
            raise SearchError(f"search.objectives.{name}: unknown metric; known {sorted(METRICS)} or give a path")
        if direction not in ("maximize", "minimize"):
            raise SearchError(f"search.objectives.{name}.direction={direction!r}: maximize or minimize")
        out.append(Objective(name, path, direction))
    if len({o.name for o in out}) != len(out):
        raise SearchError("search.objectives: names repeat")
    return out


@dataclass(frozen=True)
class Constraint:
    """Feasible when ``min <= metric <= max``; told to Optuna as a violation (<= 0 feasible)."""

    name: str
    path: str
    min: float | None = None
    max: float | None = None

    def violations(self, record: Mapping[str, Any]) -> dict[str, float]:
        v = Objective(self.name, self.path, "minimize").value(record)
        out = {}
        if self.max is not None:
            out[f"{self.name}<={self.max}"] = v - self.max
        if self.min is not None:
            out[f"{self.name}>={self.min}"] = self.min - v
        return out


def parse_constraints(spec: Mapping[str, Mapping[str, Any]] | None) -> list[Constraint]:
    """``{metric: {min: x, max: y, path?: ...}}`` e.g. ``{latency_p50_s: {max: 0.05}, accuracy: {min: 0.3}}``."""
    out = []
    for name, bounds in (spec or {}).items():
        bounds = dict(bounds)
        path = bounds.pop("path", METRICS.get(name, (None,))[0])
        if path is None:
            raise SearchError(f"search.constraints.{name}: unknown metric; known {sorted(METRICS)} or give a path")
        lo, hi = bounds.pop("min", None), bounds.pop("max", None)
        if bounds:
            raise SearchError(f"search.constraints.{name}.{sorted(bounds)[0]}: unknown key (min, max, path)")
        if lo is None and hi is None:
            raise SearchError(f"search.constraints.{name}: give min and/or max")
        out.append(Constraint(name, path, lo, hi))
    return out


def constraint_values(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    """What :meth:`optuna.Trial.set_constraint` stored on a finished trial (name -> violation, <= 0 feasible)."""
    from optuna.study._constrained_optimization import _get_constraints_from_system_attrs

    return dict(_get_constraints_from_system_attrs(trial.system_attrs) or {})


def feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return all(v <= 0 for v in constraint_values(trial).values())


def make_sampler(name: str, seed: int | None, n_startup_trials: int | None = None,
                 options: Mapping[str, Any] | None = None) -> optuna.samplers.BaseSampler:
    """A seeded multi-objective sampler; constraints reach it through ``trial.set_constraint``.

    ``options`` are keyword arguments of the Optuna sampler (e.g. ``{multivariate: true, group: true}`` for
    TPE on a conditional space, ``{population_size: 20}`` for NSGA-II); a wrong one is named."""
    classes = {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler,
               "gp": optuna.samplers.GPSampler, "random": optuna.samplers.RandomSampler}
    if name not in classes:
        raise SearchError(f"search.sampler={name!r}: choose one of {list(SAMPLERS)}")
    kw = dict(options or {})
    if name == "tpe":
        # Optuna's TPE samples each parameter on its own; on a conditional space of categoricals it kept asking
        # for points already computed (one seed of sweeps.benchmark_search: 12 distinct points in 300 trials).
        # Joint sampling over the groups of parameters that occur together avoids that (Optuna's advice for
        # conditional spaces); the options still override it.
        kw = {"multivariate": True, "group": True, **kw}
    if n_startup_trials is not None and name in ("tpe", "gp"):
        kw.setdefault("n_startup_trials", n_startup_trials)
    accepted = _parameters(classes[name])
    for key in kw:
        if key not in accepted or key == "seed":
            raise SearchError(f"search.sampler_options.{key}: not an option of {classes[name].__name__} "
                              f"(options: {sorted(k for k in accepted if k != 'seed')})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return classes[name](seed=seed, **kw)


@functools.cache
def _parameters(cls: type) -> Mapping[str, inspect.Parameter]:
    """The keyword arguments of a sampler class (read once: a sampler is made for every proposal)."""
    return inspect.signature(cls).parameters


def resume_seed(seed: int | None, n_trials: int) -> int | None:
    """The sampler's seed for a study that has ``n_trials`` trials: ``seed`` itself for a new study, otherwise
    one derived from both, so that a resumed search continues rather than replays its first proposals."""
    if seed is None or n_trials == 0:
        return seed
    import numpy as np

    return int(np.random.SeedSequence([seed, n_trials]).generate_state(1)[0])


def journal_path(sweep_dir: str | Path, storage: str | None = None) -> Path | None:
    """The journal file of a study (None for an RDB URL)."""
    if storage and "://" in storage:
        return None
    return Path(storage) if storage else Path(sweep_dir) / "optuna.journal"


def make_storage(sweep_dir: str | Path, storage: str | None = None) -> optuna.storages.BaseStorage | str:
    """Journal file storage in the sweep directory (NFS-safe, no server) unless an RDB URL is given."""
    path = journal_path(sweep_dir, storage)
    if path is None:
        return storage
    path.parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _whole_record(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _salvage(line: bytes) -> bytes | None:
    """The whole record at the end of a line that starts with a torn one (a record written onto a torn last
    line); None when there is none. Record starts are ``{"`` at top level: inside a JSON string a quote is
    escaped, so the first start from which the rest parses is the appended record."""
    start = line.find(b'{"', 1)
    while start != -1:
        if _whole_record(line[start:]):
            return line[start:]
        start = line.find(b'{"', start + 1)
    return None


def repair_journal(path: str | Path) -> str | None:
    """Make a torn Optuna journal loadable again; returns what was done (None: the journal was whole).

    A write that fails (a full disk, a killed node) leaves a partial last line; Optuna (5.0) skips it while it
    is last, but the next write is appended onto it, and from then on ``JournalFileBackend.read_logs`` raises
    ``JSONDecodeError`` on that line: the study no longer loads at all. The torn record was never applied by
    any reader (nor acknowledged to its writer), so dropping it loses nothing: a torn tail is cut off at the
    last whole record, a record appended onto a torn one is kept on its own line, a line that holds no whole
    record is dropped. The original is kept beside it as ``<name>.torn-<time>``."""
    path = Path(path)
    if not path.is_file():
        return None
    from optuna.storages.journal import JournalFileSymlinkLock

    lock = JournalFileSymlinkLock(str(path))  # the lock Optuna's writers take
    lock.acquire()
    try:
        data = path.read_bytes()
        *lines, tail = data.split(b"\n")  # tail: b"" when the last record is whole
        kept, salvaged, dropped = [], 0, 0
        for line in lines:
            if _whole_record(line):
                kept.append(line)
            elif (rest := _salvage(line)) is not None:
                kept.append(rest)
                salvaged += 1
            else:
                dropped += 1
        if not tail and not salvaged and not dropped:
            return None
        copy = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
        try:
            shutil.copy2(path, copy)
            with atomic_target(path) as tmp:
                tmp.write_bytes(b"".join(line + b"\n" for line in kept))
        except OSError as e:  # most likely the disk is still full: change nothing
            copy.unlink(missing_ok=True)
            raise SearchError(f"{path}: the journal is torn (a write failed) and cannot be repaired now: "
                              f"{e.strerror or e}; free space in {path.parent} and run again") from None
    finally:
        lock.release()
    done = [f"cut a torn last record ({len(tail)} bytes)"] if tail else []
    done += [f"kept {salvaged} whole record(s) written onto a torn one"] if salvaged else []
    done += [f"dropped {dropped} unreadable line(s)"] if dropped else []
    return f"repaired the torn journal {path}: {', '.join(done)}; the original is kept as {copy}"


# ------------------------------------------------------------------------------------------- search
#: ``launch(trial, resolved, overrides) -> job``: starts one trial's point; the job has ``done()`` and
#: ``result()`` (raising when the job died) like a submitit job or a ``concurrent.futures.Future``.
Launch = Callable[[optuna.Trial, ResolvedPoint, Sequence[str]], Any]
#: ``point_of(values) -> (point, overrides)``: a trial's parameter values as a Point and the overrides naming it.
PointOf = Callable[[Mapping[str, Any]], "tuple[Point, list[str]]"]


@dataclass
class _InFlight:
    job: Any
    point: ResolvedPoint
    trials: list[optuna.Trial]
    submitted: float


@dataclass
class SearchResult:
    study: optuna.Study
    launched: int = 0
    cache_hits: int = 0
    invalid: int = 0
    failed: int = 0
    repeats: int = 0  # trials at a point the study had evaluated already (only once no other point is left)
    evaluations: int = 0  # distinct points the study has evaluated (over every run), in flight included
    reconciled: int = 0
    reattached: int = 0
    relaunched: int = 0  # trials left RUNNING whose job was gone, run again on resume
    repaired: int = 0  # points of COMPLETE trials run again on resume because their record was unreadable
    busy_seconds: float = 0.0  # submission to completion seen by the controller, summed over launched trials
    wall_seconds: float = 0.0


class _InProcess:
    """An executor that runs each job at submission, in this process (``max_in_flight`` is then 1 in effect)."""

    def submit(self, fn: Callable, *args, **kwargs):
        fut: Future = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001
            reraise_interrupt(exc)
            fut.set_exception(exc)
        return fut


class _Reattached:
    """The job of a trial left RUNNING by a stopped controller whose point is still being evaluated: done when
    the record appears, or when the job is gone without one (its marker removed, its process dead on this
    host, or its Slurm job no longer queued)."""

    def __init__(self, store: SweepStore, key: str) -> None:
        self.store, self.key = store, key
        self.job_id = (store.running(key) or {}).get("job_id")

    def done(self) -> bool:
        if self.store.has_record(self.key):
            return True
        marker = self.store.running(self.key)
        return marker is None or holder_gone(self.store, self.key, marker)

    def result(self) -> None:
        if not self.store.has_record(self.key):
            raise RuntimeError(f"job {self.job_id} stopped without a record (seen after a controller restart)")


@dataclass
class ParetoSearch:
    """An asynchronous multi-objective search; :meth:`run` starts or resumes it (see the module docstring).

    How a trial becomes a point and how it runs are the two seams: ``point_of`` (default: ``space`` names
    applied to ``base`` by :func:`to_point`) and ``launch`` (default: a one-point :class:`PointGroup`
    submitted to ``executor``). The Hydra sweeper (``sweeps/pareto_sweeper.py``) composes the point with
    Hydra and launches through Hydra's submitit launcher instead."""

    sweep_dir: str | Path
    space: Mapping[str, Mapping[str, Any]]
    base: Point | None = None
    n_trials: int | None = 32  # trials in the study, over every run (None: no limit; give n_evaluations)
    n_evaluations: int | None = None  # distinct points evaluated in the study, over every run (None: no limit)
    objectives: Sequence[str | Mapping[str, Any]] | None = None
    constraints: Mapping[str, Mapping[str, Any]] | None = None
    sampler: str = "tpe"
    sampler_options: Mapping[str, Any] | None = None  # keyword arguments of the Optuna sampler
    seed: int | None = 0
    n_startup_trials: int | None = None
    max_in_flight: int = 1
    executor: Any = None  # submitit executor or concurrent.futures.Executor; None: in this process
    storage: str | None = None  # journal path or RDB URL; default: {sweep_dir}/optuna.journal
    study_name: str = "search"
    enqueue: Sequence[Mapping[str, Any]] = ()  # reference settings asked first (parameter name -> value)
    synchronous: bool = False  # wait for a whole batch before asking again (the Hydra Optuna sweeper's way)
    rerun_failed: bool = False  # run a point again when its record is a failure (once per run)
    poll_s: float = 1.0
    threads: int | None = None
    stale_after_s: float | None = None  # a running marker with no heartbeat this long is taken over (None: default)
    point_of: PointOf | None = None
    launch: Launch | None = None
    log: Callable[[str], None] | None = print

    def __post_init__(self) -> None:
        self.params = parse_space(self.space)
        self.objs = parse_objectives(self.objectives)
        self.cons = parse_constraints(self.constraints)
        for name in ("n_trials", "n_evaluations", "max_in_flight"):
            value = getattr(self, name)
            if value is None and name != "max_in_flight":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SearchError(f"search.{name}={value!r}: must be a positive integer")
        if self.n_trials is None and self.n_evaluations is None:
            raise SearchError("search.n_trials=None: give a budget, n_trials and/or n_evaluations")
        if self.point_of is None and self.base is None:
            raise SearchError("search.base: give the base Point (or a point_of function)")
        if self.threads is not None and self.base is not None:  # a point runs at its own threads (in its key)
            self.base = replace(self.base, threads=self.threads)
        make_sampler(self.sampler, self.seed, self.n_startup_trials, self.sampler_options)  # named errors now
        self.store = SweepStore(self.sweep_dir)  # its directory is made by study(): a refused search writes nothing
        self._rerun: set[str] = set()
        self._points: dict[tuple, tuple[ResolvedPoint, list[str]] | Exception] = {}  # memo of _resolve
        self._evaluated: dict[str, int] = {}  # point key -> the first trial of the study that evaluated it
        self._grid: list[dict[str, Any]] | None = None
        self._probe: optuna.Study | None = None  # what the sampler proposes on (see _probe_study)
        self._probe_ids: dict[int, tuple[int, TrialState]] = {}  # trial number -> its copy's id and state
        self._probe_open: set[int] = set()  # trial numbers not finished when last copied (or WAITING)
        self._probe_next = 0  # the first trial number not looked at yet

    # ---------------------------------------------------------------------------------------- study
    def _make_sampler(self, n_trials: int) -> optuna.samplers.BaseSampler:
        """The configured sampler, seeded for a study that has ``n_trials`` trials (:func:`resume_seed`)."""
        return make_sampler(self.sampler, resume_seed(self.seed, n_trials), self.n_startup_trials,
                            self.sampler_options)

    def study(self) -> optuna.Study:
        """Create or load the study (a torn journal is repaired first)."""
        self.store.root.mkdir(parents=True, exist_ok=True)
        journal = journal_path(self.store.root, self.storage)
        if journal is not None and (done := repair_journal(journal)):
            self._log(done)
        study = optuna.create_study(
            storage=make_storage(self.store.root, self.storage), study_name=self.study_name, load_if_exists=True,
            directions=[o.direction for o in self.objs])
        study.sampler = self._make_sampler(len(study.trials))
        want = [optuna.study.StudyDirection.MAXIMIZE if o.direction == "maximize"
                else optuna.study.StudyDirection.MINIMIZE for o in self.objs]
        if list(study.directions) != want:
            raise SearchError(f"search.study_name={self.study_name!r}: the study exists with directions "
                              f"{[d.name.lower() for d in study.directions]}; use another study name")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if not study.metric_names:
                study.set_metric_names([o.name for o in self.objs])
            elif list(study.metric_names) != [o.name for o in self.objs]:
                raise SearchError(f"search.objectives={[o.name for o in self.objs]}: study {self.study_name!r} "
                                  f"exists with objectives {study.metric_names}; use another study name")
        if not study.trials:
            for params in self.enqueue:
                study.enqueue_trial(dict(params), skip_if_exists=True)
        return study

    def reconcile(self, study: optuna.Study, in_flight: dict[str, _InFlight] | None = None, executor: Any = None,
                  res: SearchResult | None = None) -> tuple[int, int, int]:
        """Settle trials left RUNNING by a controller that stopped: told from their record when the point
        finished meanwhile; re-attached (waited for, counted in flight) when a job still evaluates it; given an
        ``executor``, run again when its job is gone without a record (a killed in-process search, a job killed
        meanwhile: its stale running marker is cleared); FAIL with the cause otherwise. Returns (settled,
        re-attached, run again)."""
        settled = reattached = relaunched = 0
        res = res if res is not None else SearchResult(study)
        for ft in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            trial = optuna.Trial(study, ft._trial_id)
            key = ft.user_attrs.get("key")
            rec = self.store.record(key) if key else None
            if rec is not None:
                self._tell_record(study, trial, rec, note="recovered after the controller stopped")
                settled += 1
            elif key and in_flight is not None and key in in_flight:  # another trial of the same point
                in_flight[key].trials.append(trial)
                reattached += 1
            elif key and in_flight is not None and not (job := _Reattached(self.store, key)).done():
                resolved = resolve(Point(**ft.user_attrs["point"])) if "point" in ft.user_attrs else None
                in_flight[key] = _InFlight(job, resolved, [trial], time.perf_counter())
                reattached += 1
            elif key and in_flight is not None and executor is not None and (again := self._same_point(ft)):
                self.store.clear_running(key)  # its holder is gone (checked just above): the marker is stale
                trial.set_user_attr("note", "run again on resume: its job was gone without a record")
                self._start(study, executor, trial, *again, in_flight, res)
                relaunched += 1
            else:
                if key and in_flight is not None:  # its holder is gone (checked above): no marker left behind
                    self.store.clear_running(key)
                cause = "the search controller stopped before this trial finished (reconciled on resume)"
                trial.set_user_attr("fail_reason", cause)
                study.tell(trial, state=TrialState.FAIL)
                settled += 1
        return settled, reattached, relaunched

    def repair(self, study: optuna.Study, in_flight: dict[str, _InFlight], executor: Any) -> int:
        """Run again the point of each COMPLETE trial whose record is unreadable (a damaged file, set aside to
        ``archive/``), as a grid sweep over the directory does: the study keeps the trial's values, the store gets
        its record (items, cost) back. No trial is added; returns how many points were started."""
        started = 0
        for ft in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            key = ft.user_attrs.get("key")
            if not key or key in in_flight or not self.store.triage([key]).corrupt:
                continue
            again = self._same_point(ft)
            if again is None:
                self._log(f"trial {ft.number}: the record of its point {key} was unreadable (set aside in "
                          f"{self.store.archive_dir}); the point is no longer in this search's space, not run again")
                continue
            resolved, overrides = again
            self._log(f"trial {ft.number}: the record of its point {key} was unreadable (set aside in "
                      f"{self.store.archive_dir}); running the point again")
            job = self._launch(executor, ft, resolved, overrides)
            if job is not None:
                in_flight[key] = _InFlight(job, resolved, [], time.perf_counter())
                started += 1
        return started

    def _same_point(self, ft: optuna.trial.FrozenTrial) -> tuple[ResolvedPoint, list[str]] | None:
        """The point and overrides of a trial's parameters when they are still the point it recorded."""
        try:
            resolved, overrides = self._resolve(ft.params)
        except Exception as exc:  # noqa: BLE001 -- cannot be rebuilt (the space or the base changed): not run again
            reraise_interrupt(exc)
            return None
        return (resolved, overrides) if resolved.key == ft.user_attrs.get("key") else None

    # ------------------------------------------------------------------------------------------ run
    def check_space(self) -> None:
        """Refuse a space without a valid point before the study (its journal) is created or anything runs.

        A discrete space of at most :data:`MAX_GRID` points is checked whole, stopping at its first valid
        point; a continuous or larger one by :data:`SPACE_PROBES` random draws (seeded), one of which must be
        valid. (Otherwise the search asked trial after invalid trial and ended with nothing evaluated.)"""
        candidates = small_grid(self.params, MAX_GRID)
        how = f"all {len(candidates or [])} points of the space are"
        if candidates is None:
            probe = _scratch_study([optuna.study.StudyDirection.MINIMIZE], optuna.samplers.RandomSampler(self.seed))
            candidates = []
            for _ in range(SPACE_PROBES):
                trial = probe.ask()
                candidates.append(suggest(trial, self.params))
                probe.tell(trial, state=TrialState.FAIL)
            how = f"{SPACE_PROBES} random draws of the space (continuous or over {MAX_GRID} points) were all"
        first: tuple[Mapping[str, Any], Exception] | None = None
        for values in candidates:
            try:
                self._resolve(values)
                return
            except SearchError:
                raise
            except Exception as exc:  # noqa: BLE001 -- an invalid combination: try the next one
                reraise_interrupt(exc)
                first = first or (values, exc)
        if first is not None:
            values, exc = first
            given = " ".join(f"{k}={v}" for k, v in values.items()) or "the base config"
            reason = " ".join(str(exc).split())[:300]
            raise SearchError(f"search space (hydra.sweeper.space): {how} invalid, e.g. [{given}]: "
                              f"{type(exc).__name__}: {reason}; nothing was run or written")

    def run(self) -> SearchResult:
        start = time.perf_counter()
        self.check_space()
        study = self.study()
        self._probe = None  # copied afresh from this study
        res = SearchResult(study)
        in_flight: dict[str, _InFlight] = {}
        executor = self.executor if self.executor is not None else _InProcess()
        res.reconciled, res.reattached, res.relaunched = self.reconcile(study, in_flight, executor, res)
        if res.reconciled or res.reattached or res.relaunched:
            self._log(f"resumed study {self.study_name!r}: {res.reconciled} trials left RUNNING settled, "
                      f"{res.reattached} re-attached to jobs still running, {res.relaunched} run again "
                      "(their jobs were gone)")
        res.repaired = self.repair(study, in_flight, executor)
        self._evaluated = self._evaluated_points(study, in_flight)
        asked = sum(t.state != TrialState.WAITING for t in study.get_trials(deepcopy=False))
        exhausted = False
        progress = Progress(self.n_trials or self.n_evaluations or 0, lambda: self._progress(study, in_flight),
                            label=f"search {self.study_name!r}", unit="trials" if self.n_trials else "points")
        with progress:
            while (self._budget_left(asked) and not exhausted) or in_flight:
                filling = not (self.synchronous and in_flight)  # with a barrier, ask only once the batch is told
                while (filling and not exhausted and self._budget_left(asked)
                       and self._n_running(in_flight) < self.max_in_flight):
                    exhausted = not self._ask_one(study, executor, in_flight, res)
                    asked += not exhausted
                finished = [k for k, f in in_flight.items() if f.job.done()]
                for key in finished:
                    f = in_flight.pop(key)
                    res.busy_seconds += time.perf_counter() - f.submitted
                    self._finish(study, key, f, res)
                progress.tick()
                if not finished and in_flight:
                    time.sleep(self.poll_s)
        if exhausted:
            self._log(f"search {self.study_name}: no point of the space is left unevaluated "
                      f"({len(self._evaluated)} evaluated); stopping")
        res.wall_seconds = time.perf_counter() - start
        res.evaluations = len(self._evaluated)
        self._log(f"search {self.study_name}: {len(study.trials)} trials, {res.evaluations} distinct points, "
                  f"{len(pareto_front(study))} on the front; {res.launched} launched, {res.cache_hits} cache hits, "
                  f"{res.repeats} repeats, {res.invalid} invalid, {res.failed} failed"
                  + (f"; {res.repaired} damaged records run again" if res.repaired else ""))
        return res

    def _budget_left(self, asked: int) -> bool:
        return ((self.n_trials is None or asked < self.n_trials)
                and (self.n_evaluations is None or len(self._evaluated) < self.n_evaluations))

    def _evaluated_points(self, study: optuna.Study, in_flight: Mapping[str, _InFlight]) -> dict[str, int]:
        """Point key -> the first trial of the study that evaluated it (or evaluates it now). With
        ``rerun_failed`` a failed point does not count: it may be proposed, and run, again."""
        out: dict[str, int] = {}
        for t in study.get_trials(deepcopy=False):
            key = t.user_attrs.get("key")
            if not key or key in out:
                continue
            if t.state == TrialState.COMPLETE or key in in_flight:
                out[key] = t.number
            elif t.state == TrialState.FAIL and (rec := self.store.record(key)) is not None:
                if rec.get("status") == "ok" or not self.rerun_failed:
                    out[key] = t.number
        return out

    @staticmethod
    def _n_running(in_flight: Mapping[str, _InFlight]) -> int:
        return sum(max(1, len(f.trials)) for f in in_flight.values())  # a repair (no trial) is a job too

    def _progress(self, study: optuna.Study, in_flight: Mapping[str, _InFlight]) -> Counts:
        """What the progress display shows, from the study: its trials (COMPLETE, FAIL, in flight) against
        ``n_trials``; without one, the distinct points evaluated (well, failed, in flight) against
        ``n_evaluations``."""
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
        if self.n_trials:
            done = sum(t.state == TrialState.COMPLETE for t in trials)
            return Counts(done, len(trials) - done, self._n_running(in_flight))
        ok = {t.user_attrs.get("key") for t in trials if t.state == TrialState.COMPLETE}
        failed = {t.user_attrs.get("key") for t in trials if t.state == TrialState.FAIL} - ok - {None}
        return Counts(len(ok - {None}), len(failed - in_flight.keys()), len(in_flight))

    def _to_point(self, values: Mapping[str, Any]) -> tuple[Point, list[str]]:
        if self.point_of is not None:
            return self.point_of(values)
        return to_point(self.base, values), [f"{k}={v}" for k, v in values.items()]

    def _resolve(self, values: Mapping[str, Any]) -> tuple[ResolvedPoint, list[str]]:
        """The resolved point of a trial's values and the overrides naming it; raises what resolving raises.
        Remembered per values: proposals are checked before they become trials, and composing can be slow."""
        memo = tuple(sorted(values.items()))
        if memo not in self._points:
            try:
                point, overrides = self._to_point(values)
                self._points[memo] = (resolve(point), overrides)
            except SearchError:
                raise
            except Exception as exc:  # noqa: BLE001 -- an invalid combination, re-raised to each caller
                reraise_interrupt(exc)  # a Ctrl-C while composing is no verdict on the combination
                self._points[memo] = exc
        found = self._points[memo]
        if isinstance(found, Exception):
            raise found
        return found

    def _is_new(self, values: Mapping[str, Any]) -> bool | None:
        """True: a valid point the study has not evaluated; False: evaluated (or in flight); None: invalid."""
        try:
            resolved, _ = self._resolve(values)
        except SearchError:
            raise
        except Exception as exc:  # noqa: BLE001
            reraise_interrupt(exc)
            return None
        return resolved.key not in self._evaluated

    def _propose(self, study: optuna.Study) -> tuple[dict[str, Any], dict[str, Any], bool]:
        """Values for the next trial, what the sampler noted on its proposal (trial system attributes, e.g.
        NSGA-II's generation), and whether no new point was found (the values then repeat a point the study
        has evaluated, or every point of the discrete grid is evaluated).

        The sampler (seeded by :func:`resume_seed` for the study as it is now) proposes on an in-memory copy
        of the study (:meth:`_probe_study`), so that a rejected proposal leaves no trial behind; a proposal whose point is invalid or
        evaluated already is asked again. After :data:`MAX_PROPOSALS` rejections the unevaluated point of the
        discrete grid nearest to the last proposal is taken instead; when none is left, the last proposal."""
        trials = study.get_trials(deepcopy=False)
        probe = self._probe_study(study, trials)
        values: dict[str, Any] = {}
        noted: dict[str, Any] = {}
        new: bool | None = None
        asked: list[int] = []
        try:
            for _ in range(MAX_PROPOSALS):
                trial = probe.ask()
                asked.append(trial._trial_id)
                values = suggest(trial, self.params)
                noted = {k: v for k, v in trial.storage.get_trial_system_attrs(trial._trial_id).items()
                         if k != "fixed_params"}
                new = self._is_new(values)
                if new:
                    return values, noted, False
                probe.tell(trial, state=TrialState.FAIL)  # a failed trial: the samplers do not learn from it
        finally:
            _forget_proposals(probe, asked)  # the chosen one comes back as the study's trial
        left = self._unevaluated_near(values, len(trials))
        if left:
            return left, noted, False
        # no new point: the grid has none left, or the sampler repeats itself (an invalid last proposal of a
        # space without a grid becomes an invalid trial, as the sampler gave it)
        return values, noted, bool(self._grid) or new is False

    def _probe_study(self, study: optuna.Study, trials: Sequence[optuna.trial.FrozenTrial]) -> optuna.Study:
        """The in-memory copy of ``study`` the sampler proposes on, with a sampler seeded for ``trials``. Kept
        for the whole run and brought up to date before each proposal: the study's new trials are copied (its
        WAITING ones once they are asked) and those that finished since are finished in the copy, with their
        attributes; copying the whole study for each proposal made a search quadratic in its trials. Proposals
        are taken out of it again (:func:`_forget_proposals`): it holds what a fresh copy would."""
        if self._probe is None or (trials and trials[-1].number != len(trials) - 1):
            self._probe = _scratch_study(study.directions, self._make_sampler(len(trials)))
            self._probe_ids.clear()
            self._probe_open.clear()
            self._probe_next = 0
        storage, study_id = self._probe._storage, self._probe._study_id
        storage._studies[study_id].system_attrs.clear()  # samplers' caches (NSGA-II's parents), as in a fresh copy
        # only the trials new since the last proposal and those not finished then can have changed: a study
        # numbers its trials 0, 1, ... (checked above), so they are found without a pass over all of them
        numbers = sorted(self._probe_open) + list(range(self._probe_next, len(trials)))
        self._probe_next = len(trials)
        for t in (trials[n] for n in numbers):
            self._probe_open.discard(t.number)
            if not t.state.is_finished():
                self._probe_open.add(t.number)
            if t.state == TrialState.WAITING:
                continue
            copied = self._probe_ids.get(t.number)
            if copied is None:
                self._probe_ids[t.number] = (storage.create_new_trial(study_id, template_trial=t), t.state)
            elif copied[1] != t.state:  # finished since it was copied (a copy is never finished twice)
                for name, value in t.system_attrs.items():
                    storage.set_trial_system_attr(copied[0], name, value)
                for name, value in t.user_attrs.items():
                    storage.set_trial_user_attr(copied[0], name, value)
                storage.set_trial_state_values(copied[0], t.state, t.values)
                self._probe_ids[t.number] = (copied[0], t.state)
        self._probe.sampler = self._make_sampler(len(trials))
        return self._probe

    def _unevaluated_near(self, proposal: Mapping[str, Any], n_trials: int) -> dict[str, Any] | None:
        """The valid point of the discrete grid nearest to the sampler's ``proposal`` (fewest parameters
        changed; ties drawn at random, seeded) that the study has not evaluated. None when none is left, or
        when the space is continuous or larger than :data:`MAX_GRID`."""
        if self._grid is None:
            self._grid = small_grid(self.params, MAX_GRID) or []
        left = [values for values in self._grid if self._is_new(values)]
        if not left:
            return None

        def changed(values: Mapping[str, Any]) -> int:
            return sum(values.get(k) != proposal.get(k) for k in {*values, *proposal})

        nearest = min(map(changed, left))
        return random.Random(resume_seed(self.seed, n_trials)).choice([v for v in left if changed(v) == nearest])

    def _launch(self, executor, trial: optuna.Trial | optuna.trial.FrozenTrial, resolved: ResolvedPoint,
                overrides: Sequence[str]):
        """The job evaluating a point; None when the submission is refused (sbatch error, ...): the point then
        has a failure record that says why."""
        try:
            if self.launch is not None:
                return self.launch(trial, resolved, overrides)
            return executor.submit(PointGroup(self.store.root, [resolved], threads=self.threads,
                                              stale_after_s=self.stale_after_s))
        except Exception as exc:  # noqa: BLE001 -- submission refused: the caller goes on
            reraise_interrupt(exc)
            self.store.write_failure(failure_summary(resolved, exc))
            return None

    def _ask_one(self, study, executor, in_flight: dict[str, _InFlight], res: SearchResult) -> bool:
        """Ask one trial and start (or answer) it; False when no new point is left for an evaluation budget."""
        if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):  # enqueued points come first
            trial = study.ask()
        else:
            values, noted, repeat = self._propose(study)
            if repeat and self.n_evaluations is not None:
                return False
            study.enqueue_trial(values)
            sampler, study.sampler = study.sampler, _CHOSEN  # the values are chosen: no second proposal
            try:
                trial = study.ask()
            finally:
                study.sampler = sampler
            for name, value in noted.items():
                trial.storage.set_trial_system_attr(trial._trial_id, name, value)
        try:
            values = suggest(trial, self.params)
            resolved, overrides = self._resolve(values)
        except SearchError:
            study.tell(trial, state=TrialState.FAIL)
            raise
        except Exception as exc:  # noqa: BLE001 -- an invalid combination: never launched
            reraise_interrupt(exc)
            trial.set_user_attr("fail_reason", f"invalid: {type(exc).__name__}: {exc}")
            study.tell(trial, state=TrialState.FAIL)
            res.invalid += 1
            self._log(f"trial {trial.number} invalid: {exc}")
            return True
        key = resolved.key
        trial.set_user_attr("key", key)
        trial.set_user_attr("point", _point_attr(resolved.point))
        self.store.plan(key, resolved.settings, overrides)
        rec = self.store.record(key)
        if rec is not None and rec.get("status") != "ok" and self.rerun_failed and key not in self._rerun:
            self._rerun.add(key)
            self.store.todo([key], rerun_failed=True)  # archives the failure record
            rec = None
        if key in self._evaluated:  # only once no other point is left (or an enqueued point): not an evaluation
            trial.set_user_attr("repeat_of", self._evaluated[key])
            res.repeats += 1
        else:
            self._evaluated[key] = trial.number
        if rec is not None:  # computed before (this search, a grid sweep, another search)
            res.cache_hits += 1
            trial.set_user_attr("cache_hit", True)
            self._tell_record(study, trial, rec)
            return True
        if key in in_flight:  # the same point is already running for another trial: wait for that job
            in_flight[key].trials.append(trial)
            res.cache_hits += 1
            trial.set_user_attr("cache_hit", True)
            return True
        self._start(study, executor, trial, resolved, overrides, in_flight, res)
        return True

    def _start(self, study, executor, trial: optuna.Trial, resolved: ResolvedPoint, overrides: Sequence[str],
               in_flight: dict[str, _InFlight], res: SearchResult) -> None:
        """Launch a trial's point; a refused submission (sbatch error, ...) is a failure record and FAIL."""
        key = resolved.key
        job = self._launch(executor, trial, resolved, overrides)
        if job is None:  # refused: FAIL with its failure record, go on
            self._tell_record(study, trial, self.store.record(key))
            res.failed += 1
            return
        job_id = getattr(job, "job_id", None)
        if job_id is not None:
            trial.set_user_attr("job_id", str(job_id))
        in_flight[key] = _InFlight(job, resolved, [trial], time.perf_counter())
        res.launched += 1

    def _finish(self, study, key: str, f: _InFlight, res: SearchResult) -> None:
        cause = None
        try:
            f.job.result()
        except Exception as exc:  # noqa: BLE001 -- cancelled, killed, OOM, timed out
            reraise_interrupt(exc)
            state = getattr(f.job, "state", None)
            cause = (f"job {getattr(f.job, 'job_id', '?')} ended" + (f" in state {state}" if state else "")
                     + f": {type(exc).__name__}: {str(exc).strip()[-1500:]}")
        if not self.store.has_record(key):
            paths = getattr(f.job, "paths", None)
            error = RuntimeError(cause or "job ended without a record")
            if f.point is not None:
                self.store.write_failure(failure_summary(f.point, error, log_path=str(paths.stdout) if paths else None))
            self.store.clear_running(key)
        rec = self.store.record(key) or {"status": "failed", "error": {"type": "RuntimeError", "message": cause}}
        for trial in f.trials:
            self._tell_record(study, trial, rec)
            if rec.get("status") != "ok":
                res.failed += 1

    def _tell_record(self, study, trial: optuna.Trial, rec: Mapping[str, Any], note: str | None = None) -> None:
        if rec.get("status") != "ok":
            err = rec.get("error") or {}
            trial.set_user_attr("fail_reason", f"{err.get('type')}: {err.get('message')}")
            if err.get("log_path"):
                trial.set_user_attr("log_path", err["log_path"])
            study.tell(trial, state=TrialState.FAIL)
            self._log(f"trial {trial.number} failed: {err.get('type')}: {str(err.get('message'))[:200]}")
            return
        values = [o.value(rec) for o in self.objs]
        if any(not math.isfinite(v) for v in values):
            trial.set_user_attr("fail_reason", f"non-finite objective values {values}")
            study.tell(trial, state=TrialState.FAIL)
            return
        for c in self.cons:
            for name, v in c.violations(rec).items():
                trial.set_constraint(name, v)
        if note:
            trial.set_user_attr("note", note)
        study.tell(trial, values)

    def _log(self, msg: str) -> None:
        if self.log is not None:
            with pause_bars():  # a line, not a line glued to the progress bar
                self.log(msg)


def _scratch_study(directions: Sequence[optuna.study.StudyDirection],
                   sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """An in-memory study, created without Optuna's "new study created" log line (one per trial otherwise)."""
    import logging

    storage = optuna.storages.InMemoryStorage()
    quiet = logging.getLogger("optuna.storages._in_memory")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        storage.create_new_study(list(directions), "proposals")
    finally:
        quiet.setLevel(level)
    return optuna.Study("proposals", storage, sampler=sampler)


def _forget_proposals(probe: optuna.Study, trial_ids: Sequence[int]) -> None:
    """Take the last trials of an in-memory study (the proposals of one :meth:`ParetoSearch._propose`) out of
    it, so that it holds the real study's trials only, numbered as they are, as a copy made afresh would.
    Optuna's storages have no public way to delete a trial."""
    storage = probe._storage
    assert isinstance(storage, optuna.storages.InMemoryStorage)
    with storage._lock:
        trials = storage._studies[probe._study_id].trials
        for trial_id in reversed(trial_ids):
            assert trials[-1]._trial_id == trial_id
            trials.pop()
            del storage._trial_id_to_study_id_and_number[trial_id]


def _point_attr(point: Point) -> dict[str, Any]:
    """A Point as a JSON-able user attribute (enough to rebuild it when re-attaching after a restart)."""
    return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in asdict(point).items()}


def pareto_front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's feasible Pareto-optimal points (``study.best_trials``, one trial per point), empty before any
    trial completes."""
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return []
    front, seen = [], set()
    for t in sorted(study.best_trials, key=lambda t: t.number):  # a repeated point: once, as its first trial
        key = t.user_attrs.get("key", t.number)
        if key not in seen:
            seen.add(key)
            front.append(t)
    return front
