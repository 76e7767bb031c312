"""What illada's two Hydra sweepers share: composing a point, validating it, the store, the jobs' executor.

:class:`IlladaSweeper` is the base of ``hydra/sweeper=illada_grid`` (:mod:`sweeps.grid_sweeper`) and
``hydra/sweeper=illada_pareto`` (:mod:`sweeps.pareto_sweeper`). Both compose a point as Hydra composes a
multirun job (``config_loader.load_sweep_config`` on the master config, so ``--cfg job`` shows what a job
gets), turn it into a :class:`~illada.evaluate.Point` and resolve it before anything is launched, and run
their jobs where ``hydra/launcher`` says: Hydra's basic launcher = this process, hydra-submitit-launcher =
a submitit executor with the launcher's own queue settings (:mod:`sweeps.launchers`).

Two things both sweepers decide the same way: a sweep without a name (``name: default``: no ablation, no
``name=``, no ``sweep_dir=``) gets a directory of its own, ``SWEEP_ROOT/adhoc/YYYY-MM-DD_HH-MM-SS`` (as Hydra's
multirun directories are timestamped), so two ad-hoc sweeps never count or plot each other's points; and
``submitit_local`` jobs run at most :func:`local_job_cap` at a time (usable cores // threads per job), since
jobs that share cores inflate each other's latencies.
"""

from __future__ import annotations

import copy
import logging
import shlex
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import AnyNode, DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from illada.evaluate import Point, ResolvedPoint
from sweeps.expand import (POINT_NODES, SweepError, check_writable, os_error_line, point_of, to_point,
                           unknown_setting)
from sweeps.launchers import INPROCESS, cluster_of, submitit_executor

log = logging.getLogger(__name__)
_ABSENT = object()
UNNAMED = "default"  # config.yaml's `name` when neither an ablation nor `name=` names the sweep


def adhoc_dir(config: DictConfig) -> Path | None:
    """The directory of its own an unnamed sweep gets (``SWEEP_ROOT/adhoc/YYYY-MM-DD_HH-MM-SS``, a suffix when
    that exists already), or None for a named sweep or one given ``sweep_dir=`` (same dir = resume)."""
    given = {o.split("=", 1)[0].lstrip("+~") for o in OmegaConf.select(config, "hydra.overrides.task", default=[])}
    if config.get("name") != UNNAMED or "sweep_dir" in given or "sweep_dir" not in config:
        return None
    parent = Path(str(config.sweep_dir)).resolve().parent / "adhoc"  # sweep_dir is SWEEP_ROOT/${name}
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    path, n = parent / stamp, 1
    while path.exists():
        n += 1
        path = parent / f"{stamp}_{n}"
    return path


