"""``illada-sweep``: the Hydra app of illada's sweeps and searches (primary config ``sweeps/conf/config.yaml``).

    illada-sweep sampler.steps=4 task.limit=100                        # one point (a Hydra run)
    illada-sweep -m +ablation=frontier                                 # the README's sweep, in this process
    illada-sweep -m sampler.steps=8,4,2 sampler.remasking=low_confidence,random task.limit=100
    illada-sweep -m +ablation=scoring model=illada-8b-base hydra/launcher=submitit_slurm hydra.launcher.partition=gpu
    illada-sweep -m +ablation=frontier --rerun-failed    # = hydra.sweeper.rerun_failed=true (resume, retry failures)
    illada-sweep -m +ablation=frontier --dry-run         # = hydra.sweeper.dry_run=true (validate, show the plan)
    illada-sweep -m +ablation=search                     # Pareto search (the ablation sets hydra/sweeper=illada_pareto)
    illada-sweep --help | --hydra-help | --info | --cfg job | --cfg hydra    # Hydra's own

A multirun is done by ``hydra/sweeper``: ``illada_grid`` (default, :mod:`sweeps.grid_sweeper`), ``illada_pareto``
(:mod:`sweeps.pareto_sweeper`) or Hydra's ``basic`` (one Hydra job per point, through :func:`evaluate_point`).
Jobs run where ``hydra/launcher`` says (``basic`` = this process, ``submitit_local``, ``submitit_slurm``, site
profiles under ``hydra/launcher/``). ``--rerun-failed``, ``--dry-run``, ``--no-wait``, ``--no-plot`` and
``--verbose`` are shorthands for the ``hydra.sweeper.*`` overrides in :data:`FLAGS`. Ctrl-C stops with one line
(what the store holds) and exit status 130; the same command resumes (a sweep without a name, which gets a
timestamped directory of its own, prints the command with its ``sweep_dir=``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sweeps.expand import CONF_DIR, Plan, SweepError, culprit, register_ablations

FLAGS = {"--rerun-failed": "hydra.sweeper.rerun_failed=true", "--dry-run": "hydra.sweeper.dry_run=true",
         "--no-wait": "hydra.sweeper.wait=false", "--no-plot": "hydra.sweeper.plot=false",
         "--verbose": "hydra.sweeper.verbose=true"}


def evaluate_point(cfg: DictConfig) -> dict[str, Any]:
    """The Hydra task: evaluate the point a composed config describes into ``cfg.sweep_dir`` (nothing when it
    has a record); returns the record's key, status and objectives. A failing point leaves a failure record
    and raises. This is one point without ``-m``, a job of ``hydra/sweeper=basic`` and a search trial."""
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from illada.evaluate import resolve
    from illada.runner import PointGroup
    from illada.store import SweepStore
    from sweeps.expand import to_point

    one_point = HydraConfig.get().mode == RunMode.RUN  # else a job of a multirun: its sweeper reports errors
    try:
        resolved = resolve(to_point(cfg))
    except (ValueError, OSError) as e:
        if not one_point:
            raise
        message = " ".join(str(e).split())
        blame = culprit(message, list(HydraConfig.get().overrides.task))
        raise SystemExit(f"error: the point is invalid, caused by {blame!r}: {message}; nothing was run") from None
    store = SweepStore(Path(str(cfg.sweep_dir)).resolve())
    try:
        # the sweeper's bound on a silent marker (illada_grid, illada_pareto); Hydra's basic sweeper has none
        stale_after_s = OmegaConf.select(HydraConfig.get(), "sweeper.stale_after_s", default=None)
        PointGroup(store.root, [resolved], threads=cfg.get("threads"), stale_after_s=stale_after_s)()
    except KeyboardInterrupt:
        if not one_point:
            raise
        from sweeps.sweeper import interrupted

        interrupted(store.root)
    rec = store.record(resolved.key) or {}
    if rec.get("status") != "ok":
        err = rec.get("error") or {}
        failed = f"point {resolved.key} failed: {err.get('type')}: {err.get('message')}"
        if one_point:
            raise SystemExit(f"error: {' '.join(failed.split())} (its failure record is in {store.records_dir})")
        raise RuntimeError(failed)
    from sweeps.plot import throughput_items_per_s

    from illada.records import summary_path

    cost = rec["cost"]
    out = {"key": resolved.key, "status": rec["status"], "accuracy": rec["quality"]["value"],
           "latency_p50_s": cost.get("latency_p50_s"), "throughput_items_per_s": throughput_items_per_s(cost),
           "nfe_per_sample": cost["nfe_per_sample"]}
    print(point_line(rec, summary_path(store.records_dir, resolved.key)))
    return out


def point_line(rec: dict[str, Any], path) -> str:
    """One finished point in words, rounded as the front table rounds it, with where its record is."""
    from sweeps.plot import throughput_items_per_s

    q, cost = rec["quality"], rec["cost"]
    latency = cost.get("latency_p50_s")
    throughput = throughput_items_per_s(cost)
    return (f"point {rec['key']}: {q['metric']} {100 * q['value']:.1f} % (95% CI {100 * q['ci_low']:.1f}-"
            f"{100 * q['ci_high']:.1f}, n={q['n']}), latency p50 "
            + ("-" if latency is None else f"{1e3 * latency:.1f} ms")
            + (f", {throughput:.2f} items/s" if throughput is not None else "")
            + f", {cost['nfe_per_sample']:.1f} forwards per sample; record {path}")


register_ablations()  # `+ablation=NAME` selects ablations/NAME.yaml
# an absolute path: as a console script Hydra would look for a `sweeps.conf` package instead of the folder
hydra_main = hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)(evaluate_point)


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: Hydra's command line, plus the shorthand flags of :data:`FLAGS`; a config Hydra
    cannot compose is one ``error:`` line (``HYDRA_FULL_ERROR=1`` shows Hydra's own report)."""
    args = [FLAGS.get(a, a) for a in (sys.argv[1:] if argv is None else argv)]
    # `-m` anywhere, as users write it (Hydra's argparse takes overrides only as one run of arguments)
    args = sorted(args, key=lambda a: a not in ("-m", "--multirun"))
    shows = [a for a in args if a in ("--cfg", "-c", "--info", "-i", "--shell-completion", "-sc")]
    if shows and args and args[0] in ("-m", "--multirun"):  # Hydra refuses the pair with a traceback
        raise SystemExit(f"error: {shows[0]} shows one job's config, -m runs a sweep: drop -m and give one value "
                         "per setting to see a point's config (--cfg job), or add --dry-run to -m to list the "
                         "sweep's points")
    saved = sys.argv
    sys.argv = [saved[0] if saved else "illada-sweep", *args]  # hydra.main reads its command line from sys.argv
    try:
        with _one_line_errors():
            hydra_main()
    except KeyboardInterrupt:  # outside a sweeper (composing, one point): its sweeper reports a multirun's
        from sweeps.sweeper import interrupted

        interrupted(None)
    finally:
        sys.argv = saved


