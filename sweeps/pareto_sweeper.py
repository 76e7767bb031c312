"""``hydra/sweeper=illada_pareto``: the asynchronous Optuna Pareto search (:mod:`illada.search`) as a Hydra sweeper.

    illada-sweep -m +ablation=search                               # ablations/search.yaml sets this sweeper
    illada-sweep -m +ablation=search hydra/launcher=submitit_local hydra.sweeper.max_in_flight=2
    illada-sweep -m +ablation=search model=illada-8b-base hydra/launcher=submitit_slurm hydra.launcher.partition=gpu

The search loop is :class:`illada.search.ParetoSearch`; Hydra gives it two things:

* a trial's parameters are Hydra overrides (``sampler.steps=4``, ``scorer=likelihood``), composed into the
  trial's config exactly as a multirun job's, then into a :class:`~illada.evaluate.Point` that is validated
  before anything is launched (composition and validation are :class:`sweeps.sweeper.IlladaSweeper`'s, shared
  with the grid sweeper);
* a trial runs as one job of the configured Hydra launcher: with the submitit launchers (local or Slurm) the
  launcher's own job callable is submitted alone, so up to ``max_in_flight`` jobs run and each is told as
  soon as it ends (no batch barrier); any other launcher runs one trial at a time through its ``launch``.
  ``submitit_local`` jobs are capped by default at usable cores // threads per job (jobs that share cores
  inflate the latency objective); ``hydra.sweeper.max_in_flight=N`` sets it.

The search ends with its front as a table (printed, and in ``front.csv`` / ``front.md``), the paths of what it
wrote, and its wall time.

Why not the Hydra Optuna sweeper (hydra-optuna-sweeper 1.2): optuna<3, a batch barrier, no constraints,
no journal storage, trials left RUNNING by one killed job.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.singleton import Singleton
from omegaconf import OmegaConf

from illada.markers import DEFAULT_STALE_AFTER_S
from sweeps.expand import SweepError
from sweeps.sweeper import IlladaSweeper

log = logging.getLogger(__name__)
DEFAULT_IN_FLIGHT = 4  # trials in flight on Slurm (and other launchers) unless hydra.sweeper.max_in_flight says


@dataclass
class ParetoSweeperConf:
    """``hydra.sweeper`` when ``hydra/sweeper=illada_pareto`` (see :class:`illada.search.ParetoSearch`)."""

    _target_: str = "hydra_plugins.illada_sweepers.ParetoSweeper"
    objectives: List[Any] = field(default_factory=lambda: ["accuracy", "latency_p50_s"])
    space: Dict[str, Any] = field(default_factory=dict)
    constraints: Dict[str, Any] = field(default_factory=dict)
    sampler: str = "tpe"  # tpe | nsga2 | gp | random
    sampler_options: Dict[str, Any] = field(default_factory=dict)
    seed: Optional[int] = 0
    n_trials: Optional[int] = 32  # trials in the study, over every run of the same command (null: no limit)
    n_evaluations: Optional[int] = None  # distinct points evaluated in the study, over every run (null: no limit)
    # trials running at once; null: 4, and with submitit_local at most usable cores // threads per job
    max_in_flight: Optional[int] = None
    storage: Optional[str] = None  # null: {sweep_dir}/optuna.journal; a path (journal) or an RDB URL
    study_name: Optional[str] = None  # null: the config's `name`
    enqueue: List[Dict[str, Any]] = field(default_factory=list)
    rerun_failed: bool = False
    synchronous: bool = False  # batch barrier, as the Hydra Optuna sweeper does (for comparison only)
    poll_s: float = 1.0
    plot: bool = True  # write SWEEP_DIR/pareto.png when the search ends
    stale_after_s: float = DEFAULT_STALE_AFTER_S  # a running marker with no heartbeat this long is taken over


class _Returned:
    """A trial that a synchronous launcher already ran: a finished job."""

    def __init__(self, ret: Any) -> None:
        self.ret = ret

    def done(self) -> bool:
        return True

    def result(self) -> Any:
        return self.ret.return_value  # re-raises the task's exception


_PLAIN = re.compile(r"^[\w.\-+/:]*$")


def override(key: str, value: Any) -> str:
    """``key=value`` in Hydra's override grammar (strings quoted when they need it)."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, str) and not _PLAIN.match(value):
        text = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    else:
        text = str(value)
    return f"{key}={text}"