def local_job_cap(threads: int | None) -> tuple[int, int, int]:
    """``(cap, cores, threads per job)``: how many local jobs may run at once without sharing cores: the cores
    this process may use // the torch threads of one job (``threads: null`` = torch's default, every core)."""
    from illada.timing import cpu_count

    cores = cpu_count()
    per_job = threads if threads and threads > 0 else cores
    return max(1, cores // per_job), cores, per_job


def _is_value_override(o: Override, is_group: Callable[[str], bool]) -> bool:
    """``key=value`` on a config key (not a config group): Hydra applies it to the composed config, so it is
    applied to a copy instead of composing again (Hydra's own rule, ``defaults_list.Overrides``)."""
    return (o.type == OverrideType.CHANGE and o.package is None and o.key_or_group.split(".")[0] != "hydra"
            and not is_group(o.key_or_group) and not isinstance(o.value(), dict))


def _plain_value(value: Any) -> bool:
    """A value an override sets as it is: a scalar that is no interpolation (those are resolved by OmegaConf)."""
    return value is None or isinstance(value, (bool, int, float)) or (isinstance(value, str) and "${" not in value)


def _has_interpolation(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_interpolation(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_interpolation(v) for v in value)
    return isinstance(value, str) and "${" in value


def _set_path(values: dict, path: list[str], value: Any) -> dict:
    """``values`` with ``path`` set to ``value``, copying only the dictionaries on the path."""
    head, *rest = path
    return {**values, head: _set_path(values[head], rest, value) if rest else value}


class IlladaSweeper(Sweeper):
    """A Hydra sweeper whose jobs evaluate illada points into the results store at ``sweep_dir``."""

    def __init__(self, **conf: Any) -> None:
        self.conf = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                     for k, v in conf.items()}
        self.conf.pop("_target_", None)
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher = None
        self._composed: dict[tuple[str, ...], DictConfig] = {}
        self._plain: dict[tuple[str, ...], dict | None] = {}  # a composition's POINT_NODES, when interpolation-free
        self._parsed: dict[str, Override] = {}
        self._groups: dict[str, bool] = {}
        self._values: dict[str, bool] = {}
        self._setting: dict[str, tuple[list[str], Any]] = {}  # a value override's path and value
        self._nodes: dict[tuple[tuple[str, ...], str], bool] = {}  # (composition, key): an untyped node
        self._parser: OverridesParser | None = None
        self._described: dict[str, tuple] = {}
        self.root: Path | None = None  # the sweep's results store, once known
        self.adhoc: Path | None = None  # an unnamed sweep's own directory

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.adhoc = adhoc_dir(config)
        if self.adhoc is not None:  # before the launcher reads hydra.sweep.dir (${sweep_dir}) for its log folder
            with read_write(config), open_dict(config):
                config.sweep_dir = str(self.adhoc)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        """Hydra's entry: :meth:`run`, with a sweep that cannot run reported as one ``error:`` line (a
        filesystem error too: a full disk, a read-only or vanished sweep dir)."""
        from illada.interrupts import caused_by_interrupt
        from illada.search import SearchError

        try:
            return self.run(list(arguments))
        except Exception as e:
            if caused_by_interrupt(e):  # a Ctrl-C that a library's cleanup turned into another error
                self._interrupted()
            if isinstance(e, (SweepError, SearchError)):
                raise SystemExit(f"error: {e}") from None
            if isinstance(e, OSError):
                raise SystemExit(f"error: {os_error_line(e, self.root)}") from None
            raise
        except KeyboardInterrupt:
            self._interrupted()

    def _interrupted(self) -> NoReturn:
        # Slurm jobs go on without the driver; submitit_local's are its children and got the Ctrl-C too
        interrupted(self.root, submitted=self.cluster == "slurm", resume=self.resume_command())

    def run(self, arguments: list[str]) -> Any:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------- composition
    @property
    def cluster(self) -> str | None:
        """Where jobs run: ``inprocess`` (basic launcher), ``local`` or ``slurm`` (submitit), None (other)."""
        return cluster_of(self.launcher)

    def parser(self) -> OverridesParser:
        assert self.hydra_context is not None
        if self._parser is None:
            self._parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        return self._parser

    def _parse(self, overrides: Sequence[str]) -> list[Override]:
        """Parsed overrides; each distinct one is parsed once (a grid repeats each value in many points)."""
        missing = [o for o in overrides if o not in self._parsed]
        if missing:
            self._parsed.update(zip(missing, self.parser().parse_overrides(missing)))
        return [self._parsed[o] for o in overrides]

    def _is_group(self, key: str) -> bool:
        if key not in self._groups:
            assert self.hydra_context is not None
            self._groups[key] = self.hydra_context.config_loader.repository.group_exists(key)
        return self._groups[key]

    def _is_value(self, o: Override) -> bool:
        """:func:`_is_value_override`, decided once per distinct override."""
        if o.input_line not in self._values:
            self._values[o.input_line] = _is_value_override(o, self._is_group)
        return self._values[o.input_line]

    def _structural(self, parsed: list[Override]) -> tuple[str, ...]:
        return tuple(o.input_line for o in parsed if not self._is_value(o))

    def _composition(self, structural: tuple[str, ...]) -> DictConfig:
        """The job config of these group choices and other structural overrides, composed once."""
        assert self.hydra_context is not None and self.config is not None
        if structural not in self._composed:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(structural))
            with read_write(cfg), open_dict(cfg):
                del cfg["hydra"]  # what a job's task function gets (Hydra's run_job drops it too)
            self._composed[structural] = cfg
        return self._composed[structural]

    def compose(self, overrides: Sequence[str]) -> DictConfig:
        """A job's config, as Hydra composes it for these overrides (on top of the master config's Hydra
        overrides), without the ``hydra`` node, as the job's task function gets it. Composed once per distinct
        set of group choices; plain ``key=value`` overrides are applied to a copy as Hydra applies them, which
        keeps validating hundreds of points fast."""
        try:
            parsed = self._parse(list(overrides))
            cfg = copy.deepcopy(self._composition(self._structural(parsed)))
            for o in parsed:
                if not self._is_value(o):
                    continue
                if OmegaConf.select(cfg, o.key_or_group, default=_ABSENT) is _ABSENT:
                    raise unknown_setting(o.input_line, o.key_or_group, cfg)
                OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
        except (HydraException, OmegaConfBaseException) as e:
            raise SweepError(str(e).strip()) from None
        return cfg

    def point(self, overrides: Sequence[str]) -> Point:
        """``to_point(compose(overrides))`` without a config per point: each composition's point nodes are
        taken once as plain values and each point's ``key=value`` overrides set on a copy of them, which is
        what Hydra's ``OmegaConf.update`` does to an untyped node with a plain value. Interpolations, typed
        (structured) nodes and non-scalar values take the full path (:meth:`compose`)."""
        try:
            parsed = self._parse(list(overrides))
            structural = self._structural(parsed)
            values = self._plain_nodes(structural)
            own = [o for o in parsed if self._is_value(o)]
            if values is None or not all(self._settable(structural, o) for o in own):
                return to_point(self.compose(overrides))
        except (HydraException, OmegaConfBaseException) as e:
            raise SweepError(str(e).strip()) from None
        for o in own:
            path, value = self._setting[o.input_line]
            if path[0] in values:  # other keys cannot reach the point: its nodes interpolate nothing
                values = _set_path(values, path, value)
        return point_of(values)

    def _plain_nodes(self, structural: tuple[str, ...]) -> dict | None:
        """The composition's :data:`POINT_NODES` as plain values; None when one holds an interpolation."""
        if structural not in self._plain:
            cfg = self._composition(structural)
            values = {k: OmegaConf.to_container(cfg[k], resolve=False) if OmegaConf.is_config(cfg[k]) else cfg[k]
                      for k in POINT_NODES if k in cfg}
            self._plain[structural] = None if _has_interpolation(values) else values
        return self._plain[structural]

    def _settable(self, structural: tuple[str, ...], o: Override) -> bool:
        """Whether ``o`` sets an existing untyped node of the composition to a plain value (a missing key is a
        :class:`SweepError`, as :meth:`compose` says it)."""
        if o.input_line not in self._setting:
            self._setting[o.input_line] = (o.key_or_group.split("."), o.value())
        if not _plain_value(self._setting[o.input_line][1]):
            return False
        key = (structural, o.key_or_group)
        if key not in self._nodes:
            cfg = self._composition(structural)
            if OmegaConf.select(cfg, o.key_or_group, default=_ABSENT) is _ABSENT:
                raise unknown_setting(o.input_line, o.key_or_group, cfg)
            parent_key, _, leaf = o.key_or_group.rpartition(".")
            parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
            node = parent._get_node(leaf) if isinstance(parent, DictConfig) else None
            self._nodes[key] = isinstance(node, AnyNode)
        return self._nodes[key]

    def sweep_root(self, base: DictConfig, write: bool = True) -> Path:
        """The absolute results store (jobs may start in another working directory). With ``write``, checked
        to be writable before anything is validated or submitted (a dry run writes nothing)."""
        if "sweep_dir" not in base:
            raise SweepError("sweep_dir: the config needs a sweep_dir (the results store of the sweep)")
        self.root = self.adhoc or Path(str(base.sweep_dir)).resolve()
        if write:
            check_writable(self.root)
        return self.root

    def validate(self, cfg: DictConfig) -> ResolvedPoint:
        """The :class:`~illada.evaluate.ResolvedPoint` a composed config describes (:meth:`validate_point`)."""
        return self.validate_point(to_point(cfg))

    def validate_point(self, point: Point) -> ResolvedPoint:
        """The :class:`~illada.evaluate.ResolvedPoint` of a point; raises ``ValueError``, ``OSError`` (a model
        that cannot be read) or ``DeviceUnavailableError`` naming the field at fault.

        In process (Hydra's basic launcher) this process is the job host, so a point whose device or attention
        backend is not here (``model.device=cuda`` without CUDA, ``flash_attn`` without flash-attn) is invalid;
        submitted jobs check it on their node, once per job before the model loads."""
        from illada.evaluate import model_limits, resolve
        from illada.loading import check_host, resolve_model

        model = resolve_model(point.model)
        if model not in self._described:
            self._described[model] = model_limits(model)
        resolved = resolve(point, *self._described[model])
        if self.in_process:
            check_host(point.device, point.attn_backend, point.dtype)
        return resolved

    # ---------------------------------------------------------------------------------------------- jobs
    def executor(self):
        """The submitit executor of the configured submitit launcher (makes its log folder)."""
        try:
            return submitit_executor(self.launcher)
        except (ValueError, NameError) as e:
            raise _refused_parameter(e) from None

    def check_submission(self, tasks: int) -> str:
        """On Slurm, ask ``sbatch --test-only`` whether the job submitit would submit (an array of ``tasks``)
        would be accepted, before anything is submitted; raise :class:`SweepError` naming the launcher field
        sbatch refuses (``hydra.launcher.partition=VALUE``) and its message. Returns sbatch's answer."""
        import shutil

        from illada.slurm import sbatch_test_only
        from sweeps.launchers import sbatch_script

        if shutil.which("sbatch") is None or shutil.which("srun") is None:
            raise SweepError("hydra/launcher=submitit_slurm: sbatch/srun are not installed on this host; submit "
                             "from a Slurm login node, or run here with hydra/launcher=basic or submitit_local")
        try:
            script = sbatch_script(self.launcher, tasks)
        except (ValueError, NameError) as e:
            raise _refused_parameter(e) from None
        accepted, message = sbatch_test_only(script)
        if accepted:
            return f"sbatch --test-only: the cluster would accept the job ({message})"
        params = self.launcher.params
        # sbatch says "Invalid account or account/partition combination": the first word it names is the culprit
        named = [k for k in ("account", "qos", "partition", "gres", "constraint", "nodelist", "exclude")
                 if k in message.lower() and params.get(k) is not None]
        if not named:  # Slurm does not answer, or refuses something we cannot pin on one field
            raise SweepError(f"hydra/launcher=submitit_slurm: sbatch --test-only failed: {message}; nothing was "
                             "submitted")
        raise SweepError(f"hydra.launcher.{named[0]}={params[named[0]]}: Slurm would refuse the job: {message}; "
                         "nothing was submitted (`sinfo -s` lists partitions, `sacctmgr show assoc user=$USER` "
                         "accounts and qos)")

    def check_settings(self) -> None:
        """The sweeper's and the launcher's numeric settings, checked before anything is validated, written or
        submitted: a bad value is one :class:`SweepError` line naming ``hydra.sweeper.FIELD`` or
        ``hydra.launcher.FIELD`` and what is valid (sbatch would only blame its node configuration, and a
        zero ``max_in_flight`` was refused after the sweep's files were written)."""
        for name, least, what in SWEEPER_LIMITS:
            if name in self.conf:
                _check_number(f"hydra.sweeper.{name}", self.conf[name], least, what)
        params = getattr(self.launcher, "params", None) if self.cluster in ("local", "slurm") else None
        for name, least, what in LAUNCHER_LIMITS:
            if params is not None and name in params:
                _check_number(f"hydra.launcher.{name}", params[name], least, what)

    def check_launcher(self, what: str) -> None:
        if self.cluster is None:
            choice = OmegaConf.select(self.config, "hydra.runtime.choices.hydra/launcher")
            raise SweepError(f"hydra/launcher={choice}: {what} runs jobs in this process (hydra/launcher=basic) or "
                             "through hydra-submitit-launcher (submitit_local, submitit_slurm, or a site profile "
                             "extending them); use hydra/sweeper=basic for other launchers")

    @property
    def in_process(self) -> bool:
        return self.cluster == INPROCESS

    def local_jobs(self, threads: int | None) -> int:
        """How many ``submitit_local`` jobs may run at once: ``hydra.sweeper.max_in_flight`` when given, else
        :func:`local_job_cap`; said once, with how to change it."""
        cap, cores, per_job = local_job_cap(threads)
        given = self.conf.get("max_in_flight")
        thread_s = "thread" if per_job == 1 else "threads"
        if given is None:
            print(f"local jobs: at most {cap} at a time ({cores} cores / {per_job} {thread_s} per job); "
                  "hydra.sweeper.max_in_flight=N to change")
            return cap
        if isinstance(given, bool) or not isinstance(given, int) or given < 1:
            raise SweepError(f"hydra.sweeper.max_in_flight={given!r}: must be a positive integer (or null: "
                             f"{cap} here, {cores} cores / {per_job} {thread_s} per job)")
        more = (f"; more than the {cap} that fit on {cores} cores at {per_job} {thread_s} per job: "
                "latencies will be inflated" if given > cap else "")
        print(f"local jobs: at most {given} at a time (hydra.sweeper.max_in_flight){more}")
        return given

    def announce_dir(self) -> None:
        """Say where an unnamed sweep's records go (it has a directory of its own)."""
        if self.adhoc is not None and self.root is not None:
            print(f"sweep without a name: its records go to {self.root} (give name=NAME, or sweep_dir=DIR, to "
                  "resume a sweep or add to one)")

    def resume_command(self) -> str | None:
        """For an unnamed sweep, the command that resumes it (the same overrides plus ``sweep_dir=``); None for a
        named sweep, which the same command resumes."""
        if self.adhoc is None or self.config is None:
            return None
        hydra_overrides = [o for o in OmegaConf.select(self.config, "hydra.overrides.hydra", default=[])
                           if not o.startswith(("hydra.sweeper.dry_run=", "hydra.mode="))]  # -m says the mode
        task = list(OmegaConf.select(self.config, "hydra.overrides.task", default=[]))
        return shlex.join(["illada-sweep", "-m", *hydra_overrides, *task, f"sweep_dir={self.adhoc}"])

    def report_end(self, start: float) -> None:
        """The command's last lines: for an unnamed sweep the command that resumes it, then the front as a
        table (also written to front.csv / front.md) or, for a scoring ablation, the likelihood-vs-confidence
        comparison (scoring_ablation.md), the paths of what was written, the wall time."""
        import time

        from sweeps.plot import ablation_report, finished_points, front_report

        assert self.root is not None
        resume = self.resume_command()
        if resume:
            print(f"to resume this sweep or add to it (e.g. with --rerun-failed): {resume}")
        try:
            points = finished_points(self.root)
        except Exception as e:  # noqa: BLE001 -- records are saved; a figure and a table are not worth failing for
            print(f"no Pareto plot or front table: {type(e).__name__}: {e}")
            points = None
        written = []
        if points is not None and self.conf.get("plot", True):
            path = self.plot(self.root, points)
            if path:
                written.append(f"Pareto plot {path}")
        ablation = None if points is None or points.empty else ablation_report(self.root, points)
        # a scoring ablation's points all cost about the same: its answer is the paired comparison, not a front
        only_pairs = ablation is not None and ablation[2]
        table = None if points is None or only_pairs else front_report(self.root, points)
        if table is not None:
            text, paths = table
            print(text)
            written.append("front table " + ", ".join(str(p) for p in paths))
        if ablation is not None:
            print(ablation[0])
            written.append(f"scoring ablation {ablation[1]}")
        if written:
            print("wrote: " + "; ".join(written))
        print(f"sweep wall time: {time.perf_counter() - start:.1f} s")

    # ------------------------------------------------------------------------------------------- results
    def save_multirun(self, root: Path) -> None:
        """``multirun.yaml`` in the sweep directory, as Hydra's launchers write it."""
        root.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, root / "multirun.yaml")

    def plot(self, root: Path, points=None) -> Path | None:
        """``pareto.png`` of the finished points (default: the store's); a failure to plot is only a warning."""
        from illada.store import SweepStore
        from sweeps.plot import pareto_plot

        try:
            return pareto_plot(SweepStore(root), points=points)
        except Exception as e:  # noqa: BLE001 -- records are saved; a figure is not worth failing for
            print(f"no Pareto plot: {type(e).__name__}: {e}")
            return None