def one_line(error: BaseException) -> str:
    """A Hydra or OmegaConf error (several lines, and the OmegaConf error it wraps) as one line; an override of
    a key the config lacks says what to do instead of Hydra's ``+KEY`` (which would be refused in turn)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    cause = error.__cause__
    if isinstance(cause, OmegaConfBaseException) and str(cause).strip():
        lines.append(f"({str(cause).strip().splitlines()[0]})")
    text = " ".join(lines)
    m = re.match(r"Could not override '([\w.]+)'\. To append to your config use \+(\S+)", text)
    return (_missing_key_hint(m.group(1), m.group(2)) or text) if m else text


_LAUNCHER_CONF = re.compile(r"not in '(\w+)'")


def _missing_key_hint(key: str, override: str) -> str | None:
    """``hydra.launcher.partition`` without a Slurm launcher: choose one; ``sampler.stesp``: the setting meant."""
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf

    from illada.evaluate import SAMPLER_FIELDS, SCORER_FIELDS
    from sweeps.expand import unknown_setting

    group, _, leaf = key.partition(".")
    if key.startswith("hydra.launcher."):
        name = key.removeprefix("hydra.launcher.")
        if name in {f.name for f in dataclasses.fields(SlurmQueueConf)}:
            return (f"{key}: a Slurm setting, and the launcher chosen is not Slurm's; choose "
                    f"hydra/launcher=submitit_slurm (or a site profile under hydra/launcher/) to set it")
        return None
    known = {"sampler": SAMPLER_FIELDS, "scorer": SCORER_FIELDS | {"name"}}.get(group)
    if known is None or "." in leaf:
        return None
    return str(unknown_setting(override, key, OmegaConf.create({group: dict.fromkeys(known)})))


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Hydra reports what goes wrong while composing through ``run_and_report`` (a multi-line message, or a
    stack trace); this makes a config error or a filesystem error one ``error:`` line and a non-zero exit.
    Other errors keep Hydra's report."""
    import hydra._internal.utils as hydra_utils

    original = hydra_utils.run_and_report

    def report(func):
        def compact():
            try:
                return func()
            except (HydraException, OmegaConfBaseException) as e:
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                raise SystemExit(f"error: {one_line(e)}") from None
            except OSError as e:  # e.g. Hydra making the run dir of one point in an unwritable sweep_dir
                from illada.evaluate import os_error_text

                raise SystemExit(f"error: {os_error_text(e)}") from None

        return original(compact)

    hydra_utils.run_and_report = report
    try:
        yield
    finally:
        hydra_utils.run_and_report = original


