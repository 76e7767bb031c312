"""``illada-search``: a Hydra app whose multirun is the Pareto search (``hydra/sweeper=illada_pareto``).

    illada-search                                        # search=frontier on the embedded model, in this process
    illada-search search=frontier hydra.sweeper.n_trials=60 hydra.sweeper.sampler=nsga2
    illada-search hydra/launcher=submitit_local hydra.sweeper.max_in_flight=2          # trials as processes
    illada-search model=illada-8b-base task=gsm8k hydra/launcher=submitit_slurm \\
        hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1                   # trials as Slurm jobs
    illada-search hydra.mode=RUN sampler.steps=4         # one point, no search
    illada-search hydra/sweeper=basic sampler.steps=8,4  # Hydra's own grid (batch by batch)

The same command again resumes the study (``sweep_dir/optuna.journal``); ``optuna-dashboard
SWEEP_DIR/optuna.journal`` shows it live. The task of one trial is :func:`evaluate_point`.
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig

from sweeps.expand import CONF_DIR, register_ablations


def evaluate_point(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate the point a composed config describes into ``cfg.sweep_dir`` (nothing when it has a record);
    returns the record's key, status and objectives. A failing point leaves a failure record and raises."""
    from illada.evaluate import resolve
    from illada.runner import PointGroup
    from illada.store import SweepStore
    from sweeps.expand import to_point

    resolved = resolve(to_point(cfg))
    store = SweepStore(cfg.sweep_dir)
    PointGroup(store.root, [resolved], threads=cfg.get("threads"))()
    rec = store.record(resolved.key) or {}
    if rec.get("status") != "ok":
        err = rec.get("error") or {}
        raise RuntimeError(f"point {resolved.key} failed: {err.get('type')}: {err.get('message')}")
    out = {"key": resolved.key, "status": rec["status"], "accuracy": rec["quality"]["value"],
           "seconds_per_sample": rec["cost"]["seconds_per_sample"], "nfe_per_sample": rec["cost"]["nfe_per_sample"]}
    print(out)
    return out


register_ablations()  # `+ablation=NAME` works here as in illada-sweep
# an absolute path: as a console script Hydra would look for a `sweeps.conf` package instead of the folder
main = hydra.main(config_path=str(CONF_DIR), config_name="pareto", version_base=None)(evaluate_point)

if __name__ == "__main__":
    main()