#: (field, least value, what is valid); None values are allowed where the field's default is null.
SWEEPER_LIMITS = (
    ("max_in_flight", 1, "a positive integer (or null: as many as the cores allow)"),
    ("max_array_size", 1, "a positive integer (or null: the cluster's MaxArraySize)"),
    ("stale_after_s", 1e-9, "a positive number of seconds"),
    ("poll_s", 1e-9, "a positive number of seconds"),
    ("lost_after_s", 0, "a number of seconds, 0 or more"),
    ("n_trials", 1, "a positive integer (or null: no limit)"),
    ("n_evaluations", 1, "a positive integer (or null: no limit)"),
)
LAUNCHER_LIMITS = (
    ("array_parallelism", 1, "a positive integer (array tasks running at once)"),
    ("timeout_min", 1, "a positive integer (minutes)"),
    ("nodes", 1, "a positive integer"),
    ("tasks_per_node", 1, "a positive integer"),
    ("cpus_per_task", 1, "a positive integer (or null)"),
    ("cpus_per_gpu", 1, "a positive integer (or null)"),
    ("gpus_per_node", 0, "an integer, 0 or more (or null)"),
    ("gpus_per_task", 0, "an integer, 0 or more (or null)"),
    ("mem_gb", 0, "an integer, 0 or more (or null)"),
    ("max_num_timeout", 0, "an integer, 0 or more"),
    ("signal_delay_s", 0, "an integer, 0 or more"),
)
_INTEGERS = {"max_in_flight", "max_array_size", "n_trials", "n_evaluations"} | {name for name, _, _ in LAUNCHER_LIMITS}