# ------------------------------------------------------------------------------------ programmatic entries
@contextmanager
def grid_sweeper(overrides: Sequence[str]) -> Iterator[tuple[Any, list[str]]]:
    """The sweeper ``illada-sweep -m OVERRIDES`` would run, set up exactly as Hydra sets it up, and its
    arguments (the task overrides)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins
    from hydra.core.utils import JobRuntime
    from hydra.errors import HydraException
    from hydra.types import HydraContext, RunMode
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from hydra._internal.callbacks import Callbacks
    from sweeps.grid_sweeper import GridSweeper

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None, job_name="app"):
        gh = GlobalHydra.instance()
        try:
            cfg = gh.hydra.compose_config("config", list(overrides), run_mode=RunMode.MULTIRUN,
                                          with_log_configuration=False)
            JobRuntime.instance().set("name", "app")
            sweeper = Plugins.instance().instantiate_sweeper(
                config=cfg, hydra_context=HydraContext(config_loader=gh.config_loader(), callbacks=Callbacks(cfg)),
                task_function=evaluate_point)
        except (HydraException, OmegaConfBaseException) as e:
            raise SweepError(str(e).strip()) from None
        if not isinstance(sweeper, GridSweeper):
            raise SweepError(f"hydra/sweeper={OmegaConf.select(cfg, 'hydra.runtime.choices.hydra/sweeper')}: "
                             "run() and plan_sweep() drive the illada_grid sweeper; use `illada-sweep -m ...`")
        yield sweeper, list(OmegaConf.to_container(cfg.hydra.overrides.task))


def run(overrides: Sequence[str]):
    """``illada-sweep -m OVERRIDES`` in this process, returning the sweep's :class:`~illada.store.SweepStore`;
    raises :class:`SweepError` where the command would print ``error: ...``."""
    with grid_sweeper(overrides) as (sweeper, arguments):
        return sweeper.run(arguments)


def plan_sweep(overrides: Sequence[str]) -> Plan:
    """The validated points ``illada-sweep -m OVERRIDES`` would run (nothing is written)."""
    with grid_sweeper(overrides) as (sweeper, arguments):
        return sweeper.plan(arguments)


if __name__ == "__main__":
    main()
