"""Hydra's launcher -> where illada's sweepers run jobs.

The only queue schema is hydra-submitit-launcher's (``hydra.launcher.*``: ``SlurmQueueConf`` /
``LocalQueueConf``, validated by Hydra when the config is composed). Both of our sweepers submit their own job
callables, so they turn the configured submitit launcher into a submitit executor here, with its parameters
mapped exactly as ``BaseSubmititLauncher.launch`` maps them. Hydra's ``BasicLauncher`` means "in this process".
"""

from __future__ import annotations

from typing import Any

import submitit
from omegaconf import OmegaConf

INPROCESS = "inprocess"
EXECUTOR_INIT_KEYS = {"max_num_timeout"}  # AutoExecutor(...) arguments, as in the Hydra launcher


def cluster_of(launcher: Any) -> str | None:
    """``slurm`` or ``local`` for hydra-submitit-launcher's launchers, ``inprocess`` for Hydra's basic launcher,
    None for any other launcher."""
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher

    if isinstance(launcher, BaseSubmititLauncher):
        return launcher._EXECUTOR
    return INPROCESS if isinstance(launcher, BasicLauncher) else None


def submitit_executor(launcher: Any, folder: str | None = None) -> submitit.AutoExecutor:
    """A submitit executor with the queue settings of a hydra-submitit-launcher launcher (``hydra.launcher.*``).
    On Slurm its batch script also requeues a job that the requeue signal reached before the job installed
    its handler (:func:`illada.slurm.requeue_before_handler`).

    Making it creates the submitit folder (``folder`` instead of the launcher's), so call it only once the sweep
    is known to be valid."""
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cluster = launcher._EXECUTOR
    params = {k: v for k, v in launcher.params.items() if k != "_target_"}
    own = params.pop("submitit_folder")
    init = {f"{cluster}_{k}": params.pop(k) for k in EXECUTOR_INIT_KEYS if k in params}
    executor = submitit.AutoExecutor(folder=folder or own, cluster=cluster, **init)
    generic = set(OmegaConf.structured(BaseQueueConf).keys())
    if cluster == "slurm":  # requeue-safe from the job's first instruction, not only once submitit's handler is in
        from submitit.slurm.slurm import SlurmJobEnvironment

        from illada.slurm import requeue_before_handler

        params["teardown"] = requeue_before_handler(SlurmJobEnvironment.USR_SIG) + list(params.get("teardown") or [])
    executor.update_parameters(**{k if k in generic else f"{cluster}_{k}": v for k, v in params.items()})
    return executor


def sbatch_script(launcher: Any, tasks: int) -> str:
    """The batch script submitit would hand ``sbatch`` for an array of ``tasks`` jobs of this Slurm launcher
    (its ``#SBATCH`` lines exactly; the command is a no-op), made without creating the submitit folder."""
    import tempfile

    from submitit.slurm.slurm import _make_sbatch_string

    folder = launcher.params["submitit_folder"]
    with tempfile.TemporaryDirectory() as scratch:  # submitit may make its folder: not the sweep's, in a dry run
        params = dict(submitit_executor(launcher, folder=scratch)._executor.parameters)
    return _make_sbatch_string(command="true", folder=folder, map_count=max(tasks, 1), **params)