def _check_number(field: str, value: Any, least: float, what: str) -> None:
    """Raise :class:`SweepError` naming ``field=value`` unless it is a number (an integer where the field
    counts something) of at least ``least``, or null."""
    if value is None:
        return
    integer = field.rsplit(".", 1)[1] in _INTEGERS
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < least or value != value:
        shown = f"{value:g}" if isinstance(value, float) else repr(value)  # 0, not the 0.0 Hydra made of it
        raise SweepError(f"{field}={shown}: must be {what}; nothing was run or written")


def _refused_parameter(error: Exception) -> SweepError:
    """submitit refusing a ``hydra.launcher`` parameter its executor does not have, as one line."""
    first = str(error).strip().splitlines()[0].split(" Valid arguments:")[0]
    return SweepError(f"hydra.launcher: {first}")


def interrupted(root: Path | None, submitted: bool = False, resume: str | None = None) -> NoReturn:
    """Ctrl-C: one line saying what the results store holds and how to resume, and exit 130 (the shell's code
    for SIGINT). Nothing is lost: records are written whole as each point ends, and a point cut short leaves
    no record (its running marker is released as it stops), so the same command runs it again."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not turn this line into a traceback
    what = "no record written yet"
    if root is not None and root.is_dir():
        from illada.store import SweepStore

        try:
            st = SweepStore(root).status()
            unfinished = len(st.missing) + len(st.running) + len(st.corrupt)
            what = (f"{len(st.done)} of {st.total} points done, {len(st.failed)} failed, {unfinished} not finished "
                    f"(records kept in {root})")
        except Exception as e:  # noqa: BLE001 -- the line must come out whatever the store's state
            what = f"records kept in {root} ({type(e).__name__} while counting them)"
    jobs = (f"; submitted jobs keep running (`illada-status {root}` follows them, `scancel` stops them)"
            if submitted else "")
    how = f"resume with: {resume}" if resume else "resume with the same command"
    print(f"interrupted: {what}{jobs}; {how}", file=sys.stderr)
    raise SystemExit(130)
