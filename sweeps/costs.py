"""The cost forecast of a sweep at its launcher's parallelism (:mod:`illada.forecast` does the arithmetic).

Printed by ``--dry-run`` and as the first lines of a real run, before anything is submitted.
"""

from __future__ import annotations

from typing import Any, Sequence

from sweeps.expand import SweepError
from sweeps.launchers import INPROCESS

DEFAULT_ARRAY_PARALLELISM = 256  # hydra-submitit-launcher's SlurmQueueConf default


def check_cost_per_item(value: Any) -> float | None:
    """``hydra.sweeper.cost_per_item_s``: None or a positive number of seconds (one-line error otherwise)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise SweepError(f"hydra.sweeper.cost_per_item_s={value!r}: must be a positive number of seconds per item "
                         "(or null: estimated from earlier records in the sweep root)")
    return float(value)


def parallelism(cluster: str | None, launcher: Any, local_jobs: int | None = None) -> tuple[int, int]:
    """``(jobs at a time, devices per job)`` of a launcher: Slurm's ``array_parallelism`` and nodes x GPUs per
    node (or tasks x GPUs per task); the local job cap for ``submitit_local``; one in process."""
    if cluster == "slurm":
        params = launcher.params
        nodes = params.get("nodes") or 1
        gpus = params.get("gpus_per_node") or (params.get("gpus_per_task") or 0) * (params.get("tasks_per_node") or 1)
        return int(params.get("array_parallelism") or DEFAULT_ARRAY_PARALLELISM), max(1, int(nodes) * int(gpus or 1))
    if cluster == INPROCESS or cluster is None:
        return 1, 1
    return max(1, local_jobs or 1), 1


def print_forecast(groups: Sequence[Sequence[Any]], store: Any, slots: int, gpus_per_job: int,
                   cost_per_item_s: float | None, items: dict[str, int] | None = None) -> Any:
    """Print the forecast of ``groups`` (jobs of ResolvedPoints, in submission order) priced from the records
    and jobs of ``store`` (a :class:`~illada.store.SweepStore`), and return it."""
    from illada.forecast import forecast, job_accounts

    fc = forecast([[p.settings for p in g] for g in groups], store.records(), slots,
                  cost_per_item_s=cost_per_item_s, gpus_per_job=gpus_per_job, items=items,
                  jobs=job_accounts(store.jobs_dir))
    for line in fc.lines():
        print(line)
    return fc
