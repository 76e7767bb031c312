"""The ``launcher`` config group -> how jobs run: in this process, or a submitit executor.

Queue fields are hydra-submitit-launcher's schema (``SlurmQueueConf``, validated through OmegaConf), and they
reach submitit the way that launcher passes them: generic fields as they are, the others prefixed with the
cluster name. The remaining keys (``RUNNER_KEYS``) belong to our job layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import submitit
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf, SlurmQueueConf
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sweeps.expand import SweepError

RUNNER_KEYS = {"cluster", "points_per_job", "max_array_size", "threads", "wait", "poll_s", "lost_after_s"}
SCHEMAS = {"slurm": SlurmQueueConf, "local": LocalQueueConf}
EXECUTOR_INIT_KEYS = {"max_num_timeout", "python"}  # AutoExecutor(...) arguments, as in the Hydra launcher


@dataclass
class Launcher:
    """How a sweep's jobs run."""

    cluster: str  # inprocess | local (submitit processes) | slurm
    points_per_job: int
    threads: int | None = None
    max_array_size: int | None = None
    wait: bool = True
    poll_s: float = 5.0
    lost_after_s: float = 60.0
    queue: dict[str, Any] | None = None  # validated queue fields (submitit executors only)

    def executor(self) -> submitit.AutoExecutor:
        """A submitit executor with the queue fields mapped as hydra-submitit-launcher maps them."""
        params = dict(self.queue or {})
        params.pop("_target_", None)
        folder = params.pop("submitit_folder")
        init = {f"{self.cluster}_{k}": params.pop(k) for k in EXECUTOR_INIT_KEYS if k in params}
        executor = submitit.AutoExecutor(folder=folder, cluster=self.cluster, **init)
        generic = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in generic else f"{self.cluster}_{k}": v for k, v in params.items()})
        return executor


def launcher_from_config(node: DictConfig) -> Launcher:
    """Validate the ``launcher`` node; errors name the ``launcher.*`` key."""
    raw = OmegaConf.to_container(node, resolve=True)
    cluster = raw.get("cluster")
    if cluster != "inprocess" and cluster not in SCHEMAS:
        raise SweepError(f"launcher.cluster={cluster!r}: choose inprocess, local or slurm")
    runner = {k: raw.pop(k) for k in list(raw) if k in RUNNER_KEYS}
    queue = None
    if cluster != "inprocess":
        try:
            queue = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(SCHEMAS[cluster]), raw))
        except OmegaConfBaseException as e:
            raise SweepError(f"launcher.{e.key}={e.value!r}: {e.msg.splitlines()[0]}" if getattr(e, "key", None)
                             else f"launcher: {e}") from None
    elif raw:
        raise SweepError(f"launcher.{sorted(raw)[0]}: not a setting of the in-process launcher")
    ppj = runner.get("points_per_job")
    if isinstance(ppj, bool) or not isinstance(ppj, int) or ppj < 1:
        raise SweepError(f"launcher.points_per_job={ppj!r}: must be a positive integer")
    return Launcher(cluster=cluster, points_per_job=ppj, threads=runner.get("threads"),
                    max_array_size=runner.get("max_array_size"), wait=runner.get("wait", True),
                    poll_s=runner.get("poll_s", 5.0), lost_after_s=runner.get("lost_after_s", 60.0), queue=queue)