SPEC_KEYS = {"type": "int, float or categorical", "choices": "a list", "low": "a number", "high": "a number",
             "step": "a number", "log": "true/false", "when": "{parameter: value}"}


def check_search_conf(conf: dict[str, Any]) -> None:
    """What :class:`illada.search.ParetoSearch` would stumble on with a ``TypeError`` deep inside, or silently
    ignore, named as ``hydra.sweeper.FIELD=VALUE`` with what is valid: a space entry that is not a mapping, a
    misspelt or mistyped key of one, an ``enqueue`` key that is not a parameter of the space, a storage URL
    that SQLAlchemy cannot open."""
    from illada.search import SearchError

    space = conf.get("space") or {}
    if not isinstance(space, dict):
        raise SearchError(f"hydra.sweeper.space={space!r}: must map each parameter to {{choices: [...]}} or "
                          "{type: int|float, low: ..., high: ...}")
    for name, spec in space.items():
        where = f"hydra.sweeper.space.{name}"
        if not isinstance(spec, dict):
            choices = spec if isinstance(spec, list) else "[...]"
            raise SearchError(f"{where}={spec!r}: give {{choices: {choices}}} or {{type: int|float, low: ..., "
                              "high: ...}")
        for key, value in spec.items():
            if key not in SPEC_KEYS:
                raise SearchError(f"{where}.{key}: unknown key; valid keys: {', '.join(SPEC_KEYS)}")
            numeric = key in ("low", "high") or (key == "step" and value is not None)
            if numeric and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise SearchError(f"{where}.{key}={value!r}: must be {SPEC_KEYS[key]}")
            if key == "choices" and not isinstance(value, list):
                raise SearchError(f"{where}.choices={value!r}: must be a list")
    for i, entry in enumerate(conf.get("enqueue") or []):
        if not isinstance(entry, dict):
            raise SearchError(f"hydra.sweeper.enqueue[{i}]={entry!r}: must be a mapping {{parameter: value}}")
        for key in entry:
            if key not in space:
                raise SearchError(f"hydra.sweeper.enqueue[{i}].{key}: not a parameter of hydra.sweeper.space "
                                  f"({', '.join(space) or 'empty'}); an enqueued trial sets space parameters only")
    storage = conf.get("storage")
    if storage and "://" in str(storage):
        import sqlalchemy

        try:
            sqlalchemy.engine.make_url(str(storage)).get_dialect()
        except Exception as e:  # noqa: BLE001 -- any refusal of the URL is the user's to fix
            raise SearchError(f"hydra.sweeper.storage={storage!r}: not an RDB URL SQLAlchemy can use "
                              f"({type(e).__name__}: {e}); give a journal file path, or e.g. "
                              "sqlite:////abs/path/optuna.db") from None


class ParetoSweeper(IlladaSweeper):
    """Asks Optuna for a trial, composes and validates its point, launches it, tells its record's objectives."""

    def sweep(self, arguments: List[str]) -> Any:
        """Hydra's entry: the search, then exit status 1 with one line when every trial of the study failed
        (as a grid sweep whose points all failed), so that a script or CI notices."""
        from optuna.trial import TrialState

        res = super().sweep(arguments)
        trials = getattr(getattr(res, "study", None), "trials", [])
        failed = [t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("key")]
        if failed and not any(t.state == TrialState.COMPLETE for t in trials):
            raise SystemExit(f"error: all {len(failed)} trials of the search failed; their causes: "
                             f"`illada-status {self.root} --failed`")
        return res

    def run(self, arguments: List[str]) -> Any:
        from illada.search import ParetoSearch, SearchError

        self.check_settings()
        parsed = self.parser().parse_overrides(list(arguments))
        swept = [o.input_line for o in parsed if o.is_sweep_override()]
        if swept:
            raise SearchError(f"override {swept[0]!r}: the Pareto sweeper searches hydra.sweeper.space; give one "
                              "value per key on the command line (or add the key to the space)")
        start = time.perf_counter()
        fixed = list(arguments)
        base = self.compose(fixed)
        root = self.sweep_root(base)
        self.announce_dir()
        # jobs may start in another working directory: they get the absolute store path
        fixed = [o for o in fixed if not o.startswith("sweep_dir=")] + [f"sweep_dir={root}"]
        from illada.loading import DeviceUnavailableError

        try:
            self.validate(base)  # a bad model, task, dtype or device stops here, before any trial
        except (ValueError, OSError, DeviceUnavailableError) as e:
            raise SweepError(f"the base config is invalid: {e}") from None

        conf = dict(self.conf)
        conf.pop("plot", None)
        if self.cluster == "local":
            conf["max_in_flight"] = self.local_jobs(base.get("threads"))
        elif conf.get("max_in_flight") is None:
            conf["max_in_flight"] = DEFAULT_IN_FLIGHT
        check_search_conf(conf)
        if self.cluster == "slurm":  # a refused partition/account/qos: one line, before anything is written
            self.check_submission(1)
        conf["study_name"] = conf.get("study_name") or str(base.get("name") or "search")

        def point_of(values):
            from sweeps.expand import to_point

            overrides = [override(k, v) for k, v in values.items() if not k.startswith("_")]
            return to_point(self.compose(fixed + overrides)), overrides

        search = ParetoSearch(sweep_dir=root, point_of=point_of, log=log.info, **conf)
        self._check_space(search, fixed)
        search.check_space()  # a space without a valid point: refused before the journal is created
        search.launch = self._job_starter(fixed)  # only now: the submitit executor makes its log folder
        self.save_multirun(root)
        res = search.run()
        self._write_results(search, res, root)
        self.report_end(start)
        return res

    def _check_space(self, search, fixed: Sequence[str]) -> None:
        """Every parameter of the space must be an override Hydra accepts: compose each value (the choices, or
        the bounds of a range) once, and name the parameter and value that fails."""
        from illada.search import SearchError

        for p in search.params:
            if p.name.startswith("_"):
                continue
            for value in p.choices or (p.low, p.high):
                if p.type == "int":
                    value = int(value)
                try:
                    self.compose(list(fixed) + [override(p.name, value)])
                except SweepError as e:
                    first = str(e).strip().splitlines()[0]
                    raise SearchError(f"hydra.sweeper.space.{p.name}={value!r}: {first}") from None

    def _job_starter(self, fixed: Sequence[str]):
        """``launch(trial, resolved, overrides) -> job`` through the configured Hydra launcher."""
        launcher = self.launcher
        executor = self.executor() if self.cluster in ("local", "slurm") else None

        def launch(trial, resolved, overrides):
            job_overrides = list(fixed) + list(overrides)
            if executor is not None:  # what BaseSubmititLauncher.launch does per job, without waiting
                return executor.submit(launcher, job_overrides, "hydra.sweep.dir", trial.number,
                                       f"job_id_for_{trial.number}", Singleton.get_state())
            return _Returned(launcher.launch([job_overrides], initial_job_idx=trial.number)[0])

        return launch

    def _write_results(self, search, res, root: Path) -> None:
        """``optimization_results.yaml`` (the Hydra Optuna sweeper's file): the front with keys and values."""
        from illada.atomic import atomic_write_text
        from illada.search import pareto_front

        front = [{"number": t.number, "key": t.user_attrs.get("key"), "params": t.params,
                  "values": dict(zip([o.name for o in search.objs], t.values))} for t in pareto_front(res.study)]
        summary = {"study_name": search.study_name, "storage": str(search.storage or root / "optuna.journal"),
                   "trials": len(res.study.trials), "evaluations": res.evaluations, "launched": res.launched,
                   "cache_hits": res.cache_hits, "repeats": res.repeats, "invalid": res.invalid,
                   "failed": res.failed, "front": front}
        atomic_write_text(root / "optimization_results.yaml", OmegaConf.to_yaml(OmegaConf.create(summary)))
        log.info(f"Pareto front ({len(front)} trials) in {root / 'optimization_results.yaml'}")
